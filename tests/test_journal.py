"""
Tests for L{ilchat.journal.Journal} and the history writer's replay: records survive a crash,
a record cut off mid-write is skipped with a log line, rows already stored are not stored twice.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Sequence

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from ilchat.chat.history import HistoryRow, HistoryWriter
from ilchat.journal import Journal, JournalError, decode_line, encode_record
from tests.support.db import StoreTestMixin, fetch_rows_async


class JournalTests(unittest.TestCase):
    def setUp(self) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.path = os.path.join(os.path.abspath(self.mktemp()), "sub", "j.journal")

    def journal(self) -> Journal:
        journal = Journal(self.path, reactor)
        journal.open()
        self.addCleanup(journal.close)
        return journal

    def test_records_round_trip_even_with_lone_surrogates(self) -> None:
        """Any JSON-able record comes back as written; the lines are ASCII."""
        record = {"m": "caf\u00e9 \ud800 \U0001f389", "k": 1}
        line = encode_record(record)
        self.assertTrue(line.isascii())
        self.assertEqual(decode_line(line[:-1]), record)
        self.assertIsNone(decode_line(line[:-1].replace(b"caf", b"cag")))

    async def test_sync_puts_appends_on_disk_and_replay_reads_them(self) -> None:
        journal = self.journal()
        for n in range(100):
            journal.append({"n": n})
        await journal.sync()
        self.assertEqual([r["n"] for r in Journal(self.path, reactor).replay()], list(range(100)))
        journal.truncate()
        await journal.sync()
        self.assertEqual(os.path.getsize(self.path), 0)

    async def test_cut_off_last_record_is_skipped_and_logged(self) -> None:
        """A crash mid-write: the partial line is skipped, everything before it is kept."""
        journal = self.journal()
        journal.append({"n": 1})
        journal.append({"n": 2})
        await journal.close()
        with open(self.path, "ab") as f:
            f.write(encode_record({"n": 3})[:9])
        again = self.journal()
        self.assertEqual(again.replay(), [{"n": 1}, {"n": 2}])
        warned = [e for e in self.events if "cut off" in e.get("log_format", "")]
        self.assertEqual(len(warned), 1)
        # Later records start on a line of their own and are read back.
        again.append({"n": 4})
        await again.sync()
        self.assertEqual([r["n"] for r in Journal(self.path, reactor).replay()], [1, 2, 4])

    async def test_damaged_record_in_the_middle_is_skipped(self) -> None:
        journal = self.journal()
        for n in range(3):
            journal.append({"n": n})
        await journal.close()
        with open(self.path, "rb") as f:
            lines = f.read().split(b"\n")
        lines[1] = lines[1].replace(b'"n":1', b'"n":7')
        with open(self.path, "wb") as f:
            f.write(b"\n".join(lines))
        self.assertEqual(Journal(self.path, reactor).replay(), [{"n": 0}, {"n": 2}])
        damaged = [e for e in self.events if "damaged" in e.get("log_format", "")]
        self.assertEqual([e["line"] for e in damaged], [2])

    def test_an_unwritable_folder_is_a_clear_error(self) -> None:
        """journal_dir pointing at a file: the error names the journal and the config key."""
        blocker = os.path.abspath(self.mktemp())
        with open(blocker, "w"):
            pass
        with self.assertRaises(JournalError) as caught:
            Journal(os.path.join(blocker, "j.journal"), reactor).open()
        self.assertIn("journal_dir", str(caught.exception))
        self.assertIn(blocker, str(caught.exception))

    def test_a_journal_in_use_is_refused(self) -> None:
        """Two servers on one journal would replay each other's rows: the second is refused."""
        self.journal()
        with self.assertRaises(JournalError) as caught:
            Journal(self.path, reactor).open()
        self.assertIn("in use", str(caught.exception))


