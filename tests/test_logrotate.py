"""
``etc/logrotate.conf`` as shipped, run by the real ``logrotate`` against a real ``twistd ilchat``:
the files are rotated, the postrotate script signals the process (SIGUSR1), and the lines written
afterwards land in new files.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.http import http_request
from tests.support.server import write_configs
from tests.test_plugin import ROOT, TWISTD, _env, _free_port

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class LogrotateTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        if not os.access(LOGROTATE, os.X_OK):
            self.skipTest("logrotate not found: apt-get install logrotate (.ci/run installs it)")

    async def start_twistd(self, folder: str) -> subprocess.Popen:
        port = _free_port()
        logs = os.path.join(folder, "logs")
        server_cfg, clients = write_configs(
            folder,
            server={"port": port, "log_level": "debug", "log": os.path.join(logs, "chat.log"),
                    "error_log": os.path.join(logs, "chatError.log")},
        )
        process = subprocess.Popen(
            [TWISTD, "-n", f"--pidfile={os.path.join(folder, 'twistd.pid')}", "ilchat",
             "--server-cfg", server_cfg, "--client-cfg", clients[0]],
            cwd=folder, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def stop() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)

        self.addCleanup(stop)
        self.url = f"http://127.0.0.1:{port}/backend/Heartbeat/onscreen"
        for _ in range(200):
            try:
                if (await http_request(self.url)).code == 200:
                    return process
            except Exception:
                pass
            await deferLater(reactor, 0.1, lambda: None)
        self.fail("twistd did not start listening")

    def shipped_config(self, folder: str) -> str:
        """etc/logrotate.conf with the log folder and the pid file of this test."""
        text = _read(os.path.join(ROOT, "etc", "logrotate.conf"))
        self.assertIn("/var/log/ilchat/", text)
        self.assertIn("/run/ilchat/twistd.pid", text)
        text = text.replace("/var/log/ilchat/", os.path.join(folder, "logs") + "/")
        text = text.replace("/run/ilchat/twistd.pid", os.path.join(folder, "twistd.pid"))
        path = os.path.join(folder, "logrotate.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    async def test_shipped_config_rotates_and_ilchat_writes_to_new_files(self) -> None:
        """logrotate --force: chat.log.1 keeps the old lines, a new chat.log gets the new ones."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(folder, "logs"))
        process = await self.start_twistd(folder)
        log = os.path.join(folder, "logs", "chat.log")
        config = self.shipped_config(folder)
        result = await threads.deferToThread(
            subprocess.run,
            [LOGROTATE, "--force", "--state", os.path.join(folder, "logrotate.state"), config],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("Starting Server!", _read(log + ".1"))
        # notifempty: the empty error log stays as it is.
        self.assertFalse(os.path.exists(os.path.join(folder, "logs", "chatError.log.1")))
        # The postrotate script's SIGUSR1 makes ilchat open new files (it did not stop it).
        for _ in range(100):
            await http_request(self.url)
            if os.path.exists(log) and "GET /backend/Heartbeat/onscreen" in _read(log):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertIn("GET /backend/Heartbeat/onscreen 200", _read(log))
        self.assertNotIn("Starting Server!", _read(log))
        self.assertTrue(os.path.exists(os.path.join(folder, "logs", "chatError.log")))
        self.assertIsNone(process.poll(), "the signal must not stop the server")
        # A second rotation: delaycompress compresses the first one now.
        result = await threads.deferToThread(
            subprocess.run,
            [LOGROTATE, "--force", "--state", os.path.join(folder, "logrotate.state"), config],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(os.path.exists(log + ".2.gz"))
        self.assertIn("GET /backend/Heartbeat/onscreen 200", _read(log + ".1"))
