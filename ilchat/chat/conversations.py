# -*- test-case-name: tests.chat.test_conversations -*-
"""
The On-Screen Chat domain: participants, 1:1 and group conversations, messages, read markers.

This is what ILIAS's ``/<name>-im`` namespace is about, free of any transport. The adapter
(``ilchat.ilias.osc``) turns socket events into calls on L{OnScreenChat}; everything that must
reach users leaves through the bus as a list of deliveries (``{"to": [user ids], "event",
"payload"}`` or ``{"connection": <id>, ...}`` for one connection), so that several processes can
each deliver to their own sockets.

Where the Node server has quirks (spec §7.3), this module fixes them:

* the acting participant is always the connection's logged-in one, never an id from the client
  (and the adapter binds a connection to one verified user, ``ilchat.ilias.identity``);
* names are ILIAS's (``usr_data.login``) where the database has the user;
* ``online`` follows the participant's connections (the last one gone means offline);
* ``numNewMessages`` is computed for the participant who receives the payload;
* a conversation is found by its exact set of participants, a 1:1 before a group;
* a conversation in use is never purged (L{OnScreenChat.live_conversation_ids}).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set

import attr
import attrs
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.chat.history import HistoryWriter
from ilchat.jsonutil import JSONError, dumps, has_lone_surrogate, loads

__all__ = [
    "Conversation",
    "ConversationRegistry",
    "HISTORY_PAGE_SIZE",
    "MAX_MESSAGE_BYTES",
    "OnScreenChat",
    "OscMessageRow",
    "Participant",
    "Refused",
    "parse_user_id",
]

#: Messages per ``history`` page, as ILIAS's ``LIMIT 0, 6``.
HISTORY_PAGE_SIZE = 6
#: Longest message text accepted (UTF-8 bytes). ILIAS's column is a CLOB; the limit keeps a single
#: socket from filling the database or everyone's browser.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most participants accepted in one ``conversation`` request.
MAX_PARTICIPANTS = 100
#: Longest participant name accepted from a browser.
MAX_NAME_LENGTH = 255
#: ``osc_conversation.participants`` is ILIAS's ``text 4000``: a longer list cannot be stored whole.
MAX_PARTICIPANTS_JSON = 4000
#: ``usr_pref`` is polled at every 20-minute wall-clock boundary (:00, :20, :40), as ILIAS does.
ACCEPTANCE_POLL_INTERVAL = 20 * 60
#: A conversation touched within this time counts as in use for the daily purge even when nobody
#: is online: the purge runs once a day, so this covers the whole period since the last run.
IN_USE_WINDOW = 25 * 60 * 60
#: Seconds a message's delivery waits for its row to reach the table, and for each unread count.
STORE_WAIT = 2.0
#: JavaScript's largest safe integer: ids and timestamps above it cannot come from a browser.
MAX_SAFE_INTEGER = 2**53 - 1

Delivery = Dict[str, Any]


class Refused(Exception):
    """
    A request that is refused for the connection that made it.

    Nothing has been stored or delivered for it; the text is meant for that connection only.
    """


def parse_user_id(value: Any) -> int:
    """
    Read an ILIAS user id the way a browser sends it.

    ILIAS's JavaScript sends ids as numbers (from its config) or as numeric strings (from
    ``data-`` attributes); both name the same user, so ilchat keeps them as ints.

    Raises:
        Refused: the value is not a positive integer.
    """
    if isinstance(value, bool):
        raise Refused("user id must be a positive integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 16:
        value = int(value.strip())
    if not isinstance(value, int) or not 0 < value <= MAX_SAFE_INTEGER:
        raise Refused("user id must be a positive integer")
    return value


def _parse_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Refused("name must be a string")
    value = str(value)
    if len(value) > MAX_NAME_LENGTH:
        raise Refused(f"name longer than {MAX_NAME_LENGTH} characters")
    return value


def _parse_timestamp(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refused(f"{what} must be a number of milliseconds")
    if value != value or not 0 <= value <= MAX_SAFE_INTEGER:  # NaN or out of range
        raise Refused(f"{what} out of range")
    return int(value)


@attrs.frozen(slots=True)
class OscMessageRow:
    """One ``osc_messages`` row waiting to be written (``key``: its number in the journal)."""

    id: str
    conversation_id: str
    user_id: int
    message: str
    timestamp: int
    key: int = 0


def _message_row(message: Mapping[str, Any]) -> Dict[str, Any]:
    """The ``osc_messages`` row shape ILIAS sends for a message, with its camelCase copies."""
    return {
        "id": message["id"],
        "conversation_id": message["conversationId"],
        "user_id": message["userId"],
        "message": message["message"],
        "timestamp": message["timestamp"],
        "userId": message["userId"],
        "conversationId": message["conversationId"],
    }


def _with_camel_case(row: Mapping[str, Any]) -> Dict[str, Any]:
    """Add ``userId``/``conversationId`` to a stored row, as ILIAS does for history and latest."""
    result = {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "user_id": int(row["user_id"]),
        "message": row["message"],
        "timestamp": int(row["timestamp"]),
    }
    result["userId"] = result["user_id"]
    result["conversationId"] = result["conversation_id"]
    return result


@attr.s(slots=True, eq=False, repr=False)
class Participant:
    """
    One ILIAS user as the On-Screen Chat knows them.

    ``connections`` are the opaque ids of the user's live sockets (one per browser tab); the
    participant is online while there is at least one.
    """

    id: int = attr.ib()
    name: str = attr.ib()
    accepts_messages: bool = attr.ib(default=True)
    connections: Set[str] = attr.ib(factory=set)

    @property
    def online(self) -> bool:
        """True while at least one of the user's sockets is connected (ILIAS never resets it)."""
        return bool(self.connections)

    def as_json(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name}

    def __repr__(self) -> str:
        return f"<Participant {self.id} {self.name!r} online={self.online}>"


