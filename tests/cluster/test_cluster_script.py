"""
Issue 14, "Operations": README.rst's one command for two processes on one machine,
``./scripts/cluster 2``, run as the README says (Redis on 127.0.0.1:6379, MariaDB on
127.0.0.1:3306 as root): both processes answer on 127.0.0.1:8881 and :8882, two standalone pages
on them chat and share one set of names, and Ctrl-C (SIGINT to the command's process group, as
a terminal sends it) stops both.

The command's ports, Redis prefix (``ilchat-cluster:``) and folder (``data/cluster/``) are
fixed, so the test checks first that nobody else uses them; the database is the test's own
(``ILCHAT_DB_NAME``), dropped afterwards, with the prefix's keys.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from types import SimpleNamespace

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.db import mariadb_admin_connection
from tests.support.http import http_request
from tests.support.private_redis import SHARED_REDIS_PORT, redis_command

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORTS = (8881, 8882, 6667, 6668)
PREFIX = "ilchat-cluster:"


def _in_use(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _drop_database(name: str) -> None:
    admin = mariadb_admin_connection()
    try:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        admin.close()


def _delete_prefix_keys() -> None:
    keys = redis_command(SHARED_REDIS_PORT, "KEYS", PREFIX + "*").split()
    if keys:
        redis_command(SHARED_REDIS_PORT, "DEL", *keys)


class ClusterScriptTests(TestCase):
    timeout = 300

    async def page(self, port: int, name: str) -> Browser:
        page = Browser(SimpleNamespace(base_url=f"http://127.0.0.1:{port}"), "/ilchat")  # type: ignore[arg-type]
        self.addCleanup(page.close)
        await page.connect()
        await page.emit("login", name)
        await wait_until(lambda: page.received("loggedIn") or page.received("loginFailed"), 30,
                         f"an answer to {name}'s login")
        return page

    async def answers(self, port: int) -> bool:
        try:
            return (await http_request(f"http://127.0.0.1:{port}/backend/Heartbeat/ilchat")).code == 200
        except Exception:
            return False

    async def test_two_processes_from_one_command(self) -> None:
        busy = [port for port in PORTS if _in_use(port)]
        self.assertEqual(busy, [], "scripts/cluster's ports are in use by something else")
        live = await threads.deferToThread(redis_command, SHARED_REDIS_PORT, "KEYS", PREFIX + "instance:*")
        self.assertEqual(live.split(), [], "another scripts/cluster runs on the shared Redis")
        database = f"ilchat_test_script_{uuid.uuid4().hex[:12]}"
        self.addCleanup(threads.deferToThread, _drop_database, database)
        self.addCleanup(threads.deferToThread, _delete_prefix_keys)
        logs = [os.path.join(REPO, "data", "cluster", f"node-{index}", "chat.log") for index in (1, 2)]
        offsets = [os.path.getsize(log) if os.path.exists(log) else 0 for log in logs]
        output_path = os.path.abspath(self.mktemp())
        output = open(output_path, "wb")
        self.addCleanup(output.close)
        env = dict(os.environ, ILCHAT_DB_NAME=database)
        env.pop("PYTHONPATH", None)
        script = subprocess.Popen(["./scripts/cluster", "2"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

        def text() -> str:
            with open(output_path, encoding="utf-8", errors="replace") as f:
                return f.read()

        def kill_all() -> None:
            if script.poll() is None:
                os.killpg(script.pid, signal.SIGKILL)
                script.wait()

        self.addCleanup(kill_all)
        for port in (8881, 8882):
            deadline = 240
            while not await self.answers(port):
                self.assertIsNone(script.poll(), text())
                deadline -= 0.2
                self.assertGreater(deadline, 0, f"nothing answers on {port}:\n{text()}")
                await sleep(0.2)
        self.assertIn("[cluster] 2 processes started", text())
        for index in (1, 2):
            with open(os.path.join(REPO, "data", "cluster", f"node-{index}", "server.cfg")) as f:
                self.assertIn(f'"instance": "node-{index}"', f.read())

        alice, bob = await self.page(8881, "alice"), await self.page(8882, "bob")
        for page in (alice, bob):
            self.assertTrue(page.received("loggedIn"), page.received())
            await page.emit("enterRoom", 1)
            await page.wait_for("private_room_entered", timeout=30)
        await alice.emit("message", {"content": "hello from 8881", "format": {}}, 1)
        await bob.wait_for("message", "hello from 8881", timeout=30)
        await bob.emit("message", {"content": "hello from 8882", "format": {}}, 1)
        await alice.wait_for("message", "hello from 8882", timeout=30)
        twin = await self.page(8882, "Alice")
        self.assertEqual(twin.payloads("loginFailed")[0]["error"], "name_taken")

        os.killpg(script.pid, signal.SIGINT)  # Ctrl-C
        await wait_until(lambda: script.poll() is not None, 60, f"scripts/cluster to stop:\n{text()}")
        for port in (8881, 8882):
            self.assertFalse(_in_use(port), f"something still answers on {port}")
        for log, offset in zip(logs, offsets):  # this run's lines only (the logs are appended to)
            with open(log, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                this_run = f.read()
            self.assertIn("as instance node-", this_run)
            self.assertIn("Server stopped", this_run)
