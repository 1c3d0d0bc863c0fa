# -*- test-case-name: tests.web.test_wholehead -*-
"""
A request head that arrives whole, read in one pass instead of line by line.

twisted.web's ``HTTPChannel`` is a ``LineReceiver``: every header line is a ``lineReceived``
call, and each header goes through ``headerReceived`` (split, canonical name, value checks,
``Headers.addRawHeader``). A long-polling client makes one GET per answer it gets, so with 500
such clients that parsing was a fifth of the server's CPU (py-spy, bench ``polling`` at 20
messages/s). A GET's head nearly always arrives in one read, so :func:`take_whole_head` reads it
at once and hands the request on exactly where the line parser would (``allHeadersReceived``,
``allContentReceived``).

Only the plain case is taken: a body-less request (no ``Content-Length``, no
``Transfer-Encoding``, no ``Upgrade``), its head complete and alone in the read, every line
well-formed, within the channel's limits, the channel between requests. Anything else, malformed
input included, goes the line parser's way, whose answers (400, 431, ...) are unchanged: the fast
path never refuses anything itself. ``tests/web/test_wholehead.py`` checks that every head it takes
yields the request Twisted's own parser yields, and the private names of ``HTTPChannel`` and
``Headers`` used here (written for Twisted 26.10, the only module that touches them).
"""

from __future__ import annotations

import time
from typing import Any, Callable, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import datetimeToString, parse_qs
from twisted.web.http_headers import Headers, InvalidHeaderName, _nameEncoder
from twisted.web.server import NOT_DONE_YET
from twisted.web.server import version as server_version

from ilchat.engineio._internals import direct_socket, write_frames
from ilchat.web.responses import reason_phrase

__all__ = ["QuickGet", "parse_whole_head", "query_args", "take_whole_head"]

_log = Logger(namespace="ilchat.web")

#: Request-target bytes: printable ASCII without space (Twisted also lets 0x7f-0xb0 through; such
#: a target takes the line parser's way).
_TARGET_BYTES = bytes(range(0x21, 0x7F))
#: Methods whose name needs no token check.
_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE"})
_VERSIONS = frozenset({b"HTTP/1.1", b"HTTP/1.0"})
#: Headers that give the request a body or another protocol: the line parser's cases.
_NOT_PLAIN = frozenset({b"Content-Length", b"Transfer-Encoding", b"Upgrade"})
#: Headers that keep a request off the quick GET lane (a persistence or an expectation to honour).
_NOT_QUICK = frozenset({b"Expect"})
#: Header names as received -> their canonical case, for the names Twisted has checked.
_CANONICAL_NAMES = _nameEncoder._canonicalHeaderCache

Head = Tuple[bytes, bytes, bytes, List[Tuple[bytes, bytes]]]


def parse_whole_head(data: bytes, max_headers: int, max_bytes: int) -> Optional[Head]:
    """
    ``(method, target, version, [(Canonical-Name, value), ...])`` of C{data} when it is exactly
    one complete, well-formed, body-less request head within the limits; otherwise ``None``.
    """
    if len(data) > max_bytes or not data.endswith(b"\r\n\r\n"):
        return None
    head = data[:-4]
    lines = head.split(b"\r\n")
    breaks = len(lines) - 1
    # Every CR and LF is part of a line break (no bare CR or LF in a line, no empty line
    # inside), and no NUL anywhere (Twisted refuses one in a target, a name or a value).
    if (
        breaks > max_headers
        or head.count(b"\n") != breaks
        or head.count(b"\r") != breaks
        or b"\x00" in head
    ):
        return None
    request_line = lines[0].split(b" ")
    if len(request_line) != 3:
        return None
    method, target, version = request_line
    if (
        method not in _METHODS
        or version not in _VERSIONS
        or not target
        or target.translate(None, _TARGET_BYTES)
    ):
        return None
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        # Twisted's own cache of the names it has checked: a hit is a valid token (so no
        # leading space or tab, the obsolete line folding), already in canonical case.
        canonical = _CANONICAL_NAMES.get(name)
        if canonical is None:
            try:
                canonical = _nameEncoder.encode(name)  # checks the token (an empty one too)
            except InvalidHeaderName:
                return None
        if canonical in _NOT_PLAIN:
            return None
        headers.append((canonical, value.strip(b" \t")))
    return method, target, version, headers


def _store_headers(into: Headers, headers: List[Tuple[bytes, bytes]]) -> None:
    """What C{Headers.addRawHeader} stores, its checks done by L{parse_whole_head} (no CR, LF)."""
    raw = into._rawHeaders
    for name, value in headers:
        values = raw.get(name)
        if values is None:
            raw[name] = [value]
        else:
            values.append(value)


