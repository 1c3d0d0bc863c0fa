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
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial import unittest

from ilchat.chat.history import HistoryRow, HistoryWriter
from ilchat.journal import Journal
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
        lost = [json.loads(e["row_json"]) for e in events if "row_json" in e]
        self.assertEqual(lost, [{"room_id": 1, "message": self.row(7).message,
                                 "timestamp": self.row(7).timestamp, "hist_id": None}])

    def test_an_outage_is_logged_once_and_its_end_once(self) -> None:
        """Ten failed attempts give one warning with the queue length, and one line when back."""
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = task.Clock()
        sink = _FlakySink(failures=10)
        writer = HistoryWriter(clock, sink, describe="db1")
        for n in range(3):
            writer.add(self.row(n))
        clock.advance(0)
        for _ in range(12):
            clock.advance(30)
        self.assertEqual([len(b) for b in sink.batches], [3])
        lines = [e for e in events if e.get("what") == "Chat history"
                 and e["log_level"] > LogLevel.debug]
        self.assertEqual([e["log_level"] for e in lines], [LogLevel.warn, LogLevel.info])
        self.assertEqual(lines[0]["count"], 3)
        self.assertEqual(lines[1]["failures"], 10)
        self.assertEqual(lines[1]["count"], 0)
        self.assertEqual(self.flushLoggedErrors(), [])


class _RefusingSink:
    """Refuses (like a strict database) every batch that holds a row whose message says "bad"."""

    def __init__(self) -> None:
        self.attempts: List[int] = []
        self.stored: List[HistoryRow] = []

    def __call__(self, rows: Sequence[HistoryRow]) -> Any:
        self.attempts.append(len(rows))
        if any("bad" in r.message for r in rows):
            return fail(_Refused("Data too long for column 'message'"))
        self.stored.extend(rows)
        return succeed(None)


class _Refused(Exception):
    pass


