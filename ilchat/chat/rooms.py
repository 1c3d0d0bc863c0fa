# -*- test-case-name: tests.chat.test_rooms -*-
"""
The repository-chat domain: rooms, their members, messages. No transport, no wire format.

One L{ChatRooms} exists per client instance (one ILIAS ``client.cfg``, or the standalone chat).
Nothing is shared between instances: members, rooms and disconnect timers are all per instance.
The state is in L{ilchat.chat.model}, the connections and the disconnect grace in
L{ilchat.chat.presence}, the refusals in L{ilchat.chat.errors}, and what is published on the bus
in L{ilchat.chat.events} (its docstring is the event schema).

Two kinds of members, one API
=============================

A I{member} (ILIAS calls it a subscriber) has an integer id, a display name, and zero or more
I{connections}. A connection is an opaque string chosen by the adapter that owns it and unique
within the instance: the Socket.IO adapters use the socket id (``socket.sid``), the IRC bridge
``"irc:<something unique>"``. Both kinds go through exactly the same calls, in the order a
browser does them::

    chat.connect(user_id)                        # PHP "Connect": registers the member
    chat.add_room_member(room_id, user_id)       # PHP "EnterPrivateRoom": room-level membership
    chat.login(conn, user_id, name, picture)     # the browser "login"; None if never connected
    chat.enter_room(conn, room_id)               # "enterRoom": only into rooms PHP admitted to
    chat.post_message(conn, room_id, content, format, target=None)
    chat.typing(conn, room_id, started=True)
    chat.part_room(conn, room_id)                # IRC PART (browsers have no such event)
    chat.connection_lost(conn)                   # socket/IRC connection gone
    chat.connection_closed(conn)                 # gone on purpose ("Leave"): no grace

Refusals raise a L{ChatError} subclass (L{NotLoggedIn}, L{UnknownRoom}, L{UnknownUser},
L{NotInRoom}, L{InvalidInput}, L{ContentTooLong}); nothing has been published then. Room and
user ids are ints. A server component (the IRC bridge) finds the domain of a client with
C{chat_rooms_of(client_ctx)}. IRC users have no ILIAS account: the IRC bridge picks ids that
ILIAS never uses (negative ids) and calls L{ChatRooms.connect} itself.

PHP-side actions: L{ChatRooms.add_room}, L{ChatRooms.leave_room}, L{ChatRooms.invite},
L{ChatRooms.clear}, L{ChatRooms.kick}, L{ChatRooms.ban}, L{ChatRooms.delete_room} (ILIAS 8). An
ILIAS 8 private room is a room like any other, keyed by L{ilchat.chat.model.room_key}.

Restarts: L{ChatRooms.admissions} (who PHP connected, and into which rooms) is what a stopping
server keeps; L{ChatRooms.restore_admissions} gives it back to the next run, so that pages
reconnecting after the restart get back in without PHP (the adapter re-checks bans first).

Every change that someone must see is one event on the bus topic L{ChatRooms.topic}
(``"room:<instance>"``); each adapter renders it for its own connections (ILIAS envelopes and
userlists in L{ilchat.ilias.rendering}, IRC lines in L{ilchat.irc.bridge}).

Across processes (several ``twistd ilchat`` on one Redis): every process has its own
L{ChatRooms} for the client, and they replicate through their own events. L{ChatRooms.start}
subscribes L{ChatRooms.apply_remote} to the topic and asks the others for their state (a
``sync_request``; each answers with a ``snapshot``); every event another process publishes is
applied to this state without publishing anything in return, so rooms, members and admissions
are the same everywhere and every call above works for a member whatever process PHP or the
member's connection talks to. Connections (``Member.connections``, ``Room.connections``) and
``Room.joined`` stay this process's own; who is present cluster-wide is L{ChatRooms.presence}
(L{ilchat.chat.cluster_presence}). L{ChatRooms.stop} publishes ``instance_stopping``;
L{ChatRooms.instance_gone} is the call for a process that stopped or died.

Messages: published first, then handed to a L{HistoryWriter} (batched background writes, retried
on database errors) as the row C{stored_format(event)} makes (``chatroom_history.message``). A
message whose row would be longer than C{max_stored_length} characters raises
L{ContentTooLong} before anything is published.
"""

