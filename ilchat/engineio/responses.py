# -*- test-case-name: tests.engineio.test_server -*-
"""The Engine.IO path's HTTP answers: engine.io's error codes and bodies, finishing a parked GET.

Errors are answered the way the socket.io v4 server (engine.io 6) does: HTTP 400 with
``{"code": N, "message": "..."}``, 403 for a refused origin.
"""

from __future__ import annotations

from twisted.web.server import Request

from ilchat.jsonutil import dumps

__all__ = [
    "ERROR_UNKNOWN_TRANSPORT",
    "ERROR_UNKNOWN_SID",
    "ERROR_BAD_HANDSHAKE_METHOD",
    "ERROR_BAD_REQUEST",
    "ERROR_FORBIDDEN",
    "ERROR_UNSUPPORTED_PROTOCOL_VERSION",
    "error_body",
    "write_response",
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

def write_response(request: Request | None, code: int, content_type: bytes, body: bytes) -> None:
    """Finish a parked request, unless the client has gone already."""
    if request is None or request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def error_body(request: Request, code: int, message: str | None = None) -> bytes:
    request.setResponseCode(403 if code == ERROR_FORBIDDEN else 400)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"code": code, "message": message or _ERROR_MESSAGES[code]}).encode()

