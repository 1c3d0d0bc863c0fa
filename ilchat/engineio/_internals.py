# -*- test-case-name: tests.engineio.test_internals -*-
"""Everything of Engine.IO that relies on Autobahn's or Twisted's internals, in one place.

Written for Autobahn 26.11 (``setup.cfg`` pins the range) and Twisted 26.10;
``tests/engineio/test_internals.py`` checks every private attribute and method used here, and that
the fast frame reader agrees with Autobahn's own parser, so an upgrade that breaks an assumption
fails there first. Nothing outside this module touches Autobahn's or Twisted's private names.

The hot paths: Autobahn handles every frame through a general state machine (a masker object per
frame, a validator, five callbacks) and every write through ``transport.write``, which arms the
socket for writability and disarms it once drained: two ``epoll_ctl`` calls and a ``doWrite``
dispatch per delivery. A chat server receives small whole frames and writes the same frames to
thousands of sockets, so the common cases get a direct path here (:func:`read_data_frame`,
:class:`FrameOutbox`, :func:`write_frames`) and everything else (control frames, fragments,
extensions, oversized or malformed frames, full socket buffers, TLS) goes the regular
Autobahn/Twisted way.

The workarounds: Autobahn's eager ``pformat`` of its options for a debug line
(:class:`_LazyPformat`), its txaio batched timers that cannot be cancelled
(:class:`_ConnectionTimers`), and the HTTP channel left as the websocket transport's producer
(:class:`_WriteWatch`). A parked long-polling GET's answer is twisted.web's own, collected and
sent as one write (:func:`write_answer`).

:class:`FastWebSocketServerProtocol` and :class:`FastWebSocketServerFactory` carry all of it;
``ilchat.engineio.websocket`` subclasses them with the Engine.IO logic.
"""

from __future__ import annotations

import pprint
from operator import methodcaller
from typing import Any, Callable

import autobahn.websocket.protocol as _autobahn_protocol
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
from twisted.internet.interfaces import IReactorTime
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from OpenSSL._util import ffi as _ssl_ffi
from OpenSSL._util import lib as _ssl_lib
from OpenSSL.SSL import Error as _TLSError
from OpenSSL.SSL import WantReadError
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol, _AggregateSmallWrites
from twisted.web.server import Request

from ilchat.engineio.turnbatch import TurnBatch

__all__ = [
    "FastWebSocketServerFactory",
    "FastWebSocketServerProtocol",
    "FrameOutbox",
    "MAX_FRAMES_PER_TURN",
    "direct_socket",
    "frame_size",
    "prepare_frame",
    "read_data_frame",
    "write_answer",
    "write_frames",
]

_log = Logger(namespace="ilchat.engineio")

#: Most websocket messages handled per connection in one reactor turn; the rest of what arrived
#: waits for the next turn, with the connection's reading paused meanwhile.
MAX_FRAMES_PER_TURN = 100


def prepare_frame(payload: bytes, is_binary: bool) -> PreparedMessage:
    """A server frame (unmasked, never compressed) built once for any number of connections."""
    return PreparedMessage(payload, is_binary, False, True)


def frame_size(prepared: PreparedMessage) -> int:
    """The bytes a prepared frame takes on the wire."""
    return len(prepared.payloadHybi)


