# -*- test-case-name: tests.web.test_backend -*-
"""
The twisted.web resource tree of one listening port.

::

    /backend/...                       BackendResource (ILIAS PHP)
    /socket.io/                        the Socket.IO server (browsers)
    <sub_directory>/backend/...        the same backend, for proxies that keep the prefix
    <sub_directory>/socket.io/         the Socket.IO path ILIAS gives the browsers

Other parts add their own children to ``root`` (for instance the standalone web client) through
``WebRoot.put``.
"""

import io
import tempfile
import weakref
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

from twisted.logger import Logger
from twisted.web import http, pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from ilchat.config import NetworkConfig
from ilchat.logs import RepeatedLog, debug_wanted
from ilchat.web._wholehead import take_whole_head
from ilchat.web.responses import encode_json, reason_phrase

#: Largest request body read from a client (twice Engine.IO's default maxPayload). Engine.IO
#: answers a POST over its maxPayload itself; anything larger is refused while it arrives, so no
#: client can make the server buffer an arbitrarily large upload.
MAX_REQUEST_BODY = 2_000_000

#: Seconds an HTTP connection may sit idle between requests before it is closed (Twisted's
#: default is 12 hours). A parked long-polling GET and a websocket are requests in progress, so
#: they are not cut; they have Engine.IO's heartbeat instead.
IDLE_TIMEOUT = 60

#: Seconds from a request's first byte to the end of its headers, and from there to the end of its
#: body. Twisted only has the idle timeout, which every trickled byte resets, so a client sending
#: one header line every 20 s kept a connection (and a file descriptor) for hours.
#: The defaults are server.cfg ``network``'s (``ilchat.config.NetworkConfig``).
HEADER_TIMEOUT = NetworkConfig().header_timeout
BODY_TIMEOUT = NetworkConfig().body_timeout

#: Most header lines and header bytes (request line included) one request may have. Browsers send
#: 10-20 headers in 1-4 KB; Twisted's own defaults are 500 lines and 16 KiB.
MAX_HEADERS = NetworkConfig().max_headers
MAX_HEADER_BYTES = NetworkConfig().max_header_bytes

def raw_json_answer(code: int, message: str) -> bytes:
    """
    A whole ``Connection: close`` HTTP/1.1 answer with a JSON body, for refusals written to the
    transport before (or instead of) a twisted.web request.
    """
    body = encode_json({"status": code, "message": message})
    return (
        b"HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, reason_phrase(code), len(body), body)
    )


class _Folder(Resource):
    """A node of the tree; unknown children get an escaped 404 page, never a traceback."""

    def getChild(self, path: bytes, request) -> IResource:  # noqa: N802 (twisted API)
        return pages.notFound()

    def render(self, request) -> bytes:
        if b"" in self.children and not request.path.endswith(b"/"):
            # A folder with an index page (the standalone chat at <sub_directory>/): add the
            # slash, so that the page's relative links resolve inside the folder.
            request.redirect(request.path + b"/")
            return b""
        request.setResponseCode(404)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"Not found\n"


class WebRoot:
    """
    The root of the tree plus the ``sub_directory`` folder, so that a resource can be mounted at
    both places with one call.
    """

    def __init__(self, sub_directory: str = "") -> None:
        self.root = _Folder()
        self.sub_directory = sub_directory
        self.sub: Optional[Resource] = None
        node: Resource = self.root
        for segment in [s for s in sub_directory.split("/") if s]:
            child = _Folder()
            node.putChild(segment.encode("utf-8"), child)
            node = child
        if node is not self.root:
            self.sub = node

    def put(self, name: str, resource: IResource, root: bool = True, sub: bool = True) -> None:
        """Mount ``resource`` at ``/<name>`` and/or ``<sub_directory>/<name>``."""
        if root:
            self.root.putChild(name.encode("utf-8"), resource)
        if sub and self.sub is not None:
            self.sub.putChild(name.encode("utf-8"), resource)


