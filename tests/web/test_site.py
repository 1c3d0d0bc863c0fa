"""L{ilchat.web.site.ChatSite}: the request body limit, over real loopback sockets."""

from __future__ import annotations

import socket
import time

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ilchat.web.site import IDLE_TIMEOUT, ChatSite
from tests.support.http import exchange as _exchange, read_to_close as _read_to_close


class _BodyLength(Resource):
    """Answers a POST with the length of the body it received."""

    isLeaf = True

    def render_POST(self, request) -> bytes:  # noqa: N802 (twisted API)
        return str(len(request.content.read())).encode("ascii")


class _AnswerLater(Resource):
    """Answers a GET 1.5 s later, as a parked long-polling GET is answered."""

    isLeaf = True

    def render_GET(self, request):  # noqa: N802 (twisted API)
        reactor.callLater(1.5, lambda: (request.write(b"late"), request.finish()))
        return NOT_DONE_YET


def _serve(test: TestCase, resource: Resource, **kwargs) -> int:
    """A ChatSite on a free loopback port, closed when C{test} ends."""
    site = ChatSite(resource, **kwargs)
    listening = reactor.listenTCP(0, site, interface="127.0.0.1")
    test.addCleanup(listening.stopListening)
    test.addCleanup(site.close_connections)
    return listening.getHost().port


class RequestBodyLimitTests(TestCase):
    def setUp(self) -> None:
        site = ChatSite(_BodyLength(), max_request_body=1000)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(site.close_connections)
        self.port = listening.getHost().port

    def post(self, data: bytes):
        return threads.deferToThread(_exchange, self.port, data)

    async def test_body_within_limit_reaches_resource(self) -> None:
        """A body up to the limit is read and handed to the resource as usual."""
        body = b"x" * 1000
        answer = await self.post(
            b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + body
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertTrue(answer.endswith(b"\r\n\r\n1000"), answer[-40:])

    async def test_announced_length_over_limit_is_refused_before_the_body(self) -> None:
        """A Content-Length over the limit gets 413 JSON at once; the body is never awaited."""
        answer = await self.post(
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 100
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), answer[:80])
        self.assertIn(b"application/json; charset=utf-8", answer)
        self.assertTrue(answer.endswith(b'{"status":413,"message":"Request body too large"}'))

    async def test_chunked_body_growing_over_limit_is_refused(self) -> None:
        """A chunked body (no length announced) is counted as it arrives and cut off at the limit."""
        chunk = b"400\r\n" + b"y" * 0x400 + b"\r\n"
        answer = await self.post(
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), answer[:80])
        self.assertNotIn(b"HTTP/1.1 200", answer)


class IdleTimeoutTests(TestCase):
    """Idle keep-alive connections are closed; requests in progress (long polls) are not."""

    def serve(self, resource: Resource, timeout: float) -> int:
        return _serve(self, resource, timeout=timeout)

    def test_default_is_a_minute(self) -> None:
        self.assertEqual(ChatSite(Resource()).timeOut, IDLE_TIMEOUT)
        self.assertEqual(IDLE_TIMEOUT, 60)

    async def test_idle_keep_alive_connection_is_closed(self) -> None:
        """After one keep-alive request, silence for longer than the timeout ends the connection."""
        port = self.serve(_BodyLength(), timeout=0.5)

        def client() -> tuple[bytes, float]:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab")
                start = time.monotonic()
                answer = b""
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return answer, time.monotonic() - start
                    answer += chunk

        answer, waited = await threads.deferToThread(client)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertTrue(answer.endswith(b"\r\n\r\n2"), answer[-20:])
        self.assertGreater(waited, 0.4)
        self.assertLess(waited, 5)

    async def test_request_in_progress_outlives_the_timeout(self) -> None:
        """A request answered later (as a long-polling GET is) is not cut by the idle timeout."""

        port = self.serve(_AnswerLater(), timeout=0.5)
        answer = await threads.deferToThread(
            _exchange, port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertIn(b"late", answer)


def _trickle(port: int, pieces: list, pause: float, bind: str = "127.0.0.1") -> tuple:
    """
    Send C{pieces} one by one with C{pause} seconds between them (run in a thread); then read
    until the server closes. Returns (answer, seconds from the first byte to the close).
    """
    with socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(bind, 0)) as conn:
        start = time.monotonic()
        answer = b""
        conn.settimeout(pause)
        for piece in pieces:
            try:
                conn.sendall(piece)
            except OSError:
                break
            try:
                chunk = conn.recv(65536)
                if not chunk:
                    return answer, time.monotonic() - start
                answer += chunk
            except socket.timeout:
                pass
            except ConnectionResetError:
                return answer, time.monotonic() - start
        conn.settimeout(20)
        answer += _read_to_close(conn)
        return answer, time.monotonic() - start


