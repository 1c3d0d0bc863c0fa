# -*- test-case-name: tests.chat.test_conversation_replication -*-
"""
Another process's On-Screen Chat events, applied to this process's registry.

With several processes (``ilchat.redisbus``) every process keeps the whole On-Screen Chat in
memory: conversations, their participants, each one's latest message, who accepts messages. A
process changes its own state when it acts and then publishes the event; every other process
applies that event here, without publishing anything in return. Connections stay each process's
own (a participant is online where their sockets are).

What each event does to a process that did not publish it:

* every event with a ``conversation`` snapshot adds that conversation when it is unknown here
  (with the snapshot's participants; their names fill in only names unknown here);
* ``participant_added`` / ``participant_removed`` add or remove that one user in a conversation
  known here (a change, not the whole list: two processes changing one group at once end with
  both changes, whatever order their events arrive in);
* ``message_posted`` makes the message the conversation's latest (the newer one wins) and, like
  every event but ``typing``, counts as use for the daily purge;
* ``acceptance_changed`` applies the ``UserConfigChange``;
* ``conversations_purged`` (L{purged_ids}) is the service's: a conversation still in use here is
  written back, any other one forgotten.

When a snapshot names other participants than the conversation has here after the event (an
event one process missed while the bus was degraded, or two changes crossing), the service reads
the stored list, which holds every change whose event was published (L{snapshot_ids}).

Pure and synchronous: a malformed event raises ``ValueError`` before anything changed.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

from ilchat.chat import conversation_events as events
from ilchat.chat.conversation_model import Conversation, Refused, parse_user_id, stored_message
from ilchat.chat.conversation_registry import ConversationRegistry

__all__ = ["apply_remote_event", "merge_latest", "purged_ids", "snapshot_ids"]


def apply_remote_event(registry: ConversationRegistry, event: Mapping[str, Any], now: float) -> Optional[Conversation]:
    """
    Apply one event another process published; returns the conversation it concerned, if any.

    Raises:
        ValueError: the event does not have its documented shape (nothing was changed).
    """
    kind = event.get("type")
    if kind == events.ACCEPTANCE_CHANGED:
        registry.update_acceptance(_acceptance(event.get("changes")))
        return None
    if kind not in _WITH_CONVERSATION:
        return None
    conversation_id, is_group, participants, latest = _snapshot(event.get("conversation"))
    user = _user(event.get("user")) if kind in (events.PARTICIPANT_ADDED, events.PARTICIPANT_REMOVED) else None
    message = _message(event.get("message")) if kind == events.MESSAGE_POSTED else None

    conversation, new = registry.adopt(conversation_id, is_group, participants)
    if not new and user is not None:
        if kind == events.PARTICIPANT_ADDED:
            registry.add_participant(conversation, registry.participant(*user))
        else:
            registry.remove_participant(conversation, user[0])
    if kind != events.TYPING:
        # Typing carries whatever latest message its process had cached; the others read it.
        merge_latest(conversation, message or latest)
        conversation.touched_at = max(conversation.touched_at, now)
    return conversation


def merge_latest(conversation: Conversation, message: Optional[Mapping[str, Any]]) -> None:
    """
    Make C{message} the conversation's latest unless the one known here is newer. Two messages
    sent at once on two processes may share a millisecond: the higher id wins, everywhere.
    """
    if message is None:
        return
    current = conversation.latest_message
    if current is None or (message["timestamp"], message["id"]) >= (current["timestamp"], current["id"]):
        conversation.latest_message = dict(message)
        conversation.latest_loaded = True


def snapshot_ids(event: Mapping[str, Any]) -> frozenset:
    """The participant ids of an event's conversation snapshot (of an event already applied)."""
    return frozenset(_id(p.get("id")) for p in event["conversation"]["participants"])


def purged_ids(event: Mapping[str, Any]) -> List[str]:
    """The conversation ids of a ``conversations_purged`` event (ValueError if it has none)."""
    ids = event.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ValueError(f"bad conversation ids {ids!r}")
    return ids


_WITH_CONVERSATION = frozenset({
    events.CONVERSATION_OPENED, events.PARTICIPANT_ADDED, events.PARTICIPANT_REMOVED,
    events.MESSAGE_POSTED, events.TYPING,
})


def _acceptance(changes: Any) -> dict:
    if not isinstance(changes, list):
        raise ValueError("acceptance_changed without a list of changes")
    result = {}
    for change in changes:
        if not isinstance(change, dict) or not isinstance(change.get("accepts"), bool):
            raise ValueError(f"bad acceptance change {change!r}")
        result[_id(change.get("id"))] = change["accepts"]
    return result


def _snapshot(value: Any) -> Tuple[str, bool, List[Tuple[int, str]], Optional[dict]]:
    if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not isinstance(value.get("is_group"), bool):
        raise ValueError(f"bad conversation snapshot {value!r}")
    items = value.get("participants")
    if not isinstance(items, list):
        raise ValueError(f"conversation {value['id']} without a participant list")
    latest = value.get("latest_message")
    return value["id"], value["is_group"], [_user(item) for item in items], None if latest is None else _message(latest)


def _user(value: Any) -> Tuple[int, str]:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"bad participant {value!r}")
    return _id(value.get("id")), value["name"]


def _message(value: Any) -> dict:
    try:
        message = stored_message(value)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"bad message {value!r}") from None
    if not isinstance(message["id"], str) or not isinstance(message["message"], str):
        raise ValueError(f"bad message {value!r}")
    return message


def _id(value: Any) -> int:
    try:
        return parse_user_id(value)
    except Refused:
        raise ValueError(f"bad user id {value!r}") from None
