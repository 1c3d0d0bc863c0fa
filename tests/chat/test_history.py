"""
Tests for L{ilchat.chat.history.HistoryWriter}: in order, batched, retried, never silently lost.

The retry logic runs on a fake clock; the writes themselves go to the real store (SQLite and
MariaDB), because what matters is what lands in ``chatroom_history``.
"""

from __future__ import annotations

import json
from typing import Any, List, Sequence

from twisted.internet import defer, reactor, task
from twisted.internet.defer import fail, succeed
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from ilchat.chat.history import HistoryRow, HistoryWriter
from tests.support.db import StoreTestMixin, fetch_rows_async


class _FlakySink:
    """Fails the first C{failures} calls, then records the batches."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: List[List[HistoryRow]] = []

    def __call__(self, rows: Sequence[HistoryRow]) -> Any:
        if self.failures:
            self.failures -= 1
            return fail(RuntimeError("MySQL server has gone away"))
        self.batches.append(list(rows))
        return succeed(None)


class HistoryWriterClockTests(unittest.SynchronousTestCase):
    def row(self, n: int) -> HistoryRow:
        return HistoryRow(1, json.dumps({"content": str(n)}), 1_795_301_000 + n)

    def test_write_happens_on_a_later_turn(self) -> None:
        """Adding a row never writes synchronously: live delivery is never held up."""
        clock = task.Clock()
        sink = _FlakySink()
        writer = HistoryWriter(clock, sink)
        writer.add(self.row(1))
        self.assertEqual(sink.batches, [])
        clock.advance(0)
        self.assertEqual(sink.batches, [[self.row(1)]])

    def test_rows_are_batched(self) -> None:
        """Rows added in one turn go out together, at most batch_size at a time, in order."""
        clock = task.Clock()
        sink = _FlakySink()
        writer = HistoryWriter(clock, sink, batch_size=2)
        for n in range(5):
            writer.add(self.row(n))
        clock.advance(0)
        clock.advance(0)
        clock.advance(0)
        self.assertEqual([[r.timestamp - 1_795_301_000 for r in b] for b in sink.batches],
                         [[0, 1], [2, 3], [4]])

    def test_failures_back_off_and_keep_order(self) -> None:
        """Failed batches are retried after 1, 2, 4 s; later rows wait behind them."""
        clock = task.Clock()
        sink = _FlakySink(failures=3)
        writer = HistoryWriter(clock, sink)
        writer.add(self.row(1))
        clock.advance(0)
        writer.add(self.row(2))
        for step in (1, 2):
            clock.advance(step)
        self.assertEqual(sink.batches, [])
        clock.advance(3.9)
        self.assertEqual(sink.batches, [])
        clock.advance(0.1)
        self.assertEqual(sink.batches, [[self.row(1), self.row(2)]])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_drain_waits_for_the_queue(self) -> None:
        """drain() fires only when every queued row is written."""
        clock = task.Clock()
        sink = _FlakySink(failures=1)
        writer = HistoryWriter(clock, sink)
        writer.add(self.row(1))
        d = writer.drain()
        self.assertNoResult(d)
        clock.advance(1)
        self.successResultOf(d)
        self.assertEqual(sink.batches, [[self.row(1)]])
        self.successResultOf(writer.drain())
        self.flushLoggedErrors(RuntimeError)

    def test_cancel_logs_every_unwritten_row(self) -> None:
        """Giving up at shutdown writes each lost row, in full, to the log."""
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = task.Clock()
        writer = HistoryWriter(clock, _FlakySink(failures=100))
        writer.add(self.row(7))
        d = writer.drain()
        clock.advance(0)
        writer.cancel()
        self.successResultOf(d)
        lost = [e for e in events if e.get("message_json") == self.row(7).message]
        self.assertEqual(len(lost), 1)
        self.assertEqual(lost[0]["timestamp"], self.row(7).timestamp)
        self.flushLoggedErrors(RuntimeError)


class HistoryWriterStoreMixin(StoreTestMixin):
    """The writer against the real store: what ILIAS's PHP will read back."""

    async def test_rows_land_in_chatroom_history_in_order(self) -> None:
        """1,200 rows arrive in three batches, ids ascending in delivery order, emoji intact."""
        batches = []

        def write(rows: Sequence[HistoryRow]) -> Any:
            batches.append(len(rows))
            return defer.ensureDeferred(self.store.add_history_batch(
                [(r.room_id, r.message, r.timestamp) for r in rows]))

        writer = HistoryWriter(reactor, write)
        for n in range(1200):
            writer.add(HistoryRow(1, json.dumps({"n": n, "c": "\U0001f389"}, ensure_ascii=False),
                                  1_795_301_000 + n))
        await writer.drain()
        rows = await fetch_rows_async(
            self.database, "SELECT hist_id, message, timestamp FROM chatroom_history ORDER BY hist_id")
        self.assertEqual(len(rows), 1200)
        self.assertEqual([json.loads(r["message"])["n"] for r in rows], list(range(1200)))
        self.assertEqual(rows[5]["timestamp"], 1_795_301_005)
        self.assertIn("\U0001f389", rows[0]["message"])
        self.assertEqual(batches, [500, 500, 200])

    async def test_store_failure_is_retried_until_written(self) -> None:
        """A batch the database refuses is written on a later attempt, nothing lost."""
        calls = []

        def flaky(rows: Sequence[HistoryRow]) -> Any:
            calls.append(len(rows))
            if len(calls) == 1:
                return fail(RuntimeError("Lost connection to MySQL server"))
            return defer.ensureDeferred(self.store.add_history_batch(
                [(r.room_id, r.message, r.timestamp) for r in rows]))

        writer = HistoryWriter(reactor, flaky, retry_base=0.05)
        writer.add(HistoryRow(2, '{"content":"x"}', 1_795_301_000))
        await writer.drain()
        rows = await fetch_rows_async(self.database, "SELECT room_id, message FROM chatroom_history")
        self.assertEqual(rows, [{"room_id": 2, "message": '{"content":"x"}'}])
        self.assertEqual(calls, [1, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class HistoryWriterSQLiteTests(HistoryWriterStoreMixin, unittest.TestCase):
    database_kind = "sqlite"


class HistoryWriterMariaDBTests(HistoryWriterStoreMixin, unittest.TestCase):
    database_kind = "mysql"
