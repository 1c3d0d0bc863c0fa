# -*- test-case-name: tests.irc.test_history -*-
"""
Chat history on IRC: IRCv3 ``draft/chathistory`` and the lines played back on JOIN.

The history is the one the web sees (``chatroom_history``, through the bridge's channel link and
the store); a plain IRC channel keeps none and answers with an empty batch. A message's
``msgid`` is its row's ``hist_id``, so ``msgid=`` references are row ids and ``timestamp=``
references the rows' times (seconds). Replies go in a ``chathistory`` batch (with the ``batch``
cap), each line with ``time`` (server-time) and ``msgid`` (message-tags) of the stored message.

A client without ``draft/chathistory`` gets the latest ``irc`` → ``history_on_join`` lines of a
bridged room when it joins, the same way.

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}.
"""

from datetime import datetime, timezone
from typing import Any, List, Optional, Sequence, Tuple

import attr
from twisted.logger import Logger

from ilchat.irc.batches import batched
from ilchat.irc.connection import server_time
from ilchat.irc.message import Message, split_text

__all__ = ["HistoryCommands", "HistoryLine", "isupport_tokens", "parse_reference"]

CHATHISTORY = "draft/chathistory"

Bound = Tuple[str, float]


@attr.s(frozen=True, slots=True, auto_attribs=True)
class HistoryLine:
    """One stored message as IRC shows it: id, time (seconds), sender mask, text, CTCP."""

    msgid: str
    at: float
    prefix: str
    text: str
    ctcp: Optional[str] = None


def isupport_tokens(config: Any) -> List[str]:
    """The 005 tokens of the history: the most messages one CHATHISTORY returns, the references."""
    return [f"CHATHISTORY={config.chathistory_limit}", "MSGREFTYPES=msgid,timestamp"]


def parse_timestamp(text: str) -> Optional[float]:
    """Seconds of an IRCv3 ``YYYY-MM-DDThh:mm:ss.sssZ`` time, or None."""
    try:
        stamp = datetime.fromisoformat(text[:-1] if text.endswith("Z") else text)
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def parse_reference(text: str) -> Optional[Bound]:
    """
    ``msgid=<id>`` as ``("id", hist_id)`` and ``timestamp=<time>`` as ``("ts", seconds)``;
    None for anything else. A msgid that is no row id (an IRC-only message's) is ``("id", -1)``,
    which matches nothing.
    """
    kind, _, value = text.partition("=")
    if kind == "msgid" and value:
        return ("id", int(value)) if value.isdigit() else ("id", -1)
    if kind == "timestamp":
        seconds = parse_timestamp(value)
        return None if seconds is None else ("ts", seconds)
    return None


def _earlier(first: Bound, second: Bound) -> bool:
    """Whether C{first} comes before C{second} (references of two kinds: as given)."""
    return first[0] != second[0] or first[1] <= second[1]


