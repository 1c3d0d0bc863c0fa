"""
Tests for ilchat.store.database and ilchat.store.engines: opening, table checks, the *_seq ids
under concurrency, parameter conversion and the write-retry policy.
"""

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from ilchat.store import MissingTableError, StoreClosedError, StoreError, create_store
from ilchat.store.database import Transaction
from ilchat.store.engines import split_sql_script
from tests.support.db import (
    StoreTestMixin,
    TestDatabaseConfig,
    fetch_rows,
    make_mariadb_database_async,
    mariadb_admin_connection,
)


class OpenMariaDBTests(unittest.TestCase):
    """Opening a store on MySQL/MariaDB checks, and never creates, the ILIAS tables."""

    async def test_missing_table_is_a_clear_error_naming_it(self) -> None:
        """A database without osc_activity refuses to open, and the message names the table."""
        database = await make_mariadb_database_async(self, skip_tables=["osc_activity"])
        store = create_store(database, reactor)
        with self.assertRaises(MissingTableError) as caught:
            await store.open()
        self.assertEqual(caught.exception.table, "osc_activity")
        self.assertIn("'osc_activity'", str(caught.exception))
        self.assertIn(database.name, str(caught.exception))
        # Nothing was created behind the operator's back.
        tables = await defer.succeed(None).addCallback(
            lambda _: fetch_rows(
                database,
                "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                (database.name, "osc_activity"),
            )
        )
        self.assertEqual(tables, [])

    async def test_unknown_database_is_a_clear_error(self) -> None:
        """A database that does not exist gives a StoreError naming it and the server."""
        config = TestDatabaseConfig(type="mysql", name="ilchat_t_no_such_db", host="127.0.0.1", port=3306, user="root")
        store = create_store(config, reactor)
        with self.assertRaises(StoreError) as caught:
            await store.open()
        self.assertIn("ilchat_t_no_such_db", str(caught.exception))
        self.assertIn("127.0.0.1:3306", str(caught.exception))

    async def test_connection_talks_utf8mb4(self) -> None:
        """The pool's connections use utf8mb4, so 4-byte characters are never rejected."""
        database = await make_mariadb_database_async(self)
        store = create_store(database, reactor)
        await store.open()
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))

        def charset_txn(txn: Transaction) -> str:
            txn.execute("SELECT @@character_set_connection")
            return txn.fetchone()[0]

        self.assertEqual(await store.db.run_interaction("charset", charset_txn), "utf8mb4")


class OpenSQLiteTests(unittest.TestCase):
    """Opening a store on SQLite creates the tables (and the folder) itself."""

    async def test_open_creates_folder_and_tables_in_wal_mode(self) -> None:
        """A fresh path gets its folder, every ILIAS table, and the WAL journal."""
        path = os.path.abspath(os.path.join(self.mktemp(), "data", "chat.sqlite"))
        store = create_store(TestDatabaseConfig(type="sqlite", name=path), reactor)
        await store.open()
        await store.close()
        connection = sqlite3.connect(path)
        try:
            names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            connection.close()
        from ilchat.store import ILIAS_TABLES

        self.assertTrue(set(ILIAS_TABLES) <= names, set(ILIAS_TABLES) - names)
        self.assertEqual(mode, "wal")

    async def test_open_twice_keeps_data(self) -> None:
        """Opening an existing file again creates nothing new and keeps the rows."""
        path = os.path.abspath(os.path.join(self.mktemp(), "chat.sqlite"))
        config = TestDatabaseConfig(type="sqlite", name=path)
        store = create_store(config, reactor)
        await store.open()
        await store.add_history(1, "{}", 5)
        await store.close()
        store = create_store(config, reactor)
        await store.open()
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        self.assertEqual(len(await store.get_history(1, 10)), 1)

    async def test_unusable_path_is_a_clear_error(self) -> None:
        """A path whose folder cannot be made gives a StoreError naming the path."""
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w") as f:
            f.write("a file, not a folder")
        config = TestDatabaseConfig(type="sqlite", name=os.path.join(blocker, "chat.sqlite"))
        store = create_store(config, reactor)
        with self.assertRaises((StoreError, OSError)):
            await store.open()


class EngineTests(unittest.SynchronousTestCase):
    """The pieces of the dialect engines that need no database."""

    def test_mysql_param_style_escapes_percent(self) -> None:
        """``?`` becomes ``%s`` and a literal ``%`` is doubled, since MySQLdb formats with ``%``."""
        from ilchat.store.engines import MySQLEngine

        self.assertEqual(
            MySQLEngine().convert_param_style("SELECT 1 WHERE a LIKE '50%' AND b = ?"),
            "SELECT 1 WHERE a LIKE '50%%' AND b = %s",
        )

    def test_split_sql_script_skips_comments(self) -> None:
        """Statements end with a semicolon at the end of a line; comment lines are dropped."""
        self.assertEqual(
            split_sql_script("-- c\nCREATE TABLE a (\n x INT\n);\nCREATE TABLE b (y INT);\n"),
            ["CREATE TABLE a (\n x INT\n)", "CREATE TABLE b (y INT)"],
        )


