# -*- test-case-name: tests.store.test_database -*-
"""
The dialect differences between MySQL/MariaDB and SQLite, in one place.

Query code is written once, with ``?`` placeholders and portable SQL, and asks the engine for the
few things that differ: the parameter style, "insert unless the key exists", "insert or update",
how to run a schema script, and which errors are worth retrying. Nothing outside this module and
``database.py`` looks at the dialect, so no query branches on it (the way Synapse's
``BaseDatabaseEngine`` works).

This module and ``database.py`` are the only places in ilchat that import a database driver.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Sequence, Tuple

from ilchat.config import ServerConfig, default_of

__all__ = ["BaseEngine", "MySQLEngine", "SQLiteEngine", "split_sql_script"]


def split_sql_script(script: str) -> List[str]:
    """
    Split a schema file into statements.

    The schema files end every statement with a semicolon at the end of a line and carry only
    ``--`` comments, which is all this needs to understand.
    """
    statements = []
    current: List[str] = []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


class BaseEngine:
    """
    What query code may ask about the database it talks to.

    Attributes:
        name: ``"mysql"`` or ``"sqlite"``, for log lines only.
        module: the DB-API 2 driver module.
        schema_file: the DDL file (package data of ``ilchat.store``).
    """

    name = ""
    module: Any = None
    schema_file = ""
    #: Commit ``*_seq`` allocations at once instead of holding their locks (see
    #: ``Transaction.next_ids``).
    commit_sequence = False
    #: Appended to a SELECT whose rows the transaction is about to move, to lock them.
    for_update = ""
    #: Seconds a query or a connection attempt may wait (set by ``Database``).
    timeout: float = default_of(ServerConfig, "database_timeout")

    def convert_param_style(self, sql: str) -> str:
        """Turn the ``?`` placeholders every query is written with into the driver's style."""
        return sql

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        """``INSERT`` that silently skips a row whose key already exists."""
        raise NotImplementedError

    def upsert(self, table: str, key_columns: Sequence[str], value_columns: Sequence[str]) -> str:
        """``INSERT`` that updates ``value_columns`` when the key already exists."""
        raise NotImplementedError

    def is_deadlock(self, error: BaseException) -> bool:
        """True when the transaction was rolled back by a lock conflict and can simply run again."""
        return False

    def is_transient(self, error: BaseException) -> bool:
        """
        True for errors that may go away by themselves: a lost connection, a restarting server,
        a lock timeout. Writes that must not be lost are retried on these with a backoff.
        """
        return isinstance(error, self.module.OperationalError)

    def is_data_error(self, error: BaseException) -> bool:
        """
        True when a write failed because of the values it carried, not the database's health: a
        value too long for its column, a string the driver cannot encode (a lone surrogate), a
        duplicate key. Writing the same values again fails again, so they are not retried.
        """
        return isinstance(
            error, (self.module.DataError, self.module.IntegrityError, UnicodeError, OverflowError)
        )

    def connection_args(self, config: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        """The driver's ``connect()`` arguments for a ``DatabaseConfig``-like object."""
        raise NotImplementedError

    def on_connect(self, connection: Any) -> None:
        """Per-connection set-up, run by adbapi for every new connection (in a pool thread)."""

    def ensure_connected(self, raw_txn: Any) -> None:
        """
        Make sure an adbapi transaction's connection is alive before it is used (pool thread).
        """

    def consecutive_ids(self, raw_txn: Any) -> bool:
        """
        Whether one multi-row ``INSERT`` into a ``*_seq`` table on this transaction's connection
        takes consecutive ids, the first one its ``lastrowid`` (see ``Transaction.next_ids``).
        """
        return False

    def columns_query(self, table: str) -> Tuple[str, Tuple[Any, ...]]:
        """A query whose rows' first field is each column name of C{table} (none: no table)."""
        raise NotImplementedError


def _placeholders(count: int) -> str:
    return ", ".join(["?"] * count)


class MySQLEngine(BaseEngine):
    """MySQL/MariaDB through mysqlclient (``MySQLdb``), always in utf8mb4."""

    name = "mysql"
    schema_file = "mysql_schema.sql"
    commit_sequence = True
    for_update = " FOR UPDATE"

    # Server and client error numbers that mean "try again".
    DEADLOCK_ERRORS = frozenset({1213})  # ER_LOCK_DEADLOCK
    TRANSIENT_ERRORS = frozenset(
        {
            1040,  # ER_CON_COUNT_ERROR: too many connections
            1053,  # ER_SERVER_SHUTDOWN
            1205,  # ER_LOCK_WAIT_TIMEOUT
            1213,  # ER_LOCK_DEADLOCK
            2002,  # CR_CONNECTION_ERROR
            2003,  # CR_CONN_HOST_ERROR
            2006,  # CR_SERVER_GONE_ERROR
            2013,  # CR_SERVER_LOST
            4031,  # ER_CLIENT_INTERACTION_TIMEOUT
        }
    )

    # Errors about a value (strict SQL mode), whatever exception class the driver maps them to.
    DATA_ERRORS = frozenset(
        {
            1048,  # ER_BAD_NULL_ERROR
            1062,  # ER_DUP_ENTRY
            1264,  # ER_WARN_DATA_OUT_OF_RANGE
            1265,  # WARN_DATA_TRUNCATED
            1292,  # ER_TRUNCATED_WRONG_VALUE
            1366,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD (incorrect string value)
            1406,  # ER_DATA_TOO_LONG
        }
    )

    def __init__(self) -> None:
        import MySQLdb

        self.module = MySQLdb

    def columns_query(self, table: str) -> Tuple[str, Tuple[Any, ...]]:
        return ("SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = DATABASE() AND table_name = ?", (table,))

    def convert_param_style(self, sql: str) -> str:
        # MySQLdb formats the query with ``%`` whenever arguments are given (we always give a
        # tuple), so a literal percent sign must be doubled before ``?`` becomes ``%s``.
        return sql.replace("%", "%%").replace("?", "%s")

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return "INSERT IGNORE INTO {} ({}) VALUES ({})".format(
            table, ", ".join(columns), _placeholders(len(columns))
        )

    def upsert(self, table: str, key_columns: Sequence[str], value_columns: Sequence[str]) -> str:
        columns = list(key_columns) + list(value_columns)
        return "INSERT INTO {} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}".format(
            table,
            ", ".join(columns),
            _placeholders(len(columns)),
            ", ".join("{0} = VALUES({0})".format(c) for c in value_columns),
        )

    def _code(self, error: BaseException) -> int:
        args = getattr(error, "args", ())
        if args and isinstance(args[0], int):
            return args[0]
        return 0

    def is_deadlock(self, error: BaseException) -> bool:
        return (
            isinstance(error, (self.module.OperationalError, self.module.InternalError))
            and self._code(error) in self.DEADLOCK_ERRORS
        )

    def is_transient(self, error: BaseException) -> bool:
        if isinstance(error, self.module.OperationalError):
            # OperationalError also covers e.g. "unknown column"; only retry what can heal.
            return self._code(error) in self.TRANSIENT_ERRORS or self._code(error) == 0
        return self.is_deadlock(error) or isinstance(error, self.module.InterfaceError)

    def is_data_error(self, error: BaseException) -> bool:
        if isinstance(error, self.module.Error) and self._code(error) in self.DATA_ERRORS:
            return True
        return super().is_data_error(error)

    def connection_args(self, config: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        kwargs: Dict[str, Any] = {
            "host": config.host or "localhost",
            "port": int(config.port or 3306),
            "user": config.user or "",
            "passwd": config.password or "",
            "db": config.name,
            # utf8mb4 so that 4-byte characters (emoji) are stored, unlike the Node server
            # (spec section 10.6).
            "charset": "utf8mb4",
            "use_unicode": True,
            # A server that stops answering (frozen, or its host gone) fails the query with
            # 2013 "Lost connection" after this long, instead of hanging the pool thread.
            "connect_timeout": max(1, int(min(10.0, self.timeout))),
            "read_timeout": max(1, int(self.timeout)),
            "write_timeout": max(1, int(self.timeout)),
        }
        return (), kwargs

    def ensure_connected(self, raw_txn: Any) -> None:
        # MariaDB drops connections idle for longer than wait_timeout (8 hours by default), so
        # after a quiet night every pooled connection is dead. adbapi only notices once a query
        # has failed; a ping first lets the transaction run on a fresh connection instead, with
        # nothing executed yet, so even a write is safe to run on it.
        try:
            raw_txn._connection._connection.ping()
        except self.module.Error:
            raw_txn.reconnect()
            raw_txn.reopen()

    def on_connect(self, connection: Any) -> None:
        cursor = connection.cursor()
        try:
            # READ COMMITTED keeps InnoDB from taking gap locks, which makes the *_seq
            # DELETEs of concurrent id allocations far less likely to deadlock.
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            connection.ilchat_consecutive_ids = self._takes_consecutive_ids(cursor)
        finally:
            cursor.close()
        connection.commit()

    def _takes_consecutive_ids(self, cursor: Any) -> bool:
        """
        InnoDB gives the rows of one multi-row ``INSERT`` consecutive auto-increment values when
        its lock mode is "traditional" (0) or "consecutive" (1, MariaDB's and MySQL 5.7's
        default) and the increment is 1. In "interleaved" mode (2: MySQL 8's default, Galera's)
        or with another increment (a multi-primary set-up) they may be spread out, so ids are
        then taken one ``INSERT`` at a time, as ILIAS does.
        """
        try:
            cursor.execute("SELECT @@SESSION.auto_increment_increment, @@GLOBAL.innodb_autoinc_lock_mode")
            increment, lock_mode = cursor.fetchone()
        except self.module.Error:
            return False
        return int(increment) == 1 and int(lock_mode) in (0, 1)

    def consecutive_ids(self, raw_txn: Any) -> bool:
        return getattr(raw_txn._connection._connection, "ilchat_consecutive_ids", False)


class SQLiteEngine(BaseEngine):
    """The embedded SQLite database of the standalone chat (and the quick start)."""

    name = "sqlite"
    schema_file = "sqlite_schema.sql"

    def __init__(self) -> None:
        import sqlite3

        self.module = sqlite3

    def insert_ignore(self, table: str, columns: Sequence[str]) -> str:
        return "INSERT OR IGNORE INTO {} ({}) VALUES ({})".format(
            table, ", ".join(columns), _placeholders(len(columns))
        )

    def upsert(self, table: str, key_columns: Sequence[str], value_columns: Sequence[str]) -> str:
        columns = list(key_columns) + list(value_columns)
        return "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}".format(
            table,
            ", ".join(columns),
            _placeholders(len(columns)),
            ", ".join(key_columns),
            ", ".join("{0} = excluded.{0}".format(c) for c in value_columns),
        )

    def columns_query(self, table: str) -> Tuple[str, Tuple[Any, ...]]:
        return "SELECT name FROM pragma_table_info(?)", (table,)

    def is_deadlock(self, error: BaseException) -> bool:
        return isinstance(error, self.module.OperationalError) and bool(
            re.search(r"database (table )?is locked|busy", str(error))
        )

    def is_transient(self, error: BaseException) -> bool:
        return self.is_deadlock(error) or (
            isinstance(error, self.module.OperationalError)
            and bool(re.search(r"disk I/O error|unable to open", str(error)))
        )

    def is_data_error(self, error: BaseException) -> bool:
        # "Error binding parameter" (a value sqlite3 cannot bind) is an InterfaceError.
        return isinstance(error, self.module.InterfaceError) or super().is_data_error(error)

    def connection_args(self, config: Any) -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        # adbapi runs every interaction in a pool thread; the pool has a single connection
        # (cp_max=1), so sharing it across threads is safe and writes are serialised.
        return (config.name,), {"check_same_thread": False, "timeout": self.timeout}

    def on_connect(self, connection: Any) -> None:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout={:d}".format(int(self.timeout * 1000)))


def engine_for(database_type: str) -> BaseEngine:
    """The engine for a normalised ``database.type`` (``"mysql"`` or ``"sqlite"``)."""
    kind = (database_type or "").lower()
    if kind in ("mysql", "mariadb", "innodb"):
        return MySQLEngine()
    if kind in ("sqlite", "sqlite3"):
        return SQLiteEngine()
    raise ValueError("unsupported database type {!r} (expected mysql or sqlite)".format(database_type))


def rows_as_dicts(description: Iterable[Sequence[Any]], rows: Iterable[Sequence[Any]]) -> List[Dict[str, Any]]:
    """Rows from ``fetchall()`` as dicts keyed by column name (``cursor.description``)."""
    names = [column[0] for column in description]
    return [dict(zip(names, row)) for row in rows]