class HistoryCommands:
    """CHATHISTORY and the history played back on JOIN."""

    _log = Logger()

    def _history_fail(self, code: str, *context: str) -> None:
        self.send_message(Message("FAIL", ("CHATHISTORY", code, *context, _FAIL_TEXT[code]),
                                  prefix=self.config.server_name))

    def irc_CHATHISTORY(self, message: Message) -> Any:
        params = message.params
        sub = params[0].upper()
        if sub == "TARGETS":
            return self._history_targets(params)
        handler = _SUBCOMMANDS.get(sub)
        if handler is None:
            self._history_fail("INVALID_PARAMS", params[0])
            return None
        needed = 5 if sub == "BETWEEN" else 4
        if len(params) < needed:
            self._history_fail("INVALID_PARAMS", sub)
            return None
        target = params[1]
        refs = []
        for text in params[2:needed - 1]:
            ref = None if (text == "*" and sub == "LATEST") else parse_reference(text)
            if ref is None and not (text == "*" and sub == "LATEST"):
                self._history_fail("INVALID_PARAMS", sub, text)
                return None
            refs.append(ref)
        limit = params[needed - 1]
        if not limit.isdigit() or int(limit) < 1:
            self._history_fail("INVALID_PARAMS", sub, limit)
            return None
        count = min(int(limit), self.config.chathistory_limit)
        channel = None
        if target.startswith("#"):
            channel = self.network.find_channel(target)
            if channel is None or self not in channel.members:
                self._history_fail("INVALID_TARGET", sub, target)
                return None
        else:
            user = self.network.find_user(target)
            if user is None:
                self._history_fail("INVALID_TARGET", sub, target)
                return None
            target = user.nick
        return self._history_reply(channel, target, handler(refs, count))

    async def _history_reply(self, channel: Any, target: str, queries: Sequence[Tuple]) -> None:
        """Run the queries (parts of one answer, in order) and send their lines in one batch."""
        lines: List[HistoryLine] = []
        if channel is not None:
            try:
                for limit, after, before, latest in queries:
                    if limit > 0:
                        lines.extend(await channel.link.history(self, limit, after, before, latest))
            except Exception:
                self._log.failure("CHATHISTORY of {channel} for {nick}", channel=channel.name, nick=self.nick)
                self._history_fail("MESSAGE_ERROR", "CHATHISTORY", target)
                return
        self.send_history(target, lines, "chathistory")

    def send_history(self, target: str, lines: Sequence[HistoryLine], kind: str) -> None:
        """Stored messages as PRIVMSG lines with their time and id, in a batch where caps allow."""
        messages = []
        for line in lines:
            start, end = (f"\x01{line.ctcp} ", "\x01") if line.ctcp else ("", "")
            overhead = len(f":{line.prefix} PRIVMSG {target} :{start}{end}".encode("utf-8")) + 2
            for index, piece in enumerate(split_text(line.text, 512 - overhead)):
                tags = self._tags_for(None, line.msgid if index == 0 else None, line.at)
                messages.append(Message("PRIVMSG", (target, start + piece + end), prefix=line.prefix,
                                        tags=tags))
        if "batch" in self.caps:
            messages = batched(kind, (target,), messages, self.config.server_name)
        for outgoing in messages:
            self.send_message(outgoing)

    async def _history_targets(self, params: Sequence[str]) -> None:
        """``CHATHISTORY TARGETS <time> <time> <limit>``: the joined rooms with messages between."""
        if len(params) < 4:
            self._history_fail("INVALID_PARAMS", "TARGETS")
            return
        first, second = (parse_reference(text) for text in params[1:3])
        if first is None or second is None or first[0] != "ts" or second[0] != "ts" \
                or not params[3].isdigit():
            self._history_fail("INVALID_PARAMS", "TARGETS")
            return
        low, high = sorted((first[1], second[1]))
        found = []
        for channel in sorted(self.channels, key=lambda c: c.name):
            try:
                latest = await channel.link.latest_message_time()
            except Exception:
                self._log.failure("CHATHISTORY TARGETS of {channel}", channel=channel.name)
                continue
            if latest is not None and low <= latest <= high:
                found.append((latest, channel.name))
        found.sort()
        server = self.config.server_name
        messages = [Message("CHATHISTORY", ("TARGETS", name, server_time(latest)), prefix=server)
                    for latest, name in found[: min(int(params[3]), self.config.chathistory_limit)]]
        if "batch" in self.caps:
            messages = batched("draft/chathistory-targets", (), messages, server)
        for outgoing in messages:
            self.send_message(outgoing)

    async def play_back(self, channel: Any) -> None:
        """The latest lines of a bridged room for a newcomer whose client does not fetch them."""
        count = self.config.history_on_join
        if not count or CHATHISTORY in self.caps or not channel.bridged:
            return
        # A message that arrives live while the history is read is not played back again.
        seen = self.seen_msgids = set()
        try:
            lines = await channel.link.history(self, count)
        except Exception:
            self._log.failure("History of {channel} for {nick}", channel=channel.name, nick=self.nick)
            return
        finally:
            self.seen_msgids = None
        lines = [line for line in lines if line.msgid not in seen]
        if lines and not self._closing:
            self.send_history(channel.name, lines, "chathistory")


def _latest(refs: List[Optional[Bound]], limit: int) -> List[Tuple]:
    return [(limit, refs[0], None, True)]


def _before(refs: List[Optional[Bound]], limit: int) -> List[Tuple]:
    return [(limit, None, refs[0], True)]


def _after(refs: List[Optional[Bound]], limit: int) -> List[Tuple]:
    return [(limit, refs[0], None, False)]


def _around(refs: List[Optional[Bound]], limit: int) -> List[Tuple]:
    """Half before the reference (the message itself included for a msgid), half after."""
    kind, value = refs[0]
    before = (kind, value + 1) if kind == "id" else (kind, value)
    earlier = limit - limit // 2
    return [(earlier, None, before, True), (limit // 2, (kind, value), None, False)]


def _between(refs: List[Optional[Bound]], limit: int) -> List[Tuple]:
    """From the first reference towards the second, whichever comes first in time."""
    first, second = refs
    if _earlier(first, second):
        return [(limit, first, second, False)]
    return [(limit, second, first, True)]


_SUBCOMMANDS = {"LATEST": _latest, "BEFORE": _before, "AFTER": _after, "AROUND": _around,
                "BETWEEN": _between}

_FAIL_TEXT = {
    "INVALID_PARAMS": "Invalid parameters",
    "INVALID_TARGET": "Messages could not be retrieved",
    "MESSAGE_ERROR": "Messages could not be retrieved",
}
