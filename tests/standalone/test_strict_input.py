"""
The standalone chat against poison input, over real websockets: a lone surrogate in a message
closes that socket and never reaches the room's history, and rows an older server stored with one
(or with ``Infinity``) are skipped, so newcomers still enter the room and get its history.
"""

from __future__ import annotations

import time
from typing import Any, List, Optional

from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from tests.ilias.repository_support import Browser, wait_until
from tests.standalone.test_chat import GRACE, standalone_client
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.server import RunningServer, start_server


class StandaloneStrictInputTests(unittest.TestCase):
    async def start(self, folder: Optional[str] = None) -> RunningServer:
        self.server = await start_server(
            self,
            clients=[standalone_client()],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=GRACE)],
            folder=folder,
        )
        if not hasattr(self, "browsers"):
            self.browsers: List[Browser] = []
            self.addCleanup(self._close_browsers)
        return self.server

    async def _close_browsers(self) -> None:
        for browser in self.browsers:
            await browser.close()

    async def login(self, name: str) -> Browser:
        browser = Browser(self.server, "/chat")
        self.browsers.append(browser)
        await browser.connect()
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        return browser

    async def enter(self, browser: Browser) -> Any:
        """enterRoom(1); returns the history the browser got first."""
        await browser.emit("enterRoom", 1)
        await browser.wait_for("notice", "welcome_to_chat")
        return browser.payloads("history")[-1]

    async def test_surrogate_message_closes_that_socket_and_newcomers_still_enter(self):
        """The poison never reaches the history: the next newcomer enters and sees the rest."""
        await self.start()
        alice = await self.login("alice")
        await self.enter(alice)
        await alice.emit("message", {"content": "first", "format": {}}, 1)
        await alice.wait_for("message")
        mallory = await self.login("mallory")
        await self.enter(mallory)
        await mallory.emit("message", {"content": "\udfff poison", "format": {}}, 1)
        await wait_until(mallory.disconnected.is_set, what="mallory's socket closed")
        carol = await self.login("carol")
        history = await self.enter(carol)
        self.assertEqual([m["content"] for m in history["messages"]], ["first"])
        userlist = await carol.wait_for("userlist")
        self.assertIn("carol", [u["username"] for u in userlist["users"].values()])
        self.assertEqual([m["content"] for m in alice.payloads("message")], ["first"])

    async def test_rows_stored_with_a_surrogate_or_infinity_are_skipped(self):
        """Rows an older server wrote (not strict JSON) do not keep newcomers out of the room."""
        server = await self.start()
        folder, database = server.folder, server.client_configs[0].database
        await server.stop()
        now = int(time.time())
        good = '{"type":"message","content":"good","roomId":1,"timestamp":%d,"from":{"id":1,"username":"a"},"format":{}}' % now
        await insert_rows_async(database, "chatroom_history", [
            {"room_id": 1, "timestamp": now, "message": good},
            {"room_id": 1, "timestamp": now, "message": good.replace('"good"', '"\\ud800"')},
            {"room_id": 1, "timestamp": now, "message": good.replace('"format":{}', '"format":{"size":Infinity}')},
        ])
        rows = await fetch_rows_async(database, "SELECT message FROM chatroom_history")
        self.assertEqual(len(rows), 3)
        await self.start(folder=folder)
        bob = await self.login("bob")
        history = await self.enter(bob)
        self.assertEqual([m["content"] for m in history["messages"]], ["good"])
