# -*- test-case-name: tests.engineio.test_server -*-
"""The Engine.IO path's HTTP answers: engine.io's error codes and bodies, finishing a parked GET.

Errors are answered the way the socket.io v4 server (engine.io 6) does: HTTP 400 with
``{"code": N, "message": "..."}``, 403 for a refused origin.

A long-polling client makes an HTTP request for every answer it gets, so the answers of one
reactor turn are gathered (:class:`PollOutbox`: one response per session per turn, each body
encoded once for every session that gets the same packets) and written in one piece
(:func:`write_response`).
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web.http import HTTPChannel
from twisted.web.server import Request

from ilchat.engineio._internals import write_answer
from ilchat.engineio.packets import encode_payload
from ilchat.engineio.turnbatch import TurnBatch
from ilchat.jsonutil import dumps

__all__ = [
    "ERROR_UNKNOWN_TRANSPORT",
    "ERROR_UNKNOWN_SID",
    "ERROR_BAD_HANDSHAKE_METHOD",
    "ERROR_BAD_REQUEST",
    "ERROR_FORBIDDEN",
    "ERROR_UNSUPPORTED_PROTOCOL_VERSION",
    "PollOutbox",
    "error_body",
    "payload_body",
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


def write_response(request: Request | None, code: int, content_type: bytes, body: bytes) -> None:
    """
    Finish a parked request, unless the client has gone already.

    The answer is twisted.web's own (``Request.write``: cookies, ``Connection: close``, HEAD), but
    on an HTTP/1.x channel it goes out as one write, sent at once when nothing waits ahead of it
    (:func:`~ilchat.engineio._internals.write_answer`), not as twisted.web's two writes that
    register the socket with the reactor and wait for the next turn: a polling client's every
    delivery is one such answer. A request that has ``write_whole`` (a GET on the quick lane,
    ``ilchat.web._wholehead.QuickGet``) is given the whole answer in that one call.
    """
    if request is None or request.finished or getattr(request, "_disconnected", False):
        return
    write_whole = getattr(request, "write_whole", None)
    if write_whole is not None and not request.startedWriting:
        write_whole(code, content_type, body)  # a request that can take it all in one call
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    if isinstance(request.channel, HTTPChannel) and not request.startedWriting:
        write_answer(request, body)
    else:
        request.write(body)
    request.finish()


def error_body(request: Request, code: int, message: str | None = None) -> bytes:
    request.setResponseCode(403 if code == ERROR_FORBIDDEN else 400)
    request.setHeader(b"content-type", b"application/json")
    return dumps({"code": code, "message": message or _ERROR_MESSAGES[code]}).encode()



class PollOutbox(TurnBatch):
    """
    Polling sessions that got packets this reactor turn while a GET of theirs was parked: each is
    answered once at the turn's end (a C{callLater(0)}), with everything the turn queued for it.

    Several broadcasts of one turn thus share one HTTP response (and one request that follows it)
    per client, and the sessions that got the same packets share one encoded body.
    """

    __slots__ = ("_reactor", "_bodies")

    def __init__(self, reactor: Any) -> None:
        super().__init__(self._answer, "Engine.IO: answering a parked polling GET failed")
        self._reactor = reactor
        #: The bodies encoded during one flush, by the packets they carry.
        self._bodies: dict[tuple[str, ...], bytes] = {}

    def post(self, answer: Callable[[dict[tuple[str, ...], bytes]], None]) -> None:
        """Call C{answer(bodies)} at the end of this turn (once per call of C{post})."""
        self.add(answer, self._reactor)

    def _answer(self, answer: Callable[[dict[tuple[str, ...], bytes]], None]) -> None:
        answer(self._bodies)

    def flush(self) -> None:
        """Answer every session posted this turn (also early: the end of a bus pass)."""
        try:
            super().flush()
        finally:
            self._bodies = {}


def payload_body(queue: list[str], bodies: dict[tuple[str, ...], bytes] | None = None) -> bytes:
    """The long-polling body of C{queue}; with C{bodies}, encoded once for equal queues."""
    if bodies is None:
        return encode_payload(queue).encode("utf-8")
    key = tuple(queue)
    body = bodies.get(key)
    if body is None:
        body = bodies[key] = encode_payload(queue).encode("utf-8")
    return body
