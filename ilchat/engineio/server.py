# -*- test-case-name: tests.engineio.test_server -*-
"""Engine.IO protocol v4 server on twisted.web (long-polling) and Autobahn (websocket).

Usage::

    class Echo:
        __slots__ = ("session",)
        def __init__(self, session):
            self.session = session
        def message_received(self, data):          # str, or bytes for binary
            self.session.send_message(data)
        def session_closed(self, reason):          # "transport close", "ping timeout", ...
            pass

    server = EngineIOServer(reactor, Echo)
    root.putChild(b"engine.io", server.resource)

The resource serves both transports on one path: ``?EIO=4&transport=polling`` (GET receives,
POST sends) and ``?EIO=4&transport=websocket`` (with ``sid`` for an upgrade from polling).  Errors
are answered the way the socket.io v4 server (engine.io 6) does: HTTP 400 with
``{"code": N, "message": "..."}``, 403 for a refused origin.

The application object returned by ``handler_factory(session)`` gets each message with
``message_received(data)`` and the end of the session with ``session_closed(reason)``; it sends
with ``session.send_message(data)`` or, to share one encoding between many sessions,
``session.send_packets([OutgoingPacket(...)])``.
"""

from __future__ import annotations

import pprint
import secrets
from collections import Counter
from fnmatch import fnmatchcase
from typing import Any, Callable, Iterable, Protocol, Sequence

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
import autobahn.websocket.protocol as _autobahn_protocol
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ilchat.engineio import packets as P
from ilchat.engineio.frames import FrameOutbox, direct_socket, read_data_frame, write_frames
from ilchat.jsonutil import dumps
from ilchat.logs import RepeatedLog

__all__ = [
    "EngineIOServer",
    "EngineIOSession",
    "OutgoingPacket",
    "SessionHandler",
    "ERROR_UNKNOWN_TRANSPORT",
    "ERROR_UNKNOWN_SID",
    "ERROR_BAD_HANDSHAKE_METHOD",
    "ERROR_BAD_REQUEST",
    "ERROR_FORBIDDEN",
    "ERROR_UNSUPPORTED_PROTOCOL_VERSION",
]

ERROR_UNKNOWN_TRANSPORT = 0
ERROR_UNKNOWN_SID = 1
ERROR_BAD_HANDSHAKE_METHOD = 2
ERROR_BAD_REQUEST = 3
ERROR_FORBIDDEN = 4
ERROR_UNSUPPORTED_PROTOCOL_VERSION = 5

_ERROR_MESSAGES = {
    ERROR_UNKNOWN_TRANSPORT: "Transport unknown",
    ERROR_UNKNOWN_SID: "Session ID unknown",
    ERROR_BAD_HANDSHAKE_METHOD: "Bad handshake method",
    ERROR_BAD_REQUEST: "Bad request",
    ERROR_FORBIDDEN: "Forbidden",
    ERROR_UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}

_OPENING, _OPEN, _CLOSING, _CLOSED = range(4)

#: How long a probing websocket may take to send the ``5`` upgrade packet (engine.io: 10 s).
UPGRADE_TIMEOUT = 10.0

#: Bound on packets queued for a polling client that does not come back to read them (the
#: bytes are bounded too, by ``max_backlog``).
MAX_POLLING_QUEUE = 10_000

#: Most packets one polling POST may carry. socket.io-client sends what was emitted during one
#: round trip (ILIAS pages: a handful); a POST of thousands of tiny packets would hold the reactor
#: for as long as it takes to handle them all, so it closes the session instead.
MAX_PACKETS_PER_POST = 500

#: Most websocket messages handled per connection in one reactor turn; the rest of what arrived
#: waits for the next turn, with the connection's reading paused meanwhile.
MAX_FRAMES_PER_TURN = 100

#: Close codes of a websocket that broke the protocol or a limit (RFC 6455 §7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008

_log = Logger(namespace="ilchat.engineio")


class SessionHandler(Protocol):
    """What the application attaches to each session."""

    def message_received(self, data: str | bytes) -> None: ...

    def session_closed(self, reason: str) -> None: ...


class OutgoingPacket:
    """One Engine.IO packet encoded once, for any number of sessions and both transports.

    The websocket frame (Autobahn ``PreparedMessage``, never compressed) and the long-polling text
    are each built at most once, on first use, so a broadcast costs one encoding however many
    sockets receive it.
    """

    __slots__ = ("data", "_polling", "_prepared")

    def __init__(self, packet_type: int, data: str | bytes = "") -> None:
        self.data: str | bytes = P.encode_packet(packet_type, data)
        self._polling: str | None = None
        self._prepared: PreparedMessage | None = None

    @classmethod
    def message(cls, data: str | bytes) -> "OutgoingPacket":
        """A ``MESSAGE`` packet (text or binary)."""
        return cls(P.MESSAGE, data)

    @property
    def polling(self) -> str:
        """The packet as it appears in a long-polling payload."""
        text = self._polling
        if text is None:
            data = self.data
            if isinstance(data, bytes):
                text = P.encode_polling_packet(P.MESSAGE, data)
            else:
                text = data
            self._polling = text
        return text

    @property
    def prepared(self) -> PreparedMessage:
        """The packet as a ready-made websocket frame."""
        msg = self._prepared
        if msg is None:
            data = self.data
            if isinstance(data, bytes):
                msg = PreparedMessage(data, True, False, True)
            else:
                msg = PreparedMessage(data.encode("utf-8"), False, False, True)
            self._prepared = msg
        return msg


