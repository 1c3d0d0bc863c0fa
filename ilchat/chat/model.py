"""
The room domain's state: L{Member} and L{Room}, plain objects owned by L{ChatRooms}.

Adapters read them through the domain's lookups (``get_room``, ``get_member``, ``member_for``)
when they act, never while handling a bus delivery: what a delivery needs is in its event.
"""

from typing import Dict, Optional, Set

import attrs

__all__ = ["Member", "Room"]


@attrs.define(slots=True, eq=False)
class Member:
    """
    A user known to one instance: an ILIAS subscriber, a standalone name or an IRC user.

    ``connections`` are the adapter-chosen connection ids currently logged in as this member.
    """

    id: int
    name: Optional[str] = None
    profile_picture_visible: bool = False
    connections: Set[str] = attrs.Factory(set)


@attrs.define(slots=True, eq=False)
class Room:
    """
    A chat room of one instance.

    ``members`` are the room-level subscribers (PHP's EnterPrivateRoom/InvitePrivateRoom);
    ``joined`` the member ids this process holds as present (one of their connections here
    entered; who is present on any process is ``ChatRooms.presence``); ``connections`` this
    process's connection ids that entered the room and receive what is sent to it.
    """

    id: int
    title: str = "Main"
    owner: Optional[str] = None
    members: Dict[int, Member] = attrs.Factory(dict)
    connections: Set[str] = attrs.Factory(set)
    joined: Set[int] = attrs.Factory(set)

    def remove_member(self, user_id: int) -> None:
        """The member leaves the room: no longer subscribed, no longer present."""
        self.members.pop(user_id, None)
        self.joined.discard(user_id)
