"""
Issue 14, "Behaviour": in one room on three real ``twistd ilchat`` processes (one user on
each), typing, whispers, notices and PHP's kicks, bans, clears, invitations and leaves reach
every tab of every process, whichever process PHP called: each backend call goes to a process
that holds neither the user it is about nor (where the issue allows it) the one who asked.
"""

from __future__ import annotations

from typing import List

from twisted.trial.unittest import TestCase

from tests.cluster.test_rooms import ClusterRoomsMixin
from tests.ilias.repository_support import Browser, sleep

ALICE, BOB, CAROL = 6, 7, 8


class BackendCallsToAnyProcessTests(ClusterRoomsMixin, TestCase):
    timeout = 300

    async def every_tab_gets(self, tabs: List[Browser], event: str, content: str = None,
                             count: int = 1) -> list:
        """Wait until each of C{tabs} got C{count} C{event}s; their last payloads."""
        return [await tab.wait_for(event, content, count=count) for tab in tabs]

    async def test_typing_whispers_notices_and_moderation_reach_all_three(self) -> None:
        await self.start_nodes(size=3, running=3)
        await self.admit(3, ALICE, "alice")
        alice = await self.tab(1, ALICE, "alice")
        await self.admit(1, BOB, "bob")
        bob = await self.tab(2, BOB, "bob")
        await self.admit(2, CAROL, "carol")
        carol = await self.tab(3, CAROL, "carol")
        everyone = [alice, bob, carol]
        for tab in everyone:
            await self.userlist_is(tab, [ALICE, BOB, CAROL], "with one user per process")
        # Notices: carol's arrival on node 3 is announced on nodes 1 and 2 (bob's on node 1).
        connects = await self.every_tab_gets([alice, bob], "notice", "connect", count=1)
        self.assertEqual(connects[1]["data"]["username"], "carol")
        self.assertEqual([p["data"]["username"] for p in alice.payloads("notice", "connect")],
                         ["bob", "carol"])

        # Typing both ways, started and stopped, from the last process and from the first.
        await carol.emit("userStartedTyping", 1)
        for tab in (alice, bob):
            started = await tab.wait_for("userStartedTyping")
            self.assertEqual(started["subscriber"], '{"id":8,"username":"carol"}')
        await carol.emit("userStoppedTyping", 1)
        await self.every_tab_gets([alice, bob], "userStoppedTyping")
        await alice.emit("userStartedTyping", 1)
        await self.every_tab_gets([bob, carol], "userStartedTyping", count=1)
        await alice.emit("userStoppedTyping", 1)
        await self.every_tab_gets([bob, carol], "userStoppedTyping", count=1)
        await sleep(0.5)
        typists = {tab: [p["subscriber"] for p in tab.payloads("userStartedTyping")] for tab in everyone}
        # Everyone else's typing, never one's own.
        self.assertEqual(typists[alice], ['{"id":8,"username":"carol"}'])
        self.assertEqual(typists[carol], ['{"id":6,"username":"alice"}'])
        self.assertEqual(typists[bob], ['{"id":8,"username":"carol"}', '{"id":6,"username":"alice"}'])

        # A whisper from node 2 to the user on node 3: she and the sender get it, node 1 not.
        target = {"username": "carol", "id": CAROL, "public": 0}
        await bob.emit("message", {"content": "psst carol", "format": {}, "target": target}, 1)
        whisper = await carol.wait_for("message", "psst carol")
        self.assertEqual((whisper["target"], whisper["from"]["id"]), (target, BOB))
        await bob.wait_for("message", "psst carol")
        await alice.emit("message", {"content": "after the whisper", "format": {}}, 1)
        await self.every_tab_gets(everyone, "message", "after the whisper")
        self.assertEqual(alice.payloads("message", "psst carol"), [])

        # ClearMessages to node 2: the clear and its notice on all three.
        self.assertEqual((await self.php(2, "ClearMessages", 1, ALICE)).json(), {"success": True})
        await self.every_tab_gets(everyone, "clear")
        await self.every_tab_gets(everyone, "notice", "history_has_been_cleared")

        # An invitation of carol (node 3) by alice (node 1), sent to node 2.
        self.assertEqual((await self.php(2, "InvitePrivateRoom", 2, ALICE, CAROL)).json(),
                         {"success": True})
        invited = await carol.wait_for("user_invited")
        self.assertEqual((invited["roomId"], invited["title"]), (2, "Main"))
        self_notice = await carol.wait_for("notice", "user_invited_self")
        self.assertEqual(self_notice["data"], {"user": "alice", "room": "Main"})
        await alice.wait_for("notice", "user_invited")
        await carol.emit("enterRoom", 2)
        await carol.wait_for("private_room_entered", count=2)

        # Kick of bob (node 2), sent to node 3.
        self.assertEqual((await self.php(3, "Kick", 1, BOB)).json(), {"success": True})
        await bob.wait_for("userjustkicked")
        await bob.wait_for("notice", "kicked_from_private_room")
        for tab in (alice, carol):
            kicked = await tab.wait_for("notice", "user_kicked")
            self.assertEqual(kicked["data"], {"user": "bob"})
            await self.userlist_is(tab, [ALICE, CAROL], "after bob's kick")
        await bob.emit("message", {"content": "kicked but talking", "format": {}}, 1)

        # LeavePrivateRoom of carol (node 3) from room 1, sent to node 1.
        self.assertEqual((await self.php(1, "LeavePrivateRoom", 1, CAROL)).json(),
                         {"success": True})
        await carol.wait_for("notice", "left")
        left = await alice.wait_for("notice", "private_room_left")
        self.assertEqual(left["data"], {"user": "carol", "title": "Main"})
        await self.userlist_is(alice, [ALICE], "after carol left room 1")

        # carol back in room 1 through PHP's calls to node 2; then a ban of alice (node 1),
        # sent to node 3.
        await self.admit(2, CAROL, "carol", row=False)
        await carol.emit("enterRoom", 1)
        await carol.wait_for("private_room_entered", count=3)
        await self.userlist_is(alice, [ALICE, CAROL], "carol back in room 1")
        self.assertEqual((await self.php(3, "Ban", 1, ALICE)).json(), {"success": True})
        await alice.wait_for("userjustbanned")
        banned = await carol.wait_for("notice", "user_kicked", count=2)
        self.assertEqual(banned["data"], {"user": "alice"})
        await self.userlist_is(carol, [CAROL], "after alice's ban")
        await alice.emit("message", {"content": "banned but talking", "format": {}}, 1)
        await carol.emit("message", {"content": "alone now", "format": {}}, 1)
        await carol.wait_for("message", "alone now")
        await sleep(0.5)
        for tab in everyone:
            self.assertEqual(tab.payloads("message", "kicked but talking"), [])
            self.assertEqual(tab.payloads("message", "banned but talking"), [])
        self.assertEqual(bob.payloads("message", "alone now"), [])
        for node in (1, 2, 3):
            self.assertTrue(self.node(node).running())
            self.assertNotIn("Traceback", self.node(node).error_log_text())
