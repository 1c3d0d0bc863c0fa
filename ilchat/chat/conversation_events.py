# -*- test-case-name: tests.chat.test_conversations -*-
"""
The On-Screen Chat's bus events: what it publishes on ``osc:<client name>``.

Every event is plain JSON (``{"type": <one of the names below>, ...}``) addressed by user ids,
so that a bus between processes can carry it and every process delivers it to its own sockets of
those users. An event carries everything its subscribers need (a snapshot of the conversation,
each recipient's unread count): nobody reads the domain's live objects to deliver it. HACKING.rst
("On-Screen Chat events") lists every field; the ILIAS rendering is ``ilchat.ilias.osc``.

Shapes shared by several events:

* a *conversation*: ``{"id", "is_group", "participants": [{"id", "name"}], "latest_message":
  message or None}`` (L{Conversation.snapshot});
* a *message*: the ``osc_messages`` columns ``{"id", "conversation_id", "user_id", "message",
  "timestamp"}`` (milliseconds);
* *recipients*: ``[{"id": user id, "unread": count}]``, the users to tell and, for each, the
  number of messages they have not read in that conversation.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

from ilchat.chat.conversation_model import Conversation, Participant

__all__ = [
    "ACCEPTANCE_CHANGED",
    "CONVERSATIONS_PURGED",
    "CONVERSATION_OPENED",
    "EVENT_TYPES",
    "MESSAGE_POSTED",
    "MESSAGE_WITHHELD",
    "PARTICIPANT_ADDED",
    "PARTICIPANT_REMOVED",
    "TYPING",
    "acceptance_changed",
    "conversation_opened",
    "conversations_purged",
    "message_posted",
    "message_withheld",
    "participant_added",
    "participant_removed",
    "typing",
]

#: A user opened (or created) a conversation; their own tabs learn of it.
CONVERSATION_OPENED = "conversation_opened"
#: Someone was added; in a 1:1 that makes a new group, ``conversation`` is then the group.
PARTICIPANT_ADDED = "participant_added"
#: A participant left a group.
PARTICIPANT_REMOVED = "participant_removed"
#: A message was journaled and goes to every participant who accepts messages.
MESSAGE_POSTED = "message_posted"
#: The sender does not accept messages themselves: nothing was stored, only they learn of it.
MESSAGE_WITHHELD = "message_withheld"
#: A participant started or stopped typing.
TYPING = "typing"
#: ``UserConfigChange``: these users now do or do not accept messages (every process applies it).
ACCEPTANCE_CHANGED = "acceptance_changed"
#: The daily purge deleted these conversations; a process that still uses one writes it back.
CONVERSATIONS_PURGED = "conversations_purged"

EVENT_TYPES = (
    CONVERSATION_OPENED, PARTICIPANT_ADDED, PARTICIPANT_REMOVED, MESSAGE_POSTED, MESSAGE_WITHHELD,
    TYPING, ACCEPTANCE_CHANGED, CONVERSATIONS_PURGED,
)

Event = Dict[str, Any]
Unread = Tuple[int, int]


def _recipients(unread: Iterable[Unread]) -> List[Dict[str, int]]:
    return [{"id": user_id, "unread": count} for user_id, count in unread]


def conversation_opened(conversation: Conversation, user_id: int, unread: int) -> Event:
    """``user_id`` opened ``conversation`` (found or created)."""
    return {
        "type": CONVERSATION_OPENED,
        "conversation": conversation.snapshot(),
        "recipients": _recipients([(user_id, unread)]),
    }


def participant_added(
    conversation: Conversation, source_id: str, user: Participant, actor_id: int, connection: str,
    unread: int,
) -> Event:
    """
    ``actor_id`` added ``user`` to conversation ``source_id``; ``conversation`` now holds them.

    ``connection`` is the asking socket (meaningful only on the ``origin`` process): ILIAS
    answers ``addUser`` there, after the ``conversation`` update to all of the actor's tabs.
    """
    return {
        "type": PARTICIPANT_ADDED,
        "conversation": conversation.snapshot(),
        "source_id": source_id,
        "user": user.as_dict(),
        "actor": actor_id,
        "connection": connection,
        "recipients": _recipients([(actor_id, unread)]),
    }


def participant_removed(
    conversation: Conversation, user: Participant, unread: int, others: Sequence[Unread]
) -> Event:
    """``user`` left ``conversation``; ``others`` are the remaining participants to tell."""
    return {
        "type": PARTICIPANT_REMOVED,
        "conversation": conversation.snapshot(),
        "user": user.as_dict(),
        "unread": unread,
        "recipients": _recipients(others),
    }


def message_posted(
    conversation: Conversation, message: Mapping[str, Any], sender: Participant,
    recipients: Sequence[Unread], ignored: Sequence[int],
) -> Event:
    """
    ``message`` went to ``recipients`` (the participants who accept messages, in conversation
    order); ``ignored`` are the participants who do not (the sender is told who they are).
    """
    return {
        "type": MESSAGE_POSTED,
        "conversation": conversation.snapshot(),
        "message": dict(message),
        "sender": sender.as_dict(),
        "recipients": _recipients(recipients),
        "ignored": list(ignored),
    }


def message_withheld(message: Mapping[str, Any], sender: Participant) -> Event:
    """The sender does not accept messages: ``message`` was neither stored nor delivered."""
    return {"type": MESSAGE_WITHHELD, "message": dict(message), "sender": sender.as_dict()}


def typing(conversation: Conversation, user: Participant, started: bool, to: Sequence[int]) -> Event:
    """``user`` started (or stopped) typing; ``to`` are the other participants."""
    return {
        "type": TYPING,
        "conversation": conversation.snapshot(),
        "user": user.as_dict(),
        "started": started,
        "to": list(to),
    }


def acceptance_changed(changes: Mapping[int, bool]) -> Event:
    """``UserConfigChange``: ``{user id: accepts messages}``."""
    return {
        "type": ACCEPTANCE_CHANGED,
        "changes": [{"id": user_id, "accepts": accepts} for user_id, accepts in changes.items()],
    }


def conversations_purged(conversation_ids: Iterable[str]) -> Event:
    """The purge of the publishing process deleted these conversations (none of its own in use)."""
    return {"type": CONVERSATIONS_PURGED, "ids": list(conversation_ids)}
