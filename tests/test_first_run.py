"""
A first run as the README tells it: ``scripts/run`` on the sample configs, and the start-up lines
of ``twistd -n ilchat`` (the sample configs, and an ILIAS config on MariaDB) naming each listener
and database once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from typing import Any, Dict, List

from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.db import make_mariadb_database_async
from tests.support.http import http_request
from tests.support.server import write_configs
from tests.test_plugin import ROOT, TWISTD, _env, _free_port


def sample_configs(folder: str, **extra: Any) -> Dict[str, int]:
    """Copy etc/ to ``folder``/etc with free ports (and ``extra`` server.cfg keys); the ports."""
    shutil.copytree(os.path.join(ROOT, "etc"), os.path.join(folder, "etc"))
    path = os.path.join(folder, "etc", "server.cfg")
    with open(path, encoding="utf-8") as f:
        server = json.load(f)
    ports = {"web": _free_port(), "irc": _free_port(), "metrics": _free_port()}
    server["port"] = ports["web"]
    server["irc"]["port"] = ports["irc"]
    server["metrics"] = {"port": ports["metrics"]}
    server.update(extra)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(server, f)
    return ports


class StartupLinesTests(TestCase):
    timeout = 60

    async def run_until_ready(self, folder: str, args: List[str], port: int, name: str) -> str:
        """Start twistd, wait for the Heartbeat, stop it; what it wrote to stdout before the stop."""
        process = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "ilchat", *args], cwd=folder, env=_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.addCleanup(lambda: process.poll() is None and process.kill())
        self.addCleanup(process.stdout.close)
        for _ in range(200):
            try:
                if (await http_request(f"http://127.0.0.1:{port}/backend/Heartbeat/{name}")).code == 200:
                    break
            except Exception:
                await deferLater(reactor, 0.1, lambda: None)
        process.send_signal(signal.SIGTERM)
        output = (await threads.deferToThread(process.communicate, timeout=30))[0].decode()
        self.assertEqual(process.returncode, 0, output)
        return output.split("Received signal")[0]

    def assert_once(self, text: str, needle: str) -> None:
        self.assertEqual(text.count(needle), 1, f"{needle!r} in:\n{text}")

    async def test_sample_configs_name_each_listener_once(self) -> None:
        """etc/server.cfg + etc/client.cfg: web, IRC, metrics and the SQLite file, once each."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ports = sample_configs(folder)
        startup = await self.run_until_ready(
            folder, ["--server-cfg", "etc/server.cfg", "--client-cfg", "etc/client.cfg"], ports["web"], "ilchat"
        )
        for port in ports.values():
            self.assert_once(startup, f":{port}")
        self.assert_once(startup, os.path.join(folder, "data", "ilchat.sqlite3"))
        self.assertIn(f"The Server is Ready to use! Listening on: http://127.0.0.1:{ports['web']}", startup)
        self.assertIn(f"IRC listening on 127.0.0.1:{ports['irc']}", startup)
        self.assertIn(f"Metrics listening on: http://127.0.0.1:{ports['metrics']}/metrics", startup)
        self.assertNotIn("starting on", startup)
        # The log file has the same lines, also once each.
        with open(os.path.join(folder, "data", "chat.log"), encoding="utf-8") as f:
            log = f.read().split("Received signal")[0]
        for port in ports.values():
            self.assert_once(log, f":{port}")

    async def test_ilias_config_on_mariadb_names_the_database_once(self) -> None:
        """An ILIAS client on MariaDB with IRC: one line per listener, the database named once."""
        database = await make_mariadb_database_async(self)
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        web, irc_port = _free_port(), _free_port()
        server_cfg, clients = write_configs(
            folder, server={"port": web, "log_level": "info", "irc": {"address": "127.0.0.1", "port": irc_port}},
            database=database,
        )
        startup = await self.run_until_ready(folder, [server_cfg, *clients], web, "onscreen")
        self.assert_once(startup, f":{web}")
        self.assert_once(startup, f":{irc_port}")
        self.assert_once(startup, repr(database.name))
        self.assertIn(f"Database for onscreen connected! (mysql {database.name!r} on 127.0.0.1:3306)", startup)
        self.assertNotIn("starting on", startup)


class ScriptsRunTests(TestCase):
    """``scripts/run`` on a copy of the checkout (sharing this .venv, so no first-run install)."""

    timeout = 60

    async def test_scripts_run_prints_the_page_address_and_stops_on_ctrl_c(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        ports = sample_configs(folder)
        shutil.copytree(os.path.join(ROOT, "scripts"), os.path.join(folder, "scripts"))
        for name in ("setup.cfg", "pyproject.toml"):
            shutil.copy2(os.path.join(ROOT, name), folder)
        # A .venv that forwards to this one and is marked installed, so that scripts/run neither
        # creates a venv nor reinstalls (which would point this checkout's .venv at the copy).
        bin_folder = os.path.join(folder, ".venv", "bin")
        os.makedirs(bin_folder)
        for name in ("python", "twistd"):
            with open(os.path.join(bin_folder, name), "w") as f:
                f.write(f'#!/bin/sh\nexec {os.path.join(ROOT, ".venv", "bin", name)} "$@"\n')
            os.chmod(os.path.join(bin_folder, name), 0o755)
        open(os.path.join(folder, ".venv", ".ilchat-installed"), "w").close()
        process = subprocess.Popen(
            [os.path.join(folder, "scripts", "run")], cwd=folder, env=_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        self.addCleanup(lambda: process.poll() is None and os.killpg(process.pid, signal.SIGKILL))
        self.addCleanup(process.stderr.close)

        def read_until_ready() -> str:
            seen = ""
            deadline = time.monotonic() + 50
            while time.monotonic() < deadline:
                line = process.stderr.readline().decode()
                if not line:
                    break
                seen += line
                if "ilchat is ready" in line:
                    break
            return seen

        seen = await threads.deferToThread(read_until_ready)
        self.assertIn("[run] starting ilchat with etc/server.cfg and etc/client.cfg", seen)
        self.assertRegex(
            seen,
            re.escape(f"[run] ilchat is ready: open http://127.0.0.1:{ports['web']}/ in a browser. "
                      f"IRC: 127.0.0.1:{ports['irc']}. Ctrl-C stops it."),
        )
        self.assertNotIn("setting up .venv", seen)  # the shared .venv is set up already
        self.assertEqual((await http_request(f"http://127.0.0.1:{ports['web']}/")).code, 200)
        # Ctrl-C in a terminal: SIGINT to the whole process group.
        os.killpg(process.pid, signal.SIGINT)
        code = await threads.deferToThread(process.wait, 20)
        self.assertEqual(code, 0)
