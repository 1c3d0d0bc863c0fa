"""
The ``etc/apache.conf`` snippet really works: Debian's Apache 2.4 runs it inside a virtual host in
front of a whole ilchat server, and the backend ``Heartbeat`` and a Socket.IO client (websocket
through the RewriteRule, polling through ProxyPass) go through it.

mod_proxy cannot choose its source address, so Apache and the test's client both connect from
127.0.0.1. The client therefore arrives as if behind one more proxy, with ``X-Forwarded-For:
192.0.2.7``; ilchat trusts 127.0.0.1 as a proxy and allows only 192.0.2.0/24: a request gets through
only if Apache passes that header on with its own peer appended and ilchat reads the chain
correctly.
"""

from __future__ import annotations

import os
from typing import List

from tests.standalone.proxy_support import ProxiedServerTestCase, snippet
from tests.support.http import http_request

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
CLIENT = {"X-Forwarded-For": "192.0.2.7"}


def _apache_conf(folder: str, listen_port: int, ilchat_port: int) -> str:
    """A whole apache2.conf: the modules the snippet names, one virtual host around it."""
    modules = "\n".join(
        f"LoadModule {name}_module {MODULES}/mod_{name}.so"
        for name in ("mpm_event", "authz_core", "proxy", "proxy_http", "proxy_wstunnel",
                     "rewrite", "headers")
    )
    user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
    return f"""
ServerRoot {folder}
DefaultRuntimeDir {folder}
PidFile {folder}/apache.pid
Mutex file:{folder} default
ErrorLog {folder}/error.log
LogLevel warn
ServerName 127.0.0.1
{modules}
{user}
Listen 127.0.0.1:{listen_port}
<VirtualHost 127.0.0.1:{listen_port}>
{snippet("apache.conf", ilchat_port)}
</VirtualHost>
"""


class ApacheSnippetTests(ProxiedServerTestCase):
    """ilchat behind Apache configured with etc/apache.conf."""

    network = {"allow": ["192.0.2.0/24"], "trusted_proxies": ["127.0.0.1/32"]}

    if not os.access(APACHE, os.X_OK):
        skip = "Debian's Apache is not installed (apt-get install apache2)"

    def proxy_command(self, folder: str, port: int, ilchat_port: int) -> List[str]:
        conf = os.path.join(folder, "apache2.conf")
        with open(conf, "w", encoding="utf-8") as f:
            f.write(_apache_conf(folder, port, ilchat_port))
        # -X: one process in the foreground, stopped by the SIGTERM of the clean-up.
        return [APACHE, "-f", conf, "-X"]

    async def test_heartbeat_through_apache(self) -> None:
        """The backend Heartbeat answers through the proxy, for the client behind it."""
        response = await http_request(self.url("/backend/Heartbeat/team"), headers=CLIENT)
        self.assertEqual(response.code, 200, response.body)
        self.assertEqual(response.json()["status"], 200)

    async def test_client_without_the_forwarded_chain_is_refused(self) -> None:
        """Without the header the client is 127.0.0.1 to ilchat, which is not allowed."""
        response = await http_request(self.url("/backend/Heartbeat/team"))
        self.assertEqual(response.code, 403, response.body)

    async def test_socketio_websocket_through_apache(self) -> None:
        """A Socket.IO websocket (the RewriteRule to ws://) logs in and chats through Apache."""
        await self.chat_through_proxy("websocket", "wsuser", seen_from="192.0.2.7", headers=CLIENT)

    async def test_socketio_polling_through_apache(self) -> None:
        """The polling transport (ProxyPass, long-poll GETs and POSTs) through Apache."""
        await self.chat_through_proxy("polling", "polluser", seen_from="192.0.2.7", headers=CLIENT)