class HistoryWriterRefusalClockTests(unittest.SynchronousTestCase):
    def test_one_refused_row_in_a_batch_is_isolated(self) -> None:
        """The batch is halved around the bad row; the 99 others are stored in order at once."""
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = task.Clock()
        sink = _RefusingSink()
        writer = HistoryWriter(clock, sink, batch_size=100,
                               is_refused=lambda e: isinstance(e, _Refused))
        for n in range(100):
            writer.add(HistoryRow(1, "bad" if n == 37 else str(n), n))
        d = writer.drain()
        for _ in range(40):
            clock.advance(0)
        self.successResultOf(d)
        self.assertEqual([r.timestamp for r in sink.stored], [n for n in range(100) if n != 37])
        refused = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(len(refused), 1)
        self.assertEqual(refused[0]["log_level"], LogLevel.error)
        self.assertEqual(json.loads(refused[0]["row_json"])["timestamp"], 37)
        self.assertIn("Data too long", refused[0]["error"])
        # No backoff was needed: the whole batch went through on the reactor turns above.
        self.assertLess(len(sink.attempts), 20)
        # Later rows keep flowing in full batches.
        writer.add(HistoryRow(1, "after", 100))
        clock.advance(0)
        self.assertEqual(sink.stored[-1].timestamp, 100)


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

    def refused_value(self) -> str:
        """A message the database refuses: too long under strict mode, or unencodable."""
        if self.database_kind == "mysql":
            return json.dumps({"content": "x" * 5000})
        return '{"content":"\ud800"}'

    async def test_a_refused_row_holds_back_no_other(self) -> None:
        """
        Rows around one the database refuses (too long for MariaDB's VARCHAR(4000) under
        STRICT_TRANS_TABLES; a lone surrogate, which neither driver encodes) are all stored, in
        order; the bad row is logged once with the reason, and later rows keep flowing.
        """
        events: List[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        def write(rows: Sequence[HistoryRow]) -> Any:
            return defer.ensureDeferred(self.store.add_history_rows(
                [(r.hist_id, r.room_id, r.message, r.timestamp) for r in rows]))

        writer = HistoryWriter(reactor, write, is_refused=self.store.is_refused_data,
                               allocate_ids=self.store.next_history_ids)
        bad = {13: self.refused_value(), 40: '{"content":"\udfff"}'}
        for n in range(60):
            writer.add(HistoryRow(1, bad.get(n, json.dumps({"n": n})), 1_795_301_000 + n))
        await writer.drain()
        writer.add(HistoryRow(1, json.dumps({"n": 60}), 1_795_301_060))
        await writer.drain()
        rows = await fetch_rows_async(
            self.database, "SELECT hist_id, message FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([json.loads(r["message"])["n"] for r in rows],
                         [n for n in range(61) if n not in bad])
        refused = [e for e in events if "refused" in e.get("log_format", "")]
        self.assertEqual(sorted(json.loads(e["row_json"])["timestamp"] - 1_795_301_000 for e in refused),
                         [13, 40])
        self.assertEqual(len(writer), 0)

    async def test_journaled_rows_take_ids_from_a_reserve_in_queue_order(self) -> None:
        """
        With a journal, one allocation covers the first batch and ID_RESERVE more: the later
        rows get their id when they are queued (journaled with it), so their batches need no
        id transaction of their own; ids ascend in the order the rows came.
        """
        journal = Journal(self.mktemp(), reactor)
        journal.open()
        self.addCleanup(journal.close)
        allocations: List[int] = []

        def allocate(count: int) -> Any:
            allocations.append(count)
            return defer.ensureDeferred(self.store.next_history_ids(count))

        def write(rows: Sequence[HistoryRow]) -> Any:
            return defer.ensureDeferred(self.store.add_history_rows(
                [(r.hist_id, r.room_id, r.message, r.timestamp) for r in rows]))

        writer = HistoryWriter(reactor, write, journal=journal, allocate_ids=allocate)
        for n in range(3):
            writer.add(HistoryRow(1, json.dumps({"n": n}), 1_795_301_000 + n))
        await writer.drain()
        for n in range(3, 3 + HistoryWriter.ID_RESERVE):
            writer.add(HistoryRow(1, json.dumps({"n": n}), 1_795_301_000 + n))
            await writer.drain()
        # Below half the reserve, a write tops it up: the rows never wait for an id.
        half = HistoryWriter.ID_RESERVE // 2
        self.assertEqual(allocations, [3 + HistoryWriter.ID_RESERVE, half + 1])
        writer.add(HistoryRow(1, json.dumps({"n": 99}), 1_795_301_099))
        await writer.drain()
        self.assertEqual(allocations, [3 + HistoryWriter.ID_RESERVE, half + 1])
        rows = await fetch_rows_async(
            self.database, "SELECT hist_id, message FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([json.loads(r["message"])["n"] for r in rows],
                         list(range(3 + HistoryWriter.ID_RESERVE)) + [99])


    async def test_take_id_gives_the_row_its_id_before_it_is_queued(self) -> None:
        """
        reserve_ids fills the reserve; take_id hands out ascending ids that the rows keep in
        the table, and none while a row queued earlier still waits for its id.
        """
        journal = Journal(self.mktemp(), reactor)
        journal.open()
        self.addCleanup(journal.close)

        def write(rows: Sequence[HistoryRow]) -> Any:
            return defer.ensureDeferred(self.store.add_history_rows(
                [(r.hist_id, r.room_id, r.message, r.timestamp) for r in rows]))

        writer = HistoryWriter(reactor, write, journal=journal, allocate_ids=self.store.next_history_ids)
        self.assertIsNone(writer.take_id())
        await writer.reserve_ids()
        taken = [writer.take_id() for _ in range(3)]
        self.assertEqual(taken, sorted(taken))
        for n, hist_id in enumerate(taken):
            writer.add(HistoryRow(1, json.dumps({"n": n}), 1_795_301_000, hist_id=hist_id))
        await writer.drain()
        rows = await fetch_rows_async(
            self.database, "SELECT hist_id, message FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([(r["hist_id"], json.loads(r["message"])["n"]) for r in rows],
                         list(zip(taken, range(3))))
        clock = task.Clock()  # no write runs until the clock is advanced
        waiting = HistoryWriter(clock, write, journal=journal, allocate_ids=self.store.next_history_ids)
        waiting.add(HistoryRow(1, json.dumps({"n": "waits"}), 1_795_301_001))
        await waiting.reserve_ids()
        self.assertIsNone(waiting.take_id())  # the queued row (no id yet) gets the next one


class HistoryWriterSQLiteTests(HistoryWriterStoreMixin, unittest.TestCase):
    database_kind = "sqlite"


class HistoryWriterMariaDBTests(HistoryWriterStoreMixin, unittest.TestCase):
    database_kind = "mysql"
