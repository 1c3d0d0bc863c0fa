"""
The IRC component inside the whole service, and the ``irc`` section of ``server.cfg``.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from typing import Any, Dict

from twisted.internet import threads
from twisted.trial import unittest

from ilchat.config import ConfigError, IrcLoginLimits, load_server_config
from ilchat.irc.service import IrcComponent
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin
from tests.support.server import start_server
from tests.test_tls import _PKI, make_pki

BASE_SERVER: Dict[str, Any] = {"protocol": "http", "port": 8080, "address": "127.0.0.1"}


class IrcConfigTests(unittest.TestCase):
    def load(self, irc: Any) -> Any:
        path = os.path.join(self.mktemp() + "-server.cfg")
        with open(path, "w") as f:
            json.dump(dict(BASE_SERVER, irc=irc), f)
        return load_server_config(path).irc

    def assertConfigError(self, irc: Any, text: str) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.load(irc)
        self.assertIn(text, str(caught.exception))
        self.assertIn("server.cfg", str(caught.exception))

    def test_absent_section_means_off(self) -> None:
        """Without an irc section there is no IRC config (and no listener)."""
        path = self.mktemp() + "-server.cfg"
        with open(path, "w") as f:
            json.dump(BASE_SERVER, f)
        self.assertIsNone(load_server_config(path).irc)

    def test_defaults(self) -> None:
        """An empty section is IRC on 6667 with ILIAS logins and sensible limits."""
        config = self.load({})
        self.assertEqual((config.port, config.tls_port, config.auth), (6667, None, "ilias"))
        self.assertFalse(config.local_channels)
        self.assertEqual((config.flood_rate, config.flood_burst, config.max_line), (2.0, 10, 512))

    def test_all_keys(self) -> None:
        """Every documented key is read into its typed field."""
        config = self.load({
            "address": "127.0.0.1", "port": 6668, "server_name": "irc.example.org",
            "network_name": "Example", "motd": "line one\nline two", "auth": "open",
            "rooms": {"onscreen": [1, 2], "other": "*"}, "local_channels": False,
            "limits": {"flood_rate": 1.5, "flood_burst": 5, "recvq": 4096, "max_line": 1024,
                       "sendq": 8192, "max_connections_per_ip": 3, "ping_interval": 30,
                       "ping_timeout": 20, "registration_timeout": 10, "nick_length": 16},
            "webirc": [{"cidr": ["10.0.0.0/8", "::1"], "password": "pw"}],
        })
        self.assertEqual(config.motd, ("line one", "line two"))
        self.assertEqual(config.rooms, {"onscreen": (1, 2), "other": None})
        self.assertEqual((config.flood_rate, config.max_connections_per_ip, config.nick_length), (1.5, 3, 16))
        self.assertEqual(len(config.webirc[0].networks), 2)
        self.assertFalse(config.local_channels)

    def test_login_throttle_keys(self) -> None:
        """The login_* limits have safe defaults and are read into IrcLoginLimits."""
        self.assertEqual(self.load({}).login_limits, IrcLoginLimits())
        limits = self.load({"limits": {
            "login_free_failures": 1, "login_delay": 0.5, "login_max_delay": 4,
            "login_failures_per_account": 5, "login_failures_per_ip": 20,
            "login_failures_per_account_total": 50, "login_window": 120, "login_lockout": 60,
            "login_max_entries": 500}}).login_limits
        self.assertEqual(limits, IrcLoginLimits(
            free_failures=1, delay=0.5, max_delay=4.0, failures_per_account=5, failures_per_ip=20,
            failures_per_account_total=50, window=120.0, lockout=60.0, max_entries=500))
        self.assertConfigError({"limits": {"login_failures_per_account": 0}},
                               "irc.limits.login_failures_per_account")
        self.assertConfigError({"limits": {"login_lockout": "5m"}}, "irc.limits.login_lockout")
        self.assertConfigError({"limits": {"login_delay": -1}}, "irc.limits.login_delay")
        self.assertConfigError({"limits": {"login_max_entries": 10}}, "irc.limits.login_max_entries")
        self.assertConfigError({"limits": {"login_free_failures": 0}}, "irc.limits.login_free_failures")

    def test_errors_name_the_key(self) -> None:
        """Bad values are one-line errors naming irc.<key>."""
        self.assertConfigError({"auth": "ldap"}, "irc.auth")
        self.assertConfigError({"port": "x"}, "irc.port")
        self.assertConfigError({"limits": {"flood_burst": 0}}, "irc.limits.flood_burst")
        self.assertConfigError({"rooms": {"onscreen": ["1"]}}, "irc.rooms.onscreen")
        self.assertConfigError({"webirc": [{"cidr": "999.1.1.1", "password": "x"}]}, "irc.webirc[0].cidr")
        self.assertConfigError({"webirc": [{"cidr": "10.0.0.1"}]}, "irc.webirc[0].password")
        self.assertConfigError({"tls_port": 6697}, "irc.cert")
        self.assertConfigError({"plain": False}, "irc.plain")


class IrcServiceTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "sqlite"

    async def test_default_component_list_serves_irc_only_when_configured(self) -> None:
        """The service's default server components include IRC; without a section it is off."""
        server = await start_server(self)
        components = [c for c in server.service.components if isinstance(c, IrcComponent)]
        self.assertEqual(len(components), 1)
        self.assertEqual(components[0].ports, [])

    async def test_nick_change_renames_the_member_for_browsers(self) -> None:
        """In open mode a NICK change is the name on the IRC user's next messages in ILIAS."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("before")
        irc.send("NICK after")
        await irc.wait_for("NICK")
        irc.send(f"PRIVMSG {CHANNEL} :renamed")
        message = await bob.wait_for("message")
        self.assertEqual(message["from"]["username"], "after")


class IrcAllowListTests(unittest.TestCase):
    async def test_address_outside_allow_list_is_refused(self) -> None:
        """The network section's allow-list applies to the IRC listener too."""
        captured = []

        def make_irc(context: Any) -> IrcComponent:
            captured.append(IrcComponent(context))
            return captured[0]

        await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open"},
                    "network": {"allow": ["10.0.0.0/8"]}},
            server_components=[make_irc],
        )
        port = captured[0].ports[0].getHost().port
        client = await _connect(port)
        error = await client.wait_for("ERROR")
        self.assertIn("not allowed", error.params[0])
        await client.closed


