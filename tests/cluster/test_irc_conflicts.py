"""
Conflicts of one IRC network over two real ``twistd ilchat`` processes, made deterministic with
a private Redis stopped in between (both processes act before they hear of each other): one
channel created on both (the older creation wins on both: one operator), TOPIC and MODE set on
both at once (the same result on both, per field).
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial.unittest import TestCase

from tests.cluster.test_irc_network import _Clients, _names
from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.support.private_redis import PrivateRedis


class ChannelConflictTests(_Clients, TestCase):
    timeout = 180

    async def partitioned(self, redis: PrivateRedis) -> None:
        await redis.stop()
        for node in self.cluster.nodes:
            await self.eventually(lambda node=node: "cross-process delivery is degraded" in node.log_text(),
                                  f"{node.name} degraded")

    async def state(self, client: RawClient, channel: str) -> tuple:
        """NAMES, topic and modes of C{channel} as C{client}'s process has them."""
        client.clear()
        client.send(f"NAMES {channel}")
        names = _names(await client.wait_for("353"))
        client.send(f"TOPIC {channel}")
        topic = await client.wait_for("332|331")
        client.send(f"MODE {channel}")
        modes = await client.wait_for("324")
        return (names, topic.params[-1], modes.params[2:])

    async def same_everywhere(self, clients: List[RawClient], channel: str, expected: tuple) -> None:
        """Every client's process ends with the C{expected} L{state} of C{channel}."""
        for client in clients:
            state: Any = None
            for _ in range(100):
                state = await self.state(client, channel)
                if state == expected:
                    break
                await sleep(0.2)
            self.assertEqual(state, expected)

    async def test_one_channel_created_on_both_and_changed_on_both(self) -> None:
        redis = await PrivateRedis.start_for(self)
        await self.start(redis_port=redis.port)
        alice = await self.irc("node-1", "alice")
        bob = await self.irc("node-2", "bob")
        await self.whois(alice, "bob")
        await self.partitioned(redis)

        # Both create #race, node 2 a second earlier: each joiner is its operator for now.
        bob.send("JOIN #race")
        await bob.wait_for("366")
        bob.send("TOPIC #race :bob's topic")
        bob.send("MODE #race +s")
        await bob.wait_for("MODE")
        await sleep(1.1)
        alice.send("JOIN #race")
        self.assertEqual(_names(await alice.wait_for("353")), ["@alice"])
        alice.send("TOPIC #race :alice's topic")
        alice.send("MODE #race +m")
        await alice.wait_for("MODE")

        # Together again: node 2's older creation wins on both; alice is no operator anywhere.
        await redis.start()
        alice.clear()
        told = alice.wait_for("MODE", lambda m: "alice" in m.params[2:])
        expected = (["@bob", "alice"], "bob's topic", ("+nst",))
        await self.same_everywhere([alice, bob], "#race", expected)
        deop = await told
        self.assertEqual((deop.prefix, deop.params[1:]), ("irc.test", ("-m+s-o", "alice")))
        alice.send("TOPIC #race :not an op any more")
        await alice.wait_for("482")

        # Operators on both change the channel while apart: per field, the same on both.
        bob.send("MODE #race +o alice")
        await alice.wait_for("MODE", lambda m: m.params[1:] == ("+o", "alice"))
        await self.partitioned(redis)
        alice.send("TOPIC #race :apart, from alice")
        alice.send("MODE #race +m")
        await alice.wait_for("MODE", lambda m: m.params[1] == "+m")
        bob.send("TOPIC #race :apart, from bob")
        bob.send("MODE #race -s")
        await bob.wait_for("MODE", lambda m: m.params[1] == "-s")
        await redis.start()
        # The topics were set at once (one counter): node 2's instance orders last; +m and -s both hold.
        await self.same_everywhere([alice, bob], "#race", (["@alice", "@bob"], "apart, from bob", ("+mnt",)))