@attr.s(slots=True, eq=False, repr=False)
class Conversation:
    """
    A 1:1 or group conversation.

    ``latest_message`` caches the newest stored message row (with its camelCase keys) once it has
    been read; it is the same for every participant. Unread counts are not kept here: they belong
    to a participant and are read from ``osc_activity`` for whoever receives the payload.
    """

    id: str = attr.ib()
    is_group: bool = attr.ib()
    participants: List[Participant] = attr.ib(factory=list)
    latest_message: Optional[Dict[str, Any]] = attr.ib(default=None)
    latest_loaded: bool = attr.ib(default=False)
    touched_at: float = attr.ib(default=0.0)
    lock: DeferredLock = attr.ib(factory=DeferredLock)

    def participant_ids(self) -> frozenset:
        return frozenset(p.id for p in self.participants)

    def has(self, user_id: int) -> bool:
        return any(p.id == user_id for p in self.participants)

    def participants_json(self) -> List[Dict[str, Any]]:
        return [p.as_json() for p in self.participants]

    def as_json(self, num_new_messages: int = 0) -> Dict[str, Any]:
        """The ``conversation.json()`` payload of ILIAS, for one receiving participant."""
        return {
            "id": self.id,
            "participants": self.participants_json(),
            "latestMessage": self.latest_message,
            "numNewMessages": num_new_messages,
            "isGroup": self.is_group,
        }

    def __repr__(self) -> str:
        kind = "group" if self.is_group else "1:1"
        return f"<Conversation {self.id} {kind} {sorted(self.participant_ids())}>"


