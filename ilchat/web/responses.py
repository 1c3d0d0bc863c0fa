"""One place that writes JSON answers, so every backend response has the same headers."""

from typing import Any, Dict

from twisted.web import http
from twisted.web.server import Request

from ilchat.jsonutil import dumps

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"

#: Reason phrases twisted.web's ``http.RESPONSES`` lacks (so that no status line says
#: "Unknown Status") or names after an older RFC.
REASON_PHRASES: Dict[int, bytes] = {
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


#: Every phrase, looked up once: ``twisted.web.http`` is a deprecation proxy module, whose every
#: attribute lookup is a Python call (2 % of the polling fan-out's CPU, one per answer).
_PHRASES: Dict[int, bytes] = {**http.RESPONSES, **REASON_PHRASES}


def reason_phrase(code: int) -> bytes:
    """The standard reason phrase of an HTTP status code."""
    return _PHRASES.get(code) or b"Error"


def encode_json(obj: Any) -> bytes:
    """Compact JSON as Express's ``res.send`` writes it; non-ASCII stays UTF-8."""
    return dumps(obj).encode("utf-8")


def respond_with_json(request: Request, code: int, obj: Any) -> None:
    """
    Send ``obj`` as the whole response and finish the request.

    Writes nothing when the client has already gone: a slow handler must not raise on a dead
    connection. HEAD gets the headers (with the length of the GET body) and no body.
    """
    if getattr(request, "_disconnected", False) or request.finished:
        return
    body = encode_json(obj)
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", JSON_CONTENT_TYPE)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    if request.method != b"HEAD":
        request.write(body)
    request.finish()