class _WriteWatch:
    """Push-producer stand-in that tells the protocol when the transport's buffer is full."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: "FastWebSocketServerProtocol") -> None:
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


class FastWebSocketServerProtocol(WebSocketServerProtocol):
    """
    Autobahn's server protocol with the fast paths and workarounds of this module.

    A subclass implements ``frame_received(frame)`` (one whole text or binary message, from the
    fast reader or from Autobahn's ``onMessage``, which it routes there too; it decrements
    ``frames_left``, the per-turn budget that :meth:`processData` enforces) and calls ``super()``
    in ``onOpen`` and ``onClose``. It writes frames with :meth:`send_prepared` or
    Autobahn's own methods (which flush the frames queued before), and closes with a reason
    through :meth:`close_with_reason`.
    """

    write_paused = False
    backlog = 0
    #: Frames waiting for the end of this reactor turn (see :class:`FrameOutbox`).
    outgoing: list[bytes] | None = None
    #: Messages this connection may still hand on in the current reactor turn.
    frames_left = MAX_FRAMES_PER_TURN
    _resume_call: Any = None
    _direct: Any = None
    _reactor: Any = None
    #: Set at open: frames go to the outbox with no per-frame checks (no compression negotiated,
    #: no octet logging, a reactor to flush on); see send_prepared.
    _queues_frames = False
    _outbox: Any = None

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
        if self._queues_frames and not self.send_queue:
            # The traffic counter is added to once per write (flush_outgoing), not per frame.
            self._outbox.post(self, prepared.payloadHybi, self._reactor)
        elif self._perMessageCompress is None and not self.send_queue and not self.logOctets:
            # Not open yet, or no reactor to flush on: written at once.
            data = prepared.payloadHybi
            self.transport.write(data)
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        else:
            self.sendPreparedMessage(prepared)

    def send_now(self, prepared: PreparedMessage) -> None:
        """
        Write one prepared frame at once, in a write of its own: a packet for this connection
        alone (an answer, an ack, an emit to one socket), whose latency is not worth batching.

        The frames this turn's broadcasts queued for the connection go first (one write), so the
        order of everything sent to it is kept. A client may read each frame as it arrives, as
        from Node's server, which writes each packet as it is produced.
        """
        if self._perMessageCompress is None and not self.send_queue and not self.logOctets:
            if self.outgoing:
                self.flush_outgoing()
            data = prepared.payloadHybi
            write_frames(self.transport, self._direct, [data])
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        else:
            self.sendPreparedMessage(prepared)

    def flush_outgoing(self) -> None:
        """Write the frames this connection got during the current reactor turn."""
        frames, self.outgoing = self.outgoing, None
        if frames:
            write_frames(self.transport, self._direct, frames)
            self.trafficStats.outgoingOctetsWireLevel += sum(map(len, frames))

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
        self._outbox = self.factory.outbox
        self._queues_frames = (
            self._perMessageCompress is None and not self.logOctets and self._reactor is not None
        )
        try:
            transport.unregisterProducer()
            transport.registerProducer(_WriteWatch(self), True)
        except Exception:
            _log.failure("Engine.IO: could not watch the websocket's write buffer")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.outgoing = None
        call, self._resume_call = self._resume_call, None
        if call is not None and call.active():
            call.cancel()

    def close_with_reason(self, code: int, reason: str) -> None:
        """Start the closing handshake with C{code} and C{reason}, cut to the frame's 123 bytes."""
        # The reason must fit the close frame's 123 bytes; cut at a character.
        reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
        self.sendCloseFrame(code, reason_bytes.encode("utf-8"), isReply=False)


class FastWebSocketServerFactory(WebSocketServerFactory):
    """Autobahn's factory with the per-turn :class:`FrameOutbox` and cancellable timers."""

    def __init__(self, reactor: IReactorTime) -> None:
        super().__init__(reactor=reactor)
        self.outbox = FrameOutbox()
        # Autobahn reads its per-connection timers from this attribute (see _ConnectionTimers).
        self._batched_timer = self.timers = _ConnectionTimers(reactor)

    def stop(self) -> None:
        """Server shutdown: cancel the handshake timers and the scheduled flush."""
        # The connections are closing with the process: no close handshake is waited for.
        self.timers.cancel_all()
        self.outbox.cancel()


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


_TEXT_FIN = 0x81
_BINARY_FIN = 0x82


