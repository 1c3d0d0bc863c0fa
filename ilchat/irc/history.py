# -*- test-case-name: tests.irc.test_history -*-
"""
Chat history on IRC: IRCv3 ``draft/chathistory`` and the lines played back on JOIN.

A chat room's history is the one the web sees (``chatroom_history``, through the bridge's channel
link and the store): a message's ``msgid`` is its row's ``hist_id`` and ``timestamp=``
references compare with the rows' times (seconds). IRC-only channels and private messages
between IRC users have the network's in-memory L{ilchat.irc.history_store.LocalHistory}.
Replies go in a ``chathistory`` batch (with the ``batch`` cap), each line with ``time``
(server-time) and ``msgid`` (message-tags) of the stored message. Bounds are exclusive
(``upto`` is the one inclusive kind, for AROUND's own message).

With ``draft/event-playback`` a client also gets what the in-memory history keeps besides
messages (JOIN, PART, KICK, QUIT, NICK, TOPIC, and TAGMSGs with message-tags; see
L{ilchat.irc.history_store}); without it, only PRIVMSG and NOTICE lines, and the limit counts
those alone.

A client without ``draft/chathistory`` gets the latest ``irc`` → ``history_on_join`` lines of a
bridged room when it joins, the same way.

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}.
"""

from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, List, Optional, Sequence

from twisted.logger import Logger

from ilchat.irc.batches import batched
from ilchat.irc.connection import server_time
from ilchat.irc.history_store import Bound, HistoryLine, dm_key, owner
from ilchat.irc.message import Message, decimal_number, echoed, split_text
from ilchat.irc.network import irc_lower

__all__ = ["HistoryCommands", "HistoryLine", "isupport_tokens", "parse_reference", "parse_timestamp"]

CHATHISTORY = "draft/chathistory"
#: IRCv3 draft/event-playback: the events of IRC-only channels and TAGMSGs in CHATHISTORY.
EVENT_PLAYBACK = "draft/event-playback"

#: ``fetch(limit, after, before, latest)``: the lines of one target between two bounds.
Fetch = Callable[[int, Optional[Bound], Optional[Bound], bool], Awaitable[List[HistoryLine]]]


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
    """``msgid=<id>`` as ``("msgid", id)``, ``timestamp=<time>`` as ``("ts", seconds)``; else None."""
    kind, _, value = text.partition("=")
    if kind == "msgid" and value:
        return ("msgid", value)
    if kind == "timestamp":
        seconds = parse_timestamp(value)
        return None if seconds is None else ("ts", seconds)
    return None


