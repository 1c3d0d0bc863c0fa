"""
Issue 14, "Faults": while Redis is away, every process retries with backoff and says so once,
not once per retry. Two real ``twistd ilchat`` processes on a private ``redis-server`` that is
stopped for several retry periods (0.5 + 1 + 2 + 4 s) and started again: their ``log`` files
hold one "degraded" and one "back" line each; node-1, at the production ``log_level`` (info),
no line per reconnection attempt; node-2, at debug, shows the attempts' growing waits.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import TestCase

from tests.cluster.test_rooms import ClusterRoomsMixin
from tests.ilias.repository_support import sleep, wait_until
from tests.support.private_redis import PrivateRedis

DEGRADED = "cross-process delivery is degraded"
BACK = "is back: cross-process delivery resumed"
OUTAGE = 9.0


class RedisOutageLogTests(ClusterRoomsMixin, TestCase):
    timeout = 240

    async def test_one_line_each_way_per_outage_at_level_info(self) -> None:
        redis = await PrivateRedis.start_for(self)
        await self.start_nodes(size=2, running=2, redis_port=redis.port,
                               server={"log_level": "info"},
                               node_server={"node-2": {"log_level": "debug"}})
        await self.admit(2, 6, "alice")
        alice = await self.tab(1, 6, "alice")
        await self.admit(1, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        await self.userlist_is(bob, [6, 7])
        before = [len(self.node(n).log_text()) for n in (1, 2)]

        await redis.stop()
        for node in (1, 2):
            await wait_until(lambda: DEGRADED in self.node(node).log_text(), 30, f"node-{node} degraded")
        await sleep(OUTAGE)
        await redis.start()
        for node in (1, 2):
            await wait_until(lambda: BACK in self.node(node).log_text(), 60, f"node-{node} back")
        await alice.emit("message", {"content": "after the outage", "format": {}}, 1)
        await bob.wait_for("message", "after the outage")

        outages = [self.node(n).log_text()[offset:] for n, offset in zip((1, 2), before)]
        for outage in outages:
            self.assertEqual(outage.count(DEGRADED), 1, outage)
            self.assertEqual(outage.count(BACK), 1, outage)
        per_attempt = [line for line in outages[0].splitlines()
                       if re.search(r"retry|Scheduling|Connection refused|connection lost", line)]
        self.assertEqual(per_attempt, [], f"node-1 logs its reconnection attempts:\n{outages[0]}")
        waits = {(int(attempt), float(delay)) for attempt, delay in re.findall(
            r"DEBUG - Scheduling retry (\d+) to connect .* in ([\d.]+) seconds", outages[1])}
        self.assertLessEqual({(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)}, waits, outages[1])