def read_data_frame(buf: bytes, max_payload: int) -> tuple[bool, bytes, int] | None:
    """
    The first frame of C{buf}, if it is a whole, masked, final text or binary frame.

    @param buf: bytes received on an open websocket, starting at a frame boundary.
    @param max_payload: largest payload taken here (0: no limit); a bigger frame is left to
        Autobahn, which refuses it with close code 1009.
    @return: C{(is_binary, unmasked payload, bytes used)}, or L{None} for anything else: an
        incomplete frame, a control frame, a fragment, RSV bits, no mask, a 64-bit length or a
        non-minimal 16-bit one.  Those are Autobahn's to handle (or to refuse).
    """
    size = len(buf)
    if size < 6:
        return None
    head = buf[0]
    if head != _TEXT_FIN and head != _BINARY_FIN:
        return None
    length = buf[1]
    if not length & 0x80:
        return None  # unmasked client frame: a protocol violation Autobahn reports
    length &= 0x7F
    if length < 126:
        start = 6
    elif length == 126 and size >= 8:
        length = (buf[2] << 8) | buf[3]
        if length < 126:
            return None
        start = 8
    else:
        return None
    end = start + length
    if end > size or (max_payload and length > max_payload):
        return None
    payload = buf[start:end]
    if length:
        # XOR with the repeated 4-byte mask as one big-integer operation: C speed, no masker object.
        mask = (buf[start - 4 : start] * ((length >> 2) + 1))[:length]
        payload = (
            int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")
        ).to_bytes(length, "little")
    return head == _BINARY_FIN, payload, end


def direct_socket(transport: Any) -> Any:
    """
    The socket under a plain TCP transport that may be written to directly, or L{None}.

    Only Twisted's own TCP connections qualify (not TLS, not a wrapper): their buffer attributes
    tell whether anything is queued ahead, and their C{doWrite} reports errors the usual way if a
    direct write leaves something behind.
    """
    if isinstance(transport, Connection) and not getattr(transport, "TLS", False):
        return transport.socket
    return None


