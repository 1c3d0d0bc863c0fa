"""
The ``etc/nginx.conf`` snippet really works: Debian's nginx runs it in front of a whole ilchat
server, and a Socket.IO client (websocket and polling) and the backend ``Heartbeat`` go through it
with the client's address seen correctly.

nginx connects to ilchat from 127.0.0.3 (``proxy_bind``) while the client connects to nginx from
127.0.0.1, and ilchat allows only 127.0.0.1 and trusts only 127.0.0.3 as a proxy: a request gets
through only if the ``X-Forwarded-For`` nginx writes is believed and read correctly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from twisted.internet import threads
from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.http import http_request
from tests.support.server import start_server

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SNIPPET = os.path.join(REPO, "etc", "nginx.conf")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _nginx_conf(folder: str, listen_port: int, ilchat_port: int) -> str:
    """A whole nginx.conf around the snippet of etc/, pointed at the test's ilchat port."""
    with open(SNIPPET, encoding="utf-8") as f:
        snippet = f.read().replace("127.0.0.1:8888", f"127.0.0.1:{ilchat_port}")
    temp = {name: os.path.join(folder, name) for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        os.makedirs(path, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
{user}
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    map $http_upgrade $ilchat_connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    # The proxy's own address, distinct from the client's (127.0.0.1).
    proxy_bind 127.0.0.3;
    server {{
        listen 127.0.0.1:{listen_port};
{snippet}
    }}
}}
"""


class NginxSnippetTests(unittest.TestCase):
    """ilchat behind nginx configured with etc/nginx.conf."""

    timeout = 60

    if not os.access(NGINX, os.X_OK):
        skip = "Debian's nginx is not installed (apt-get install nginx)"

    async def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.server = await start_server(
            self,
            server={"network": {"allow": ["127.0.0.1/32"], "trusted_proxies": ["127.0.0.3/32"]}},
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
            folder=os.path.join(self.folder, "ilchat"),
        )
        self.port = _free_port()
        conf = os.path.join(self.folder, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(_nginx_conf(self.folder, self.port, self.server.port))
        self.nginx = subprocess.Popen(
            [NGINX, "-c", conf, "-p", self.folder], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.addCleanup(self._stop_nginx)
        await wait_until(self._nginx_listens, 15, "nginx listening")

    def _nginx_listens(self) -> bool:
        if self.nginx.poll() is not None:
            raise AssertionError(f"nginx exited: {self.nginx.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    async def _stop_nginx(self) -> None:
        if self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.nginx.poll() is None and time.monotonic() < deadline:
                await sleep(0.05)
            if self.nginx.poll() is None:
                self.nginx.kill()
        self.nginx.stderr.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def test_heartbeat_through_nginx(self) -> None:
        """The backend Heartbeat answers through the proxy (the allow-list sees the client)."""
        response = await http_request(self.url("/backend/Heartbeat/team"))
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual(response.json()["status"], 200)

    async def test_direct_request_from_the_proxy_address_is_refused(self):
        """Without nginx's header, 127.0.0.3 itself is not allowed: the allow-list is real."""
        from tests.web.test_policy import _raw_request

        status, _, _ = await threads.deferToThread(
            _raw_request, self.server.port, "/backend/Heartbeat/team", "127.0.0.3"
        )
        self.assertEqual(status, 403)

    async def _chat_through_nginx(self, transport: str, name: str) -> None:
        browser = Browser(self.server, "/team")
        self.addCleanup(browser.close)
        await threads.deferToThread(
            browser.sio.connect, self.url(""), namespaces=["/team"], transports=[transport],
            wait_timeout=10,
        )
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        await browser.emit("message", {"content": f"via nginx ({transport})", "format": {}}, 1)
        message = await browser.wait_for("message")
        self.assertEqual(message["content"], f"via nginx ({transport})")
        log = self.server.log_text()
        self.assertIn(f"{name} (", log)
        self.assertIn(f"logged in to /team from 127.0.0.1", log)
        self.assertNotIn("from 127.0.0.3", log)

    async def test_socketio_websocket_through_nginx(self) -> None:
        """A Socket.IO client on the websocket transport logs in and chats through nginx."""
        await self._chat_through_nginx("websocket", "wsuser")

    async def test_socketio_polling_through_nginx(self) -> None:
        """The same on the polling transport (long-poll GETs and POSTs through the proxy)."""
        await self._chat_through_nginx("polling", "polluser")