class ConversationRegistry:
    """
    The in-memory state: participants by id and conversations in creation order.

    Pure and synchronous so that the matching, presence and acceptance rules can be tested
    without a database or a socket.
    """

    def __init__(self) -> None:
        self.participants: Dict[int, Participant] = {}
        self.conversations: Dict[str, Conversation] = {}
        self._by_user: Dict[int, List[str]] = {}
        self._by_connection: Dict[str, Participant] = {}
        # None until usr_pref has been read once: until then nobody is refused (ILIAS's default).
        self._accepting: Optional[Set[int]] = None

    # participants ------------------------------------------------------------------------------

    def participant(self, user_id: int, name: str = "") -> Participant:
        """
        The participant for C{user_id}, created offline if unknown.

        An existing participant keeps their name: only their own login renames them, not a name
        another user's browser puts in a participants list.
        """
        participant = self.participants.get(user_id)
        if participant is None:
            accepts = True if self._accepting is None else user_id in self._accepting
            participant = Participant(user_id, name, accepts)
            self.participants[user_id] = participant
        elif not participant.name and name:
            participant.name = name
        return participant

    def connect(self, connection: str, user_id: int, name: str) -> Participant:
        """Log C{connection} in as C{user_id}; a connection logged in before is moved over."""
        previous = self._by_connection.get(connection)
        if previous is not None and previous.id != user_id:
            previous.connections.discard(connection)
        participant = self.participant(user_id, name)
        participant.name = name
        participant.connections.add(connection)
        self._by_connection[connection] = participant
        return participant

    def disconnect(self, connection: str) -> Optional[Participant]:
        """Forget C{connection}; its participant goes offline when it was the last one."""
        participant = self._by_connection.pop(connection, None)
        if participant is not None:
            participant.connections.discard(connection)
        return participant

    def logged_in(self, connection: str) -> Optional[Participant]:
        return self._by_connection.get(connection)

    # acceptance --------------------------------------------------------------------------------

    def set_accepting(self, user_ids: Iterable[int]) -> None:
        """Apply a ``usr_pref`` poll: exactly the listed users accept messages (spec §5.3)."""
        self._accepting = set(user_ids)
        for participant in self.participants.values():
            participant.accepts_messages = participant.id in self._accepting

    def update_acceptance(self, changes: Mapping[int, bool]) -> None:
        """Apply a ``UserConfigChange``: only the named users change."""
        if self._accepting is None:
            self._accepting = {p.id for p in self.participants.values() if p.accepts_messages}
        for user_id, accepts in changes.items():
            if accepts:
                self._accepting.add(user_id)
            else:
                self._accepting.discard(user_id)
            participant = self.participants.get(user_id)
            if participant is not None:
                participant.accepts_messages = accepts

    # conversations -----------------------------------------------------------------------------

    def add(self, conversation: Conversation) -> None:
        self.conversations[conversation.id] = conversation
        for participant in conversation.participants:
            self._index(participant.id, conversation.id)

    def discard(self, conversation_id: str) -> None:
        conversation = self.conversations.pop(conversation_id, None)
        if conversation is not None:
            for participant in conversation.participants:
                self._unindex(participant.id, conversation_id)

    def add_participant(self, conversation: Conversation, participant: Participant) -> None:
        if not conversation.has(participant.id):
            conversation.participants.append(participant)
            self._index(participant.id, conversation.id)

    def remove_participant(self, conversation: Conversation, user_id: int) -> None:
        conversation.participants = [p for p in conversation.participants if p.id != user_id]
        self._unindex(user_id, conversation.id)

    def get(self, conversation_id: Any) -> Optional[Conversation]:
        if not isinstance(conversation_id, str):
            return None
        return self.conversations.get(conversation_id)

    def of_user(self, user_id: int) -> List[Conversation]:
        """The user's conversations, in the order they were created (loaded)."""
        return [self.conversations[cid] for cid in self._by_user.get(user_id, ())]

    def find_exact(self, user_ids: Iterable[int]) -> Optional[Conversation]:
        """
        The conversation whose participants are exactly C{user_ids}: a 1:1 before a group.

        ILIAS takes the first conversation whose participants are a subset of the list, so
        ``[alice, bob]`` could open an empty or a one-person conversation; an exact match cannot.
        """
        wanted = frozenset(user_ids)
        if not wanted:
            return None
        group = None
        # Only the conversations of one of the wanted users can match.
        some_user = next(iter(wanted))
        for conversation in self.of_user(some_user):
            if conversation.participant_ids() == wanted:
                if not conversation.is_group:
                    return conversation
                if group is None:
                    group = conversation
        return group

    def _index(self, user_id: int, conversation_id: str) -> None:
        ids = self._by_user.setdefault(user_id, [])
        if conversation_id not in ids:
            ids.append(conversation_id)

    def _unindex(self, user_id: int, conversation_id: str) -> None:
        ids = self._by_user.get(user_id)
        if ids and conversation_id in ids:
            ids.remove(conversation_id)


def _parse_participants(value: Any) -> List[Dict[str, Any]]:
    """
    Check a ``conversation(participants)`` list: ``[{id, name}, ...]``.

    Raises:
        Refused: not a list of objects with valid ids and names, or too long.
    """
    if not isinstance(value, list) or not value:
        raise Refused("participants must be a non-empty list of {id, name}")
    if len(value) > MAX_PARTICIPANTS:
        raise Refused(f"more than {MAX_PARTICIPANTS} participants")
    result: List[Dict[str, Any]] = []
    seen: Set[int] = set()
    for item in value:
        if not isinstance(item, dict):
            raise Refused("participants must be a non-empty list of {id, name}")
        user_id = parse_user_id(item.get("id"))
        name = _parse_name(item.get("name"))
        if user_id not in seen:
            seen.add(user_id)
            result.append({"id": user_id, "name": name})
    return result


def _utc_offset(timestamp: float) -> int:
    """Seconds east of UTC of the local time zone at C{timestamp}."""
    try:
        return time.localtime(timestamp).tm_gmtoff or 0
    except (OverflowError, OSError, ValueError):
        return 0


