"""
Nothing delivered is lost: a real ``twistd ilchat`` is killed (SIGKILL) while its database is
frozen and then stopped, and after both come back every delivered room message is in
``chatroom_history`` exactly once, in order. The database is a private ``mariadbd``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.ilias.repository_support import Browser, wait_until
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.http import http_request
from tests.support.private_mariadb import start_private_mariadb
from tests.support.server import DEFAULT_CLIENT, write_configs
from tests.test_plugin import TWISTD, _env, _free_port


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

    async def test_sigkill_during_an_outage_loses_no_delivered_message(self) -> None:
        self.mariadb = await start_private_mariadb(self)
        self.database = await self.mariadb.create_database()
        await insert_rows_async(self.database, "chatroom_settings", [{"room_id": 1}])
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server_cfg, (self.client_cfg,) = write_configs(
            self.folder, server={"port": self.port, "log_level": "info", "database_timeout": 2},
            database=self.database,
        )
        process = await self.start_twistd()
        alice = await self.enter(6, "alice")
        bob = await self.enter(7, "bob")

        await self.say(alice, bob, [f"before {n}" for n in range(10)])
        self.mariadb.freeze()
        await self.say(alice, bob, [f"frozen {n}" for n in range(20)])
        await deferLater(reactor, 3, lambda: None)  # the writes time out and queue
        await self.say(alice, bob, [f"frozen late {n}" for n in range(5)])
        await self.mariadb.stop()
        await self.say(alice, bob, [f"stopped {n}" for n in range(20)])
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

        delivered = [p["content"] for p in bob.payloads("message")]
        self.assertEqual(len(delivered), 55)
        journal = os.path.join(self.folder, "ilchat-onscreen-history.journal")
        self.assertGreater(os.path.getsize(journal), 0)

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
        log = self.read("chat.log")
        self.assertIn("found in the journal", log)
        self.assertNotIn("Rollback failed", self.read("chatError.log"))
