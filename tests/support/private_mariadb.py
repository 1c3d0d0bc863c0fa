"""
A private ``mariadbd`` for tests that stop, freeze or restart the database.

The shared MariaDB on 3306 must never be stopped; a test that needs an outage starts its own
server on a free loopback port, with a temporary data directory, and does what it likes with it::

    from tests.support.private_mariadb import start_private_mariadb

    async def test_outage(self):
        server = await start_private_mariadb(self)   # killed and removed by a cleanup
        database = await server.create_database()    # a TestDatabaseConfig with the ILIAS schema
        server.freeze()                              # SIGSTOP: connections hang, nothing answers
        server.thaw()                                # SIGCONT
        await server.stop()                          # SIGTERM, waits for the exit
        await server.start()                         # same port, same data

It runs as the current user with ``--skip-grant-tables`` (any user name and password are let in)
and ``STRICT_TRANS_TABLES``, like the shared server, with small InnoDB files (about 20 MB on disk).
``start`` waits until the server answers a query; everything blocking runs in a thread.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any, Optional

from twisted.internet import threads
from twisted.trial import unittest

from tests.support.db import TestDatabaseConfig, _create_mariadb_database, mariadb_admin_connection

__all__ = ["PrivateMariaDB", "start_private_mariadb", "mariadbd_available"]

MARIADBD = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
INSTALL_DB = shutil.which("mariadb-install-db")

#: Small InnoDB files keep the data directory (and the start) small.
_SERVER_OPTIONS = [
    "--innodb-log-file-size=4M",
    "--innodb-buffer-pool-size=16M",
    "--sql-mode=STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_unicode_ci",
]


def mariadbd_available() -> Optional[str]:
    """None when a private server can be started, else why not (for ``SkipTest``)."""
    if not MARIADBD or not INSTALL_DB:
        return "mariadbd and mariadb-install-db are needed (apt-get install mariadb-server)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateMariaDB:
    """One ``mariadbd`` process on ``127.0.0.1:<port>`` with its data in ``directory``."""

    def __init__(self, directory: str, port: int = 0) -> None:
        self.directory = directory
        self.datadir = os.path.join(directory, "data")
        self.port = port or _free_port()
        self.host = "127.0.0.1"
        self.process: Optional[subprocess.Popen] = None
        self._frozen = False

    # -- blocking parts, run in a thread -------------------------------------------------------

    def _install(self) -> None:
        if os.path.isdir(os.path.join(self.datadir, "mysql")):
            return
        user = ["--user=" + _user()]
        result = subprocess.run(
            [INSTALL_DB, "--no-defaults", "--datadir=" + self.datadir, *user,
             "--auth-root-authentication-method=normal", "--skip-test-db", *_SERVER_OPTIONS],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError("mariadb-install-db failed: " + result.stdout.decode(errors="replace"))

    def _start_blocking(self, timeout: float = 60.0) -> None:
        self._install()
        log = open(os.path.join(self.directory, "mariadbd.out"), "ab")
        self.process = subprocess.Popen(
            [MARIADBD, "--no-defaults", "--datadir=" + self.datadir, "--user=" + _user(),
             "--port=%d" % self.port, "--bind-address=127.0.0.1",
             "--socket=" + os.path.join(self.directory, "mariadbd.sock"),
             "--pid-file=" + os.path.join(self.directory, "mariadbd.pid"),
             "--log-error=" + os.path.join(self.directory, "mariadbd.err"),
             "--skip-grant-tables", "--skip-name-resolve", *_SERVER_OPTIONS],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError("mariadbd exited with {}: {}".format(self.process.returncode, self.error_log()))
            try:
                connection = mariadb_admin_connection(host=self.host, port=self.port, connect_timeout=2)
                connection.close()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self._kill_blocking()
                    raise RuntimeError("mariadbd did not answer within {} s: {}".format(timeout, self.error_log()))
                time.sleep(0.1)

    def _stop_blocking(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if self._frozen:
            os.kill(process.pid, signal.SIGCONT)
            self._frozen = False
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _kill_blocking(self) -> None:
        self._stop_blocking(signal.SIGKILL)

    def error_log(self) -> str:
        """The last lines the server wrote to its error log, for failure messages."""
        try:
            with open(os.path.join(self.directory, "mariadbd.err"), errors="replace") as f:
                return "".join(f.readlines()[-15:])
        except OSError:
            return ""

    # -- for tests on the reactor --------------------------------------------------------------

    def start(self) -> Any:
        """Start (again, on the same port and data) and wait until it answers. A Deferred."""
        return threads.deferToThread(self._start_blocking)

    def stop(self) -> Any:
        """Shut the server down cleanly (SIGTERM) and wait for it to exit. A Deferred."""
        return threads.deferToThread(self._stop_blocking)

    def kill(self) -> Any:
        """SIGKILL, as a crash would. A Deferred that fires when the process is gone."""
        return threads.deferToThread(self._kill_blocking)

    def freeze(self) -> None:
        """SIGSTOP: the port stays open and every connection hangs, as a stuck server does."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.process is not None and self._frozen:
            os.kill(self.process.pid, signal.SIGCONT)
        self._frozen = False

    def create_database(self) -> Any:
        """A Deferred firing with a fresh ILIAS-shaped database on this server."""
        return threads.deferToThread(_create_mariadb_database, (), self.host, self.port)

    def cleanup(self) -> Any:
        """Kill the server and remove its directory (a Deferred)."""

        def kill_and_remove() -> None:
            self._kill_blocking()
            shutil.rmtree(self.directory, ignore_errors=True)

        return threads.deferToThread(kill_and_remove)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


async def start_private_mariadb(test_case: unittest.TestCase) -> PrivateMariaDB:
    """Start a private server for ``test_case``; a cleanup kills it and removes its files."""
    reason = mariadbd_available()
    if reason is not None:
        raise unittest.SkipTest(reason)
    server = PrivateMariaDB(tempfile.mkdtemp(prefix="ilchat-mariadb-"))
    test_case.addCleanup(server.cleanup)
    await server.start()
    return server

