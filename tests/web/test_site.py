"""L{ilchat.web.site.ChatSite}: the request body limit, over real loopback sockets."""

from __future__ import annotations

import socket
import time

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ilchat.web.site import IDLE_TIMEOUT, ChatSite


class _BodyLength(Resource):
    """Answers a POST with the length of the body it received."""

    isLeaf = True

    def render_POST(self, request) -> bytes:  # noqa: N802 (twisted API)
        return str(len(request.content.read())).encode("ascii")


def _exchange(port: int, data: bytes) -> bytes:
    """Send C{data}, then read until the server closes (run in a thread, not the reactor)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        try:
            conn.sendall(data)
        except OSError:
            pass  # the server may close before it has read everything: that is the point
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


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
        site = ChatSite(resource, timeout=timeout)
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.addCleanup(site.close_connections)
        return listening.getHost().port

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

        class Later(Resource):
            isLeaf = True

            def render_GET(self, request):  # noqa: N802 (twisted API)
                reactor.callLater(1.5, lambda: (request.write(b"late"), request.finish()))
                return NOT_DONE_YET

        port = self.serve(Later(), timeout=0.5)
        answer = await threads.deferToThread(
            _exchange, port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:80])
        self.assertIn(b"late", answer)
