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
from typing import List

from twisted.internet import threads

from tests.standalone.proxy_support import ProxiedServerTestCase, snippet

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_conf(folder: str, http: str) -> str:
    """A whole nginx.conf for a test in ``folder``: ``http`` is the http { } block's content."""
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
{http}
}}
"""


def _nginx_conf(folder: str, listen_port: int, ilchat_port: int) -> str:
    """nginx.conf around the snippet of etc/, pointed at the test's ilchat port."""
    return nginx_conf(folder, f"""
    map $http_upgrade $ilchat_connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    # The proxy's own address, distinct from the client's (127.0.0.1).
    proxy_bind 127.0.0.3;
    server {{
        listen 127.0.0.1:{listen_port};
{snippet("nginx.conf", ilchat_port)}
    }}
""")


class NginxSnippetTests(ProxiedServerTestCase):
    """ilchat behind nginx configured with etc/nginx.conf."""

    network = {"allow": ["127.0.0.1/32"], "trusted_proxies": ["127.0.0.3/32"]}

    if not os.access(NGINX, os.X_OK):
        skip = "Debian's nginx is not installed (apt-get install nginx)"

    def proxy_command(self, folder: str, port: int, ilchat_port: int) -> List[str]:
        conf = os.path.join(folder, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(_nginx_conf(folder, port, ilchat_port))
        return [NGINX, "-c", conf, "-p", folder]

    async def test_heartbeat_through_nginx(self) -> None:
        """The backend Heartbeat answers through the proxy (the allow-list sees the client)."""
        await self.assert_heartbeat()

    async def test_direct_request_from_the_proxy_address_is_refused(self):
        """Without nginx's header, 127.0.0.3 itself is not allowed: the allow-list is real."""
        from tests.web.test_policy import _raw_request

        status, _, _ = await threads.deferToThread(
            _raw_request, self.server.port, "/backend/Heartbeat/team", "127.0.0.3"
        )
        self.assertEqual(status, 403)

    async def test_socketio_websocket_through_nginx(self) -> None:
        """A Socket.IO client on the websocket transport logs in and chats through nginx."""
        await self.chat_through_proxy("websocket", "wsuser", seen_from="127.0.0.1")
        self.assertNotIn("from 127.0.0.3", self.server.log_text())

    async def test_socketio_polling_through_nginx(self) -> None:
        """The same on the polling transport (long-poll GETs and POSTs through the proxy)."""
        await self.chat_through_proxy("polling", "polluser", seen_from="127.0.0.1")
        self.assertNotIn("from 127.0.0.3", self.server.log_text())