class RequestDeadlineTests(TestCase):
    """A request's headers and body must arrive in time, however slowly each byte is trickled."""

    def serve(self, resource: Resource, **limits) -> int:
        return _serve(self, resource, **limits)

    def test_defaults(self) -> None:
        site = ChatSite(Resource())
        self.assertEqual((site.header_timeout, site.body_timeout), (30, 60))
        self.assertEqual((site.max_headers, site.max_header_bytes), (100, 16384))

    async def test_trickled_headers_are_cut_at_the_deadline(self) -> None:
        """
        One header line every 0.3 s resets Twisted's idle timeout each time; the header deadline
        (1 s here) still closes the connection with 408 and one log line.
        """
        port = self.serve(_BodyLength(), header_timeout=1, timeout=60)
        lines = [b"GET / HTTP/1.1\r\n"] + [b"X-Slow-%d: x\r\n" % i for i in range(30)]
        events = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        answer, took = await threads.deferToThread(_trickle, port, lines, 0.3)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 Request Time-out\r\n"), answer[:80])
        self.assertIn(b"did not arrive within 1 seconds", answer)
        self.assertGreater(took, 0.9)
        self.assertLess(took, 4)
        slow = [e for e in events if "slow HTTP request" in (e.get("log_format") or "")]
        self.assertEqual(len(slow), 1)

    async def test_trickled_body_is_cut_at_the_deadline(self) -> None:
        """Headers in time, then a body that never completes: 408 after the body deadline."""
        port = self.serve(_BodyLength(), header_timeout=5, body_timeout=1)
        pieces = [b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"] + [b"x"] * 20
        answer, took = await threads.deferToThread(_trickle, port, pieces, 0.3)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer[:80])
        self.assertIn(b"body", answer)
        self.assertLess(took, 4)

    async def test_long_poll_outlives_the_deadlines(self) -> None:
        """Once a request is complete, answering it late (a parked long poll) is fine."""

        port = self.serve(_AnswerLater(), header_timeout=0.5, body_timeout=0.5)
        answer = await threads.deferToThread(
            _exchange, port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertIn(b"late", answer)

    async def test_keep_alive_requests_each_get_their_own_deadline(self) -> None:
        """A second request on a kept-alive connection starts a fresh header deadline."""
        port = self.serve(_BodyLength(), header_timeout=1)
        request = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab"
        answer, _ = await threads.deferToThread(
            _trickle, port, [request, request, request + b"GET / HTTP/1.1\r\n"], 0.7
        )
        self.assertEqual(answer.count(b"HTTP/1.1 200"), 3, answer)
        self.assertIn(b"HTTP/1.1 408", answer)

    async def test_too_many_headers_get_431(self) -> None:
        """More header lines than max_headers: 431 and the connection closes."""
        port = self.serve(_BodyLength(), max_headers=10)
        headers = b"".join(b"X-H%d: v\r\n" % i for i in range(11))
        answer = await threads.deferToThread(
            _exchange, port, b"GET / HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n"
        )
        self.assertTrue(
            answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
        )
        # Exactly ten (Host, Connection, Content-Length and seven more) are fine.
        fine = b"".join(b"X-H%d: v\r\n" % i for i in range(7))
        answer = await threads.deferToThread(
            _exchange, port, b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Length: 1\r\n" + fine + b"\r\nz"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])

    async def test_too_large_headers_get_431(self) -> None:
        """Header lines adding up to more than max_header_bytes: 431."""
        port = self.serve(_BodyLength(), max_header_bytes=2048)
        answer = await threads.deferToThread(
            _exchange, port,
            b"GET / HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"b" * 1500 + b"\r\nX-Big2: "
            + b"c" * 1000 + b"\r\n\r\n",
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 431 "), answer[:80])


class HTTPConnectionLimitTests(TestCase):
    """The per-address cap on open HTTP connections, in a whole server on loopback."""

    async def test_one_address_holding_its_maximum_does_not_lock_out_others(self) -> None:
        """
        With max_http_connections_per_ip 3, 127.0.0.1 holds three idle connections: its fourth
        gets 429 "Too Many Requests" and is closed, while 127.0.0.2 still gets the Heartbeat;
        once one of the three closes, 127.0.0.1 gets in again.
        """
        from tests.support.server import start_server

        server = await start_server(
            self, server={"network": {"max_http_connections_per_ip": 3}}, client_components=[]
        )
        held = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(3)]
        self.addCleanup(lambda: [s.close() for s in held])
        heartbeat = b"GET /backend/Heartbeat/onscreen HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"

        def from_address(bind: str) -> bytes:
            return _exchange(server.port, heartbeat, bind)

        answer = await threads.deferToThread(from_address, "127.0.0.1")
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer[:80])
        self.assertIn(b"Too many connections from your address (at most 3)", answer)
        answer = await threads.deferToThread(from_address, "127.0.0.2")
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])
        self.assertTrue(answer.endswith(b'{"status":200}'), answer[-40:])
        self.assertIn(
            "Refused an HTTP connection from 127.0.0.1: it holds 3 open connections already",
            server.log_text(),
        )
        held.pop().close()
        for _ in range(50):  # the server notices the close within a turn or two
            answer = await threads.deferToThread(from_address, "127.0.0.1")
            if not answer.startswith(b"HTTP/1.1 429"):
                break
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])

    async def test_websockets_count_and_free_their_slot_when_closed(self) -> None:
        """
        An HTTP connection that became a websocket (Autobahn takes the transport over) still
        counts, and stops counting once it is closed.
        """
        import websocket

        from tests.support.server import start_server

        server = await start_server(self, server={"network": {"max_http_connections_per_ip": 2}})
        url = f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket"
        sockets = [await threads.deferToThread(websocket.create_connection, url, timeout=10)
                   for _ in range(2)]
        self.addCleanup(lambda: [s.close() for s in sockets])
        self.assertTrue(all(s.recv().startswith("0{") for s in sockets))  # Engine.IO open packets
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            await threads.deferToThread(websocket.create_connection, url, timeout=10)
        self.assertEqual(caught.exception.status_code, 429)
        await threads.deferToThread(sockets.pop().close)
        for _ in range(50):
            try:
                third = await threads.deferToThread(websocket.create_connection, url, timeout=10)
                break
            except websocket.WebSocketBadStatusException:
                await threads.deferToThread(time.sleep, 0.05)
        else:
            self.fail("the closed websocket's slot was never freed")
        sockets.append(third)
        self.assertTrue(third.recv().startswith("0{"))


