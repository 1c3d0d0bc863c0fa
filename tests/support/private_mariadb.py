"""
A private ``mariadbd`` for tests that must stop, freeze or restart a database: its own temporary
data folder and a free port on 127.0.0.1, never the shared server on 3306.

Usage in a trial ``TestCase``::

    mariadb = await PrivateMariaDB.start_for(self)        # stopped by a cleanup
    config = mariadb.database_config                       # an ILIAS schema in database "ilias"
    await mariadb.stop(); await mariadb.start()            # a restart on the same data
    mariadb.freeze(); mariadb.thaw()                       # SIGSTOP / SIGCONT: a hung server
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Optional

import MySQLdb
from twisted.internet import threads

from ilchat.store.database import read_schema
from ilchat.store.engines import split_sql_script
from tests.support.db import TestDatabaseConfig
from tests.support.private_process import PrivateServerProcess
from tests.support.server import free_port

__all__ = ["PrivateMariaDB", "mariadbd_available"]

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"


def mariadbd_available() -> Optional[str]:
    """None if a private server can be started, else why not (for ``skip``)."""
    for path in (MARIADBD, INSTALL_DB):
        if not os.access(path, os.X_OK):
            return f"{path} not found: apt-get install mariadb-server"
    return None


class PrivateMariaDB(PrivateServerProcess):
    """One ``mariadbd`` process on a temporary data folder (see the module docstring)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.datadir = os.path.join(folder, "data")
        self.port = free_port()
        # A UNIX socket path must stay under 108 bytes, which a trial temp folder may not.
        self.socket_folder = tempfile.mkdtemp(prefix="ilchat-mariadb-")
        self.process: Optional[subprocess.Popen] = None
        self.database_config = TestDatabaseConfig(
            type="mysql", name="ilias", host="127.0.0.1", port=self.port, user="root", password=""
        )

    @classmethod
    async def start_for(cls, test_case: Any) -> "PrivateMariaDB":
        """Install, start, create the ILIAS schema, and register the stop as a cleanup."""
        server = cls(os.path.abspath(test_case.mktemp()))
        test_case.addCleanup(shutil.rmtree, server.socket_folder, ignore_errors=True)
        test_case.addCleanup(server.stop)
        await threads.deferToThread(server._install)
        await server.start()
        await threads.deferToThread(server._create_schema)
        return server

    def _install(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        subprocess.run(
            [INSTALL_DB, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=120,
        )

    async def start(self) -> None:
        """Start (again) on the same data and port; returns once it answers."""
        log = open(os.path.join(self.folder, "server.log"), "ab")
        self.process = subprocess.Popen(
            [MARIADBD, "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--socket={os.path.join(self.socket_folder, 'mysqld.sock')}",
             f"--pid-file={os.path.join(self.folder, 'mysqld.pid')}",
             "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )
        log.close()
        await threads.deferToThread(self._wait_until_it_answers)

    def _connect(self, database: Optional[str] = None) -> Any:
        kwargs = {"database": database} if database else {}
        return MySQLdb.connect(host="127.0.0.1", port=self.port, user="root", password="",
                               connect_timeout=2, **kwargs)

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self.process.returncode}; see {self.folder}/server.log")
            try:
                self._connect().close()
                return
            except MySQLdb.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _create_schema(self) -> None:
        connection = self._connect()
        try:
            cursor = connection.cursor()
            cursor.execute("CREATE DATABASE ilias CHARACTER SET utf8mb4")
            cursor.execute("USE ilias")
            for statement in split_sql_script(read_schema("mysql_schema.sql")):
                cursor.execute(statement)
            connection.commit()
        finally:
            connection.close()
