"""
The limits ILIAS mode has by default (the Node server has none): a message throttle per socket
and a per-address session limit, on real sockets with python-socketio against a whole server.
"""

from __future__ import annotations

import json
import time

import socketio
from twisted.internet import threads
from twisted.trial import unittest

from ilchat.config import NetworkConfig
from ilchat.ilias.osc import OnScreenChatComponent
from ilchat.ilias.repository import RepositoryChat
from tests.ilias.repository_support import RepositoryServerMixin, database_dict, sleep, wait_until
from tests.ilias.test_osc import ALICE, BOB, OscServerMixin
from tests.support.server import start_server


def _polling_status_line(port: int) -> bytes:
    """The status line of a polling handshake on a raw socket (blocking; run in a thread)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: t\r\n"
                     b"Connection: close\r\n\r\n")
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


class LimitedRepositoryMixin(RepositoryServerMixin):
    """The repository chat with a chosen server.cfg ``network`` section (None: none at all)."""

    database_kind = "sqlite"
    network = None

    async def start_on(self, databases):
        clients = [{"name": name, "auth": {"key": f"key-{name}", "secret": f"secret-{name}"},
                    "database": database_dict(db)} for name, db in databases.items()]
        server = {"network": self.network} if self.network is not None else {}
        return await start_server(
            self, server=server, clients=clients,
            client_components=[lambda ctx: RepositoryChat(ctx, grace=self.grace)],
        )

    async def flood(self, browser, count: int) -> None:
        """Emit C{count} messages as fast as python-socketio sends them (one thread, no waits)."""

        def send() -> None:
            for index in range(count):
                browser.sio.emit("message", ({"content": f"m{index}", "format": {}}, 1),
                                 namespace=browser.namespace)

        await threads.deferToThread(send)


class DefaultThrottleTests(LimitedRepositoryMixin, unittest.TestCase):
    """No network section at all: ILIAS mode still throttles a flood (10/s, bursts of 30)."""

    def test_defaults(self) -> None:
        defaults = NetworkConfig()
        self.assertEqual((defaults.ilias_message_rate, defaults.ilias_message_burst), (10.0, 30.0))
        self.assertEqual(defaults.max_connections_per_ip, 2000)
        self.assertEqual(defaults.max_http_connections_per_ip, 4000)

    async def test_flood_is_cut_to_the_burst_and_the_sender_is_told(self) -> None:
        """
        200 messages at once: the others get about the burst of 30 (plus what 10/s refills
        meanwhile), the history has exactly what was delivered, and the sender gets the refusal
        as a message from "Chat" (id 0), which the ILIAS page shows as it is.
        """
        alice, bob = await self.alice_and_bob_in_room()
        started = time.monotonic()
        await self.flood(alice, 200)
        await bob.wait_for("message", count=30)
        # Every message answered (her own copy, or the refusal): the server has seen them all.
        await wait_until(lambda: len(alice.payloads("message")) >= 200, 10, "alice's refusals")
        took = time.monotonic() - started
        await sleep(0.5)
        delivered = [p["content"] for p in bob.payloads("message")]
        self.assertGreaterEqual(len(delivered), 30)
        self.assertLessEqual(len(delivered), 30 + 10 * took + 1)  # the burst plus the refill
        # The burst first, in order; what the refill lets through later is any later message
        # (on a busy machine the flood takes long enough for a token or two to come back).
        self.assertEqual(delivered[:30], [f"m{i}" for i in range(30)])
        numbers = [int(content[1:]) for content in delivered]
        self.assertEqual(numbers, sorted(set(numbers)))
        refusals = [p for p in alice.payloads("message") if p["from"]["id"] == 0]
        self.assertEqual(len(refusals) + len(delivered), 200)
        self.assertEqual(refusals[0]["from"], {"id": 0, "username": "Chat",
                                               "profile_picture_visible": False})
        self.assertEqual(refusals[0]["roomId"], 1)
        self.assertIn("You are sending messages too fast", refusals[0]["content"])
        self.assertNotIn("-", refusals[0]["content"][:1])
        self.assertFalse([p for p in bob.payloads("message") if p["from"]["id"] == 0])
        for _ in range(100):
            rows = await self.history()
            if len(rows) >= len(delivered):
                break
            await sleep(0.05)
        await sleep(0.3)
        self.assertEqual(len(await self.history()), len(delivered))
        log = self.server.log_text()
        self.assertEqual(log.count("faster than 10.0/s"), 1, log[-2000:])


class ConfiguredLimitsTests(LimitedRepositoryMixin, unittest.TestCase):
    """Both limits configured small, as the README documents."""

    network = {"ilias_message_rate": 1, "ilias_message_burst": 3, "max_connections_per_ip": 3,
               "trusted_proxies": ["127.0.0.1"]}

    async def test_configured_throttle_refills(self) -> None:
        """Burst 3 at 1/s: three pass, the rest are refused; a second later one more passes."""
        alice, bob = await self.alice_and_bob_in_room()
        started = time.monotonic()
        await self.flood(alice, 6)
        await bob.wait_for("message", count=3)
        refusals = lambda: [p for p in alice.payloads("message") if p["from"]["id"] == 0]  # noqa
        await wait_until(lambda: len(alice.payloads("message")) >= 6, 10, "answers")
        took = time.monotonic() - started
        delivered = len(bob.payloads("message"))
        self.assertLessEqual(delivered, 3 + took + 1)
        self.assertEqual(len(refusals()), 6 - delivered)
        self.assertIn("wait 1 second and send it again", refusals()[0]["content"])
        await sleep(1.1)
        await alice.emit("message", {"content": "later", "format": {}}, 1)
        await bob.wait_for("message", "later")
        self.assertEqual(len(bob.payloads("message")), delivered + 1)

    async def test_sessions_beyond_the_limit_are_told_then_refused(self) -> None:
        """
        max_connections_per_ip 3: a fourth Socket.IO client from the same address still
        connects (one of the policy's grace sessions), and its login is answered with a message
        from "Chat" saying why, then a disconnect (socket.io-client does not reconnect after
        that); once the grace sessions are taken too, the handshake gets "429 Too Many
        Requests"; a client from another address (behind the trusted proxy) is not affected.
        """
        await self.start()
        for _ in range(3):
            await self.browser()
        fourth = await self.browser()
        await fourth.emit("login", "alice", 6)
        told = await wait_until(
            lambda: [p for p in fourth.payloads("message") if p["from"]["id"] == 0], 10, "told"
        )
        self.assertIn("Too many chat connections from your network address (at most 3)",
                      told[0]["content"])
        await threads.deferToThread(fourth.disconnected.wait, 10)
        self.assertTrue(fourth.disconnected.is_set())
        self.assertNotIn("loggedIn", fourth.names())
        grace = self.server.service.policy.session_grace
        for _ in range(grace):
            await self.browser()  # connected, not yet logged in: they hold the grace slots
        refused = socketio.Client(reconnection=False)
        with self.assertRaises(socketio.exceptions.ConnectionError):
            await threads.deferToThread(
                refused.connect, self.server.base_url, namespaces=["/onscreen"],
                transports=["websocket"], wait_timeout=5,
            )
        # The answer on the wire: the status line says what it is (not "Unknown Status").
        status_line = await threads.deferToThread(_polling_status_line, self.server.port)
        self.assertEqual(status_line, b"HTTP/1.1 429 Too Many Requests")
        other = socketio.Client(reconnection=False)
        await threads.deferToThread(
            other.connect, self.server.base_url, namespaces=["/onscreen"],
            transports=["websocket"], wait_timeout=5, headers={"X-Forwarded-For": "10.7.7.7"},
        )
        self.addCleanup(lambda: threads.deferToThread(other.disconnect))
        self.assertTrue(other.connected)
        log = self.server.log_text()
        self.assertIn("Closing a web session of 127.0.0.1: 4 sessions and IRC connections (limit 3)",
                      log)
        self.assertIn(f"Refused new web session from 127.0.0.1: already {3 + grace} (limit 3)", log)


class OscThrottleTests(OscServerMixin, unittest.TestCase):
    """The On-Screen Chat has the same throttle; a refused message gets ``refused``."""

    database_kind = "sqlite"

    async def test_osc_flood_is_refused_beyond_the_burst(self) -> None:
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]

        def send() -> None:
            for index in range(60):
                alice.sio.emit("message", (conv, 6, f"o{index}"), namespace=alice.namespace)

        await threads.deferToThread(send)
        await bob.wait_for("message", count=30)
        await wait_until(lambda: len(alice.payloads("refused")) >= 20, 10, "refusals")
        await sleep(0.5)
        delivered = len(bob.payloads("message"))
        self.assertEqual(delivered + len(alice.payloads("refused")), 60)
        refusal = alice.payloads("refused")[0]
        self.assertEqual(refusal["event"], "message")
        self.assertIn("too fast", refusal["reason"])
        self.assertEqual(self.server.log_text().count("refused: faster than"), 1)

    async def test_osc_socket_beyond_the_limit_is_disconnected(self) -> None:
        """With max_connections_per_ip 1 a second OSC tab of the address is disconnected at once."""
        from tests.ilias.test_osc import Tab

        self.server = await start_server(
            self, server={"network": {"max_connections_per_ip": 1}},
            client_components=[OnScreenChatComponent],
        )
        self.tabs = []
        self.addCleanup(self._close_tabs)
        first = await self.tab(ALICE)
        second = Tab(self.server)
        self.tabs.append(second)
        errors = []
        second.sio.on("connect_error", errors.append, namespace=second.namespace)
        with self.assertRaises(socketio.exceptions.ConnectionError):
            await second.connect()
        await wait_until(lambda: errors, 5, "connect_error")
        self.assertIn("Too many chat connections from your network address (at most 1)",
                      json.dumps(errors[0]))
        self.assertFalse(first.disconnected.is_set())
