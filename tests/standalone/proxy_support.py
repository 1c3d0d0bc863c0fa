"""
A whole ilchat server behind a real reverse proxy (Debian's nginx or Apache) configured with the
snippet from ``etc/``: the set-up and the checks the proxy tests share.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Dict, List, Optional

import requests
from twisted.internet import threads
from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.http import http_request
from tests.support.server import start_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def snippet(name: str, ilchat_port: int) -> str:
    """``etc/<name>`` pointed at the test's ilchat port instead of 8888."""
    with open(os.path.join(REPO, "etc", name), encoding="utf-8") as f:
        return f.read().replace("127.0.0.1:8888", f"127.0.0.1:{ilchat_port}")


class ProxiedServerTestCase(unittest.TestCase):
    """
    Starts a standalone ilchat server (client ``team``, room 1) with ``network``, then the proxy
    that ``proxy_command`` describes, listening on ``self.port``.
    """

    timeout = 60
    network: Dict[str, List[str]] = {}

    def proxy_command(self, folder: str, port: int, ilchat_port: int) -> List[str]:
        raise NotImplementedError

    async def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.server = await start_server(
            self,
            server={"network": self.network},
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
            folder=os.path.join(self.folder, "ilchat"),
        )
        self.port = free_port()
        self.proxy = subprocess.Popen(
            self.proxy_command(self.folder, self.port, self.server.port),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.addCleanup(self._stop_proxy)
        await wait_until(self._proxy_listens, 15, "the proxy listening")

    def _proxy_listens(self) -> bool:
        if self.proxy.poll() is not None:
            raise AssertionError(f"the proxy exited: {self.proxy.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    async def _stop_proxy(self) -> None:
        if self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.proxy.poll() is None and time.monotonic() < deadline:
                await sleep(0.05)
            if self.proxy.poll() is None:
                self.proxy.kill()
        self.proxy.stderr.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def assert_heartbeat(self) -> None:
        response = await http_request(self.url("/backend/Heartbeat/team"))
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual(response.json()["status"], 200)

    async def chat_through_proxy(
        self, transport: str, name: str, seen_from: str, headers: Optional[Dict[str, str]] = None
    ) -> None:
        """Log in and chat on one transport; ilchat must see the client as ``seen_from``."""
        browser = Browser(self.server, "/team")
        self.addCleanup(browser.close)
        if headers:
            # python-engineio sends ``headers`` with the handshake only; a session of our own
            # carries them on every long-polling request too.
            browser.sio.eio.http = requests.Session()
            browser.sio.eio.http.headers.update(headers)
        await threads.deferToThread(
            browser.sio.connect, self.url(""), namespaces=["/team"], transports=[transport],
            headers=headers or {}, wait_timeout=10,
        )
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        content = f"through the proxy ({transport})"
        await browser.emit("message", {"content": content, "format": {}}, 1)
        message = await browser.wait_for("message")
        self.assertEqual(message["content"], content)
        log = self.server.log_text()
        self.assertIn(f"{name} (", log)
        self.assertIn(f"logged in to /team from {seen_from}", log)
