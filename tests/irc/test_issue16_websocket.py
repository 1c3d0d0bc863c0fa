"""
Issue 16 audit, IRC over WebSocket: what tests.irc.test_websocket asserts less of. The web's
per-address limit counts web IRC clients with the browsers' sessions; a trusted proxy's
``X-Forwarded-For`` is the address the allow-list checks and IRC shows; an origin in
``allowed_origins`` may connect; both subprotocols carry UTF-8 both ways; ``wss://`` on an
HTTPS web listener uses its certificate. websocket-client (as Kiwi IRC or gamja would connect)
and python-socketio browsers against a whole server.
"""

from __future__ import annotations

import os
import ssl
from typing import Any, Dict, List, Optional

import websocket
from twisted.internet import threads
from twisted.trial import unittest

from ilchat.irc.websocket import BINARY, TEXT
from tests.ilias.repository_support import Browser, sleep
from tests.irc.test_websocket import WebIrcClient
from tests.standalone.test_chat import lobby_browser, standalone_client
from tests.support.server import start_server
from tests.test_tls import _PKI, make_pki


def first_of(client: WebIrcClient, *needles: str) -> str:
    """The next message that contains one of C{needles} (blocking: in a thread)."""
    while True:
        opcode, data = client.ws.recv_data()
        client.frames.append((opcode, data))
        text = data.decode("utf-8", "replace")
        if any(needle in text for needle in needles):
            return text