_NOOP = OutgoingPacket(P.NOOP)
_PING = OutgoingPacket(P.PING)


class EngineIOSession:
    """One Engine.IO client: its transport, send queue, heartbeat and upgrade state.

    Attributes:
        sid: the session id (random, from :mod:`secrets`).
        transport: ``"polling"`` or ``"websocket"``.
        address: the client address (see ``EngineIOServer(address_resolver=...)``).
        headers: request headers of the handshake, lower-case names.
        query: query arguments of the handshake.
        handler: the application object for this session.
    """

    __slots__ = (
        "server",
        "sid",
        "transport",
        "address",
        "headers",
        "query",
        "handler",
        "_state",
        "_queue",
        "_get_request",
        "_ws",
        "_probe",
        "_ping_call",
        "_pong_call",
        "_upgrade_call",
        "_close_call",
        "_close_reason",
        "_close_detail",
        "_queued_bytes",
        "held",
    )

    def __init__(
        self,
        server: "EngineIOServer",
        transport: str,
        address: str,
        headers: dict[str, str],
        query: dict[str, str],
    ) -> None:
        self.server = server
        self.sid = secrets.token_urlsafe(15)
        self.transport = transport
        self.address = address
        self.headers = headers
        self.query = query
        self.handler: Any = None
        self._state = _OPENING
        self._queue: list[str] = []
        self._get_request: Request | None = None
        self._ws: EngineIOWebSocketProtocol | None = None
        self._probe: EngineIOWebSocketProtocol | None = None
        self._ping_call = None
        self._pong_call = None
        self._upgrade_call = None
        self._close_call = None
        self._close_reason = ""
        self._close_detail: str | None = None
        self._queued_bytes = 0
        #: Bytes the application keeps for this session (Socket.IO: attachments not yet
        #: complete); see :meth:`hold`.
        self.held = 0

    def __repr__(self) -> str:
        return f"<EngineIOSession {self.sid} {self.transport}>"

    @property
    def closed(self) -> bool:
        """True once the session is closing or closed; sends are then dropped."""
        return self._state >= _CLOSING

    @property
    def buffered(self) -> int:
        """
        Bytes held for this session: packets a polling client has not fetched (characters), what
        a websocket client left unread beyond the full socket buffers, and what the application
        holds (:meth:`hold`). Over the server's ``max_backlog`` the session is closed.
        """
        ws = self._ws
        return self._queued_bytes + self.held + (ws.backlog if ws is not None else 0)

    def hold(self, size: int) -> bool:
        """
        The application keeps ``size`` more bytes for this session (negative: releases them).

        Returns:
            False when that takes the session over ``max_backlog``: it is then closed (one log
            line, the reason in the websocket's close frame) and the caller drops what it held.
        """
        self.held = max(0, self.held + size)
        if size > 0 and self.buffered > self.server.max_backlog:
            self.limit_exceeded(f"more than {self.server.max_backlog} bytes buffered")
            return False
        return True

    # -- sending ---------------------------------------------------------------------------

    def send_message(self, data: str | bytes) -> None:
        """Send one message packet (text, or bytes as a binary packet)."""
        self.send_packets((OutgoingPacket(P.MESSAGE, data),))

    def send_packets(self, packets: Sequence[OutgoingPacket]) -> None:
        """Send already encoded packets; the hot path of every broadcast (no allocation here)."""
        if self._state != _OPEN:
            return
        ws = self._ws
        if ws is not None:
            if ws.state == ws.STATE_OPEN:
                for packet in packets:
                    ws.send_prepared(packet.prepared)
                if ws.write_paused:
                    # The kernel and Twisted buffers are full: count what piles up behind them.
                    ws.backlog += sum(len(packet.prepared.payloadHybi) for packet in packets)
                    if self.buffered > self.server.max_backlog:
                        _log.info(
                            "Engine.IO session {sid}: client does not read, closing",
                            sid=self.sid,
                        )
                        self.close("transport error", discard=True, abort=True)
            return
        queue = self._queue
        for packet in packets:
            text = packet.polling
            queue.append(text)
            self._queued_bytes += len(text)
        if self._get_request is not None:
            self._flush_poll()
        elif len(queue) > MAX_POLLING_QUEUE or self.buffered > self.server.max_backlog:
            # A slow or vanished polling reader: bound the memory, then let it go.
            _log.info(
                "Engine.IO session {sid}: client does not poll, {size} bytes in {count} packets"
                " queued, closing",
                sid=self.sid,
                size=self._queued_bytes,
                count=len(queue),
            )
            self.close("transport error", discard=True)

    # -- lifecycle -------------------------------------------------------------------------

    def _open(self) -> None:
        """Send the open packet, attach the application and start the heartbeat."""
        server = self.server
        upgrades = ["websocket"] if self.transport == "polling" else []
        handshake = dumps(
            {
                "sid": self.sid,
                "upgrades": upgrades,
                "pingInterval": int(server.ping_interval * 1000),
                "pingTimeout": int(server.ping_timeout * 1000),
                "maxPayload": server.max_payload,
            }
        )
        self._state = _OPEN
        self.send_packets((OutgoingPacket(P.OPEN, handshake),))
        self._schedule_ping()
        try:
            self.handler = server.handler_factory(self)
        except Exception:
            _log.failure("Engine.IO handler factory failed for {sid}", sid=self.sid)
            self.close("server error", discard=True)

    def close(
        self,
        reason: str = "forced close",
        discard: bool = False,
        final_packet: str = "1",
        abort: bool = False,
        detail: str | None = None,
        close_code: int = CLOSE_POLICY_VIOLATION,
    ) -> None:
        """Close the session, tell the application, and release the transport.

        Args:
            reason: given to ``handler.session_closed`` (engine.io's reason strings).
            discard: drop queued packets instead of letting a polling client fetch them with a
                final close packet (used for protocol errors).
            final_packet: what a parked polling GET gets last: the close packet, or a noop when
                the client itself closed (engine.io's polling ``onClose``).
            abort: drop a websocket's TCP connection at once (a client that does not read would
                never get the close frame).
            detail: why, for the client: the websocket's close frame carries it with
                ``close_code``; a polling POST gets it in its 400 answer.
        """
        if self._state >= _CLOSING:
            return
        self._state = _CLOSING
        self._close_reason = reason
        self._close_detail = detail
        self._cancel_timers()
        server = self.server
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.session = None
            probe.sendClose()
        ws = self._ws
        if ws is not None:
            ws.session = None
            if abort:
                ws.dropConnection(abort=True)
            elif ws.state == ws.STATE_OPEN:
                if detail:
                    # The reason must fit the close frame's 123 bytes; cut at a character.
                    reason_bytes = detail.encode("utf-8")[:123].decode("utf-8", "ignore")
                    ws.sendCloseFrame(close_code, reason_bytes.encode("utf-8"), isReply=False)
                else:
                    ws.sendClose()
            self._finalize()
        elif self._get_request is not None:
            # Polling: the parked GET takes what is queued plus the close packet.
            if discard:
                self._queue.clear()
            self._queue.append(final_packet)
            self._flush_poll()
            self._finalize()
        elif discard or not self._queue:
            self._finalize()
        else:
            # Keep the session until the client polls its last packets (or gives up).
            self._queue.append("1")
            self._close_call = server.reactor.callLater(
                server.ping_interval + server.ping_timeout, self._finalize
            )
        handler, self.handler = self.handler, None
        if handler is not None:
            try:
                handler.session_closed(reason)
            except Exception:
                _log.failure("Engine.IO session_closed handler failed for {sid}", sid=self.sid)

    def _finalize(self) -> None:
        self._state = _CLOSED
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()
        self._close_call = None
        self._queue = []
        self._queued_bytes = 0
        self.held = 0
        self.server._forget(self)

    def _cancel_timers(self) -> None:
        for name in ("_ping_call", "_pong_call", "_upgrade_call"):
            call = getattr(self, name)
            if call is not None:
                if call.active():
                    call.cancel()
                setattr(self, name, None)

    # -- heartbeat (server pings, client pongs) ------------------------------------------

    def _schedule_ping(self) -> None:
        self._ping_call = self.server.reactor.callLater(self.server.ping_interval, self._send_ping)

    def _send_ping(self) -> None:
        self._ping_call = None
        self.send_packets((_PING,))
        self._pong_call = self.server.reactor.callLater(self.server.ping_timeout, self._pong_missed)

    def _pong_missed(self) -> None:
        self._pong_call = None
        self.close("ping timeout", discard=True)

    # -- incoming packets ------------------------------------------------------------------

    def packet_received(self, packet_type: int, data: str | bytes) -> None:
        """Handle one decoded packet from the client's current transport."""
        if self._state != _OPEN:
            return
        if packet_type == P.MESSAGE:
            handler = self.handler
            if handler is not None:
                handler.message_received(data)
        elif packet_type == P.PONG:
            if self._pong_call is not None:
                self._pong_call.cancel()
                self._pong_call = None
                self._schedule_ping()
        elif packet_type == P.CLOSE:
            self.close("transport close", discard=True, final_packet="6")
        elif packet_type == P.NOOP:
            pass
        else:
            # open, ping (v4 pings go server -> client), upgrade outside an upgrade: invalid.
            self.protocol_error(f"unexpected packet type {packet_type}")

    def protocol_error(self, why: str) -> None:
        """A malformed packet: close this session only, with one log line and the reason."""
        self._close_for(why, "parse error", CLOSE_PROTOCOL_ERROR, "parse_error")

    def limit_exceeded(self, why: str) -> None:
        """The client went over a limit: close this session only, with one log line and the reason."""
        self._close_for(why, "transport error", CLOSE_POLICY_VIOLATION, "session_limit")

    def _close_for(self, why: str, reason: str, close_code: int, counted_as: str) -> None:
        if self._state >= _CLOSING:
            return
        self.server.refusals[counted_as] += 1
        # The same fault from one address is one line per 10 s (then one with the count).
        self.server.repeated_log.info(
            "Engine.IO session {sid} from {address}: {why}, closing",
            sid=self.sid,
            address=self.address,
            why=why,
            key=(self.address, why),
        )
        self.close(reason, discard=True, detail=why, close_code=close_code)

    # -- long-polling ----------------------------------------------------------------------

    def handle_get(self, request: Request) -> bytes | int:
        """A polling GET: answer now if packets wait, else park it until there are some."""
        if self._get_request is not None:
            # Two GETs at once: engine.io answers the new one 400 and closes the session.
            _log.info("Engine.IO session {sid}: overlapping GET, closing", sid=self.sid)
            self.close("transport error", discard=True)
            request.setResponseCode(400)
            return b""
        if self._queue or (self._probe is not None and self._probe.upgrade_probed):
            self._get_request = request
            if not self._queue:
                self._queue.append(_NOOP.polling)
            self._flush_poll()
            if self._state == _CLOSING:
                self._finalize()
            return NOT_DONE_YET
        self._get_request = request
        request.notifyFinish().addErrback(self._poll_lost, request)
        return NOT_DONE_YET

    def _poll_lost(self, failure: Any, request: Request) -> None:
        if self._get_request is request:
            self._get_request = None
            self.close("transport close", discard=True)

    def _flush_poll(self) -> None:
        request, self._get_request = self._get_request, None
        queue, self._queue = self._queue, []
        self._queued_bytes = 0
        body = P.encode_payload(queue).encode("utf-8")
        _write_response(request, 200, b"text/plain; charset=UTF-8", body)

    def handle_post(self, request: Request) -> bytes:
        """A polling POST: decode the payload and hand each packet on; answer ``ok``."""
        body = request.content.read(self.server.max_payload + 1)
        if len(body) > self.server.max_payload:
            _log.info("Engine.IO session {sid}: POST over maxPayload, closing", sid=self.sid)
            self.close("transport error", discard=True)
            request.setResponseCode(413)
            return b""
        if body.count(b"\x1e") >= MAX_PACKETS_PER_POST:
            self.limit_exceeded(f"more than {MAX_PACKETS_PER_POST} packets in one POST")
            return _error_body(request, ERROR_BAD_REQUEST, self._close_detail)
        try:
            decoded = P.decode_payload(body)
        except P.PacketError as e:
            self.protocol_error(str(e))
            return _error_body(request, ERROR_BAD_REQUEST, str(e))
        for packet_type, data in decoded:
            if self._state != _OPEN:
                break
            self.packet_received(packet_type, data)
        if self._state != _OPEN and self._close_detail:
            # A packet of this POST broke the protocol or a limit: the client learns why.
            return _error_body(request, ERROR_BAD_REQUEST, self._close_detail)
        request.setHeader(b"content-type", b"text/html")
        return b"ok"

    # -- websocket -------------------------------------------------------------------------

    def websocket_opened(self, ws: "EngineIOWebSocketProtocol") -> None:
        """A websocket for this session completed its handshake: new session or probe."""
        if self.transport == "websocket" and self._ws is None and self._state == _OPENING:
            self._ws = ws
            self._open()
            return
        if self._state != _OPEN or self._probe is not None or self.transport != "polling":
            ws.session = None
            ws.sendClose()
            return
        self._probe = ws
        self._upgrade_call = self.server.reactor.callLater(UPGRADE_TIMEOUT, self._upgrade_timeout)

    def _upgrade_timeout(self) -> None:
        self._upgrade_call = None
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.session = None
            probe.sendClose()

    def websocket_frame(self, ws: "EngineIOWebSocketProtocol", frame: str | bytes) -> None:
        """One frame from the session's websocket or from a probing one."""
        try:
            packet_type, data = P.decode_packet(frame)
        except P.PacketError as e:
            if ws is self._ws:
                self.protocol_error(str(e))
            else:
                self._upgrade_timeout()
            return
        if ws is self._ws:
            self.packet_received(packet_type, data)
            return
        if ws is not self._probe:
            return
        if packet_type == P.PING and data == "probe":
            ws.upgrade_probed = True
            ws.sendPreparedMessage(OutgoingPacket(P.PONG, "probe").prepared)
            # A noop releases the parked (or next) GET so the client can pause polling; if no
            # GET takes it, it goes out on the websocket after the upgrade, as engine.io does.
            self._queue.append(_NOOP.polling)
            if self._get_request is not None:
                self._flush_poll()
        elif packet_type == P.UPGRADE and ws.upgrade_probed:
            self._probe = None
            if self._upgrade_call is not None:
                self._upgrade_call.cancel()
                self._upgrade_call = None
            self.transport = "websocket"
            self._ws = ws
            queue, self._queue = self._queue, []
            self._queued_bytes = 0
            request, self._get_request = self._get_request, None
            if request is not None:
                _write_response(request, 200, b"text/plain; charset=UTF-8", b"6")
            # What polling had not delivered yet goes out on the websocket, in order.
            for text in queue:
                if text[:1] == "b":
                    ws.sendMessage(P.decode_payload(text)[0][1], True)
                else:
                    ws.sendMessage(text.encode("utf-8"), False)
        else:
            self._upgrade_timeout()

    def websocket_closed(self, ws: "EngineIOWebSocketProtocol") -> None:
        if ws is self._ws:
            self._ws = None
            self.close("transport close", discard=True)
        elif ws is self._probe:
            self._probe = None
            if self._upgrade_call is not None:
                self._upgrade_call.cancel()
                self._upgrade_call = None


