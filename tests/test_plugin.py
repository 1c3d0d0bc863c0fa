"""
``twistd ilchat`` as an operator runs it: real processes, real signals, real HTTP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, Optional, Sequence

from twisted.internet import defer, reactor, threads
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support.db import fetch_rows_async, insert_rows_async, make_mariadb_database_async
from tests.support.http import http_request
from tests.support.server import free_port, write_configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")


def _env(**extra: str) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


_free_port = free_port


def run_twistd(args: Sequence[str], cwd: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run twistd to completion (for commands that exit at once: --help, config errors)."""
    return subprocess.run(
        [TWISTD, *args],
        cwd=cwd,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


class CommandLineTests(TestCase):
    """Each test runs ``twistd`` in a subprocess; these are blocking but short, run in a thread."""

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def twistd(self, *args: str) -> "defer.Deferred[subprocess.CompletedProcess]":
        return threads.deferToThread(run_twistd, ["-n", "--pidfile=", *args], self.folder)

    async def assert_config_error(self, args: Sequence[str], expected: str) -> None:
        result = await self.twistd("ilchat", *args)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stderr.strip(), expected)
        self.assertNotIn("Traceback", result.stderr + result.stdout)
        self.assertNotIn("Usage", result.stdout)

    async def test_twistd_help_lists_ilchat(self) -> None:
        """The plugin is found by twistd in this (compat editable) install."""
        result = await threads.deferToThread(run_twistd, ["--help"], self.folder)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"\n\s+ilchat\s+ILIAS")

    async def test_no_arguments_is_required_server_config(self) -> None:
        """No config: the Node server's text on stderr, exit status 1, no usage dump."""
        await self.assert_config_error([], "Required: Server-Config file")

    async def test_only_server_config_is_required_client_config(self) -> None:
        """A server config alone, in either form: "Required: Client-Config file"."""
        server, _ = write_configs(self.folder)
        await self.assert_config_error([server], "Required: Client-Config file")
        await self.assert_config_error(["--server-cfg", server], "Required: Client-Config file")

    async def test_missing_file_is_reported_with_its_path(self) -> None:
        """A missing client config names the path with the ILIAS text."""
        server, _ = write_configs(self.folder)
        missing = os.path.join(self.folder, "nope.cfg")
        await self.assert_config_error([server, missing], f"File does not exist: {missing}")
        await self.assert_config_error(
            ["--server-cfg", server, "--client-cfg", missing], f"File does not exist: {missing}"
        )

    async def test_bad_value_is_one_line_naming_file_and_key(self) -> None:
        """A port out of range: the file, key, value and the allowed range, on one line."""
        server, clients = write_configs(self.folder, server={"port": 99999})
        result = await self.twistd("ilchat", server, *clients)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.strip(),
            f"{server}: port = 99999 is not allowed; expected an integer from 1 to 65535",
        )

    async def test_deeply_nested_config_is_one_line_not_a_traceback(self) -> None:
        """100,000 nested lists used to end in a RecursionError traceback; now one line, status 1."""
        server, clients = write_configs(self.folder)
        with open(server, "w") as f:
            f.write('{"protocol": "http", "irc": ' + "[" * 100_000 + "]" * 100_000 + "}")
        await self.assert_config_error([server, *clients], f"{server}: invalid JSON: nested too deeply")

    async def test_invalid_json_names_line_and_column(self) -> None:
        """Broken JSON names file, line and column."""
        server, clients = write_configs(self.folder)
        with open(clients[0], "w") as f:
            f.write('{"name": "x",\n "auth": }')
        result = await self.twistd("ilchat", server, clients[0])
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{clients[0]}: invalid JSON at line 2 column 10", result.stderr)


async def spawn_serving(
    test: TestCase, command: Sequence[str], cwd: str, url: str, env: Optional[Dict[str, str]] = None
) -> subprocess.Popen:
    """
    Start ``command`` (a twistd), killed at the end of ``test`` if still running, and wait until
    ``url`` answers the Heartbeat; the test fails if the process exits first or never answers.
    """
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=env or _env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def kill() -> None:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()

    test.addCleanup(kill)
    for _ in range(200):
        if process.poll() is not None:
            test.fail(f"twistd exited early: {process.stdout.read().decode()}")
        try:
            response = await http_request(url + "/backend/Heartbeat/onscreen")
            if response.code == 200:
                return process
        except Exception:
            pass
        await deferLater(reactor, 0.1, lambda: None)
    test.fail("twistd did not start listening")