class WebSocketAuditTests(unittest.TestCase):
    timeout = 60

    async def start(self, network: Optional[Dict[str, Any]] = None, **server: Any) -> Any:
        self.server = await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open"},
                    "network": network or {}, **server},
            clients=[standalone_client()],
        )
        scheme = "wss://" if self.server.base_url.startswith("https://") else "ws://"
        self.ws_url = scheme + self.server.base_url.split("://", 1)[1] + "/irc"
        return self.server

    def client(self, subprotocols: Optional[List[str]] = None, **options: Any) -> Any:
        def connect() -> WebIrcClient:
            client = WebIrcClient(self.ws_url, subprotocols, **options)
            self.addCleanup(client.close)
            return client

        return threads.deferToThread(connect)

    async def registered(self, nick: str, subprotocols: Optional[List[str]] = None, **options: Any) -> WebIrcClient:
        client = await self.client(subprotocols or [TEXT], **options)
        client.send(f"NICK {nick}")
        client.send(f"USER {nick} 0 * :Web {nick}")
        await threads.deferToThread(client.wait_for, " 001 ")
        return client

    async def browser_in_lobby(self, name: str) -> Browser:
        return await lobby_browser(self, self.server, name)

    async def test_per_address_limit_counts_web_irc_clients_with_browser_sessions(self) -> None:
        """
        max_connections_per_ip 2: a browser and one web IRC client fill it; the next web IRC
        client gets IRC's ERROR and is closed; once one goes, a new one registers.
        """
        await self.start(network={"max_connections_per_ip": 2})
        await self.browser_in_lobby("Anna")
        first = await self.registered("first")
        refused = await self.client([TEXT])
        error = await threads.deferToThread(refused.wait_for, "ERROR")
        self.assertIn("Too many connections from your address", error)

        def close_opcode() -> int:
            while True:
                opcode, _ = refused.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return opcode

        self.assertEqual(await threads.deferToThread(close_opcode), websocket.ABNF.OPCODE_CLOSE)
        first.send("QUIT :making room")
        await threads.deferToThread(first.wait_for, "ERROR")
        # The count drops when the server has seen the WebSocket close: try until it has.
        for _ in range(20):
            again = await self.client([TEXT])
            again.send("NICK again")
            again.send("USER again 0 * :Again")
            line = await threads.deferToThread(first_of, again, " 001 again ", "ERROR")
            if "ERROR" not in line:
                break
            await sleep(0.1)
        self.assertIn(" 001 again ", line)

    async def test_one_web_irc_client_counts_once_at_a_limit_of_one(self) -> None:
        """
        network.max_connections_per_ip and irc.limits.max_connections_per_ip both 1: one web
        IRC client registers (its WebSocket is one connection of the address, not a web session
        and an IRC connection), the address holds one; a second gets IRC's ERROR.
        """
        await self.start(network={"max_connections_per_ip": 1},
                         irc={"address": "127.0.0.1", "port": 0, "auth": "open",
                              "limits": {"max_connections_per_ip": 1}})
        await self.registered("only")
        self.assertEqual(self.server.context.policy.connections.count("127.0.0.1"), 1)
        second = await self.client([TEXT])
        second.send("NICK second")
        second.send("USER second 0 * :Second")
        self.assertIn("Too many connections from your address",
                      await threads.deferToThread(first_of, second, " 001 ", "ERROR"))

    async def test_trusted_proxy_address_is_the_one_checked_and_shown(self) -> None:
        """
        Behind a trusted proxy, ``X-Forwarded-For`` is the client: an address in the allow-list
        connects and WHOIS shows it as the host; one outside it gets 403.
        """
        await self.start(network={"trusted_proxies": ["127.0.0.1"], "allow": ["203.0.113.0/24"]})
        inside = await self.registered("proxied", header=["X-Forwarded-For: 203.0.113.7"])
        inside.send("WHOIS proxied")
        whois = await threads.deferToThread(inside.wait_for, " 311 ")
        self.assertIn(" 311 proxied proxied ", whois)
        self.assertIn(" 203.0.113.7 * :Web proxied", whois)
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            await self.client([TEXT], header=["X-Forwarded-For: 198.51.100.1"])
        self.assertEqual(caught.exception.status_code, 403)

    async def test_an_allowed_origin_connects_and_another_does_not(self) -> None:
        await self.start(network={"allowed_origins": ["https://kiwi.example.org"]})
        await self.registered("kiwi", origin="https://kiwi.example.org")
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            await self.client([TEXT], origin="https://gamja.example.net")
        self.assertEqual(caught.exception.status_code, 403)

    async def test_utf8_both_ways_on_both_subprotocols(self) -> None:
        """Text and binary web IRC clients and a browser in one room: every message arrives as written."""
        await self.start()
        browser = await self.browser_in_lobby("Zoë")
        clients = {TEXT: await self.registered("Text", [TEXT]), BINARY: await self.registered("Binär", [BINARY])}
        for client in clients.values():
            client.send("JOIN #chat-1")
            await threads.deferToThread(client.wait_for, " 366 ")
        for subprotocol, client in clients.items():
            nick = "Text" if subprotocol == TEXT else "Binär"
            words = f"Grüße von {nick} 🎉"
            client.send(f"PRIVMSG #chat-1 :{words}")
            message = await browser.wait_for("message", words)
            self.assertEqual(message["from"]["username"], nick)
        await browser.emit("message", {"content": "Σοφία sagt: ça va? 🙂", "format": {}}, 1)
        for subprotocol, client in clients.items():
            line = await threads.deferToThread(client.wait_for, "Σοφία sagt")
            self.assertTrue(line.startswith(":Zoë!") and line.endswith(" PRIVMSG #chat-1 :Σοφία sagt: ça va? 🙂"),
                            line)
            opcode, data = client.frames[-1]
            expected = websocket.ABNF.OPCODE_BINARY if subprotocol == BINARY else websocket.ABNF.OPCODE_TEXT
            self.assertEqual(opcode, expected)
            self.assertEqual(data.decode("utf-8"), line)


class SecureWebSocketTests(unittest.TestCase):
    timeout = 60

    async def test_wss_on_the_https_listener_with_its_certificate(self) -> None:
        """The HTTPS web listener serves ``wss://.../irc`` with its certificate, which the client verifies."""
        if not _PKI:
            folder = os.path.abspath("tls-pki")
            os.makedirs(folder, exist_ok=True)
            _PKI.update(await threads.deferToThread(make_pki, folder))
        server = await start_server(
            self,
            server={"protocol": "https", "cert": _PKI["chain"], "key": _PKI["key"], "dhparam": _PKI["dhparam"],
                    "irc": {"address": "127.0.0.1", "port": 0, "auth": "open"}},
            clients=[standalone_client()],
        )
        url = "wss://" + server.base_url.split("://", 1)[1] + "/irc"

        def session() -> str:
            client = WebIrcClient(url, [TEXT], sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": _PKI["root"],
                                                       "check_hostname": False})
            try:
                client.send("NICK secure")
                client.send("USER s 0 * :S")
                return client.wait_for(" 001 ")
            finally:
                client.close()

        welcome = await threads.deferToThread(session)
        self.assertIn(" 001 secure :Welcome", welcome)
