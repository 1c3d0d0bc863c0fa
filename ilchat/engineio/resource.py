# -*- test-case-name: tests.engineio.test_server -*-
"""The Engine.IO path's HTTP resource: CORS and origins, request checks, routing to sessions.

Both transports share one path: ``?EIO=4&transport=polling`` (GET receives, POST sends; handled
by the session) and ``?EIO=4&transport=websocket`` (with ``sid`` for an upgrade from polling;
handed to Autobahn's ``WebSocketResource``). Refusals are engine.io's answers
(:mod:`ilchat.engineio.responses`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autobahn.twisted.resource import WebSocketResource
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ilchat.engineio.responses import (
    ERROR_BAD_HANDSHAKE_METHOD,
    ERROR_BAD_REQUEST,
    ERROR_FORBIDDEN,
    ERROR_UNKNOWN_SID,
    ERROR_UNKNOWN_TRANSPORT,
    ERROR_UNSUPPORTED_PROTOCOL_VERSION,
    error_body,
)
from ilchat.engineio.session import EngineIOSession
from ilchat.engineio.websocket import WebSocketContext
from ilchat.jsonutil import dumps

if TYPE_CHECKING:
    from ilchat.engineio.server import EngineIOServer

__all__ = ["EngineIOResource", "default_address"]

_log = Logger(namespace="ilchat.engineio")


class EngineIOResource(Resource):
    """The ``socket.io`` / ``engine.io`` path: polling, websocket, CORS, errors."""

    isLeaf = True
    #: Its polling GETs may come as ``ilchat.web._wholehead.QuickGet`` (no websocket upgrades:
    #: a request with ``Upgrade`` never does).
    answers_quick_gets = True

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
                return error_body(request, ERROR_FORBIDDEN)
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
            return error_body(request, ERROR_UNKNOWN_TRANSPORT)
        is_upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        sid = _arg(args, b"sid")
        session = None
        if sid is not None:
            session = server.sessions.get(sid)
            if session is None or session.expire_if_late():
                return error_body(request, ERROR_UNKNOWN_SID)
            if transport == "websocket":
                # A websocket for a session that has upgraded already (or is probing) completes
                # its handshake and is closed at once (EngineIOSession.websocket_opened), as
                # engine.io does; the session's own websocket is not touched.
                if not is_upgrade or session.closed:
                    return error_body(request, ERROR_BAD_REQUEST)
            elif session.transport != transport:
                return error_body(request, ERROR_BAD_REQUEST)
        else:
            if method != b"GET":
                return error_body(request, ERROR_BAD_HANDSHAKE_METHOD)
            if transport == "websocket" and not is_upgrade:
                return error_body(request, ERROR_BAD_REQUEST)
            if _arg(args, b"EIO") != "4":
                return error_body(request, ERROR_UNSUPPORTED_PROTOCOL_VERSION)

        if transport == "websocket":
            query = _query(args)
            server.ws_factory.next_context = WebSocketContext(
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
                return error_body(request, ERROR_BAD_REQUEST)
            return session.handle_get(request)
        if method == b"GET":
            return session.handle_get(request)
        if method == b"POST":
            return session.handle_post(request)
        return error_body(request, ERROR_BAD_REQUEST)


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

