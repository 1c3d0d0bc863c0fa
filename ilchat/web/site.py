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

import weakref
from typing import Any, Optional

from twisted.logger import Logger
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from ilchat.logs import debug_wanted

#: Largest request body read from a client (twice Engine.IO's default maxPayload). Engine.IO
#: answers a POST over its maxPayload itself; anything larger is refused while it arrives, so no
#: client can make the server buffer an arbitrarily large upload.
MAX_REQUEST_BODY = 2_000_000

#: Seconds an HTTP connection may sit idle between requests before it is closed (Twisted's
#: default is 12 hours). A parked long-polling GET and a websocket are requests in progress, so
#: they are not cut; they have Engine.IO's heartbeat instead.
IDLE_TIMEOUT = 60


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
        super().requestReceived(command, path, version)

    def _refuse_too_large(self) -> None:
        self._refused = True
        body = b'{"status":413,"message":"Request body too large"}'
        self.channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\n"
            b"Content-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.channel.transport.loseConnection()


class ChatSite(Site):
    """
    The one Site of a listening port: no tracebacks for clients (they go to the error log), a
    bounded request body, idle keep-alive connections closed after a minute, no access-log
    lines, and the open connections kept so that shutdown can close them.

    The Node server has no access log; at ``debug`` level each request is logged instead.
    """

    _log = Logger()
    requestFactory = LimitedRequest
    displayTracebacks = False
    noisy = False  # no "Starting factory" lines in the operator's log

    def __init__(
        self,
        resource: IResource,
        max_request_body: int = MAX_REQUEST_BODY,
        timeout: float = IDLE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, timeout=timeout, **kwargs)
        self.max_request_body = max_request_body
        self.channels: "weakref.WeakSet[Any]" = weakref.WeakSet()

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

    def close_connections(self) -> None:
        for channel in list(self.channels):
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.loseConnection()
