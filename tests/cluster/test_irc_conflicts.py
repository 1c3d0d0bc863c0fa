"""
Conflicts of one IRC network over two real ``twistd ilchat`` processes: browser users whose
names make one nick, joining on both processes in any order (the same nicks on both, IRC users'
nicks kept, renamed back as others go); and, made deterministic with a private Redis stopped in
between (both processes act before they hear of each other), one channel created on both (the
older creation wins on both: one operator), TOPIC and MODE set on both at once (the same result
on both, per field).
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.trial.unittest import TestCase

from tests.cluster.test_irc_network import ROOM, BridgedMixin, _Clients, _names
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
        # Both join a new channel at the same moment: the processes agree on one operator.
        alice.send("JOIN #live")
        bob.send("JOIN #live")
        for client in (alice, bob):
            await client.wait_for("366")
        for _ in range(100):
            views = [(await self.state(client, "#live"))[0] for client in (alice, bob)]
            if views[0] == views[1] and len(views[0]) == 2:
                break
            await sleep(0.2)
        self.assertEqual(views[0], views[1])
        self.assertEqual(sorted(name.lstrip("@") for name in views[0]), ["alice", "bob"])
        self.assertEqual(len([name for name in views[0] if name.startswith("@")]), 1)

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
        alice.clear()  # before Redis is back: the merge's MODE may come while it starts
        await redis.start()
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


class BrowserNickTests(BridgedMixin, TestCase):
    timeout = 180

    async def nicks_are(self, clients: List[RawClient], expected: Dict[str, str]) -> None:
        """On every client's process the browser users have the C{expected} nicks (nick: name)."""
        for client in clients:
            async def names() -> List[str]:
                client.send(f"NAMES {ROOM}")
                return [n for n in _names(await client.wait_for("353")) if n.startswith("ann")]

            for _ in range(100):
                if await names() == sorted(expected):
                    break
                await sleep(0.2)
            self.assertEqual(await names(), sorted(expected))
            for nick, name in expected.items():
                self.assertEqual((await self.whois(client, nick))["311"].params[5], name)

    async def test_any_number_of_colliding_names_get_the_same_nicks_on_both(self) -> None:
        await self.start_bridged()
        watchers = []
        for node in ("node-1", "node-2"):
            watcher = await self.irc(node, "watch" + node[-1])
            watcher.send(f"JOIN {ROOM}")
            await watcher.wait_for("366")
            watchers.append(watcher)
        holder = await self.irc("node-2", "ann_lee_3")  # an IRC user's nick is never a browser's
        await self.whois(watchers[0], "ann_lee_3")
        # Four names that make the nick ann_lee, on both processes, not in the order of their ids.
        for node, user_id, name in ((2, 20, "ann lee"), (1, 30, "ann.lee"), (2, 25, "ann+lee"),
                                    (1, 10, "ann,lee")):
            await self.admit(node, user_id, name, row=False)
            await self.tab(node, user_id, name)
        await self.nicks_are(watchers, {"ann_lee": "ann,lee", "ann_lee_2": "ann lee",
                                        "ann_lee_4": "ann+lee", "ann_lee_5": "ann.lee"})

        # The IRC user quits: the nick is a browser user's now, on both.
        holder.send("QUIT :bye")
        await holder.closed
        await self.nicks_are(watchers, {"ann_lee": "ann,lee", "ann_lee_2": "ann lee",
                                        "ann_lee_3": "ann+lee", "ann_lee_4": "ann.lee"})
        # The lowest id is kicked out of the room: the others move up, on both.
        self.assertEqual((await self.php(1, "Kick", 1, 10)).json(), {"success": True})
        await self.nicks_are(watchers, {"ann_lee": "ann lee", "ann_lee_2": "ann+lee",
                                        "ann_lee_3": "ann.lee"})
        # An IRC user of node 1 takes the next nick, then a lower id arrives: all move down,
        # around the IRC user's nick.
        await self.irc("node-1", "ann_lee_4")
        await self.whois(watchers[1], "ann_lee_4")
        await self.admit(2, 5, "ann:lee", row=False)
        await self.tab(2, 5, "ann:lee")
        await self.nicks_are(watchers, {"ann_lee": "ann:lee", "ann_lee_2": "ann lee",
                                        "ann_lee_3": "ann+lee", "ann_lee_5": "ann.lee"})