class LimitedRequest(Request):
    """
    A request whose body may not exceed the site's C{max_request_body}.

    twisted.web buffers the whole body before a resource sees it; this checks the announced
    length and the bytes of a chunked body as they come, answers 413 and closes the connection.
    """

    _refused = False

    def gotLength(self, length: Optional[int]) -> None:  # noqa: N802 (twisted API)
        if length is not None and length > self.channel.site.max_request_body:
            self._refuse_too_large()
            return
        self._body_length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        if self._refused:
            return
        self._body_length += len(data)
        if self._body_length > self.channel.site.max_request_body:
            self._refuse_too_large()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        # The rest of a refused body may already sit in the channel's buffer, so the channel can
        # still report the request complete: it was answered with 413 and is never rendered.
        if self._refused:
            return
        if command == b"POST":
            content_type = self.requestHeaders.getRawHeaders(b"content-type")
            if content_type and content_type[0].split(b";", 1)[0].strip().lower() == b"text/plain":
                # What engine.io-client posts: no form to parse, so Twisted need not find that
                # out with the email package's header parser (~0.1 ms per polling POST).
                self._parsePOSTFormSubmission = False
        super().requestReceived(command, path, version)

    def setResponseCode(self, code: int, message: Optional[bytes] = None) -> None:  # noqa: N802
        # twisted.web writes "Unknown Status" for the codes its table lacks (429, 431).
        super().setResponseCode(code, message if message is not None else reason_phrase(code))

    def _refuse_too_large(self) -> None:
        self._refused = True
        self.channel.transport.write(raw_json_answer(413, "Request body too large"))
        self.channel.transport.loseConnection()


