"""
Who is online in the room domain: connections, logins and the 15 s disconnect grace.

L{Presence} is the part of L{ilchat.chat.rooms.ChatRooms} that maps connections to members and
runs the grace timers (per instance, per member). When a member's I{last} connection is gone the
grace starts (L{Presence.connection_closed}, a departure on purpose, skips it);
L{Presence.connect}, L{Presence.login} and ``enter_room`` cancel it. When it fires
the member leaves every room (a ``left`` event per room), is forgotten, and the
C{on_member_gone} hook moves their ``chatroom_users`` rows to ``chatroom_sessions``.

In a cluster the grace is about this instance's connections only: when it expires, this
instance's holdings end (a ``left`` per room it held the member in), but a member whom another
instance still holds (L{ilchat.chat.cluster_presence}), or whom another instance connected or
admitted since the grace began, is online elsewhere: they keep their admissions
and stay known, and only the rooms where nobody holds them any more have their rows moved.
When two instances' graces for one member expire at once, each sees the other still holding
them (both ``left`` events say ``last: false``); each then moves the row when the other's
``left`` arrives and ends the presence (the move is idempotent: the second finds no row).
"""

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.chat import events
from ilchat.chat.claims import MemberClaims
from ilchat.chat.cluster_presence import ClusterPresence
from ilchat.chat.model import Member, Room
from ilchat.logs import debug_wanted

__all__ = ["DISCONNECT_GRACE", "MOVE_CONFIRM_DELAY", "Presence"]

#: Seconds a member without connections stays in their rooms (spec §5.1).
DISCONNECT_GRACE = 15.0

#: Seconds a process waits before it moves the rows of a member it saw leave while another
#: instance claims them, so that what the others published a moment earlier (a tab of theirs
#: entering there) has arrived: the bus takes milliseconds. Otherwise it moves them at once.
MOVE_CONFIRM_DELAY = 2.0

# Seconds the rows another instance said it moves are remembered: past its heartbeat's expiry
# (at most 30 s after a SIGKILL), so that its departure finds the moves it never confirmed.
_MOVING_KEPT = 60.0


