"""
Redis restarted under two real ``twistd ilchat`` processes (issue 14, "Faults"): while it is
down, users on one process keep chatting and their messages are stored, and each process says
once that cross-process delivery is degraded; once it is back (same port, empty), both processes
reconnect, resubscribe and announce themselves again, and chat across the processes resumes.

The Redis is the test's own (L{PrivateRedis}); the shared one is never stopped.
"""

from __future__ import annotations

import time

from twisted.trial.unittest import TestCase

from tests.cluster.test_rooms import ClusterRoomsMixin
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.private_redis import PrivateRedis

DEGRADED = "cross-process delivery is degraded"
BACK = "is back: cross-process delivery resumed"
#: Long enough for several reconnect attempts (waits of 0.5, 1, 2 s...).
OUTAGE = 4.0


class RedisRestartTests(ClusterRoomsMixin, TestCase):
    timeout = 240

    async def say(self, sender: Browser, content: str, receivers: list) -> None:
        await sender.emit("message", {"content": content, "format": {}}, 1)
        for receiver in receivers:
            await receiver.wait_for("message", content)

    async def history_has(self, contents: list) -> None:
        async def stored() -> list:
            rows = await self.rows("SELECT message FROM chatroom_history")
            return [c for c in contents if any(c in str(r["message"]) for r in rows)]

        deadline = time.monotonic() + 30
        while await stored() != contents:
            self.assertLess(time.monotonic(), deadline, f"history rows of {contents}")
            await sleep(0.1)

    def count(self, node: int, text: str) -> int:
        return self.node(node).log_text().count(text)

    async def test_chat_survives_a_redis_restart(self) -> None:
        redis = await PrivateRedis.start_for(self)
        await self.start_nodes(size=2, running=2, redis_port=redis.port)
        await self.admit(1, 6, "alice")
        alice = await self.tab(1, 6, "alice")
        await self.admit(1, 8, "carol")
        carol = await self.tab(1, 8, "carol")
        await self.admit(2, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        for browser in (alice, bob, carol):
            await self.userlist_is(browser, [6, 7, 8], "before")
        await self.say(alice, "before from node-1", [bob, carol])
        await self.say(bob, "before from node-2", [alice, carol])

        await redis.stop()
        for node in (1, 2):
            await wait_until(lambda: self.count(node, DEGRADED) >= 1, 30, f"node-{node} degraded")
        down_since = time.monotonic()
        await self.say(alice, "while down: alice", [carol])
        await self.say(carol, "while down: carol", [alice])
        await self.history_has(["while down: alice", "while down: carol"])
        # The outage lasts several reconnect attempts; still one line per process.
        await sleep(max(0.0, OUTAGE - (time.monotonic() - down_since)))
        self.assertEqual(bob.payloads("message", "while down: alice"), [])
        for node in (1, 2):
            self.assertEqual(self.count(node, DEGRADED), 1, self.node(node).log_text())
            self.assertEqual(self.count(node, BACK), 0)

        await redis.start()
        for node in (1, 2):
            await wait_until(lambda: self.count(node, BACK) == 1, 60, f"node-{node} back")
            await wait_until(lambda: "announced again" in self.node(node).log_text(), 60,
                             f"node-{node} announced again")
        # "Back" is logged once the channels are subscribed again: messages cross, both ways.
        await self.say(alice, "after: alice to bob", [bob, carol])
        await self.say(bob, "after: bob to alice", [alice, carol])
        # Both processes know every user again (Redis came back empty): PHP's view on each,
        # and a user who arrives now gets, and brings to everyone, the complete list.
        for node in (1, 2):
            rooms = (await self.php(node, "GetRooms")).json()["rooms"]
            self.assertEqual(sorted(u["id"] for u in rooms["1_0"]["users"]), [6, 7, 8], node)
        await self.admit(2, 9, "dave")
        dave = await self.tab(2, 9, "dave")
        for browser in (alice, bob, carol, dave):
            await self.userlist_is(browser, [6, 7, 8, 9], "after")
        for browser in (alice, bob, carol):
            self.assertEqual(browser.payloads("notice", "disconnected"), [],
                             "someone was told that a user left")
        await self.history_has(["before from node-1", "before from node-2", "while down: alice",
                                "while down: carol", "after: alice to bob", "after: bob to alice"])
        for node in (1, 2):
            self.assertEqual(self.count(node, DEGRADED), 1)
            self.assertEqual(self.count(node, BACK), 1)
            self.assertEqual(self.count(node, "announced again"), 1)
