# -*- test-case-name: tests.irc.test_history -*-
"""
The history of what only IRC users said: IRC-only channels and private messages between IRC
users, in memory (a bridged room's history is the database's, read by the bridge).

L{LocalHistory} keeps the latest C{per_target} messages of each channel and each pair of nicks
(at most C{max_targets} of them, and at most C{max_bytes} of memory, about, for all: the least
recently used dropped first), for CHATHISTORY. A
private conversation belongs to the two users who held its nicks (L{owner}): a message between
others under the same nicks starts it again, and only its two users read it, so whoever takes a
nick later does not read what its former holder was sent. Besides messages it keeps the
events of IRC-only channels (JOIN, PART, KICK, QUIT, NICK, TOPIC) and TAGMSGs that are not
typing notifications, which CHATHISTORY plays back to clients with ``draft/event-playback``
only (L{event_line}). Nothing
survives a restart and nothing is shared between cluster processes: these messages were never
stored anywhere.
"""

from collections import OrderedDict, deque
from typing import Any, Deque, Dict, Iterable, List, Optional, Tuple

import attr

__all__ = ["Bound", "HistoryLine", "LocalHistory", "dm_key", "dm_owners", "event_line", "kept_tagmsg",
           "owner", "select"]

#: A CHATHISTORY reference: ``("msgid", id)`` or ``("ts", seconds)``; ``("upto", id)`` is the
#: one inclusive bound (AROUND's message itself, as a ``before``).
Bound = Tuple[str, Any]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HistoryLine:
    """
    One stored message as IRC shows it: id, time (seconds), sender mask, text, CTCP, and for
    IRC's own messages the command and the target it was sent to (None: the channel asked for).
    An event (L{is_event}) is played back as its C{command} and C{params}, with its client tags.
    """

    msgid: str
    at: float
    prefix: str
    text: str
    ctcp: Optional[str] = None
    command: str = "PRIVMSG"
    target: Optional[str] = None
    params: Tuple[str, ...] = ()
    client_tags: Tuple[Tuple[str, str], ...] = ()

    @property
    def is_event(self) -> bool:
        """Whether this is an event (draft/event-playback), not a PRIVMSG or NOTICE."""
        return self.command not in ("PRIVMSG", "NOTICE")


#: Client tags of notices that are over once shown: a TAGMSG with only these is not stored.
_EPHEMERAL_TAGS = frozenset({"+typing", "+draft/typing"})


def kept_tagmsg(client_tags: Dict[str, str]) -> bool:
    """Whether a TAGMSG goes into the history: it has client tags, and not only typing ones."""
    return bool(set(client_tags) - _EPHEMERAL_TAGS)


def event_line(message: Any, msgid: str, at: float,
               client_tags: Optional[Dict[str, str]] = None) -> HistoryLine:
    """A JOIN, PART, KICK, QUIT, NICK, TOPIC or TAGMSG as it was shown, for the history."""
    return HistoryLine(msgid, at, message.prefix or "", "", command=message.command,
                       params=tuple(message.params),
                       client_tags=tuple(sorted((client_tags or {}).items())))


def dm_key(one: str, other: str) -> Tuple[str, str]:
    """The key of the private conversation of two (folded) nicks, the same both ways."""
    first, second = sorted((one, other))
    return (first, second)


def owner(user: Any) -> Tuple[Any, Any]:
    """Who a user is, beyond their nick: the ILIAS client and user id (an open-mode id: one connection)."""
    return (getattr(user, "account_client", None), user.user_id)


def dm_owners(one: Any, other: Any) -> Dict[str, Any]:
    """The two users of a private conversation, by folded nick (L{LocalHistory.add})."""
    from ilchat.irc.network import irc_lower  # network imports this module
    return {irc_lower(one.nick): owner(one), irc_lower(other.nick): owner(other)}


def _millis(seconds: float) -> int:
    """The millisecond a server-time tag shows for this time (times compare as shown)."""
    return round(seconds * 1_000_000) // 1000


def _position(lines: List[HistoryLine], msgid: str) -> Optional[int]:
    return next((index for index, line in enumerate(lines) if line.msgid == msgid), None)


def _after(lines: List[HistoryLine], bound: Bound) -> Optional[int]:
    """Index of the first line after C{bound} (None: a msgid not in this history)."""
    kind, value = bound
    if kind == "msgid":
        position = _position(lines, value)
        return None if position is None else position + 1
    return next((index for index, line in enumerate(lines) if _millis(line.at) > _millis(value)),
                len(lines))


