"""
The room domain's events: what L{ChatRooms} publishes on ``room:<client name>``.

Every event is a plain JSON object (``bus.publish`` envelopes it as ``{"v", "origin", "topic",
"event"}``), complete in itself: a subscriber renders it for its transport from its fields and
from its own state built from earlier events, never by reading the domain while it handles one.
No wire format in here: no ILIAS envelope, no Socket.IO room name, no pre-encoded JSON. Every
event has ``type``, and ``ts`` (milliseconds since the epoch, the domain's clock when it
happened). ``room`` is a room key (int: the room id, or for an ILIAS 8 private room
``ilchat.chat.model.room_key(room_id, sub_room_id)``); a I{member} is ``{"id": int, "name": str | None,
"picture": bool}`` (``picture``: the user shows a profile picture); recipients are member ids,
which each adapter maps to the connections it owns. A ``connection`` field is the connection id
that acted (adapters use it to answer that connection, and for echo suppression).

``room_created``  ``room``, ``title``, ``owner`` (str or None): a room that did not exist.
``entered``       ``room``, ``title``, ``connection``, ``member``, ``first`` (bool: the member
                  was not present before; otherwise another connection of theirs entered).
``parted``        ``room``, ``connection``, ``member``, ``gone`` (bool: it was the member's last
                  connection in the room, so the member left it): an IRC PART.
``left``          ``room``, ``member``, ``last`` (see below): the disconnect grace expired; the
                  member is out.
``room_left``     ``room``, ``title``, ``member``: PHP's LeavePrivateRoom; the member's
                  connections are out of the room, the member stays admitted.
``kicked``        ``room``, ``title``, ``member``: out of the room, admission taken back.
``banned``        ``room`` (or None when the member was not in that room), ``member``,
                  ``rooms`` (the other rooms the member was still present in): the member is
                  out of every room and logged out.
``room_deleted``  ``room``, ``title``, ``members`` (the ids admitted or present): PHP deleted an
                  ILIAS 8 private room; everyone is out of it and it is gone.
``cleared``       ``room``: the history was cleared.
``invited``       ``room``, ``title``, ``owner``, ``host`` (member), ``invitee`` (member).
``renamed``       ``member`` (its new name and picture setting; a login again, an IRC nick).
``message``       ``id`` (unique: the history row's ``hist_id``, else
                  ``"<origin>-<run token>-<n>"``), ``room``, ``connection``, ``sender`` (member),
                  ``content``, ``format`` (object), ``target`` (None, or ``{"id", "name",
                  "public"}``; a non-public target is a whisper: only the sender's and the
                  target's connections get it).
``typing``        ``room``, ``member``, ``started`` (bool), ``recipients`` (member ids: the other
                  members of the room).

Events that exist for the other processes of a cluster (renderers ignore them; the other
processes' L{ilchat.chat.rooms.ChatRooms} apply them to their state, see
L{ilchat.chat.rooms.ChatRooms.apply_remote}; presence is L{ilchat.chat.cluster_presence}'s):

``connected``     ``member``: PHP's Connect registered the member.
``admitted``      ``room``, ``title``, ``owner``, ``member``: PHP's EnterPrivateRoom admitted the
                  member to the room (a process that does not know the room yet learns it).
``released``      ``member``: the origin no longer keeps the member for a reason of its own (it
                  forgot them, or keeps them only while another instance claims them).
``instance_stopping``  the origin stops cleanly; its holdings end after the grace. It carries the
                  origin's state as in ``snapshot`` (optional: an older version sends none), so
                  that a process which started a moment ago, whose ``sync_request`` the origin
                  never answered, still learns what ends (and whose rows to move); and
                  ``live``, the instances the origin knew to be alive: the witnesses of its
                  departure, one of which decides it (L{ilchat.chat.rooms.ChatRooms.instance_gone}).
``sync_request``  ``fresh`` (bool: the origin has just started, it holds nothing yet; false when
                  its Redis connection came back) and the origin's state as in ``snapshot``:
                  every other instance answers with one ``snapshot``.
``snapshot``      ``rooms`` (``[{"id", "title", "owner"}]``), ``members`` (``[{"id", "name",
                  "picture", "rooms": [admitted room ids], "claimed": whether the origin
                  keeps them for a reason of its own (L{ilchat.chat.claims})}]``),
                  ``others`` (optional: ``{instance: [[room, member id]]}``, what the other
                  instances or their previous runs hold as far as the origin knows; a process
                  that decides the departure of one it never heard from, having started after
                  that one died, publishes the ``left`` of those too), ``held`` (``[[room,
                  member id]]``:
                  the pairs the origin holds): applied idempotently (a union for rooms and
                  admissions; ``held`` replaces what is recorded for the origin).

``left`` may carry ``instance``: the departed instance whose holding ends (the one process that
handles a departure publishes these); without it, the origin's holding ends. ``whole`` (true, or
absent): the instance has not come back, so what any run of it held ends (a run started after a
stop and gone again within the grace included). ``last`` (bool) says
whether the origin saw nobody hold the member in the room any more once this holding ended (so
it moved the ``chatroom_users`` row); false, the member was still held elsewhere as far as the
origin knew, and a process whose own ``left`` was such a one moves the row when this ``left``
ends the member's presence (two graces that expire at once on two processes).
"""

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from ilchat.chat.model import Member, Room

