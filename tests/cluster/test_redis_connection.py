"""
Issue 14, "Configuration", through real ``twistd ilchat`` processes: ``password`` and ``db`` on a
private ``redis-server`` with ``requirepass``, ``tls`` with a ``ca_file`` on a private
``redis-server`` that speaks TLS only, ``prefix`` keeping two sites apart on one Redis, and the
default ``instance`` (host name and port). A Redis that refuses the process at start (wrong
password, untrusted certificate) stops it with one line and status 1.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, List

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.cluster.test_rooms import ClusterRoomsMixin
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.cluster import ClusterNode, standalone_lobby_page, start_cluster
from tests.support.private_redis import SHARED_REDIS_PORT, PrivateRedis, redis_command
from tests.test_plugin import run_twistd
from tests.test_tls import make_pki

PASSWORD = "s3cret-of-the-test"
DATABASE = 5


def edit_redis_section(node: ClusterNode, **changes: Any) -> None:
    """Change keys of C{node}'s ``redis`` section (a value of None removes the key)."""
    path = node.args[1]
    with open(path) as f:
        config = json.load(f)
    for key, value in changes.items():
        if value is None:
            config["redis"].pop(key, None)
        else:
            config["redis"][key] = value
    with open(path, "w") as f:
        json.dump(config, f)


class _RefusedStart:
    async def refused_start(self, node: ClusterNode) -> str:
        """Run C{node}'s twistd to its end: status 1 and one line on stderr, returned."""
        result = await threads.deferToThread(
            run_twistd, ["-n", "--pidfile=", "ilchat", *node.args], node.folder)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)  # type: ignore[attr-defined]
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)  # type: ignore[attr-defined]
        self.assertTrue(lines[0].startswith("Start-up failed: "), lines[0])  # type: ignore[attr-defined]
        self.assertNotIn("Traceback", result.stdout + result.stderr)  # type: ignore[attr-defined]
        return lines[0]


