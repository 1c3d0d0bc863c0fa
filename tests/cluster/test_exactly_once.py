"""
Issue 14, "Exactly once": two real ``twistd ilchat`` processes take messages for one room at
the same time (browser tabs and open-mode IRC users on each): every tab gets every message
once, each message is one ``chatroom_history`` row with its own ``hist_id``, and the IRC users
of the two processes have different open-mode ids (each process alone would give -1).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from ilchat.jsonutil import loads
from tests.cluster.test_irc_network import ROOM, BridgedMixin
from tests.ilias.repository_support import sleep, wait_until

PER_TAB = 20
PER_IRC_USER = 5


class ExactlyOnceTests(BridgedMixin, TestCase):
    timeout = 240

    async def history_rows(self, count: int) -> List[Dict[str, Any]]:
        """The chatroom_history rows once there are C{count}, and a moment later (no more)."""
        sql = "SELECT hist_id, message FROM chatroom_history ORDER BY hist_id"
        for _ in range(600):
            if len(await self.rows(sql)) >= count:
                break
            await sleep(0.1)
        await sleep(1)
        return await self.rows(sql)

    async def test_simultaneous_messages_on_two_processes(self) -> None:
        await self.start_bridged()
        await self.admit(2, 6, "alice", row=False)
        alice = await self.tab(1, 6, "alice")
        await self.admit(1, 7, "bob", row=False)
        bob = await self.tab(2, 7, "bob")
        ircers = [await self.irc("node-1", "ircone"), await self.irc("node-2", "irctwo")]
        for client in ircers:
            client.send(f"JOIN {ROOM}")
            await client.wait_for("366")
        for client in ircers:
            await self.knows_channel(client, "ircone", ROOM)
            await self.knows_channel(client, "irctwo", ROOM)
        # Both IRC users are room members on both processes, each under an open-mode id of its own.
        for tab in (alice, bob):
            await wait_until(lambda: len(self.user_ids(tab)) == 4, 30, f"4 users: {self.user_ids(tab)}")
        members = self.user_ids(alice)
        self.assertEqual(members, self.user_ids(bob))
        self.assertEqual(members[2:], [6, 7])
        self.assertTrue(members[0] < members[1] < 0, members)

        def burst(tab: Any, name: str) -> defer.Deferred:
            return defer.ensureDeferred(self._say(tab, name))

        for number in range(PER_IRC_USER):
            for client, nick in zip(ircers, ("ircone", "irctwo")):
                client.send(f"PRIVMSG {ROOM} :{nick} {number}")
        await defer.gatherResults([burst(alice, "alice"), burst(bob, "bob")])

        contents = ([f"{name} {n}" for name in ("alice", "bob") for n in range(PER_TAB)]
                    + [f"{nick} {n}" for nick in ("ircone", "irctwo") for n in range(PER_IRC_USER)])
        for tab in (alice, bob):
            for content in contents:
                await tab.wait_for("message", content, timeout=60)
        await sleep(0.5)
        for tab in (alice, bob):
            seen = Counter(m["content"] for m in tab.payloads("message"))
            self.assertEqual(seen, Counter(contents), "every message once on each tab")

        rows = await self.history_rows(len(contents))
        stored = [loads(r["message"]) for r in rows]
        self.assertEqual(Counter(m["content"] for m in stored), Counter(contents))
        self.assertEqual(len({r["hist_id"] for r in rows}), len(rows))
        irc_ids = {m["from"]["username"]: m["from"]["id"] for m in stored
                   if m["from"]["username"] in ("ircone", "irctwo")}
        self.assertEqual(set(irc_ids), {"ircone", "irctwo"})
        self.assertEqual(sorted(irc_ids.values()), members[:2])
        self.assertNotEqual(irc_ids["ircone"], irc_ids["irctwo"])
        self.assertTrue(all(user_id < 0 for user_id in irc_ids.values()), irc_ids)
        # One id per IRC user: every one of their messages carries it.
        for message in stored:
            name = message["from"]["username"]
            if name in irc_ids:
                self.assertEqual(message["from"]["id"], irc_ids[name])

    @staticmethod
    def user_ids(tab: Any) -> List[int]:
        lists = tab.payloads("userlist")
        return sorted(int(key) for key in lists[-1]["users"]) if lists else []

    async def _say(self, tab: Any, name: str) -> None:
        for number in range(PER_TAB):
            await tab.emit("message", {"content": f"{name} {number}", "format": {}}, 1)
