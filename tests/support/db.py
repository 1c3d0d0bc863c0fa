"""
Real databases for tests: a fresh MariaDB database or SQLite file per test, dropped afterwards.

Typical use in a trial ``TestCase``::

    from tests.support.db import make_mariadb_database, insert_rows

    def setUp(self):
        self.database = make_mariadb_database(self)        # or make_sqlite_database(self)
        insert_rows(self.database, "chatroom_settings", [{"room_id": 1}])
        self.store = create_store(self.database, reactor)
        return defer.ensureDeferred(self.store.open())     # and addCleanup(store.close) ...

Or inherit ``StoreTestMixin`` (below), which opens ``self.store`` on the database its
``database_kind`` names, and write two subclasses so the same tests run on both::

    class RoomTestsMixin(StoreTestMixin):
        async def test_something(self): ...

    class RoomMariaDBTests(RoomTestsMixin, unittest.TestCase):
        database_kind = "mysql"

    class RoomSQLiteTests(RoomTestsMixin, unittest.TestCase):
        database_kind = "sqlite"

MariaDB runs on 127.0.0.1:3306 as root without a password (``ILCHAT_TEST_MYSQL_HOST``,
``..._PORT``, ``..._USER``, ``..._PASSWORD`` override that). Every MariaDB database is named
``ilchat_t_<pid>_<counter>_<random>`` and gets the ILIAS schema from
``ilchat/store/mysql_schema.sql``; the SQLite file gets ``sqlite_schema.sql``. Both are ILIAS 10
databases: ILIAS's setup log ``il_db_steps`` holds ILIAS 10's On-Screen Chat step, so message
texts go out as written (``ilchat.ilias.escaping``); ``mark_ilias9(db)`` makes one an ILIAS 9
database, ``create_ilias8_tables(db)`` an ILIAS 8 one.

The synchronous helpers do their admin SQL right away, which takes milliseconds; they are meant for
``setUp`` (before the test's own asynchronous work) and for ``SynchronousTestCase``. Tests that
must not block a running reactor use the ``*_async`` variants, which run the same work in a thread.
"""

from __future__ import annotations

import itertools
import os
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import MySQLdb
from twisted.internet import defer, reactor as global_reactor, threads
from twisted.trial import unittest

from ilchat.ilias.escaping import ILIAS10_STEP
from ilchat.store.database import read_schema
from ilchat.store.engines import split_sql_script

__all__ = [
    "TestDatabaseConfig",
    "make_mariadb_database",
    "make_mariadb_database_async",
    "make_sqlite_database",
    "make_database",
    "insert_rows",
    "insert_rows_async",
    "fetch_rows",
    "fetch_rows_async",
    "execute",
    "mariadb_admin_connection",
    "mark_ilias9",
    "create_ilias8_tables",
    "StoreTestMixin",
]

