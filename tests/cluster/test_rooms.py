"""
The repository chat's rooms across real ``twistd ilchat`` processes on one Redis and one
MariaDB database: PHP's calls to any process act for users on every process, userlists have
one entry per user, a late process catches up, and a clean stop loses nobody who reconnects.

Browsers are python-socketio clients (``tests.ilias.repository_support.Browser``) on different
nodes; PHP's calls are HTTP with the client's Basic auth, sent to whichever node the scenario
says. The disconnect grace is the real 15 s here.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.cluster import Cluster, ClusterNode, start_cluster
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.http import Response, http_request
from tests.support.private_redis import SHARED_REDIS_PORT, redis_command
from tests.support.server import DEFAULT_CLIENT

NAME = DEFAULT_CLIENT["name"]
GRACE = 15.0


class _Node:
    """What L{Browser} needs of a server: where it is."""

    def __init__(self, node: ClusterNode) -> None:
        self.base_url = node.url


class _Tab(Browser):
    """A L{Browser} that waits longer: several processes share two busy cores."""

    async def wait_for(self, event: str, content: Optional[str] = None, count: int = 1,
                       timeout: float = 30.0) -> Any:
        return await super().wait_for(event, content, count, timeout)


class ClusterRoomsMixin:
    cluster: Cluster

    async def start_nodes(self, size: int, running: int, **options: Any) -> Cluster:
        """C{size} nodes (C{options} as for L{start_cluster}), the first C{running} started."""
        self.cluster = await start_cluster(self, size=size, start=False, **options)
        await insert_rows_async(self.cluster.database, "chatroom_settings",
                                [{"room_id": 1}, {"room_id": 2}])
        for node in self.cluster.nodes[:running]:
            await self.cluster.start(node.name)
        self.browsers: List[Browser] = []
        self.addCleanup(self._close_browsers)
        return self.cluster

    async def _close_browsers(self) -> None:
        for browser in self.browsers:
            await browser.close()

    def node(self, index: int) -> ClusterNode:
        return self.cluster.nodes[index - 1]

    async def php(self, node: int, action: str, *segments: Any) -> Response:
        """PHP's ``GET /backend/<action>/<client>/...`` to node C{node} (1-based)."""
        path = "/".join(["", "backend", action, NAME, *(str(s) for s in segments)])
        auth = DEFAULT_CLIENT["auth"]
        token = base64.b64encode(f"{auth['key']}:{auth['secret']}".encode()).decode()
        return await http_request(self.node(node).url + path,
                                  headers={"Authorization": f"Basic {token}"})

    async def admit(self, node: int, user_id: int, login: str, room: int = 1,
                    row: bool = True) -> None:
        """PHP's Connect and EnterPrivateRoom to node C{node}, and PHP's chatroom_users row."""
        self.assertEqual((await self.php(node, "Connect", room, user_id)).json(), {"status": 200})
        if row:
            await insert_rows_async(self.cluster.database, "chatroom_users", [{
                "room_id": room, "user_id": user_id,
                "userdata": json.dumps({"login": login, "id": user_id}, separators=(",", ":")),
                "connected": int(time.time()),
            }])
        self.assertEqual((await self.php(node, "EnterPrivateRoom", room, user_id)).json(),
                         {"success": True})

    async def tab(self, node: int, user_id: int, login: str, room: int = 1) -> Browser:
        """A browser tab on node C{node}: login and enterRoom."""
        browser = _Tab(_Node(self.node(node)), "/" + NAME)  # type: ignore[arg-type]
        self.browsers.append(browser)
        await browser.connect()
        await browser.emit("login", login, user_id, False)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", room)
        await browser.wait_for("private_room_entered")
        return browser

    async def userlist_is(self, browser: Browser, ids: List[int], what: str = "") -> None:
        """Wait until the tab's latest userlist holds exactly these user ids."""
        def latest() -> Optional[List[int]]:
            lists = browser.payloads("userlist")
            return sorted(int(k) for k in lists[-1]["users"]) if lists else None

        await wait_until(lambda: latest() == sorted(ids), 30, f"userlist {ids} {what}: {latest()}")
        users = browser.payloads("userlist")[-1]["users"]
        self.assertEqual(len(users), len(ids))  # one entry per user, whatever their tabs

    async def rows(self, sql: str) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.cluster.database, sql)

    async def users_rows(self) -> List[Tuple[int, int]]:
        return [(r["room_id"], r["user_id"]) for r in await self.rows(
            "SELECT room_id, user_id FROM chatroom_users ORDER BY room_id, user_id")]


