# -*- test-case-name: tests.engineio.test_server -*-
"""The Engine.IO websocket: Autobahn protocol and factory, on the fast base classes.

The resource (:mod:`ilchat.engineio.resource`) checks the request and leaves the
:class:`WebSocketContext` (the session of an upgrade, or what a new session needs) on the
factory for the protocol it builds next; the protocol hands whole frames to the session. What
relies on Autobahn's internals is in :mod:`ilchat.engineio._internals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from ilchat.engineio._internals import FastWebSocketServerFactory, FastWebSocketServerProtocol
from ilchat.engineio.session import EngineIOSession

if TYPE_CHECKING:
    from ilchat.engineio.server import EngineIOServer

__all__ = ["EngineIOWebSocketFactory", "EngineIOWebSocketProtocol", "WebSocketContext"]

_log = Logger(namespace="ilchat.engineio")


class WebSocketContext:
    """What the resource checked for the websocket the factory builds next."""

    __slots__ = ("session", "address", "headers", "query")

    def __init__(self, session, address, headers, query):
        self.session = session
        self.address = address
        self.headers = headers
        self.query = query


class EngineIOWebSocketProtocol(FastWebSocketServerProtocol):
    """Autobahn protocol for one Engine.IO websocket (a new session or an upgrade probe)."""

    session: EngineIOSession | None = None
    context: WebSocketContext | None = None
    upgrade_probed = False

    def onOpen(self) -> None:
        super().onOpen()
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
        super().onClose(wasClean, code, reason)
        session, self.session = self.session, None
        if session is not None:
            session.websocket_closed(self)


class EngineIOWebSocketFactory(FastWebSocketServerFactory):
    """Factory handing each new protocol the context the HTTP resource checked."""

    protocol = EngineIOWebSocketProtocol

    def __init__(self, eio_server: "EngineIOServer") -> None:
        super().__init__(eio_server.reactor)
        self.eio_server = eio_server
        self.next_context: WebSocketContext | None = None

    def buildProtocol(self, addr):
        proto = super().buildProtocol(addr)
        proto.context, self.next_context = self.next_context, None
        return proto