class RedisConnectionTests(_RefusedStart, ClusterRoomsMixin, TestCase):
    timeout = 240

    async def chat_crosses(self) -> None:
        """alice on node 1 and bob on node 2 (PHP asking the other node) talk both ways."""
        await self.admit(2, 6, "alice")
        alice = await self.tab(1, 6, "alice")
        await self.admit(1, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        for tab in (alice, bob):
            await self.userlist_is(tab, [6, 7])
        await alice.emit("message", {"content": "from node 1", "format": {}}, 1)
        await bob.wait_for("message", "from node 1")
        await bob.emit("message", {"content": "from node 2", "format": {}}, 1)
        await alice.wait_for("message", "from node 2")

    async def test_password_and_database(self) -> None:
        """
        Two processes AUTH with the password and SELECT the database: their keys are in that
        database only, and chat crosses; a third with a wrong password does not start.
        """
        redis = await PrivateRedis.start_for(self, password=PASSWORD)
        await self.start_nodes(size=3, running=2, redis_port=redis.port,
                               redis={"password": PASSWORD, "db": DATABASE})
        await self.chat_crosses()

        def keys(db: int) -> List[str]:
            return redis_command(redis.port, "--no-auth-warning", "-a", PASSWORD, "-n", str(db),
                                 "KEYS", "*").split()

        prefix = self.cluster.prefix
        in_database = await threads.deferToThread(keys, DATABASE)
        for name in ("node-1", "node-2"):
            self.assertIn(f"{prefix}instance:{name}", in_database)
        self.assertTrue(all(key.startswith(prefix) for key in in_database), in_database)
        self.assertEqual(await threads.deferToThread(keys, 0), [])
        for node in (1, 2):
            self.assertIn(f"Bus connected to Redis at 127.0.0.1:{redis.port} as instance node-{node}",
                          self.node(node).log_text())
            self.assertNotIn(PASSWORD, self.node(node).log_text() + self.node(node).output())

        third = self.node(3)
        edit_redis_section(third, password="not-the-password")
        line = await self.refused_start(third)
        self.assertIn(f"Redis at 127.0.0.1:{redis.port}", line)
        self.assertIn("AUTH refused", line)
        self.assertNotIn("not-the-password", line)

    async def test_tls_verified_against_the_ca_file(self) -> None:
        """
        A Redis that speaks TLS only: two processes trusting its CA chat across it; a third
        without the ``ca_file`` (the system's CAs do not know the test's) does not start.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        pki = make_pki(folder)
        redis = await PrivateRedis.start_for(self, tls=pki)
        await self.start_nodes(size=3, running=2, redis_port=redis.port,
                               redis={"host": "localhost", "tls": True, "ca_file": pki["root"]})
        await self.chat_crosses()
        for node in (1, 2):
            self.assertIn(f"Bus connected to Redis at localhost:{redis.port} as instance node-{node}",
                          self.node(node).log_text())

        third = self.node(3)
        edit_redis_section(third, ca_file=None)
        line = await self.refused_start(third)
        self.assertIn(f"Redis at localhost:{redis.port} unreachable", line)
        self.assertIn("certificate verify failed", line)


STANDALONE = {"name": "chat", "standalone": {"title": "Chat", "rooms": [{"id": 1, "title": "Lobby"}]}}


class PrefixAndInstanceTests(TestCase):
    timeout = 180

    async def page(self, node: ClusterNode, name: str) -> Browser:
        return await standalone_lobby_page(self, node, name)

    async def test_two_sites_with_their_own_prefix_share_one_redis(self) -> None:
        """
        Site A (two processes) and site B (one process, no ``instance`` key) on the shared
        Redis with the same client name: A's processes chat, nothing crosses to or from B, a
        name held on A is free on B, and B's instance is its host name and port.
        """
        site_a = await start_cluster(self, size=2, client=STANDALONE)
        site_b = await start_cluster(self, size=1, client=STANDALONE, start=False)
        b = site_b.nodes[0]
        edit_redis_section(b, instance=None, route=None)
        await site_b.start(b.name)
        self.assertNotEqual(site_a.prefix, site_b.prefix)
        instance = f"{socket.gethostname()}:{b.port}"
        self.assertIn(f"Bus connected to Redis at 127.0.0.1:{SHARED_REDIS_PORT} as instance {instance}",
                      b.log_text())
        beat = await threads.deferToThread(redis_command, SHARED_REDIS_PORT, "EXISTS",
                                           f"{site_b.prefix}instance:{instance}")
        self.assertEqual(beat.strip(), "1")

        alice = await self.page(site_a.nodes[0], "alice")
        bob = await self.page(site_a.nodes[1], "bob")
        other_alice = await self.page(b, "alice")  # another site: the name is free there
        await alice.emit("message", {"content": "site A only", "format": {}}, 1)
        await bob.wait_for("message", "site A only", timeout=30)
        await other_alice.emit("message", {"content": "site B only", "format": {}}, 1)
        await other_alice.wait_for("message", "site B only", timeout=30)
        await bob.emit("message", {"content": "site A again", "format": {}}, 1)
        await alice.wait_for("message", "site A again", timeout=30)
        await sleep(1)
        self.assertEqual(other_alice.payloads("message", "site A only"), [])
        self.assertEqual(other_alice.payloads("message", "site A again"), [])
        for page in (alice, bob):
            self.assertEqual(page.payloads("message", "site B only"), [])
            await wait_until(lambda: self.names_in(page) == {"alice", "bob"}, 30,
                             f"site A's userlist: {self.names_in(page)}")
        self.assertEqual(self.names_in(other_alice), {"alice"})

    @staticmethod
    def names_in(page: Browser) -> set:
        lists = page.payloads("userlist")
        return {u["username"] for u in lists[-1]["users"].values()} if lists else set()