__all__ = [
    "EVENT_TYPES",
    "banned",
    "check_event",
    "cleared",
    "departed",
    "entered",
    "invited",
    "kicked",
    "left",
    "member_info",
    "message",
    "parted",
    "admitted",
    "connected",
    "instance_stopping",
    "snapshot",
    "state",
    "sync_request",
    "released",
    "renamed",
    "room_created",
    "room_deleted",
    "room_left",
    "typing",
]

Event = Dict[str, Any]

EVENT_TYPES = (
    "room_created", "entered", "parted", "left", "room_left", "kicked", "banned", "cleared",
    "room_deleted",
    "invited", "renamed", "message", "typing", "connected", "admitted", "released",
    "instance_stopping", "sync_request", "snapshot",
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


def left(ts: int, room: Room, member: Member, last: bool) -> Event:
    return {"type": "left", "ts": ts, "room": room.id, "member": member_info(member),
            "last": last}


def room_left(ts: int, room: Room, member: Member) -> Event:
    return {"type": "room_left", "ts": ts, "room": room.id, "title": room.title,
            "member": member_info(member)}


def kicked(ts: int, room: Room, member: Member) -> Event:
    return {"type": "kicked", "ts": ts, "room": room.id, "title": room.title,
            "member": member_info(member)}


def banned(ts: int, room: Optional[Room], member: Member, rooms: List[int]) -> Event:
    return {"type": "banned", "ts": ts, "room": None if room is None else room.id,
            "member": member_info(member), "rooms": rooms}


def room_deleted(ts: int, room: Room, members: List[int]) -> Event:
    return {"type": "room_deleted", "ts": ts, "room": room.id, "title": room.title,
            "members": members}


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


def connected(ts: int, member: Member) -> Event:
    return {"type": "connected", "ts": ts, "member": member_info(member)}


def admitted(ts: int, room: Room, member: Member) -> Event:
    return {"type": "admitted", "ts": ts, "room": room.id, "title": room.title,
            "owner": room.owner, "member": member_info(member)}


def released(ts: int, member: Member) -> Event:
    return {"type": "released", "ts": ts, "member": member_info(member)}


def instance_stopping(ts: int, known: Event, live: List[str]) -> Event:
    return dict(known, type="instance_stopping", ts=ts, live=live)


def departed(ts: int, room_id: int, member: Dict[str, Any], instance: str, last: bool,
             whole: bool = False) -> Event:
    """The ``left`` of a departed instance's holding, published by the one process handling it."""
    event = {"type": "left", "ts": ts, "room": room_id, "member": dict(member),
             "instance": instance, "last": last}
    if whole:
        event["whole"] = True
    return event


def state(rooms: List[Room], members: List[Member], held: List[Tuple[int, int]],
          claimed: Iterable[int] = (),
          others: Optional[Dict[str, List[Tuple[int, int]]]] = None) -> Event:
    """
    The fields of ``snapshot`` and ``sync_request``: what one instance knows and holds,
    (C{claimed}) which members it keeps for a reason of its own (L{ilchat.chat.claims}), and
    (C{others}) what the other instances (or their previous runs) hold as far as it knows.
    """
    claimed = set(claimed)
    admissions: Dict[int, List[int]] = {}
    for room in rooms:
        for user_id in room.members:
            admissions.setdefault(user_id, []).append(room.id)
    return {
        "rooms": [{"id": room.id, "title": room.title, "owner": room.owner} for room in rooms],
        "members": [dict(member_info(member), rooms=sorted(admissions.get(member.id, ())),
                         claimed=member.id in claimed) for member in members],
        "held": [[room_id, user_id] for room_id, user_id in held],
        "others": {name: [[room_id, user_id] for room_id, user_id in pairs]
                   for name, pairs in (others or {}).items()},
    }


def sync_request(ts: int, fresh: bool, known: Event) -> Event:
    return dict(known, type="sync_request", ts=ts, fresh=fresh)


def snapshot(ts: int, known: Event) -> Event:
    return dict(known, type="snapshot", ts=ts)


# -- checking what another process sent ------------------------------------------------------

Check = Callable[[Any], bool]


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def _list_of(check: Check) -> Check:
    return lambda value: isinstance(value, list) and all(check(item) for item in value)


def _is(*types: type) -> Check:
    return lambda value: isinstance(value, types)


def _member(value: Any) -> bool:
    return (isinstance(value, dict) and _int(value.get("id"))
            and _optional(_is(str))(value.get("name")) and isinstance(value.get("picture"), int))


def _known_member(value: Any) -> bool:
    return (_member(value) and _list_of(_int)(value.get("rooms"))
            and _optional(_is(bool))(value.get("claimed")))


def _known_room(value: Any) -> bool:
    return (isinstance(value, dict) and _int(value.get("id"))
            and _optional(_is(str))(value.get("title")) and _optional(_is(str))(value.get("owner")))


def _pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_int(item) for item in value)


