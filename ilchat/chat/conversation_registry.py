# -*- test-case-name: tests.chat.test_conversations -*-
"""
The On-Screen Chat's in-memory state: participants by id, their connections and acceptance, and
conversations in creation order, with the exact-set lookup ``conversation(participants)`` needs.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from twisted.logger import Logger

from ilchat.chat.conversation_model import Conversation, Participant, Refused, parse_user_id
from ilchat.jsonutil import JSONError, loads

__all__ = ["ConversationRegistry"]


class ConversationRegistry:
    """
    The in-memory state: participants by id and conversations in creation order.

    Pure and synchronous so that the matching, presence and acceptance rules can be tested
    without a database or a socket.
    """

    _log = Logger()

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

    def load_row(self, row: Mapping[str, Any]) -> Conversation:
        """Add an ``osc_conversation`` row (participants as ILIAS's JSON text) read at start."""
        conversation = Conversation(str(row["id"]), bool(row.get("is_group")))
        self.add(conversation)
        self.set_participants(conversation, self.row_participants(row))
        return conversation

    def row_participants(self, row: Mapping[str, Any]) -> List[Tuple[int, str]]:
        """The ``(id, name)`` pairs of an ``osc_conversation`` row; what cannot be read is skipped."""
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
        pairs: List[Tuple[int, str]] = []
        for item in participants if isinstance(participants, list) else ():
            try:
                user_id = parse_user_id(item.get("id") if isinstance(item, dict) else None)
            except Refused:
                continue  # ILIAS's JSON only lists positive ids; skip anything else
            name = item.get("name") if isinstance(item.get("name"), str) else ""
            pairs.append((user_id, name))
        return pairs

    def set_participants(self, conversation: Conversation, participants: Sequence[Tuple[int, str]]) -> None:
        """Make these (in this order, once each) the participants of a conversation held here."""
        before = conversation.participant_ids()
        conversation.participants = []
        for user_id, name in participants:
            participant = self.participant(user_id, name)
            if not conversation.has(user_id):
                conversation.participants.append(participant)
                self._index(user_id, conversation.id)
        for user_id in before - conversation.participant_ids():
            self._unindex(user_id, conversation.id)

    def adopt(self, conversation_id: str, is_group: bool, participants: Sequence[Tuple[int, str]]) -> Tuple[Conversation, bool]:
        """
        The conversation another process described (an event's snapshot, or its stored row):
        added with these participants, in this order, when it is unknown here. A known one keeps
        its participant list: changes to it arrive as their own events. Names only fill in those
        unknown here, as L{participant} does (every process reads the same ``usr_data``).

        Returns:
            the conversation and whether it was new here.
        """
        for user_id, name in participants:
            self.participant(user_id, name)
        conversation = self.conversations.get(conversation_id)
        if conversation is not None:
            return conversation, False
        conversation = Conversation(conversation_id, is_group)
        for user_id, _ in participants:
            if not conversation.has(user_id):
                conversation.participants.append(self.participants[user_id])
        self.add(conversation)
        return conversation, True

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
        # Only the conversations of one of the wanted users can match. Among twins of one kind
        # (two processes that created the same 1:1 at once, or groups made from one 1:1 twice)
        # the lowest id wins: every process then picks the same one, whatever order it learnt
        # them in (and a restart loads osc_conversation in primary-key order anyway).
        some_user = next(iter(wanted))
        matches = [c for c in self.of_user(some_user) if c.participant_ids() == wanted]
        if not matches:
            return None
        return min(matches, key=lambda c: (c.is_group, c.id))

    def in_use(self, since: float) -> Set[str]:
        """Conversations touched since C{since} (seconds) or with a participant online."""
        return {
            c.id
            for c in self.conversations.values()
            if c.touched_at >= since or any(p.online for p in c.participants)
        }

    def _index(self, user_id: int, conversation_id: str) -> None:
        ids = self._by_user.setdefault(user_id, [])
        if conversation_id not in ids:
            ids.append(conversation_id)

    def _unindex(self, user_id: int, conversation_id: str) -> None:
        ids = self._by_user.get(user_id)
        if ids and conversation_id in ids:
            ids.remove(conversation_id)
