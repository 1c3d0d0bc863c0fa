# -*- test-case-name: tests.store.test_database -*-
"""
The connection pool, named transactions, retries and the ILIAS ``*_seq`` ids.

Every SQL statement of ilchat runs through :meth:`Database.run_interaction`, in adbapi's thread
pool, so nothing blocks the reactor. adbapi commits when the transaction function returns and
rolls back when it raises; the function runs in a pool thread, so it must not touch reactor-side
state, and because it may run again (deadlock retry) it must not consume generators or have side
effects outside the database.

Transaction functions receive a :class:`Transaction`, which converts the ``?`` placeholders to
the driver's style (the one place this happens) and returns rows as dicts.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.config import ServerConfig, default_of
from ilchat.retry import retry
from ilchat.store.engines import BaseEngine, engine_for, rows_as_dicts, split_sql_script

__all__ = [
    "Database",
    "Transaction",
    "StoreError",
    "MissingTableError",
    "StoreClosedError",
    "ILIAS_TABLES",
    "SEQUENCE_TABLES",
    "DEFAULT_RETRY_DELAYS",
    "DEFAULT_QUERY_TIMEOUT",
]

T = TypeVar("T")

#: The tables ilchat uses. On MySQL each must exist (ILIAS creates them; ilchat never does).
ILIAS_TABLES: Tuple[str, ...] = (
    "chatroom_settings",
    "chatroom_users",
    "chatroom_sessions",
    "chatroom_history",
    "chatroom_history_seq",
    "chatroom_sessions_seq",
    "chatroom_bans",
    "osc_conversation",
    "osc_messages",
    "osc_activity",
    "usr_pref",
    "usr_data",
    "usr_session",
)

#: Tables whose ids come from a ``<table>_seq`` table (spec section 4.2, "Next id").
SEQUENCE_TABLES = frozenset({"chatroom_history", "chatroom_sessions"})

#: Seconds to wait before each further attempt of a write that must not be lost (about 3 minutes
#: in all). A write still failing after the last one is logged at "critical" with its content.
DEFAULT_RETRY_DELAYS: Tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 60.0)

#: Seconds a query may wait for the database (server.cfg ``database_timeout``): a server that
#: stops answering fails the query with a transient error instead of hanging it for ever.
DEFAULT_QUERY_TIMEOUT: float = default_of(ServerConfig, "database_timeout")


class _ConnectionPool(adbapi.ConnectionPool):
    """
    adbapi's pool, rolling back without "Rollback failed: wrong connection for thread".

    When the server restarts, a transaction fails on the dead connection; adbapi's rollback then
    fails too, logs a traceback, and when the transaction had already tried to reconnect (the
    ping in ``ensure_connected``) while the server was still down, its ``disconnect`` raises
    "wrong connection for thread" and logs a second one. Here a failed rollback just drops the
    thread's connection (the next transaction connects afresh) and the transaction's own error
    is what the caller sees: a lost connection is an ordinary, retried, error.
    """

    def _runInteraction(self, interaction: Callable[..., Any], *args: Any, **kw: Any) -> Any:  # noqa: N802
        conn = self.connectionFactory(self)
        trans = self.transactionFactory(self, conn)
        try:
            result = interaction(trans, *args, **kw)
            trans.close()
            conn.commit()
            return result
        except BaseException:
            self._rollback_or_drop(conn._connection)
            raise

    def _rollback_or_drop(self, raw: Any) -> None:
        try:
            raw.rollback()
            return
        except Exception:
            pass
        tid = self.threadID()
        if self.connections.get(tid) is raw:
            del self.connections[tid]
        try:
            raw.close()
        except Exception:
            pass

#: How often a transaction rolled back by a deadlock is run again at once.
DEADLOCK_RETRIES = 10


class StoreError(Exception):
    """The database cannot be used; ``str()`` is one line for the operator."""


class MissingTableError(StoreError):
    """An ILIAS table is missing from a MySQL database (ilchat never creates them there)."""

    def __init__(self, table: str, database: str, where: str) -> None:
        self.table = table
        super().__init__(
            "Database {!r} on {} has no table {!r}: ilchat needs the ILIAS chat tables and never "
            "creates them on MySQL/MariaDB (is this the ILIAS database of this client?)".format(
                database, where, table
            )
        )


class StoreClosedError(StoreError):
    """The store was closed while a write was waiting for its next attempt."""


class Transaction:
    """
    A cursor that speaks ``?`` placeholders and knows the ILIAS id scheme.

    Only transaction functions see it, in a pool thread.
    """

    __slots__ = ("_txn", "engine", "desc")

    def __init__(self, txn: Any, engine: BaseEngine, desc: str) -> None:
        self._txn = txn
        self.engine = engine
        self.desc = desc

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Run one parameterised statement (placeholders are ``?``)."""
        self._txn.execute(self.engine.convert_param_style(sql), tuple(args))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one parameterised statement for every row of arguments."""
        rows = [tuple(row) for row in rows]
        if rows:
            self._txn.executemany(self.engine.convert_param_style(sql), rows)

    def fetchall(self) -> List[Tuple[Any, ...]]:
        return list(self._txn.fetchall())

    def fetchone(self) -> Optional[Tuple[Any, ...]]:
        return self._txn.fetchone()

    @property
    def rowcount(self) -> int:
        return self._txn.rowcount

    @property
    def lastrowid(self) -> int:
        """The id of the row the last INSERT made (both drivers track it per connection)."""
        return int(self._txn.lastrowid)

    def select(self, sql: str, args: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        """Rows of a query as dicts keyed by column name."""
        self.execute(sql, args)
        return rows_as_dicts(self._txn.description, self._txn.fetchall())

    def select_one(self, sql: str, args: Sequence[Any] = ()) -> Optional[Dict[str, Any]]:
        """The first row of a query as a dict, or None."""
        rows = self.select(sql, args)
        return rows[0] if rows else None

    def commit(self) -> None:
        """Commit what this transaction did so far; it goes on in a new transaction."""
        self._txn._connection.commit()

    def next_ids(self, table: str, count: int, commit: Optional[bool] = None) -> List[int]:
        """
        ``count`` fresh ids for ``table`` (spec 4.2 "Next id"), with one clean-up ``DELETE``.
        Where the database gives one multi-row ``INSERT`` consecutive values
        (``engine.consecutive_ids``), a block takes one ``INSERT``; otherwise one per id.

        ``INSERT INTO <table>_seq (sequence) VALUES (NULL)`` lets the database pick a fresh
        auto-increment value, and ``lastrowid`` is per connection, so two concurrent allocations
        never read each other's value and never get the same id. ``DELETE ... WHERE sequence <
        <id>`` then keeps the table small, as ILIAS does.

        The race is in that ``DELETE``. Inside one long transaction, A holds its new row 5 while B
        (row 6) deletes below 6 and waits for row 5, and A's own ``DELETE`` below 5 waits for the
        rows B already deleted: a deadlock, which InnoDB breaks by rolling one back (2,000
        concurrent writes on 20 connections saw six deadlocks per write; with the commits, none). So on MySQL, as with
        ILIAS's autocommit queries, the ``INSERT`` and the ``DELETE`` are committed at once
        (``engine.commit_sequence``): the new row is never held locked, every ``DELETE`` takes
        its row locks in key order and holds no other lock, so they only queue behind each other.
        A deadlock that still happens rolls back the whole transaction, which
        :meth:`Database.run_interaction` runs again with new ids; an id whose row was then never
        written is only a gap, as in ILIAS.

        Because of those commits, allocate ids before the transaction writes anything else, or
        pass ``commit=False`` when the transaction holds row locks it must keep (then a deadlock
        is possible again, and handled by running the transaction again).
        """
        if table not in SEQUENCE_TABLES:
            raise ValueError("no sequence table for {!r}".format(table))
        if commit is None:
            commit = self.engine.commit_sequence
        if count > 1 and self.engine.consecutive_ids(self._txn):
            # One statement for the whole block where the database makes its ids consecutive
            # (engine.consecutive_ids): 2 us of this process's CPU per id instead of 21.
            self.execute("INSERT INTO {}_seq (sequence) VALUES {}".format(table, ", ".join(["(NULL)"] * count)))
            first = self.lastrowid
            ids = list(range(first, first + count))
        else:
            ids = []
            for _ in range(count):
                self.execute("INSERT INTO {}_seq (sequence) VALUES (NULL)".format(table))
                ids.append(self.lastrowid)
        if ids:
            if commit:
                self.commit()
            self.execute("DELETE FROM {}_seq WHERE sequence < ?".format(table), (max(ids),))
            if commit:
                self.commit()
        return ids


def _describe(config: Any) -> str:
    if config.type == "sqlite":
        return str(config.name)
    return "{}:{}".format(config.host or "localhost", config.port or 3306)


class Database:
    """
    One adbapi pool plus the engine of its dialect, for one ILIAS client's database.

    Args:
        config: a ``DatabaseConfig``-like object with ``type``, ``host``, ``port``, ``name``,
            ``user`` and ``password``.
        reactor: the reactor whose thread pool and clock are used.
        cp_min, cp_max: pool size for MySQL (SQLite always uses one connection, which serialises
            its writes).
        retry_delays: delays between the attempts of :meth:`run_interaction_retrying`.
        timeout: seconds a query (and a connection attempt) may wait for the database.
    """

    _log = Logger()

    def __init__(
        self,
        config: Any,
        reactor: Any,
        cp_min: int = 1,
        cp_max: int = 5,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.engine = engine_for(config.type)
        self.engine.timeout = float(timeout)
        self.retry_delays = tuple(retry_delays)
        self._pool: Optional[adbapi.ConnectionPool] = None
        self._cp_min = cp_min
        self._cp_max = cp_max
        self._pending: Set[defer.Deferred] = set()
        self._sleeping: Dict[Any, defer.Deferred] = {}
        self._closed = False
        #: Called as ``observer(desc, seconds, failed)`` after every transaction attempt (metrics).
        self.observers: List[Callable[[str, float, bool], None]] = []

    @property
    def where(self) -> str:
        """``host:port`` or the SQLite file, for messages."""
        return _describe(self.config)

    @property
    def description(self) -> str:
        """``sqlite <file>`` or ``mysql '<database>' on <host:port>``, for the start-up log."""
        if self.engine.name == "sqlite":
            return f"sqlite {self.where}"
        return f"{self.engine.name} {self.config.name!r} on {self.where}"

    # -- life cycle ---------------------------------------------------------------------------

    def _make_pool(self) -> adbapi.ConnectionPool:
        args, kwargs = self.engine.connection_args(self.config)
        if self.engine.name == "sqlite":
            kwargs.update(cp_min=1, cp_max=1)
        else:
            kwargs.update(cp_min=self._cp_min, cp_max=self._cp_max)
        return _ConnectionPool(
            self.engine.module.__name__,
            *args,
            cp_reconnect=True,
            cp_noisy=False,
            cp_openfun=self.engine.on_connect,
            cp_reactor=self.reactor,
            **kwargs,
        )

    async def open(self) -> None:
        """
        Connect, then check (MySQL) or create (SQLite) the tables.

        Raises:
            StoreError: the database cannot be reached; the message names it.
            MissingTableError: an ILIAS table is missing on MySQL; the message names it.
        """
        self._closed = False
        self._pool = self._make_pool()
        try:
            if self.engine.name == "sqlite":
                await self._prepare_sqlite()
            else:
                await self._check_mysql_tables()
        except BaseException:
            await self.close()
            raise

    async def _prepare_sqlite(self) -> None:
        path = str(self.config.name)
        if path != ":memory:" and os.path.dirname(path):
            try:
                await threads.deferToThreadPool(
                    self.reactor, self._pool.threadpool, os.makedirs, os.path.dirname(path), exist_ok=True
                )
            except OSError as e:
                raise StoreError("Cannot create the folder of the SQLite database {}: {}".format(path, e)) from e
        schema_file = self.engine.schema_file

        def create_tables_txn(txn: Transaction) -> None:
            for statement in split_sql_script(read_schema(schema_file)):
                txn.execute(statement)

        try:
            await self.run_interaction("create_tables", create_tables_txn)
        except self.engine.module.Error as e:
            raise StoreError("Cannot open the SQLite database {}: {}".format(path, e)) from e

    async def _check_mysql_tables(self) -> None:
        def existing_tables_txn(txn: Transaction) -> List[str]:
            txn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
            )
            return [row[0] for row in txn.fetchall()]

        try:
            existing = await self.run_interaction("existing_tables", existing_tables_txn)
        except self.engine.module.Error as e:
            raise StoreError(
                "Cannot use the MySQL database {!r} on {} as user {!r}: {}".format(
                    self.config.name, self.where, self.config.user, e
                )
            ) from e
        present = {name.lower() for name in existing}
        for table in ILIAS_TABLES:
            if table not in present:
                raise MissingTableError(table, str(self.config.name), self.where)

    async def close(self) -> None:
        """
        Wait for the running transactions, then close the pool.

        A write sleeping before its next attempt fails with :class:`StoreClosedError`, which its
        retry loop logs at "critical" together with the write's arguments.
        """
        self._closed = True
        for call, d in list(self._sleeping.items()):
            if call.active():
                call.cancel()
            self._sleeping.pop(call, None)
            d.errback(StoreClosedError("the store was closed"))
        while self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            # Every worker is idle now, so joining the threads does not wait on the database.
            pool.close()

    # -- transactions -------------------------------------------------------------------------

    def _run_once(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> defer.Deferred:
        engine = self.engine

        def interaction(raw_txn: Any) -> T:
            engine.ensure_connected(raw_txn)
            return func(Transaction(raw_txn, engine, desc), *args, **kwargs)

        interaction.__name__ = desc
        started = time.monotonic()
        d = self._pool.runInteraction(interaction)
        self._pending.add(d)

        def done(result: Any) -> Any:
            self._pending.discard(d)
            for observer in self.observers:
                observer(desc, time.monotonic() - started, isinstance(result, Failure))
            return result

        d.addBoth(done)
        return d

    async def run_interaction(self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """
        Run ``func(txn, *args, **kwargs)`` in one transaction, in a pool thread.

        ``desc`` names the transaction in log lines (``"add_history"``). A transaction rolled
        back by a deadlock or lock timeout runs again at once, up to ``DEADLOCK_RETRIES`` times.

        Raises:
            StoreClosedError: the store is closed.
            The driver's errors, once retries do not help.
        """
        if self._pool is None:
            raise StoreClosedError("the store is not open ({})".format(desc))

        def again(attempts: int, error: Exception, delay: float) -> None:
            self._log.debug(
                "Transaction {desc} hit a deadlock ({error}); running it again", desc=desc, error=error
            )

        return await retry(
            lambda: self._run_once(desc, func, *args, **kwargs),
            [0.0] * DEADLOCK_RETRIES,
            self.engine.is_deadlock,
            on_retry=again,
        )

    async def run_interaction_retrying(
        self, desc: str, func: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """
        Like :meth:`run_interaction`, for writes that must not be lost (chat history, OSC messages).

        A transient error (lost connection, server restart, lock timeout, a query timeout; see
        ``BaseEngine.is_transient``) is logged once as a warning (later attempts at "debug", the
        success at "info") and the transaction runs again after each of ``retry_delays``,
        waiting on the reactor's clock. When the last attempt fails, or the error is not transient (say a constraint
        violation), the failure is logged at "critical" with ``desc`` and the arguments, so the
        lost row can be recovered from the error log, and it is raised to the caller.
        """

        def again(attempt: int, error: Exception, delay: float) -> None:
            # One warning per write that starts failing, not one line per attempt.
            (self._log.warn if attempt == 1 else self._log.debug)(
                "Database write {desc} failed ({error!r}); attempt {attempt}, trying again "
                "in {delay} s",
                desc=desc,
                error=error,
                attempt=attempt,
                delay=delay,
            )

        def give_up(attempts: int, error: Exception) -> None:
            self._log.critical(
                "Database write {desc} failed for good after {attempts} attempt(s): "
                "{error!r}; the data was not stored: {data!r}",
                desc=desc,
                attempts=attempts,
                error=error,
                data=args,
            )

        def recovered(attempt: int) -> None:
            self._log.info("Database write {desc} succeeded at attempt {attempt}",
                           desc=desc, attempt=attempt)

        async def sleep(delay: float) -> None:
            try:
                await self._sleep(delay)
            except StoreClosedError:
                self._log.critical(
                    "Database write {desc} abandoned because the store was closed; the data "
                    "was not stored: {data!r}",
                    desc=desc,
                    data=args,
                )
                raise

        return await retry(
            lambda: self.run_interaction(desc, func, *args, **kwargs),
            self.retry_delays,
            lambda e: self.engine.is_transient(e) and not self._closed,
            on_retry=again,
            on_give_up=give_up,
            on_recovered=recovered,
            sleep=sleep,
        )

    def _sleep(self, seconds: float) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()

        def wake() -> None:
            self._sleeping.pop(call, None)
            d.callback(None)

        call = self.reactor.callLater(seconds, wake)
        self._sleeping[call] = d
        return d


def read_schema(filename: str) -> str:
    """The text of a schema file shipped in ``ilchat/store`` (package data)."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), filename), encoding="utf-8") as f:
        return f.read()