def _holdings(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(name, str) and _list_of(_pair)(pairs) for name, pairs in value.items())


_TITLE = _optional(_is(str))
_BOOL = _is(bool)
_STATE = {"rooms": _list_of(_known_room), "members": _list_of(_known_member),
          "held": _list_of(_pair)}

#: The fields each event type must carry, and what each must be (see the module docstring);
#: optional fields (``left``'s ``instance`` and ``whole``, ``instance_stopping``'s state) are
#: checked when present.
_FIELDS: Dict[str, Dict[str, Check]] = {
    "room_created": {"room": _int, "title": _TITLE, "owner": _TITLE},
    "entered": {"room": _int, "title": _TITLE, "connection": _is(str), "member": _member,
                "first": _BOOL},
    "parted": {"room": _int, "connection": _is(str), "member": _member, "gone": _BOOL},
    "left": {"room": _int, "member": _member, "last": _BOOL},
    "room_left": {"room": _int, "title": _TITLE, "member": _member},
    "kicked": {"room": _int, "title": _TITLE, "member": _member},
    "banned": {"room": _optional(_int), "member": _member, "rooms": _list_of(_int)},
    "room_deleted": {"room": _int, "title": _TITLE, "members": _list_of(_int)},
    "cleared": {"room": _int},
    "invited": {"room": _int, "title": _TITLE, "owner": _TITLE, "host": _member,
                "invitee": _member},
    "renamed": {"member": _member},
    "message": {"id": _is(str, int), "room": _int, "connection": _is(str), "sender": _member,
                "content": _is(str), "format": _is(dict), "target": _optional(_is(dict))},
    "typing": {"room": _int, "member": _member, "started": _BOOL, "recipients": _list_of(_int)},
    "connected": {"member": _member},
    "admitted": {"room": _int, "title": _TITLE, "owner": _TITLE, "member": _member},
    "released": {"member": _member},
    "instance_stopping": {},  # its state is optional (below)
    "sync_request": dict(_STATE, fresh=_BOOL),
    "snapshot": _STATE,
}
_OPTIONAL: Dict[str, Dict[str, Check]] = {
    "left": {"instance": _is(str), "whole": _BOOL},
    "instance_stopping": dict(_STATE, live=_list_of(_is(str)), others=_holdings),
    "snapshot": {"others": _holdings},
    "sync_request": {"others": _holdings},
}


def check_event(event: Dict[str, Any]) -> None:
    """
    Raise C{ValueError} naming the first field of C{event} that is missing or of the wrong
    kind, for the bus to drop an event another process sent before any subscriber applies
    half of it. Types this version does not know pass: their subscribers ignore them.
    """
    kind = event.get("type")
    fields = _FIELDS.get(kind)  # type: ignore[arg-type]
    if fields is None:
        return
    if not _int(event.get("ts")):
        raise ValueError(f"{kind} event: field ts missing or not an integer")
    for name, check in fields.items():
        if name not in event or not check(event[name]):
            raise ValueError(f"{kind} event: field {name} missing or of the wrong kind")
    for name, check in _OPTIONAL.get(kind, {}).items():  # type: ignore[arg-type]
        if name in event and not check(event[name]):
            raise ValueError(f"{kind} event: field {name} of the wrong kind")