class DatabaseTestsMixin(StoreTestMixin):
    """Transactions and ids on both databases."""

    async def test_placeholders_and_literal_percent(self) -> None:
        """Queries use ``?`` on both drivers, and a ``%`` in the SQL text is not a placeholder."""

        def txn_func(txn: Transaction) -> list:
            txn.execute("INSERT INTO usr_pref (usr_id, keyword, value) VALUES (?, ?, ?)", (1, "k", "100%"))
            return txn.select("SELECT value FROM usr_pref WHERE value LIKE '10%' AND usr_id = ?", (1,))

        self.assertEqual(await self.store.db.run_interaction("percent", txn_func), [{"value": "100%"}])

    async def test_failed_transaction_is_rolled_back(self) -> None:
        """An exception in the transaction function undoes its writes and reaches the caller."""

        def failing_txn(txn: Transaction) -> None:
            txn.execute("INSERT INTO chatroom_settings (room_id) VALUES (?)", (7,))
            raise ValueError("boom")

        with self.assertRaises(ValueError):
            await self.store.db.run_interaction("failing", failing_txn)
        self.assertEqual(await self.store.get_room_ids(), [])

    async def test_concurrent_ids_are_unique(self) -> None:
        """
        Many history writes at once never share a hist_id: each INSERT into chatroom_history_seq
        gets its own auto-increment value, and deadlocked DELETEs are retried.
        """
        count = 200
        results = await defer.gatherResults(
            [defer.ensureDeferred(self.store.add_history(1, '{"n":%d}' % n, n)) for n in range(count)],
            consumeErrors=True,
        )
        self.assertEqual(len(set(results)), count)
        rows = fetch_rows(self.database, "SELECT COUNT(DISTINCT hist_id) AS n, COUNT(*) AS m FROM chatroom_history")
        self.assertEqual((int(rows[0]["n"]), int(rows[0]["m"])), (count, count))
        # The sequence table is cleaned up: its top row is the highest id handed out.
        seq = fetch_rows(self.database, "SELECT MAX(sequence) AS top FROM chatroom_history_seq")
        self.assertEqual(int(seq[0]["top"]), max(results))

    async def test_concurrent_batches_and_single_ids_are_unique(self) -> None:
        """Batches and single writes interleaved still produce distinct ids for every row."""
        calls = []
        for n in range(40):
            if n % 2:
                calls.append(defer.ensureDeferred(self.store.add_history_batch([(1, "{}", n)] * 5)))
            else:
                calls.append(defer.ensureDeferred(self.store.add_history(1, "{}", n)).addCallback(lambda i: [i]))
        results = await defer.gatherResults(calls, consumeErrors=True)
        ids = [i for batch in results for i in batch]
        self.assertEqual(len(ids), 20 * 5 + 20)
        self.assertEqual(len(set(ids)), len(ids))

    async def test_closed_store_refuses_work(self) -> None:
        """After close() a call fails with StoreClosedError instead of hanging."""
        await self.store.close()
        with self.assertRaises(StoreClosedError):
            await self.store.get_room_ids()

    async def test_close_waits_for_running_writes(self) -> None:
        """close() lets the writes already started finish, so nothing in flight is lost."""
        writes = [defer.ensureDeferred(self.store.add_history(1, "{}", n)) for n in range(20)]
        await self.store.close()
        for d in writes:
            self.assertTrue(d.called)
        await defer.gatherResults(writes)
        rows = fetch_rows(self.database, "SELECT COUNT(*) AS n FROM chatroom_history")
        self.assertEqual(int(rows[0]["n"]), 20)


class DatabaseMariaDBTests(DatabaseTestsMixin, unittest.TestCase):
    """Transactions and ids on MariaDB, with a pool of ten connections."""

    database_kind = "mysql"
    store_options = {"cp_min": 2, "cp_max": 10}


class DatabaseSQLiteTests(DatabaseTestsMixin, unittest.TestCase):
    """Transactions and ids on SQLite (one connection)."""

    database_kind = "sqlite"


class RetryMariaDBTests(StoreTestMixin, unittest.TestCase):
    """The write-retry policy, against a real lost connection."""

    database_kind = "mysql"
    store_options = {"cp_min": 1, "cp_max": 1, "retry_delays": (0.05, 0.05, 0.05)}

    async def _connection_id(self) -> int:
        def connection_id_txn(txn: Transaction) -> int:
            txn.execute("SELECT CONNECTION_ID()")
            return int(txn.fetchone()[0])

        return await self.store.db.run_interaction("connection_id", connection_id_txn)

    async def test_history_write_survives_a_killed_connection(self) -> None:
        """
        When the server drops the pool's connection, add_history logs the error, reconnects
        after the backoff, and stores the message: nothing is lost.
        """
        connection_id = await self._connection_id()
        admin = mariadb_admin_connection()
        try:
            admin.cursor().execute("KILL %s", (connection_id,))
        finally:
            admin.close()
        hist_id = await self.store.add_history(1, '{"content":"still here"}', 5)
        self.assertEqual(hist_id, 1)
        self.assertEqual([r["message"] for r in await self.store.get_history(1, 5)], ['{"content":"still here"}'])
        self.assertNotEqual(await self._connection_id(), connection_id)
        # adbapi logs its failed rollback on the dead connection; that is expected here.
        self.flushLoggedErrors()

    async def test_permanent_error_is_raised_not_retried(self) -> None:
        """A constraint violation is not transient: the caller gets it at once."""
        await self.store.add_osc_message("m1", "c1", 6, "hi", 5)
        with self.assertRaises(Exception) as caught:
            await self.store.add_osc_message("m1", "c1", 6, "again", 6)
        self.assertIn("Duplicate", str(caught.exception))
