"""
The room domain's events: what L{ChatRooms} publishes on ``room:<client name>``.

Every event is a plain JSON object (``bus.publish`` envelopes it as ``{"v", "origin", "topic",
"event"}``), complete in itself: a subscriber renders it for its transport from its fields and
from its own state built from earlier events, never by reading the domain while it handles one.
No wire format in here: no ILIAS envelope, no Socket.IO room name, no pre-encoded JSON. Every
event has ``type``, and ``ts`` (milliseconds since the epoch, the domain's clock when it
happened). ``room`` is a room id (int); a I{member} is ``{"id": int, "name": str | None,
"picture": bool}`` (``picture``: the user shows a profile picture); recipients are member ids,
which each adapter maps to the connections it owns. A ``connection`` field is the connection id
that acted (adapters use it to answer that connection, and for echo suppression).

``room_created``  ``room``, ``title``, ``owner`` (str or None): a room that did not exist.
``entered``       ``room``, ``title``, ``connection``, ``member``, ``first`` (bool: the member
                  was not present before; otherwise another connection of theirs entered).
``parted``        ``room``, ``connection``, ``member``, ``gone`` (bool: it was the member's last
                  connection in the room, so the member left it): an IRC PART.
``left``          ``room``, ``member``: the disconnect grace expired; the member is out.
``room_left``     ``room``, ``title``, ``member``: PHP's LeavePrivateRoom; the member's
                  connections are out of the room, the member stays admitted.
``kicked``        ``room``, ``title``, ``member``: out of the room, admission taken back.
``banned``        ``room`` (or None when the member was not in that room), ``member``,
                  ``rooms`` (the other rooms the member was still present in): the member is
                  out of every room and logged out.
``cleared``       ``room``: the history was cleared.
``invited``       ``room``, ``title``, ``owner``, ``host`` (member), ``invitee`` (member).
``renamed``       ``member`` (its new name and picture setting; a login again, an IRC nick).
``message``       ``id`` (unique: ``"<origin>-<n>"``), ``room``, ``connection``, ``sender``
                  (member), ``content``, ``format`` (object), ``target`` (None, or ``{"id",
                  "name", "public"}``; a non-public target is a whisper: only the sender's and
                  the target's connections get it).
``typing``        ``room``, ``member``, ``started`` (bool), ``recipients`` (member ids: the other
                  members of the room).
"""

from typing import Any, Dict, List, Optional, Tuple

from ilchat.chat.model import Member, Room

__all__ = [
    "EVENT_TYPES",
    "banned",
    "cleared",
    "entered",
    "invited",
    "kicked",
    "left",
    "member_info",
    "message",
    "parted",
    "presence_changes",
    "renamed",
    "room_created",
    "room_left",
    "typing",
]

Event = Dict[str, Any]

EVENT_TYPES = (
    "room_created", "entered", "parted", "left", "room_left", "kicked", "banned", "cleared",
    "invited", "renamed", "message", "typing",
)


def member_info(member: Member) -> Dict[str, Any]:
    """``{"id", "name", "picture"}``: a member as every event carries it."""
    return {"id": member.id, "name": member.name, "picture": member.profile_picture_visible}


def room_created(ts: int, room: Room) -> Event:
    return {"type": "room_created", "ts": ts, "room": room.id, "title": room.title,
            "owner": room.owner}


def entered(ts: int, room: Room, connection: str, member: Member, first: bool) -> Event:
    return {"type": "entered", "ts": ts, "room": room.id, "title": room.title,
            "connection": connection, "member": member_info(member), "first": first}


def parted(ts: int, room: Room, connection: str, member: Member, gone: bool) -> Event:
    return {"type": "parted", "ts": ts, "room": room.id, "connection": connection,
            "member": member_info(member), "gone": gone}


def left(ts: int, room: Room, member: Member) -> Event:
    return {"type": "left", "ts": ts, "room": room.id, "member": member_info(member)}


def room_left(ts: int, room: Room, member: Member) -> Event:
    return {"type": "room_left", "ts": ts, "room": room.id, "title": room.title,
            "member": member_info(member)}


def kicked(ts: int, room: Room, member: Member) -> Event:
    return {"type": "kicked", "ts": ts, "room": room.id, "title": room.title,
            "member": member_info(member)}


def banned(ts: int, room: Optional[Room], member: Member, rooms: List[int]) -> Event:
    return {"type": "banned", "ts": ts, "room": None if room is None else room.id,
            "member": member_info(member), "rooms": rooms}


def cleared(ts: int, room: Room) -> Event:
    return {"type": "cleared", "ts": ts, "room": room.id}


def invited(ts: int, room: Room, host: Member, invitee: Member) -> Event:
    return {"type": "invited", "ts": ts, "room": room.id, "title": room.title,
            "owner": room.owner, "host": member_info(host), "invitee": member_info(invitee)}


def renamed(ts: int, member: Member) -> Event:
    return {"type": "renamed", "ts": ts, "member": member_info(member)}


def message(
    ts: int,
    message_id: str,
    room: Room,
    connection: str,
    sender: Member,
    content: str,
    format: Dict[str, Any],
    target: Optional[Dict[str, Any]],
) -> Event:
    return {"type": "message", "ts": ts, "id": message_id, "room": room.id,
            "connection": connection, "sender": member_info(sender), "content": content,
            "format": format, "target": target}


def typing(ts: int, room: Room, member: Member, started: bool, recipients: List[int]) -> Event:
    return {"type": "typing", "ts": ts, "room": room.id, "member": member_info(member),
            "started": started, "recipients": recipients}


def presence_changes(event: Event) -> List[Tuple[int, Dict[str, Any], bool]]:
    """
    ``(room, member, present)`` for each room whose present members an event changes: what an
    adapter applies to the presence it keeps for itself (userlists, IRC channels, metrics).
    """
    kind = event.get("type")
    if kind == "entered":
        return [(event["room"], event["member"], True)]
    if kind in ("left", "room_left", "kicked") or (kind == "parted" and event["gone"]):
        return [(event["room"], event["member"], False)]
    if kind == "banned":
        rooms = [] if event["room"] is None else [event["room"]]
        return [(room, event["member"], False) for room in rooms + list(event["rooms"])]
    return []
