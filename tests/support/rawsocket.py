"""
A Socket.IO client that writes raw packets over a real websocket (``websocket-client``).

For what no client library would send: ``1e999``, a lone surrogate in the JSON text, a binary
event announcing a billion attachments. The blocking calls run in a thread, never in the reactor.
"""

from __future__ import annotations

import json
import struct
from typing import List, Optional, Tuple, Union

import websocket
from twisted.internet.threads import deferToThread

Frame = Union[str, bytes]


class RawSocketIO:
    """One Engine.IO websocket session, driven packet by packet."""

    def __init__(self, base_url: str, path: str = "/socket.io/") -> None:
        self.url = base_url.replace("http://", "ws://", 1) + path + "?EIO=4&transport=websocket"
        self.ws: Optional[websocket.WebSocket] = None
        self.sid: Optional[str] = None
        self.received: List[Frame] = []

    async def open(self, namespace: Optional[str] = None) -> "RawSocketIO":
        """Connect, read the open packet, and join ``namespace`` if given."""
        self.ws = await deferToThread(websocket.create_connection, self.url, timeout=10)
        first = await self.recv()
        assert isinstance(first, str) and first[0] == "0", first
        self.sid = json.loads(first[1:])["sid"]
        if namespace is not None:
            prefix = "" if namespace == "/" else namespace + ","
            await self.send("40" + prefix)
            while True:
                packet = await self.recv()
                if isinstance(packet, str) and packet.startswith("40" + prefix + "{"):
                    break
        return self

    async def send(self, frame: Frame) -> None:
        """One websocket message: text (``str``) or binary (``bytes``)."""
        assert self.ws is not None
        if isinstance(frame, bytes):
            await deferToThread(self.ws.send_binary, frame)
        else:
            await deferToThread(self.ws.send, frame)

    async def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the TCP connection (several frames in one write)."""
        assert self.ws is not None
        await deferToThread(self.ws.sock.sendall, data)

    async def recv(self) -> Frame:
        """The next data message (pings are answered); raises ``ConnectionClosed`` on close."""
        while True:
            opcode, data = await deferToThread(self._recv_frame)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionClosed(*_close_status(data))
            if opcode == websocket.ABNF.OPCODE_TEXT:
                text = data.decode("utf-8")
                if text == "2":
                    await self.send("3")
                    continue
                self.received.append(text)
                return text
            if opcode == websocket.ABNF.OPCODE_BINARY:
                self.received.append(data)
                return data

    def _recv_frame(self) -> Tuple[int, bytes]:
        assert self.ws is not None
        try:
            return self.ws.recv_data(control_frame=True)
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            return websocket.ABNF.OPCODE_CLOSE, b""

    async def until_closed(self) -> "ConnectionClosed":
        """Read until the server closes; returns the close status (code, reason)."""
        while True:
            try:
                await self.recv()
            except ConnectionClosed as closed:
                return closed

    async def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            await deferToThread(ws.close, timeout=1)


class ConnectionClosed(Exception):
    """The server closed the websocket: ``code`` (None for a bare drop) and ``reason``."""

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def _close_status(data: bytes) -> Tuple[Optional[int], str]:
    if len(data) < 2:
        return None, ""
    return struct.unpack("!H", data[:2])[0], data[2:].decode("utf-8", "replace")


def masked_frame(payload: bytes, binary: bool = False) -> bytes:
    """A client frame as RFC 6455 writes it (final, masked, zero mask): for batching writes."""
    head = bytes([0x82 if binary else 0x81])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + b"\0\0\0\0" + payload
