# -*- test-case-name: tests.irc.test_protocol -*-
"""
One IRC connection as bytes and lines: input buffer, receive and send queues, flood control and
timers. It knows IRC's framing and limits, not its commands (L{ilchat.irc.protocol} adds those).

Line handling follows C{LineOnlyReceiver} (a bounded buffer, nothing more read once the transport
is disconnecting) but splits on CR, LF or any mix of them, as IRC clients in the wild send all three,
and never decodes a partial line. Every line passes through a per-connection token bucket: a client
that sends faster than its bucket allows is throttled (its lines wait in a bounded receive queue),
and when that queue overflows it is disconnected with "Excess Flood", as ircds do. A line whose
handler returns an unfinished Deferred holds the next one back until it fires.

Everything sent goes through L{IrcConnection.send_message}, which refuses CR/LF/NUL inside a
parameter and cuts an over-long line to 512 bytes (a reply echoing a long argument), and through a
send queue bounded by C{sendq} bytes while the peer does not read ("SendQ exceeded"). Client lines
are cut to C{max_line} bytes without their tags (RFC 1459); more than 4,094 bytes of client tag
data is 417 (IRCv3).
"""

import re
from collections import deque
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any, Deque, Dict, Iterator, List, Optional, Set, Tuple

import attr
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ilchat.irc.message import (
    MAX_CLIENT_TAG_DATA,
    MAX_TAGS_BYTES,
    Message,
    MessageError,
    echoed,
    format_message,
    split_text,
    truncate_utf8,
)
from ilchat.irc.batches import CONCAT, MULTILINE, batched, labeled, multiline_lines
from ilchat.irc.network import IrcNetwork
from ilchat.irc.numerics import ERR_INPUTTOOLONG
from ilchat.ratelimit import TokenBucket

__all__ = ["IrcConnection", "server_time"]

_LINE_SPLIT = re.compile(rb"[\r\n]")
#: Seconds a closing connection may take to flush its last lines before it is aborted.
_CLOSE_GRACE = 10.0


#: The connection whose line is being handled. Its handler's coroutines keep it across their
#: awaits (Twisted runs each one in a copy of the context it started in), so what they send is
#: this command's reply; what other users, the bus or timers send meanwhile is not.
_ANSWERING: "ContextVar[Optional[IrcConnection]]" = ContextVar("ilchat_irc_answering", default=None)