async def wait_exit(test: TestCase, process: subprocess.Popen, seconds: float = 15.0) -> int:
    """The exit status of ``process``; ``test`` fails if it is still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        await deferLater(reactor, 0.05, lambda: None)
    test.assertIsNotNone(process.poll(), "twistd did not exit in time")
    return process.returncode


class RunningProcessTests(TestCase):
    """A real ``twistd -n ilchat`` process: start, serve, reopen logs, stop on SIGTERM."""

    timeout = 60

    async def start(self, database: Any = None, args_form: str = "options", **server: Any) -> Dict[str, Any]:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        port = _free_port()
        server_cfg, clients = write_configs(
            folder, server=dict({"port": port, "log_level": "debug"}, **server), database=database
        )
        if args_form == "options":
            args = ["--server-cfg", server_cfg, "--client-cfg", clients[0]]
        else:
            args = [server_cfg, clients[0]]
        url = f"http://127.0.0.1:{port}"
        process = await spawn_serving(self, [TWISTD, "-n", "--pidfile=", "ilchat", *args], folder, url)
        return {"process": process, "folder": folder, "url": url, "port": port}

    async def wait_exit(self, process: subprocess.Popen, seconds: float = 15.0) -> int:
        return await wait_exit(self, process, seconds)

    async def test_sigterm_stops_cleanly_with_status_0_and_moves_users(self) -> None:
        """SIGTERM: stop listening, move chatroom_users to sessions, exit 0 within seconds."""
        database = await make_mariadb_database_async(self)
        running = await self.start(database=database)
        await insert_rows_async(
            database,
            "chatroom_users",
            [{"room_id": 1, "user_id": 6, "userdata": '{"login":"a","id":6}', "connected": 1000}],
        )
        started = time.monotonic()
        running["process"].send_signal(signal.SIGTERM)
        code = await self.wait_exit(running["process"])
        output = running["process"].stdout.read().decode()
        self.assertEqual(code, 0, output)
        self.assertLess(time.monotonic() - started, 10)
        self.assertNotIn("Traceback", output)
        self.assertEqual(await fetch_rows_async(database, "SELECT * FROM chatroom_users"), [])
        sessions = await fetch_rows_async(database, "SELECT user_id FROM chatroom_sessions")
        self.assertEqual([r["user_id"] for r in sessions], [6])
        with open(os.path.join(running["folder"], "chat.log")) as f:
            log = f.read()
        self.assertIn("Starting Server!", log)
        self.assertIn("Log Level: debug", log)
        self.assertIn(f"The Server is Ready to use! Listening on: http://127.0.0.1:{running['port']}", log)
        self.assertIn("Server stopped", log)

    async def test_sigterm_with_connected_websocket_clients_exits_promptly(self) -> None:
        """Connected Socket.IO clients are disconnected by the shutdown; it still takes seconds."""
        import socketio

        running = await self.start()

        def connect() -> Any:
            client = socketio.Client(reconnection=False)
            client.connect(running["url"], namespaces=["/onscreen"], transports=["websocket"], wait_timeout=10)
            return client

        clients = [await threads.deferToThread(connect) for _ in range(3)]
        self.assertTrue(all(c.connected for c in clients))
        started = time.monotonic()
        running["process"].send_signal(signal.SIGTERM)
        self.assertEqual(await self.wait_exit(running["process"]), 0)
        self.assertLess(time.monotonic() - started, 10)
        for _ in range(100):
            if not any(c.connected for c in clients):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertFalse(any(c.connected for c in clients))
        for client in clients:
            await threads.deferToThread(client.disconnect)

    async def stdout_after_a_heartbeat(self, log_level: str) -> str:
        running = await self.start(log_level=log_level)
        response = await http_request(running["url"] + "/backend/Heartbeat/onscreen")
        self.assertEqual(response.code, 200)
        running["process"].send_signal(signal.SIGTERM)
        self.assertEqual(await self.wait_exit(running["process"]), 0)
        return running["process"].stdout.read().decode()

    async def test_log_level_info_keeps_debug_lines_off_stdout(self) -> None:
        """``twistd -n`` at log_level info: no line per HTTP request or backend call on stdout."""
        output = await self.stdout_after_a_heartbeat("info")
        self.assertIn("Starting Server!", output)
        self.assertNotIn("GET /backend/Heartbeat/onscreen", output)

    async def test_log_level_debug_writes_debug_lines_to_stdout(self) -> None:
        output = await self.stdout_after_a_heartbeat("debug")
        self.assertIn("GET /backend/Heartbeat/onscreen 200", output)
        # makeService's runtime settings took effect in the real process (ilchat.eventloop).
        self.assertIn("Event dispatch: epoll, without the legacy log context", output)

    async def test_positional_form_and_sigint(self) -> None:
        """The Node server's positional arguments work; SIGINT stops with status 0 too."""
        running = await self.start(args_form="positional")
        running["process"].send_signal(signal.SIGINT)
        self.assertEqual(await self.wait_exit(running["process"]), 0)

    async def test_sighup_reopens_log_files_after_rotation(self) -> None:
        """logrotate moves chat.log away and sends SIGHUP; new lines go to a new chat.log."""
        running = await self.start()
        folder = running["folder"]
        log = os.path.join(folder, "chat.log")
        os.rename(log, log + ".1")
        os.rename(os.path.join(folder, "chatError.log"), os.path.join(folder, "chatError.log.1"))
        running["process"].send_signal(signal.SIGHUP)
        for _ in range(100):
            await http_request(running["url"] + "/backend/Heartbeat/onscreen")
            if os.path.exists(log) and "/backend/Heartbeat/onscreen" in open(log).read():
                break
            await deferLater(reactor, 0.05, lambda: None)
        with open(log) as f:
            self.assertIn("GET /backend/Heartbeat/onscreen 200", f.read())
        self.assertTrue(os.path.exists(os.path.join(folder, "chatError.log")))
        self.assertIsNone(running["process"].poll(), "SIGHUP must not stop the server")
        running["process"].send_signal(signal.SIGTERM)
        self.assertEqual(await self.wait_exit(running["process"]), 0)

    async def test_database_error_at_start_is_one_line_and_status_1(self) -> None:
        """An unreachable database: one line on stderr, exit status 1, not a silent idle process."""
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        server_cfg, clients = write_configs(
            folder,
            server={"port": _free_port()},
            database={"type": "mysql", "host": "127.0.0.1", "port": 1, "name": "x", "user": "u", "pass": ""},
        )
        result = await threads.deferToThread(
            run_twistd, ["-n", "--pidfile=", "ilchat", server_cfg, *clients], folder
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        [line] = result.stderr.splitlines()
        self.assertTrue(line.startswith("Start-up failed: "), line)
        self.assertIn("127.0.0.1:1", line)
        self.assertNotIn("Traceback", result.stderr + result.stdout)


class InstalledPackageTests(TestCase):
    """``pip install .`` (not editable) ships the plugin so that twistd finds it."""

    timeout = 240

    async def test_plugin_is_found_after_a_regular_install(self) -> None:
        """Install the package into a folder without its dependencies and ask twistd."""
        import shutil

        target = os.path.abspath(self.mktemp())
        # Build from a copy, so that the build leaves nothing (build/, *.egg-info) in the checkout.
        source = os.path.abspath(self.mktemp())
        await threads.deferToThread(
            shutil.copytree,
            ROOT,
            source,
            ignore=shutil.ignore_patterns(
                ".venv", ".git", "node_modules", "_trial_temp*", "build", "*.egg-info", "__pycache__",
                "data", "bench",
            ),
        )
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
             "--target", target, source],
            capture_output=True,
            text=True,
            timeout=200,
        )
        if result.returncode != 0:
            self.fail(result.stdout + result.stderr)
        # setuptools warns about a data folder missing from `packages` (ilchat/web/static).
        self.assertNotIn("BuildBackendWarning", result.stdout + result.stderr)
        for shipped in ("web/static/index.html", "web/static/chat.js", "web/static/chat.css",
                        "store/mysql_schema.sql", "store/sqlite_schema.sql"):
            self.assertTrue(os.path.exists(os.path.join(target, "ilchat", shipped)), shipped)
        self.assertTrue(os.path.exists(os.path.join(target, "twisted", "plugins", "ilchat_plugin.py")))
        self.assertFalse(os.path.exists(os.path.join(target, "twisted", "plugins", "__init__.py")))
        # Run from elsewhere with the install first on the path and without the checkout's .pth
        # entry: python -S skips site-packages, so add the venv's libraries after the target.
        site = [p for p in sys.path if p.endswith("site-packages")]
        env = _env(PYTHONPATH=os.pathsep.join([target, *site]))
        code = (
            "import sys; sys.path[:] = [p for p in sys.path if p != %r]; "
            "from twisted.scripts.twistd import run; sys.argv = ['twistd', '--help']; run()" % ROOT
        )
        result = await threads.deferToThread(
            subprocess.run,
            [sys.executable, "-S", "-c", code],
            cwd=target,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertRegex(result.stdout, r"\n\s+ilchat\s+ILIAS", result.stderr)