MYSQL_HOST = os.environ.get("ILCHAT_TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("ILCHAT_TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("ILCHAT_TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("ILCHAT_TEST_MYSQL_PASSWORD", "")

_counter = itertools.count(1)

#: ILIAS's setup log as ``ilDBStepExecutionDB`` keeps it, with the step only ILIAS 10 and later
#: have run (the un-escaping of ``osc_messages``).
ILIAS10_SETUP_LOG = (
    "CREATE TABLE il_db_steps (class VARCHAR(200) NOT NULL, step INT NOT NULL,"
    " started VARCHAR(26), finished VARCHAR(26), PRIMARY KEY (class, step))",
    "INSERT INTO il_db_steps (class, step, started, finished)"
    " VALUES (?, ?, '2025-03-01 10:00:00.000000', '2025-03-01 10:00:00.100000')",
)


@dataclass(frozen=True)
class TestDatabaseConfig:
    """Has the attributes of ``ilchat.config.DatabaseConfig`` that ``create_store`` reads."""

    __test__ = False  # not a test case, whatever its name says

    type: str
    name: str
    host: str = ""
    port: int = 0
    user: str = ""
    password: str = ""


def mariadb_admin_connection(database: Optional[str] = None, host: str = "", port: int = 0) -> Any:
    """
    A MySQLdb connection as the test server's admin (autocommit on, utf8mb4); ``host`` and
    ``port`` name another server (a private one, ``tests.support.private_mariadb``).
    """
    kwargs: Dict[str, Any] = dict(
        host=host or MYSQL_HOST, port=port or MYSQL_PORT, user=MYSQL_USER, passwd=MYSQL_PASSWORD,
        charset="utf8mb4", use_unicode=True,
    )
    if database:
        kwargs["db"] = database
    connection = MySQLdb.connect(**kwargs)
    connection.autocommit(True)
    return connection


def _create_mariadb_database(skip_tables: Sequence[str] = ()) -> TestDatabaseConfig:
    name = "ilchat_t_{}_{}_{}".format(os.getpid(), next(_counter), secrets.token_hex(3))
    admin = mariadb_admin_connection()
    try:
        cursor = admin.cursor()
        cursor.execute(
            "CREATE DATABASE `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci".format(name)
        )
        cursor.execute("USE `{}`".format(name))
        for statement in split_sql_script(read_schema("mysql_schema.sql")):
            table = statement.split("(", 1)[0].split()[-1]
            if table in skip_tables:
                continue
            cursor.execute(statement)
        for statement in ILIAS10_SETUP_LOG:
            cursor.execute(statement.replace("?", "%s"), ILIAS10_STEP if "?" in statement else None)
    finally:
        admin.close()
    return TestDatabaseConfig(
        type="mysql", name=name, host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD
    )


def _drop_mariadb_database(name: str) -> None:
    admin = mariadb_admin_connection()
    try:
        admin.cursor().execute("DROP DATABASE IF EXISTS `{}`".format(name))
    finally:
        admin.close()


def make_mariadb_database(test_case: unittest.SynchronousTestCase, skip_tables: Sequence[str] = ()) -> TestDatabaseConfig:
    """
    Create a uniquely named ILIAS-shaped database on MariaDB; it is dropped after the test.

    Args:
        skip_tables: tables of the schema to leave out (to test the "missing table" error).
    """
    config = _create_mariadb_database(skip_tables)
    test_case.addCleanup(_drop_mariadb_database, config.name)
    return config


async def make_mariadb_database_async(
    test_case: unittest.TestCase, skip_tables: Sequence[str] = ()
) -> TestDatabaseConfig:
    """:func:`make_mariadb_database` in a thread, for tests running on the real reactor."""
    config = await threads.deferToThread(_create_mariadb_database, skip_tables)
    test_case.addCleanup(threads.deferToThread, _drop_mariadb_database, config.name)
    return config


def make_sqlite_database(test_case: unittest.SynchronousTestCase, with_schema: bool = True) -> TestDatabaseConfig:
    """A fresh SQLite file in the test's temporary directory, with the tables already made."""
    directory = test_case.mktemp()
    os.makedirs(directory)
    path = os.path.abspath(os.path.join(directory, "ilchat.sqlite"))
    if with_schema:
        connection = sqlite3.connect(path)
        try:
            for statement in split_sql_script(read_schema("sqlite_schema.sql")):
                connection.execute(statement)
            for statement in ILIAS10_SETUP_LOG:
                connection.execute(statement, ILIAS10_STEP if "?" in statement else ())
            connection.commit()
        finally:
            connection.close()
    return TestDatabaseConfig(type="sqlite", name=path)


def make_database(test_case: unittest.SynchronousTestCase, kind: str) -> TestDatabaseConfig:
    """``make_mariadb_database`` for ``kind == "mysql"``, ``make_sqlite_database`` for ``"sqlite"``."""
    if kind == "mysql":
        return make_mariadb_database(test_case)
    if kind == "sqlite":
        return make_sqlite_database(test_case)
    raise ValueError(kind)


def _connect(config: Any) -> Any:
    if config.type == "sqlite":
        connection = sqlite3.connect(config.name, timeout=30)
        return connection
    return mariadb_admin_connection(config.name, host=config.host, port=config.port)


def _placeholder(config: Any) -> str:
    return "?" if config.type == "sqlite" else "%s"


def execute(config: Any, sql: str, args: Sequence[Any] = ()) -> int:
    """Run one statement written with ``?`` placeholders; returns the row count."""
    connection = _connect(config)
    try:
        cursor = connection.cursor()
        if config.type != "sqlite":
            sql = sql.replace("%", "%%").replace("?", "%s")
        cursor.execute(sql, tuple(args))
        connection.commit()
        return cursor.rowcount
    finally:
        connection.close()


def insert_rows(config: Any, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
    """
    Insert fixture rows, e.g. ``insert_rows(db, "chatroom_users", [{"room_id": 1, "user_id": 6,
    "userdata": '{"login":"alice","id":6}', "connected": 1795301006}])``.

    Works for any table (``chatroom_settings``, ``chatroom_users``, ``chatroom_bans``, ``usr_pref``,
    ``usr_data``, ...); columns left out get their defaults.
    """
    connection = _connect(config)
    try:
        cursor = connection.cursor()
        mark = _placeholder(config)
        for row in rows:
            columns = list(row)
            cursor.execute(
                "INSERT INTO {} ({}) VALUES ({})".format(table, ", ".join(columns), ", ".join([mark] * len(columns))),
                tuple(row[c] for c in columns),
            )
        connection.commit()
    finally:
        connection.close()


def fetch_rows(config: Any, sql: str, args: Sequence[Any] = ()) -> List[Dict[str, Any]]:
    """Rows of a query (``?`` placeholders) as dicts, read on a connection of its own."""
    connection = _connect(config)
    try:
        cursor = connection.cursor()
        if config.type != "sqlite":
            sql = sql.replace("%", "%%").replace("?", "%s")
        cursor.execute(sql, tuple(args))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        connection.close()


def insert_rows_async(config: Any, table: str, rows: Iterable[Mapping[str, Any]]) -> defer.Deferred:
    """:func:`insert_rows` in a thread."""
    return threads.deferToThread(insert_rows, config, table, [dict(r) for r in rows])


def fetch_rows_async(config: Any, sql: str, args: Sequence[Any] = ()) -> defer.Deferred:
    """:func:`fetch_rows` in a thread."""
    return threads.deferToThread(fetch_rows, config, sql, tuple(args))


class StoreTestMixin:
    """
    Gives each test ``self.database`` (a fresh database of ``database_kind``) and ``self.store``
    (open on it, closed after the test). Mix into a ``twisted.trial.unittest.TestCase``.

    Attributes:
        database_kind: ``"mysql"`` or ``"sqlite"``; set by the concrete subclasses.
        store_options: extra keyword arguments for ``create_store``.
    """

    database_kind = "sqlite"
    store_options: Dict[str, Any] = {}

    async def _open_store(self) -> None:
        from ilchat.store import create_store

        if self.database_kind == "mysql":
            self.database = await make_mariadb_database_async(self)
        else:
            self.database = make_sqlite_database(self)
        self.store = create_store(self.database, global_reactor, **self.store_options)
        await self.store.open()
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))

    def setUp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._open_store())


