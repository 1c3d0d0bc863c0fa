"""
The cluster state with real ``twistd ilchat`` processes (``ilchat.cluster``): the start rule
for ``chatroom_users``, the daily purge once per cluster, a SIGKILLed node noticed by the other,
and duplicate instance names refused.
"""

import time
from types import SimpleNamespace
from typing import Any, Callable

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.ilias.repository_support import Browser
from tests.support.cluster import ClusterNode, start_cluster
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.private_redis import SHARED_REDIS_PORT, PrivateRedis, redis_command

START_LINE = "Start clear process for namespace"
ELSEWHERE_LINE = "runs on another instance; not here"


async def wait_for(test: TestCase, predicate: Callable[[], bool], seconds: float, what: str) -> float:
    """Wait until C{predicate()}; returns the seconds it took (fails after C{seconds})."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > seconds:
            test.fail(f"not within {seconds} s: {what}")
        await deferLater(reactor, 0.1, lambda: None)
    return time.monotonic() - start


def logs(node: ClusterNode) -> str:
    """The node's ``log`` file (chat.log)."""
    return node.log_text()


class ClusterStateTests(TestCase):
    timeout = 300

    async def test_start_rule_purge_once_and_a_killed_node_noticed(self) -> None:
        """
        node-2 starting next to node-1 leaves node-1's users in chatroom_users; the purge due
        while both run purges once; node-1 SIGKILLed is gone for node-2 within its heartbeat's
        TTL plus one look, and node-2, alone then, moves the users at its stop.
        """
        # The purge at the start of a minute between 30 and 90 s from now, local time.
        due = time.localtime(time.time() + 90)
        deletion_time = f"{due.tm_hour:02d}:{due.tm_min:02d}"
        cluster = await start_cluster(self, size=2, start=False, server={
            "deletion_mode": 1, "deletion_unit": "days", "deletion_value": 1,
            "deletion_time": deletion_time,
        })
        node1, node2 = cluster.nodes
        db = cluster.database
        now = int(time.time())
        await insert_rows_async(db, "chatroom_history", [
            {"hist_id": 1, "room_id": 1, "message": "{}", "timestamp": now - 3 * 86400},
            {"hist_id": 2, "room_id": 1, "message": "{}", "timestamp": now},
        ])
        await cluster.start("node-1")
        # Users online on node-1 (PHP wrote their rows when they entered).
        await insert_rows_async(db, "chatroom_users", [
            {"room_id": 1, "user_id": 6, "userdata": '{"login":"root","id":6}', "connected": now},
            {"room_id": 1, "user_id": 7, "userdata": '{"login":"anna","id":7}', "connected": now},
        ])
        await cluster.start("node-2")
        users = await fetch_rows_async(db, "SELECT user_id FROM chatroom_users ORDER BY user_id")
        self.assertEqual([row["user_id"] for row in users], [6, 7])
        self.assertIn("Users of onscreen left in chatroom_users: other live instances (node-1)",
                      node2.log_text())
        self.assertIn("other live instances: node-1", logs(node2))

        both = cluster.nodes
        await wait_for(self, lambda: all(START_LINE in logs(n) or ELSEWHERE_LINE in logs(n) for n in both),
                       150, f"the purge at {deletion_time} on both nodes")
        await wait_for(self, lambda: any("Clear process for namespace onscreen finished" in logs(n)
                                         for n in both), 30, "the purge to finish")
        purged = [n.name for n in both if START_LINE in logs(n)]
        skipped = [n.name for n in both if ELSEWHERE_LINE in logs(n)]
        self.assertEqual(len(purged), 1, (purged, skipped))
        self.assertEqual(len(skipped), 1, (purged, skipped))
        self.assertEqual(sum(logs(n).count(START_LINE) for n in both), 1)
        history = await fetch_rows_async(db, "SELECT hist_id FROM chatroom_history")
        self.assertEqual([row["hist_id"] for row in history], [2])

        self.assertEqual(await cluster.kill("node-1"), -9)
        await wait_for(self, lambda: "Cluster: instance node-1 is gone" in node2.log_text(), 30,
                              "node-2 noticing node-1's death")
        self.assertIn("this instance handles the departure of node-1", node2.log_text())
        # Alone now: at its stop node-2 moves every user to sessions (spec §1.5).
        self.assertEqual(await cluster.stop("node-2"), 0)
        self.assertIn("Successfully disconnected all users from server (onscreen: 2 moved to sessions)",
                      node2.log_text())
        self.assertEqual(await fetch_rows_async(db, "SELECT user_id FROM chatroom_users"), [])

    async def test_duplicate_instance_name_refused(self) -> None:
        """A second process with a live instance's name: one line, exit status 1; the first serves on."""
        cluster = await start_cluster(self, size=2, start=False, redis={"instance": "twin"})
        first, second = cluster.nodes
        await cluster.start("node-1")
        second.spawn()
        await wait_for(self, lambda: not second.running(), 60, "the second twin to exit")
        self.assertEqual(second.process.returncode, 1, second.output())
        lines = [line for line in second.output().splitlines() if "Instance name 'twin'" in line]
        self.assertTrue(lines, second.output())
        self.assertIn("Start-up failed: Instance name 'twin' is in use by another live process", lines[0])
        self.assertTrue(first.running())
        beat = await threads.deferToThread(redis_command, SHARED_REDIS_PORT, "EXISTS",
                                           f"{cluster.prefix}instance:twin")
        self.assertEqual(beat.strip(), "1")  # the first's heartbeat, untouched
        self.assertEqual(await cluster.stop("node-1"), 0)

    async def standalone_cluster(self, **options: Any) -> Any:
        """Two nodes serving one standalone chat ("chat", room 1 "Lobby")."""
        return await start_cluster(self, size=2, client={
            "name": "chat", "standalone": {"title": "Chat", "rooms": [{"id": 1, "title": "Lobby"}]},
        }, **options)

    async def browser(self, node: ClusterNode, name: str) -> Browser:
        """A standalone page on C{node} that has sent its login and heard the answer."""
        page = Browser(SimpleNamespace(base_url=node.url), "/chat")
        self.addCleanup(page.close)
        await page.connect()
        await page.emit("login", name)
        await wait_for(self, lambda: page.received("loggedIn") or page.received("loginFailed"), 20,
                       f"an answer to the login of {name}")
        return page

    async def name_released(self, cluster: Any, name: str, within: float) -> None:
        """Wait until the cluster's claim on the standalone name C{name} is gone (fail after C{within} s)."""

        def claimed() -> str:
            return redis_command(SHARED_REDIS_PORT, "HEXISTS", f"{cluster.prefix}claim:standalone-name:chat",
                                 name).strip()

        deadline = time.monotonic() + within
        while await threads.deferToThread(claimed) != "0":
            self.assertLess(time.monotonic(), deadline, f"{name}'s name still claimed")
            await deferLater(reactor, 0.1, lambda: None)

    async def test_standalone_ids_and_names_unique_across_nodes(self) -> None:
        """
        Two newcomers of the standalone chat on two nodes get different ids (each would be 1);
        a name taken on node-1 is refused on node-2 until its member is gone.
        """
        cluster = await self.standalone_cluster()
        node1, node2 = cluster.nodes
        browser = self.browser

        alice, bob = await browser(node1, "alice"), await browser(node2, "bob")
        ids = [page.payloads("loggedIn")[0]["id"] for page in (alice, bob)]
        self.assertEqual(len(set(ids)), 2, ids)
        self.assertTrue(all(user_id > 0 for user_id in ids), ids)

        twin = await browser(node2, "ALICE")
        self.assertEqual(twin.payloads("loginFailed")[0]["error"], "name_taken")
        await alice.close()  # gone after the disconnect grace: the name is free again
        await self.name_released(cluster, "alice", 60)
        again = await browser(node2, "Alice")
        self.assertEqual(again.payloads("loggedIn")[0]["username"], "Alice")

    async def test_standalone_rename_and_leave_across_nodes(self) -> None:
        """
        A rename to a name held on the other node is refused; a rename to a free one claims it
        and frees the old name for the other node; ``leave`` frees a name at once.
        """
        cluster = await self.standalone_cluster()
        node1, node2 = cluster.nodes
        browser = self.browser

        alice, bob = await browser(node1, "alice"), await browser(node2, "bob")
        await bob.emit("rename", "ALICE")
        await wait_for(self, lambda: bob.received("refused"), 20, "the refused rename")
        self.assertEqual(bob.payloads("refused")[0]["error"], "name_taken")
        await bob.emit("rename", "Robert")
        await wait_for(self, lambda: bob.received("renamed"), 20, "the rename")
        self.assertEqual(bob.payloads("renamed")[0]["username"], "Robert")
        await wait_for(self, lambda: alice.received("renamed"), 20, "the rename on the other node")
        self.assertEqual(alice.payloads("renamed")[0]["username"], "Robert")
        carol = await browser(node1, "Bob")
        self.assertEqual(carol.payloads("loggedIn")[0]["username"], "Bob")
        robert = await browser(node1, "robert")
        self.assertEqual(robert.payloads("loginFailed")[0]["error"], "name_taken")

        await alice.emit("leave")
        # At once: no grace, only the claim's way through Redis (the emit has no answer).
        await self.name_released(cluster, "alice", 5)
        again = await browser(node2, "Alice")
        self.assertEqual(again.payloads("loggedIn")[0]["username"], "Alice")

    async def test_standalone_ids_after_redis_and_every_node_restarted(self) -> None:
        """
        The whole site restarts, and its Redis keeps nothing on disk: the id counter is gone,
        yet the newcomers' ids are above every id of the first run (the store's highest).
        """
        redis = await PrivateRedis.start_for(self)
        cluster = await self.standalone_cluster(redis_port=redis.port)
        node1, node2 = cluster.nodes
        first = [await self.browser(node1, "alice"), await self.browser(node2, "bob")]
        before = [page.payloads("loggedIn")[0]["id"] for page in first]
        for page in first:
            await page.close()
        for node in (node1, node2):
            self.assertEqual(await cluster.stop(node.name), 0)
        await redis.stop()
        await redis.start()
        for node in (node1, node2):
            await cluster.start(node.name)
        second = [await self.browser(node1, "carol"), await self.browser(node2, "dave")]
        after = [page.payloads("loggedIn")[0]["id"] for page in second]
        self.assertEqual(len(set(after)), 2, after)
        self.assertGreater(min(after), max(before), (before, after))
