"""
The Prometheus metrics: scraped over real HTTP from the metrics listener after real traffic
(python-socketio browsers, Twisted's IRCClient), with the reactor lag timer on a fake clock.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, endpoints, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.words.protocols import irc

from ilchat.config import ConfigError
from ilchat.ilias.osc import OnScreenChatComponent
from ilchat.metrics import ReactorLag
from ilchat.standalone import StandaloneChat
from tests.engineio.support import handshake, http
from tests.ilias.repository_support import Browser
from tests.ilias.test_osc import Tab
from tests.support.db import insert_rows_async, make_database
from tests.support.http import http_request
from tests.support.server import start_server, write_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape as {(name, sorted labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= set(l))


class ReactorLagTests(SynchronousTestCase):
    def test_lag_is_how_late_the_timer_ran(self) -> None:
        """On time: 0; a reactor that was busy for 2 s runs the 0.5 s timer 1.5 s late."""
        clock = task.Clock()
        seen = []
        lag = ReactorLag(clock, seen.append, interval=0.5)
        lag.start()
        clock.advance(0.5)
        self.assertEqual(seen, [0.0])
        clock.advance(2.0)
        self.assertEqual(seen, [0.0, 1.5])
        lag.stop()
        clock.advance(5)
        self.assertEqual(len(seen), 2)
        self.assertEqual(clock.getDelayedCalls(), [])


class MetricsConfigTests(SynchronousTestCase):
    def load(self, metrics: Any) -> Any:
        from ilchat.config import load_server_config

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        server, _ = write_configs(folder, server={"metrics": metrics})
        return load_server_config(server)

    def test_defaults_are_loopback_and_9464(self) -> None:
        config = self.load({})
        self.assertEqual((config.metrics.address, config.metrics.port), ("127.0.0.1", 9464))

    def test_absent_section_is_off(self) -> None:
        self.assertIsNone(self.load(None).metrics)

    def test_bad_port_is_one_line(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.load({"port": 70000})
        self.assertIn("metrics.port = 70000 is not allowed; expected an integer from 0 to 65535",
                      str(caught.exception))


class IrcTalker(irc.IRCClient):
    nickname = "ircmetrics"

    def __init__(self) -> None:
        self.said: defer.Deferred = defer.Deferred()

    def signedOn(self) -> None:  # noqa: N802 (twisted API)
        self.join("#chat-1")

    def joined(self, channel: str) -> None:
        self.msg(channel, "hello from IRC")
        self.said.callback(channel)


class MetricsEndToEndTests(TestCase):
    timeout = 60

    async def start(self, **server: Any) -> Any:
        self.server = await start_server(
            self,
            server={"metrics": {"address": "127.0.0.1", "port": 0},
                    "irc": {"address": "127.0.0.1", "port": 0, "auth": "open"}, **server},
            clients=[{"name": "chat", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=0.5)],
        )
        self.browsers = []
        self.addCleanup(self._close)
        return self.server

    async def _close(self) -> None:
        for browser in self.browsers:
            await browser.close()

    async def scrape(self) -> Samples:
        port = self.server.service.metrics_port
        response = await http_request(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.header("Content-Type").startswith("text/plain"))
        return parse(response.body.decode("utf-8"))

    async def login(self, name: str) -> Browser:
        browser = Browser(self.server, "/chat")
        self.browsers.append(browser)
        await browser.connect()
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        await browser.wait_for("notice", "welcome_to_chat")
        return browser

    async def test_traffic_moves_the_metrics(self) -> None:
        """Two browsers and an IRC client talk; every metric of that traffic moves."""
        await self.start()
        before = await self.scrape()
        self.assertEqual(value(before, "ilchat_rooms", client="chat"), 1)
        self.assertEqual(value(before, "ilchat_connections", transport="websocket", namespace="/chat"), 0)
        self.assertEqual(value(before, "ilchat_chat_messages_total", client="chat", kind="room"), 0)

        alice = await self.login("Alice")
        bob = await self.login("Bob")
        for number in range(3):
            await alice.emit("message", {"content": f"m{number}", "format": {}}, 1)
        await bob.wait_for("message", count=3)

        irc_port = self.server.service.components[-1].ports[0].getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", irc_port)
        talker = await endpoints.connectProtocol(endpoint, IrcTalker())
        self.addCleanup(talker.transport.loseConnection)
        await talker.said
        await bob.wait_for("message", count=4)
        chat = self.server.client("chat").components[0].chat
        await chat.flush_history()

        after = await self.scrape()
        self.assertEqual(value(after, "ilchat_connections", transport="websocket", namespace="/chat"), 2)
        self.assertEqual(value(after, "ilchat_connections", transport="polling", namespace="/chat"), 0)
        self.assertEqual(value(after, "ilchat_connections", transport="irc", namespace=""), 1)
        # Alice, Bob and the IRC user are in the room.
        self.assertEqual(value(after, "ilchat_room_members", client="chat"), 3)
        self.assertEqual(value(after, "ilchat_chat_messages_total", client="chat", kind="room"), 4)
        # Alice's three messages reach Alice and Bob (the sender sees her own message too); the
        # IRC user's reaches all three connections.
        self.assertEqual(value(after, "ilchat_deliveries_total", client="chat", kind="room"), 3 * 2 + 3)
        # Two logins, two enterRoom, three messages.
        self.assertEqual(value(after, "ilchat_messages_in_total", transport="socketio", namespace="/chat"), 7)
        self.assertGreaterEqual(value(after, "ilchat_messages_out_total", transport="socketio", namespace="/chat"), 4)
        self.assertGreater(value(after, "ilchat_messages_in_total", transport="irc", namespace=""), 3)
        self.assertGreater(value(after, "ilchat_messages_out_total", transport="irc", namespace=""), 5)
        self.assertEqual(value(after, "ilchat_history_queue_length", client="chat"), 0)
        writes = value(after, "ilchat_db_transaction_seconds_count", client="chat", transaction="add_history")
        self.assertGreaterEqual(writes, 1)
        self.assertGreater(
            value(after, "ilchat_db_transaction_seconds_sum", client="chat", transaction="add_history"), 0
        )
        self.assertEqual(total(after, "ilchat_db_errors_total"), 0)
        # The lag timer ticks every 0.5 s.
        await task.deferLater(reactor, 0.6, lambda: None)
        self.assertGreater(value(await self.scrape(), "ilchat_reactor_lag_seconds_count"), 0)
        self.assertEqual(value(after, "ilchat_info", version=__import__("ilchat").__version__), 1)

        # Bob leaves: the connection gauge goes down again.
        await bob.close()
        self.browsers.remove(bob)
        port = self.server.service.metrics_port

        async def websockets() -> float:
            response = await http_request(f"http://127.0.0.1:{port}/metrics")
            return value(parse(response.body.decode()), "ilchat_connections", transport="websocket",
                         namespace="/chat")

        for _ in range(200):
            if await websockets() == 1:
                break
        self.assertEqual(await websockets(), 1)

    async def test_refusals_are_counted_by_reason(self) -> None:
        """A Socket.IO handshake from a page of another origin shows under "origin"."""
        await self.start(network={"allowed_origins": ["https://good.example"]})
        response = await http_request(
            self.server.url("/socket.io/?EIO=4&transport=polling"), headers={"Origin": "https://evil.example"}
        )
        self.assertEqual(response.code, 403)
        samples = await self.scrape()
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="origin"), 1)
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="address"), 0)

    async def test_sessions_closed_for_bad_input_or_a_limit_are_counted(self) -> None:
        """A packet strict JSON refuses counts as parse_error, 501 packets in a POST as session_limit."""
        await self.start()
        base = self.server.base_url
        for body in (b'42/chat,["message",1e999]', b"\x1e".join([b"6"] * 501)):
            sid, _ = await handshake(base)
            url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
            await http("POST", url, b"40/chat,")
            self.assertEqual((await http("POST", url, body)).code, 400)
        samples = await self.scrape()
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="parse_error"), 1)
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="session_limit"), 1)

    async def test_message_rate_refusals(self) -> None:
        """Messages over the throttle are refused and counted; only the first is a chat message."""
        await self.start(network={"message_rate": 0.01, "message_burst": 1})
        alice = await self.login("Alice")
        for number in range(3):
            await alice.emit("message", {"content": f"m{number}", "format": {}}, 1)
        await alice.wait_for("refused", count=2)
        samples = await self.scrape()
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="message_rate"), 2)
        self.assertEqual(value(samples, "ilchat_chat_messages_total", client="chat", kind="room"), 1)

    async def test_irc_refusals_are_counted(self) -> None:
        """A second IRC connection over irc.limits.max_connections_per_ip is a refusal."""
        await self.start(irc={"address": "127.0.0.1", "port": 0, "auth": "open",
                              "limits": {"max_connections_per_ip": 1}})
        irc_port = self.server.service.components[-1].ports[0].getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", irc_port)
        first = await endpoints.connectProtocol(endpoint, IrcTalker())
        self.addCleanup(first.transport.loseConnection)
        await first.said
        refused = await endpoints.connectProtocol(endpoint, irc.IRCClient())
        self.addCleanup(refused.transport.loseConnection)
        for _ in range(100):
            samples = await self.scrape()
            if value(samples, "ilchat_refusals_total", reason="connections_per_ip"):
                break
        self.assertEqual(value(samples, "ilchat_refusals_total", reason="connections_per_ip"), 1)
        self.assertEqual(value(samples, "ilchat_connections", transport="irc", namespace=""), 1)

    async def test_metrics_listener_obeys_the_allow_list(self) -> None:
        """An address outside network.allow gets 403 from the metrics listener too."""
        await self.start(network={"allow": ["10.0.0.0/8"]})
        port = self.server.service.metrics_port
        response = await http_request(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 403)

    async def test_two_servers_in_one_process_have_their_own_metrics(self) -> None:
        """Per-service registries: a second server's scrape starts from zero."""
        first = await self.start()
        alice = await self.login("Alice")
        await alice.emit("message", {"content": "hi", "format": {}}, 1)
        await alice.wait_for("message")
        second = await start_server(
            self,
            server={"metrics": {"address": "127.0.0.1", "port": 0}},
            clients=[{"name": "chat", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        response = await http_request(f"http://127.0.0.1:{second.service.metrics_port}/metrics")
        samples = parse(response.body.decode())
        self.assertEqual(value(samples, "ilchat_chat_messages_total", client="chat", kind="room"), 0)
        self.assertEqual(value(await self.scrape(), "ilchat_chat_messages_total", client="chat", kind="room"), 1)
        self.assertIsNotNone(first)


class ShippedExamplesTests(TestCase):
    """etc/prometheus.yml and the Grafana dashboard name what the server exports."""

    async def test_dashboard_queries_name_exported_metrics(self) -> None:
        """Every metric name in a dashboard query is one a running server exports."""
        import re

        server = await start_server(self, server={"metrics": {"address": "127.0.0.1", "port": 0}})
        response = await http_request(f"http://127.0.0.1:{server.service.metrics_port}/metrics")
        exported = set()
        for family in text_string_to_metric_families(response.body.decode()):
            suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                        "info": ("_info",)}.get(family.type, ("",))
            exported.update(family.name + suffix for suffix in suffixes)
        with open(os.path.join(ROOT, "etc", "grafana-dashboard.json"), encoding="utf-8") as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        self.assertGreaterEqual(len(exprs), 8)
        names = set(re.findall(r"\b(ilchat_[a-z_]+)\b", " ".join(exprs)))
        self.assertGreaterEqual(len(names), 8)
        self.assertEqual(names - exported, set())

    def test_prometheus_example_scrapes_the_default_port(self) -> None:
        """The example scrape config points at the default metrics listener."""
        with open(os.path.join(ROOT, "etc", "prometheus.yml"), encoding="utf-8") as f:
            text = f.read()
        self.assertIn("127.0.0.1:9464", text)
        self.assertIn("metrics_path: /metrics", text)


class OscMetricsTests(TestCase):
    """The On-Screen Chat's messages and recipients, counted from its ``message_posted`` events."""

    timeout = 60
    scrape = MetricsEndToEndTests.scrape

    async def test_osc_message_and_its_recipients_are_counted(self) -> None:
        """One message in a 1:1 where both accept messages: one message, two recipients."""
        database = make_database(self, "sqlite")
        await insert_rows_async(database, "usr_pref", [
            {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in (6, 7)])
        self.server = await start_server(
            self, server={"metrics": {"address": "127.0.0.1", "port": 0}}, database=database,
            client_components=[OnScreenChatComponent],
        )
        alice, bob = Tab(self.server), Tab(self.server)
        for tab, user in ((alice, {"id": 6, "name": "alice"}), (bob, {"id": 7, "name": "bob"})):
            self.addCleanup(lambda tab=tab: defer.ensureDeferred(tab.close()))
            await tab.connect()
            await tab.emit("login", user["id"], user["name"])
            await tab.wait_for("login")
        await alice.emit("conversation", [{"id": 6, "name": "alice"}, {"id": 7, "name": "bob"}])
        conversation = (await alice.wait_for("conversation-init"))["id"]
        before = await self.scrape()
        self.assertEqual(value(before, "ilchat_chat_messages_total", client="onscreen", kind="osc"), 0)
        await alice.emit("message", conversation, 6, "hi")
        await bob.wait_for("message")
        after = await self.scrape()
        self.assertEqual(value(after, "ilchat_chat_messages_total", client="onscreen", kind="osc"), 1)
        self.assertEqual(value(after, "ilchat_deliveries_total", client="onscreen", kind="osc"), 2)
