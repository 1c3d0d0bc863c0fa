"""
A crowd entering one repository-chat room, driven by the real npm socket.io-client 4.8.

The Node server needs about 142 s for 1,000 users (spec §10.6, O(n²) userlists); ilchat coalesces
the room-wide userlist, so the same crowd must be in within seconds.
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

JS_DIR = os.path.join(os.path.dirname(__file__), "js")
CLIENT_MODULES = os.path.join(os.path.dirname(__file__), "..", "js", "node_modules",
                              "socket.io-client")


class CrowdMixin(RepositoryServerMixin):
    crowd = 1000
    first_id = 10_000

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
            raise unittest.SkipTest("node and tests/js/node_modules/socket.io-client are needed")
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