class ChatChannel(http.HTTPChannel):
    """
    An HTTP/1.1 connection with the limits Twisted lacks: a deadline for a request's headers and
    one for its body (answered ``408``), at most C{max_headers} header lines and
    C{max_header_bytes} bytes of them (``431``), and the site's per-address count of open
    connections (``429``). Once a request is complete its handling takes as long as it takes: a
    parked long-polling GET and a websocket are not cut.
    """

    #: The connection's one deadline timer, kept across its requests (see _start_deadline).
    _deadline: Any = None
    #: What the timer is timing: "headers", "body", or None (dormant: it will do nothing).
    _deadline_part: Optional[str] = None
    _refused = False
    _counted = False

    def connectionMade(self) -> None:  # noqa: N802 (twisted API)
        site = self.site
        self.maxHeaders = site.max_headers
        self.totalHeadersSize = site.max_header_bytes
        super().connectionMade()
        if not site.proxy_header:
            self._count_connection()

    def _count_connection(self) -> None:
        self._counted = True
        refusal = self.site.connection_refusal(self)
        if refusal is not None:
            self._refuse(429, refusal)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        if not self._counted:
            # Behind a PROXY header: the first bytes come once it is read (the client's address).
            self._count_connection()
        if self._refused:
            return
        if not take_whole_head(self, data):
            super().dataReceived(data)

    _host: Any = None
    _peer: Any = None

    def getHost(self) -> Any:  # noqa: N802 (twisted API)
        # Every Request asks for both addresses (Twisted's TCP transport makes a getsockname()
        # call and a new address object each time): a polling client makes a request per
        # message. They are fixed once a PROXY header, if any, has been read (_counted).
        host = self._host
        if host is None:
            host = super().getHost()
            if self._counted:
                self._host = host
        return host

    def getPeer(self) -> Any:  # noqa: N802 (twisted API)
        peer = self._peer
        if peer is None:
            peer = super().getPeer()
            if self._counted:
                self._peer = peer
        return peer

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 (twisted API)
        # Line mode is only ever reading a request's headers: the first line starts the clock.
        if self._deadline_part is None and not self._refused:
            self._start_deadline("headers", self.site.header_timeout)
        super().lineReceived(line)

    def allHeadersReceived(self) -> None:  # noqa: N802 (twisted API)
        self._deadline_part = None
        if self.length != 0:
            self._start_deadline("body", self.site.body_timeout)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802 (twisted API)
        self._deadline_part = None
        super().allContentReceived()
        if self.transport is None:
            # A websocket took the connection over (Autobahn): this channel is done with it.
            self._cancel_deadline()

    def timeoutConnection(self) -> None:  # noqa: N802 (twisted API)
        if self._handlingRequest:
            # Only a GET of the quick lane keeps the idle timer while it is handled
            # (ilchat.web._wholehead): a parked poll, not an idle connection. The timer that
            # fired is spent; a new one watches on.
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 (twisted API)
        self._cancel_deadline()
        super().connectionLost(reason)

    def _start_deadline(self, part: str, seconds: float) -> None:
        """
        Time C{part} of the current request. The connection keeps one timer and moves it on
        (C{reset}, arithmetic only) instead of creating and cancelling one per request: a
        long-polling client makes a request per message it gets. A timer due later than the
        new deadline is replaced (moving it sooner would search the reactor's whole heap).
        """
        self._deadline_part = part
        call = self._deadline
        if call is not None and call.active():
            if call.getTime() <= call.seconds() + seconds:
                call.reset(seconds)
                return
            call.cancel()
        self._deadline = self.callLater(seconds, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._deadline = None
        part, self._deadline_part = self._deadline_part, None
        if part is not None:
            self._too_slow(part)

    def _cancel_deadline(self) -> None:
        self._deadline_part = None
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, part: str) -> None:
        limit = self.site.header_timeout if part == "headers" else self.site.body_timeout
        self.site.refusals.warn(
            "Closed a slow HTTP request from {peer}: its {part} took longer than {limit} s",
            key="slow",
            peer=_peer_text(self),
            part=part,
            limit=limit,
        )
        self._refuse(408, f"The request's {part} did not arrive within {limit} seconds.")

    def _respondToBadRequestAndDisconnect(self) -> None:  # noqa: N802 (twisted API)
        if (
            self._receivedHeaderCount > self.maxHeaders
            or self._receivedHeaderSize > self.totalHeadersSize
        ):
            self.site.refusals.warn(
                "Refused an HTTP request from {peer}: more than {count} header lines or"
                " {size} bytes of headers",
                key="headers",
                peer=_peer_text(self),
                count=self.maxHeaders,
                size=self.totalHeadersSize,
            )
            self._refuse(431, "Too many or too large request headers.")
            return
        super()._respondToBadRequestAndDisconnect()

    def _refuse(self, code: int, message: str) -> None:
        self._refused = True
        self._cancel_deadline()
        if self.transport is not None:
            self.transport.write(raw_json_answer(code, message))
            self.loseConnection()


def _transport_of(channel: Any) -> Any:
    """The TCP (or TLS) transport of a connection the site built: Twisted's protocol wraps the
    HTTP/1.1 channel (``_GenericHTTPChannelProtocol``), and the wrapper has no ``transport``."""
    return getattr(getattr(channel, "_channel", channel), "transport", None)


def _gone(transport: Any) -> bool:
    """Whether a transport has lost its connection (one without that flag, such as TLS's
    wrapper, is taken as closed: its TCP transport closes with it)."""
    return getattr(transport, "disconnected", True)


def _peer_text(channel: http.HTTPChannel) -> str:
    peer = channel.transport.getPeer() if channel.transport is not None else None
    return getattr(peer, "host", None) or str(peer)


def _chat_channel_protocol(site: "ChatSite") -> Any:
    # What twisted.web's HTTPFactory.protocol builds (HTTP/1.1, or HTTP/2 when negotiated), with
    # our channel inside.
    return http._GenericHTTPChannelProtocol(ChatChannel())


