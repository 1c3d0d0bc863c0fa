"""
File descriptors: the soft limit is raised at start, and running out of them while accepting is
one clear warning per burst, in a real ``twistd ilchat`` whose limits are set low.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys

from twisted.internet import reactor, threads
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ilchat.descriptors import AcceptErrorObserver
from tests.support.http import http_request
from tests.support.server import write_configs
from tests.test_plugin import TWISTD, _env, _free_port


def _limit_files(soft: int, hard: int):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def _heartbeat_answers(url: str, tries: int = 200) -> bool:
    """Whether the Heartbeat answers 200 within C{tries} tenths of a second."""
    for _ in range(tries):
        try:
            if (await http_request(url)).code == 200:
                return True
        except Exception:
            pass
        await deferLater(reactor, 0.1, lambda: None)
    return False


class RaiseLimitTests(SynchronousTestCase):
    def test_soft_limit_is_raised_to_the_hard_one(self) -> None:
        """A process started with soft 256 (hard 4096) runs with 4096 after the call."""
        code = (
            "import resource; from ilchat.descriptors import raise_open_file_limit;"
            "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            preexec_fn=_limit_files(256, 4096),
        ).stdout.strip()
        self.assertEqual(out, "(256, 4096) (4096, 4096)")


class AcceptErrorObserverTests(SynchronousTestCase):
    def test_a_burst_is_one_line_with_its_count(self) -> None:
        """Twisted's lines per refused socket become one warning per interval, with the count."""
        clock, seen = Clock(), []
        observer = AcceptErrorObserver("the web listener", clock, seen.append, interval=10)
        observer({"log_format": "EMFILE encountered; releasing reserved file descriptor."})
        for n in range(5):
            observer({"log_format": "EMFILE recovery: Closed socket from {address}", "address": n})
        observer({"log_format": "Re-reserving EMFILE recovery file descriptor."})
        observer({"log_format": "something else"})
        clock.advance(0)
        self.assertEqual([e["log_format"] for e in seen][0], "something else")
        warnings = [e for e in seen if e["log_format"].startswith("Out of file descriptors")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["refused"], 5)
        observer({"log_format": "Could not accept new connection ({acceptError})",
                  "acceptError": "ENFILE"})
        clock.advance(5)
        self.assertEqual(len([e for e in seen if "refused" in e]), 1)  # within the interval
        clock.advance(6)
        observer({"log_format": "Could not accept new connection ({acceptError})",
                  "acceptError": "ENFILE"})
        clock.advance(0)
        warnings = [e for e in seen if "refused" in e]
        self.assertEqual([(w["error"], w["refused"]) for w in warnings],
                         [("EMFILE", 5), ("ENFILE", 2)])


class OutOfDescriptorsTests(TestCase):
    timeout = 60

    async def test_running_out_is_one_clear_line_and_the_server_recovers(self) -> None:
        """
        ``twistd ilchat`` with 64 descriptors (soft and hard): 100 idle connections exhaust them;
        the log gets one "Out of file descriptors" warning (not a line per socket), and once the
        connections are gone the Heartbeat answers again.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        port = _free_port()
        server_cfg, clients = write_configs(folder, server={"port": port, "log_level": "info"})
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "ilchat", server_cfg, clients[0]],
            cwd=folder, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=_limit_files(64, 64),
        )
        self.addCleanup(lambda: (process.kill(), process.wait()) if process.poll() is None else None)
        url = f"http://127.0.0.1:{port}/backend/Heartbeat/onscreen"
        self.assertTrue(await _heartbeat_answers(url), "twistd did not start listening")
        held = []

        def exhaust() -> None:
            for _ in range(100):
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                held.append(conn)

        await threads.deferToThread(exhaust)
        log_path = os.path.join(folder, "chat.log")
        for _ in range(100):
            await deferLater(reactor, 0.1, lambda: None)
            with open(log_path) as f:
                log = f.read()
            if "Out of file descriptors" in log:
                break
        self.assertIn("Open file limit: 64", log)
        self.assertEqual(log.count("Out of file descriptors on the web listener (EMFILE, open file"
                                   " limit 64)"), 1, log[-3000:])
        self.assertNotIn("EMFILE recovery", log)
        for conn in held:
            conn.close()
        self.assertTrue(await _heartbeat_answers(url), "the server did not recover")
        process.terminate()
        await threads.deferToThread(process.wait, 15)
