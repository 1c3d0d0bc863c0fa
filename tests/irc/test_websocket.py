"""
IRC over WebSocket (IRCv3) on the web listener: a WebSocket client (websocket-client, as a web IRC
client would) registers, joins a standalone room and talks with a browser; one IRC line per
message both ways, in text or binary messages; the web's allow-list and origin checks hold.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Optional

import websocket
from twisted.internet import threads
from twisted.trial import unittest

from ilchat.config import ConfigError, load_server_config
from ilchat.irc.websocket import BINARY, TEXT
from tests.irc.test_service import BASE_SERVER
from tests.standalone.test_chat import lobby_browser, standalone_client
from tests.support.http import http_request
from tests.support.server import start_server


class WebIrcClient:
    """A blocking WebSocket IRC client, used from a thread."""

    def __init__(self, url: str, subprotocols: Optional[List[str]] = None, **options: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=10, subprotocols=subprotocols, **options)
        self.frames: List[Any] = []

    def send(self, line: str) -> None:
        self.ws.send(line)

    def wait_for(self, needle: str) -> str:
        """Read messages until one contains ``needle``; returns it (as text)."""
        while True:
            opcode, data = self.ws.recv_data()
            self.frames.append((opcode, data))
            text = data.decode("utf-8", "replace")
            if needle in text:
                return text

    def close(self) -> None:
        self.ws.close()


class IrcOverWebSocketTests(unittest.TestCase):
    timeout = 60

    async def start(self, network: Optional[dict] = None, irc: Optional[dict] = None) -> Any:
        self.server = await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open", **(irc or {})},
                    "network": network or {}},
            clients=[standalone_client()],
        )
        self.ws_url = self.server.base_url.replace("http://", "ws://") + "/irc"
        return self.server

    def client(self, subprotocols: Optional[List[str]] = None, **options: Any) -> "Any":
        def connect() -> WebIrcClient:
            client = WebIrcClient(self.ws_url, subprotocols, **options)
            self.addCleanup(client.close)
            return client

        return threads.deferToThread(connect)

    async def test_text_client_registers_and_talks_with_a_browser(self) -> None:
        server = await self.start()
        browser = await lobby_browser(self, server, "Anna")

        client = await self.client([TEXT])
        self.assertEqual(client.ws.subprotocol, TEXT)
        client.send("NICK webby")
        client.send("USER webby 0 * :Web User")
        welcome = await threads.deferToThread(client.wait_for, " 001 ")
        # One line per message, without CR LF, in a text message.
        self.assertNotIn("\r", welcome)
        self.assertNotIn("\n", welcome)
        self.assertIn(" 001 webby :Welcome", welcome)
        self.assertEqual(client.frames[-1][0], websocket.ABNF.OPCODE_TEXT)

        client.send("JOIN #chat-1")
        names = await threads.deferToThread(client.wait_for, " 353 ")
        self.assertIn("Anna", names)
        client.send("PRIVMSG #chat-1 :hello from the web IRC client")
        message = await browser.wait_for("message")
        self.assertEqual((message["content"], message["from"]["username"]),
                         ("hello from the web IRC client", "webby"))
        await browser.emit("message", {"content": "hi web IRC, ça va?", "format": {}}, 1)
        line = await threads.deferToThread(client.wait_for, "PRIVMSG #chat-1")
        self.assertTrue(line.startswith(":Anna!"), line)
        self.assertTrue(line.endswith(":hi web IRC, ça va?"), line)
        self.assertIn("webby (-", server.log_text())

    async def test_binary_subprotocol_gets_binary_messages(self) -> None:
        await self.start()
        client = await self.client([BINARY, TEXT])
        self.assertEqual(client.ws.subprotocol, BINARY)
        client.send("NICK binary")
        client.send("USER b 0 * :B")
        await threads.deferToThread(client.wait_for, " 001 ")
        self.assertEqual(client.frames[-1][0], websocket.ABNF.OPCODE_BINARY)

    async def test_no_subprotocol_is_text(self) -> None:
        await self.start()
        client = await self.client()
        self.assertIsNone(client.ws.subprotocol)
        client.send("NICK plain")
        client.send("USER p 0 * :P")
        await threads.deferToThread(client.wait_for, " 001 ")
        self.assertEqual(client.frames[-1][0], websocket.ABNF.OPCODE_TEXT)

    async def test_quit_closes_the_websocket(self) -> None:
        await self.start()
        client = await self.client([TEXT])
        client.send("NICK leaving")
        client.send("USER l 0 * :L")
        await threads.deferToThread(client.wait_for, " 001 ")
        client.send("QUIT :bye")
        error = await threads.deferToThread(client.wait_for, "ERROR")
        self.assertIn("bye", error)

        def closed() -> int:
            opcode, _ = client.ws.recv_data(control_frame=True)
            return opcode

        self.assertEqual(await threads.deferToThread(closed), websocket.ABNF.OPCODE_CLOSE)

    async def test_over_long_message_closes_the_websocket(self) -> None:
        """A message longer than an IRC line with tags can be is refused by closing (1009)."""
        await self.start()
        client = await self.client([TEXT])
        client.send("NICK big")
        client.send("USER b 0 * :B")
        await threads.deferToThread(client.wait_for, " 001 ")
        client.send("PRIVMSG big :" + "x" * 20_000)

        def close_code() -> int:
            while True:
                opcode, data = client.ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return int.from_bytes(data[:2], "big")

        self.assertEqual(await threads.deferToThread(close_code), 1009)

    async def test_foreign_origin_and_plain_http_are_refused(self) -> None:
        await self.start()
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            await self.client([TEXT], origin="https://evil.example")
        self.assertEqual(caught.exception.status_code, 403)
        response = await http_request(self.server.url("/irc"))
        self.assertEqual(response.code, 400)
        self.assertIn("WebSocket", response.json()["message"])

    async def test_address_outside_the_allow_list_is_refused(self) -> None:
        await self.start(network={"allow": ["10.0.0.0/8"]})
        with self.assertRaises(websocket.WebSocketBadStatusException) as caught:
            await self.client([TEXT])
        self.assertEqual(caught.exception.status_code, 403)

    async def test_websocket_false_serves_nothing(self) -> None:
        await self.start(irc={"websocket": False})
        response = await http_request(self.server.url("/irc"))
        self.assertEqual(response.code, 404)


class WebSocketConfigTests(unittest.TestCase):
    def load(self, value: Any) -> Any:
        path = os.path.abspath(self.mktemp() + "-server.cfg")
        with open(path, "w") as f:
            json.dump(dict(BASE_SERVER, irc={"websocket": value}), f)
        return load_server_config(path).irc

    def test_default_path_and_choices(self) -> None:
        path = os.path.abspath(self.mktemp() + "-server.cfg")
        with open(path, "w") as f:
            json.dump(dict(BASE_SERVER, irc={}), f)
        self.assertEqual(load_server_config(path).irc.websocket, "/irc")
        self.assertEqual(self.load("/webirc").websocket, "/webirc")
        self.assertIsNone(self.load(False).websocket)
        self.assertIsNone(self.load(None).websocket)

    def test_bad_path_names_the_key(self) -> None:
        for bad in ("irc", "/a/b", "/", True, 5):
            with self.assertRaises(ConfigError) as caught:
                self.load(bad)
            self.assertIn("irc.websocket", str(caught.exception))
            self.assertIn('expected a path of one segment such as "/irc", or false', str(caught.exception))
