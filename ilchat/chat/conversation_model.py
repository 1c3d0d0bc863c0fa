# -*- test-case-name: tests.chat.test_conversations -*-
"""
The On-Screen Chat's model: participants, conversations, stored messages, and the checks on what
a browser sends for them (ids, names, participant lists, timestamps).

Plain data and pure functions: nothing here does I/O or knows a transport. What leaves the
process is built from these objects by L{ilchat.chat.conversation_events}; the ILIAS shapes
(``conversation.json()``, camelCase keys) are rendered by the adapter, ``ilchat.ilias.osc``.
"""

from __future__ import annotations

import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

import attr
import attrs
from twisted.internet.defer import DeferredLock

from ilchat.jsonutil import JSONError, dumps, has_lone_surrogate, loads

__all__ = [
    "Conversation",
    "ConversationView",
    "HistoryPage",
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_PARTICIPANTS",
    "MAX_PARTICIPANTS_JSON",
    "MAX_SAFE_INTEGER",
    "OscMessageRow",
    "Participant",
    "Refused",
    "changed_participants",
    "check_fits",
    "check_text",
    "new_message",
    "parse_name",
    "parse_participants",
    "parse_timestamp",
    "parse_user_id",
    "stored_message",
]

#: Longest message text accepted (UTF-8 bytes). ILIAS's column is a CLOB; the limit keeps a single
#: socket from filling the database or everyone's browser.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most participants accepted in one ``conversation`` request.
MAX_PARTICIPANTS = 100
#: Longest participant name accepted from a browser.
MAX_NAME_LENGTH = 255
#: ``osc_conversation.participants`` is ILIAS's ``text 4000``: a longer list cannot be stored whole.
MAX_PARTICIPANTS_JSON = 4000
#: JavaScript's largest safe integer: ids and timestamps above it cannot come from a browser.
MAX_SAFE_INTEGER = 2**53 - 1


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


def parse_name(value: Any) -> str:
    """A participant name from a browser (None is no name)."""
    if value is None:
        return ""
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise Refused("name must be a string")
    value = str(value)
    if len(value) > MAX_NAME_LENGTH:
        raise Refused(f"name longer than {MAX_NAME_LENGTH} characters")
    return value


def parse_timestamp(value: Any, what: str) -> int:
    """A millisecond timestamp from a browser (read marker, history page bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Refused(f"{what} must be a number of milliseconds")
    if value != value or not 0 <= value <= MAX_SAFE_INTEGER:  # NaN or out of range
        raise Refused(f"{what} out of range")
    return int(value)


def parse_participants(value: Any) -> List[Dict[str, Any]]:
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
        name = parse_name(item.get("name"))
        if user_id not in seen:
            seen.add(user_id)
            result.append({"id": user_id, "name": name})
    return result


def check_fits(participants: Sequence[Any]) -> None:
    """
    Refuse a participant list that ``osc_conversation.participants`` could not hold.

    MySQL would reject (or, outside strict mode, cut) a longer JSON text, leaving a conversation
    that cannot be stored or that comes back broken after a restart.
    """
    items = [p.as_dict() if isinstance(p, Participant) else {"id": p["id"], "name": p["name"]} for p in participants]
    text = dumps(items)
    if len(text) > MAX_PARTICIPANTS_JSON:
        raise Refused(f"the participant list is too long to store ({MAX_PARTICIPANTS_JSON} characters at most)")


def changed_participants(stored: str, fallback: str, add: Optional[Mapping[str, Any]] = None,
                         remove: Optional[int] = None) -> str:
    """
    ``osc_conversation.participants`` text C{stored} with one participant added (C{add},
    ``{id, name}``, at the end unless present) or removed (the id C{remove}), as JSON text.

    What another process wrote meanwhile stays; a list that cannot be read is replaced by
    C{fallback}, this process's own list.
    """
    try:
        items = loads(stored)
    except JSONError:
        return fallback
    if not isinstance(items, list):
        return fallback
    kept = [item for item in items if not (isinstance(item, dict) and item.get("id") == remove and remove is not None)]
    if add is not None and not any(isinstance(item, dict) and item.get("id") == add["id"] for item in kept):
        kept.append({"id": add["id"], "name": add["name"]})
    return dumps(kept)


def check_text(text: Any) -> None:
    """Refuse a message text that could not be stored or shown (type, size, lone surrogates)."""
    if not isinstance(text, str):
        raise Refused("message must be a string")
    if not text:
        raise Refused("message is empty")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise Refused(f"message longer than {MAX_MESSAGE_BYTES} bytes")
    if has_lone_surrogate(text):
        # Neither osc_messages nor any browser could take it (strict JSON refuses it first).
        raise Refused("message holds a lone surrogate")


@attrs.frozen(slots=True)
class OscMessageRow:
    """One ``osc_messages`` row waiting to be written (``key``: its number in the journal)."""

    id: str
    conversation_id: str
    user_id: int
    message: str
    timestamp: int
    key: int = 0


def stored_message(row: Mapping[str, Any]) -> Dict[str, Any]:
    """
    A message as the domain passes it on: the ``osc_messages`` columns ``{id, conversation_id,
    user_id, message, timestamp}`` with int ids and timestamps, whatever the driver returned.
    """
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "user_id": int(row["user_id"]),
        "message": row["message"],
        "timestamp": int(row["timestamp"]),
    }


def new_message(conversation: "Conversation", sender: "Participant", text: str, timestamp: int) -> Dict[str, Any]:
    """A new message with a fresh id, in L{stored_message}'s shape."""
    return {
        "id": str(uuid.uuid4()),
        "conversation_id": conversation.id,
        "user_id": sender.id,
        "message": text,
        "timestamp": timestamp,
    }


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

    def as_dict(self) -> Dict[str, Any]:
        """``{id, name}``: what events carry and ``osc_conversation.participants`` stores."""
        return {"id": self.id, "name": self.name}

    def __repr__(self) -> str:
        return f"<Participant {self.id} {self.name!r} online={self.online}>"


@attr.s(slots=True, eq=False, repr=False)
class Conversation:
    """
    A 1:1 or group conversation.

    ``latest_message`` caches the newest stored message (L{stored_message}) once it has been
    read; it is the same for every participant. Unread counts are not kept here: they belong to
    a participant and are read from ``osc_activity`` for whoever receives the conversation.
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

    def participants_list(self) -> List[Dict[str, Any]]:
        return [p.as_dict() for p in self.participants]

    def snapshot(self) -> Dict[str, Any]:
        """
        The conversation as plain values, for an event or an answer: ``{id, is_group,
        participants: [{id, name}], latest_message: message or None}`` (a copy, safe to keep).
        """
        latest = self.latest_message
        return {
            "id": self.id,
            "is_group": self.is_group,
            "participants": self.participants_list(),
            "latest_message": dict(latest) if latest is not None else None,
        }

    def __repr__(self) -> str:
        kind = "group" if self.is_group else "1:1"
        return f"<Conversation {self.id} {kind} {sorted(self.participant_ids())}>"


@attrs.frozen
class ConversationView:
    """A conversation as one participant sees it: its snapshot and their unread count."""

    conversation: Dict[str, Any]
    unread: int


@attrs.frozen
class HistoryPage:
    """
    One ``history`` answer: up to a page of stored messages (newest first, or oldest
    first when C{reverse}), and C{oldest}, the bound for the next page (None: no messages).
    """

    view: ConversationView
    messages: List[Dict[str, Any]]
    reverse: bool
    oldest: Optional[int]
