"""
The repository chat driven by the real npm socket.io-client 4.8 (``tests/ilias/js/*.js``).

* ``flow.js``: the §10.2 flow frame by frame, as the ILIAS page runs it.
* ``crowd.js``: 1,000 browsers entering one room. The Node server needs about 142 s for that
  (spec §10.6, O(n²) userlists); ilchat coalesces the room-wide userlist, so the same crowd must be
  in within seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from twisted.internet import defer, utils
from twisted.trial import unittest

from tests.ilias.repository_support import RepositoryServerMixin
from tests.support.db import insert_rows_async
from tests.support.server import DROP

JS_DIR = os.path.join(os.path.dirname(__file__), "js")
CLIENT_MODULES = os.path.join(os.path.dirname(__file__), "..", "js", "node_modules",
                              "socket.io-client")


class CrowdMixin(RepositoryServerMixin):
    crowd = 1000
    first_id = 10_000
    #: crowd.js disconnects everyone before it exits; the chatroom_users count below must not race
    #: the end-to-end tests' short grace (a loaded machine reads it after the grace has moved rows).
    grace = 120.0

    async def _php_for_crowd(self) -> None:
        """PHP's Connect + EnterPrivateRoom for every user, 50 requests at a time."""
        ids = list(range(self.first_id, self.first_id + self.crowd))
        now = int(time.time())
        await insert_rows_async(self.databases["onscreen"], "chatroom_users", [
            {"room_id": 1, "user_id": uid,
             "userdata": json.dumps({"login": f"user{uid}", "id": uid}, separators=(",", ":")),
             "connected": now} for uid in ids])
        for action in ("Connect", "EnterPrivateRoom"):
            for start in range(0, len(ids), 50):
                responses = await defer.gatherResults([
                    defer.ensureDeferred(self.php(action, 1, uid))
                    for uid in ids[start:start + 50]])
                for response in responses:
                    self.assertEqual(response.code, 200)

    async def test_crowd_enters_one_room_within_seconds(self) -> None:
        """1,000 socket.io-client browsers are welcomed, messaged and listed within seconds."""
        if shutil.which("node") is None or not os.path.isdir(CLIENT_MODULES):
            raise unittest.SkipTest("node and tests/js/node_modules/socket.io-client are needed (apt-get install nodejs npm; scripts/test then runs npm ci in tests/js)")
        await self.start()
        await self._php_for_crowd()
        started = time.monotonic()
        out, err, code = await utils.getProcessOutputAndValue(
            shutil.which("node"),
            [os.path.join(JS_DIR, "crowd.js"), self.server.base_url, "/onscreen",
             str(self.first_id), str(self.crowd), "1"],
            env=dict(os.environ))
        elapsed = time.monotonic() - started
        self.assertEqual(code, 0, (out, err))
        result = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(result["welcomed"], self.crowd)
        self.assertEqual(result["entered"], self.crowd)
        self.assertEqual(result["received"], self.crowd)
        self.assertEqual(result["complete_userlists"], self.crowd, result)
        self.assertEqual(result["message"]["content"], "crowd hello")
        self.assertEqual(result["message"]["from"]["id"], self.first_id)
        # O(n) userlists, not the Node server's n²/2 = 500,000.
        self.assertLess(result["userlists"], 20 * self.crowd)
        self.assertLess(result["joined_ms"], 30_000, result)
        print(f"\n  {self.crowd} users ({self.database_kind}): joined in {result['joined_ms']} ms,"
              f" message to all in {result['delivered_ms']} ms, {result['userlists']} userlist"
              f" packets, node run {elapsed:.1f} s")
        users = await self.rows("SELECT COUNT(*) AS n FROM chatroom_users")
        self.assertEqual(int(users[0]["n"]), self.crowd)


class CrowdMariaDBTests(CrowdMixin, unittest.TestCase):
    database_kind = "mysql"
    timeout = 240


class CrowdSQLiteTests(CrowdMixin, unittest.TestCase):
    database_kind = "sqlite"
    timeout = 240


