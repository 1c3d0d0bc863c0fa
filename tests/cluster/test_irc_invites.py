"""
Issue 14, invitations into an IRC-only ``+i`` channel across two real ``twistd ilchat``
processes: an INVITE made on each process while Redis was away (and a TOPIC changed meanwhile)
is known on both once Redis is back, so each invitee joins on the other process; invitations
merge by union with the rest of the channel's state (``ilchat.irc.channel_sync``), none lost.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.cluster.test_irc_network import _Clients
from tests.ilias.repository_support import sleep, wait_until
from tests.irc.support import RawClient
from tests.support.private_redis import PrivateRedis

DEGRADED = "cross-process delivery is degraded"
BACK = "is back: cross-process delivery resumed"


class InvitationsAcrossProcessesTests(_Clients, TestCase):
    timeout = 240

    async def joins(self, client: RawClient, channel: str) -> bool:
        """Whether C{client} gets into C{channel} within a few tries (473: not invited)."""
        for _ in range(30):
            client.send(f"JOIN {channel}")
            if (await client.wait_for("473|366")).command == "366":
                return True
            await sleep(0.2)
        return False

    async def test_invitations_made_on_both_sides_of_a_redis_outage_are_kept(self) -> None:
        redis = await PrivateRedis.start_for(self)
        cluster = await self.start(redis_port=redis.port)
        alice = await self.irc("node-1", "alice")
        carol = await self.irc("node-1", "carol")
        dave = await self.irc("node-2", "dave")
        bob = await self.irc("node-2", "bob")
        alice.send("JOIN #inv")
        await alice.wait_for("366")
        await self.knows_channel(dave, "alice", "#inv")
        dave.send("JOIN #inv")
        await dave.wait_for("366")
        await alice.wait_for("JOIN", lambda m: m.prefix.startswith("dave!"))
        alice.send("MODE #inv +o dave")
        await dave.wait_for("MODE", lambda m: m.params[1:] == ("+o", "dave"))
        alice.send("MODE #inv +i")
        await dave.wait_for("MODE", lambda m: m.params[1:] == ("+i",))
        bob.send("JOIN #inv")
        await bob.wait_for("473")

        await redis.stop()
        for node in cluster.nodes:
            await wait_until(lambda: DEGRADED in node.log_text(), 30, f"{node.name} degraded")
        alice.send("INVITE bob #inv")  # on node-1, for node-2's bob
        await alice.wait_for("341")
        dave.send("INVITE carol #inv")  # on node-2, for node-1's carol
        await dave.wait_for("341")
        dave.send("TOPIC #inv :changed while Redis was away")
        await dave.wait_for("TOPIC")
        await redis.start()
        for node in cluster.nodes:
            await wait_until(lambda: BACK in node.log_text(), 60, f"{node.name} back")

        self.assertTrue(await self.joins(bob, "#inv"), "bob was never let in on node-2")
        self.assertTrue(await self.joins(carol, "#inv"), "carol was never let in on node-1")
        # Both invitations were used up, on both processes: a second try is refused.
        for client in (bob, carol):
            client.send("PART #inv")
            await client.wait_for("PART")
        await sleep(1)
        for client in (bob, carol):
            client.send("JOIN #inv")
            await client.wait_for("473")
        alice.send("TOPIC #inv")
        self.assertEqual((await alice.wait_for("332")).params[2], "changed while Redis was away")
