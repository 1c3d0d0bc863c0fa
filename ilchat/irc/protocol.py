# -*- test-case-name: tests.irc.test_protocol -*-
"""
The IRC server protocol: one instance per client connection.

Line handling follows C{LineOnlyReceiver} (a bounded buffer, nothing more read once the transport
is disconnecting) but splits on CR, LF or any mix of them, as IRC clients in the wild send all three,
and never decodes a partial line. Every line passes through a per-connection token bucket: a client
that sends faster than its bucket allows is throttled (its lines wait in a bounded receive queue),
and when that queue overflows it is disconnected with "Excess Flood", as ircds do.

Commands are dispatched to C{irc_<COMMAND>} methods; before registration only the registration
commands are accepted. Everything sent goes through L{IRCServerProtocol.send_message}, which
refuses CR/LF/NUL inside a parameter and cuts an over-long line to 512 bytes (a reply echoing a
long argument), and through a send queue bounded by C{sendq} bytes while the peer does
not read ("SendQ exceeded"). Client lines are cut to C{max_line} bytes without their tags
(RFC 1459); more than 4,094 bytes of client tag data is 417 (IRCv3).
"""

import base64
import binascii
import hmac
import ipaddress
import math
import re
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

import attr
from twisted.internet import defer, protocol, task
from twisted.internet.interfaces import IDelayedCall, ISSLTransport
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

import ilchat
from ilchat.irc.message import (
    MAX_CLIENT_TAG_DATA,
    MAX_TAGS_BYTES,
    Message,
    MessageError,
    format_message,
    parse_message,
    split_text,
    truncate_utf8,
)
from ilchat.irc.network import Channel, IrcNetwork, irc_lower, valid_channel, valid_nick
from ilchat.ratelimit import TokenBucket

__all__ = ["IRCServerProtocol", "IrcServerFactory", "SUPPORTED_CAPS"]

_LINE_SPLIT = re.compile(rb"[\r\n]")
_USERNAME_BAD = re.compile(r"[^A-Za-z0-9._-]")

#: IRCv3 capabilities this server offers (``sasl`` only when an authenticator is configured).
SUPPORTED_CAPS = ("server-time", "message-tags", "echo-message", "multi-prefix", "sasl")

#: Commands a client may send before it is registered.
_PRE_REGISTRATION = frozenset(
    {"CAP", "PASS", "NICK", "USER", "PING", "PONG", "QUIT", "AUTHENTICATE", "WEBIRC"}
)

# Modes of channel members, highest first, with their NAMES prefixes.
_PREFIX = "(ov)@+"
_CHANMODES = "beI,k,l,nt"
_SASL_CHUNK = 400
_SASL_MAX = 4096
_MAX_AUTH_FAILURES = 3
#: Seconds a closing connection may take to flush its last lines before it is aborted.
_CLOSE_GRACE = 10.0