def take_whole_head(channel: Any, data: bytes) -> bool:
    """
    Start the request C{data} holds on C{channel} (an ``HTTPChannel`` between requests) as the
    line parser would have, and say so; ``False`` leaves everything to the line parser.
    """
    if not (
        channel.line_mode
        and not channel._buffer
        and not channel._busyReceiving
        and channel.persistent
        and not channel._handlingRequest
        and not channel.requests
        and channel._HTTPChannel__first_line == 1
        and not channel._HTTPChannel__header
    ):
        return False
    parsed = parse_whole_head(data, channel.maxHeaders, channel.totalHeadersSize)
    if parsed is None:
        return False
    method, target, version, headers = parsed
    channel.resetTimeout()  # as HTTPChannel.dataReceived does
    if method == b"GET" and _take_quick_get(channel, target, version, headers):
        return True
    request = channel.requestFactory(channel, 0)
    channel.requests.append(request)
    _store_headers(request.requestHeaders, headers)
    channel._command = method
    channel._path = target
    channel._version = version
    channel.allHeadersReceived()
    channel.allContentReceived()
    return True


# -- the quick GET lane -------------------------------------------------------------------------


class QuickGet:
    """
    A body-less HTTP/1.1 GET for a resource that says it can answer one
    (``answers_quick_gets``): the parts of twisted.web's ``Request`` such a resource uses, made
    and answered without the rest (two ``Headers``, the request line's and the query's parsing,
    ``process``, the header writing and ``finish`` of ``twisted.web.http.Request``).

    The answer is the one twisted.web would write (status line, ``Server``, ``Date``, the
    resource's headers, ``Content-Length``) in one write; the connection stays open (a quick GET is
    persistent by definition) and reads the next request once it is answered, as ``requestDone``
    has it. ``tests/web/test_wholehead.py`` compares both answers byte for byte.
    """

    method = b"GET"
    clientproto = b"HTTP/1.1"
    code = 200
    code_message = b"OK"
    finished = False
    startedWriting = False
    _disconnected = False
    content = None
    queued = 0
    #: ``notifyFinish`` Deferreds and ``notify_lost`` callbacks: most GETs have none of the
    #: first and one of the second, so both start empty and shared.
    notifications: Tuple[Deferred, ...] = ()
    _lost: Tuple[Tuple[Callable[..., Any], tuple], ...] = ()

    def __init__(self, channel: Any, uri: bytes, path: bytes, args: dict, headers: Headers) -> None:
        self.channel = channel
        self.transport = channel.transport
        self.uri = uri
        self.path = path
        self.args = args
        self.requestHeaders = headers
        self.prepath: List[bytes] = []
        segments = path[1:].split(b"/")
        self.postpath = [unquote_to_bytes(p) for p in segments] if b"%" in path else segments
        self._answer_headers: dict = {}

    # -- what resources ask -------------------------------------------------------------------

    def getHeader(self, name: bytes) -> Optional[bytes]:  # noqa: N802 (twisted API)
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def getClientAddress(self) -> Any:  # noqa: N802 (twisted API)
        return self.channel.getPeer()

    def getHost(self) -> Any:  # noqa: N802 (twisted API)
        return self.channel.getHost()

    def isSecure(self) -> bool:  # noqa: N802 (twisted API)
        return self.channel.isSecure()

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:  # noqa: N802
        self.code = code
        self.code_message = message if message is not None else reason_phrase(code)

    def setHeader(self, name: bytes, value: bytes) -> None:  # noqa: N802 (twisted API)
        if b"\r" in value or b"\n" in value:
            value = b" ".join(value.splitlines())  # as Headers.setRawHeaders does
        self._answer_headers[_nameEncoder.encode(name)] = value

    def notifyFinish(self) -> Deferred:  # noqa: N802 (twisted API)
        finished = Deferred()
        self.notifications += (finished,)
        return finished

    def notify_lost(self, callback: Callable[..., Any], *args: Any) -> None:
        """
        C{callback(reason, *args)} if the connection is lost before the answer: what
        C{notifyFinish().addErrback(callback, *args)} does, without a Deferred per request (a
        parked poll's session watches its GET so, ``EngineIOSession.handle_get``).
        """
        self._lost += ((callback, args),)

    # -- answering ----------------------------------------------------------------------------

    def render(self, resource: Any) -> None:
        """What ``server.Request.render`` does with the resource's answer."""
        body = resource.render(self)
        if body is NOT_DONE_YET:
            return
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def write(self, data: bytes) -> None:
        """The answer's head (on the first call) and C{data}, in one write."""
        if self.finished:
            raise RuntimeError("Request.write called on a request after Request.finish was called.")
        if self._disconnected:
            return
        if self.startedWriting:
            if data:
                self.channel.write(data)
            return
        self.startedWriting = True
        headers = self._answer_headers
        if b"Content-Type" not in headers:
            headers[b"Content-Type"] = b"text/html"
        if b"Content-Length" not in headers:
            headers[b"Content-Length"] = b"%d" % len(data)
        head = [b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n" % (
            self.code, self.code_message, server_version, _http_date())]
        for name, value in headers.items():
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        head.append(data)
        transport = self.channel.transport
        write_frames(transport, direct_socket(transport), [b"".join(head)])

    def write_whole(self, code: int, content_type: bytes, body: bytes) -> None:
        """
        C{body} as the whole answer, with C{code} and C{content_type}, and finish: what
        ``setResponseCode``, two ``setHeader``, ``write`` and ``finish`` do, in one call (a parked
        poll's answer, ``ilchat.engineio.responses.write_response``).
        """
        if self.finished or self._disconnected or self.startedWriting:
            raise RuntimeError("write_whole on a request that has written already")
        self.setResponseCode(code)
        headers = self._answer_headers
        headers[b"Content-Type"] = content_type
        headers[b"Content-Length"] = b"%d" % len(body)
        self.write(body)
        self.finish()

    def finish(self) -> None:
        if self._disconnected:
            raise RuntimeError("Request.finish called on a request after its connection was lost")
        if self.finished:
            return
        if not self.startedWriting:
            self.write(b"")
        channel = self.channel
        factory = getattr(channel, "factory", None)
        if factory is not None:
            factory.log(self)
        self.finished = True
        channel.resetTimeout()
        channel.requestDone(self)
        self._lost = ()
        notifications, self.notifications = self.notifications, ()
        for finished in notifications:
            finished.callback(None)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (twisted API)
        """The channel lost its connection while this GET waited (a parked poll)."""
        self._disconnected = True
        notifications, self.notifications = self.notifications, ()
        for finished in notifications:
            finished.errback(reason)
        lost, self._lost = self._lost, ()
        for callback, args in lost:
            try:
                callback(reason, *args)
            except Exception:
                _log.failure("Quick GET {uri}: a lost-connection callback failed", uri=self.uri)


