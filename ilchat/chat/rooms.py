# -*- test-case-name: tests.chat.test_rooms -*-
"""
The repository-chat domain: rooms, their members, presence, messages. No transport in here.

One L{ChatRooms} exists per client instance (one ILIAS ``client.cfg``, or the standalone chat).
Nothing is shared between instances: members, rooms and disconnect timers are all per instance.

Two kinds of members, one API
=============================

A I{member} (ILIAS calls it a subscriber) has an integer id, a display name, and zero or more
I{connections}. A connection is an opaque string chosen by the adapter that owns it and unique
within the instance:

* the ILIAS Socket.IO adapter (L{ilchat.ilias.repository}) uses the socket id (``socket.sid``);
* the IRC bridge should use ``"irc:<something unique>"`` (for example ``"irc:" + str(id(proto))``).

Both kinds go through exactly the same calls, in the order a browser does them::

    chat.connect(user_id)                        # PHP "Connect": registers the member
    chat.add_room_member(room_id, user_id)       # PHP "EnterPrivateRoom": room-level membership
    chat.login(conn, user_id, name, picture)     # the browser "login"; None if never connected
    chat.enter_room(conn, room_id)               # "enterRoom": only into rooms PHP admitted to
    chat.post_message(conn, room_id, content, format, target=None)
    chat.typing(conn, room_id, started=True)
    chat.part_room(conn, room_id)                # IRC PART (browsers have no such event)
    chat.connection_lost(conn)                   # socket/IRC connection gone

Refusals raise a L{ChatError} subclass (L{NotLoggedIn}, L{UnknownRoom}, L{UnknownUser},
L{NotInRoom}, L{InvalidInput}, L{ContentTooLong}); nothing has been delivered then. Room and
user ids are ints. A server component (the IRC bridge) finds the domain of a client with
C{chat_rooms_of(client_ctx)}.

IRC users have no ILIAS account: the IRC bridge must pick ids that ILIAS never uses (negative ids
are a good choice) and call L{ChatRooms.connect} itself. When a member's I{last} connection is gone,
a 15 s grace timer starts (per instance, per member); L{ChatRooms.connect}, L{ChatRooms.login} and
L{ChatRooms.enter_room} cancel it. When it fires the member leaves every room (``userlist`` and
``notice`` ``disconnected`` to each room), is forgotten, and the C{on_member_gone} hook moves their
``chatroom_users`` rows to ``chatroom_sessions``.

PHP-side actions: L{ChatRooms.add_room}, L{ChatRooms.leave_room}, L{ChatRooms.invite},
L{ChatRooms.clear}, L{ChatRooms.kick}, L{ChatRooms.ban}, L{ChatRooms.rooms_json}.

What the domain publishes on the bus
====================================

Everything that must reach connections is published on the bus topic L{ChatRooms.topic}
(``"room:<instance>"``) as JSON-serialisable dicts, so each adapter delivers to the connections it
owns and ignores the others. Three operations:

``{"type": "join", "room": 1, "connections": [conn, ...]}``
    these connections are now in room 1 and receive what is sent to the room (the Socket.IO
    adapter makes the socket join its socket.io room ``"1_0"``);
``{"type": "leave", "room": 1, "connections": [conn, ...]}``
    they are out of room 1 and must receive nothing more from it (kick, ban, leave);
``{"type": "emit", "event": name, "payload": dict-or-None, "room": 1, "skip": [conn, ...]}``
    deliver to every connection in room 1 except those in ``skip``; or, with ``"connections":
    [conn, ...]`` instead of ``"room"``, to exactly those connections. ``payload`` None means the
    event has no argument (``userjustbanned``). An optional ``"crowd": true`` marks a ``connect``
    or ``disconnected`` notice that browsers need not get (see "Crowds" below).

Events and payloads are the ILIAS repository-chat ones (spec §3.2), already complete: ``message``
(``payload["from"]``, ``payload["content"]``, optional ``payload["target"]``), ``notice`` (its
``content`` says what happened: ``connect`` = someone entered, ``disconnected`` = left after the
grace, ``user_kicked``, ``private_room_left``, ``welcome_to_chat``, ...), ``userlist``
(``payload["users"]``), ``private_room_entered``, ``userStartedTyping``/``userStoppedTyping``,
``clear``, ``userjustkicked``, ``userjustbanned``, ``user_invited``. An IRC bridge maps them to
PRIVMSG/JOIN/PART/KICK; it can look up the current state with L{ChatRooms.get_room} (``room.joined``,
``room.connections``) and L{ChatRooms.get_member}.

Crowds: the room-wide ``userlist`` is coalesced per room. The first change in a quiet room is sent
at once (so a normal join has exactly the Node server's frame order); further changes within a
window that grows with the square of the room size (50 ms for a class, about 5 s for 1,000
members, at most 10 s) are folded into one trailing ``userlist``. A newcomer whose change was
folded gets its own ``userlist`` immediately, so nobody waits for it. In a room of more than
L{ChatRooms.CROWD_SIZE} connections, the ``connect`` notice of a join (and the ``disconnected``
notice of a departure) that falls into such a window is published with ``"crowd": true``: the
Socket.IO adapter does not deliver it (n joiners times n members would be O(n²) frames; the
browser sees the change in the userlist), while an IRC bridge should still turn it into a JOIN
(or PART) line.

Messages: delivered first, then handed to a L{HistoryWriter} (batched background writes, retried
on database errors). A message whose stored JSON would not fit ``chatroom_history.message``
(4000 characters) raises L{ContentTooLong} before anything is delivered.
"""

