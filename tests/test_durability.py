"""
Nothing delivered is lost: a real ``twistd ilchat`` is killed (SIGKILL) while its database is
frozen and then stopped, and after both come back every delivered room message is in
``chatroom_history`` and every delivered On-Screen Chat message in ``osc_messages``, exactly once,
in order. The database is a private ``mariadbd``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from tests.ilias.repository_support import Browser, wait_until
from tests.ilias.test_osc import Tab
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.http import http_request
from tests.support.private_mariadb import PrivateMariaDB, mariadbd_available
from tests.support.server import DEFAULT_CLIENT, free_port, write_configs
from tests.test_plugin import TWISTD, _env


async def wait_until_stored(database: Any, count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows = await fetch_rows_async(database, "SELECT COUNT(*) AS n FROM chatroom_history")
        if rows[0]["n"] >= count:
            return
        await deferLater(reactor, 0.2, lambda: None)
    raise AssertionError(f"fewer than {count} rows stored after {seconds} s")


class _Address:
    """What L{Browser} needs of a server: where it is."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"


class CrashDuringOutageTests(TestCase):
    timeout = 180

    async def start_twistd(self) -> subprocess.Popen:
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "ilchat", "--server-cfg", self.server_cfg,
             "--client-cfg", self.client_cfg],
            cwd=self.folder, env=_env(), stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.folder, "stdout.txt"), "ab"), stderr=subprocess.STDOUT,
        )

        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait()

        self.addCleanup(kill)
        for _ in range(300):
            if process.poll() is not None:
                self.fail("twistd exited early: " + self.read("stdout.txt"))
            try:
                if (await http_request(self.url + "/backend/Heartbeat/onscreen")).code == 200:
                    return process
            except Exception:
                pass
            await deferLater(reactor, 0.1, lambda: None)
        self.fail("twistd did not start listening")

    def read(self, name: str) -> str:
        try:
            with open(os.path.join(self.folder, name), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    async def php(self, action: str, *segments: Any) -> Any:
        auth = DEFAULT_CLIENT["auth"]
        token = base64.b64encode(f"{auth['key']}:{auth['secret']}".encode()).decode()
        path = "/".join(["", "backend", action, "onscreen", *(str(s) for s in segments)])
        response = await http_request(self.url + path, headers={"Authorization": f"Basic {token}"})
        return response.json()

    async def enter(self, user_id: int, login: str) -> Browser:
        self.assertEqual(await self.php("Connect", 1, user_id), {"status": 200})
        await insert_rows_async(self.database, "chatroom_users", [{
            "room_id": 1, "user_id": user_id, "connected": int(time.time()),
            "userdata": json.dumps({"login": login, "id": user_id}, separators=(",", ":")),
        }])
        self.assertEqual(await self.php("EnterPrivateRoom", 1, user_id), {"success": True})
        browser = Browser(_Address(self.port), "/onscreen")
        self.addCleanup(browser.close)
        await browser.connect()
        await browser.emit("login", login, user_id, False)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        await browser.wait_for("private_room_entered")
        return browser

    async def say(self, alice: Browser, bob: Browser, texts: List[str]) -> None:
        """Alice posts; each message counts as delivered once Bob has it."""
        for text in texts:
            await alice.emit("message", {"content": text, "format": {}}, 1)
        await bob.wait_for("message", texts[-1], timeout=20)

    async def osc_tab(self, user_id: int, name: str) -> Tab:
        tab = Tab(_Address(self.port))
        self.addCleanup(tab.close)
        await tab.connect()
        await tab.emit("login", user_id, name)
        await tab.wait_for("login")
        return tab

    async def osc_say(self, alice: Tab, bob: Tab, conversation: str, texts: List[str]) -> None:
        for text in texts:
            self.assertIsNone(await alice.call("message", conversation, 6, text))
        await bob.wait_for("message", lambda p: p.get("message") == texts[-1], timeout=60)

    async def test_sigkill_during_an_outage_loses_no_delivered_message(self) -> None:
        if mariadbd_available() is not None:
            raise SkipTest(mariadbd_available())
        self.mariadb = await PrivateMariaDB.start_for(self)
        self.database = self.mariadb.database_config
        await insert_rows_async(self.database, "chatroom_settings", [{"room_id": 1}])
        await insert_rows_async(self.database, "usr_pref", [
            {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in (6, 7)])
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_cfg, (self.client_cfg,) = write_configs(
            self.folder, server={"port": self.port, "log_level": "info"},  # database_timeout 30 s
            database=self.database,
        )
        process = await self.start_twistd()
        alice = await self.enter(6, "alice")
        bob = await self.enter(7, "bob")
        alice_osc = await self.osc_tab(6, "alice")
        bob_osc = await self.osc_tab(7, "bob")
        await alice_osc.emit("conversation", [{"id": 6, "name": "alice"}, {"id": 7, "name": "bob"}])
        conversation = (await alice_osc.wait_for("conversation-init"))["id"]

        await self.say(alice, bob, [f"before {n}" for n in range(10)])
        await self.osc_say(alice_osc, bob_osc, conversation, ["osc before"])
        # A database restart while messages flow: the process reconnects by itself, cleanly.
        await self.mariadb.stop()
        await self.say(alice, bob, [f"restarting {n}" for n in range(5)])
        await self.mariadb.start()
        await self.say(alice, bob, [f"restarted {n}" for n in range(5)])
        await wait_until_stored(self.database, 20, 30)
        self.mariadb.freeze()
        await self.say(alice, bob, [f"frozen {n}" for n in range(20)])
        started = time.monotonic()
        await self.osc_say(alice_osc, bob_osc, conversation, [f"osc frozen {n}" for n in range(3)])
        # A frozen database holds an OSC message up for a few seconds at most, not for the 30 s
        # query timeout: the unread counts and the write are waited for 2 s each, then skipped.
        self.assertLess(time.monotonic() - started, 15)
        await self.say(alice, bob, [f"frozen late {n}" for n in range(5)])
        await self.mariadb.stop()
        await self.say(alice, bob, [f"stopped {n}" for n in range(20)])
        await self.osc_say(alice_osc, bob_osc, conversation, [f"osc stopped {n}" for n in range(3)])
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

        delivered = [p["content"] for p in bob.payloads("message")]
        self.assertEqual(len(delivered), 65)
        delivered_osc = [p["id"] for p in bob_osc.payloads("message")]
        self.assertEqual(len(delivered_osc), 7)
        journal = os.path.join(self.folder, "ilchat-onscreen-history.journal")
        self.assertGreater(os.path.getsize(journal), 0)
        osc_journal = os.path.join(self.folder, "ilchat-onscreen-osc.journal")
        self.assertGreater(os.path.getsize(osc_journal), 0)

        await self.mariadb.start()
        await self.start_twistd()

        async def stored() -> List[str]:
            rows = await fetch_rows_async(self.database, "SELECT message FROM chatroom_history ORDER BY hist_id")
            return [json.loads(r["message"])["content"] for r in rows]

        deadline = time.monotonic() + 30
        contents = await stored()
        while len(contents) < len(delivered) and time.monotonic() < deadline:
            await deferLater(reactor, 0.2, lambda: None)
            contents = await stored()
        self.assertEqual(contents, delivered)
        await deferLater(reactor, 0.5, lambda: None)
        self.assertEqual(await stored(), delivered)  # and nothing comes twice
        await wait_until(lambda: os.path.getsize(journal) == 0, 10, "the journal to be emptied")
        await wait_until(lambda: os.path.getsize(osc_journal) == 0, 10, "the OSC journal to be emptied")
        osc_rows = await fetch_rows_async(self.database, "SELECT id FROM osc_messages ORDER BY timestamp")
        self.assertEqual([r["id"] for r in osc_rows], delivered_osc)
        log = self.read("chat.log")
        self.assertIn("chat history rows of onscreen found in the journal", log)
        self.assertIn("On-Screen Chat messages of onscreen found in the journal", log)
        # The outage is warnings and "back" lines in the log, nothing in the error log.
        self.assertEqual(self.read("chatError.log"), "")