class FrameOutbox(TurnBatch):
    """
    Frames written during one reactor turn, sent at its end with one write per connection.

    A broadcast appends its prepared frame to each recipient's list; at the end of the turn
    (a C{callLater(0)} on the connection's own reactor) each list goes out as one C{send()} when
    the kernel takes it whole, through C{transport.write} otherwise.  Several messages of one
    turn thus share one system call per connection, and no socket is armed for writing unless
    its kernel buffer is full.  Order with other writes is kept by the owner flushing its list
    before any write of its own (see C{FastWebSocketServerProtocol.sendData}).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(
            methodcaller("flush_outgoing"), "Engine.IO: writing queued websocket frames failed"
        )

    def post(self, owner: Any, frame: bytes, reactor: Any) -> None:
        """Queue C{frame} for C{owner} (an object with C{outgoing} list and C{flush_outgoing})."""
        pending = owner.outgoing
        if pending:
            pending.append(frame)
            return
        owner.outgoing = [frame]
        self.add(owner, reactor)


def write_frames(transport: Any, sock: Any, frames: list[bytes]) -> None:
    """
    One connection's frames of this turn as a single write: straight to C{sock} when nothing is
    queued ahead of them, the rest (or all, without C{sock}) through C{transport.write}.

    Under TLS see L{_write_tls}.
    """
    data = frames[0] if len(frames) == 1 else b"".join(frames)
    if sock is None and type(transport) is BufferingTLSTransport:
        _write_tls(transport, data)
        return
    if (
        sock is not None
        and transport.connected
        and not transport.disconnecting
        and not transport.dataBuffer
        and not transport._tempDataBuffer
    ):
        try:
            sent = sock.send(data)
        except OSError:
            # Full (EAGAIN) or broken: the transport's own write waits for room, or meets the
            # error again and closes the connection.
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def _write_tls(tls: BufferingTLSTransport, data: bytes) -> None:
    """
    This turn's frames for one TLS connection: encrypted at once, the records sent directly.

    The frames are already the turn's one write, so they skip Twisted's second aggregation
    (C{BufferingTLSTransport} holds each write for a C{callLater(0)} of its own per connection,
    one more reactor turn), unless it holds an earlier write they must not overtake. Once the
    handshake is done and nothing waits in the TLS or TCP buffers, the records go out like a
    plain connection's frames (L{write_frames}: one C{send()}, no write registration with the
    reactor); anything else takes Twisted's own path (C{TLSMemoryBIOProtocol.write}).
    """
    aggregator = tls._aggregator
    if type(aggregator) is not _AggregateSmallWrites or aggregator._buffer:
        tls.write(data)
        return
    tcp = tls.transport
    sock = direct_socket(tcp)
    if (
        sock is None
        or not tls._handshakeDone
        or tls._appSendBuffer
        or tls._lostTLSConnection
        or tls.disconnecting
    ):
        TLSMemoryBIOProtocol.write(tls, data)
        return
    try:
        records = _encrypt(tls._tlsConnection, data)
    except _EncryptStopped as stopped:
        # A renegotiation wants to read first, or TLS failed: Twisted's path buffers the rest
        # (and sends the records made so far) or reports the failure.
        TLSMemoryBIOProtocol.write(tls, data[stopped.taken :])
        return
    if records:
        write_frames(tcp, sock, records)


class _EncryptStopped(Exception):
    """C{SSL_write} failed after C{taken} bytes (what C{Connection.send} would have raised)."""

    def __init__(self, taken: int) -> None:
        super().__init__(taken)
        self.taken = taken


#: One buffer for every read of the records (the reactor thread is the only writer), so that a
#: write allocates nothing but the bytes it sends.
_RECORDS_SIZE = 1 << 17
_RECORDS = _ssl_ffi.new("char[]", _RECORDS_SIZE)


def _encrypt(connection: Any, data: bytes) -> list[bytes]:
    """
    C{data} through C{SSL_write} and the records out of the memory BIO, with pyOpenSSL's own
    cffi bindings: what C{Connection.send} and C{bio_read} do, without the checks and the
    allocation around each call that made them 4 us per write against 1.8
    (C{bench/tls_layers.py}). A failed C{SSL_write} raises L{_EncryptStopped}.
    """
    ssl = connection._ssl
    taken = 0
    size = len(data)
    while taken < size:  # a memory BIO takes it all at once (no partial-write mode)
        rest = data[taken:] if taken else data
        written = _ssl_lib.SSL_write(ssl, rest, len(rest))
        if written <= 0:
            try:
                connection._raise_ssl_error(ssl, written)  # reads and clears OpenSSL's errors
            except (WantReadError, _TLSError):
                pass
            raise _EncryptStopped(taken)
        taken += written
    records = []
    from_ssl = connection._from_ssl
    while True:
        got = _ssl_lib.BIO_read(from_ssl, _RECORDS, _RECORDS_SIZE)
        if got <= 0:  # empty: a memory BIO asks to retry, nothing is queued as an error
            break
        records.append(_ssl_ffi.buffer(_RECORDS, got)[:])
        if got < _RECORDS_SIZE:
            break
    return records


class _Collected(list):
    """An HTTP channel's transport while twisted.web writes one answer: keeps the bytes."""

    __slots__ = ()

    # List methods themselves: no Python frame per write.
    write = list.append
    writeSequence = list.extend


def write_answer(request: Request, body: bytes) -> None:
    """
    C{request.write(body)} on an C{HTTPChannel}, its bytes sent as one write (L{write_frames}).

    twisted.web builds the answer (status line, the headers with its cookies and
    C{Connection: close}, the body unless HEAD) and writes it as two writes (C{writeHeaders},
    then the body), which register the socket with the reactor and go out on the next turn.
    Here the channel's C{transport} is a L{_Collected} during the call, so the same bytes are
    gathered and sent at once. That the channel writes only through C{self.transport} is checked
    by C{tests/engineio/test_server.py} (the one C{send()} is the whole answer); the caller sets
    C{Content-Length}, so nothing is chunked.
    """
    channel = request.channel
    transport = channel.transport
    collected = _Collected()
    channel.transport = collected
    try:
        request.write(body)
    finally:
        channel.transport = transport
    if collected:
        write_frames(transport, direct_socket(transport), collected)
