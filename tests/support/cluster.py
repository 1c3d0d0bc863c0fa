"""
Several real ``twistd ilchat`` processes sharing one MariaDB database and one Redis prefix.

Usage in a trial ``TestCase``::

    from tests.support.cluster import start_cluster

    async def test_message_crosses(self):
        cluster = await start_cluster(self, size=2)          # "node-1", "node-2"
        first, second = cluster.nodes
        ...python-socketio clients on first.url and second.url...
        await cluster.kill("node-1")                         # SIGKILL
        await cluster.restart("node-1")                      # same port, same configs

Each node has its own folder (server.cfg, client0.cfg, its log files and journal), its own
port, its ``redis.instance`` (``node-<n>``) and ``redis.route`` (``n<n>``); every node gets the same client.cfg (same name, same auth, the
same MariaDB database: ``cluster.database``, dropped after the test) and the same ``redis``
prefix on the shared Redis (its keys deleted after the test). Pass ``redis_port`` for a
``tests.support.private_redis.PrivateRedis`` instead. The processes write their output to
``<folder>/stdout.txt`` (never a pipe that nobody reads), and are killed by a cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.db import make_mariadb_database
from tests.support.http import http_request
from tests.support.private_redis import SHARED_REDIS_PORT, shared_redis_prefix
from tests.support.server import DEFAULT_CLIENT, free_port, write_configs

__all__ = ["Cluster", "ClusterNode", "start_cluster"]


def _twistd() -> str:
    # Imported late: tests.test_plugin imports the support modules.
    from tests.test_plugin import TWISTD

    return TWISTD


def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


class ClusterNode:
    """One ``twistd ilchat`` of a cluster: its folder, port and process."""

    def __init__(self, name: str, folder: str, port: int, args: List[str]) -> None:
        self.name = name
        self.folder = folder
        self.port = port
        self.args = args
        self.process: Optional[subprocess.Popen] = None
        self._output: Optional[Any] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What the process wrote to stdout/stderr so far (twistd's own log included)."""
        return _read(os.path.join(self.folder, "stdout.txt"))

    def log_text(self) -> str:
        """The ``log`` file (chat.log)."""
        return _read(os.path.join(self.folder, "chat.log"))

    def error_log_text(self) -> str:
        return _read(os.path.join(self.folder, "chatError.log"))

    def spawn(self) -> None:
        self._output = open(os.path.join(self.folder, "stdout.txt"), "ab")
        self.process = subprocess.Popen(
            [_twistd(), "-n", "--pidfile=", "ilchat", *self.args],
            cwd=self.folder,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )

    def reap(self) -> None:
        """Kill the process if it still runs (a test's cleanup) and close its output file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._output is not None:
            self._output.close()
            self._output = None


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Cluster:
    """The nodes of one test, by name; see the module docstring."""

    def __init__(self, test: TestCase, nodes: List[ClusterNode], database: Any, prefix: str,
                 client_name: str) -> None:
        self.test = test
        self.nodes = nodes
        self.database = database
        self.prefix = prefix
        self.client_name = client_name

    def node(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    async def start(self, name: str, timeout: float = 30.0) -> ClusterNode:
        """Start a node (again) and wait until it answers the Heartbeat."""
        node = self.node(name)
        node.reap()
        node.spawn()
        heartbeat = f"{node.url}/backend/Heartbeat/{self.client_name}"
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            if not node.running():
                self.test.fail(f"{name} exited early:\n{node.output()}")
            try:
                response = await http_request(heartbeat)
                if response.code == 200:
                    return node
            except Exception:
                pass
            await deferLater(reactor, 0.1, lambda: None)
        self.test.fail(f"{name} did not answer within {timeout} s:\n{node.output()}")

    async def stop(self, name: str, timeout: float = 30.0) -> int:
        """SIGTERM a node and wait for its exit status."""
        return await self._signal(name, signal.SIGTERM, timeout)

    async def kill(self, name: str) -> int:
        """SIGKILL a node (no clean-up of its own) and wait until it is gone."""
        return await self._signal(name, signal.SIGKILL, 10.0)

    async def restart(self, name: str) -> ClusterNode:
        await self.stop(name)
        return await self.start(name)

    async def _signal(self, name: str, signum: int, timeout: float) -> int:
        node = self.node(name)
        assert node.process is not None, f"{name} was never started"
        if node.process.poll() is None:
            node.process.send_signal(signum)
        deadline = reactor.seconds() + timeout
        while node.process.poll() is None:
            if reactor.seconds() > deadline:
                self.test.fail(f"{name} still runs {timeout} s after signal {signum}:\n{node.output()}")
            await deferLater(reactor, 0.05, lambda: None)
        return node.process.returncode


async def start_cluster(
    test: TestCase,
    size: int = 2,
    server: Optional[Dict[str, Any]] = None,
    client: Optional[Dict[str, Any]] = None,
    redis: Optional[Dict[str, Any]] = None,
    redis_port: int = SHARED_REDIS_PORT,
    start: bool = True,
    node_server: Optional[Dict[str, Dict[str, Any]]] = None,
) -> Cluster:
    """
    Write the configs of ``size`` nodes (``node-1``...) and start them one after the other.

    ``server`` is merged into every server.cfg, then ``node_server[name]`` into that node's
    (e.g. its own IRC port), ``client`` into the one client.cfg, ``redis`` into the ``redis``
    section. ``start=False`` writes the configs only (``cluster.start(name)``).
    """
    database = make_mariadb_database(test)
    prefix = shared_redis_prefix(test)
    client_data = dict(client or {})
    client_name = client_data.get("name", DEFAULT_CLIENT["name"])
    root = os.path.abspath(test.mktemp())
    nodes: List[ClusterNode] = []
    for index in range(1, size + 1):
        name = f"node-{index}"
        folder = os.path.join(root, name)
        os.makedirs(folder)
        port = free_port()
        redis_section = {"host": "127.0.0.1", "port": redis_port, "prefix": prefix,
                         "instance": name, "route": f"n{index}", **(redis or {})}
        server_data = {"port": port, "redis": redis_section, **(server or {}),
                       **(node_server or {}).get(name, {})}
        server_cfg, client_cfgs = write_configs(folder, server_data, [client_data], database)
        node = ClusterNode(name, folder, port, ["--server-cfg", server_cfg, "--client-cfg", client_cfgs[0]])
        test.addCleanup(node.reap)
        nodes.append(node)
    cluster = Cluster(test, nodes, database, prefix, client_name)
    if start:
        for node in nodes:
            await cluster.start(node.name)
    return cluster


async def standalone_lobby_page(test: Any, node: ClusterNode, name: str) -> Any:
    """A standalone page on C{node}, logged in as C{name} and in room 1; closed at C{test}'s end."""
    from types import SimpleNamespace

    from tests.ilias.repository_support import Browser

    page = Browser(SimpleNamespace(base_url=node.url), "/chat")  # type: ignore[arg-type]
    test.addCleanup(page.close)
    await page.connect()
    await page.emit("login", name)
    await page.wait_for("loggedIn", timeout=30)
    await page.emit("enterRoom", 1)
    await page.wait_for("private_room_entered", timeout=30)
    return page