class _WebSocketContext:
    __slots__ = ("session", "address", "headers", "query")

    def __init__(self, session, address, headers, query):
        self.session = session
        self.address = address
        self.headers = headers
        self.query = query


class _WriteWatch:
    """Push-producer stand-in that tells the protocol when the transport's buffer is full."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: "EngineIOWebSocketProtocol") -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:
        self.protocol.write_paused = True

    def resumeProducing(self) -> None:
        self.protocol.write_paused = False
        self.protocol.backlog = 0

    def stopProducing(self) -> None:
        pass


class _LazyPformat:
    """``pformat`` that runs only if the text is wanted (see ``_connectionMade`` below)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return pprint.pformat(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class EngineIOWebSocketProtocol(WebSocketServerProtocol):
    """Autobahn protocol for one Engine.IO websocket (a new session or an upgrade probe)."""

    session: EngineIOSession | None = None
    context: _WebSocketContext | None = None
    upgrade_probed = False
    write_paused = False
    backlog = 0
    #: Frames waiting for the end of this reactor turn (see :class:`FrameOutbox`).
    outgoing: list[bytes] | None = None
    #: Messages this connection may still hand on in the current reactor turn.
    frames_left = MAX_FRAMES_PER_TURN
    _resume_call: Any = None
    _direct: Any = None
    _reactor: Any = None

    def _connectionMade(self) -> None:
        """
        Autobahn's set-up, without its eager ``pformat`` of ~40 options for a debug line.

        ``WebSocketProtocol._connectionMade`` pretty-prints its options for ``log.debug`` even when
        debug is off: 12 % of the server's CPU while 2,000 clients connect (storm, py-spy). The
        module's ``pformat`` is swapped for a lazy one during the call (the reactor thread is the
        only caller, so nothing else sees the swap); the debug line, if enabled, is unchanged.
        """
        _autobahn_protocol.pformat = _LazyPformat
        try:
            super()._connectionMade()
        finally:
            _autobahn_protocol.pformat = pprint.pformat

    def send_prepared(self, prepared: PreparedMessage) -> None:
        """
        Write one prepared frame: the per-delivery hot path of every broadcast.

        ``sendPreparedMessage`` goes through ``sendData``, which formats a debug line per call
        (``hltype``/``hlval``, with click styling) even when debug is off: ~19 % of the server's
        CPU in the fan-out (py-spy). Without compression, queued writes or octet logging, what
        ``sendData`` does is a ``transport.write`` plus the traffic counter; here the frame joins
        this turn's others in the factory's :class:`FrameOutbox` instead (one write per
        connection per reactor turn). Anything else goes the regular way.
        """
        if self._perMessageCompress is None and not self.send_queue and not self.logOctets:
            data = prepared.payloadHybi
            reactor = self._reactor
            if reactor is not None:
                self.factory.outbox.post(self, data, reactor)
            else:
                self.transport.write(data)
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        else:
            self.sendPreparedMessage(prepared)

    def flush_outgoing(self) -> None:
        """Write the frames this connection got during the current reactor turn."""
        frames, self.outgoing = self.outgoing, None
        if frames:
            write_frames(self.transport, self._direct, frames)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Every other write of Autobahn's (close frames, pongs, sendMessage) comes through here:
        # frames queued earlier in this turn go first.
        if self.outgoing:
            self.flush_outgoing()
        super().sendData(data, sync, chopsize)

    def dropConnection(self, abort: bool = False) -> None:
        if abort:
            self.outgoing = None
        super().dropConnection(abort)

    def dataReceived(self, data: bytes) -> None:
        if self._resume_call is None:
            self.frames_left = MAX_FRAMES_PER_TURN
        super().dataReceived(data)

    def _pause_reading(self) -> None:
        """
        This turn's share of messages is used up: stop reading, go on in the next turn.

        One TCP read can carry thousands of tiny frames; handling them all at once would hold
        every other connection back. What is left stays in Autobahn's buffer and the kernel's
        (so the client is slowed by TCP, not by our memory).
        """
        if self._resume_call is None:
            self.transport.pauseProducing()
            self._resume_call = self._reactor.callLater(0, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume_call = None
        self.frames_left = MAX_FRAMES_PER_TURN
        if self.state in (self.STATE_OPEN, self.STATE_CLOSING):
            self.transport.resumeProducing()
            self.consumeData()

    def processData(self) -> bool:
        """
        Take a whole single-frame text or binary message straight from the buffer.

        Autobahn's general frame machine (a masker object per frame, a UTF-8 validator, five
        callbacks) was ~15 % of the server's CPU with 2,000 clients chatting (py-spy, many-rooms
        bench). Between frames of an open, uncompressed connection, :func:`read_data_frame`
        takes the common case; control frames, fragments and anything malformed or too big are
        left to Autobahn, which answers them as before.
        """
        if self.frames_left <= 0 and self.state == self.STATE_OPEN and self._reactor is not None:
            self._pause_reading()
            return False
        if (
            self.current_frame is None
            and not self.inside_message
            and self.state == self.STATE_OPEN
            and self._perMessageCompress is None
        ):
            frame = read_data_frame(self.data, self.maxMessagePayloadSize)
            if frame is not None:
                is_binary, payload, used = frame
                self.data = self.data[used:]
                if is_binary:
                    self.frame_received(payload)
                else:
                    try:
                        text = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        return not self._invalid_payload(
                            "encountered invalid UTF-8 while processing text message"
                        ) and len(self.data) > 0
                    self.frame_received(text)
                return len(self.data) > 0
        return super().processData()

    def onOpen(self) -> None:
        # The HTTP channel that handed this connection over is still the transport's producer;
        # put a watch in its place so a client that stops reading can be noticed (and dropped).
        transport = self.transport
        self._direct = direct_socket(transport)
        self._reactor = getattr(transport, "reactor", None)
        try:
            transport.unregisterProducer()
            transport.registerProducer(_WriteWatch(self), True)
        except Exception:
            _log.failure("Engine.IO: could not watch the websocket's write buffer")
        context, self.context = self.context, None
        if context is None:
            self.sendClose()
            return
        session = context.session
        if session is None:
            server = self.factory.eio_server
            session = EngineIOSession(
                server, "websocket", context.address, context.headers, context.query
            )
            server._register(session)
        self.session = session
        session.websocket_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Autobahn has validated a text message's UTF-8 already.
        self.frame_received(payload if isBinary else payload.decode("utf-8"))

    def frame_received(self, frame: str | bytes) -> None:
        """One whole message, text or binary, for the session."""
        self.frames_left -= 1
        session = self.session
        if session is None:
            return
        try:
            session.websocket_frame(self, frame)
        except Exception:
            _log.failure("Engine.IO websocket frame handling failed")
            session.close("server error", discard=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.outgoing = None
        call, self._resume_call = self._resume_call, None
        if call is not None and call.active():
            call.cancel()
        session, self.session = self.session, None
        if session is not None:
            session.websocket_closed(self)


class _ConnectionTimer:
    """One of L{_ConnectionTimers}: forgets itself when it fires or is cancelled."""

    __slots__ = ("_owner", "_call")

    def __init__(self, owner: "_ConnectionTimers", delay: float, func: Callable[[], Any]) -> None:
        self._owner = owner
        self._call = owner.reactor.callLater(delay, self._fire, func)

    def _fire(self, func: Callable[[], Any]) -> None:
        self._owner.pending.discard(self)
        func()

    def active(self) -> bool:
        return self._call.active()

    def cancel(self) -> None:
        self._owner.pending.discard(self)
        if self._call.active():
            self._call.cancel()


class _ConnectionTimers:
    """
    The timers Autobahn starts per websocket (open/close handshake timeouts), owned by us.

    Autobahn puts them on txaio's batched timer, whose buckets keep a reactor call pending after
    their last timer is cancelled and cannot be stopped: a server that closes its websockets at
    shutdown would leave calls behind. Here each timer is a plain reactor call that
    C{cancel_all} really cancels.
    """

    __slots__ = ("reactor", "pending")

    def __init__(self, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.pending: set = set()

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> _ConnectionTimer:
        timer = _ConnectionTimer(self, delay, lambda: func(*args, **kwargs))
        self.pending.add(timer)
        return timer

    def cancel_all(self) -> None:
        for timer in list(self.pending):
            timer.cancel()


class EngineIOWebSocketFactory(WebSocketServerFactory):
    """Factory handing each new protocol the context the HTTP resource checked."""

    protocol = EngineIOWebSocketProtocol

    def __init__(self, eio_server: "EngineIOServer") -> None:
        super().__init__(reactor=eio_server.reactor)
        self.eio_server = eio_server
        self.next_context: _WebSocketContext | None = None
        self.outbox = FrameOutbox()
        # Autobahn reads its per-connection timers from this attribute (see _ConnectionTimers).
        self._batched_timer = self.timers = _ConnectionTimers(eio_server.reactor)

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        proto.context, self.next_context = self.next_context, None
        return proto


def _write_response(request: Request | None, code: int, content_type: bytes, body: bytes) -> None:
    """Finish a parked request, unless the client has gone already."""
    if request is None or request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def _error_body(request: Request, code: int, message: str | None = None) -> bytes:
    request.setResponseCode(403 if code == ERROR_FORBIDDEN else 400)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"code": code, "message": message or _ERROR_MESSAGES[code]}).encode()


def _origin_matcher(allowed: Any) -> Callable[[str], bool] | None:
    if allowed is None:
        return None
    if callable(allowed):
        return allowed
    if isinstance(allowed, str):
        allowed = [allowed]
    patterns = list(allowed)
    return lambda origin: any(fnmatchcase(origin, p) for p in patterns)


class EngineIOResource(Resource):
    """The ``socket.io`` / ``engine.io`` path: polling, websocket, CORS, errors."""

    isLeaf = True

    def __init__(self, server: "EngineIOServer") -> None:
        super().__init__()
        self._server = server
        self._ws_resource = WebSocketResource(server.ws_factory)

    def render(self, request: Request) -> bytes | int:
        try:
            return self._render(request)
        except Exception:
            _log.failure("Engine.IO request failed")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"application/json")
            return b'{"code":500,"message":"Internal server error"}'

    def _render(self, request: Request) -> bytes | int:
        server = self._server
        request.setHeader(b"cache-control", b"no-store")
        origin = request.getHeader(b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1")
            if server.origin_check is not None:
                allowed = server.origin_check(request, origin_text)
            elif server.origin_allowed is None or server.origin_allowed(origin_text):
                allowed = origin_text
            else:
                allowed = None
            if allowed is None:
                return _error_body(request, ERROR_FORBIDDEN)
            if allowed == "*":
                request.setHeader(b"access-control-allow-origin", b"*")
            else:
                request.setHeader(b"access-control-allow-origin", origin)
                request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"vary", b"Origin")
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET,POST,OPTIONS")
            wanted = request.getHeader(b"access-control-request-headers")
            if wanted:
                request.setHeader(b"access-control-allow-headers", wanted)
            request.setHeader(b"content-length", b"0")
            return b""
        if server.connection_filter is not None:
            refused = server.connection_filter(request)
            if refused is not None:
                status, message = refused
                request.setResponseCode(status)
                request.setHeader(b"content-type", b"application/json")
                return dumps({"code": ERROR_FORBIDDEN, "message": message}).encode()
        args = request.args
        transport = _arg(args, b"transport")
        if transport not in ("polling", "websocket"):
            return _error_body(request, ERROR_UNKNOWN_TRANSPORT)
        is_upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        sid = _arg(args, b"sid")
        session = None
        if sid is not None:
            session = server.sessions.get(sid)
            if session is None:
                return _error_body(request, ERROR_UNKNOWN_SID)
            if transport == "websocket":
                if not is_upgrade or session.transport != "polling" or session.closed:
                    return _error_body(request, ERROR_BAD_REQUEST)
            elif session.transport != transport:
                return _error_body(request, ERROR_BAD_REQUEST)
        else:
            if method != b"GET":
                return _error_body(request, ERROR_BAD_HANDSHAKE_METHOD)
            if transport == "websocket" and not is_upgrade:
                return _error_body(request, ERROR_BAD_REQUEST)
            if _arg(args, b"EIO") != "4":
                return _error_body(request, ERROR_UNSUPPORTED_PROTOCOL_VERSION)

        if transport == "websocket":
            query = _query(args)
            server.ws_factory.next_context = _WebSocketContext(
                session,
                server.resolve_address(request),
                _headers(request),
                query,
            )
            try:
                return self._ws_resource.render(request)
            finally:
                server.ws_factory.next_context = None

        if session is None:
            session = EngineIOSession(
                server, "polling", server.resolve_address(request), _headers(request), _query(args)
            )
            server._register(session)
            session._open()
            if session.closed:
                return _error_body(request, ERROR_BAD_REQUEST)
            return session.handle_get(request)
        if method == b"GET":
            return session.handle_get(request)
        if method == b"POST":
            return session.handle_post(request)
        return _error_body(request, ERROR_BAD_REQUEST)


def _arg(args: dict[bytes, list[bytes]], name: bytes) -> str | None:
    values = args.get(name)
    if not values:
        return None
    return values[0].decode("utf-8", "replace")


def _query(args: dict[bytes, list[bytes]]) -> dict[str, str]:
    return {
        k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace") for k, v in args.items() if v
    }


def _headers(request: Request) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): b",".join(values).decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def default_address(request: Request) -> str:
    """The TCP peer address of the request."""
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or str(peer)