import bisect
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    KeysView,
    List,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.bus import IBus
from ilchat.jsonutil import JSONError, dumps
from ilchat.logs import debug_wanted
from ilchat.chat.history import HistoryRow, HistoryWriter, WriteBatch

__all__ = [
    "ChatError",
    "ChatRooms",
    "ContentTooLong",
    "InvalidInput",
    "Member",
    "NotInRoom",
    "NotLoggedIn",
    "Room",
    "UnknownRoom",
    "UnknownUser",
    "chat_rooms_of",
    "MAX_STORED_MESSAGE_LENGTH",
    "DISCONNECT_GRACE",
]

#: ``chatroom_history.message`` is VARCHAR(4000): the stored JSON must fit, in characters.
MAX_STORED_MESSAGE_LENGTH = 4000

#: Seconds a member without connections stays in their rooms (spec §5.1).
DISCONNECT_GRACE = 15.0

RoomKey = Union[int, str]


class ChatError(Exception):
    """A request the domain refuses; C{code} is a short machine-readable reason."""

    code = "error"


class NotLoggedIn(ChatError):
    """The connection has not logged in (or its member was banned/forgotten)."""

    code = "not_logged_in"


class UnknownRoom(ChatError):
    """No room with that id in this instance."""

    code = "unknown_room"


class UnknownUser(ChatError):
    """No member with that id in this instance (or not in that room)."""

    code = "unknown_user"


class NotInRoom(ChatError):
    """The connection (or member) is not in the room it tries to act in."""

    code = "not_in_room"


class InvalidInput(ChatError):
    """An argument has the wrong type or shape."""

    code = "invalid_input"


class ContentTooLong(ChatError):
    """The message would not fit into ``chatroom_history.message``; it was not delivered."""

    code = "message_too_long"


def _identity_changed(member: "Member", attribute: Any, value: Any) -> Any:
    """C{on_setattr} of a member's name and picture setting: its userlist entries follow."""
    member._entry = None
    for room in member._present_in:
        room._entry_changed(member.id)
    return value


@attrs.define(slots=True, eq=False)
class Member:
    """
    A user known to one instance: an ILIAS subscriber or an IRC user.

    ``connections`` are the adapter-chosen connection ids currently logged in as this member.
    """

    id: int
    name: Optional[str] = attrs.field(default=None, on_setattr=_identity_changed)
    profile_picture_visible: bool = attrs.field(default=False, on_setattr=_identity_changed)
    connections: Set[str] = attrs.Factory(set)
    # The userlist entry (key, object, JSON), made once per name and picture setting, and the
    # rooms whose userlists hold it (see Room.mark_present).
    _entry: Optional[Tuple[str, Dict[str, Any], str]] = attrs.field(
        default=None, init=False, repr=False
    )
    _present_in: Set["Room"] = attrs.field(factory=set, init=False, repr=False)

    def as_user(self) -> Dict[str, Any]:
        """The ``{id, username, profile_picture_visible}`` object of userlists and ``from``."""
        return {
            "id": self.id,
            "username": self.name,
            "profile_picture_visible": self.profile_picture_visible,
        }

    def userlist_entry(self) -> Tuple[str, Dict[str, Any], str]:
        """``("<id>", as_user(), '"<id>":{...}')``: this member in a userlist, made once."""
        entry = self._entry
        if entry is None:
            key, user = str(self.id), self.as_user()
            entry = self._entry = (key, user, dumps(key) + ":" + dumps(user))
        return entry


class UserList(Dict[str, Dict[str, Any]]):
    """
    ``users`` of a ``userlist`` payload: a plain dict for every reader, plus ``json``, its compact
    JSON made from the members' cached entries.

    A crowd of 1,000 joining one room sends each newcomer the full list: encoding those lists
    was 30 % of the server's CPU (py-spy, crowd). An adapter that finds a ``UserList`` in a
    payload can splice ``json`` into the packet instead of encoding the entries again; through a
    bus that serialises (Redis) it arrives as a plain dict and is encoded as usual.
    """

    __slots__ = ("json",)


