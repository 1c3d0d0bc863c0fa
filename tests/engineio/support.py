"""Helpers for the Engine.IO / Socket.IO tests: a Site on a loopback port and an HTTP client.

The HTTP client is Twisted's ``Agent`` (code we did not write); websocket tests use
``websocket-client`` in a thread.
"""

from __future__ import annotations

import json
import socket
import weakref

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site


class _TrackingSite(Site):
    """A Site that can drop its connections, so idle keep-alives do not outlive a test.

    It keeps the TCP transports themselves: Twisted's protocol wraps the HTTP/1.1 channel (the
    wrapper has no ``transport``), and a websocket upgrade takes the transport from the channel.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.transports = weakref.WeakSet()

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        make_connection = protocol.makeConnection

        def track(transport):
            self.transports.add(transport)
            make_connection(transport)

        protocol.makeConnection = track
        return protocol

    async def drop_connections(self) -> None:
        """Abort every connection still open and wait until they are gone (the next turn)."""
        for transport in list(self.transports):
            if not transport.disconnected:
                transport.abortConnection()
        for _ in range(500):
            if all(t.disconnected for t in list(self.transports)):
                return
            await wait(0.01)


def serve(test, resource, child: bytes = b"socket.io") -> str:
    """Mount ``resource`` at ``/<child>`` of a Site on 127.0.0.1:0; returns the base URL.

    The listening port and any HTTP connection left open are closed when the test ends.
    """
    root = Resource()
    root.putChild(child, resource)
    site = _TrackingSite(root)
    site.displayTracebacks = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1", backlog=1024)

    async def stop() -> None:
        await port.stopListening()
        await site.drop_connections()

    test.addCleanup(stop)
    return f"http://127.0.0.1:{port.getHost().port}"


class Response:
    """Status, headers and body of one HTTP exchange."""

    def __init__(self, code: int, headers: Headers, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


@defer.inlineCallbacks
def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    """One HTTP request with Twisted's Agent; returns a :class:`Response`."""
    from twisted.web.client import FileBodyProducer
    from io import BytesIO

    agent = Agent(reactor)
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    hdrs = Headers({k: [v] for k, v in (headers or {}).items()})
    response = yield agent.request(method.encode(), url.encode(), hdrs, producer)
    data = yield readBody(response)
    return Response(response.code, response.headers, data)


def wait(seconds: float):
    """A Deferred firing after ``seconds`` of real time."""
    return deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def handshake(base: str, path: str = "/socket.io/"):
    """Open a polling session; returns ``(sid, open_payload_dict)``."""
    response = yield http("GET", f"{base}{path}?EIO=4&transport=polling")
    assert response.code == 200, (response.code, response.body)
    first = response.text.split("\x1e")[0]
    assert first[0] == "0", first
    info = json.loads(first[1:])
    return info["sid"], info


class RawHTTP:
    """
    One HTTP connection on a plain blocking socket, for what ``Agent`` hides: the exact bytes of
    an answer and whether the server closed the connection after it. Call it in a thread.
    """

    def __init__(self, base: str, timeout: float = 10.0) -> None:
        host, port = base.rsplit("/", 1)[-1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buffer = b""

    def send(self, method: str, target: str, version: str = "HTTP/1.1", headers: str = "") -> None:
        self.sock.sendall(f"{method} {target} {version}\r\nHost: x\r\n{headers}\r\n".encode())

    def answer(self) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
        """The next answer, ``Content-Length`` framed: its raw bytes, its headers and its body."""
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        size = int(headers[b"content-length"][0])
        while len(rest) < size:
            self._read()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[size:]
        return head + b"\r\n\r\n" + rest[:size], headers, rest[:size]

    def closed(self, timeout: float = 2.0) -> bool:
        """Whether the server closes the connection within C{timeout}, with nothing more sent."""
        self.sock.settimeout(timeout)
        try:
            return not self.buffer and self.sock.recv(1) == b""
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection mid-answer")
        self.buffer += data