def _check_fits(participants: Sequence[Any]) -> None:
    """
    Refuse a participant list that ``osc_conversation.participants`` could not hold.

    MySQL would reject (or, outside strict mode, cut) a longer JSON text, leaving a conversation
    that cannot be stored or that comes back broken after a restart.
    """
    items = [p.as_json() if isinstance(p, Participant) else {"id": p["id"], "name": p["name"]} for p in participants]
    text = dumps(items)
    if len(text) > MAX_PARTICIPANTS_JSON:
        raise Refused(f"the participant list is too long to store ({MAX_PARTICIPANTS_JSON} characters at most)")


class OnScreenChat:
    """
    The On-Screen Chat of one ILIAS client: state, rules, persistence and fan-out.

    Every public coroutine acts for the participant logged in on C{connection}; any id the
    browser sends for itself must be that participant's, or the request is L{Refused} before
    anything is stored. Results leave through C{bus.publish(topic, {"deliveries": [...]})}.

    Args:
        instance: the client name; the bus topic is ``osc:<instance>``.
        store: the client's ``ilchat.store`` Store.
        bus: an ``ilchat.bus.IBus``.
        clock: the reactor, or a C{Clock} in tests; timestamps and the poll use it.
    """

    _log = Logger()

    def __init__(
        self, instance: str, store: Any, bus: Any, clock: IReactorTime,
        messages: Optional[HistoryWriter] = None,
    ) -> None:
        self.instance = instance
        self.topic = f"osc:{instance}"
        self.registry = ConversationRegistry()
        self._store = store
        if messages is None and store is not None:
            messages = HistoryWriter(
                clock, store.add_osc_messages, is_refused=store.is_refused_data,
                row_type=OscMessageRow, what="On-Screen Chat messages",
            )
        #: The background writer of ``osc_messages`` (journaled when the adapter gives one).
        self.messages = messages
        self._unread_failing = False
        self._bus = bus
        self._clock = clock
        self._poll_call: Optional[IDelayedCall] = None
        self._running = False
        self._unregister_purge: Optional[Callable[[], None]] = None

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load ``osc_conversation``, read who accepts messages, and schedule the 20-minute poll."""
        self._running = True
        rows = await self._store.get_conversations()
        for row in rows:
            self._load_row(row)
        self._log.info(
            "On-Screen Chat {instance}: {count} conversations loaded",
            instance=self.instance,
            count=len(self.registry.conversations),
        )
        # The daily purge must not delete what we still use, and must tell us what it deleted.
        register = getattr(self._store, "register_live_conversations", None)
        if register is not None:
            self._unregister_purge = register(self.live_conversation_ids, self.forget_conversations)
        # ILIAS <= 10 runs the poll once at start-up and then at every :00/:20/:40.
        await self.poll_acceptance()
        self._schedule_poll()

    async def stop(self, timeout: float = 30.0) -> None:
        """
        Stop the poll, leave the purge's keep list and wait (up to C{timeout} s) until the
        delivered messages are written.
        """
        self._running = False
        if self._unregister_purge is not None:
            self._unregister_purge()
            self._unregister_purge = None
        if self._poll_call is not None and self._poll_call.active():
            self._poll_call.cancel()
        self._poll_call = None
        if self.messages is not None:
            # Wait for the database a while; what it still lacks then stays in the journal.
            giving_up = self._clock.callLater(timeout, self.messages.cancel)
            await self.messages.drain()
            if giving_up.active():
                giving_up.cancel()

    def _load_row(self, row: Mapping[str, Any]) -> None:
        participants = row.get("participants")
        if isinstance(participants, (str, bytes)):
            try:
                participants = loads(participants or "[]")
            except JSONError:
                self._log.warn(
                    "osc_conversation {id}: unreadable participants {participants!r}",
                    id=row.get("id"),
                    participants=participants,
                )
                participants = []
        conversation = Conversation(str(row["id"]), bool(row.get("is_group")))
        for item in participants or ():
            try:
                user_id = parse_user_id(item.get("id") if isinstance(item, dict) else None)
            except Refused:
                continue  # ILIAS's JSON only lists positive ids; skip anything else
            name = item.get("name") if isinstance(item.get("name"), str) else ""
            participant = self.registry.participant(user_id, name)
            if not conversation.has(user_id):
                conversation.participants.append(participant)
        self.registry.add(conversation)

    # message acceptance ------------------------------------------------------------------------

    async def poll_acceptance(self) -> None:
        """Read ``usr_pref`` and apply it to every participant; a DB error keeps the old values."""
        try:
            user_ids = await self._store.get_accepting_user_ids()
        except Exception:
            self._log.failure("On-Screen Chat {instance}: reading usr_pref failed", instance=self.instance)
            return
        self.registry.set_accepting(int(i) for i in user_ids)

    def _schedule_poll(self) -> None:
        if not self._running:
            return
        now = self._clock.seconds()
        # ILIAS's cron "*/20 * * * *" runs on local time; in a zone such as +05:30 the local
        # :00/:20/:40 are not UTC's, so measure from local midnight.
        local = now + _utc_offset(now)
        delay = ACCEPTANCE_POLL_INTERVAL - (local % ACCEPTANCE_POLL_INTERVAL)
        self._poll_call = self._clock.callLater(delay, self._run_poll)

    def _run_poll(self) -> None:
        self._poll_call = None
        d = ensureDeferred(self.poll_acceptance())
        d.addBoth(lambda _: self._schedule_poll())

    def set_acceptance(self, changes: Mapping[int, bool]) -> None:
        """``UserConfigChange``: PHP tells us at once that users changed their preference."""
        self.registry.update_acceptance(changes)

    # presence ----------------------------------------------------------------------------------

    def login(self, connection: str, user_id: Any, name: Any) -> Participant:
        """
        Log C{connection} in. The adapter has checked that the connection may act as C{user_id}
        (``ilchat.ilias.identity``) and passes the name ILIAS knows (L{known_names}).

        Raises:
            Refused: a malformed id or name.
        """
        return self.registry.connect(connection, parse_user_id(user_id), _parse_name(name))

    async def known_names(self, user_ids: Iterable[int]) -> Dict[int, str]:
        """
        The names ILIAS gives these users (``usr_data.login``, what its On-Screen Chat shows),
        for those the database has; a browser's names are used only for the others.
        """
        ids = list(user_ids)
        try:
            return await self._store.get_logins(ids)
        except Exception:
            self._log.failure("On-Screen Chat {instance}: reading usr_data failed", instance=self.instance)
            return {}

    def _rename(self, names: Mapping[int, str]) -> None:
        for user_id, name in names.items():
            participant = self.registry.participants.get(user_id)
            if participant is not None:
                participant.name = name

    def disconnect(self, connection: str) -> Optional[Participant]:
        """A socket is gone; its participant is offline once it was their last one."""
        return self.registry.disconnect(connection)

    def live_conversation_ids(self) -> Set[str]:
        """
        Conversations the daily purge must keep: one participant is online, or it was created or
        used within the last day. ILIAS deletes every conversation without messages, including one
        opened a minute ago, which is then lost at the next restart.
        """
        horizon = self._clock.seconds() - IN_USE_WINDOW
        return {
            c.id
            for c in self.registry.conversations.values()
            if c.touched_at >= horizon or any(p.online for p in c.participants)
        }

    def forget_conversations(self, conversation_ids: Iterable[str]) -> None:
        """Drop conversations the purge deleted, so memory and ``osc_conversation`` agree."""
        for conversation_id in conversation_ids:
            self.registry.discard(conversation_id)

    # helpers -----------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _actor(self, connection: str, claimed_id: Any = None, check_claim: bool = False) -> Participant:
        participant = self.registry.logged_in(connection)
        if participant is None:
            raise Refused("not logged in")
        if check_claim:
            try:
                claimed = parse_user_id(claimed_id)
            except Refused:
                raise Refused("user id must be a positive integer") from None
            if claimed != participant.id:
                raise Refused("you can only act as the user you logged in as")
        return participant

    def _conversation_for(self, conversation_id: Any, participant: Participant) -> Conversation:
        conversation = self.registry.get(conversation_id)
        if conversation is None:
            raise Refused("unknown conversation")
        if not conversation.has(participant.id):
            raise Refused("not a participant of this conversation")
        return conversation

    async def _latest(self, conversation: Conversation) -> Optional[Dict[str, Any]]:
        if not conversation.latest_loaded:
            row = await self._store.get_latest_osc_message(conversation.id)
            if not conversation.latest_loaded:  # a message stored meanwhile wins
                conversation.latest_message = _with_camel_case(row) if row else None
                conversation.latest_loaded = True
        return conversation.latest_message

    async def _unread(self, conversation: Conversation, user_id: int) -> int:
        # A failed or slow count (a frozen database answers after database_timeout) must not
        # hold up a message: report 0 after STORE_WAIT. While the database is down every message
        # fails this, so that is one warning, not one per message.
        outcome: List[Any] = []
        counted = _ensure(self._store.count_unread(conversation.id, user_id))
        counted.addBoth(outcome.append)
        await _at_most(self._clock, counted, STORE_WAIT)
        if not outcome or isinstance(outcome[0], Failure):
            if not self._unread_failing:
                error = outcome[0].value if outcome else f"no answer within {STORE_WAIT} s"
                self._log.warn("Counting unread messages fails ({error!r}); showing 0 until the "
                               "database answers again", error=error)
            self._unread_failing = True
            return 0
        count = int(outcome[0] or 0)
        if self._unread_failing:
            self._log.info("Counting unread messages works again")
            self._unread_failing = False
        return count

    async def _json_for(self, conversation: Conversation, user_id: int) -> Dict[str, Any]:
        await self._latest(conversation)
        return conversation.as_json(await self._unread(conversation, user_id))

    def _publish(self, deliveries: List[Delivery]) -> None:
        if deliveries:
            self._bus.publish(self.topic, {"type": "deliveries", "deliveries": deliveries})

    @staticmethod
    def _to(user_ids: Sequence[int], event: str, payload: Any) -> Delivery:
        return {"to": list(user_ids), "event": event, "payload": payload}

    @staticmethod
    def _to_connection(connection: str, event: str, payload: Any) -> Delivery:
        return {"connection": connection, "event": event, "payload": payload}

    @staticmethod
    def _participants_text(conversation: Conversation) -> str:
        # JSON.stringify's compact form, as ILIAS's PHP side reads osc_conversation.participants.
        return dumps(conversation.participants_json())

    async def _persist_new(self, conversation: Conversation) -> None:
        await self._store.insert_conversation(
            conversation.id, conversation.is_group, self._participants_text(conversation)
        )

    async def _persist_change(self, conversation: Conversation) -> None:
        await self._store.update_conversation(
            conversation.id, self._participants_text(conversation), conversation.is_group
        )

    # events ------------------------------------------------------------------------------------

    async def list_conversations(self, connection: str) -> None:
        """
        ``conversations`` (and the end of ``login``): send the participant's conversations.

        A conversation is sent unless the participant closed it, except that a closed 1:1 with
        unread messages is sent again (spec §3.4 ListConversations).
        """
        participant = self._actor(connection)
        conversations = self.registry.of_user(participant.id)

        async def describe(conversation: Conversation) -> Optional[Dict[str, Any]]:
            activity = await self._store.get_activity(conversation.id, participant.id)
            closed = bool(activity and activity.get("is_closed"))
            payload = await self._json_for(conversation, participant.id)
            if not closed or (payload["numNewMessages"] > 0 and not conversation.is_group):
                return payload
            return None

        payloads = await gatherResults([_ensure(describe(c)) for c in conversations], consumeErrors=True)
        self._publish(
            [self._to([participant.id], "conversation", p) for p in payloads if p is not None]
        )

    async def open_conversation(self, connection: str, participants: Any) -> Conversation:
        """
        ``conversation(participants)``: open the conversation of exactly these users, or create it.

        The requester must be one of them, and there must be someone else: a conversation is
        between the requester and others, never between third parties.
        """
        actor = self._actor(connection)
        wanted = _parse_participants(participants)
        ids = [p["id"] for p in wanted]
        if actor.id not in ids:
            raise Refused("participants must include yourself")
        if len(ids) < 2:
            raise Refused("a conversation needs at least one other participant")
        names = await self.known_names(ids)
        self._rename(names)
        wanted = [{"id": p["id"], "name": names.get(p["id"], p["name"])} for p in wanted]
        conversation = self.registry.find_exact(ids)
        if conversation is None:
            # Known participants keep their names, so measure what would really be stored.
            _check_fits([self.registry.participants.get(p["id"]) or p for p in wanted])
            conversation = Conversation(str(uuid.uuid4()), is_group=len(ids) > 2)
            conversation.latest_loaded = True  # brand new: no messages yet
            for item in wanted:
                conversation.participants.append(self.registry.participant(item["id"], item["name"]))
            conversation.touched_at = self._clock.seconds()
            # Into memory before the INSERT returns, so that a second request for the same set
            # (another tab, a double click) finds this one instead of making a twin.
            self.registry.add(conversation)
            try:
                await self._persist_new(conversation)
            except Exception:
                self.registry.discard(conversation.id)
                self._log.failure("Storing conversation {id} failed", id=conversation.id)
                raise Refused("the conversation could not be stored; try again") from None
        else:
            conversation.touched_at = self._clock.seconds()
        payload = await self._json_for(conversation, actor.id)
        self._publish([self._to([actor.id], "conversation-init", payload)])
        return conversation

    async def add_user(self, connection: str, conversation_id: Any, user_id: Any, name: Any) -> Conversation:
        """
        ``addUser``: add someone. As in ILIAS, a 1:1 stays as it is and a new group is made.

        Adding someone who is already there is refused before anything is created (ILIAS would
        leave an empty group row behind).
        """
        actor = self._actor(connection)
        conversation = self._conversation_for(conversation_id, actor)
        new_id = parse_user_id(user_id)
        new_name = _parse_name(name)
        names = await self.known_names([new_id])
        self._rename(names)
        new_name = names.get(new_id, new_name)
        if conversation.has(new_id):
            raise Refused("already a participant of this conversation")
        if len(conversation.participants) >= MAX_PARTICIPANTS:
            raise Refused(f"more than {MAX_PARTICIPANTS} participants")
        _check_fits(conversation.participants + [self.registry.participants.get(new_id) or {"id": new_id, "name": new_name}])
        newcomer = self.registry.participant(new_id, new_name)
        if conversation.is_group:
            async with conversation.lock:
                self.registry.add_participant(conversation, newcomer)
                try:
                    await self._persist_change(conversation)
                except Exception:
                    self.registry.remove_participant(conversation, new_id)
                    self._log.failure("Updating conversation {id} failed", id=conversation.id)
                    raise Refused("the conversation could not be stored; try again") from None
            target = conversation
        else:
            target = Conversation(str(uuid.uuid4()), is_group=True)
            target.latest_loaded = True
            target.participants = list(conversation.participants) + [newcomer]
            self.registry.add(target)
            try:
                await self._persist_new(target)
            except Exception:
                self.registry.discard(target.id)
                self._log.failure("Storing conversation {id} failed", id=target.id)
                raise Refused("the conversation could not be stored; try again") from None
        target.touched_at = self._clock.seconds()
        # ILIAS's trackActivity(conv, id, 0): every participant gets a read marker row, so that
        # unread counts work for the newcomer too.
        for participant in target.participants:
            try:
                await self._store.track_activity(target.id, participant.id, 0)
            except Exception:
                self._log.failure("Creating the read marker of {user} in {id} failed", user=participant.id, id=target.id)
        payload = await self._json_for(target, actor.id)
        self._publish(
            [
                self._to([actor.id], "conversation", payload),
                self._to_connection(connection, "addUser", payload),
            ]
        )
        return target

    async def remove_user(self, connection: str, conversation_id: Any, user_id: Any, name: Any = None) -> None:
        """``removeUser``: leave a group conversation (ILIAS only ever sends the user's own id)."""
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        if not conversation.is_group:
            raise Refused("only a group conversation can be left; close a 1:1 instead")
        async with conversation.lock:
            self.registry.remove_participant(conversation, actor.id)
            try:
                await self._persist_change(conversation)
            except Exception:
                self.registry.add_participant(conversation, actor)
                self._log.failure("Updating conversation {id} failed", id=conversation.id)
                raise Refused("the conversation could not be stored; try again") from None
        conversation.touched_at = self._clock.seconds()
        deliveries = [self._to([actor.id], "removeUser", await self._json_for(conversation, actor.id))]
        for participant in conversation.participants:
            if participant.accepts_messages:
                deliveries.append(
                    self._to([participant.id], "conversation", await self._json_for(conversation, participant.id))
                )
        self._publish(deliveries)

    async def send_message(self, connection: str, conversation_id: Any, user_id: Any, text: Any) -> Dict[str, Any]:
        """
        ``message``: journal the message, then send it to every participant who accepts messages.

        The row is on disk (the writer's journal) before anyone sees the message, and written to
        ``osc_messages`` in the background like the room history, so the history never lacks a
        message a browser has shown, even when the database is down or the process is killed;
        a database outage does not hold up delivery. Messages of one conversation are handled
        one after the other, so they arrive in the order they were sent and get strictly
        increasing timestamps (the history is paged by timestamp, so two messages in one
        millisecond could otherwise hide each other).
        """
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        if not isinstance(text, str):
            raise Refused("message must be a string")
        if not text:
            raise Refused("message is empty")
        if len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
            raise Refused(f"message longer than {MAX_MESSAGE_BYTES} bytes")
        if has_lone_surrogate(text):
            # Neither osc_messages nor any browser could take it (strict JSON refuses it first).
            raise Refused("message holds a lone surrogate")
        if not actor.accepts_messages:
            message = {
                "conversationId": conversation.id,
                "userId": actor.id,
                "message": text,
                "timestamp": self._now_ms(),
                "id": str(uuid.uuid4()),
            }
            self._publish([self._to([actor.id], "senderSuppressesMessages", message)])
            return message

        async with conversation.lock:
            latest = await self._latest(conversation)
            timestamp = self._now_ms()
            if latest is not None and timestamp <= latest["timestamp"]:
                timestamp = latest["timestamp"] + 1
            message = {
                "conversationId": conversation.id,
                "userId": actor.id,
                "message": text,
                "timestamp": timestamp,
                "id": str(uuid.uuid4()),
            }
            self.messages.add(OscMessageRow(message["id"], conversation.id, actor.id, text, timestamp))
            await self.messages.journaled()
            # The unread counts below come from the table: give the write a moment to land there,
            # but never let a database outage hold up the delivery for longer.
            await _at_most(self._clock, self.messages.drain(), STORE_WAIT)
            conversation.latest_message = _message_row(message)
            conversation.latest_loaded = True
            conversation.touched_at = self._clock.seconds()

            recipients = [p for p in conversation.participants if p.accepts_messages]
            ignored = [p for p in conversation.participants if not p.accepts_messages]
            counts = await gatherResults(
                [_ensure(self._unread(conversation, p.id)) for p in recipients], consumeErrors=True
            )
            deliveries = [
                self._to([p.id], "conversation", conversation.as_json(count))
                for p, count in zip(recipients, counts)
            ]
            deliveries.append(self._to([p.id for p in recipients], "message", message))
            if ignored:
                suppressed = dict(message, ignoredParticipants={str(p.id): p.id for p in ignored})
                deliveries.append(self._to([actor.id], "participantsSuppressedMessages", suppressed))
            self._publish(deliveries)
        return message

    async def history(self, connection: str, conversation_id: Any, oldest: Any = None, reverse: Any = False) -> None:
        """``history``: one page of six messages older than C{oldest} (ms), newest first."""
        actor = self._actor(connection)
        conversation = self._conversation_for(conversation_id, actor)
        older_than = None if oldest is None else _parse_timestamp(oldest, "oldestMessageTimestamp")
        rows = await self._store.get_osc_history(conversation.id, older_than, limit=HISTORY_PAGE_SIZE)
        messages = [_with_camel_case(row) for row in rows]
        stamps = [m["timestamp"] for m in messages]
        if older_than is not None:
            stamps.append(older_than)
        if reverse:
            messages.reverse()  # ascending, for a window being filled from the top
        payload = await self._json_for(conversation, actor.id)
        payload["messages"] = messages
        payload["reverseSorting"] = reverse if isinstance(reverse, bool) else bool(reverse)
        payload["oldestMessageTimestamp"] = min(stamps) if stamps else None
        self._publish([self._to([actor.id], "history", payload)])

    async def track_activity(self, connection: str, conversation_id: Any, user_id: Any, timestamp: Any) -> None:
        """``activity``: the participant's read marker (ms)."""
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        stamp = _parse_timestamp(timestamp, "timestamp")
        await self._store.track_activity(conversation.id, actor.id, stamp)

    async def close_conversation(self, connection: str, conversation_id: Any, user_id: Any) -> None:
        """``closeConversation``: hide it for this participant until a new message arrives."""
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        await self._store.close_conversation(conversation.id, actor.id, self._now_ms())

    def typing(self, connection: str, conversation_id: Any, user_id: Any, started: bool) -> None:
        """
        ``userStartedTyping``/``userStoppedTyping`` to every other participant.

        Typing is frequent and the browser only reads the conversation id from it, so the payload
        carries the cached latest message and ``numNewMessages`` 0 rather than a database read.
        """
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        others = [p.id for p in conversation.participants if p.id != actor.id]
        payload = {"conversation": conversation.as_json(0), "participant": actor.as_json()}
        event = "userStartedTyping" if started else "userStoppedTyping"
        self._publish([self._to(others, event, payload)])


def _at_most(clock: IReactorTime, d: "Deferred[Any]", seconds: float) -> "Deferred[None]":
    """Fire when C{d} fires or after C{seconds}, whichever is first (C{d} itself goes on)."""
    done: Deferred[None] = Deferred()

    def finish(_: Any = None) -> Any:
        if call.active():
            call.cancel()
        if not done.called:
            done.callback(None)
        return _

    call = clock.callLater(seconds, finish)
    d.addBoth(finish)
    return done


def _ensure(coroutine_or_deferred: Any) -> Deferred:
    """A Deferred for whatever a store method returned (coroutine, Deferred or plain value)."""
    if hasattr(coroutine_or_deferred, "addCallback"):
        return coroutine_or_deferred
    if hasattr(coroutine_or_deferred, "send"):
        return ensureDeferred(coroutine_or_deferred)
    return maybeDeferred(lambda: coroutine_or_deferred)
