"""
The room domain's state: L{Member} and L{Room}, plain objects owned by L{ChatRooms}.

Adapters read them through the domain's lookups (``get_room``, ``get_member``, ``member_for``)
when they act, never while handling a bus delivery: what a delivery needs is in its event.

A room is keyed by an int, its *room key*: the room id for a main room, and for an ILIAS 8
private room (``subRoomId`` > 0 inside room ``roomId``) the negative int L{room_key} packs both
into. So every key is one JSON-stable, sortable type, and everything keyed by room (presence,
userlists, admissions) holds private rooms unchanged; L{room_parts} gives the pair back.
"""

from typing import Dict, Optional, Set, Tuple

import attrs

__all__ = ["Member", "Room", "room_key", "room_parts"]

#: ILIAS ids are 4-byte integers: a sub-room id fits in the low 32 bits of a room key.
_SUB_BITS = 32
_SUB_LIMIT = 1 << _SUB_BITS


def room_key(room_id: int, sub_room_id: int = 0) -> int:
    """
    The key of room C{room_id} (sub-room 0) or of its private room C{sub_room_id}.

    Raises:
        ValueError: ids that are not ILIAS ids (a room id below 1, a sub-room id out of range).
    """
    if sub_room_id == 0:
        return room_id
    if room_id < 1 or not 0 < sub_room_id < _SUB_LIMIT:
        raise ValueError(f"no private room {sub_room_id!r} in room {room_id!r}")
    return -((room_id << _SUB_BITS) | sub_room_id)


def room_parts(key: int) -> Tuple[int, int]:
    """``(room_id, sub_room_id)`` of a room key (sub-room 0 for a main room)."""
    if key >= 0:
        return key, 0
    packed = -key
    return packed >> _SUB_BITS, packed & (_SUB_LIMIT - 1)


@attrs.define(slots=True, eq=False)
class Member:
    """
    A user known to one instance: an ILIAS subscriber, a standalone name or an IRC user.

    ``connections`` are the adapter-chosen connection ids currently logged in as this member;
    ``registered``: PHP's Connect registered them on this instance (their page may log in here).
    """

    id: int
    name: Optional[str] = None
    profile_picture_visible: bool = False
    connections: Set[str] = attrs.Factory(set)
    registered: bool = False


@attrs.define(slots=True, eq=False)
class Room:
    """
    A chat room of one instance.

    ``members`` are the room-level subscribers (PHP's EnterPrivateRoom/InvitePrivateRoom);
    ``joined`` the member ids this process holds as present (one of their connections here
    entered; who is present on any process is ``ChatRooms.presence``); ``connections`` this
    process's connection ids that entered the room and receive what is sent to it.
    """

    id: int  # the room key (see the module docstring)
    title: str = "Main"
    owner: Optional[str] = None
    members: Dict[int, Member] = attrs.Factory(dict)
    connections: Set[str] = attrs.Factory(set)
    joined: Set[int] = attrs.Factory(set)

    def remove_member(self, user_id: int) -> None:
        """The member leaves the room: no longer subscribed, no longer present."""
        self.members.pop(user_id, None)
        self.joined.discard(user_id)