class JournaledWriterMixin(StoreTestMixin):
    """The writer's journal against the real store."""

    def writer(self, journal: Journal) -> HistoryWriter:
        def write(rows: Sequence[HistoryRow]) -> Any:
            return defer.ensureDeferred(self.store.add_history_rows(
                [(r.hist_id, r.room_id, r.message, r.timestamp) for r in rows]))

        return HistoryWriter(reactor, write, is_refused=self.store.is_refused_data,
                             journal=journal, allocate_ids=self.store.next_history_ids)

    async def test_replay_writes_each_row_once(self) -> None:
        """
        A crash after the database stored some rows but before the journal was emptied: the
        replay skips the rows whose journaled id is present and stores the rest, in order.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "h.journal")
        first = Journal(path, reactor)
        first.open()
        writer = self.writer(first)
        for n in range(5):
            writer.add(HistoryRow(1, json.dumps({"n": n}), 1_795_301_000 + n))
        await writer.drain()
        self.assertEqual(first.size(), 0)  # emptied: the database has them
        # Rows 5..9 are journaled with ids, rows 5 and 6 reach the table, then "the crash".
        ids = await self.store.next_history_ids(5)
        for n, hist_id in zip(range(5, 10), ids):
            first.append({"k": n, "row": {"room_id": 1, "message": json.dumps({"n": n}),
                                          "timestamp": 1_795_301_000 + n}})
        first.append({"ids": [[n, hist_id] for n, hist_id in zip(range(5, 10), ids)]})
        first.append({"k": 10, "row": {"room_id": 1, "message": json.dumps({"n": 10}),
                                       "timestamp": 1_795_301_010}})
        first.append({"k": 11, "row": {"room_id": 1, "message": '{"n": 11, "bad": "\\ud800"}',
                                       "timestamp": 1_795_301_011}})
        first.append({"drop": 11})
        await self.store.add_history_rows(
            [(ids[0], 1, json.dumps({"n": 5}), 1_795_301_005), (ids[1], 1, json.dumps({"n": 6}), 1_795_301_006)])
        await first.close()

        second = Journal(path, reactor)
        second.open()
        self.addCleanup(second.close)
        writer = self.writer(second)
        self.assertEqual(writer.replay(), 6)
        writer.add(HistoryRow(1, json.dumps({"n": 12}), 1_795_301_012))
        await writer.drain()
        rows = await fetch_rows_async(self.database, "SELECT message FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([json.loads(r["message"])["n"] for r in rows], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12])
        self.assertEqual(second.size(), 0)


class JournaledWriterSQLiteTests(JournaledWriterMixin, unittest.TestCase):
    database_kind = "sqlite"


class JournaledWriterMariaDBTests(JournaledWriterMixin, unittest.TestCase):
    database_kind = "mysql"


class JournalRotationTests(unittest.TestCase):
    async def test_a_journal_under_steady_load_stays_bounded(self) -> None:
        """
        The queue never empties (a slow database, rows keep coming): past its size limit the
        journal goes on in a fresh file, the old one is removed once its rows are written, and
        a replay at any moment finds every row not yet written.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "h.journal")
        journal = Journal(path, reactor)
        journal.open()
        self.addCleanup(journal.close)
        pending: List[defer.Deferred] = []
        written: List[int] = []

        def slow_write(rows: Sequence[HistoryRow]) -> defer.Deferred:
            d: defer.Deferred = defer.Deferred()
            d.addCallback(lambda _: written.extend(r.timestamp for r in rows))
            pending.append(d)
            return d

        ids = iter(range(1, 10_000))
        writer = HistoryWriter(reactor, slow_write, batch_size=5, journal=journal,
                               allocate_ids=lambda n: defer.succeed([next(ids) for _ in range(n)]))
        writer.JOURNAL_ROTATE_BYTES = 600
        sent = 0
        # The previous segment's inode changes at each rotation (the current file becomes it).
        old_inode, rotations = None, 0
        for _ in range(10):  # a standing backlog: the queue never empties below
            writer.add(HistoryRow(1, json.dumps({"n": sent}), sent))
            sent += 1
        while sent < 200:
            for _ in range(5):
                writer.add(HistoryRow(1, json.dumps({"n": sent}), sent))
                sent += 1
            while not pending:
                await journal.sync()
                await deferLater(reactor, 0, lambda: None)
            # A crash now: the journal holds every row that is not written yet.
            records = Journal(path, reactor).replay()
            journaled = {r["row"]["timestamp"] for r in records if "row" in r}
            self.assertLessEqual(set(range(sent)) - set(written), journaled)
            if journal.has_old():
                inode = os.stat(journal.old_path).st_ino
                rotations += inode != old_inode
                old_inode = inode
                self.assertLess(os.path.getsize(journal.old_path), 3000)
            pending.pop(0).callback(None)
            self.assertLess(journal.size(), 3000)
        while pending or len(writer):
            while pending:
                pending.pop(0).callback(None)
            await deferLater(reactor, 0, lambda: None)
        # Rotated again and again: each old segment was removed before the next one was made.
        self.assertGreater(rotations, 3)
        self.assertEqual(written, list(range(200)))
        await writer.drain()
        self.assertEqual(journal.size(), 0)
        self.assertFalse(journal.has_old())
