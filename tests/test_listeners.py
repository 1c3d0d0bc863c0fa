"""
Listeners from endpoint descriptions (server.cfg ``listen``): the PROXY protocol behind a load
balancer and systemd's socket activation, each in a real server on loopback.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import List

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ilchat.listeners import reads_proxy_header, tcp_description
from tests.support.http import exchange, http_request
from tests.support.server import free_port, start_server, write_configs
from tests.test_plugin import TWISTD, _env, spawn_serving

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT = b"GET /backend/Heartbeat/onscreen HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


def proxy_header(source: str, source_port: int = 40000) -> bytes:
    """A PROXY protocol v1 header, as HAProxy sends it before the client's bytes."""
    return f"PROXY TCP4 {source} 127.0.0.1 {source_port} 443\r\n".encode("ascii")


class DescriptionTests(TestCase):
    def test_tcp_description_quotes_ipv6_and_keeps_the_backlog(self) -> None:
        self.assertEqual(tcp_description("127.0.0.1", 8080), "tcp:8080:interface=127.0.0.1")
        self.assertEqual(tcp_description("::1", 80, 1024), r"tcp:80:interface=\:\:1:backlog=1024")
        self.assertTrue(reads_proxy_header("haproxy:tcp:8080"))
        self.assertFalse(reads_proxy_header("tcp:8080"))

    async def test_unknown_endpoint_type_is_a_one_line_startup_error(self) -> None:
        from ilchat.service import StartupError

        with self.assertRaises(StartupError) as caught:
            await start_server(self, server={"listen": "carrier-pigeon:8080"}, client_components=[])
        self.assertIn("Cannot listen on carrier-pigeon:8080", str(caught.exception))


class ListenKeyTests(TestCase):
    """The ``listen`` keys in server.cfg and its ``metrics`` section."""

    def test_listen_must_be_a_non_empty_string(self) -> None:
        from ilchat.config import ConfigError, load_configs

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        for value in (8080, ""):
            server_cfg, clients = write_configs(folder, server={"listen": value})
            with self.assertRaises(ConfigError) as caught:
                load_configs(server_cfg, clients)
            self.assertIn("listen", str(caught.exception))
            self.assertIn("expected a non-empty string", str(caught.exception))

    async def test_metrics_listener_takes_an_endpoint_description(self) -> None:
        """``metrics.listen`` wins over its address/port: /metrics answers where it says."""
        port = free_port()
        server = await start_server(
            self,
            server={"metrics": {"port": 9, "listen": f"tcp:{port}:interface=127.0.0.1"}},
            client_components=[],
        )
        self.assertEqual(server.service.metrics_port, port)
        response = await http_request(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 200)
        self.assertIn(b"ilchat_", response.body)
        self.assertIn(f"Metrics listening on: http://127.0.0.1:{port}/metrics", server.log_text())


class ProxyProtocolTests(TestCase):
    """``listen: "haproxy:tcp:..."``: the client's address is the one in the PROXY header."""

    async def start(self, **network) -> object:
        port = free_port()
        server = await start_server(
            self,
            server={
                "listen": f"haproxy:tcp:{port}:interface=127.0.0.1",
                "network": dict({"allow": ["203.0.113.0/24"]}, **network),
            },
            client_components=[],
        )
        self.assertEqual(server.port, port)
        return server

    async def test_allow_list_judges_the_address_in_the_header(self) -> None:
        """
        The TCP peer is 127.0.0.1, outside the allow-list: a header naming an allowed address
        gets the Heartbeat, one naming another address gets 403 and that address in the log,
        and a connection without a header is closed unanswered.
        """
        server = await self.start()
        answer = await threads.deferToThread(exchange, server.port, proxy_header("203.0.113.7") + HEARTBEAT)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])
        self.assertTrue(answer.endswith(b'{"status":200}'), answer[-40:])

        answer = await threads.deferToThread(exchange, server.port, proxy_header("198.51.100.9") + HEARTBEAT)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer[:80])
        self.assertIn("Refused HTTP request from 198.51.100.9 (not in the allow-list)", server.log_text())
        self.assertNotIn("Refused HTTP request from 127.0.0.1", server.log_text())

        answer = await threads.deferToThread(exchange, server.port, HEARTBEAT)
        self.assertEqual(answer, b"")

    async def test_per_address_connection_limit_counts_the_header_address(self) -> None:
        """
        With max_http_connections_per_ip 2, two connections from 203.0.113.7 (through the same
        proxy) are held open: its third gets 429, while 203.0.113.8 through the same proxy is
        served; the proxy's own address (127.0.0.1) is never counted.
        """
        server = await self.start(max_http_connections_per_ip=2)
        held: List[socket.socket] = []
        self.addCleanup(lambda: [s.close() for s in held])
        for source_port in (40001, 40002):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            held.append(conn)
            # The header and the start of a request line: the connection counts from here.
            conn.sendall(proxy_header("203.0.113.7", source_port) + b"GET /")
        counts = server.service.policy.http_connections
        for _ in range(100):
            if counts.count("203.0.113.7") == 2:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(counts.count("203.0.113.7"), 2)
        self.assertEqual(counts.count("127.0.0.1"), 0)

        answer = await threads.deferToThread(exchange, server.port, proxy_header("203.0.113.7") + HEARTBEAT)
        self.assertTrue(answer.startswith(b"HTTP/1.1 429 Too Many Requests\r\n"), answer[:80])
        self.assertIn(
            "Refused an HTTP connection from 203.0.113.7: it holds 2 open connections already",
            server.log_text(),
        )
        answer = await threads.deferToThread(exchange, server.port, proxy_header("203.0.113.8") + HEARTBEAT)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:80])

    async def test_websocket_through_the_proxy_header(self) -> None:
        """An Engine.IO websocket works behind the header (Autobahn takes over the wrapper)."""
        import websocket

        server = await self.start()

        def talk() -> List[str]:
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            conn.sendall(proxy_header("203.0.113.7"))
            ws = websocket.create_connection(
                f"ws://127.0.0.1:{server.port}/socket.io/?EIO=4&transport=websocket",
                socket=conn,
                timeout=10,
            )
            try:
                opened = ws.recv()
                ws.send("40/nowhere,")
                return [opened, ws.recv()]
            finally:
                ws.close()

        opened, refused = await threads.deferToThread(talk)
        self.assertTrue(opened.startswith('0{"sid":'), opened)
        self.assertEqual(refused, '44/nowhere,{"message":"Invalid namespace"}')


class SocketActivationTests(TestCase):
    """``listen: "systemd:domain=INET:index=0"`` in a real ``twistd ilchat`` process."""

    timeout = 60

    async def test_twistd_serves_on_the_inherited_socket(self) -> None:
        """
        A launcher binds a port, hands it over as systemd does (fd 3, LISTEN_FDS, LISTEN_PID) and
        execs twistd: the server answers there, not on server.cfg's port, and stops on SIGTERM.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        inherited, configured = free_port(), free_port()
        server_cfg, clients = write_configs(
            folder, server={"port": configured, "listen": "systemd:domain=INET:index=0"}
        )
        url = f"http://127.0.0.1:{inherited}"
        command = [sys.executable, "-m", "tests.support.socket_activation", "127.0.0.1", str(inherited),
                   TWISTD, "-n", "--pidfile=", "ilchat", server_cfg, clients[0]]
        process = await spawn_serving(self, command, folder, url, env=_env(PYTHONPATH=ROOT))
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", configured), timeout=2).close()

        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(process.returncode, 0)
        output = process.stdout.read().decode()
        self.assertIn(f"Listening on: http://127.0.0.1:{inherited}", output)
