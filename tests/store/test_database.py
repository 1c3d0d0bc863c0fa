"""
Tests for ilchat.store.database and ilchat.store.engines: opening, table checks, the *_seq ids
under concurrency, parameter conversion and the write-retry policy.
"""

import os
import sqlite3
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial import unittest

from ilchat.store import MissingTableError, StoreClosedError, StoreError, create_store
from ilchat.store.database import Transaction
from ilchat.store.engines import split_sql_script
from tests.support.db import (
    StoreTestMixin,
    TestDatabaseConfig,
    fetch_rows,
    fetch_rows_async,
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
        with self.assertRaises(StoreError) as caught:
            await store.open()
        self.assertIn(blocker, str(caught.exception))


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
    """Lost connections and the write-retry policy, against real MariaDB failures."""

    database_kind = "mysql"
    store_options = {"cp_min": 1, "cp_max": 1, "retry_delays": (0.05, 0.05, 0.05)}

    async def _hold_sequence_lock(self) -> Any:
        """
        Make the store's writes time out after 1 s, and hold a lock on ``chatroom_history_seq``
        from another session: the next id allocation fails with MariaDB error 1205 (lock wait
        timeout) until the returned admin connection rolls back.
        """

        def set_timeout_txn(txn: Transaction) -> None:
            txn.execute("SET SESSION innodb_lock_wait_timeout = 1")

        await self.store.db.run_interaction("set_timeout", set_timeout_txn)

        def lock_sequence() -> Any:
            admin = mariadb_admin_connection(self.database.name)
            admin.autocommit(False)
            admin.cursor().execute("INSERT INTO chatroom_history_seq (sequence) VALUES (1000)")
            return admin

        return await threads.deferToThread(lock_sequence)

    async def _connection_id(self) -> int:
        def connection_id_txn(txn: Transaction) -> int:
            txn.execute("SELECT CONNECTION_ID()")
            return int(txn.fetchone()[0])

        return await self.store.db.run_interaction("connection_id", connection_id_txn)

    async def _kill_pool_connection(self) -> int:
        connection_id = await self._connection_id()
        admin = mariadb_admin_connection()
        try:
            admin.cursor().execute("KILL %s", (connection_id,))
        finally:
            admin.close()
        return connection_id

    async def test_dropped_connection_is_replaced_before_use(self) -> None:
        """
        A connection the server dropped (as after wait_timeout overnight) is noticed before the
        transaction runs and replaced, so the call succeeds the first time and nothing is logged
        as an error.
        """
        killed = await self._kill_pool_connection()
        with capturedLogs() as events:
            self.assertEqual(await self.store.get_room_ids(), [])
            hist_id = await self.store.add_history(1, '{"content":"still here"}', 5)
        self.assertEqual(hist_id, 1)
        self.assertNotEqual(await self._connection_id(), killed)
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.error], [])
        self.assertEqual(len(fetch_rows(self.database, "SELECT * FROM chatroom_history")), 1)

    async def test_history_write_is_retried_after_a_lock_wait_timeout(self) -> None:
        """
        When a write fails with a transient error (here: another session holds a lock longer
        than innodb_lock_wait_timeout), it is logged once as a warning and tried again after the
        backoff until it is stored, which is logged too.
        """

        admin = await self._hold_sequence_lock()

        def release() -> None:
            admin.rollback()
            admin.close()

        release_call = reactor.callLater(1.6, threads.deferToThread, release)
        self.addCleanup(lambda: release_call.active() and (release_call.cancel(), release()))
        with capturedLogs() as events:
            hist_id = await self.store.add_history(1, '{"content":"patience"}', 5)
        self.assertGreater(hist_id, 1000)
        self.assertEqual([r["message"] for r in await self.store.get_history(1, 5)], ['{"content":"patience"}'])
        retries = [e for e in events if e["log_level"] == LogLevel.warn and e.get("desc") == "add_history"]
        self.assertEqual(len(retries), 1)
        self.assertIn("1205", formatEvent(retries[0]))
        done = [e for e in events if e["log_level"] == LogLevel.info and e.get("desc") == "add_history"]
        self.assertEqual(len(done), 1)

    async def test_history_batch_without_retry_hands_the_failure_back(self) -> None:
        """
        With C{retry=False} (the room domain's history writer, which keeps the rows and retries
        itself) a transient failure comes back at once: no second retry loop, and no critical
        "lost for good" line for rows that are still queued by the caller.
        """

        admin = await self._hold_sequence_lock()

        def release() -> None:
            admin.rollback()
            admin.close()

        self.addCleanup(threads.deferToThread, release)
        with capturedLogs() as events:
            with self.assertRaises(Exception) as caught:
                await self.store.add_history_batch([(1, '{"content":"queued"}', 5)], retry=False)
        self.assertIn("1205", str(caught.exception))
        self.assertEqual([e for e in events if e["log_level"] >= LogLevel.error], [])
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_history"), [])

    async def test_permanent_error_is_raised_not_retried(self) -> None:
        """A constraint violation is not transient: the caller gets it at once, logged critical."""
        await self.store.add_osc_message("m1", "c1", 6, "hi", 5)
        with capturedLogs() as events:
            with self.assertRaises(Exception) as caught:
                await self.store.add_osc_message("m1", "c1", 6, "again", 6)
        self.assertIn("Duplicate", str(caught.exception))
        levels = [e["log_level"] for e in events if e.get("desc") == "add_osc_message"]
        self.assertEqual(levels, [LogLevel.critical])
        self.assertIn("again", formatEvent([e for e in events if e.get("desc") == "add_osc_message"][0]))

    async def test_close_abandons_a_sleeping_retry_loudly(self) -> None:
        """
        A write waiting for its next attempt when the store closes fails with StoreClosedError,
        after a critical log line holding the data, instead of hanging the shutdown.
        """
        self.store.db.retry_delays = (30.0,)

        admin = await self._hold_sequence_lock()
        self.addCleanup(lambda: threads.deferToThread(lambda: (admin.rollback(), admin.close())))
        with capturedLogs() as events:
            write = defer.ensureDeferred(self.store.add_history(1, '{"content":"bye"}', 5))
            while not self.store.db._sleeping:
                await task.deferLater(reactor, 0.05, lambda: None)
            await self.store.close()
            with self.assertRaises(StoreClosedError):
                await write
        critical = [formatEvent(e) for e in events if e["log_level"] == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertIn("bye", critical[0])


class SequenceBlockMariaDBTests(StoreTestMixin, unittest.TestCase):
    """
    On MariaDB (lock mode "consecutive", increment 1) a block of ids is one multi-row INSERT;
    elsewhere, one INSERT per id as ILIAS does. Either way no id is given out twice, also while
    ILIAS-style single INSERTs run at the same time on other connections.
    """

    database_kind = "mysql"
    store_options = {"cp_min": 2, "cp_max": 6}

    async def test_a_block_is_one_insert_of_consecutive_ids(self) -> None:
        """64 ids: one INSERT on the connection (its Com_insert), consecutive, the top kept."""

        def txn_func(txn: Transaction) -> tuple:
            txn.execute("SHOW SESSION STATUS LIKE 'Com_insert'")
            before = int(txn.fetchone()[1])
            ids = txn.next_ids("chatroom_history", 64)
            txn.execute("SHOW SESSION STATUS LIKE 'Com_insert'")
            return ids, int(txn.fetchone()[1]) - before

        ids, inserts = await self.store.db.run_interaction("block", txn_func)
        self.assertEqual(inserts, 1)
        self.assertEqual(ids, list(range(ids[0], ids[0] + 64)))
        top = await fetch_rows_async(self.database, "SELECT MAX(sequence) AS top FROM chatroom_history_seq")
        self.assertEqual(int(top[0]["top"]), ids[-1])

    async def test_blocks_and_ilias_single_inserts_at_once_never_share_an_id(self) -> None:
        """Blocks from the pool while two other connections take ids one at a time, like PHP."""

        def ilias_next_ids(count: int) -> list:
            connection = mariadb_admin_connection(self.database.name)
            try:
                cursor = connection.cursor()
                ids = []
                for _ in range(count):
                    cursor.execute("INSERT INTO chatroom_history_seq (sequence) VALUES (NULL)")
                    ids.append(int(cursor.lastrowid))
                    cursor.execute("DELETE FROM chatroom_history_seq WHERE sequence < %s", (ids[-1],))
                return ids
            finally:
                connection.close()

        def block(txn: Transaction) -> list:
            return txn.next_ids("chatroom_history", 25)

        calls = [threads.deferToThread(ilias_next_ids, 150) for _ in range(2)]
        calls += [defer.ensureDeferred(self.store.db.run_interaction("block", block)) for _ in range(30)]
        results = await defer.gatherResults(calls, consumeErrors=True)
        ids = [i for batch in results for i in batch]
        self.assertEqual(len(ids), 2 * 150 + 30 * 25)
        self.assertEqual(len(set(ids)), len(ids))

    def test_another_increment_takes_ids_one_at_a_time(self) -> None:
        """With auto_increment_increment 2 (a multi-primary set-up) the block path is off."""
        from ilchat.store.engines import MySQLEngine

        engine = MySQLEngine()
        connection = mariadb_admin_connection(self.database.name)
        self.addCleanup(connection.close)
        cursor = connection.cursor()
        self.assertTrue(engine._takes_consecutive_ids(cursor))
        cursor.execute("SET SESSION auto_increment_increment = 2")
        self.assertFalse(engine._takes_consecutive_ids(cursor))

    async def test_one_at_a_time_ids_are_the_rows_made(self) -> None:
        """Off the block path (here an increment of 2) each id is the row its INSERT made."""
        self.patch(type(self.store.db.engine), "consecutive_ids", lambda engine, raw_txn: False)

        def txn_func(txn: Transaction) -> list:
            txn.execute("SET SESSION auto_increment_increment = 2")
            try:
                return txn.next_ids("chatroom_history", 5)
            finally:
                txn.execute("SET SESSION auto_increment_increment = 1")

        ids = await self.store.db.run_interaction("spread", txn_func)
        self.assertEqual([b - a for a, b in zip(ids, ids[1:])], [2, 2, 2, 2])
        top = await fetch_rows_async(self.database, "SELECT MAX(sequence) AS top FROM chatroom_history_seq")
        self.assertEqual(int(top[0]["top"]), ids[-1])
