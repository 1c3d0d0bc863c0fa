"""The benchmark's own logic (bench/lib): the process it measures, and the re-run of a
generator-bound fan-out (issue 18). The benchmark itself is run by hand (bench/README.rst)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.support.private_mariadb import PrivateMariaDB, mariadbd_available

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_LIB = os.path.join(ROOT, "bench", "lib")
NODE = shutil.which("node")
SHARED_MARIADB_PORT = 3306


def run_node(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([NODE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


class BenchLogicTests(TestCase):
    def setUp(self) -> None:
        if NODE is None:
            self.fail("node not found: the benchmark needs Node.js")

    async def test_adaptation_rule(self) -> None:
        """bench/lib/adapt.test.js (node:test): the rate cap a generator-bound pair is re-run at."""
        result = await threads.deferToThread(run_node, "--test", os.path.join(BENCH_LIB, "adapt.test.js"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("# fail 0", result.stdout)
        self.assertIn("# pass 6", result.stdout)

    async def test_a_port_in_use_is_refused(self) -> None:
        """bench/lib/procs.test.js: a server port something listens on already stops the run."""
        result = await threads.deferToThread(run_node, "--test", os.path.join(BENCH_LIB, "procs.test.js"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("# fail 0", result.stdout)
        self.assertIn("# pass 1", result.stdout)

    async def test_find_pid_picks_the_server_on_the_port(self) -> None:
        """With two mariadbd running, each port names its own (the first in /proc is not ours)."""
        why = mariadbd_available()
        if why:
            self.fail(why)
        private = await PrivateMariaDB.start_for(self)
        script = (
            "const { findPid } = require('./bench/lib/procs');"
            f"console.log(JSON.stringify([findPid('mariadbd', {private.port}),"
            f" findPid('mariadbd', {SHARED_MARIADB_PORT}), findPid('mariadbd', 1)]))"
        )
        result = await threads.deferToThread(run_node, "-e", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        on_private, on_shared, on_nothing = json.loads(result.stdout)
        self.assertEqual(on_private, private.process.pid)
        self.assertIsNotNone(on_shared)
        self.assertNotEqual(on_shared, private.process.pid)
        with open(f"/proc/{on_shared}/comm", encoding="ascii") as comm:
            self.assertEqual(comm.read().strip(), "mariadbd")
        self.assertIsNone(on_nothing)