class BrowserFlowMixin(RepositoryServerMixin):
    """The §10.2 flow with the npm socket.io-client, the very library ILIAS's page uses."""

    #: ``flow.js``'s extra arguments: the Cookie headers of alice and bob (none: trust mode).
    cookies: tuple = ()

    async def sessions(self) -> None:
        """What the flow's users need besides PHP's calls (the ILIAS sessions, in a subclass)."""

    async def test_socket_io_client_sees_the_ilias_10_frames(self) -> None:
        """Event order, payload fields and roomId types match the ILIAS 10 capture."""
        if shutil.which("node") is None or not os.path.isdir(CLIENT_MODULES):
            raise unittest.SkipTest("node and tests/js/node_modules/socket.io-client are needed (apt-get install nodejs npm; scripts/test then runs npm ci in tests/js)")
        await self.start()
        await self.sessions()
        now = int(time.time())
        for uid, login in ((6, "alice"), (7, "bob")):
            self.assertEqual((await self.php("Connect", 1, uid)).json(), {"status": 200})
            await insert_rows_async(self.databases["onscreen"], "chatroom_users", [{
                "room_id": 1, "user_id": uid, "connected": now,
                "userdata": json.dumps({"login": login, "id": uid}, separators=(",", ":"))}])
            self.assertEqual((await self.php("EnterPrivateRoom", 1, uid)).json(),
                             {"success": True})
        out, err, code = await utils.getProcessOutputAndValue(
            shutil.which("node"),
            [os.path.join(JS_DIR, "flow.js"), self.server.base_url, "/onscreen", "1",
             *self.cookies],
            env=dict(os.environ))
        self.assertEqual(code, 0, (out, err))
        seen = json.loads(out.decode().strip().splitlines()[-1])

        def names(frames: list) -> list:
            return [f[0] if f[0] != "notice" else "notice:" + f[1]["content"] for f in frames]

        bob, alice = seen["bob"], seen["alice"]
        self.assertEqual(names(alice), [
            "loggedIn", "private_room_entered", "userlist", "notice:welcome_to_chat",
            "message", "message"])
        self.assertEqual(names(bob), [
            "loggedIn", "private_room_entered", "userlist", "notice:welcome_to_chat",
            "userlist", "notice:connect", "message", "userStartedTyping", "userStoppedTyping",
            "message", "userlist", "notice:disconnected"])
        self.assertEqual(bob[0], ["loggedIn"])
        alice_user = {"id": 6, "username": "alice", "profile_picture_visible": True}
        bob_user = {"id": 7, "username": "bob", "profile_picture_visible": False}
        self.assertEqual(alice[2][1]["users"], {"6": alice_user, "7": bob_user})
        self.assertEqual(bob[4][1], alice[2][1])
        self.assertEqual(bob[5][1]["data"], {"id": 6, "username": "alice", "title": "Main"})
        hello = bob[6][1]
        self.assertEqual(hello, {"type": "message", "timestamp": hello["timestamp"],
                                 "content": "hello", "roomId": 1, "from": alice_user,
                                 "format": {}})
        self.assertEqual(list(hello), ["type", "timestamp", "content", "roomId", "from", "format"])
        self.assertEqual(alice[4][1], hello)
        self.assertEqual(bob[7][1]["subscriber"], '{"id":6,"username":"alice"}')
        self.assertEqual(bob[8][1]["type"], "user_stopped_typing")
        self.assertEqual(bob[9][1]["target"], {"username": "bob", "id": 7, "public": 0})
        self.assertEqual(bob[10][1]["roomId"], "1")
        self.assertEqual(bob[10][1]["users"], {"7": bob_user})
        self.assertEqual(bob[11][1], {"type": "notice", "timestamp": bob[11][1]["timestamp"],
                                      "content": "disconnected", "roomId": "1",
                                      "data": {"username": "alice"}})


class BrowserFlowMariaDBTests(BrowserFlowMixin, unittest.TestCase):
    database_kind = "mysql"


class BrowserFlowSQLiteTests(BrowserFlowMixin, unittest.TestCase):
    database_kind = "sqlite"


class BrowserFlowSessionTests(BrowserFlowMixin, unittest.TestCase):
    """The same frames with the default identity mode: each browser carries its ILIAS session."""

    database_kind = "mysql"
    client_settings = {"identity": DROP}
    cookies = ("PHPSESSID=alice0123456789abcdefghij; ilClientId=onscreen",
               "ilClientId=onscreen; PHPSESSID=bob0123456789abcdefghijkl")

    async def sessions(self) -> None:
        now = int(time.time())
        await insert_rows_async(self.databases["onscreen"], "usr_session", [
            {"session_id": "alice0123456789abcdefghij", "user_id": 6, "expires": now + 600},
            {"session_id": "bob0123456789abcdefghijkl", "user_id": 7, "expires": now + 600},
        ])