class _Flood(Resource):
    """Answers a GET with 32 MB, more than the kernel buffers for a peer that reads nothing."""

    isLeaf = True

    def render_GET(self, request) -> bytes:  # noqa: N802 (twisted API)
        return b"z" * 32_000_000


class _Parked(Resource):
    """Never answers, as a long-polling GET waits for packets."""

    isLeaf = True

    def render_GET(self, request):  # noqa: N802 (twisted API)
        return NOT_DONE_YET


class CloseConnectionsTests(TestCase):
    """``close_connections`` returns once the connections are closed, not when it asked."""

    def serve(self, resource: Resource) -> ChatSite:
        site = ChatSite(resource)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.port = listening.getHost().port
        return site

    async def wait_for_channels(self, site: ChatSite, count: int) -> None:
        deadline = time.monotonic() + 10
        while len(site.channels) < count and time.monotonic() < deadline:
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(site.channels), count)

    async def test_parked_request_is_closed_before_it_returns(self) -> None:
        """A connection whose request is still being answered is gone when the Deferred fires."""
        site = self.serve(_Parked())
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(conn.close)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await self.wait_for_channels(site, 1)
        transports = [channel._channel.transport for channel in site.channels]
        await site.close_connections()
        self.assertTrue(all(t.disconnected for t in transports))
        self.assertEqual(await threads.deferToThread(_read_to_close, conn), b"")

    async def test_peer_that_reads_nothing_is_aborted_after_the_grace(self) -> None:
        """Unsent output does not keep a connection open past the grace."""
        site = self.serve(_Flood())
        conn = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.addCleanup(conn.close)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        await self.wait_for_channels(site, 1)
        await deferLater(reactor, 0.2, lambda: None)  # the answer is written and waiting
        transports = [channel._channel.transport for channel in site.channels]
        self.assertTrue(transports[0].dataBuffer or transports[0]._tempDataBuffer)
        started = time.monotonic()
        await site.close_connections(grace=0.3)
        self.assertTrue(all(t.disconnected for t in transports))
        self.assertLess(time.monotonic() - started, 3)


class _FormArgs(Resource):
    """Answers a POST with the form arguments Twisted parsed and the body it left readable."""

    isLeaf = True

    def render_POST(self, request) -> bytes:  # noqa: N802 (twisted API)
        args = sorted((k.decode(), [v.decode() for v in vs]) for k, vs in request.args.items())
        return repr((args, request.content.read().decode())).encode()


class PostFormParsingTests(TestCase):
    """Form bodies are parsed into C{request.args} as before; text/plain ones are left alone."""

    def post(self, content_type: bytes, body: bytes):
        port = _serve(self, _FormArgs())
        return threads.deferToThread(
            _exchange,
            port,
            b"POST /?q=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: " + content_type
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        )

    async def test_form_urlencoded_body_is_parsed(self) -> None:
        answer = await self.post(b"application/x-www-form-urlencoded", b"message=hi&x=2")
        self.assertTrue(
            answer.endswith(repr(([("message", ["hi"]), ("q", ["1"]), ("x", ["2"])], "message=hi&x=2")).encode()),
            answer[-120:],
        )

    async def test_text_plain_body_is_not_parsed_as_a_form(self) -> None:
        """What engine.io-client posts: only the query's arguments, the body untouched."""
        for content_type in (b"text/plain;charset=UTF-8", b"Text/Plain"):
            answer = await self.post(content_type, b"message=hi")
            self.assertTrue(
                answer.endswith(repr(([("q", ["1"])], "message=hi")).encode()), answer[-120:]
            )