class Presence:
    """Members, their connections and grace timers; mixed into L{ChatRooms}."""

    _log = Logger()

    instance: str
    #: This process's bus instance (the ``origin`` of what it publishes).
    origin: str
    #: Who is present where, cluster-wide (this instance's own events applied at publish).
    presence: ClusterPresence
    #: The instances known to be alive, this one included (ChatRooms).
    _live: Set[str]
    _reactor: IReactorTime
    _rooms: Dict[int, Room]

    def _init_presence(
        self, grace: float, on_member_gone: Optional[Callable[[int, List[int]], Any]]
    ) -> None:
        self._grace = grace
        self._on_member_gone = on_member_gone
        self._members: Dict[int, Member] = {}
        self._connections: Dict[str, int] = {}
        self._grace_calls: Dict[int, IDelayedCall] = {}
        self._pending: Set[Deferred[Any]] = set()
        self._retries: Set[IDelayedCall] = set()
        # Row moves waiting for MOVE_CONFIRM_DELAY: timer -> (member id, room ids)
        self._confirming: Dict[IDelayedCall, Tuple[int, List[int]]] = {}
        # The rows other instances said they move (a ``left`` that is ``last``), for a while:
        # origin -> (room, member) -> when. One that dies before its confirmation moves
        # nothing; the process handling its departure moves them then (ChatRooms).
        self._moving: Dict[str, Dict[Tuple[int, int], float]] = {}
        # Members another instance connected or admitted since their grace began here (an
        # ``entered`` elsewhere is presence, which the grace's end reads itself).
        self._touched: Set[int] = set()
        # (room, member) pairs whose ``left`` this process published while another instance
        # still held the member (``last`` false): when a later ``left`` that is not ``last``
        # either ends the member's presence there, this process moves the row (ChatRooms).
        self._unfinished: Set[Tuple[int, int]] = set()
        # Which instances (this one included) have a first-hand reason to keep each member: a
        # member no instance claims is forgotten once nothing else keeps them here
        # (ChatRooms._release).
        self.claims = MemberClaims()

    def _publish(self, event: Dict[str, Any]) -> None:  # pragma: no cover - ChatRooms has it
        raise NotImplementedError

    def now_ms(self) -> int:
        """Milliseconds since the epoch, as every event carries them."""
        return int(self._reactor.seconds() * 1000)

    # -- lookups ----------------------------------------------------------------------------

    def get_member(self, user_id: int) -> Optional[Member]:
        """The member with that id, or None."""
        return self._members.get(user_id)

    def member_for(self, connection: str) -> Optional[Member]:
        """The member a connection is logged in as, or None."""
        user_id = self._connections.get(connection)
        return None if user_id is None else self._members.get(user_id)

    def has_grace_timer(self, user_id: int) -> bool:
        """Whether the disconnect grace is running for that member (for tests and metrics)."""
        return user_id in self._grace_calls

    # -- calls ------------------------------------------------------------------------------

    def connect(self, user_id: int) -> Member:
        """
        Register a member (PHP ``Connect``); a ``connected`` event tells the other processes.

        A member in their disconnect grace here gets a whole grace again rather than none: the
        page PHP connected them for may log in on another process, and then nothing here would
        ever end what they held.
        """
        if user_id in self._grace_calls:
            self._start_grace(user_id)
        member = self._members.get(user_id)
        if member is None:
            member = self._members[user_id] = Member(user_id)
            if debug_wanted():
                self._log.debug("New member {user_id} of {instance}", user_id=user_id,
                                instance=self.instance)
        member.registered = True
        self._publish(events.connected(self.now_ms(), member))
        return member

    def login(
        self, connection: str, user_id: int, name: str, profile_picture_visible: bool = False
    ) -> Optional[Member]:
        """
        Log a connection in as a registered member (the browser's ``login``).

        A connection acts as one member for its whole life: a second login may rename it (IRC
        nick changes; a ``renamed`` event) but not switch it to another id.

        Returns:
            the member, or None when the id was never connected, or the connection is already
            logged in as someone else (the adapter then shuts the connection down).
        """
        member = self._members.get(user_id)
        previous = self._connections.get(connection)
        if member is None or (previous is not None and previous != user_id):
            return None
        self._cancel_grace(user_id)
        picture = bool(profile_picture_visible)
        changed = member.name is not None and (
            member.name != name or member.profile_picture_visible != picture
        )
        member.name = name
        member.profile_picture_visible = picture
        member.connections.add(connection)
        self._connections[connection] = user_id
        if changed:
            self._publish(events.renamed(self.now_ms(), member))
        return member

    def connection_lost(self, connection: str) -> None:
        """A connection is gone. When it was the member's last, the disconnect grace starts."""
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
            self._touched.discard(user_id)
            self._start_grace(user_id)

    def connection_closed(self, connection: str) -> None:
        """
        A connection ended on purpose (a "Leave" button, a closed page): as L{connection_lost},
        but when it was the member's last there is no grace: they leave every room now.
        """
        user_id = self._connections.get(connection)
        self.connection_lost(connection)
        if user_id is not None and user_id in self._grace_calls:
            self._cancel_grace(user_id)
            self._grace_expired(user_id)

    # -- internals --------------------------------------------------------------------------

    def _start_grace(self, user_id: int) -> None:
        self._cancel_grace(user_id)
        self._grace_calls[user_id] = self._reactor.callLater(
            self._grace, self._grace_expired, user_id
        )

    def _cancel_grace(self, user_id: int) -> None:
        call = self._grace_calls.pop(user_id, None)
        if call is not None and call.active():
            call.cancel()

    def _grace_expired(self, user_id: int) -> None:
        self._grace_calls.pop(user_id, None)
        member = self._members.get(user_id)
        if member is None or member.connections:
            return
        elsewhere = user_id in self._touched or self.presence.held_elsewhere(user_id, self.origin)
        self._touched.discard(user_id)
        room_ids: List[int] = []
        ts = self.now_ms()
        for room in self._rooms.values():
            held = user_id in room.joined
            if not held and (elsewhere or user_id not in room.members):
                continue
            room.joined.discard(user_id)
            last = not self.presence.holders(room.id, user_id) - {self.origin}
            self._publish(events.left(ts, room, member, last))
            if last:
                room.remove_member(user_id)
                room_ids.append(room.id)
            else:
                self._unfinished.add((room.id, user_id))
        # Online elsewhere only, or gone: whoever holds them now decides.
        self._release_own(member)
        if not elsewhere:
            del self._members[user_id]
        self._log.debug("Member {user_id} of {instance} left after the grace",
                        user_id=user_id, instance=self.instance)
        self._member_gone(user_id, room_ids)

    def _member_gone(self, user_id: int, room_ids: List[int]) -> None:
        """
        The member is present nowhere in C{room_ids} any more, as far as this process knows:
        their rows move (C{on_member_gone}), for the rooms where that is still so once what the
        other processes published meanwhile has arrived (L{MOVE_CONFIRM_DELAY}). A room where
        someone holds them again is left to that holder, whose own end moves the row: a "Leave"
        on one process as another tab enters on another must not move the row of a user online.
        Only a member another instance claims can be entering elsewhere (PHP connected and
        admitted them there first): any other is moved at once.
        """
        if not room_ids or self._on_member_gone is None:
            return
        if len(self._live) <= 1 or not self.claims.holders(user_id) - {self.origin}:
            self._run_hook(self._on_member_gone, user_id, room_ids)
            return
        call: IDelayedCall

        def confirm() -> None:
            del self._confirming[call]
            self._confirm_gone(user_id, room_ids)

        call = self._reactor.callLater(MOVE_CONFIRM_DELAY, confirm)
        self._confirming[call] = (user_id, list(room_ids))

    def _note_moving(self, origin: str, room_id: int, user_id: int) -> None:
        """C{origin} moves this row after its confirmation (see L{_moving})."""
        now = self._reactor.seconds()
        moving = self._moving.setdefault(origin, {})
        for pair in [pair for pair, when in moving.items() if now - when > _MOVING_KEPT]:
            del moving[pair]
        moving[(room_id, user_id)] = now

    def _confirm_gone(self, user_id: int, room_ids: List[int]) -> None:
        gone = [room_id for room_id in room_ids if not self.presence.is_present(room_id, user_id)]
        if gone and self._on_member_gone is not None:
            self._run_hook(self._on_member_gone, user_id, gone)

    def _forget(self, member: Member, banned_from: Optional[Room] = None) -> List[int]:
        """
        Out of every room and logged out (a ban); a member PHP connects again starts without
        admissions. Returns the rooms the member was present in (cluster-wide), except
        C{banned_from}.
        """
        present = set(self.presence.rooms_of(member.id))
        for room in self._rooms.values():
            if member.id in room.members or member.id in room.joined:
                if member.id in room.joined:
                    present.add(room.id)
                room.remove_member(member.id)
            room.connections.difference_update(member.connections)
        if banned_from is not None:
            present.discard(banned_from.id)
        self._cancel_grace(member.id)
        for conn in member.connections:
            self._connections.pop(conn, None)
        member.connections.clear()
        self._members.pop(member.id, None)
        self.claims.forget(member.id)  # every process forgets them (``banned``)
        self._touched.discard(member.id)
        return sorted(present)

    def _release_own(self, member: Member) -> None:
        """This instance no longer has a reason of its own to keep the member: ``released``."""
        if self.claims.has(member.id, self.origin):
            self._publish(events.released(self.now_ms(), member))

    def _run_hook(self, hook: Callable[..., Any], *args: Any, attempt: int = 1) -> None:
        d = maybeDeferred(hook, *args)
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

    def _stop_presence(self) -> None:
        for call in self._grace_calls.values():
            if call.active():
                call.cancel()
        self._grace_calls.clear()

    async def _wait_hooks(self) -> None:
        for call, (user_id, room_ids) in list(self._confirming.items()):
            # Stopping: what was decided is moved now (nothing else arrives any more).
            call.cancel()
            del self._confirming[call]
            self._confirm_gone(user_id, room_ids)
        for d in list(self._pending):
            await d
        # A session move still failing now is covered by the service, which moves every
        # chatroom_users row to chatroom_sessions when it stops.
        for retry in list(self._retries):
            if retry.active():
                retry.cancel()
        self._retries.clear()
