"""
``etc/nginx-cluster.conf`` really works: Debian's nginx in front of two ``twistd ilchat``
processes (routes ``n1``/``n2``) sharing Redis and MariaDB. A long-polling client and a websocket
client land on different processes and chat in one standalone room; every polling request of a
session reaches the process that holds it (a request routed elsewhere would be answered 400
"Session ID unknown" and the client would lose its session).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from twisted.trial.unittest import TestCase

from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.standalone.test_nginx import NGINX, nginx_conf
from tests.support.cluster import Cluster, start_cluster
from tests.support.server import free_port

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STANDALONE = {"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}


def cluster_conf(cluster: Cluster, listen_port: int) -> str:
    """etc/nginx-cluster.conf with the test's ports for the two processes and for nginx."""
    with open(os.path.join(REPO, "etc", "nginx-cluster.conf"), encoding="utf-8") as f:
        text = f.read()
    for index, node in enumerate(cluster.nodes, start=1):
        text = text.replace(f"127.0.0.1:888{index}", f"127.0.0.1:{node.port}")
    return text.replace("listen 8080;", f"listen 127.0.0.1:{listen_port};")


class _Endpoint:
    """What ``Browser`` needs of a server: where to connect (here: nginx)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


async def start_nginx(test: TestCase, cluster: Cluster) -> int:
    """Debian's nginx with etc/nginx-cluster.conf in front of ``cluster``; its port."""
    folder = os.path.abspath(test.mktemp())
    os.makedirs(folder)
    port = free_port()
    conf = os.path.join(folder, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(nginx_conf(folder, cluster_conf(cluster, port)))
    nginx = subprocess.Popen(
        [NGINX, "-c", conf, "-p", folder],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )

    async def stop() -> None:
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while nginx.poll() is None and time.monotonic() < deadline:
                await sleep(0.05)
            if nginx.poll() is None:
                nginx.kill()
        nginx.stderr.close()

    test.addCleanup(stop)

    def listens() -> bool:
        if nginx.poll() is not None:
            raise AssertionError(f"nginx exited: {nginx.stderr.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    await wait_until(listens, 15, "nginx listening")
    return port


class NginxClusterTests(TestCase):
    timeout = 120

    if not os.access(NGINX, os.X_OK):
        skip = "Debian's nginx is not installed (apt-get install nginx)"

    async def setUp(self) -> None:
        self.cluster = await start_cluster(
            self, size=2, client=STANDALONE,
            server={"network": {"allow": ["127.0.0.1/32"], "trusted_proxies": ["127.0.0.1/32"]}},
        )
        self.port = await start_nginx(self, self.cluster)

    async def join(self, name: str, transport: str) -> Browser:
        browser = Browser(_Endpoint(f"http://127.0.0.1:{self.port}"), "/team",  # type: ignore[arg-type]
                          transports=[transport])
        self.addCleanup(browser.close)
        await browser.connect()
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        await browser.wait_for("userlist")
        return browser

    def node_of(self, name: str) -> str:
        """The process whose log says that ``name`` logged in."""
        nodes = [node.name for node in self.cluster.nodes if f"{name} (" in node.log_text()]
        self.assertEqual(len(nodes), 1, nodes)
        return nodes[0]

    async def test_polling_and_websocket_clients_on_two_processes_chat(self) -> None:
        poller = await self.join("Polly", "polling")
        # nginx balances new connections round robin: the next one goes to the other process.
        socket_user = await self.join("Wes", "websocket")
        self.assertEqual({self.node_of("Polly"), self.node_of("Wes")}, {"node-1", "node-2"})

        await socket_user.emit("message", {"content": "hello over websocket", "format": {}}, 1)
        await poller.wait_for("message", content="hello over websocket", timeout=15)
        await poller.emit("message", {"content": "hello over polling", "format": {}}, 1)
        await socket_user.wait_for("message", content="hello over polling", timeout=15)

        # The poller kept one session throughout: every request reached its own process.
        self.assertTrue(poller.sio.connected)
        self.assertEqual(poller.received("disconnect"), [])
        sid = poller.sio.eio.sid
        self.assertTrue(sid.startswith("n1.") or sid.startswith("n2."), sid)
