# -*- test-case-name: tests.engineio.test_server -*-
"""One Engine.IO session: its transport (polling or websocket), send queue, heartbeat, upgrade.

The session is the state machine of engine.io's ``Socket``: the long-polling GET/POST handling
and the websocket (new or upgrading from polling) both end here; the HTTP resource
(:mod:`ilchat.engineio.resource`) only routes requests to it, and the websocket protocol
(:mod:`ilchat.engineio.websocket`) hands it whole frames. It is one state machine of about 500
lines on purpose: the polling and websocket halves share its state (queue, probe, timers), and
split apart each would reach into the other's.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request

from ilchat.engineio import packets as P
from ilchat.engineio._internals import frame_size
from ilchat.engineio.outgoing import NOOP_PACKET, PING_PACKET, OutgoingPacket
from ilchat.engineio.responses import ERROR_BAD_REQUEST, error_body, payload_body, write_response
from ilchat.jsonutil import dumps

if TYPE_CHECKING:
    from ilchat.engineio.server import EngineIOServer
    from ilchat.engineio.websocket import EngineIOWebSocketProtocol

__all__ = [
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "EngineIOSession",
    "MAX_PACKETS_PER_POST",
    "MAX_POLLING_QUEUE",
    "SessionHandler",
    "UPGRADE_TIMEOUT",
]

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

#: Close codes of a websocket that broke the protocol or a limit (RFC 6455 §7.4.1).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY_VIOLATION = 1008

_log = Logger(namespace="ilchat.engineio")


class SessionHandler(Protocol):
    """What the application attaches to each session."""

    def message_received(self, data: str | bytes) -> None: ...

    def session_closed(self, reason: str) -> None: ...


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
        "_poll_posted",
        "held",
        "__weakref__",
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
        self.sid = server.sid_prefix + secrets.token_urlsafe(15)
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
        self._poll_posted = False
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
    def ended(self) -> bool:
        """True once the session is gone from the server's table (its last packets fetched)."""
        return self._state == _CLOSED

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

    def send_packets(self, packets: Sequence[OutgoingPacket], now: bool = False) -> None:
        """
        Send already encoded packets; the hot path of every broadcast (no allocation here).

        On a websocket the frames of one reactor turn go out together at its end (one write per
        connection however many broadcasts reached it); with ``now`` (what is for this session
        alone: answers, acks, emits to one socket) each frame is written at once, in a write of
        its own, after what the turn queued before. A polling client gets either with its next
        GET; a parked GET is answered at the end of the turn with all the turn's packets
        (:class:`~ilchat.engineio.responses.PollOutbox`), or at once with ``now``.
        """
        if self._state != _OPEN:
            return
        ws = self._ws
        if ws is not None:
            if ws.state == ws.STATE_OPEN:
                send = ws.send_now if now else ws.send_prepared
                for packet in packets:
                    send(packet.prepared)
                if ws.write_paused:
                    # The kernel and Twisted buffers are full: count what piles up behind them.
                    ws.backlog += sum(frame_size(packet.prepared) for packet in packets)
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
            if now or len(queue) > MAX_POLLING_QUEUE:
                self._flush_poll()
            elif not self._poll_posted:
                self._poll_posted = True
                self.server.poll_outbox.post(self._flush_posted)
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
        self.send_packets((OutgoingPacket(P.OPEN, handshake),), True)
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
                    ws.close_with_reason(close_code, detail)
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
        call, self._ping_call = self._ping_call, None
        self.send_packets((PING_PACKET,))
        # The deadline counts from when the ping was due, not from when a busy reactor got to it:
        # a client is late after pingInterval + pingTimeout, however late our timers run.
        reactor = self.server.reactor
        due = call.getTime() if call is not None else reactor.seconds()
        delay = max(0.0, due + self.server.ping_timeout - reactor.seconds())
        self._pong_call = reactor.callLater(delay, self._pong_missed)

    def expire_if_late(self) -> bool:
        """
        Close the session for ping timeout if its pong deadline has passed already, though a busy
        reactor has not run that timer yet (it runs timers after the I/O of a turn): a request
        that comes after the deadline does not keep a session alive. True if it was closed.
        """
        call = self._pong_call
        if call is None or call.getTime() > self.server.reactor.seconds():
            return False
        self.close("ping timeout", discard=True)
        return True

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
                self._queue.append(NOOP_PACKET.polling)
            self._flush_poll()
            if self._state == _CLOSING:
                self._finalize()
            return NOT_DONE_YET
        self._get_request = request
        notify_lost = getattr(request, "notify_lost", None)
        if notify_lost is not None:
            notify_lost(self._poll_lost, request)  # a GET of the quick lane: no Deferred
        else:
            request.notifyFinish().addErrback(self._poll_lost, request)
        return NOT_DONE_YET

    def _poll_lost(self, failure: Any, request: Request) -> None:
        if self._get_request is request:
            self._get_request = None
            self.close("transport close", discard=True)

    def _flush_posted(self, bodies: dict[tuple[str, ...], bytes]) -> None:
        """The end of a turn that queued packets while a GET was parked (``PollOutbox``)."""
        self._poll_posted = False
        if self._get_request is not None and self._queue and self._state == _OPEN:
            self._flush_poll(bodies)

    def _flush_poll(self, bodies: dict[tuple[str, ...], bytes] | None = None) -> None:
        request, self._get_request = self._get_request, None
        queue, self._queue = self._queue, []
        self._queued_bytes = 0
        write_response(request, 200, b"text/plain; charset=UTF-8", payload_body(queue, bodies))

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
            return error_body(request, ERROR_BAD_REQUEST, self._close_detail)
        try:
            decoded = P.decode_payload(body)
        except P.PacketError as e:
            self.protocol_error(str(e))
            return error_body(request, ERROR_BAD_REQUEST, str(e))
        for packet_type, data in decoded:
            if self._state != _OPEN:
                break
            self.packet_received(packet_type, data)
        if self._state != _OPEN and self._close_detail:
            # A packet of this POST broke the protocol or a limit: the client learns why.
            return error_body(request, ERROR_BAD_REQUEST, self._close_detail)
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
            # A noop releases the parked GET so the client can pause polling (a GET that comes
            # later while upgrading gets one too, handle_get). Nothing goes to the websocket: as
            # in engine.io, which writes the noop only to a polling transport with a GET waiting.
            if self._get_request is not None:
                self._queue.append(NOOP_PACKET.polling)
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
                write_response(request, 200, b"text/plain; charset=UTF-8", b"6")
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