class RoomsAcrossProcessesTests(ClusterRoomsMixin, TestCase):
    timeout = 240

    async def test_one_room_on_two_processes(self) -> None:
        """Messages, userlists, typing, whispers, kicks, clears, invitations and bans cross."""
        await self.start_nodes(size=2, running=2)
        # PHP talks to the other node than the browser, every time.
        await self.admit(2, 6, "alice")
        alice = await self.tab(1, 6, "alice")
        await self.admit(1, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        await self.admit(2, 8, "carol")
        carol = await self.tab(2, 8, "carol")
        bob_again = await self.tab(1, 7, "bob")  # a second tab, on the other process
        for browser in (alice, bob, carol, bob_again):
            await self.userlist_is(browser, [6, 7, 8])
        # The second tab brought no "connect" notice: bob was there already.
        await sleep(0.5)
        self.assertEqual(len(alice.payloads("notice", "connect")), 2)  # bob, carol

        await alice.emit("message", {"content": "hello", "format": {}}, 1)
        for browser in (bob, carol, bob_again):
            await browser.wait_for("message", "hello")
        await alice.emit("userStartedTyping", 1)
        await bob.wait_for("userStartedTyping")
        await carol.wait_for("userStartedTyping")
        target = {"username": "bob", "id": 7, "public": 0}
        await alice.emit("message", {"content": "psst", "format": {}, "target": target}, 1)
        whisper = await bob.wait_for("message", "psst")
        self.assertEqual(whisper["target"], target)
        await bob_again.wait_for("message", "psst")
        # Bus messages nobody can read (issue 14, "Faults"): logged and dropped, both
        # processes stay up and chat goes on across them.
        channel = f"{self.cluster.prefix}bus:room:{NAME}"
        for garbage in ("not json", '{"v":2,"origin":"x","topic":"room:%s","event":{}}' % NAME):
            await threads.deferToThread(redis_command, SHARED_REDIS_PORT, "PUBLISH", channel,
                                        garbage)
        # Envelopes that read well but carry events of the wrong shape (fields missing or of
        # the wrong type) change nobody's state either.
        for event in ({"type": "entered", "room": 1}, {"type": "message", "room": "1"},
                      {"type": "left", "room": 1, "member": {"id": "six"}},
                      {"type": "snapshot", "rooms": 5, "members": None}):
            envelope = {"v": 1, "origin": "x", "topic": f"room:{NAME}", "event": event}
            await threads.deferToThread(redis_command, SHARED_REDIS_PORT, "PUBLISH", channel,
                                        json.dumps(envelope))
        await carol.emit("message", {"content": "after", "format": {}}, 1)
        await alice.wait_for("message", "after")
        await bob.wait_for("message", "after")
        self.assertEqual(carol.payloads("message", "psst"), [])
        await self._history_count(3)
        for node in (1, 2):
            log = self.node(node).log_text()
            self.assertEqual(log.count(f"Dropped a bus message on {channel}"), 6, log)
            self.assertNotIn("Bus subscriber", log)  # refused before any subscriber
            self.assertTrue(self.node(node).running())

        # bob closes his tab on node 1: his other tab holds him, nobody sees him go.
        await bob_again.close()
        await sleep(GRACE + 2)
        self.assertEqual(alice.payloads("notice", "disconnected"), [])
        await self.userlist_is(alice, [6, 7, 8], "after bob's first tab")
        self.assertIn((1, 7), await self.users_rows())

        # PHP's moderation, to the process bob is not on, and the other way round.
        self.assertEqual((await self.php(1, "Kick", 1, 7)).json(), {"success": True})
        await bob.wait_for("userjustkicked")
        await alice.wait_for("notice", "user_kicked")
        await self.userlist_is(carol, [6, 8], "after the kick")
        self.assertEqual((await self.php(2, "ClearMessages", 1, 6)).json(), {"success": True})
        await alice.wait_for("clear")
        await carol.wait_for("clear")
        self.assertEqual((await self.php(1, "InvitePrivateRoom", 2, 8, 7)).json(),
                         {"success": True})
        invited = await bob.wait_for("user_invited")
        self.assertEqual(invited["roomId"], 2)
        await carol.wait_for("notice", "user_invited")
        await bob.emit("enterRoom", 2)
        await bob.wait_for("private_room_entered", count=2)
        self.assertEqual((await self.php(1, "Ban", 1, 8)).json(), {"success": True})
        await carol.wait_for("userjustbanned")
        await self.userlist_is(alice, [6], "after the ban")
        rooms = (await self.php(1, "GetRooms")).json()["rooms"]
        self.assertEqual([u["id"] for u in rooms["2_0"]["users"]], [7])
        self.assertEqual([u["id"] for u in rooms["1_0"]["users"]], [6])
        self.assertEqual((await self.php(2, "LeavePrivateRoom", 1, 6)).json(), {"success": True})
        await alice.wait_for("notice", "left")
        await wait_until(lambda: self._no_users(alice, 1), 30, "room 1 empty in her userlist")
        # A room PHP creates on node 2 after the start is a room on node 1 too (as soon as
        # Redis brought the event: until then node 1 answers 404, as for any unknown room).
        self.assertEqual((await self.php(2, "CreatePrivateRoom", 3, 6, "Side")).json(),
                         {"success": True})
        await self._wait_async(lambda: self._has_room(1, "3_0"), "room 3 on node 1")
        self.assertEqual((await self.php(1, "EnterPrivateRoom", 3, 6)).json(), {"success": True})
        await alice.emit("enterRoom", 3)
        entered = await alice.wait_for("notice", "welcome_to_chat", count=2)
        self.assertEqual((entered["roomId"], entered["data"]["title"]), (3, "Side"))

    async def _has_room(self, node: int, key: str) -> bool:
        rooms = (await self.php(node, "GetRooms")).json()["rooms"]
        return key in rooms and rooms[key]["title"] == "Side"

    async def _wait_async(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + 30
        while not await predicate():
            self.assertLess(time.monotonic(), deadline, f"timed out waiting for {what}")
            await sleep(0.05)

    @staticmethod
    def _no_users(browser: Browser, room: int) -> bool:
        lists = [p for p in browser.payloads("userlist") if str(p["roomId"]) == str(room)]
        return bool(lists) and lists[-1]["users"] == {}

    async def _history_count(self, count: int) -> None:
        """Every message is one chatroom_history row, written by the process that took it."""
        async def counted() -> int:
            return len(await self.rows("SELECT hist_id FROM chatroom_history"))

        deadline = time.monotonic() + 30
        while await counted() < count and time.monotonic() < deadline:
            await sleep(0.1)
        await sleep(0.5)
        self.assertEqual(await counted(), count)

    async def test_late_process_and_a_clean_stop(self) -> None:
        """
        A third process started later knows everything; a node that stops cleanly (a moment
        after the late one started: its last heartbeat look did not see it yet) loses nobody
        who reconnects elsewhere, leaves every row at its stop, and after the grace exactly
        the row of the one user who did not come back is moved, once.
        """
        await self.start_nodes(size=3, running=2)
        await self.admit(1, 6, "alice", row=False)
        alice = await self.tab(1, 6, "alice")
        await self.admit(2, 7, "bob", row=False)
        bob = await self.tab(2, 7, "bob")
        await self.admit(1, 9, "dave", row=False)
        dave_1 = await self.tab(1, 9, "dave")
        await self.tab(2, 9, "dave")
        await self.admit(1, 10, "erin", row=False)
        erin = await self.tab(1, 10, "erin")
        await self.cluster.start("node-3")
        await self.admit(3, 8, "carol", row=False)
        carol = await self.tab(3, 8, "carol")
        await self.userlist_is(carol, [6, 7, 8, 9, 10], "on the late node")
        rooms = (await self.php(3, "GetRooms")).json()["rooms"]
        self.assertEqual([u["id"] for u in rooms["1_0"]["users"]], [6, 7, 8, 9, 10])
        # PHP's rows, written once every node runs (a start moves every row: not this test's).
        now = int(time.time())
        await insert_rows_async(self.cluster.database, "chatroom_users", [
            {"room_id": 1, "user_id": uid, "connected": now,
             "userdata": json.dumps({"login": login, "id": uid})}
            for uid, login in ((6, "alice"), (7, "bob"), (8, "carol"), (9, "dave"),
                               (10, "erin"))])
        for browser in (bob, carol):
            browser.clear()

        self.assertEqual(await self.cluster.stop("node-1"), 0)
        await wait_until(lambda: all(tab.disconnected.is_set() for tab in (alice, dave_1, erin)),
                         30, "node-1's tabs disconnected")
        # Others are live: node 1 moved no row at its stop.
        self.assertEqual(await self.users_rows(), [(1, 6), (1, 7), (1, 8), (1, 9), (1, 10)])
        self.assertIn("Users of onscreen left in chatroom_users: other live instances"
                      " (node-2, node-3) serve them", self.node(1).log_text())
        # alice's page reconnects to node 2 within the grace; erin's does not come back.
        alice_again = await self.tab(2, 6, "alice")
        await sleep(GRACE + 3)
        for browser in (bob, carol, alice_again):
            await self.userlist_is(browser, [6, 7, 8, 9], "after node-1 stopped")
        for browser in (bob, carol):
            self.assertEqual([p["data"]["username"]
                              for p in browser.payloads("notice", "disconnected")], ["erin"])
        self.assertEqual(await self.users_rows(), [(1, 6), (1, 7), (1, 8), (1, 9)])
        sessions = await self.rows("SELECT user_id FROM chatroom_sessions")
        self.assertEqual([r["user_id"] for r in sessions], [10])
        await alice_again.emit("message", {"content": "still here", "format": {}}, 1)
        await carol.wait_for("message", "still here")
        log = self.node(2).log_text()
        self.assertIn("Instance node-1 gone", log)
        self.assertIn("Instance node-1 gone", self.node(3).log_text())

    async def test_tabs_closed_at_once_on_two_processes(self) -> None:
        """
        alice's tabs on both nodes close together: both graces end at about the same time,
        each node possibly still seeing the other hold her. She leaves once, and her
        chatroom_users row is moved (once) all the same.
        """
        await self.start_nodes(size=2, running=2)
        await self.admit(1, 6, "alice")
        await self.admit(2, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        tabs = [await self.tab(1, 6, "alice"), await self.tab(2, 6, "alice")]
        await self.userlist_is(bob, [6, 7])
        bob.clear()
        await defer.gatherResults([defer.ensureDeferred(tab.close()) for tab in tabs])
        await bob.wait_for("notice", "disconnected", timeout=GRACE + 15)
        await self.userlist_is(bob, [7], "after the grace")
        deadline = time.monotonic() + 10
        while await self.users_rows() != [(1, 7)]:
            self.assertLess(time.monotonic(), deadline, await self.users_rows())
            await sleep(0.1)
        sessions = await self.rows("SELECT user_id FROM chatroom_sessions")
        self.assertEqual([r["user_id"] for r in sessions], [6])
        await sleep(1)
        self.assertEqual(len(bob.payloads("notice", "disconnected")), 1)

    async def test_a_killed_process_started_again_ends_its_previous_holdings(self) -> None:
        """
        SIGKILL, then the same node starts again: its fresh sync_request tells the others that
        what it held before is gone; after the grace its users who did not come back leave
        (once), those who reconnected to it stay.
        """
        await self.start_nodes(size=2, running=2)
        await self.admit(1, 6, "alice", row=False)
        await self.tab(1, 6, "alice")
        await self.admit(1, 8, "carol", row=False)
        await self.tab(1, 8, "carol")
        await self.admit(2, 7, "bob", row=False)
        bob = await self.tab(2, 7, "bob")
        await self.userlist_is(bob, [6, 7, 8])
        bob.clear()
        self.assertEqual(await self.cluster.kill("node-1"), -9)
        await self.cluster.start("node-1")
        carol_again = await self.tab(1, 8, "carol")  # her page reconnects to the new node-1
        await bob.wait_for("notice", "disconnected", timeout=GRACE + 15)
        await self.userlist_is(bob, [7, 8], "after the grace")
        await self.userlist_is(carol_again, [7, 8], "on the restarted node")
        await sleep(1)
        gone = [p["data"]["username"] for p in bob.payloads("notice", "disconnected")]
        self.assertEqual(gone, ["alice"])

    async def test_a_killed_process_loses_its_users_within_30_seconds(self) -> None:
        """
        SIGKILL and no restart: the other node notices the missing heartbeat, keeps the dead
        node's users for the grace (their pages could reconnect), then they leave its userlists
        and their chatroom_users rows go to chatroom_sessions, all within 30 s of the kill.
        """
        await self.start_nodes(size=2, running=2)
        await self.admit(1, 6, "alice")
        await self.tab(1, 6, "alice")
        await self.admit(2, 7, "bob")
        bob = await self.tab(2, 7, "bob")
        await self.userlist_is(bob, [6, 7])
        bob.clear()
        killed = time.monotonic()
        self.assertEqual(await self.cluster.kill("node-1"), -9)
        await bob.wait_for("notice", "disconnected", timeout=30 - (time.monotonic() - killed))
        self.assertEqual([p["data"]["username"] for p in bob.payloads("notice", "disconnected")],
                         ["alice"])
        await self.userlist_is(bob, [7], "after node-1 died")

        while await self.users_rows() != [(1, 7)]:
            self.assertLess(time.monotonic() - killed, 30, await self.users_rows())
            await sleep(0.5)
        sessions = await self.rows("SELECT user_id FROM chatroom_sessions")
        self.assertIn(6, [row["user_id"] for row in sessions])
        self.assertIn("instance node-1 is gone", self.node(2).log_text() + self.node(2).output())