def server_time(seconds: float) -> str:
    """The IRCv3 server-time form of a time in seconds (``2026-12-02T05:13:03.000Z``)."""
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class IrcConnection(LineOnlyReceiver):
    """
    The transport side of an IRC client connection. Subclasses implement L{handle_line} and
    call L{registration_done} once the client is registered (that starts the idle pings).
    """

    _log = Logger()

    delimiter = b"\r\n"

    def __init__(self, network: IrcNetwork, clock: Any) -> None:
        self.network = network
        self.config = network.config
        self.clock = clock
        #: The nick replies are addressed to ("*" while there is none), and the capabilities
        #: that decide the tags of what is sent.
        self.nick: Optional[str] = None
        self.caps: Set[str] = set()
        self.registered = False
        self.host = "unknown"
        self.ip = "unknown"
        #: How the connection ended, for its log line: the client sent QUIT, or the server closed it.
        self._quit_by_client = False
        self._closed_by_server = False
        self._buffer = b""
        self._discarding = False
        #: The bounded start of an over-long line being discarded, run once its end arrives.
        self._head: Optional[bytes] = None
        self._recvq: Deque[bytes] = deque()
        self._recvq_bytes = 0
        self._blocked = False
        self._paused = False
        self._sendq: Deque[bytes] = deque()
        self._sendq_bytes = 0
        self._closing = False
        self._quit_reason = "Connection closed"
        self._counted_ip: Optional[str] = None
        #: The network policy that counted this connection from this address (released in
        #: connectionLost, once).
        self._policy: Any = None
        self._policy_address = ""
        self._bucket = TokenBucket(self.config.flood_rate, self.config.flood_burst, clock)
        self._drain_call: Optional[IDelayedCall] = None
        self._registration_call: Optional[IDelayedCall] = None
        self._idle_call: Optional[IDelayedCall] = None
        self._abort_call: Optional[IDelayedCall] = None
        self._last_activity = 0.0
        self._pinged = False
        #: The label of the command being answered and its replies so far (labeled-response).
        self._label: Optional[str] = None
        self._labeled: Optional[List[Message]] = None
        #: The ids of the messages sent while a JOIN's history is read (ilchat.irc.history).
        self.seen_msgids: Optional[Set[str]] = None

    # -- connection ------------------------------------------------------------------------------

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.ip = getattr(peer, "host", "unknown")
        self.host = self._safe_host(self.ip)
        self._last_activity = self.clock.seconds()
        self.transport.registerProducer(self, True)
        self._registration_call = self.clock.callLater(
            self.config.registration_timeout, self._registration_timed_out
        )

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        """Stop the timers, drop the queues and give back the address's connection counts."""
        for name in ("_drain_call", "_registration_call", "_idle_call", "_abort_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        self._recvq.clear()
        self._sendq.clear()
        self._closing = True
        if self._counted_ip is not None:
            count = self.network.connections_per_ip.get(self._counted_ip, 1) - 1
            if count > 0:
                self.network.connections_per_ip[self._counted_ip] = count
            else:
                self.network.connections_per_ip.pop(self._counted_ip, None)
            self._counted_ip = None
        if self._policy is not None:
            self._policy.release_connection(self._policy_address, self)
            self._policy = None

    @staticmethod
    def _safe_host(address: str) -> str:
        # An IPv6 address starting with ":" would read as a trailing parameter.
        return "0" + address if address.startswith(":") else address

    # -- producer interface: the transport tells us when the peer stops reading -------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        while self._sendq and not self._paused:
            data = self._sendq.popleft()
            self._sendq_bytes -= len(data)
            self.transport.write(data)

    def stopProducing(self) -> None:
        self._paused = True

    # -- input -----------------------------------------------------------------------------------

    def _max_total(self) -> int:
        return MAX_TAGS_BYTES + self.config.max_line

    def dataReceived(self, data: bytes) -> None:
        """
        Split on CR, LF or any mix of them (mIRC and netcat send a bare LF, some clients a bare
        CR); the empty "lines" that CR LF produces are skipped. The buffer is bounded: of a line
        longer than it, the part that fits in IRC's limits (L{_bounded}) is kept and the rest
        thrown away up to the line's end.
        """
        if self._discarding:
            match = _LINE_SPLIT.search(data)
            if match is None:
                return
            data = data[match.end() :]
            self._discarding = False
            head, self._head = self._head, None
            if head is not None and not (self.transport.disconnecting or self._closing):
                self.lineReceived(head)
        self._buffer += data
        lines = _LINE_SPLIT.split(self._buffer)
        self._buffer = lines.pop()
        for line in lines:
            if self.transport.disconnecting or self._closing:
                return
            if not line:
                continue
            bounded = self._bounded(line)
            if bounded is None:
                self.lineLengthExceeded(line)
                continue
            self.lineReceived(bounded)
        if len(self._buffer) > self._max_total():
            self._head = self._bounded(self._buffer)
            self._buffer = b""
            self._discarding = True
            if self._head is None:
                self.lineLengthExceeded(b"")

    def _bounded(self, line: bytes) -> Optional[bytes]:
        """
        The line within IRC's limits: the part after the tags is cut to C{max_line} bytes with
        CR LF (RFC 1459 has no continuation lines; a character is never cut in two); over
        4,094 bytes of tag data (IRCv3's limit for clients) the line is refused (None: 417).
        """
        tags, rest = b"", line
        if line.startswith(b"@"):
            tags, space, rest = line.partition(b" ")
            if len(tags) - 1 > MAX_CLIENT_TAG_DATA:
                return None
            tags += space
        limit = self.config.max_line - 2
        return tags + truncate_utf8(rest, limit) if len(rest) > limit else line

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reply(ERR_INPUTTOOLONG, "Input line contained too much tag data")

    def lineReceived(self, line: bytes) -> None:
        """Queue a line and process what the flood bucket allows."""
        self._last_activity = self.clock.seconds()
        self._pinged = False
        self.network.lines_received += 1
        self._recvq.append(line)
        self._recvq_bytes += len(line)
        if self._recvq_bytes > self.config.recvq:
            self._log.info("Excess flood from {ip}", ip=self.ip)
            self.close("Excess Flood")
            return
        self._drain()

    def _drain_later(self) -> None:
        self._drain_call = None
        self._drain()

    def _drain(self) -> None:
        if self._drain_call is not None:
            return  # throttled: the scheduled call goes on when a token is there
        while self._recvq and not self._blocked and not self._closing:
            allowed, retry_after = self._bucket.consume()
            if not allowed:
                self._drain_call = self.clock.callLater(retry_after, self._drain_later)
                return
            line = self._recvq.popleft()
            self._recvq_bytes -= len(line)
            answering = _ANSWERING.set(self)
            try:
                result = self.handle_line(line)
            finally:
                _ANSWERING.reset(answering)
            if result is not None and not result.called:
                # An asynchronous command (a password check, a ban lookup) finishes before the
                # next line of this client runs, so a PRIVMSG never overtakes its JOIN.
                self._blocked = True
                result.addBoth(self._unblock)

    def _unblock(self, result: Any) -> None:
        self._blocked = False
        if not self._closing:
            self._drain()

    def handle_line(self, line: bytes) -> Optional[defer.Deferred]:
        """
        Run one line the flood bucket let through; a Deferred that has not fired yet holds the
        connection's next lines back until it does.
        """
        raise NotImplementedError

    @staticmethod
    def decode(line: bytes) -> Tuple[str, bool]:
        """UTF-8, or Latin-1 for the old clients that still send it (decoding never fails); and
        whether the line was UTF-8."""
        try:
            return line.decode("utf-8"), True
        except UnicodeDecodeError:
            return line.decode("latin-1"), False

    # -- output ----------------------------------------------------------------------------------

    def send_message(self, message: Message) -> None:
        """
        The one send path: serialise (which refuses CR/LF/NUL in parameters and cuts an
        over-long line to fit), then write, or queue while the peer is not reading.
        Past C{sendq} queued bytes the peer is cut off: a client that cannot keep up must not
        make the server hold unbounded memory.
        """
        if self._closing or self.transport is None:
            return
        if self._labeled is not None and _ANSWERING.get() is self:
            self._labeled.append(message)
            return
        try:
            # A reply echoing a long argument (PONG, 401, ...) is cut to fit, not lost.
            line = format_message(message, truncate=True)
        except MessageError as e:
            self._log.error(
                "Refusing to send {command} to {nick}: {error}",
                command=message.command,
                nick=self.nick,
                error=str(e),
            )
            return
        data = line.encode("utf-8") + b"\r\n"
        if self._paused:
            self._sendq.append(data)
            self._sendq_bytes += len(data)
            if self._sendq_bytes > self.config.sendq:
                self._log.info("SendQ exceeded for {nick} from {ip}", nick=self.nick, ip=self.ip)
                self._quit_reason = "SendQ exceeded"
                self._closed_by_server = True
                self._closing = True
                self._sendq.clear()
                self.transport.abortConnection()
            return
        self.network.lines_sent += 1
        self.transport.write(data)

    def _tags_for(self, client_tags: Optional[Dict[str, str]] = None, msgid: Optional[str] = None,
                  at: Optional[float] = None) -> Dict[str, str]:
        tags: Dict[str, str] = {}
        if msgid is not None and self.seen_msgids is not None:
            self.seen_msgids.add(msgid)
        if "server-time" in self.caps:
            tags["time"] = server_time(self.clock.seconds() if at is None else at)
        if "message-tags" in self.caps:
            if client_tags:
                tags.update(client_tags)
            if msgid is not None:
                tags["msgid"] = msgid
        return tags

    def deliver(self, message: Message, client_tags: Optional[Dict[str, str]] = None,
                msgid: Optional[str] = None, at: Optional[float] = None) -> None:
        """
        Send a message from elsewhere (another user, a channel), with the tags this client asked
        for: ``time`` (C{at}, seconds, else now) with server-time; C{client_tags} and ``msgid``
        with message-tags.
        """
        tags = self._tags_for(client_tags, msgid, at)
        if "account-tag" in self.caps:
            account = self.network.account_of(message.prefix)
            if account:
                tags["account"] = account
        if tags:
            message = attr.evolve(message, tags={**message.tags, **tags})
        self.send_message(message)

    # -- labeled-response ------------------------------------------------------------------------

    def start_label(self, label: str) -> None:
        """
        Hold what this command sends from now on (its reply, with this label); lines of
        others that arrive while it waits (a JOIN's checks, a CHATHISTORY read) go out at once.
        """
        self._label = label
        self._labeled = []

    @contextmanager
    def not_a_reply(self) -> Iterator[None]:
        """What is sent meanwhile goes out now, outside the labeled reply being held."""
        held, self._labeled = self._labeled, None
        try:
            yield
        finally:
            self._labeled = held

    def end_label(self, _: Any = None) -> Any:
        """Send the held replies as labeled-response asks (ACK, one labeled line or a batch)."""
        label, replies = self._label, self._labeled
        self._label, self._labeled = None, None
        if label is not None and replies is not None:
            for message in labeled(label, replies, self.config.server_name, "batch" in self.caps):
                self.send_message(message)
        return _

    def reply(self, numeric: str, *params: str) -> None:
        """A numeric reply to this client (target "*" before it has a nick); echoed client input
        in a middle parameter is made sendable (L{echoed}) so the reply is never lost."""
        self.deliver(Message(numeric, echoed((self.nick or "*",) + params), prefix=self.config.server_name))

    def send_text(
        self, command: str, target: str, text: str, prefix: str, tags: Optional[Dict[str, str]] = None,
        ctcp: Optional[str] = None, msgid: Optional[str] = None, at: Optional[float] = None,
    ) -> None:
        """
        Send user text as one or more PRIVMSG/NOTICE lines: split at line breaks and to fit 512
        bytes with the given prefix, so text from a browser never breaks IRC framing. With
        C{ctcp} (``"ACTION"``) each line is that CTCP message.
        """
        start, end = (f"\x01{ctcp} ", "\x01") if ctcp else ("", "")
        overhead = len(f":{prefix} {command} {target} :{start}{end}".encode("utf-8")) + 2
        if not ctcp and MULTILINE in self.caps and "batch" in self.caps:
            lines = multiline_lines(text, 512 - overhead)
            if len(lines) > 1:
                self._send_multiline(command, target, lines, prefix, tags, msgid, at)
                return
        for index, piece in enumerate(split_text(text, 512 - overhead)):
            # The first line carries the message's id: ids are unique per line.
            self.deliver(Message(command, (target, start + piece + end), prefix=prefix), tags,
                         msgid if index == 0 else None, at)

    def _send_multiline(self, command: str, target: str, lines: List[Tuple[str, bool]], prefix: str,
                        tags: Optional[Dict[str, str]], msgid: Optional[str], at: Optional[float]) -> None:
        """One message in a ``draft/multiline`` batch; the batch's opening line has its tags."""
        messages = [Message(command, (target, line), prefix=prefix, tags={CONCAT: ""} if concat else {})
                    for line, concat in lines]
        open_tags = self._tags_for(tags, msgid, at)
        for message in batched(MULTILINE, (target,), messages, prefix, open_tags):
            self.send_message(message)

    def relay_text(
        self, command: str, target: str, text: str, prefix: str, tags: Optional[Dict[str, str]] = None,
        msgid: Optional[str] = None, at: Optional[float] = None,
        lines: Optional[List[Tuple[str, bool]]] = None,
    ) -> None:
        """
        Relay one IRC user's PRIVMSG/NOTICE as one line, as ircds do: with the sender's prefix in
        front, text that filled the sender's 512 bytes is cut to fit (RFC 1459: no continuation
        lines), by L{send_message}.
        """
        if lines is not None:
            self.send_lines(command, target, lines, prefix, tags, msgid, at)
        elif "\n" in text or "\r" in text:
            self.send_text(command, target, text, prefix, tags, msgid=msgid, at=at)
        else:
            self.deliver(Message(command, (target, text), prefix=prefix), tags, msgid, at)

    def send_lines(self, command: str, target: str, lines: List[Tuple[str, bool]], prefix: str,
                   tags: Optional[Dict[str, str]], msgid: Optional[str], at: Optional[float]) -> None:
        """
        An IRC user's multiline message as they wrote it: the same lines in a batch with the
        cap, else each non-blank line as a message of its own (the msgid on the first).
        """
        if MULTILINE in self.caps and "batch" in self.caps:
            self._send_multiline(command, target, lines, prefix, tags, msgid, at)
            return
        for index, line in enumerate(line for line, _ in lines if line):
            self.deliver(Message(command, (target, line), prefix=prefix), tags,
                         msgid if index == 0 else None, at)

    def close(self, reason: str) -> None:
        """Send ERROR with C{reason} and close once it is written."""
        if self._closing:
            return
        self.end_label()  # the replies so far, before ERROR
        self._quit_reason = reason
        self._closed_by_server = True
        self.send_message(Message("ERROR", (f"Closing Link: {self.host} ({reason})",)))
        self._closing = True
        self.transport.loseConnection()
        # loseConnection waits for the peer to read what is buffered; one that never reads
        # (a flooder, a dead peer) is cut off instead of holding the connection forever.
        self._abort_call = self.clock.callLater(_CLOSE_GRACE, self.transport.abortConnection)

    # -- timers ----------------------------------------------------------------------------------

    def _registration_timed_out(self) -> None:
        self._registration_call = None
        if not self.registered:
            self.close("Registration timed out")

    def _schedule_idle(self, delay: float) -> None:
        self._idle_call = self.clock.callLater(delay, self._idle_check)

    def _idle_check(self) -> None:
        """
        Ping a client that has been quiet for C{ping_interval}, and drop it when it has not
        answered (with anything) C{ping_timeout} later: half-open connections must not pile up.
        """
        self._idle_call = None
        now = self.clock.seconds()
        idle = now - self._last_activity
        interval = self.config.ping_interval
        if self._pinged:
            if idle >= interval + self.config.ping_timeout:
                self.close(f"Ping timeout: {int(idle)} seconds")
                return
            self._schedule_idle(interval + self.config.ping_timeout - idle)
            return
        if idle >= interval:
            self._pinged = True
            self.send_message(Message("PING", (self.config.server_name,)))
            self._schedule_idle(self.config.ping_timeout)
            return
        self._schedule_idle(interval - idle)

    def registration_done(self) -> None:
        """The client is registered: no registration timeout any more, idle pings from now on."""
        self.registered = True
        if self._registration_call is not None and self._registration_call.active():
            self._registration_call.cancel()
        self._registration_call = None
        self._schedule_idle(self.config.ping_interval)