def _server_time(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class IRCServerProtocol(LineOnlyReceiver):
    """
    One IRC client connection: registration, capabilities, commands, limits and timers.

    The connection is also the user object the network keeps in its channels (C{local = True}).
    """

    _log = Logger()

    local = True
    delimiter = b"\r\n"

    def __init__(self, network: IrcNetwork, clock: Any) -> None:
        self.network = network
        self.config = network.config
        self.clock = clock
        self.nick: Optional[str] = None
        self.username: Optional[str] = None
        self.realname = ""
        self.host = "unknown"
        self.ip = "unknown"
        self.away: Optional[str] = None
        self.user_id: Optional[int] = None
        self.account: Optional[str] = None
        self.account_client: Optional[str] = None
        #: The chat connection id the bridge uses for this user (see ilchat.irc.bridge).
        self.chat_connection: Optional[str] = None
        self.channels: Set[Channel] = set()
        self.caps: Set[str] = set()
        self.registered = False
        self.user_modes: Set[str] = set()
        self.signon = 0
        self.last_message = 0.0

        self._password: Optional[str] = None
        self._login_hint = ""
        self._cap_negotiating = False
        self._registering = False
        self._webirc_done = False
        self._sasl_buffer: Optional[str] = None
        self._auth_failures = 0
        self._auth_delay: Optional[defer.Deferred] = None
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

    def __repr__(self) -> str:
        return f"<IRCServerProtocol {self.nick or '*'}@{self.ip}>"

    # -- identity --------------------------------------------------------------------------------

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.username or '*'}@{self.host}"

    @property
    def display_name(self) -> str:
        """The name browsers see: the ILIAS login in ``ilias`` mode, else the nick."""
        return self.account or self.nick or "*"

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
        for name in ("_drain_call", "_registration_call", "_idle_call", "_abort_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        if self._auth_delay is not None:
            self._auth_delay.cancel()
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
            self._policy.release_connection(self._policy_address)
            self._policy = None
        if self.registered:
            self._log_departure()
            self.network.quit(self, self._quit_reason)
        else:
            self.network.release_nick(self)
        self.registered = False

    def _who(self) -> str:
        """The user as log lines name it: nick, then ILIAS login and id (or the open-mode id)."""
        if self.account is not None:
            return f"{self.nick} ({self.account}, {self.user_id}, {self.account_client})"
        return f"{self.nick} ({self.user_id})"

    def _log_departure(self) -> None:
        # One line per registered connection, as its login had one: a quit, or a kill (the
        # server closed it: ping timeout, flood, SendQ, shutdown).
        if self._closed_by_server and not self._quit_by_client:
            self._log.info("{who} disconnected from IRC by the server ({address}): {reason}",
                           who=self._who(), address=self.ip, reason=self._quit_reason)
        else:
            self._log.info("{who} quit IRC ({address}): {reason}",
                           who=self._who(), address=self.ip, reason=self._quit_reason)

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
        self.reply("417", "Input line contained too much tag data")

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
            result = self._handle_line(line)
            if isinstance(result, defer.Deferred) and not result.called:
                # An asynchronous command (a password check, a ban lookup) finishes before the
                # next line of this client runs, so a PRIVMSG never overtakes its JOIN.
                self._blocked = True
                result.addBoth(self._unblock)

    def _unblock(self, result: Any) -> None:
        self._blocked = False
        if not self._closing:
            self._drain()

    @staticmethod
    def decode(line: bytes) -> str:
        """UTF-8, or Latin-1 for the old clients that still send it; decoding never fails."""
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            return line.decode("latin-1")

    def _handle_line(self, line: bytes) -> Optional[defer.Deferred]:
        if b"\0" in line:
            # NUL is not allowed anywhere in an IRC message, and a reply echoing it could not be
            # sent. The line is dropped with ERR_UNKNOWNERROR saying why (ergo refuses such
            # lines too); the connection goes on, since one stray byte should not cost it.
            self.reply("400", "*", "Line dropped: it contains a NUL character")
            return None
        try:
            message = parse_message(self.decode(line))
        except MessageError:
            return None
        if message.command.isdigit():
            return None
        if not message.command.isalpha() or not message.command.isascii():
            self.reply("421", message.command[:32] or "*", "Unknown command")
            return None
        if not self.registered and message.command not in _PRE_REGISTRATION:
            self.reply("451", "You have not registered")
            return None
        handler: Callable[[Message], Any] = getattr(
            self, "irc_" + message.command, self.irc_unknown
        )
        if message.command in ("PRIVMSG", "NOTICE"):
            self.last_message = self.clock.seconds()
        try:
            result = handler(message)
        except Exception:
            self._log.failure("Error handling {command} from {ip}", command=message.command, ip=self.ip)
            return None
        if isinstance(result, defer.Deferred):
            result.addErrback(
                lambda f: self._log.failure(
                    "Error handling {command} from {ip}", f, command=message.command, ip=self.ip
                )
            )
            return result
        return None

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

    def _tags_for(self, client_tags: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        tags: Dict[str, str] = {}
        if "server-time" in self.caps:
            tags["time"] = _server_time(self.clock.seconds())
        if client_tags and "message-tags" in self.caps:
            tags.update(client_tags)
        return tags

    def deliver(self, message: Message, client_tags: Optional[Dict[str, str]] = None) -> None:
        """Send a message from elsewhere (another user, a channel), with the tags this client asked for."""
        tags = self._tags_for(client_tags)
        if tags:
            message = attr.evolve(message, tags={**message.tags, **tags})
        self.send_message(message)

    def reply(self, numeric: str, *params: str) -> None:
        """A numeric reply to this client (target "*" before it has a nick)."""
        self.deliver(Message(numeric, (self.nick or "*",) + params, prefix=self.config.server_name))

    def send_text(
        self, command: str, target: str, text: str, prefix: str, tags: Optional[Dict[str, str]] = None
    ) -> None:
        """
        Send user text as one or more PRIVMSG/NOTICE lines: split at line breaks and to fit 512
        bytes with the given prefix, so text from a browser never breaks IRC framing.
        """
        overhead = len(f":{prefix} {command} {target} :".encode("utf-8")) + 2
        for piece in split_text(text, 512 - overhead):
            self.deliver(Message(command, (target, piece), prefix=prefix), tags)

    def relay_text(
        self, command: str, target: str, text: str, prefix: str, tags: Optional[Dict[str, str]] = None
    ) -> None:
        """
        Relay one IRC user's PRIVMSG/NOTICE as one line, as ircds do: with the sender's prefix in
        front, text that filled the sender's 512 bytes is cut to fit (RFC 1459: no continuation
        lines), by L{send_message}.
        """
        self.deliver(Message(command, (target, text), prefix=prefix), tags)

    def close(self, reason: str) -> None:
        """Send ERROR with C{reason} and close once it is written."""
        if self._closing:
            return
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

    # -- registration ----------------------------------------------------------------------------

    def _caps_offered(self, version: int) -> List[str]:
        caps = []
        for cap in SUPPORTED_CAPS:
            if cap == "sasl":
                if self.network.authenticator is None:
                    continue
                caps.append("sasl=PLAIN" if version >= 302 else "sasl")
            else:
                caps.append(cap)
        return caps

    def irc_CAP(self, message: Message) -> None:
        if not message.params:
            self.reply("461", "CAP", "Not enough parameters")
            return
        sub = message.params[0].upper()
        target = self.nick or "*"
        server = self.config.server_name
        if sub == "LS":
            if not self.registered:
                self._cap_negotiating = True
            version = 0
            if len(message.params) > 1 and message.params[1].isdigit():
                version = int(message.params[1])
            self.send_message(
                Message("CAP", (target, "LS", " ".join(self._caps_offered(version))), prefix=server)
            )
        elif sub == "LIST":
            self.send_message(Message("CAP", (target, "LIST", " ".join(sorted(self.caps))), prefix=server))
        elif sub == "REQ":
            if not self.registered:
                self._cap_negotiating = True
            wanted = message.params[1] if len(message.params) > 1 else ""
            names = wanted.split()
            offered = {cap.split("=")[0] for cap in self._caps_offered(302)}
            if names and all(name.lstrip("-") in offered for name in names):
                for name in names:
                    if name.startswith("-"):
                        self.caps.discard(name[1:])
                    else:
                        self.caps.add(name)
                self.send_message(Message("CAP", (target, "ACK", wanted), prefix=server))
            else:
                self.send_message(Message("CAP", (target, "NAK", wanted), prefix=server))
        elif sub == "END":
            if self._cap_negotiating:
                self._cap_negotiating = False
                return self._try_register()
        else:
            self.reply("410", message.params[0], "Invalid CAP command")
        return None

    def irc_PASS(self, message: Message) -> None:
        if self.registered:
            self.reply("462", "You may not reregister")
        elif not message.params:
            self.reply("461", "PASS", "Not enough parameters")
        else:
            self._password = message.params[0]

    def irc_WEBIRC(self, message: Message) -> None:
        """
        ``WEBIRC password gateway hostname ip``: a trusted web gateway tells us the real user's
        address. Only from a configured gateway address, with its password (compared in
        constant time), and only before registration.
        """
        if self.registered or self._webirc_done or len(message.params) < 4:
            self.reply("461", "WEBIRC", "Not enough parameters")
            return
        password, _gateway, hostname, address = message.params[:4]
        try:
            peer = ipaddress.ip_address(self.ip)
            real = ipaddress.ip_address(address)
        except ValueError:
            self.close("WEBIRC: invalid address")
            return
        for gateway in self.config.webirc:
            if any(peer in network for network in gateway.networks) and hmac.compare_digest(
                password.encode("utf-8"), gateway.password.encode("utf-8")
            ):
                self._webirc_done = True
                self.ip = str(real)
                valid = re.fullmatch(r"[A-Za-z0-9.-]+", hostname) and len(hostname) <= 63
                self.host = hostname if valid else self._safe_host(self.ip)
                self._log.info("WEBIRC from {peer} for {ip}", peer=str(peer), ip=self.ip)
                return
        self._log.warn("Refused WEBIRC from {peer}", peer=self.transport.getPeer().host)
        self.close("WEBIRC: access denied")

    def irc_NICK(self, message: Message) -> Optional[defer.Deferred]:
        if not message.params or not message.params[0]:
            self.reply("431", "No nickname given")
            return None
        nick = message.params[0]
        if not valid_nick(nick, self.config.nick_length):
            self.reply("432", nick, "Erroneous nickname")
            return None
        if self.nick == nick:
            return None
        if not self.registered:
            if not self.network.claim_nick(self, nick):
                self.reply("433", nick, "Nickname is already in use")
                return None
            self.nick = nick
            return self._try_register()
        if not self.network.change_nick(self, nick):
            self.reply("433", nick, "Nickname is already in use")
        return None

    def irc_USER(self, message: Message) -> Optional[defer.Deferred]:
        if self.registered or self.username is not None:
            self.reply("462", "You may not reregister")
            return None
        if len(message.params) < 4 or not message.params[0] or not message.params[3]:
            # An empty realname is as good as a missing one (modern ircdocs, irctest).
            self.reply("461", "USER", "Not enough parameters")
            return None
        self.username = (_USERNAME_BAD.sub("", message.params[0]) or "user")[:10]
        self._login_hint = message.params[0]
        self.realname = message.params[3]
        return self._try_register()

    def irc_AUTHENTICATE(self, message: Message) -> Optional[defer.Deferred]:
        """SASL PLAIN (IRCv3 sasl-3.1): base64 in chunks of 400, "+" for an empty chunk."""
        if self.network.authenticator is None or "sasl" not in self.caps:
            self.reply("904", "SASL authentication failed")
            return None
        if self.registered or self.account is not None:
            self.reply("907", "You have already authenticated using SASL")
            return None
        if not message.params:
            self.reply("461", "AUTHENTICATE", "Not enough parameters")
            return None
        data = message.params[0]
        if data == "*":
            self._sasl_buffer = None
            self.reply("906", "SASL authentication aborted")
            return None
        if self._sasl_buffer is None:
            if data.upper() != "PLAIN":
                self.reply("908", "PLAIN", "are available SASL mechanisms")
                self.reply("904", "SASL authentication failed")
                return None
            self._sasl_buffer = ""
            self.send_message(Message("AUTHENTICATE", ("+",)))
            return None
        if data != "+":
            self._sasl_buffer += data
        if len(self._sasl_buffer) > _SASL_MAX:
            self._sasl_buffer = None
            self.reply("905", "SASL message too long")
            return None
        if len(data) == _SASL_CHUNK:
            return None
        payload, self._sasl_buffer = self._sasl_buffer, None
        try:
            decoded = base64.b64decode(payload, validate=True).decode("utf-8")
            _authzid, login, password = decoded.split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.reply("904", "SASL authentication failed")
            return None
        return defer.ensureDeferred(self._sasl_check(login, password))

    async def _authenticate(self, login: str, password: str) -> Tuple[Any, Optional[str]]:
        """
        Check a password through the network's failed-login throttle.

        Returns:
            ``(identity, None)`` for the right password, ``(None, None)`` for a wrong one (both
            after the throttle's delay, which grows with the failures of this address and
            account), or ``(None, text)`` without checking while the throttle refuses.
        """
        throttle = self.network.login_throttle
        locked = throttle.refusal(self.ip, login)
        if locked is not None:
            seconds = math.ceil(locked)
            return None, f"Too many failed logins; try again in {seconds} second{'s' * (seconds != 1)}"
        delay = throttle.delay(self.ip, login)
        identity = await self.network.authenticator.authenticate(login, password)
        if identity is None:
            throttle.failed(self.ip, login)
        else:
            throttle.succeeded(self.ip, login)
        if delay > 0 and not self._closing:
            # The answer waits, right or wrong, so that a guesser cannot stop waiting early
            # and read a quick answer as a success.
            self._auth_delay = task.deferLater(self.clock, delay, lambda: None)
            try:
                await self._auth_delay
            except defer.CancelledError:
                return None, None  # the connection is gone
            finally:
                self._auth_delay = None
        return identity, None

    async def _sasl_check(self, login: str, password: str) -> None:
        identity, refusal = await self._authenticate(login, password)
        if self._closing:
            return
        if identity is None:
            self.reply("904", f"SASL authentication failed: {refusal}" if refusal else "SASL authentication failed")
            self._auth_failures += 1
            if self._auth_failures >= _MAX_AUTH_FAILURES:
                self.close(refusal or "Too many failed authentication attempts")
            return
        self.account = identity.login
        self.user_id = identity.user_id
        self.account_client = identity.client
        mask = f"{self.nick or '*'}!{self.username or '*'}@{self.host}"
        self.reply("900", mask, identity.login, f"You are now logged in as {identity.login}")
        self.reply("903", "SASL authentication successful")

    def _try_register(self) -> Optional[defer.Deferred]:
        if self.registered or self._registering or self._cap_negotiating:
            return None
        if self.nick is None or self.username is None:
            return None
        if self.network.authenticator is not None and self.account is None:
            if not self._password:
                self.reply("464", "Password required: use SASL PLAIN or PASS login:password")
                self.close("Bad password")
                return None
            login, sep, password = self._password.partition(":")
            if not sep:
                login, password = self._login_hint, self._password
            self._registering = True
            return defer.ensureDeferred(self._password_check(login, password))
        return self._complete_registration()

    async def _password_check(self, login: str, password: str) -> None:
        identity, refusal = await self._authenticate(login, password)
        self._registering = False
        if self._closing:
            return
        if identity is None:
            self.reply("464", refusal or "Password incorrect")
            self.close(refusal or "Bad password")
            return
        self.account = identity.login
        self.user_id = identity.user_id
        self.account_client = identity.client
        self._complete_registration()

    def _complete_registration(self) -> None:
        if self.user_id is None:
            self.user_id = self.network.allocate_open_id()
        self.registered = True
        self.signon = int(self.clock.seconds())
        if self._registration_call is not None and self._registration_call.active():
            self._registration_call.cancel()
        self._registration_call = None
        self._schedule_idle(self.config.ping_interval)
        config = self.config
        server = config.server_name
        version = f"ilchat-{ilchat.__version__}"
        self.reply("001", f"Welcome to the {config.network_name} Network, {self.hostmask}")
        self.reply("002", f"Your host is {server}, running version {version}")
        created = datetime.fromtimestamp(self.network.created, tz=timezone.utc)
        self.reply("003", f"This server was created {created:%Y-%m-%d %H:%M:%S} UTC")
        self.reply("004", server, version, "i", "ntov")
        tokens = [
            "CHANTYPES=#",
            f"PREFIX={_PREFIX}",
            "CASEMAPPING=rfc1459",
            f"NICKLEN={config.nick_length}",
            f"CHANNELLEN={config.channel_length}",
            f"TOPICLEN={config.topic_length}",
            f"NETWORK={config.network_name}",
            f"CHANMODES={_CHANMODES}",
            "CHANLIMIT=#:50",
            "MODES=4",
            "TARGMAX=PRIVMSG:4,NOTICE:4,JOIN:,PART:,NAMES:1,WHOIS:1,KICK:1",
            "AWAYLEN=200",
            "KICKLEN=300",
        ]
        self.reply("005", *tokens, "are supported by this server")
        secure = "TLS" if ISSLTransport.providedBy(self.transport) else "plain TCP"
        self._log.info("{who} logged in to IRC from {address} over {secure}",
                       who=self._who(), address=self.ip, secure=secure)
        self._send_motd()
        for hook in self.network.on_register:
            hook(self)

    def _send_motd(self) -> None:
        motd = self.config.motd
        if not motd:
            self.reply("422", "MOTD File is missing")
            return
        self.reply("375", f"- {self.config.server_name} Message of the day - ")
        for line in motd:
            for piece in split_text(line, 400) or [""]:
                self.reply("372", f"- {piece}")
        self.reply("376", "End of /MOTD command.")

    def irc_MOTD(self, message: Message) -> None:
        self._send_motd()

    # -- connection upkeep -----------------------------------------------------------------------

    def irc_PING(self, message: Message) -> None:
        if not message.params:
            self.reply("409", "No origin specified")
            return
        self.send_message(
            Message("PONG", (self.config.server_name, message.params[0]), prefix=self.config.server_name)
        )

    def irc_PONG(self, message: Message) -> None:
        """Any line counts as activity; a PONG needs nothing more."""

    def irc_QUIT(self, message: Message) -> None:
        reason = message.params[0] if message.params else ""
        self._quit_by_client = True
        self.close(f"Quit: {reason}" if reason else "Client Quit")

    def irc_unknown(self, message: Message) -> None:
        self.reply("421", message.command, "Unknown command")

    def irc_AWAY(self, message: Message) -> None:
        text = message.params[0] if message.params else ""
        if text:
            self.away = text[:200]
            self.reply("306", "You have been marked as being away")
        else:
            self.away = None
            self.reply("305", "You are no longer marked as being away")

    # -- channels --------------------------------------------------------------------------------

    def irc_JOIN(self, message: Message) -> Optional[defer.Deferred]:
        if not message.params or not message.params[0]:
            self.reply("461", "JOIN", "Not enough parameters")
            return None
        if message.params[0] == "0":
            for channel in list(self.channels):
                self.network.remove_member(channel, self, "PART", "Left all channels")
            return None
        return defer.ensureDeferred(self._join_all(message.params[0].split(",")))

    async def _join_all(self, names: List[str]) -> None:
        for name in names:
            if self._closing:
                return
            await self._join(name)

    async def _join(self, name: str) -> None:
        if not valid_channel(name, self.config.channel_length):
            self.reply("403", name or "*", "No such channel")
            return
        channel = self.network.find_channel(name)
        modes: Tuple[str, ...] = ()
        if channel is None:
            if not self.config.local_channels or self.network.reserved(name):
                self.reply("403", name, "No such channel")
                return
            channel = self.network.add_channel(name)
            modes = ("o",)
        if self in channel.members:
            return
        refusal = await channel.link.check_join(self)
        if self._closing or not self.registered:
            return
        if refusal is not None:
            numeric, text = refusal
            self.reply(numeric, channel.name, text)
            self.network.remove_channel_if_empty(channel)
            return
        self.network.add_member(channel, self, modes)
        channel.link.joined(self)
        if channel.topic:
            self._send_topic(channel)
        self._send_names(channel)

    def irc_PART(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.reply("461", "PART", "Not enough parameters")
            return
        reason = message.params[1] if len(message.params) > 1 else ""
        for name in message.params[0].split(","):
            channel = self.network.find_channel(name)
            if channel is None:
                self.reply("403", name, "No such channel")
            elif self not in channel.members:
                self.reply("442", channel.name, "You're not on that channel")
            else:
                self.network.remove_member(channel, self, "PART", reason)

    def _send_topic(self, channel: Channel) -> None:
        self.reply("332", channel.name, channel.topic)
        self.reply("333", channel.name, channel.topic_by or self.config.server_name, str(channel.topic_time))

    def _send_names(self, channel: Channel) -> None:
        multi = "multi-prefix" in self.caps
        names = [channel.prefix_of(member, multi) + member.nick for member in channel.members]
        head = f":{self.config.server_name} 353 {self.nick} = {channel.name} :"
        room = 510 - len(head.encode("utf-8"))
        line: List[str] = []
        size = 0
        for name in names:
            if line and size + len(name) + 1 > room:
                self.reply("353", "=", channel.name, " ".join(line))
                line, size = [], 0
            line.append(name)
            size += len(name) + 1
        if line:
            self.reply("353", "=", channel.name, " ".join(line))
        self.reply("366", channel.name, "End of /NAMES list")

    def irc_NAMES(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.reply("366", "*", "End of /NAMES list")
            return
        for name in message.params[0].split(","):
            channel = self.network.find_channel(name)
            if channel is None:
                self.reply("366", name, "End of /NAMES list")
            else:
                self._send_names(channel)

    def irc_TOPIC(self, message: Message) -> None:
        if not message.params:
            self.reply("461", "TOPIC", "Not enough parameters")
            return
        channel = self.network.find_channel(message.params[0])
        if channel is None:
            self.reply("403", message.params[0], "No such channel")
            return
        if len(message.params) == 1:
            if channel.topic:
                self._send_topic(channel)
            else:
                self.reply("331", channel.name, "No topic is set")
            return
        if self not in channel.members:
            self.reply("442", channel.name, "You're not on that channel")
            return
        if not channel.link.topic_settable:
            self.reply("482", channel.name, "The topic is the chat room's title, set in ILIAS")
            return
        if "t" in channel.modes and not channel.is_op(self):
            self.reply("482", channel.name, "You're not channel operator")
            return
        topic = message.params[1][: self.config.topic_length]
        self.network.set_topic(channel, topic, self.hostmask)

    def irc_LIST(self, message: Message) -> None:
        wanted = None
        if message.params and message.params[0]:
            wanted = {irc_lower(name) for name in message.params[0].split(",")}
        self.network.refresh()
        self.reply("321", "Channel", "Users  Name")
        for key, channel in sorted(self.network.channels.items()):
            if wanted is None or key in wanted:
                self.reply("322", channel.name, str(len(channel.members)), channel.topic)
        self.reply("323", "End of /LIST")

    def _who_line(self, channel_name: str, member: Any, channel: Optional[Channel]) -> None:
        flags = "G" if member.away else "H"
        if channel is not None:
            flags += channel.prefix_of(member, "multi-prefix" in self.caps)
        self.reply(
            "352",
            channel_name,
            member.username or "*",
            member.host,
            self.config.server_name,
            member.nick,
            flags,
            f"0 {member.realname or member.nick}",
        )

    def irc_WHO(self, message: Message) -> None:
        mask = message.params[0] if message.params else "*"
        channel = self.network.find_channel(mask) if mask.startswith("#") else None
        if channel is not None:
            for member in channel.members:
                self._who_line(channel.name, member, channel)
        elif not mask.startswith("#"):
            user = self.network.find_user(mask)
            if user is not None:
                shared = next(iter(user.channels), None)
                self._who_line(shared.name if shared else "*", user, shared)
        self.reply("315", mask, "End of /WHO list")

    def irc_WHOIS(self, message: Message) -> None:
        if not message.params:
            self.reply("431", "No nickname given")
            return
        for nick in message.params[-1].split(","):
            user = self.network.find_user(nick)
            if user is None:
                self.reply("401", nick, "No such nick/channel")
                self.reply("318", nick, "End of /WHOIS list")
                continue
            self.reply("311", user.nick, user.username or "*", user.host, "*", user.realname or user.nick)
            channels = [c.prefix_of(user, False) + c.name for c in user.channels]
            if channels:
                self.reply("319", user.nick, " ".join(sorted(channels)))
            where = self.config.server_name if user.local else "ILIAS web chat"
            self.reply("312", user.nick, self.config.server_name, where)
            if user.away:
                self.reply("301", user.nick, user.away)
            if getattr(user, "account", None):
                self.reply("330", user.nick, user.account, "is logged in as")
            if user.local:
                idle = int(self.clock.seconds() - (user.last_message or user.signon))
                self.reply("317", user.nick, str(max(idle, 0)), str(user.signon), "seconds idle, signon time")
            self.reply("318", user.nick, "End of /WHOIS list")

    def irc_MODE(self, message: Message) -> None:
        if not message.params:
            self.reply("461", "MODE", "Not enough parameters")
            return
        target = message.params[0]
        if not target.startswith("#"):
            self._user_mode(target, message.params[1:])
            return
        channel = self.network.find_channel(target)
        if channel is None:
            self.reply("403", target, "No such channel")
            return
        if len(message.params) == 1:
            self.reply("324", channel.name, channel.mode_string())
            self.reply("329", channel.name, str(channel.created))
            return
        changes = message.params[1]
        args = list(message.params[2:])
        if changes.lstrip("+") in ("b", "e", "I") and not args:
            ends = {"b": ("368", "End of channel ban list"), "e": ("349", "End of channel exception list"),
                    "I": ("347", "End of channel invite list")}
            numeric, text = ends[changes.lstrip("+")]
            self.reply(numeric, channel.name, text)
            return
        if not channel.is_op(self):
            self.reply("482", channel.name, "You're not channel operator")
            return
        applied: List[str] = []
        applied_args: List[str] = []
        sign = "+"
        for char in changes:
            if char in "+-":
                sign = char
                continue
            if char in "nt":
                if (sign == "+") != (char in channel.modes):
                    (channel.modes.add if sign == "+" else channel.modes.discard)(char)
                    applied.append(sign + char)
            elif char in "ov":
                if not args:
                    self.reply("461", "MODE", "Not enough parameters")
                    continue
                nick = args.pop(0)
                member = self.network.find_user(nick)
                if member is None:
                    self.reply("401", nick, "No such nick/channel")
                elif member not in channel.members:
                    self.reply("441", nick, channel.name, "They aren't on that channel")
                else:
                    modes = channel.members[member]
                    if (sign == "+") != (char in modes):
                        (modes.add if sign == "+" else modes.discard)(char)
                        applied.append(sign + char)
                        applied_args.append(member.nick)
            elif char in "beIkl":
                if args:
                    args.pop(0)
                self.reply("472", char, "is not supported on this server")
            else:
                self.reply("472", char, "is unknown mode char to me")
        if applied:
            text = ""
            last = ""
            for change in applied:
                if change[0] != last:
                    text += change[0]
                    last = change[0]
                text += change[1]
            channel.broadcast(Message("MODE", (channel.name, text, *applied_args), prefix=self.hostmask))

    def _user_mode(self, nick: str, params: Tuple[str, ...]) -> None:
        user = self.network.find_user(nick)
        if user is None:
            self.reply("401", nick, "No such nick/channel")
            return
        if user is not self:
            self.reply("502", "Can't change mode for other users")
            return
        if not params:
            self.reply("221", "+" + "".join(sorted(self.user_modes)))
            return
        sign = "+"
        changed = ""
        for char in params[0]:
            if char in "+-":
                sign = char
            elif char == "i":
                if (sign == "+") != ("i" in self.user_modes):
                    (self.user_modes.add if sign == "+" else self.user_modes.discard)("i")
                    changed += sign + "i"
            else:
                self.reply("501", "Unknown MODE flag")
        if changed:
            self.send_message(Message("MODE", (self.nick, changed), prefix=self.hostmask))

    def irc_KICK(self, message: Message) -> None:
        if len(message.params) < 2:
            self.reply("461", "KICK", "Not enough parameters")
            return
        channel = self.network.find_channel(message.params[0])
        if channel is None:
            self.reply("403", message.params[0], "No such channel")
            return
        if self not in channel.members:
            self.reply("442", channel.name, "You're not on that channel")
            return
        if not channel.is_op(self):
            self.reply("482", channel.name, "You're not channel operator")
            return
        reason = message.params[2] if len(message.params) > 2 else self.nick
        for nick in message.params[1].split(","):
            target = self.network.find_user(nick)
            if target is None or target not in channel.members:
                self.reply("441", nick, channel.name, "They aren't on that channel")
                continue
            if not channel.link.kick(self, target, reason):
                self.reply("482", channel.name, "Cannot kick that user from the chat room")
                continue
            self.network.remove_member(channel, target, "KICK", reason, by=self)

    # -- messages --------------------------------------------------------------------------------

    def irc_PRIVMSG(self, message: Message) -> None:
        self._message("PRIVMSG", message)

    def irc_NOTICE(self, message: Message) -> None:
        self._message("NOTICE", message)

    def _message(self, command: str, message: Message) -> None:
        errors = command == "PRIVMSG"  # NOTICE never gets an automatic reply (RFC 2812 §3.3.2)
        if not message.params or not message.params[0]:
            if errors:
                self.reply("411", f"No recipient given ({command})")
            return
        if len(message.params) < 2 or not message.params[1]:
            if errors:
                self.reply("412", "No text to send")
            return
        text = message.params[1]
        client_tags = {key: value for key, value in message.tags.items() if key.startswith("+")}
        for target in message.params[0].split(",")[:4]:
            if target.startswith("#"):
                channel = self.network.find_channel(target)
                if channel is None:
                    if errors:
                        self.reply("403", target, "No such channel")
                    continue
                if self not in channel.members and "n" in channel.modes:
                    if errors:
                        self.reply("404", channel.name, "Cannot send to channel")
                    continue
                if channel.link.send(self, command, text, client_tags):
                    continue
                for member in channel.local_members():
                    if member is not self or "echo-message" in self.caps:
                        member.relay_text(command, channel.name, text, self.hostmask, client_tags)
                continue
            user = self.network.find_user(target)
            if user is None:
                if errors:
                    self.reply("401", target, "No such nick/channel")
                continue
            if user.local:
                user.relay_text(command, user.nick, text, self.hostmask, client_tags)
            elif user.link is not None:
                if not user.link.send_private(self, user, command, text):
                    if errors:
                        self.reply("401", user.nick, "No chat room in common: join one of their rooms first")
                    continue
            if errors and user.away:
                self.reply("301", user.nick, user.away)
            if "echo-message" in self.caps:
                self.relay_text(command, user.nick, text, self.hostmask, client_tags)

    def irc_TAGMSG(self, message: Message) -> None:
        """Client-only tags (typing notifications) between IRC clients; never bridged to rooms."""
        if not message.params:
            return
        client_tags = {key: value for key, value in message.tags.items() if key.startswith("+")}
        target = message.params[0]
        outgoing = Message("TAGMSG", (target,), prefix=self.hostmask, tags=client_tags)
        if target.startswith("#"):
            channel = self.network.find_channel(target)
            if channel is not None and self in channel.members:
                for member in channel.local_members():
                    if member is not self and "message-tags" in member.caps:
                        member.deliver(outgoing)
        else:
            user = self.network.find_user(target)
            if user is not None and user.local and "message-tags" in user.caps:
                user.deliver(outgoing)

    def irc_ISON(self, message: Message) -> None:
        nicks = " ".join(message.params).split()
        online = [self.network.find_user(nick).nick for nick in nicks if self.network.find_user(nick)]
        self.reply("303", " ".join(online))

    def irc_USERHOST(self, message: Message) -> None:
        replies = []
        for nick in message.params[:5]:
            user = self.network.find_user(nick)
            if user is not None:
                replies.append(f"{user.nick}={'-' if user.away else '+'}{user.username}@{user.host}")
        self.reply("302", " ".join(replies))


class _RefusedProtocol(protocol.Protocol):
    """Tells a refused client why (address not allowed, too many connections), then closes."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        line = format_message(Message("ERROR", (f"Closing Link: {self.reason}",)))
        self.transport.write(line.encode("utf-8") + b"\r\n")
        self.transport.loseConnection()


class IrcServerFactory(protocol.ServerFactory):
    """
    Builds L{IRCServerProtocol}s for one network, enforcing the process's network policy (the
    ``network`` section: allow-list and per-IP limit, counted together with the web's) and the
    IRC section's own C{max_connections_per_ip}.

    Args:
        policy: the shared C{NetworkPolicy} (C{allows}, C{acquire_connection},
            C{release_connection}), or None to let every address in without a shared count.
    """

    _log = Logger()
    noisy = False

    def __init__(self, network: IrcNetwork, clock: Any, policy: Any = None) -> None:
        self.network = network
        self.clock = clock
        self.policy = policy
        self.connections: Set[IRCServerProtocol] = set()

    def _refuse(self, reason: str) -> protocol.Protocol:
        refused = _RefusedProtocol(reason)
        refused.factory = self
        return refused

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        host = getattr(addr, "host", "")
        policy = self.policy
        if policy is not None and not policy.allows(host):
            self._log.info("IRC connection from {host} refused: not in the allow-list", host=host)
            policy.refused("address")
            return self._refuse("Your address is not allowed on this server")
        limit = self.network.config.max_connections_per_ip
        count = self.network.connections_per_ip.get(host, 0)
        if limit and count >= limit:
            if policy is not None:
                policy.refused("connections_per_ip")
            return self._refuse("Too many connections from your address")
        if policy is not None and not policy.acquire_connection(host):
            return self._refuse("Too many connections from your address")
        proto = _TrackedProtocol(self.network, self.clock)
        proto.factory = self
        proto._counted_ip = host
        proto._policy, proto._policy_address = policy, host
        self.network.connections_per_ip[host] = count + 1
        return proto

    def close_all(self, reason: str = "Server shutting down") -> None:
        for proto in list(self.connections):
            proto.close(reason)


class _TrackedProtocol(IRCServerProtocol):
    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.connections.discard(self)
        super().connectionLost(reason)