class ChatSite(Site):
    """
    The one Site of a listening port: no tracebacks for clients (they go to the error log), a
    bounded request body, deadlines and size limits for headers and bodies (L{ChatChannel}), a
    per-address limit of open connections (the policy's, when one is given), idle keep-alive
    connections closed after a minute, no access-log lines, and the open connections kept so that
    shutdown can close them.

    The Node server has no access log; at ``debug`` level each request is logged instead.
    """

    _log = Logger()
    requestFactory = LimitedRequest
    protocol = _chat_channel_protocol
    displayTracebacks = False
    noisy = False  # no "Starting factory" lines in the operator's log

    def __init__(
        self,
        resource: IResource,
        max_request_body: int = MAX_REQUEST_BODY,
        timeout: float = IDLE_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        max_headers: int = MAX_HEADERS,
        max_header_bytes: int = MAX_HEADER_BYTES,
        policy: Any = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            policy: a L{ilchat.web.policy.NetworkPolicy}; its C{http_connections} limit the open
                connections per address (none when C{None}).
        """
        super().__init__(resource, timeout=timeout, **kwargs)
        self.max_request_body = max_request_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.policy = policy
        #: Connections start with a PROXY header (``haproxy:`` listeners): count them per client
        #: address once it is read, not per proxy at connect.
        self.proxy_header = False
        self.refusals = RepeatedLog(self._log, self.reactor)
        self.channels: "weakref.WeakSet[Any]" = weakref.WeakSet()

    def connection_refusal(self, channel: ChatChannel) -> Optional[str]:
        """Why a new connection may not stay (its address holds too many already), or ``None``."""
        if self.policy is None or channel.transport is None:
            return None
        address = getattr(channel.transport.getPeer(), "host", None)
        if address is None or self.policy.add_http_connection(address, channel.transport):
            return None
        limit = self.policy.http_connections.limit
        self.refusals.warn(
            "Refused an HTTP connection from {address}: it holds {limit} open connections already",
            key=("connections", address),
            address=address,
            limit=limit,
        )
        return f"Too many connections from your address (at most {limit})."

    def getContentFile(self, length: Optional[int]) -> Any:  # noqa: N802 (twisted API)
        # Twisted's Request.gotLength asks the Site for this and falls back on catching an
        # AttributeError: an exception for every request (2 % of the polling fan-out's CPU).
        # What that fallback makes: memory for a small body, a temporary file otherwise.
        if length is not None and length < 100_000:
            return io.BytesIO()
        return tempfile.TemporaryFile()

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (twisted API)
        channel = super().buildProtocol(addr)
        if channel is not None:
            self.channels.add(channel)
        return channel

    def log(self, request: Any) -> None:
        if not debug_wanted():  # one event per HTTP request: skip it when no observer keeps it
            return
        self._log.debug(
            "{method} {uri} {code}",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("ascii", "replace"),
            code=request.code,
        )

    def close_connections(self, grace: float = 1.0) -> Deferred:
        """
        Close every open connection; the Deferred fires once they are all gone.

        ``loseConnection`` only starts a close (it waits for the write buffer), so a caller that
        went on at once left connections behind it: a stopped server that still holds sockets.
        A connection still open after C{grace} seconds (a peer that reads nothing) is aborted.
        """
        self.refusals.flush()  # the counts of repeated refusal lines, and their timers
        transports = [_transport_of(channel) for channel in list(self.channels)]
        transports = [t for t in transports if t is not None and not _gone(t)]
        for transport in transports:
            transport.loseConnection()
        return ensureDeferred(self._wait_closed(transports, grace))

    async def _wait_closed(self, transports: List[Any], grace: float) -> None:
        clock = self.reactor
        deadline = clock.seconds() + grace
        aborted = False
        while any(not _gone(t) for t in transports):
            if not aborted and clock.seconds() >= deadline:
                for transport in transports:
                    if not _gone(transport):
                        transport.abortConnection()
                aborted = True
            elif aborted and clock.seconds() >= deadline + grace:
                return  # nothing more to do; the reactor drops them with the process
            await deferLater(clock, 0.01, lambda: None)