#: The ILIAS 8 private-room tables as ilChatroomInstaller creates them (MDB2 "integer" 4 is INT,
#: "text" is VARCHAR; ILIAS 9 drops them again). ``chatroom_history.sub_room`` is in both schema
#: files already.
ILIAS8_PRIVATE_ROOM_TABLES = (
    "CREATE TABLE chatroom_prooms (proom_id INT NOT NULL PRIMARY KEY,"
    " parent_id VARCHAR(2000) NOT NULL, title VARCHAR(200) NOT NULL DEFAULT '0',"
    " owner INT NOT NULL DEFAULT 0, created INT NOT NULL DEFAULT 0, closed INT DEFAULT 0,"
    " is_public SMALLINT DEFAULT 1)",
    "CREATE TABLE chatroom_proomaccess (proom_id INT NOT NULL, user_id INT NOT NULL)",
    "CREATE TABLE chatroom_psessions (proom_id INT NOT NULL, user_id INT NOT NULL,"
    " connected INT NOT NULL, disconnected INT NOT NULL)",
)


def mark_ilias9(config: Any) -> None:
    """Make a test database one of ILIAS 9 (or 8): its setup log lacks ILIAS 10's step."""
    execute(config, "DELETE FROM il_db_steps WHERE class = ? AND step = ?", ILIAS10_STEP)


def create_ilias8_tables(config: Any) -> None:
    """Make a test database one of ILIAS 8: the private-room tables, no ILIAS 10 step."""
    for statement in ILIAS8_PRIVATE_ROOM_TABLES:
        execute(config, statement)
    mark_ilias9(config)