class HistoryCommands:
    """CHATHISTORY and the history played back on JOIN."""

    _log = Logger()

    def _history_fail(self, code: str, *context: str) -> None:
        self.send_message(Message("FAIL", echoed(("CHATHISTORY", code, *context, _FAIL_TEXT[code])),
                                  prefix=self.config.server_name))

    def irc_CHATHISTORY(self, message: Message) -> Any:
        params = message.params
        sub = params[0].upper()
        if sub == "TARGETS":
            return self._history_targets(params)
        if sub not in _SUBCOMMANDS:
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
        if not decimal_number(limit) or int(limit) < 1:
            self._history_fail("INVALID_PARAMS", sub, limit)
            return None
        fetch = self._history_of(sub, target)
        if fetch is None:
            return None
        return self._history_reply(fetch, target, sub, refs, min(int(limit), self.config.chathistory_limit))

    def _history_of(self, sub: str, target: str) -> Optional[Fetch]:
        """Where the history of C{target} comes from (None: INVALID_TARGET was sent)."""
        if target.startswith("#"):
            channel = self.network.find_channel(target)
            if channel is None or self not in channel.members:
                self._history_fail("INVALID_TARGET", sub, target)
                return None
            if channel.bridged:
                return lambda limit, after, before, latest: channel.link.history(
                    self, limit, after, before, latest)
            key: Any = irc_lower(channel.name)
            reader = None
        else:
            key = dm_key(irc_lower(self.nick), irc_lower(target))
            reader = (irc_lower(self.nick), owner(self))
        history = self.network.history
        events = EVENT_PLAYBACK in self.caps

        async def local(limit: int, after: Optional[Bound], before: Optional[Bound],
                        latest: bool) -> List[HistoryLine]:
            return history.page(key, limit, after, before, latest, reader, events)

        return local

    async def _history_reply(self, fetch: Fetch, target: str, sub: str,
                             refs: List[Optional[Bound]], limit: int) -> None:
        """The lines a subcommand asks for, in one batch."""
        try:
            lines = await _SUBCOMMANDS[sub](fetch, refs, limit)
        except Exception:
            self._log.failure("CHATHISTORY of {target} for {nick}", target=target, nick=self.nick)
            self._history_fail("MESSAGE_ERROR", sub, target)
            return
        self.send_history(target, lines, "chathistory")

    def send_history(self, target: str, lines: Sequence[HistoryLine], kind: str) -> None:
        """Stored messages as PRIVMSG lines with their time and id, in a batch where caps allow."""
        messages = []
        for line in lines:
            if line.is_event:
                if line.command == "TAGMSG" and "message-tags" not in self.caps:
                    continue
                tags = self._tags_for(dict(line.client_tags), line.msgid, line.at)
                messages.append(Message(line.command, line.params, prefix=line.prefix, tags=tags))
                continue
            start, end = (f"\x01{line.ctcp} ", "\x01") if line.ctcp else ("", "")
            to = line.target or target
            overhead = len(f":{line.prefix} {line.command} {to} :{start}{end}".encode("utf-8")) + 2
            for index, piece in enumerate(split_text(line.text, 512 - overhead)):
                tags = self._tags_for(None, line.msgid if index == 0 else None, line.at)
                messages.append(Message(line.command, (to, start + piece + end), prefix=line.prefix,
                                        tags=tags))
        if "batch" in self.caps:
            messages = batched(kind, (target,), messages, self.config.server_name)
        for outgoing in messages:
            self.send_message(outgoing)

    async def _history_targets(self, params: Sequence[str]) -> None:
        """``CHATHISTORY TARGETS <time> <time> <limit>``: joined channels and private talks."""
        if len(params) < 4:
            self._history_fail("INVALID_PARAMS", "TARGETS")
            return
        first, second = (parse_reference(text) for text in params[1:3])
        if first is None or second is None or first[0] != "ts" or second[0] != "ts" \
                or not decimal_number(params[3]):
            self._history_fail("INVALID_PARAMS", "TARGETS")
            return
        low, high = sorted((first[1], second[1]))
        me = irc_lower(self.nick)
        history = self.network.history
        found = [(at, a if b == me else b) for (a, b), at in history.latest(history.keys_with(me, owner(self)))]
        for channel in sorted(self.channels, key=lambda c: c.name):
            if not channel.bridged:
                found.extend((at, channel.name) for _, at in history.latest([irc_lower(channel.name)]))
                continue
            try:
                latest = await channel.link.latest_message_time()
            except Exception:
                self._log.failure("CHATHISTORY TARGETS of {channel}", channel=channel.name)
                continue
            if latest is not None:
                found.append((latest, channel.name))
        found = sorted(item for item in found if low <= item[0] <= high)
        server = self.config.server_name
        messages = [Message("CHATHISTORY", ("TARGETS", name, server_time(at)), prefix=server)
                    for at, name in found[: min(int(params[3]), self.config.chathistory_limit)]]
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


async def _latest(fetch: Fetch, refs: List[Optional[Bound]], limit: int) -> List[HistoryLine]:
    return await fetch(limit, refs[0], None, True)


async def _before(fetch: Fetch, refs: List[Optional[Bound]], limit: int) -> List[HistoryLine]:
    return await fetch(limit, None, refs[0], True)


async def _after(fetch: Fetch, refs: List[Optional[Bound]], limit: int) -> List[HistoryLine]:
    return await fetch(limit, refs[0], None, False)


async def _around(fetch: Fetch, refs: List[Optional[Bound]], limit: int) -> List[HistoryLine]:
    """Up to the reference (its own message included), then after it: half and half."""
    kind, value = refs[0]
    earlier, later = limit - limit // 2, limit // 2
    if kind == "msgid":
        lines = await fetch(earlier, None, ("upto", value), True)
        return lines + (await fetch(later, refs[0], None, False) if later else [])
    lines = await fetch(earlier, None, refs[0], True)
    return lines + (await fetch(later, ("ts", value - 0.0005), None, False) if later else [])


async def _between(fetch: Fetch, refs: List[Optional[Bound]], limit: int) -> List[HistoryLine]:
    """From the first reference towards the second: forwards, or else backwards."""
    first, second = refs
    lines = await fetch(limit, first, second, False)
    return lines or await fetch(limit, second, first, True)


_SUBCOMMANDS = {"LATEST": _latest, "BEFORE": _before, "AFTER": _after, "AROUND": _around,
                "BETWEEN": _between}

_FAIL_TEXT = {
    "INVALID_PARAMS": "Invalid parameters",
    "INVALID_TARGET": "Messages could not be retrieved",
    "MESSAGE_ERROR": "Messages could not be retrieved",
}