def _http_date(_cache: list = [0, b""]) -> bytes:  # noqa: B006 (the cache, on purpose)
    """``datetimeToString()`` of now, made once a second."""
    now = int(time.time())
    if _cache[0] != now:
        _cache[0] = now
        _cache[1] = datetimeToString(now)
    return _cache[1]


def query_args(query: bytes) -> dict:
    """
    ``parse_qs(query, 1)`` as ``Request.requestReceived`` has it: with nothing to unquote (no
    ``%`` or ``+``) and no ``;`` separators, as engine.io-client's queries are, a plain split.
    """
    if b"%" in query or b"+" in query or b";" in query:
        return parse_qs(query, 1)
    args: dict = {}
    for item in query.split(b"&"):
        name, equals, value = item.partition(b"=")
        if equals:
            values = args.get(name)
            if values is None:
                args[name] = [value]
            else:
                values.append(value)
    return args


def _take_quick_get(channel: Any, target: bytes, version: bytes, headers: List[Tuple[bytes, bytes]]) -> bool:
    """
    Answer C{target} on the quick GET lane when its resource can (``answers_quick_gets``): a
    persistent HTTP/1.1 GET with a query (what a long-polling client sends). ``False``, with
    nothing done, otherwise.
    """
    path, question, query = target.partition(b"?")
    if version != b"HTTP/1.1" or not question:
        return False
    for name, value in headers:
        if name in _NOT_QUICK or (name == b"Connection" and b"close" in value.lower()):
            return False
    request_headers = Headers()
    _store_headers(request_headers, headers)
    request = QuickGet(channel, target, path, query_args(query), request_headers)
    resource = channel.site.getResourceFor(request)
    if not getattr(resource, "answers_quick_gets", False):
        return False
    # What allHeadersReceived and allContentReceived do for a request without body.
    channel._deadline_part = None
    channel.requests.append(request)
    # twisted.web stops the idle timer for a request and starts a new one once it is done (a
    # cancelled and a new reactor call per request). The lane leaves it running: the channel
    # (ChatChannel.timeoutConnection) does not cut a connection whose GET waits, and finish()
    # moves the timer on, so the idle time still counts from the answer.
    channel._savedTimeOut = None
    channel._handlingRequest = True
    channel.setRawMode()
    try:
        request.render(resource)
    except Exception:
        _log.failure("Quick GET {uri} failed", uri=target)
        if not request.finished and not request._disconnected:
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            request.setHeader(b"content-length", b"0")
            request.finish()
    return True
