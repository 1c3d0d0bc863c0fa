"""
Issue 14, open-mode IRC ids after a full restart: two real ``twistd ilchat`` processes on a
private Redis that keeps nothing on disk; every process and Redis are stopped and started
again, and the IRC users who come then get ids none of the earlier ones had (each process's
``<journal_dir>/ilchat-irc-open-ids.json`` seeds the lost counter). Before, they started at
-1 again, so a whisper stored for a former user was played back to a new one.
"""

from __future__ import annotations

from typing import Dict, List

from twisted.trial.unittest import TestCase

from ilchat.jsonutil import loads
from tests.cluster.test_irc_network import ROOM, BridgedMixin
from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.support.private_redis import PrivateRedis


class OpenIdsAfterFullRestartTests(BridgedMixin, TestCase):
    timeout = 240

    async def speak(self, node: str, nick: str) -> RawClient:
        """An open-mode IRC user of C{node} says something in the bridged room (a stored row)."""
        client = await self.irc(node, nick)
        client.send(f"JOIN {ROOM}")
        await client.wait_for("366")
        client.send(f"PRIVMSG {ROOM} :{nick} was here")
        return client

    async def ids_of(self, nicks: List[str]) -> Dict[str, int]:
        """The user id each of C{nicks} has in the history rows, once each has one."""
        ids: Dict[str, int] = {}
        for _ in range(300):
            for row in await self.rows("SELECT message FROM chatroom_history"):
                sender = loads(row["message"])["from"]
                if sender["username"] in nicks:
                    ids[sender["username"]] = int(sender["id"])
            if len(ids) == len(nicks):
                return ids
            await sleep(0.1)
        self.fail(f"history rows of {nicks}: {ids}")

    async def test_ids_are_new_after_every_process_and_redis_restarted(self) -> None:
        redis = await PrivateRedis.start_for(self)
        cluster = await self.start_bridged(redis_port=redis.port)
        await self.speak("node-1", "one")
        await self.speak("node-2", "two")
        before = await self.ids_of(["one", "two"])
        self.assertTrue(all(user_id < 0 for user_id in before.values()), before)

        for node in cluster.nodes:
            self.assertEqual(await cluster.stop(node.name), 0)
        await redis.stop()
        await redis.start()  # empty: the counter is gone
        for node in cluster.nodes:
            await cluster.start(node.name)
        await self.speak("node-1", "three")
        await self.speak("node-2", "four")
        after = await self.ids_of(["three", "four"])
        self.assertEqual(set(before.values()) & set(after.values()), set(), (before, after))
        self.assertEqual(len(set(after.values())), 2, after)
        self.assertTrue(all(user_id < 0 for user_id in after.values()), after)