class EngineIOServer:
    """Engine.IO v4 server: owns the sessions, the timers' settings and the web resource.

    Args:
        reactor: provides ``callLater`` (a ``task.Clock`` in tests).
        handler_factory: ``handler_factory(session)`` returns the application object of a new
            session (see :class:`SessionHandler`).
        ping_interval: seconds between server pings (engine.io default 25).
        ping_timeout: seconds to wait for the pong (default 20).
        max_payload: largest POST body / websocket message in bytes (default 1e6).
        allowed_origins: ``None`` allows (and echoes) every ``Origin``; otherwise a callable
            ``origin -> bool`` or a list of patterns with ``*`` wildcards.  A refused origin gets
            403 ``{"code":4,"message":"Forbidden"}``.
        address_resolver: ``address_resolver(request) -> str`` for ``session.address``; the TCP
            peer address by default (a network policy can trust proxy headers instead).
        origin_check: ``origin_check(request, origin) -> None | "*" | origin``, asked instead of
            ``allowed_origins`` when set (a network policy that needs the request): ``None``
            refuses, ``"*"`` answers ``Access-Control-Allow-Origin: *`` without credentials,
            the origin is echoed with ``Access-Control-Allow-Credentials: true``.
        connection_filter: ``connection_filter(request) -> None | (http_status, message)``;
            a tuple refuses the request with that status and ``{"code":4,"message":message}``.
        open_handshake_timeout: seconds a websocket may take to complete its opening handshake.
        max_backlog: bytes one session may have buffered (``EngineIOSession.buffered``: what a
            websocket client leaves unread beyond the full socket buffers, what a polling client
            has not fetched, what the application holds for it) before it is closed (default:
            twice ``max_payload``, at least 1 MB). A websocket message being received is bounded
            by ``max_payload`` on its own.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        handler_factory: Callable[[EngineIOSession], Any],
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        allowed_origins: Callable[[str], bool] | Iterable[str] | None = None,
        address_resolver: Callable[[Request], str] | None = None,
        connection_filter: Callable[[Request], tuple[int, str] | None] | None = None,
        origin_check: Callable[[Request, str], str | None] | None = None,
        open_handshake_timeout: float = 10.0,
        max_backlog: int | None = None,
    ) -> None:
        self.reactor = reactor
        self.handler_factory = handler_factory
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = int(max_payload)
        self.max_backlog = max_backlog or max(2 * self.max_payload, 1_000_000)
        self.origin_allowed = _origin_matcher(allowed_origins)
        self.resolve_address = address_resolver or default_address
        self.connection_filter = connection_filter
        self.origin_check = origin_check
        #: One line per kind of refusal and address per 10 s, then one with the count.
        self.repeated_log = RepeatedLog(_log, reactor)
        #: Sessions closed for a malformed packet (``parse_error``) or a limit (``session_limit``).
        self.refusals: Counter[str] = Counter()
        self.sessions: dict[str, EngineIOSession] = {}
        self.ws_factory = EngineIOWebSocketFactory(self)
        self.ws_factory.setProtocolOptions(
            maxMessagePayloadSize=self.max_payload,
            maxFramePayloadSize=self.max_payload,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=1,
            autoPingInterval=0,
            # A client that breaks the protocol (bad UTF-8, oversized or malformed frames) gets a
            # close frame with the code and reason before the connection goes, not a bare drop.
            failByDrop=False,
        )
        self.resource = EngineIOResource(self)

    def _register(self, session: EngineIOSession) -> None:
        self.sessions[session.sid] = session

    def _forget(self, session: EngineIOSession) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def close(self) -> None:
        """Close every session (server shutdown)."""
        for session in list(self.sessions.values()):
            session.close("server shutting down")
            session._finalize()
        # The connections are closing with the process: no close handshake is waited for.
        self.ws_factory.timers.cancel_all()
        self.ws_factory.outbox.cancel()
        self.repeated_log.flush()