import itertools
import secrets
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.bus import IBus
from ilchat.chat import events
from ilchat.chat.errors import (
    ChatError,
    ContentTooLong,
    InvalidInput,
    NotInRoom,
    NotLoggedIn,
    UnknownRoom,
    UnknownUser,
)
from ilchat.chat.cluster_presence import ClusterPresence, previous_run
from ilchat.chat.history import HistoryRow, HistoryWriter, WriteBatch
from ilchat.chat.model import Member, Room
from ilchat.chat.presence import DISCONNECT_GRACE, Presence
from ilchat.jsonutil import JSONError, dumps

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

#: ``chatroom_history.message`` is VARCHAR(4000): the stored row must fit, in characters.
MAX_STORED_MESSAGE_LENGTH = 4000


class ChatRooms(Presence):
    """
    The rooms and members of one instance (see the module docstring for the contract).

    Args:
        instance: the client name; the bus topic is ``"room:<instance>"``.
        bus: where every event is published.
        reactor: C{seconds()} and C{callLater()}; a C{task.Clock} in tests.
        write_history: writes a batch of L{HistoryRow} (e.g. C{store.add_history_rows}).
        history: a L{HistoryWriter} set up by the caller (journal, refusals), instead of
            C{write_history}.
        on_member_gone: called as C{on_member_gone(user_id, room_ids)} after the disconnect
            grace, to move ``chatroom_users`` rows to ``chatroom_sessions``; may return a Deferred
            or coroutine. Failures are logged and retried a few times.
        grace: the disconnect grace in seconds.
        stored_format: C{stored_format(message_event) -> str}, the ``chatroom_history.message``
            of a message (the ILIAS adapter's); by default the event's JSON.
        max_stored_length: the longest stored row, in characters.
        handles_departure: C{handles_departure(gone, witnesses) -> bool}: whether this process
            is the one that publishes the ``left`` events of a departed instance and moves its
            users' rows (L{instance_gone}); C{witnesses} are the instances this process knew
            alive when it learnt of the departure. By default the lowest name among the
            witnesses still alive; a cluster lock can take its place.
    """

    _log = Logger()

    def __init__(
        self,
        instance: str,
        bus: IBus,
        reactor: IReactorTime,
        write_history: Optional[WriteBatch] = None,
        on_member_gone: Optional[Callable[[int, List[int]], Any]] = None,
        grace: float = DISCONNECT_GRACE,
        stored_format: Optional[Callable[[Dict[str, Any]], str]] = None,
        max_stored_length: int = MAX_STORED_MESSAGE_LENGTH,
        history: Optional[HistoryWriter] = None,
        handles_departure: Optional[Callable[[str, Set[str]], bool]] = None,
    ) -> None:
        self.instance = instance
        self.topic = f"room:{instance}"
        self._bus = bus
        # What another process sends is checked before any subscriber of the topic sees it.
        bus.check_events(self.topic, events.check_event)
        self._reactor = reactor
        self._init_presence(grace, on_member_gone)
        if history is None and write_history is not None:
            history = HistoryWriter(reactor, write_history)
        self._history = history
        self._stored_format = stored_format or dumps
        self.max_stored_length = max_stored_length
        self._rooms: Dict[int, Room] = {}
        self.origin: str = getattr(bus, "instance", "local")
        self.presence = ClusterPresence(self.origin)
        # The instances known to be alive (this one, and every origin heard from since), and the
        # departures waiting for their grace: name -> timer.
        self._live: Set[str] = {self.origin}
        self._departures: Dict[str, IDelayedCall] = {}
        self._witnesses: Dict[str, Set[str]] = {}
        # names with a pending departure whose new run started after that departure began
        self._restarted: Set[str] = set()
        # name -> the (room, member) rows it said it moves, for the end of its departure
        self._departure_moves: Dict[str, Set[Tuple[int, int]]] = {}
        # name -> what it (or its previous run) holds, as another process's snapshot said, kept
        # until this process hears from it itself (one that started after that instance died
        # learns its holdings only so): (room, member id) -> member
        self._others_held: Dict[str, Dict[Tuple[int, int], Dict[str, Any]]] = {}
        self._handles_departure = handles_departure or self._lowest_witness
        self._unsubscribe: Optional[Callable[[], None]] = None
        # Message ids unique across the processes of a site and their restarts: the bus
        # instance, a token of this run and a counter.
        self._message_ids = itertools.count(1)
        self._id_prefix = f"{self.origin}-{secrets.token_hex(4)}-"
        #: Extra "is this name in use?" checks for name-only logins (the standalone chat). The IRC
        #: bridge adds one for its nicks, so that a name is unique among web and IRC users.
        self.name_checks: List[Callable[[str], bool]] = []

    # -- lookups ----------------------------------------------------------------------------

    def get_room(self, room_id: int) -> Optional[Room]:
        """The room with that id, or None."""
        return self._rooms.get(room_id)

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

    def rooms(self) -> List[Room]:
        """Every room of the instance."""
        return list(self._rooms.values())

    def present(self, room_id: int) -> List[Dict[str, Any]]:
        """The members present in a room on any process (``{"id", "name", "picture"}``)."""
        return self.presence.present(room_id)

    def live_instances(self) -> Set[str]:
        """The instances this process knows to be alive, itself included."""
        return set(self._live)

    @property
    def history(self) -> Optional[HistoryWriter]:
        """The background history writer (None without C{write_history})."""
        return self._history

    # -- PHP-side actions -------------------------------------------------------------------

    def add_room(self, room_id: int, title: str = "Main", owner: Optional[str] = None) -> Room:
        """Create a room; an existing room keeps its title and owner (as the Node server)."""
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, title, owner)
            self._publish(events.room_created(self.now_ms(), room))
        return room

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
        self._publish(events.admitted(self.now_ms(), room, member))
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
        room.joined.discard(user_id)
        room.connections.difference_update(member.connections)
        self._publish(events.room_left(self.now_ms(), room, member))

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
        self._publish(events.invited(self.now_ms(), room, host, invitee))

    def delete_room(self, room_id: int) -> Room:
        """
        PHP ``DeletePrivateRoom`` (ILIAS 8): the room is gone, with its members' admissions and
        presence; one ``room_deleted`` event names the members whose connections were in it.

        Raises:
            UnknownRoom
        """
        room = self._require_room(room_id)
        members = sorted(set(room.members) | set(room.joined)
                         | {info["id"] for info in self.presence.present(room.id)})
        del self._rooms[room.id]
        self._publish(events.room_deleted(self.now_ms(), room, members))
        for user_id in members:
            self._release_dropped(user_id)
        return room

    def clear(self, room_id: int) -> None:
        """
        PHP ``ClearMessages``: tell the room; PHP deletes the history rows itself.

        Raises:
            UnknownRoom
        """
        room = self._require_room(room_id)
        self._publish(events.cleared(self.now_ms(), room))

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
        if member is None or not self._in_room(room, member):
            return False
        room.remove_member(user_id)
        room.connections.difference_update(member.connections)
        self._publish(events.kicked(self.now_ms(), room, member))
        self._release_dropped(user_id)
        return True

    def ban(self, room_id: int, user_id: int) -> bool:
        """
        PHP ``Ban``: like a kick, then the member is forgotten (out of every room).

        The banned member's connections are logged out: they can no longer act until PHP
        connects the user again (which PHP refuses for banned users).

        Returns:
            whether the user was known.
        """
        member = self._members.get(user_id)
        if member is None:
            return False
        room = self._rooms.get(room_id)
        if room is not None and self._in_room(room, member):
            room.remove_member(user_id)
            room.connections.difference_update(member.connections)
        else:
            room = None
        ts = self.now_ms()
        present = self._forget(member, room)
        self._publish(events.banned(ts, room, member, present))
        return True

    # -- connection-side actions ------------------------------------------------------------

    def enter_room(self, connection: str, room_id: int) -> Room:
        """
        The connection enters a room (the browser's ``enterRoom``): an ``entered`` event.

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
        first = member.id not in room.joined
        room.connections.add(connection)
        room.joined.add(member.id)
        self._publish(events.entered(self.now_ms(), room, connection, member, first))
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
        Publish a message to a room, or privately to sender and target, then store it.

        Args:
            target: ``{"id": int, "username": str, "public": truthy}``; the target is the room
                member with that id (its name is the member's name, whatever the client
                wrote); a non-public target means only the sender's and the target's
                connections get it.

        Returns:
            the ``message`` event.

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
            clean_target = {"id": target_member.id, "name": target_member.name,
                            "public": target.get("public", 0)}
        ts = self.now_ms()
        # The message's id is its history row's (``hist_id``, from the writer's reserve), so
        # that IRC's msgid and CHATHISTORY name the same message; "<origin>-<n>" without one.
        hist_id = self._history.take_id() if self._history is not None else None
        message_id = str(hist_id) if hist_id is not None else self._id_prefix + str(next(self._message_ids))
        event = events.message(ts, message_id, room, connection, member, content, format, clean_target)
        try:
            # Strict JSON: no NaN/Infinity, no lone surrogate ever reaches chatroom_history.
            stored = self._stored_format(event)
        except JSONError as e:
            raise InvalidInput(f"message cannot be stored: {e}") from None
        if len(stored) > self.max_stored_length:
            # What the row holds besides the content (its escaped text, without the quotes).
            overhead = len(stored) - (len(dumps(content)) - 2)
            raise ContentTooLong(
                f"message too long: {len(stored)} > {self.max_stored_length} characters stored",
                fits=max(0, self.max_stored_length - overhead),
            )
        self._publish(event)
        if self._history is not None:
            self._history.add(HistoryRow(room.id, stored, ts // 1000, hist_id=hist_id))
        return event

    def typing(self, connection: str, room_id: int, started: bool) -> None:
        """
        A ``typing`` event for the other members of the room.

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom (not a room member)
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if member.id not in room.members:
            raise NotInRoom(f"user {member.id} is not a member of room {room_id}")
        recipients = [other for other in room.members if other != member.id]
        if recipients:
            self._publish(events.typing(self.now_ms(), room, member, started, recipients))

    def part_room(self, connection: str, room_id: int) -> None:
        """
        The connection leaves one room but stays connected (IRC ``PART``; browsers never do it).

        When it was the member's last connection in the room, the member leaves the room the way
        the disconnect grace removes them (``gone`` in the ``parted`` event).

        Raises:
            NotLoggedIn, UnknownRoom, NotInRoom
        """
        member = self._require_member(connection)
        room = self._require_room(room_id)
        if connection not in room.connections:
            raise NotInRoom(f"not in room {room_id}")
        room.connections.discard(connection)
        gone = member.connections.isdisjoint(room.connections)
        if gone:
            room.joined.discard(member.id)
        self._publish(events.parted(self.now_ms(), room, connection, member, gone))
        if gone and not self.presence.is_present(room.id, member.id):
            room.remove_member(member.id)  # nobody holds them: out of the room, as after a grace

    # -- restarts ---------------------------------------------------------------------------

    def admissions(self) -> Dict[int, List[int]]:
        """
        Every registered member with an ILIAS id (above 0; IRC users have their own) and the
        rooms PHP admitted them to, for the next run of the server (L{restore_admissions}).
        """
        admitted: Dict[int, List[int]] = {user_id: [] for user_id in self._members if user_id > 0}
        for room in self._rooms.values():
            for user_id in room.members:
                if user_id in admitted:
                    admitted[user_id].append(room.id)
        return admitted

    def restore_admissions(self, admissions: Dict[int, List[int]], grace: float) -> int:
        """
        Register members and their room admissions of an earlier run, as PHP's ``Connect`` and
        ``EnterPrivateRoom`` did then, so that a page reconnecting after a restart logs in and
        enters its room again without a reload. Nobody is present: a member enters as any
        member does. One who neither logs in nor is connected by PHP within C{grace} seconds is
        forgotten without a word (they were not in any room of this run). Unknown rooms are
        skipped; members PHP connected already are left as they are.

        Returns:
            the number of members restored.
        """
        restored = 0
        for user_id, room_ids in admissions.items():
            if user_id <= 0 or user_id in self._members:
                continue
            member = self.connect(user_id)
            for room_id in room_ids:
                room = self._rooms.get(room_id)
                if room is not None:
                    room.members[user_id] = member
            self._grace_calls[user_id] = self._reactor.callLater(
                grace, self._restore_expired, user_id
            )
            restored += 1
        return restored

    def _restore_expired(self, user_id: int) -> None:
        self._grace_calls.pop(user_id, None)
        member = self._members.get(user_id)
        if member is None or member.connections:
            return
        for room in self._rooms.values():
            if user_id in room.joined:
                return  # entered meanwhile and lost its connection: the usual grace runs
        self._release_own(member)
        if user_id in self._touched or self.presence.held_elsewhere(user_id, self.origin):
            return  # online on another process: the member stays known here while they are there
        for room in self._rooms.values():
            room.members.pop(user_id, None)
        del self._members[user_id]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """
        Apply the other processes' events from now on (L{apply_remote}), then ask them for
        their state: a fresh ``sync_request`` once the subscription is in place, so that no
        ``snapshot`` answer is published before this process listens.
        """
        self._unsubscribe = self._bus.subscribe(self.topic, self.apply_remote)
        await self._bus.subscribed()
        self.request_sync(fresh=True)

    def request_sync(self, fresh: bool = False) -> None:
        """
        Ask every other process for a ``snapshot``: at start (C{fresh}), and when the bus is
        connected to the other processes again after an outage (then this process's own state
        goes with the request, and replaces what the others recorded for it).
        """
        self._bus.publish(self.topic, events.sync_request(self.now_ms(), fresh, self._known()))

    async def stop(self, timeout: float = 30.0) -> None:
        """
        Tell the other processes (``instance_stopping``), cancel the timers and wait for queued
        history and session moves to be written.

        If the database is still failing after C{timeout} seconds, the unwritten history rows
        are logged in full (L{HistoryWriter.cancel}) and the stop goes on.
        """
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            # Not applied here: what this process holds stays its own until it is gone.
            self._bus.publish(self.topic, events.instance_stopping(
                self.now_ms(), self._known(), sorted(self._live)))
        for call in self._departures.values():
            if call.active():
                call.cancel()
        self._departures.clear()
        self._witnesses.clear()
        self._departure_moves.clear()
        self._others_held.clear()
        self._restarted.clear()
        self._stop_presence()
        if self._history is not None:
            history = self._history
            giving_up = self._reactor.callLater(timeout, history.cancel)
            await history.drain()
            if giving_up.active():
                giving_up.cancel()
        await self._wait_hooks()

    def flush_history(self) -> "Deferred[None]":
        """Fire when every delivered message so far is in the database (tests, shutdown)."""
        if self._history is None:
            d: Deferred[None] = Deferred()
            d.callback(None)
            return d
        return self._history.drain()

    # -- other processes --------------------------------------------------------------------

    def instance_gone(self, name: str, known: Optional[Iterable[str]] = None) -> None:
        """
        Another instance stopped (its ``instance_stopping``) or died (its heartbeat is missing:
        ``ilchat.cluster`` calls this on every process). After the disconnect grace, what it
        held ends: the one process that L{handles_departure <__init__>} publishes a ``left``
        (with ``instance``) for each of its holdings and moves the ``chatroom_users`` rows of the
        members nobody holds any more (C{on_member_gone}); every process drops the admissions of
        those members in those rooms. A user who reconnects to another process within the grace
        never disappears. Calling it again for a pending departure does nothing, unless the
        instance came back meanwhile (a new run under its name): then what that run holds ends
        too, a grace after this call.

        C{known}: the instances the departed one knew to be alive (its ``instance_stopping``
        says): the witnesses, the same on every process, so that one that started after the
        stop (and never heard of it) is not left to decide. Otherwise what this process knows.
        """
        if name == self.origin or (name in self._departures and name not in self._restarted):
            return  # the same departure told twice (its stop, then its heartbeat's expiry)
        self._restarted.discard(name)
        pending = self._departures.pop(name, None)
        if pending is not None and pending.active():
            pending.cancel()
        self._live.discard(name)
        self.claims.depart(name)
        # Rows it said it moves, perhaps not moved: it may have died within its wait (a clean
        # stop moves the waiting ones itself).
        moving = self._moving.pop(name, {})
        if known is None:
            self._departure_moves.setdefault(name, set()).update(moving)
        witnesses = set(self._live) if known is None else set(known) - {name}
        for pending in self._witnesses.values():
            # Gone before deciding: under its name a new run may start, which never saw these.
            pending.discard(name)
        self._witnesses[name] = witnesses
        self.presence.depart(name)
        self._departures[name] = self._reactor.callLater(
            self._grace, self._departure_due, name, witnesses
        )

    def apply_remote(self, envelope: Mapping[str, Any]) -> None:
        """
        Bus subscriber of the topic: apply an event another process published to this state,
        publishing nothing in return (except the ``snapshot`` that answers a ``sync_request``).
        This process's own events were applied when it published them.
        """
        origin = envelope["origin"]
        if origin == self.origin:
            return
        if self._others_held:
            self._others_held.pop(origin, None)  # heard from itself: what others said is stale
        event = envelope["event"]
        kind = event.get("type")
        if kind == "instance_stopping":
            if "held" in event:
                # Its last word says what it held: one started a moment ago learns it only now.
                self._remote_snapshot(event)
                self._note_claims(origin, kind, event)
                self.presence.replace(origin, event["held"], event["members"])
            self.instance_gone(origin, event.get("live"))
            return
        if kind == "sync_request" and event.get("fresh") and origin not in self._departures \
                and self.presence.held_by(origin):
            # Started again under the same name (after a SIGKILL nobody noticed yet): what its
            # previous run held ends after the grace, like any departure.
            self.instance_gone(origin)
        elif kind == "sync_request" and event.get("fresh") and origin in self._departures:
            self._restarted.add(origin)  # a new run, started within its previous run's grace
        self._live.add(origin)
        changes = self.presence.apply_event(origin, event)
        handler = getattr(self, "_remote_" + str(kind), None)
        if handler is not None:
            handler(event)
        self._note_claims(origin, kind, event)
        if kind in ("parted", "left"):
            for room_id, info, present in changes:
                self._nobody_holds(room_id, info["id"])
        if changes and self._unfinished:
            self._finish(changes, kind == "left" and not event.get("last", True))
        if kind in ("parted", "left"):
            for room_id, info, present in changes:
                self._release(info["id"])
        if kind == "left" and event.get("last"):
            self._note_moving(origin, event["room"], event["member"]["id"])
        if kind == "sync_request":
            self._bus.publish(self.topic, events.snapshot(self.now_ms(), self._known()))

    def _remote_room_created(self, event: Dict[str, Any]) -> None:
        if event["room"] not in self._rooms:
            self._rooms[event["room"]] = Room(event["room"], event["title"], event["owner"])

    def _remote_room_deleted(self, event: Dict[str, Any]) -> None:
        self._rooms.pop(event["room"], None)
        for user_id in event["members"]:
            self._release_dropped(user_id)

    def _remote_connected(self, event: Dict[str, Any]) -> None:
        self._known_member(event["member"])

    def _remote_admitted(self, event: Dict[str, Any]) -> None:
        # The room too: its room_created may come later when another process created it.
        self._remote_room_created(event)
        member = self._known_member(event["member"])
        self._rooms[event["room"]].members[member.id] = member

    def _remote_entered(self, event: Dict[str, Any]) -> None:
        # No touch: presence says whether they are still online there when the grace ends,
        # and an ``entered`` published before the grace began may arrive during it.
        member = self._known_member(event["member"], named=True, touch=False)
        room = self._rooms.get(event["room"])
        if room is None:
            room = self._rooms[event["room"]] = Room(event["room"], event["title"])
        room.members[member.id] = member  # entering needs an admission: it was admitted

    def _remote_renamed(self, event: Dict[str, Any]) -> None:
        member = self._members.get(event["member"]["id"])
        if member is not None:
            member.name = event["member"]["name"]
            member.profile_picture_visible = bool(event["member"]["picture"])

    def _remote_invited(self, event: Dict[str, Any]) -> None:
        room = self._rooms.get(event["room"])
        if room is not None:
            room.members[event["invitee"]["id"]] = self._known_member(event["invitee"])

    def _remote_room_left(self, event: Dict[str, Any]) -> None:
        room = self._rooms.get(event["room"])
        member = self._members.get(event["member"]["id"])
        if room is not None:
            room.joined.discard(event["member"]["id"])
            if member is not None:
                room.connections.difference_update(member.connections)

    def _remote_kicked(self, event: Dict[str, Any]) -> None:
        room = self._rooms.get(event["room"])
        member = self._members.get(event["member"]["id"])
        if room is not None:
            room.remove_member(event["member"]["id"])
            if member is not None:
                room.connections.difference_update(member.connections)
        self._release_dropped(event["member"]["id"])

    def _release_dropped(self, user_id: int) -> None:
        """
        A kick or a deleted room took a member's admission. Not registered here by PHP's
        Connect and with nothing left here (L{_kept_here}), this instance has no reason of its
        own to keep them (an invitee who never came has no grace anywhere: their invitation
        lasts as long as its room): it lets its claim go, and forgets them once nobody else
        claims them. No ``left`` follows either, so nothing else would.
        """
        member = self._members.get(user_id)
        if member is None or member.registered or self._kept_here(member):
            return
        self._release_own(member)
        self._release(user_id)

    def _remote_banned(self, event: Dict[str, Any]) -> None:
        member = self._members.get(event["member"]["id"])
        if member is not None:
            self._forget(member)  # logged out here too: its connections here can no longer act

    def _remote_snapshot(self, event: Dict[str, Any]) -> None:
        for info in event.get("rooms", ()):
            self._remote_room_created({"room": info["id"], "title": info["title"],
                                       "owner": info["owner"]})
        infos = {}
        for info in event.get("members", ()):
            member = self._known_member(info, named=True, touch=False)
            infos[member.id] = events.member_info(member)
            for room_id in info.get("rooms", ()):
                room = self._rooms.get(room_id)
                if room is not None:
                    room.members[member.id] = member
        for name, pairs in event.get("others", {}).items():
            # What the others hold as the sender knows it: if this process decides the
            # departure of one it never heard from (it started after that one died), this is
            # all it knows of its holdings.
            if name != self.origin:
                self._others_held[name] = {
                    (room_id, user_id): infos.get(user_id) or {"id": user_id, "name": None,
                                                               "picture": False}
                    for room_id, user_id in pairs}

    _remote_sync_request = _remote_snapshot

    def _note_claims(self, origin: str, kind: Any, event: Mapping[str, Any]) -> None:
        """Record the claims an event of C{origin} (this instance's own too) starts or ends."""
        if kind in ("connected", "admitted", "entered"):
            self.claims.add(event["member"]["id"], origin)
        elif kind == "invited":
            self.claims.add(event["invitee"]["id"], origin)
        elif kind == "released":
            self.claims.discard(event["member"]["id"], origin)
            if origin != self.origin:
                self._release(event["member"]["id"])
        elif kind in ("snapshot", "sync_request", "instance_stopping") and origin != self.origin:
            # What the sender claims now, first hand (a version without claims: none).
            claimed = [info["id"] for info in event.get("members", ()) if info.get("claimed")]
            dropped = self.claims.replace(origin, claimed)
            # Those it only kept for others are kept here only while they are claimed.
            for user_id in dropped + [info["id"] for info in event.get("members", ())]:
                self._release(user_id)

    def _release(self, user_id: int, admitted: bool = True) -> None:
        """
        Forget a member no instance claims (L{ilchat.chat.claims}) once nobody holds them
        anywhere and they have no connection and no grace here, and (C{admitted}) no admission
        is left here either (the grace of their last holder ended every admission). Otherwise
        remote users would stay in memory for ever after they left, on every process but their
        own.
        """
        member = self._members.get(user_id)
        if member is None or self.claims.claimed(user_id) or self._kept_here(member, admitted):
            return
        for room in self._rooms.values():
            room.remove_member(user_id)
        del self._members[user_id]
        self._touched.discard(user_id)

    def _kept_here(self, member: Member, admitted: bool = True) -> bool:
        """
        Whether something here keeps the member whatever the claims: a connection, a grace,
        presence anywhere, or (C{admitted}) an admission to one of the rooms.
        """
        return bool(member.connections or member.id in self._grace_calls
                    or self.presence.rooms_of(member.id)
                    or (admitted and any(member.id in room.members for room in self._rooms.values())))

    def _known_member(self, info: Mapping[str, Any], named: bool = False,
                      touch: bool = True) -> Member:
        """
        The member of an event, registered here if new; C{named}: take its name too; C{touch}:
        another process acted for them now (they are online there, whatever the grace here).
        """
        member = self._members.get(info["id"])
        if member is None:
            member = self._members[info["id"]] = Member(info["id"])
        if (named or member.name is None) and info.get("name") is not None:
            member.name = info["name"]
            member.profile_picture_visible = bool(info.get("picture"))
        if touch and member.id in self._grace_calls:
            self._touched.add(member.id)
        return member

    def _nobody_holds(self, room_id: int, user_id: int) -> None:
        """No instance holds the member in the room any more: out of it, as after a grace."""
        room = self._rooms.get(room_id)
        if room is None or user_id in room.joined:
            return
        room.remove_member(user_id)

    def _known(self) -> Dict[str, Any]:
        """What this process knows and holds, for a ``snapshot`` or ``sync_request``."""
        admitted = {user_id for room in self._rooms.values() for user_id in room.members}
        # Not a member in their grace without a connection or admission here (kicked, say):
        # only a new Connect brings them back, and this process forgets them without a word.
        members = [member for member in self._members.values()
                   if member.connections or member.id not in self._grace_calls
                   or member.id in admitted or self.presence.rooms_of(member.id)]
        return events.state(self.rooms(), members,
                            self.presence.held_by(self.origin),
                            self.claims.claimed_by(self.origin),
                            self.presence.held_by_others(self.origin))

    def _departure_due(self, name: str, witnesses: Set[str]) -> None:
        self._departures.pop(name, None)
        self._witnesses.pop(name, None)
        self._restarted.discard(name)
        key = previous_run(name)
        publish = self._handles_departure(name, witnesses)
        ts = self.now_ms()
        ended: Dict[int, List[int]] = {}
        moves: Dict[int, List[int]] = {}
        for room_id, user_id in sorted(self._departure_moves.pop(name, ())):
            if publish and not self.presence.is_present(room_id, user_id):
                moves.setdefault(user_id, []).append(room_id)  # moving it twice moves it once
        learnt = self._others_held.pop(name, {})
        if publish and name not in self._live:
            # Held by its previous run, as others knew, though never heard of here.
            held_here = set(self.presence.held_by(key))
            for (room_id, user_id), info in sorted(learnt.items()):
                if (room_id, user_id) in held_here:
                    continue
                present = self.presence.is_present(room_id, user_id)
                self._publish(events.departed(ts, room_id, info, name, not present, whole=True))
                if not present:
                    self._nobody_holds(room_id, user_id)
                    ended.setdefault(user_id, []).append(room_id)
                    moves.setdefault(user_id, []).append(room_id)
        for room_id, user_id in self.presence.held_by(key):
            info = self.presence.member(user_id)
            if publish:
                last = not self.presence.holders(room_id, user_id) - {key}
                self._publish(events.departed(ts, room_id, info, name, last,
                                              whole=name not in self._live))
            else:
                self.presence.end_previous(room_id, user_id, name)  # the decider's ``left`` follows
            if not self.presence.is_present(room_id, user_id):
                self._nobody_holds(room_id, user_id)
                ended.setdefault(user_id, []).append(room_id)
                if publish or (room_id, user_id) in self._unfinished:
                    # Here, not by the decider's ``left``: this process's own was not last.
                    self._unfinished.discard((room_id, user_id))
                    moves.setdefault(user_id, []).append(room_id)
            elif publish:
                self._unfinished.add((room_id, user_id))
        ended_claims = self.claims.end(key)
        if name not in self._live:
            ended_claims += self.claims.end(name)
        for user_id in ended_claims:
            # Connected, admitted or seen by the departed instance only, and not back since.
            self._release(user_id, admitted=False)
        self._log.info(
            "Instance {name} gone from {instance}: {count} members out of their rooms{who}",
            name=name, instance=self.instance, count=len(ended),
            who="" if publish else " (another process publishes it)",
        )
        for user_id, room_ids in sorted(moves.items()):
            self._member_gone(user_id, room_ids)

    def _finish(self, changes: List[Any], move: bool) -> None:
        """
        Presence ended by another instance's event: the pairs this process left unfinished are
        done; C{move} (a ``left`` that was not ``last`` either): their rows are this process's
        to move, as its own ``left`` did not (see L{ilchat.chat.presence}).
        """
        for room_id, info, present in changes:
            pair = (room_id, info["id"])
            if present or pair not in self._unfinished:
                continue
            self._unfinished.discard(pair)
            if move:
                self._member_gone(info["id"], [room_id])

    def _lowest_witness(self, gone: str, witnesses: Set[str]) -> bool:
        """
        The default L{handles_departure <__init__>}: the lowest witness still alive decides, or,
        when none is, the lowest instance alive.
        """
        alive = (witnesses & self._live) or self._live
        return self.origin in alive and min(alive) == self.origin

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

    def _in_room(self, room: Room, member: Member) -> bool:
        return (
            member.id in room.members
            or member.id in room.joined
            or self.presence.is_present(room.id, member.id)
            or not member.connections.isdisjoint(room.connections)
        )

    def _publish(self, event: Dict[str, Any]) -> None:
        # Applied here at once: this process's presence never waits for its own delivery.
        changes = self.presence.apply_event(self.origin, event)
        self._note_claims(self.origin, event["type"], event)
        if changes and self._unfinished:
            self._finish(changes, False)
        self._bus.publish(self.topic, event)


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
