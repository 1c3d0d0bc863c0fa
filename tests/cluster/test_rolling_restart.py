"""
A rolling restart behind ``etc/nginx-cluster.conf``: two ``twistd ilchat`` processes restarted
one after the other while two ILIAS pages (python-socketio clients that reconnect and log in
again on every connect, as ILIAS's room JavaScript does) stay in their room. After each restart
both pages are back in the room, messages cross, and neither page was ever told that the other
left.
"""

from __future__ import annotations

import os
from typing import Any, List

import socketio
from twisted.trial.unittest import TestCase

from tests.cluster.test_nginx import NGINX, start_nginx
from tests.cluster.test_rooms import NAME, ClusterRoomsMixin, _Tab
from tests.ilias.repository_support import wait_until


class _ReconnectingPage(_Tab):
    """An ILIAS room page: on every (re)connect ``login``, and ``enterRoom`` once logged in."""

    def __init__(self, base_url: str, user_id: int, login: str) -> None:
        super().__init__(type("Endpoint", (), {"base_url": base_url})(), "/" + NAME,  # type: ignore[arg-type]
                         transports=["polling", "websocket"])
        self.user_id, self.login = user_id, login
        self.disconnects = 0
        self.sio = socketio.Client(reconnection=True, reconnection_delay=0.3,
                                   reconnection_delay_max=1.0, randomization_factor=0)
        self.sio.on("*", self._record, namespace=self.namespace)
        self.sio.on("disconnect", self._on_disconnect, namespace=self.namespace)
        self.sio.on("connect", self._logged_out_again, namespace=self.namespace)
        self.sio.on("loggedIn", self._enter, namespace=self.namespace)

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnects += 1
        super()._on_disconnect(*args)

    def _logged_out_again(self) -> None:
        self.sio.emit("login", (self.login, self.user_id, False), namespace=self.namespace)

    def _enter(self, *args: Any) -> None:
        self._record("loggedIn", *args)
        self.sio.emit("enterRoom", 1, namespace=self.namespace)

    def node(self) -> str:
        return self.sio.eio.sid.split(".", 1)[0]


class RollingRestartTests(ClusterRoomsMixin, TestCase):
    timeout = 300

    if not os.access(NGINX, os.X_OK):
        skip = "Debian's nginx is not installed (apt-get install nginx)"

    async def page(self, port: int, user_id: int, login: str) -> _ReconnectingPage:
        page = _ReconnectingPage(f"http://127.0.0.1:{port}", user_id, login)
        self.browsers.append(page)
        await page.connect()
        await page.wait_for("private_room_entered")
        return page

    async def both_in_the_room(self, pages: List[_ReconnectingPage], what: str) -> None:
        for page in pages:
            await self.userlist_is(page, [1, 2], what)
        for sender, receiver in ((pages[0], pages[1]), (pages[1], pages[0])):
            content = f"{what}: {sender.login} to {receiver.login}"
            await sender.emit("message", {"content": content, "format": {}}, 1)
            await receiver.wait_for("message", content=content)

    async def test_restarting_the_processes_one_by_one_keeps_both_pages_in_the_room(self) -> None:
        cluster = await self.start_nodes(size=2, running=2)
        port = await start_nginx(self, cluster)
        await self.admit(1, 1, "alice")
        await self.admit(2, 2, "bob")
        alice = await self.page(port, 1, "alice")
        bob = await self.page(port, 2, "bob")
        pages = [alice, bob]
        # nginx balanced the two handshakes over the two processes.
        self.assertEqual(sorted(page.node() for page in pages), ["n1", "n2"])
        await self.both_in_the_room(pages, "before")

        moves = {page.login: 0 for page in pages}
        for index in (1, 2):
            route = f"n{index}"
            moving = [page for page in pages if page.node() == route]
            for page in moving:
                moves[page.login] += 1
            entered = {page: len(page.payloads("private_room_entered")) for page in moving}
            self.assertEqual(await cluster.stop(f"node-{index}"), 0)
            for page in moving:
                # Reconnected by itself through nginx to the live process, logged in and
                # entered again (ILIAS's page does the same; no reload, no shutdown).
                await wait_until(lambda: page.sio.connected and page.node() != route, 60,
                                 f"{page.login} reconnected elsewhere")
                await page.wait_for("private_room_entered", count=entered[page] + 1, timeout=60)
            await self.both_in_the_room(pages, f"node-{index} stopped")
            await cluster.start(f"node-{index}")
            await self.both_in_the_room(pages, f"node-{index} restarted")

        for page in pages:
            # Once per restart of the process it was on, and never told to stay away.
            self.assertEqual(page.disconnects, moves[page.login], page.login)
            self.assertEqual(page.payloads("notice", "disconnected"), [],
                             f"{page.login} was told that someone left")
            self.assertEqual(page.received("shutdown"), [])