def _before(lines: List[HistoryLine], bound: Bound) -> Optional[int]:
    """
    Index past the last line before C{bound}, or up to it for ``("upto", msgid)`` (None: a
    msgid not in this history).
    """
    kind, value = bound
    if kind in ("msgid", "upto"):
        position = _position(lines, value)
        return None if position is None else position + (kind == "upto")
    return next((index for index, line in enumerate(lines) if _millis(line.at) >= _millis(value)),
                len(lines))


def select(lines: List[HistoryLine], limit: int, after: Optional[Bound], before: Optional[Bound],
           latest: bool, events: bool = True) -> List[HistoryLine]:
    """
    At most C{limit} lines strictly between the bounds, the newest with C{latest}, oldest
    first; without C{events} only the messages (the bounds may still name an event).
    """
    start = 0 if after is None else _after(lines, after)
    end = len(lines) if before is None else _before(lines, before)
    if start is None or end is None or start >= end or limit <= 0:
        return []
    chosen = lines[start:end] if events else [line for line in lines[start:end] if not line.is_event]
    return chosen[-limit:] if latest else chosen[:limit]


#: About the most memory all IRC-only histories of a process take together.
MAX_BYTES = 64 * 1024 * 1024


def _weight(line: HistoryLine) -> int:
    """About what a stored line takes in memory: its texts and the objects around them."""
    extra = sum(len(param) for param in line.params) + sum(len(k) + len(v) for k, v in line.client_tags)
    return len(line.text) + len(line.prefix) + len(line.msgid) + extra + 300


class LocalHistory:
    """The in-memory history of IRC-only channels and private conversations, by key."""

    def __init__(self, per_target: int, max_targets: int = 10000,
                 max_bytes: int = MAX_BYTES) -> None:
        self.per_target = per_target
        self.max_targets = max_targets
        self.max_bytes = max_bytes
        self._lines: "OrderedDict[Any, Deque[HistoryLine]]" = OrderedDict()
        #: What the stored lines weigh (L{_weight}), all targets together.
        self.size = 0
        #: A private conversation's key -> {folded nick: L{owner}} of its two users.
        self._owners: Dict[Any, Dict[str, Any]] = {}

    def add(self, key: Any, line: HistoryLine, owners: Optional[Dict[str, Any]] = None) -> None:
        """Store C{line}; C{owners} (folded nick: L{owner}) for a private conversation's."""
        lines = self._lines.get(key)
        if lines is not None and owners is not None and self._owners.get(key) != owners:
            self._drop(key)  # other users under these nicks: a new conversation
            lines = None
        if lines is None:
            lines = self._lines[key] = deque(maxlen=self.per_target)
        if owners is not None:
            self._owners[key] = owners
        self._lines.move_to_end(key)
        if lines.maxlen is not None and len(lines) == lines.maxlen and lines:
            self.size -= _weight(lines[0])  # the oldest goes as the line comes
        lines.append(line)
        self.size += _weight(line)
        while len(self._lines) > 1 and (len(self._lines) > self.max_targets
                                        or self.size > self.max_bytes):
            self._drop(next(iter(self._lines)))

    def _drop(self, key: Any) -> None:
        """Forget one target's lines."""
        self.size -= sum(_weight(line) for line in self._lines.pop(key, ()))
        self._owners.pop(key, None)

    def _readable(self, key: Any, reader: Optional[Tuple[str, Any]]) -> bool:
        return reader is None or self._owners.get(key, {}).get(reader[0]) == reader[1]

    def page(self, key: Any, limit: int, after: Optional[Bound] = None,
             before: Optional[Bound] = None, latest: bool = True,
             reader: Optional[Tuple[str, Any]] = None, events: bool = True) -> List[HistoryLine]:
        """
        The lines of C{key} (with its events, or not); of a private conversation only for
        C{reader} (nick, owner) in it.
        """
        if not self._readable(key, reader):
            return []
        return select(list(self._lines.get(key, ())), limit, after, before, latest, events)

    def latest(self, keys: Iterable[Any]) -> List[Tuple[Any, float]]:
        """``(key, time of its newest line)`` for those of C{keys} with a history."""
        return [(key, self._lines[key][-1].at) for key in keys if self._lines.get(key)]

    def keys_with(self, name: str, who: Any = None) -> List[Tuple[str, str]]:
        """The private conversations that name takes part in (as the user C{who}, if given)."""
        return [key for key in self._lines if isinstance(key, tuple) and name in key
                and (who is None or self._readable(key, (name, who)))]