async def _connect(port: int) -> Any:
    from twisted.internet import endpoints, reactor

    from tests.irc.support import RawClient

    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    return await endpoints.connectProtocol(endpoint, RawClient())


async def start_irc_tls(test_case: Any, pki: Dict[str, str]) -> int:
    """A server with only an IRC-over-TLS listener (open auth, the test PKI); its port."""
    captured = []

    def make_irc(context: Any) -> IrcComponent:
        captured.append(IrcComponent(context))
        return captured[0]

    await start_server(
        test_case,
        server={"irc": {"address": "127.0.0.1", "plain": False, "tls_port": 0, "auth": "open",
                        "cert": pki["chain"], "key": pki["key"], "dhparam": pki["dhparam"]}},
        server_components=[make_irc],
    )
    return captured[0].ports[0].getHost().port


def _tls_exchange(port: int, cafile: str, send: bytes = b"", until: bytes = b"") -> tuple:
    """A verifying TLS client: the server's certificate (DER) and what it said until C{until} (b"": nothing read)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(send)
            data = b""
            while until not in data:
                chunk = tls.recv(4096)
                if not chunk:
                    break
                data += chunk
            return tls.getpeercert(binary_form=True), data


class IrcTlsTests(unittest.TestCase):
    async def setUp(self) -> None:
        if not _PKI:
            folder = os.path.abspath("tls-pki")
            os.makedirs(folder, exist_ok=True)
            _PKI.update(await threads.deferToThread(make_pki, folder))
        self.pki = _PKI

    async def test_irc_over_tls(self) -> None:
        """tls_port serves IRC over TLS with the configured certificate chain."""
        port = await start_irc_tls(self, self.pki)
        cafile = self.pki["root"]

        from tests.irc.support import capture_log, log_lines

        events = capture_log(self)
        _, data = await threads.deferToThread(
            _tls_exchange, port, cafile, b"NICK secure\r\nUSER s 0 * :S\r\n", b" 001 ")
        self.assertIn(b" 001 secure :Welcome", data)
        logins = log_lines(events, "logged in to IRC")
        self.assertEqual(len(logins), 1)
        self.assertRegex(logins[0], r"^secure \(-\d+\) logged in to IRC from 127\.0\.0\.1 over TLS$")

    async def test_irc_tls_uses_the_web_listeners_certificate_files(self) -> None:
        """
        Without its own cert/key, the IRC TLS listener serves the web listener's files: both
        ports present the same certificate, which the client verifies, and IRC registers.
        """
        captured = []

        def make_irc(context: Any) -> IrcComponent:
            captured.append(IrcComponent(context))
            return captured[0]

        server = await start_server(
            self,
            server={"protocol": "https", "cert": self.pki["chain"], "key": self.pki["key"],
                    "dhparam": self.pki["dhparam"],
                    "irc": {"address": "127.0.0.1", "plain": False, "tls_port": 0, "auth": "open"}},
            server_components=[make_irc],
        )
        irc_port = captured[0].ports[0].getHost().port
        web_cert, _ = await threads.deferToThread(
            _tls_exchange, server.port, self.pki["root"],
            b"GET /backend/Heartbeat/onscreen HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        irc_cert, data = await threads.deferToThread(
            _tls_exchange, irc_port, self.pki["root"], b"NICK same\r\nUSER s 0 * :S\r\n", b" 001 ")
        self.assertEqual(irc_cert, web_cert)
        self.assertIn(b" 001 same :Welcome", data)


class StandaloneIrcTests(unittest.TestCase):
    """The standalone internal chat (no ILIAS): web users with a name and IRC users together."""

    async def test_web_and_irc_users_talk_in_a_standalone_room(self) -> None:
        """Channel #chat-1 is the "Lobby" room; messages go both ways, names on both sides."""
        from ilchat.standalone import StandaloneChat
        from tests.standalone.test_chat import lobby_browser, standalone_client

        captured = []

        def make_irc(context: Any) -> IrcComponent:
            captured.append(IrcComponent(context))
            return captured[0]

        server = await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open"}},
            clients=[standalone_client()],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=0.6)],
            server_components=[make_irc],
        )
        browser = await lobby_browser(self, server, "Zoë M.")

        irc = await _connect(captured[0].ports[0].getHost().port)
        self.addCleanup(irc.transport.loseConnection)
        await irc.register("ircuser")
        irc.send("JOIN #chat-1")
        topic = await irc.wait_for("332")
        self.assertEqual(topic.params[2], "Lobby")
        names = await irc.wait_for("353")
        self.assertEqual(set(names.params[3].split()), {"Zoë_M_", "ircuser"})
        irc.send("PRIVMSG #chat-1 :hello web")
        message = await browser.wait_for("message")
        self.assertEqual((message["content"], message["from"]["username"]), ("hello web", "ircuser"))
        self.assertLess(message["from"]["id"], 0)
        await browser.emit("message", {"content": "hello irc", "format": {}}, 1)
        privmsg = await irc.wait_for("PRIVMSG")
        self.assertEqual((privmsg.prefix.split("!")[0], privmsg.params[1]), ("Zoë_M_", "hello irc"))

