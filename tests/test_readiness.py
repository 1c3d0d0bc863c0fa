"""
``/ready``: 503 while a client's database does not answer, 200 otherwise; ``/backend/Heartbeat``
stays 200 throughout (ILIAS must not hide the chat for a database restart). The database is a
private ``mariadbd`` that the tests stop, freeze and start again.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from ilchat.readiness import PROBE_TIMEOUT
from tests.support.http import http_request
from tests.support.private_mariadb import PrivateMariaDB, mariadbd_available
from tests.support.server import start_server


async def wait_for_code(url: str, code: int, seconds: float = 20.0) -> Any:
    """Ask ``url`` until it answers ``code``; returns that response."""
    deadline = time.monotonic() + seconds
    while True:
        response = await http_request(url)
        if response.code == code or time.monotonic() > deadline:
            return response
        await deferLater(reactor, 0.2, lambda: None)


class ReadinessSQLiteTests(TestCase):
    async def test_ready_with_a_working_database_and_unknown_client(self) -> None:
        """200 naming every client, one client by name, 404 for a name not configured."""
        server = await start_server(self, clients=[{"name": "a"}, {"name": "b"}])
        response = await http_request(server.url("/ready"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json(), {"status": 200, "clients": {"a": "ok", "b": "ok"}})
        self.assertEqual(response.header("Content-Type"), "application/json; charset=utf-8")
        response = await http_request(server.url("/ready/b"))
        self.assertEqual(response.json(), {"status": 200, "clients": {"b": "ok"}})
        self.assertEqual((await http_request(server.url("/ready/nope"))).code, 404)

    async def test_ready_under_the_sub_directory_too(self) -> None:
        server = await start_server(self, server={"sub_directory": "/chat"})
        self.assertEqual((await http_request(server.url("/chat/ready"))).code, 200)


class ReadinessMariaDBTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        reason = mariadbd_available()
        if reason is not None:
            self.skipTest(reason)

    async def start(self) -> Any:
        self.mariadb = await PrivateMariaDB.start_for(self)
        self.server = await start_server(
            self,
            server={"metrics": {"address": "127.0.0.1", "port": 0}},
            database=self.mariadb.database_config,
        )
        return self.server

    def flush_reconnect_errors(self) -> None:
        """
        adbapi logs its failed rollback on a connection the server dropped (and, on Twisted's
        reconnect path, "wrong connection for thread"); those are the pool's, not readiness's.
        Anything else logged is still an error of the test.
        """
        import MySQLdb

        for failure in self.flushLoggedErrors():
            if not (failure.check(MySQLdb.OperationalError) or "wrong connection for thread" in str(failure.value)):
                raise failure.value

    async def heartbeat(self) -> int:
        return (await http_request(self.server.url("/backend/Heartbeat/onscreen"))).code

    async def database_up(self) -> str:
        port = self.server.service.metrics_port
        text = (await http_request(f"http://127.0.0.1:{port}/metrics")).body.decode()
        return [line for line in text.splitlines() if line.startswith("ilchat_database_up{")][0]

    async def test_stopped_database_is_503_until_it_is_back(self) -> None:
        """Stop mariadbd: /ready 503 with the reason, Heartbeat still 200; start it: 200 again."""
        server = await self.start()
        self.assertEqual((await http_request(server.url("/ready"))).code, 200)
        await self.mariadb.stop()
        response = await wait_for_code(server.url("/ready"), 503)
        self.assertEqual(response.code, 503)
        body = response.json()
        self.assertEqual(body["status"], 503)
        self.assertIn("OperationalError", body["clients"]["onscreen"])
        self.assertEqual(await self.heartbeat(), 200)
        self.assertTrue((await self.database_up()).endswith(" 0.0"))
        # The readiness check is also on the metrics listener.
        port = server.service.metrics_port
        self.assertEqual((await http_request(f"http://127.0.0.1:{port}/ready")).code, 503)

        await self.mariadb.start()
        response = await wait_for_code(server.url("/ready"), 200)
        self.assertEqual(response.json(), {"status": 200, "clients": {"onscreen": "ok"}})
        self.flush_reconnect_errors()
        self.assertTrue((await self.database_up()).endswith(" 1.0"))
        self.assertIn("does not answer", server.log_text())
        self.assertIn("answers again", server.log_text())

    async def test_frozen_database_is_503_within_the_probe_timeout(self) -> None:
        """SIGSTOP mariadbd: the probe hangs, and /ready says 503 after PROBE_TIMEOUT, not never."""
        server = await self.start()
        self.assertEqual((await http_request(server.url("/ready"))).code, 200)
        # Past the cached answer, so that the next request probes the frozen server.
        await deferLater(reactor, 1.1, lambda: None)
        self.mariadb.freeze()
        self.addCleanup(self.mariadb.thaw)
        started = time.monotonic()
        response = await http_request(server.url("/ready"))
        waited = time.monotonic() - started
        self.assertEqual(response.code, 503)
        self.assertIn("does not answer within", response.json()["clients"]["onscreen"])
        self.assertLess(waited, PROBE_TIMEOUT + 1.5)
        # While the probe still hangs, a request answers at once, and nothing piles up.
        started = time.monotonic()
        self.assertEqual((await http_request(server.url("/ready"))).code, 503)
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(await self.heartbeat(), 200)
        self.mariadb.thaw()
        response = await wait_for_code(server.url("/ready"), 200)
        self.assertEqual(response.code, 200)
