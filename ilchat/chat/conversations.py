# -*- test-case-name: tests.chat.test_conversations -*-
"""
The On-Screen Chat service: what ILIAS's ``/<name>-im`` namespace is about, free of any transport.

The adapter (``ilchat.ilias.osc``) turns socket events into calls on L{OnScreenChat}. What must
reach users leaves through the bus as plain events addressed by user ids
(L{ilchat.chat.conversation_events}), so that several processes can each deliver to their own
sockets; what answers one request only (a history page, the conversation list of a login) is
returned to the adapter, which owns the asking socket. The model is
L{ilchat.chat.conversation_model}, the in-memory state L{ilchat.chat.conversation_registry}.

Where the Node server has quirks (spec §7.3), this module fixes them:

* the acting participant is always the connection's logged-in one, never an id from the client
  (and the adapter binds a connection to one verified user, ``ilchat.ilias.identity``);
* names are ILIAS's (``usr_data.login``) where the database has the user;
* ``online`` follows the participant's connections (the last one gone means offline);
* the unread count is computed for each participant who is told about a conversation;
* a conversation is found by its exact set of participants, a 1:1 before a group;
* a conversation in use is never purged (L{OnScreenChat.live_conversation_ids}).

With several processes every process holds every conversation: each applies the events the
others publish (L{OnScreenChat.apply_remote}, L{ilchat.chat.conversation_replication}), reads a
conversation it does not know from the store, and writes only the message rows it accepted.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ilchat.chat import conversation_events as events
from ilchat.chat.conversation_acceptance import AcceptancePoll
from ilchat.chat.conversation_model import (
    MAX_PARTICIPANTS,
    Conversation,
    ConversationView,
    HistoryPage,
    OscMessageRow,
    Participant,
    Refused,
    changed_participants,
    check_fits,
    check_text,
    new_message,
    parse_name,
    parse_participants,
    parse_timestamp,
    parse_user_id,
    stored_message,
)
from ilchat.chat.conversation_registry import ConversationRegistry
from ilchat.chat.conversation_replication import apply_remote_event, purged_ids, snapshot_ids
from ilchat.chat.history import HistoryWriter
from ilchat.chat.unread import STORE_WAIT, UnreadCounts, at_most
from ilchat.jsonutil import dumps
from ilchat.logs import RepeatedLog

__all__ = [
    "HISTORY_PAGE_SIZE",
    "OnScreenChat",
]

#: Messages per ``history`` page, as ILIAS's ``LIMIT 0, 6``.
HISTORY_PAGE_SIZE = 6
#: A conversation touched within this time counts as in use for the daily purge even when nobody
#: is online: the purge runs once a day, so this covers the whole period since the last run.
IN_USE_WINDOW = 25 * 60 * 60


class OnScreenChat:
    """
    The On-Screen Chat of one ILIAS client: state, rules, persistence and fan-out.

    Every public coroutine acts for the participant logged in on C{connection}; any id the
    browser sends for itself must be that participant's, or the request is L{Refused} before
    anything is stored. Events leave through C{bus.publish("osc:<name>", event)}.

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
        self._bus = bus
        self._clock = clock
        self._unread_counts = UnreadCounts(store, clock)
        self.acceptance = AcceptancePoll(instance, store, self.registry, clock)
        self._unregister_purge: Optional[Callable[[], None]] = None
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._repeats = RepeatedLog(self._log, clock)

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load ``osc_conversation``, read who accepts messages, and schedule the 20-minute poll."""
        # What the other processes of the client change must reach this process's state too;
        # subscribed before the load, so that nothing changed meanwhile is missed. A conversation
        # an event brought during the load is newer than its row.
        self._unsubscribe = self._bus.subscribe(self.topic, self.apply_remote)
        try:
            rows = await self._store.get_conversations()
        except BaseException:
            # A failed start gets no stop(): leave the bus as it was.
            self._unsubscribe()
            self._unsubscribe = None
            raise
        for row in rows:
            if str(row["id"]) not in self.registry.conversations:
                self.registry.load_row(row)
        self._log.info(
            "On-Screen Chat {instance}: {count} conversations loaded",
            instance=self.instance,
            count=len(self.registry.conversations),
        )
        # The daily purge must not delete what we still use, and must tell us what it deleted.
        register = getattr(self._store, "register_live_conversations", None)
        if register is not None:
            self._unregister_purge = register(self.live_conversation_ids, self.forget_conversations)
        await self.acceptance.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """
        Stop the poll, leave the purge's keep list and wait (up to C{timeout} s) until the
        delivered messages are written.
        """
        self.acceptance.stop()
        if self._unregister_purge is not None:
            self._unregister_purge()
            self._unregister_purge = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._repeats.flush()
        if self.messages is not None:
            # Wait for the database a while; what it still lacks then stays in the journal.
            giving_up = self._clock.callLater(timeout, self.messages.cancel)
            await self.messages.drain()
            if giving_up.active():
                giving_up.cancel()

    # message acceptance ------------------------------------------------------------------------

    def set_acceptance(self, changes: Mapping[int, bool]) -> None:
        """
        ``UserConfigChange``: PHP tells us at once that users changed their preference. Applied
        here at once, and published for the other processes of the client (L{apply_remote}).
        """
        self.registry.update_acceptance(changes)
        self._bus.publish(self.topic, events.acceptance_changed(changes))

    def apply_remote(self, envelope: Mapping[str, Any]) -> None:
        """
        Bus subscriber: apply what another process published to this process's state
        (L{ilchat.chat.conversation_replication}); this process applied its own events when it
        acted. Subscribed before the adapter's renderer, so a conversation is known here by the
        time its tabs here hear of it.
        """
        if envelope.get("origin") == self._bus.instance:
            return
        event = envelope.get("event") or {}
        try:
            if event.get("type") == events.CONVERSATIONS_PURGED:
                self._purged_elsewhere(purged_ids(event))
                return
            conversation = apply_remote_event(self.registry, event, self._clock.seconds())
        except ValueError as e:
            self._repeats.warn(
                "On-Screen Chat {instance}: dropped a {type!r} event from {origin}: {error}",
                key=("dropped", envelope.get("origin")),
                instance=self.instance, type=event.get("type"), origin=envelope.get("origin"), error=str(e),
            )
            return
        if conversation is not None and snapshot_ids(event) != conversation.participant_ids():
            # The publisher saw other participants: an event one of us missed (the bus to Redis
            # was down), or changes crossing each other. The stored list has every change whose
            # event was published; take it.
            refreshed = ensureDeferred(self._refresh_participants(conversation))
            refreshed.addErrback(lambda failure: self._log.failure(
                "On-Screen Chat {instance}: reading conversation {id} failed", failure,
                instance=self.instance, id=conversation.id))

    async def _refresh_participants(self, conversation: Conversation) -> None:
        """Set a conversation's participants from ``osc_conversation`` (after its own changes)."""
        async with conversation.lock:
            row = await self._store.get_conversation(conversation.id)
            if row is not None and self.registry.get(conversation.id) is conversation:
                self.registry.set_participants(conversation, self.registry.row_participants(row))

    # presence ----------------------------------------------------------------------------------

    def login(self, connection: str, user_id: Any, name: Any) -> Participant:
        """
        Log C{connection} in. The adapter has checked that the connection may act as C{user_id}
        (``ilchat.ilias.identity``) and passes the name ILIAS knows (L{known_names}).

        Raises:
            Refused: a malformed id or name.
        """
        return self.registry.connect(connection, parse_user_id(user_id), parse_name(name))

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
        return self.registry.in_use(self._clock.seconds() - IN_USE_WINDOW)

    def forget_conversations(self, conversation_ids: Iterable[str]) -> None:
        """
        Drop conversations the purge deleted, so memory and ``osc_conversation`` agree, and tell
        the other processes, which may still use one of them (L{_purged_elsewhere}).
        """
        ids = list(conversation_ids)
        for conversation_id in ids:
            self.registry.discard(conversation_id)
        if ids:
            self._publish(events.conversations_purged(ids))

    def _purged_elsewhere(self, conversation_ids: Iterable[str]) -> None:
        """
        Another process's purge deleted these: the ones in use here (a participant online on
        this process, or used within the day) are written back, the others forgotten here too.
        """
        live = self.live_conversation_ids()
        for conversation_id in conversation_ids:
            conversation = self.registry.get(conversation_id)
            if conversation is None:
                continue
            if conversation_id not in live:
                self.registry.discard(conversation_id)
                continue
            self._log.info("On-Screen Chat {instance}: conversation {id} was purged elsewhere but is in use here; "
                           "writing it back", instance=self.instance, id=conversation_id)
            written = ensureDeferred(self._persist_change(conversation))
            written.addErrback(lambda failure, cid=conversation_id: self._log.failure(
                "Writing back conversation {id} failed", failure, id=cid))

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
        return self._check_participant(conversation, participant)

    async def _stored_conversation_for(self, conversation_id: Any, participant: Participant) -> Conversation:
        """
        L{_conversation_for}, reading a conversation unknown here from ``osc_conversation``: one
        another process made while this one missed its event (the bus to Redis was down).
        """
        conversation = self.registry.get(conversation_id)
        if conversation is None and isinstance(conversation_id, str) and len(conversation_id) <= 255:
            try:
                row = await self._store.get_conversation(conversation_id)
            except Exception:
                self._log.failure("On-Screen Chat {instance}: reading conversation {id} failed",
                                  instance=self.instance, id=conversation_id)
                row = None
            conversation = self.registry.get(conversation_id)  # an event may have brought it meanwhile
            if conversation is None and row is not None:
                conversation = self.registry.load_row(row)
        return self._check_participant(conversation, participant)

    @staticmethod
    def _check_participant(conversation: Optional[Conversation], participant: Participant) -> Conversation:
        if conversation is None:
            raise Refused("unknown conversation")
        if not conversation.has(participant.id):
            raise Refused("not a participant of this conversation")
        return conversation

    async def _latest(self, conversation: Conversation) -> Optional[Dict[str, Any]]:
        if not conversation.latest_loaded:
            row = await self._store.get_latest_osc_message(conversation.id)
            if not conversation.latest_loaded:  # a message stored meanwhile wins
                conversation.latest_message = stored_message(row) if row else None
                conversation.latest_loaded = True
        return conversation.latest_message

    async def _unread_for(self, conversation: Conversation, user_id: int) -> int:
        """The latest message loaded (for the snapshot that follows) and C{user_id}'s unread count."""
        await self._latest(conversation)
        return await self._unread_counts.count(conversation.id, user_id)

    def _publish(self, event: Dict[str, Any]) -> None:
        self._bus.publish(self.topic, event)

    @staticmethod
    def _participants_text(conversation: Conversation) -> str:
        # JSON.stringify's compact form, as ILIAS's PHP side reads osc_conversation.participants.
        return dumps(conversation.participants_list())

    async def _persist_new(self, conversation: Conversation) -> None:
        await self._store.insert_conversation(
            conversation.id, conversation.is_group, self._participants_text(conversation)
        )

    async def _persist_change(self, conversation: Conversation, add: Optional[Participant] = None,
                              remove: Optional[int] = None) -> None:
        """Store one added or removed participant, keeping what another process stored meanwhile."""
        ours = self._participants_text(conversation)
        await self._store.update_conversation(
            conversation.id, ours, conversation.is_group,
            change=lambda stored: changed_participants(stored, ours, add.as_dict() if add else None, remove),
        )

    # requests ----------------------------------------------------------------------------------

    async def list_conversations(self, connection: str) -> List[ConversationView]:
        """
        ``conversations`` (and the end of ``login``): the participant's conversations, for the
        asking connection.

        A conversation is listed unless the participant closed it, except that a closed 1:1 with
        unread messages is listed again (spec §3.4 ListConversations).
        """
        participant = self._actor(connection)
        conversations = self.registry.of_user(participant.id)

        async def describe(conversation: Conversation) -> Optional[ConversationView]:
            activity = await self._store.get_activity(conversation.id, participant.id)
            closed = bool(activity and activity.get("is_closed"))
            unread = await self._unread_for(conversation, participant.id)
            if not closed or (unread > 0 and not conversation.is_group):
                return ConversationView(conversation.snapshot(), unread)
            return None

        views = await gatherResults([ensureDeferred(describe(c)) for c in conversations], consumeErrors=True)
        return [view for view in views if view is not None]

    async def open_conversation(self, connection: str, participants: Any) -> Conversation:
        """
        ``conversation(participants)``: open the conversation of exactly these users, or create it.

        The requester must be one of them, and there must be someone else: a conversation is
        between the requester and others, never between third parties.
        """
        actor = self._actor(connection)
        wanted = parse_participants(participants)
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
            check_fits([self.registry.participants.get(p["id"]) or p for p in wanted])
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
        unread = await self._unread_for(conversation, actor.id)
        self._publish(events.conversation_opened(conversation, actor.id, unread))
        return conversation

    async def add_user(self, connection: str, conversation_id: Any, user_id: Any, name: Any) -> Conversation:
        """
        ``addUser``: add someone. As in ILIAS, a 1:1 stays as it is and a new group is made.

        Adding someone who is already there is refused before anything is created (ILIAS would
        leave an empty group row behind).
        """
        actor = self._actor(connection)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        new_id = parse_user_id(user_id)
        new_name = parse_name(name)
        names = await self.known_names([new_id])
        self._rename(names)
        new_name = names.get(new_id, new_name)
        if conversation.has(new_id):
            raise Refused("already a participant of this conversation")
        if len(conversation.participants) >= MAX_PARTICIPANTS:
            raise Refused(f"more than {MAX_PARTICIPANTS} participants")
        check_fits(conversation.participants + [self.registry.participants.get(new_id) or {"id": new_id, "name": new_name}])
        newcomer = self.registry.participant(new_id, new_name)
        if conversation.is_group:
            async with conversation.lock:
                self.registry.add_participant(conversation, newcomer)
                try:
                    await self._persist_change(conversation, add=newcomer)
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
        unread = await self._unread_for(target, actor.id)
        self._publish(events.participant_added(target, conversation.id, newcomer, actor.id, connection, unread))
        return target

    async def remove_user(self, connection: str, conversation_id: Any, user_id: Any, name: Any = None) -> None:
        """``removeUser``: leave a group conversation (ILIAS only ever sends the user's own id)."""
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        if not conversation.is_group:
            raise Refused("only a group conversation can be left; close a 1:1 instead")
        async with conversation.lock:
            self.registry.remove_participant(conversation, actor.id)
            try:
                await self._persist_change(conversation, remove=actor.id)
            except Exception:
                self.registry.add_participant(conversation, actor)
                self._log.failure("Updating conversation {id} failed", id=conversation.id)
                raise Refused("the conversation could not be stored; try again") from None
        conversation.touched_at = self._clock.seconds()
        unread = await self._unread_for(conversation, actor.id)
        others = []
        for participant in conversation.participants:
            if participant.accepts_messages:
                others.append((participant.id, await self._unread_for(conversation, participant.id)))
        self._publish(events.participant_removed(conversation, actor, unread, others))

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

        Returns:
            the message (L{stored_message}'s shape).
        """
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        check_text(text)
        if not actor.accepts_messages:
            message = new_message(conversation, actor, text, self._now_ms())
            self._publish(events.message_withheld(message, actor))
            return message

        async with conversation.lock:
            latest = await self._latest(conversation)
            timestamp = self._now_ms()
            if latest is not None and timestamp <= latest["timestamp"]:
                timestamp = latest["timestamp"] + 1
            message = new_message(conversation, actor, text, timestamp)
            self.messages.add(OscMessageRow(message["id"], conversation.id, actor.id, text, timestamp))
            await self.messages.journaled()
            # The unread counts below come from the table: give the write a moment to land there,
            # but never let a database outage hold up the delivery for longer.
            await at_most(self._clock, self.messages.drain(), STORE_WAIT)
            conversation.latest_message = dict(message)
            conversation.latest_loaded = True
            conversation.touched_at = self._clock.seconds()

            recipients = [p for p in conversation.participants if p.accepts_messages]
            ignored = [p.id for p in conversation.participants if not p.accepts_messages]
            counts = await gatherResults(
                [ensureDeferred(self._unread_counts.count(conversation.id, p.id)) for p in recipients], consumeErrors=True
            )
            unread = [(p.id, count) for p, count in zip(recipients, counts)]
            self._publish(events.message_posted(conversation, message, actor, unread, ignored))
        return message

    async def history(self, connection: str, conversation_id: Any, oldest: Any = None, reverse: Any = False) -> HistoryPage:
        """``history``: one page of six messages older than C{oldest} (ms), newest first."""
        actor = self._actor(connection)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        older_than = None if oldest is None else parse_timestamp(oldest, "oldestMessageTimestamp")
        rows = await self._store.get_osc_history(conversation.id, older_than, limit=HISTORY_PAGE_SIZE)
        messages = [stored_message(row) for row in rows]
        stamps = [m["timestamp"] for m in messages]
        if older_than is not None:
            stamps.append(older_than)
        if reverse:
            messages.reverse()  # ascending, for a window being filled from the top
        unread = await self._unread_for(conversation, actor.id)
        return HistoryPage(
            ConversationView(conversation.snapshot(), unread),
            messages,
            reverse if isinstance(reverse, bool) else bool(reverse),
            min(stamps) if stamps else None,
        )

    async def track_activity(self, connection: str, conversation_id: Any, user_id: Any, timestamp: Any) -> None:
        """
        ``activity``: the participant's read marker (ms). Only the database learns of it: unread
        counts are read from there for whoever is told about the conversation next.
        """
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        stamp = parse_timestamp(timestamp, "timestamp")
        await self._store.track_activity(conversation.id, actor.id, stamp)

    async def close_conversation(self, connection: str, conversation_id: Any, user_id: Any) -> None:
        """``closeConversation``: hide it for this participant until a new message arrives."""
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = await self._stored_conversation_for(conversation_id, actor)
        await self._store.close_conversation(conversation.id, actor.id, self._now_ms())

    def typing(self, connection: str, conversation_id: Any, user_id: Any, started: bool) -> None:
        """
        ``userStartedTyping``/``userStoppedTyping`` to every other participant.

        Typing is frequent and the browser only reads the conversation id from it, so the event
        carries the cached latest message and no unread count rather than a database read.
        """
        actor = self._actor(connection, user_id, check_claim=True)
        conversation = self._conversation_for(conversation_id, actor)
        others = [p.id for p in conversation.participants if p.id != actor.id]
        self._publish(events.typing(conversation, actor, started, others))