@attrs.define(slots=True, eq=False)
class Room:
    """
    A chat room of one instance.

    ``members`` are the room-level subscribers (PHP's EnterPrivateRoom/InvitePrivateRoom);
    ``joined`` the member ids currently marked as present (they appear in the ``userlist``);
    ``connections`` the connection ids that entered the room and receive what is sent to it.
    """

    id: int
    title: str = "Main"
    owner: Optional[str] = None
    members: Dict[int, Member] = attrs.Factory(dict)
    connections: Set[str] = attrs.Factory(set)
    # Userlist coalescing state (see ChatRooms._userlist_changed).
    userlist_call: Optional[IDelayedCall] = None
    userlist_next_at: float = 0.0
    userlist_key: RoomKey = 0
    # The userlist kept up to date as members come and go: present members by id, and their
    # entries in ascending id order (parallel lists), so that a userlist is two C-level joins.
    _present: Dict[int, Member] = attrs.field(factory=dict, init=False, repr=False)
    _ids: List[int] = attrs.field(factory=list, init=False, repr=False)
    _keys: List[str] = attrs.field(factory=list, init=False, repr=False)
    _users: List[Dict[str, Any]] = attrs.field(factory=list, init=False, repr=False)
    _texts: List[str] = attrs.field(factory=list, init=False, repr=False)
    _stale: Set[int] = attrs.field(factory=set, init=False, repr=False)

    @property
    def server_id(self) -> str:
        """The ``"<id>_0"`` id the Node server used for rooms (and socket.io room names)."""
        return f"{self.id}_0"

    @property
    def joined(self) -> KeysView[int]:
        """The ids of the members marked present (change it with mark_present/mark_absent)."""
        return self._present.keys()

    def mark_present(self, member: Member) -> None:
        """Add a member of this room to ``joined`` (and so to its userlist)."""
        user_id = member.id
        if user_id in self._present:
            return
        self._present[user_id] = member
        member._present_in.add(self)
        key, user, text = member.userlist_entry()
        i = bisect.bisect_left(self._ids, user_id)
        self._ids.insert(i, user_id)
        self._keys.insert(i, key)
        self._users.insert(i, user)
        self._texts.insert(i, text)

    def mark_absent(self, user_id: int) -> None:
        """Take a member out of ``joined`` (and of the userlist)."""
        member = self._present.pop(user_id, None)
        if member is None:
            return
        self._stale.discard(user_id)
        member._present_in.discard(self)
        i = bisect.bisect_left(self._ids, user_id)
        del self._ids[i], self._keys[i], self._users[i], self._texts[i]

    def remove_member(self, user_id: int) -> None:
        """The member leaves the room: no longer subscribed, no longer present."""
        self.members.pop(user_id, None)
        self.mark_absent(user_id)

    def _entry_changed(self, user_id: int) -> None:
        self._stale.add(user_id)

    def userlist(self) -> Dict[str, Dict[str, Any]]:
        """``users`` of a ``userlist`` payload: joined members, by ascending id like JS objects."""
        if self._stale:
            for user_id in self._stale:
                i = bisect.bisect_left(self._ids, user_id)
                _, self._users[i], self._texts[i] = self._present[user_id].userlist_entry()
            self._stale.clear()
        users = UserList(zip(self._keys, self._users))
        users.json = "{" + ",".join(self._texts) + "}"
        return users

    def as_json(self) -> Dict[str, Any]:
        """What ``GetRooms`` reports for this room."""
        return {
            "id": self.id,
            "title": self.title,
            "owner": self.owner,
            "users": list(self.userlist().values()),
        }


