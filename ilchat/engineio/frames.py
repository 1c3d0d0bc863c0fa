# -*- test-case-name: tests.engineio.test_frames -*-
"""The two websocket hot paths, kept short: reading a client's data frame and writing frames.

Autobahn handles every frame through a general state machine (a masker object per frame, a
validator, five callbacks) and every write through ``transport.write``, which arms the socket
for writability and disarms it once drained: two ``epoll_ctl`` calls and a ``doWrite`` dispatch
per delivery.  A chat server receives small whole frames and writes the same frames to
thousands of sockets, so the common cases get a direct path here and everything else (control
frames, fragments, extensions, oversized or malformed frames, full socket buffers, TLS) goes the
regular Autobahn/Twisted way.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.tcp import Connection
from twisted.logger import Logger

__all__ = ["read_data_frame", "FrameOutbox", "direct_socket", "write_frames"]

_log = Logger(namespace="ilchat.engineio")

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


class FrameOutbox:
    """
    Frames written during one reactor turn, sent at its end with one write per connection.

    A broadcast appends its prepared frame to each recipient's list; at the end of the turn
    (a C{callLater(0)} on the connection's own reactor) each list goes out as one C{send()} when
    the kernel takes it whole, through C{transport.write} otherwise.  Several messages of one
    turn thus share one system call per connection, and no socket is armed for writing unless
    its kernel buffer is full.  Order with other writes is kept by the owner flushing its list
    before any write of its own (see C{EngineIOWebSocketProtocol.sendData}).
    """

    __slots__ = ("_dirty", "_call")

    def __init__(self) -> None:
        self._dirty: list[Any] = []
        self._call: Any = None

    def post(self, owner: Any, frame: bytes, reactor: Any) -> None:
        """Queue C{frame} for C{owner} (an object with C{outgoing} list and C{flush_outgoing})."""
        pending = owner.outgoing
        if pending:
            pending.append(frame)
            return
        owner.outgoing = [frame]
        self._dirty.append(owner)
        if self._call is None:
            self._call = reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Send what every connection has queued this turn."""
        self._call = None
        dirty, self._dirty = self._dirty, []
        for owner in dirty:
            try:
                owner.flush_outgoing()
            except Exception:
                # One broken connection must not keep the others' frames back.
                _log.failure("Engine.IO: writing queued websocket frames failed")

    def cancel(self) -> None:
        """Forget the scheduled flush (server shutdown; the connections are going too)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._dirty = []


def write_frames(transport: Any, sock: Any, frames: list[bytes]) -> None:
    """
    One connection's frames of this turn as a single write: straight to C{sock} when nothing is
    queued ahead of them, the rest (or all, without C{sock}) through C{transport.write}.
    """
    data = frames[0] if len(frames) == 1 else b"".join(frames)
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