class ChatRooms:
    """
    The rooms and members of one instance (see the module docstring for the contract).

    Args:
        instance: the client name; the bus topic is ``"room:<instance>"``.
        bus: where every delivery is published.
        reactor: C{seconds()} and C{callLater()}; a C{task.Clock} in tests.
        write_history: writes a batch of L{HistoryRow} (e.g. C{store.add_history_rows}).
        history: a L{HistoryWriter} set up by the caller (journal, refusals), instead of
            C{write_history}.
        on_member_gone: called as C{on_member_gone(user_id, room_ids)} after the disconnect
            grace, to move ``chatroom_users`` rows to ``chatroom_sessions``; may return a Deferred
            or coroutine. Failures are logged and retried a few times.
        grace: the disconnect grace in seconds.
    """

    _log = Logger()

    USERLIST_MIN_WINDOW = 0.05
    USERLIST_MAX_WINDOW = 10.0
    #: Rooms with more connections than this fold the ``connect`` notices of a crowd.
    CROWD_SIZE = 100

    def __init__(
        self,
        instance: str,
        bus: IBus,
        reactor: IReactorTime,
        write_history: Optional[WriteBatch] = None,
        on_member_gone: Optional[Callable[[int, List[int]], Any]] = None,
        grace: float = DISCONNECT_GRACE,
        history: Optional[HistoryWriter] = None,
    ) -> None:
        self.instance = instance
        self.topic = f"room:{instance}"
        self._bus = bus
        self._reactor = reactor
        self._grace = grace
        self._on_member_gone = on_member_gone
        if history is None and write_history is not None:
            history = HistoryWriter(reactor, write_history)
        self._history = history
        self._members: Dict[int, Member] = {}
        self._rooms: Dict[int, Room] = {}
        self._connections: Dict[str, int] = {}
        self._grace_calls: Dict[int, IDelayedCall] = {}
        self._pending: Set[Deferred[Any]] = set()
        self._retries: Set[IDelayedCall] = set()
        #: Extra "is this name in use?" checks for name-only logins (the standalone chat). The IRC
        #: bridge adds one for its nicks, so that a name is unique among web and IRC users.
        self.name_checks: List[Callable[[str], bool]] = []

    # -- lookups ----------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Milliseconds since the epoch, as every socket payload carries them."""
        return int(self._reactor.seconds() * 1000)

    def get_room(self, room_id: int) -> Optional[Room]:
        """The room with that id, or None."""
        return self._rooms.get(room_id)

    def get_member(self, user_id: int) -> Optional[Member]:
        """The member with that id, or None."""
        return self._members.get(user_id)

    def member_named(self, name: str) -> Optional[Member]:
        """The member called C{name}, compared case-insensitively (C{casefold}), or None."""
        key = name.casefold()
        for member in self._members.values():
            if member.name is not None and member.name.casefold() == key:
                return member
        return None

    def name_in_use(self, name: str) -> bool:
        """Whether a member or anyone a L{name_checks} hook knows (IRC nicks) is called C{name}."""
        return self.member_named(name) is not None or any(check(name) for check in self.name_checks)

    def member_for(self, connection: str) -> Optional[Member]:
        """The member a connection is logged in as, or None."""
        user_id = self._connections.get(connection)
        return None if user_id is None else self._members.get(user_id)

    def rooms(self) -> List[Room]:
        """Every room of the instance."""
        return list(self._rooms.values())

    def rooms_json(self) -> Dict[str, Any]:
        """The ``GetRooms`` body: ``{"rooms": {"<id>_0": {...}}}``."""
        return {"rooms": {room.server_id: room.as_json() for room in self._rooms.values()}}

    @property
    def history(self) -> Optional[HistoryWriter]:
        """The background history writer (None without C{write_history})."""
        return self._history

    def has_grace_timer(self, user_id: int) -> bool:
        """Whether the disconnect grace is running for that member (for tests and metrics)."""
        return user_id in self._grace_calls

    # -- PHP-side actions -------------------------------------------------------------------

    def add_room(self, room_id: int, title: str = "Main", owner: Optional[str] = None) -> Room:
        """Create a room; an existing room keeps its title and owner (as the Node server)."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, title, owner)
        return room

    def connect(self, user_id: int) -> Member:
        """Register a member (PHP ``Connect``) and cancel their disconnect grace."""
        self._cancel_grace(user_id)
        member = self._members.get(user_id)
        if member is None:
            member = self._members[user_id] = Member(user_id)
            if debug_wanted():
                self._log.debug("New member {user_id} of {instance}", user_id=user_id,
                                instance=self.instance)
        return member

    def add_room_member(self, room_id: int, user_id: int) -> Room:
        """
        Make a registered member a member of a room (PHP ``EnterPrivateRoom``).

        Raises:
            UnknownRoom, UnknownUser
        """
        room = self._require_room(room_id)
        member = self._members.get(user_id)
        if member is None:
            raise UnknownUser(f"unknown user {user_id}")
        room.members[user_id] = member
        return room

    def leave_room(self, room_id: int, user_id: int) -> None:
        """
        PHP ``LeavePrivateRoom``: the member's connections leave the room; they stay a member.

        Raises:
            UnknownRoom, UnknownUser
        """
        room = self._require_room(room_id)
        member = room.members.get(user_id)
        if member is None:
            raise UnknownUser(f"user {user_id} is not in room {room_id}")
        room.mark_absent(user_id)
        conns = sorted(member.connections)
        ts = self.now_ms()
        if conns:
            room.connections.difference_update(conns)
            self._publish({"type": "leave", "room": room.id, "connections": conns})
            self._emit_to(conns, "notice", _envelope("notice", ts, "left", room.id))
            self._emit_to(conns, "userlist", self._userlist_payload(room, room.id, ts))
        self._userlist_changed(room, room.id)
        self._emit_room(
            room,
            "notice",
            _envelope("notice", ts, "private_room_left", room.id,
                      data={"user": member.name, "title": room.title}),
        )

    def invite(self, room_id: int, host_id: int, invitee_id: int) -> None:
        """
        PHP ``InvitePrivateRoom``: add the invitee to the room and tell host and invitee.

        Raises:
            UnknownRoom
        """
        room = self._require_room(room_id)
        invitee = self._members.get(invitee_id)
        if invitee is None:
            invitee = self._members[invitee_id] = Member(invitee_id)
        room.members[invitee_id] = invitee
        host = self._members.get(host_id)
        if host is None:
            return
        ts = self.now_ms()
        self._emit_to(
            sorted(host.connections),
            "notice",
            _envelope("notice", ts, "user_invited", room.id,
                      data={"user": invitee.name, "room": room.title}),
        )
        invitee_conns = sorted(invitee.connections)
        self._emit_to(
            invitee_conns,
            "user_invited",
            _envelope("user_invited", ts, "user_invited", room.id, title=room.title,
                      owner=room.owner),
        )
        self._emit_to(
            invitee_conns,
            "notice",
            _envelope("notice", ts, "user_invited_self", room.id,
                      data={"user": host.name, "room": room.title}),
        )

    def clear(self, room_id: int) -> None:
        """
        PHP ``ClearMessages``: tell the room; PHP deletes the history rows itself.

        Raises:
            UnknownRoom
        """
        room = self._require_room(room_id)
        ts = self.now_ms()
        self._emit_room(room, "clear",
                        _envelope("clear", ts, "history_has_been_cleared", room.id))
        self._emit_room(room, "notice",
                        _envelope("notice", ts, "history_has_been_cleared", room.id))

    def kick(self, room_id: int, user_id: int) -> bool:
        """
        PHP ``Kick``: the member leaves the room and its connections stop receiving it.

        Returns:
            whether the user was in the room.

        Raises:
            UnknownRoom
        """
        room = self._require_room(room_id)
        member = self._members.get(user_id) or room.members.get(user_id)
        if member is None or not (
            user_id in room.members
            or user_id in room.joined
            or not member.connections.isdisjoint(room.connections)
        ):
            return False
        room.remove_member(user_id)
        ts = self.now_ms()
        conns = sorted(member.connections)
        if conns:
            self._emit_to(conns, "userjustkicked",
                          _envelope("userjustkicked", ts, "userjustkicked", room.id))
            self._emit_to(conns, "notice",
                          _envelope("notice", ts, "kicked_from_private_room", room.id,
                                    data={"title": room.title}))
            room.connections.difference_update(conns)
            self._publish({"type": "leave", "room": room.id, "connections": conns})
        self._userlist_changed(room, room.id)
        self._emit_room(room, "notice",
                        _envelope("notice", ts, "user_kicked", room.id,
                                  data={"user": member.name}))
        return True

    def ban(self, room_id: int, user_id: int) -> bool:
        """
        PHP ``Ban``: like a kick (``userjustbanned``, no payload), then the member is forgotten.

        The banned member's connections are logged out: they can no longer act until PHP
        connects the user again (which PHP refuses for banned users).

        Returns:
            whether the user was known.
        """
        member = self._members.get(user_id)
        if member is None:
            return False
        room = self._rooms.get(room_id)
        conns = sorted(member.connections)
        if room is not None and (
            user_id in room.members
            or user_id in room.joined
            or not member.connections.isdisjoint(room.connections)
        ):
            room.remove_member(user_id)
            if conns:
                self._emit_to(conns, "userjustbanned", None)
                room.connections.difference_update(conns)
                self._publish({"type": "leave", "room": room.id, "connections": conns})
            key = str(room.id)
            self._userlist_changed(room, key)
            self._emit_room(room, "notice",
                            _envelope("notice", self.now_ms(), "user_kicked", key,
                                      data={"user": member.name}))
        self._forget(member)
        return True

    # -- connection-side actions ------------------------------------------------------------

    def login(
        self, connection: str, user_id: int, name: str, profile_picture_visible: bool = False
    ) -> Optional[Member]:
        """
        Log a connection in as a registered member (the browser's ``login``).

        A connection acts as one member for its whole life: a second login may rename it (IRC
        nick changes) but not switch it to another id.

        Returns:
            the member, or None when the id was never connected, or the connection is already
            logged in as someone else (the adapter then shuts the connection down).
        """
        member = self._members.get(user_id)
        previous = self._connections.get(connection)
        if member is None or (previous is not None and previous != user_id):
            return None
        self._cancel_grace(user_id)
        member.name = name
        member.profile_picture_visible = bool(profile_picture_visible)
        member.connections.add(connection)
        self._connections[connection] = user_id
        return member

    def enter_room(self, connection: str, room_id: int) -> Room:
        """
        The connection enters a room (the browser's ``enterRoom``).

        Sends, like ILIAS 10: ``private_room_entered`` to the connection; the ``userlist`` (to the
        room, or to the connection alone when coalesced); and, unless the member was already
        present, ``notice`` ``welcome_to_chat`` to the connection and ``connect`` to the others.

        Only members of the room enter it: PHP admits a user with ``EnterPrivateRoom`` or
        ``InvitePrivateRoom``, and a kick or ban takes that back until PHP admits them again
        (the Node server lets anyone in, only without a userlist entry).

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom (not admitted by PHP)
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if member.id not in room.members:
            raise NotInRoom(f"user {member.id} was not admitted to room {room_id}")
        self._cancel_grace(member.id)
        already_joined = member.id in room.joined
        if connection not in room.connections:
            room.connections.add(connection)
            self._publish({"type": "join", "room": room.id, "connections": [connection]})
        room.mark_present(member)
        ts = self.now_ms()
        self._emit_to(
            [connection],
            "private_room_entered",
            _envelope("private_room_entered", ts, "private_room_entered", room.id,
                      subscriber={"id": member.id, "username": member.name}),
        )
        if not self._userlist_changed(room, room.id):
            self._emit_to([connection], "userlist", self._userlist_payload(room, room.id, ts))
        if not already_joined:
            data = {"id": member.id, "username": member.name, "title": room.title}
            self._emit_to([connection], "notice",
                          _envelope("notice", ts, "welcome_to_chat", room.id, data=data))
            notice = _envelope("notice", ts, "connect", room.id, data=dict(data))
            self._emit_room(room, "notice", notice, skip=[connection],
                            crowd=self._in_crowd(room))
        return room

    def post_message(
        self,
        connection: str,
        room_id: int,
        content: str,
        format: Optional[Dict[str, Any]] = None,
        target: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Any]:
        """
        Deliver a message to a room, or privately to sender and target, then store it.

        Args:
            target: ``{"id": int, "username": str, "public": truthy}``; the target is the room
                member with that id (its ``username`` is the member's name, whatever the client
                wrote); a non-public target means only the sender's and the target's
                connections get it.

        Returns:
            the delivered payload.

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom, UnknownUser (target), InvalidInput,
            ContentTooLong
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if connection not in room.connections:
            raise NotInRoom(f"not in room {room_id}")
        if not isinstance(content, str):
            raise InvalidInput("content must be a string")
        if format is None:
            format = {}
        if not isinstance(format, dict):
            raise InvalidInput("format must be an object")
        target_member: Optional[Member] = None
        clean_target: Optional[Dict[str, Any]] = None
        if target is not None:
            if not isinstance(target, dict):
                raise InvalidInput("target must be an object")
            target_id = target.get("id")
            if isinstance(target_id, str) and target_id.lstrip("-").isdigit():
                target_id = int(target_id)
            if not isinstance(target_id, int) or isinstance(target_id, bool):
                raise InvalidInput("target.id must be a number")
            target_member = room.members.get(target_id)
            if target_member is None:
                raise UnknownUser(f"unknown target {target_id} in room {room_id}")
            # The target is whoever has that id; the name is the one the server knows.
            clean_target = {
                "username": target_member.name,
                "id": target_member.id,
                "public": target.get("public", 0),
            }
        ts = self.now_ms()
        payload = _envelope("message", ts, content, room.id, **{"from": member.as_user()},
                            format=format)
        if clean_target is not None:
            payload["target"] = clean_target
        try:
            # Strict JSON: no NaN/Infinity, no lone surrogate ever reaches chatroom_history.
            stored = dumps(dict(payload, timestamp=ts // 1000))
        except JSONError as e:
            raise InvalidInput(f"message cannot be stored: {e}") from None
        if len(stored) > MAX_STORED_MESSAGE_LENGTH:
            raise ContentTooLong(
                f"message too long: {len(stored)} > {MAX_STORED_MESSAGE_LENGTH} characters stored"
            )
        if clean_target is None or clean_target["public"]:
            self._emit_room(room, "message", payload)
        else:
            assert target_member is not None
            conns = sorted(member.connections | target_member.connections)
            self._emit_to(conns, "message", payload)
        if self._history is not None:
            self._history.add(HistoryRow(room.id, stored, ts // 1000))
        return payload

    def typing(self, connection: str, room_id: int, started: bool) -> None:
        """
        ``userStartedTyping``/``userStoppedTyping``: to every connection of the other members.

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom (not a room member)
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if member.id not in room.members:
            raise NotInRoom(f"user {member.id} is not a member of room {room_id}")
        kind = "user_started_typing" if started else "user_stopped_typing"
        event = "userStartedTyping" if started else "userStoppedTyping"
        conns: List[str] = []
        for other in room.members.values():
            if other.id != member.id:
                conns.extend(other.connections)
        if not conns:
            return
        payload = _envelope(kind, self.now_ms(), kind, room.id,
                            subscriber=dumps({"id": member.id, "username": member.name}))
        self._emit_to(sorted(conns), event, payload)

    def part_room(self, connection: str, room_id: int) -> None:
        """
        The connection leaves one room but stays connected (IRC ``PART``; browsers never do it).

        When it was the member's last connection in the room, the member leaves the room the way
        the disconnect grace removes them: ``userlist`` and ``notice`` ``disconnected`` (string
        ``roomId``) to the room.

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if connection not in room.connections:
            raise NotInRoom(f"not in room {room_id}")
        room.connections.discard(connection)
        self._publish({"type": "leave", "room": room.id, "connections": [connection]})
        if not member.connections.isdisjoint(room.connections):
            return
        room.remove_member(member.id)
        key = str(room.id)
        self._userlist_changed(room, key)
        self._emit_room(room, "notice",
                        _envelope("notice", self.now_ms(), "disconnected", key,
                                  data={"username": member.name}),
                        crowd=self._in_crowd(room))

    def connection_lost(self, connection: str) -> None:
        """
        A connection is gone. When it was the member's last, the disconnect grace starts.
        """
        user_id = self._connections.pop(connection, None)
        for room in self._rooms.values():
            room.connections.discard(connection)
        if user_id is None:
            return
        member = self._members.get(user_id)
        if member is None:
            return
        member.connections.discard(connection)
        if not member.connections:
            self._cancel_grace(user_id)
            self._grace_calls[user_id] = self._reactor.callLater(
                self._grace, self._grace_expired, user_id
            )

    # -- lifecycle --------------------------------------------------------------------------

    async def stop(self, timeout: float = 30.0) -> None:
        """
        Cancel the timers and wait for queued history and session moves to be written.

        If the database is still failing after C{timeout} seconds, the unwritten history rows
        are logged in full (L{HistoryWriter.cancel}) and the stop goes on.
        """
        for call in self._grace_calls.values():
            if call.active():
                call.cancel()
        self._grace_calls.clear()
        for room in self._rooms.values():
            if room.userlist_call is not None and room.userlist_call.active():
                room.userlist_call.cancel()
            room.userlist_call = None
        if self._history is not None:
            history = self._history
            giving_up = self._reactor.callLater(timeout, history.cancel)
            await history.drain()
            if giving_up.active():
                giving_up.cancel()
        for d in list(self._pending):
            await d
        # A session move still failing now is covered by the service, which moves every
        # chatroom_users row to chatroom_sessions when it stops.
        for retry in list(self._retries):
            if retry.active():
                retry.cancel()
        self._retries.clear()

    def flush_history(self) -> "Deferred[None]":
        """Fire when every delivered message so far is in the database (tests, shutdown)."""
        if self._history is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self._history.drain()

    # -- internals --------------------------------------------------------------------------

    def _require_room(self, room_id: int) -> Room:
        room = self._rooms.get(room_id) if isinstance(room_id, int) else None
        if room is None:
            raise UnknownRoom(f"unknown room {room_id!r}")
        return room

    def _require_member(self, connection: str) -> Member:
        member = self.member_for(connection)
        if member is None:
            raise NotLoggedIn("not logged in")
        return member

    def _cancel_grace(self, user_id: int) -> None:
        call = self._grace_calls.pop(user_id, None)
        if call is not None and call.active():
            call.cancel()

    def _grace_expired(self, user_id: int) -> None:
        self._grace_calls.pop(user_id, None)
        member = self._members.get(user_id)
        if member is None or member.connections:
            return
        room_ids: List[int] = []
        ts = self.now_ms()
        for room in self._rooms.values():
            if user_id in room.members or user_id in room.joined:
                room.remove_member(user_id)
                room_ids.append(room.id)
                # ILIAS 10 sends the room id as a string here (spec §10.2).
                key = str(room.id)
                self._userlist_changed(room, key)
                self._emit_room(room, "notice",
                                _envelope("notice", ts, "disconnected", key,
                                          data={"username": member.name}),
                                crowd=self._in_crowd(room))
        del self._members[user_id]
        self._log.debug("Member {user_id} of {instance} left after the grace",
                        user_id=user_id, instance=self.instance)
        if room_ids and self._on_member_gone is not None:
            self._run_hook(self._on_member_gone, user_id, room_ids)

    def _forget(self, member: Member) -> None:
        # Out of every room too: a member PHP connects again starts without admissions.
        for room in self._rooms.values():
            if member.id in room.members or member.id in room.joined:
                was_present = member.id in room.joined
                room.remove_member(member.id)
                if was_present:
                    self._userlist_changed(room, room.id)
        self._cancel_grace(member.id)
        for conn in member.connections:
            self._connections.pop(conn, None)
        member.connections.clear()
        self._members.pop(member.id, None)

    def _run_hook(self, hook: Callable[..., Any], *args: Any, attempt: int = 1) -> None:
        d = maybeDeferred(_call_maybe_coroutine, hook, *args)
        self._pending.add(d)

        def done(result: object) -> None:
            self._pending.discard(d)

        def failed(failure: Any) -> None:
            self._pending.discard(d)
            if attempt >= 5:
                self._log.failure("Giving up on {hook!r}{args!r}", failure, hook=hook, args=args)
                return
            self._log.failure("{hook!r}{args!r} failed; retrying", failure, hook=hook, args=args)
            retry: IDelayedCall

            def again() -> None:
                self._retries.discard(retry)
                self._run_hook(hook, *args, attempt=attempt + 1)

            retry = self._reactor.callLater(2.0 ** attempt, again)
            self._retries.add(retry)

        d.addCallbacks(done, failed)

    def _in_crowd(self, room: Room) -> bool:
        """
        Whether a crowd is arriving or leaving: a big room whose userlist is being coalesced.

        Then one "X entered"/"X left" line per person for every member would be O(n²) frames;
        such notices are published with ``"crowd": true`` and browsers get the coalesced
        userlist instead (see the module docstring). Other adapters (IRC) still see each one.
        """
        return len(room.connections) > self.CROWD_SIZE and room.userlist_call is not None

    def _userlist_window(self, room: Room) -> float:
        # A userlist is O(n) bytes sent to n sockets: the window grows with n² so that a big
        # room's userlist traffic stays bounded (50 ms for a class, 5 s for 1,000 members).
        n = len(room.connections)
        return min(self.USERLIST_MAX_WINDOW, self.USERLIST_MIN_WINDOW + 5e-6 * n * n)

    def _userlist_changed(self, room: Room, key: RoomKey) -> bool:
        """
        Send the room-wide ``userlist`` now, or fold it into one trailing send.

        Returns:
            True when it was sent now (the caller need not send a private copy).
        """
        now = self._reactor.seconds()
        if room.userlist_call is None and now >= room.userlist_next_at:
            room.userlist_next_at = now + self._userlist_window(room)
            self._emit_room(room, "userlist", self._userlist_payload(room, key, self.now_ms()))
            return True
        room.userlist_key = key
        if room.userlist_call is None:
            room.userlist_call = self._reactor.callLater(
                max(0.0, room.userlist_next_at - now), self._flush_userlist, room
            )
        return False

    def _flush_userlist(self, room: Room) -> None:
        room.userlist_call = None
        room.userlist_next_at = self._reactor.seconds() + self._userlist_window(room)
        self._emit_room(room, "userlist",
                        self._userlist_payload(room, room.userlist_key, self.now_ms()))

    def _userlist_payload(self, room: Room, key: RoomKey, ts: int) -> Dict[str, Any]:
        return _envelope("userlist", ts, "userlist", key, users=room.userlist())

    def _emit_room(
        self,
        room: Room,
        event: str,
        payload: Optional[Dict[str, Any]],
        skip: Sequence[str] = (),
        crowd: bool = False,
    ) -> None:
        if not room.connections:
            return
        message = {"type": "emit", "event": event, "payload": payload, "room": room.id,
                   "skip": list(skip)}
        if crowd:
            message["crowd"] = True
        self._publish(message)

    def _emit_to(
        self, connections: Iterable[str], event: str, payload: Optional[Dict[str, Any]]
    ) -> None:
        conns = list(connections)
        if conns:
            self._publish({"type": "emit", "event": event, "payload": payload,
                           "connections": conns})

    def _publish(self, message: Dict[str, Any]) -> None:
        self._bus.publish(self.topic, message)


def _envelope(
    type_: str, timestamp: int, content: str, room_key: RoomKey, **extra: Any
) -> Dict[str, Any]:
    """The ILIAS 9+ message envelope, keys in the order ILIAS writes them (spec §3.2, §10.2)."""
    payload: Dict[str, Any] = {
        "type": type_,
        "timestamp": timestamp,
        "content": content,
        "roomId": room_key,
    }
    payload.update(extra)
    return payload


def _call_maybe_coroutine(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if hasattr(result, "__await__") and not isinstance(result, Deferred):
        return Deferred.fromCoroutine(result)
    return result


def chat_rooms_of(client: Any) -> Optional["ChatRooms"]:
    """
    The L{ChatRooms} of a client (its ``ClientContext``), for components started after the client
    components (the IRC bridge); None if no component of that client runs a room domain.

    It looks at what the components hold, not at their classes, so the IRC bridge finds the rooms
    of an ILIAS client and of a standalone one alike without importing either adapter.
    """
    for component in getattr(client, "components", ()):
        chat = getattr(component, "chat", None)
        if isinstance(chat, ChatRooms):
            return chat
    return None
