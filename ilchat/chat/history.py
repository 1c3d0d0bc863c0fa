# -*- test-case-name: tests.chat.test_history -*-
"""
Background persistence of room messages: deliver first, write after, lose nothing.

The chat domain hands every delivered room message to a L{HistoryWriter}. The writer queues the
rows and writes them in batches on a later reactor turn, so a slow or failing database never
delays live delivery. Rows are written in the order they were delivered.

Two kinds of failure are told apart (the store says which, through C{is_refused}):

* the database is unreachable (lost connection, restart, timeout): the batch stays at the head of
  the queue and is retried with a growing delay (1 s, 2 s, 4 s ... capped at 30 s) until the
  database takes it. One warning when the writes start failing and one line when they work
  again, each with the queue length; no line per retry.
* the database refuses the data (a value too long for its column, a string the driver cannot
  encode): the batch is split in halves until the refused row is alone, every other row is
  written in order, and the refused row is logged once at "error" with the reason and its full
  content, then dropped. One bad row never holds back any other.

With a L{Journal}, every row is appended to it when it is queued and the journal is emptied once
the queue is; at start L{HistoryWriter.replay} queues what a crash left in it, before any new row.
Ids (``hist_id``) are then taken from the database (C{allocate_ids}) and journaled before the
rows are written, and the store skips a row whose id is already present: a row written just
before a crash is not written twice. The reserve of ids is filled at start
(L{HistoryWriter.reserve_ids}) and topped up by the writes before it runs out, so a message takes
its row's id when it is posted (L{HistoryWriter.take_id}): the id the live event and the IRC
``msgid`` carry is the row's. L{HistoryWriter.drain} waits for the queue to empty on shutdown.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Awaitable, Callable, Deque, Dict, Iterator, List, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.retry import exponential

__all__ = ["HistoryRow", "HistoryWriter"]


@attrs.frozen(slots=True)
class HistoryRow:
    """
    One ``chatroom_history`` row: ``message`` is the stored JSON, ``timestamp`` in seconds.

    ``hist_id`` is None until the database has given the row its id; ``key`` is the row's
    number in the journal (0 without one).
    """

    room_id: int
    message: str
    timestamp: int
    hist_id: Optional[int] = None
    key: int = 0


WriteBatch = Callable[[Sequence[HistoryRow]], "Awaitable[Any] | Deferred[Any] | Any"]
AllocateIds = Callable[[int], "Awaitable[List[int]] | Deferred[List[int]]"]


def _never_refused(error: BaseException) -> bool:
    return False


class HistoryWriter:
    """
    Queue of history rows written in order, in batches, retried on failure.

    Args:
        reactor: provides C{callLater}; a C{task.Clock} in tests.
        write_batch: writes a list of rows in one transaction (e.g. C{store.add_history_rows}).
            It may return a Deferred or a coroutine; a failure means "nothing was written" and the
            same rows are offered again later (a row with a C{hist_id} already stored is skipped).
        batch_size: the most rows handed to C{write_batch} at once.
        is_refused: True for an error that is about the rows themselves, not the database's
            health (C{store.is_refused_data}); such a batch is split to find the refused row.
        journal: a L{ilchat.journal.Journal} the rows are appended to while they wait.
        allocate_ids: C{allocate_ids(n)} takes C{n} fresh ids, for rows with a C{hist_id}
            (needed with a journal, so that a replayed row keeps its id).
        describe: names the database in log lines.
        row_type: the attrs class of the rows (a C{key} field; C{hist_id} if ids are allocated),
            rebuilt from the journal by field name.
        what: names the rows in log lines (``"Chat history"``).
    """

    _log = Logger()

    MAX_RETRY_DELAY = 30.0
    #: A journal this big while rows are still queued goes on in a fresh file (see _written).
    JOURNAL_ROTATE_BYTES = 4 * 1024 * 1024
    #: Ids taken ahead with every allocation: the next rows get theirs in :meth:`add`, journaled
    #: with the row, so a steady stream of messages costs one transaction per batch instead of
    #: two (ids, then rows) and no extra ``fsync`` for an ids record. Ids never used (a restart)
    #: are gaps, as ILIAS leaves them.
    ID_RESERVE = 64

    def __init__(
        self,
        reactor: IReactorTime,
        write_batch: WriteBatch,
        batch_size: int = 500,
        retry_base: float = 1.0,
        is_refused: Callable[[BaseException], bool] = _never_refused,
        journal: Any = None,
        allocate_ids: Optional[AllocateIds] = None,
        describe: str = "the database",
        row_type: Any = HistoryRow,
        what: str = "Chat history",
    ) -> None:
        if journal is not None and allocate_ids is None and hasattr(row_type, "hist_id"):
            raise ValueError("a journaled HistoryWriter of rows with a hist_id needs allocate_ids")
        self._row_type = row_type
        self._what = what
        self._reactor = reactor
        self._retry_base = retry_base
        self._write_batch = write_batch
        self._batch_size = batch_size
        self._limit = batch_size
        self._is_refused = is_refused
        self._journal = journal
        self._allocate_ids = allocate_ids
        self._describe = describe
        self._queue: Deque[HistoryRow] = deque()
        self._call: Optional[IDelayedCall] = None
        self._in_flight = False
        self._failures = 0
        self._delays: Iterator[float] = iter(())
        self._failing_since = 0.0
        self._next_key = 1
        #: Allocated ids not given to a row yet, in increasing order (see ID_RESERVE).
        self._spare_ids: Deque[int] = deque()
        self._id_lock = DeferredLock()
        #: The last key in the journal's previous segment, until every row of it is written.
        self._rotated_key: Optional[int] = None
        self._drain_waiters: List[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, row: HistoryRow) -> None:
        """Queue C{row}; it is written on a later reactor turn, never synchronously."""
        if self._journal is not None:
            changes: Dict[str, Any] = {"key": self._next_key}
            # An id from the reserve, unless a row queued earlier still waits for one: ids
            # follow the queue's order.
            if getattr(row, "hist_id", 0) is None:
                hist_id = self.take_id()
                if hist_id is not None:
                    changes["hist_id"] = hist_id
            row = attrs.evolve(row, **changes)
            self._next_key += 1
            self._journal.append({"k": row.key, "row": _fields(row)})
        self._queue.append(row)
        self._schedule()

    def take_id(self) -> Optional[int]:
        """
        The id of the next row, from the reserve, for a caller that needs it before the row
        exists (the message event's id is its ``hist_id``); None when the reserve is empty, or
        a row queued earlier still waits for its id: ids follow the queue's order.
        """
        if not self._spare_ids or (self._queue and getattr(self._queue[-1], "hist_id", 0) is None):
            return None
        return self._spare_ids.popleft()

    async def reserve_ids(self) -> None:
        """
        Fill the id reserve now (at start, so the first messages have their id too); a failure
        is left to the first write, which allocates what it needs.
        """
        if self._journal is None or self._allocate_ids is None:
            return
        await self._allocate(self.ID_RESERVE, self.ID_RESERVE)

    async def _allocate(self, count: int, wanted: int) -> None:
        """Take C{count} more ids unless the reserve holds C{wanted} by then (one at a time)."""
        await self._id_lock.acquire()
        try:
            if len(self._spare_ids) < wanted:
                self._spare_ids.extend(await maybeDeferred(self._allocate_ids, count))
        finally:
            self._id_lock.release()

    def journaled(self) -> "Deferred[None]":
        """Fire when every row added so far is on disk (at once without a journal)."""
        return succeed(None) if self._journal is None else self._journal.sync()

    def replay(self) -> int:
        """
        Queue the rows a previous run left in the journal, in their order; returns how many.

        Call it once, before the first L{add}. Rows whose id was journaled keep it, so the store
        skips those already written; refused rows (``"drop"`` records) are not queued again.
        """
        if self._journal is None:
            return 0
        rows: Dict[int, Any] = {}
        for record in self._journal.replay():
            if "row" in record:
                key = int(record["k"])
                try:
                    rows[key] = self._row_type(**record["row"], key=key)
                except (TypeError, ValueError) as e:
                    self._log.error("{what}: journal record {key} unreadable ({error}), skipped: "
                                    "{record}", what=self._what, key=key, error=e,
                                    record=json.dumps(record))
            elif "ids" in record:
                for key, hist_id in record["ids"]:
                    if key in rows:
                        rows[key] = attrs.evolve(rows[key], hist_id=int(hist_id))
            elif "drop" in record:
                rows.pop(int(record["drop"]), None)
        # The rows stay in the journal (under their keys) until the queue is empty again.
        replayed = sorted(rows.values(), key=lambda r: r.key)
        self._next_key = max(rows, default=0) + 1
        if self._journal.has_old():
            self._rotated_key = self._next_key - 1
        self._queue.extend(replayed)
        if replayed:
            self._schedule()
        return len(replayed)

    def drain(self) -> "Deferred[None]":
        """Fire once every queued row has been written (at once if the queue is empty)."""
        if not self._queue and not self._in_flight:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drain_waiters.append(d)
        if self._call is not None and not self._in_flight and self._failures == 0:
            # Write now instead of waiting for the scheduled turn.
            self._call.cancel()
            self._call = None
            self._flush()
        return d

    def cancel(self) -> None:
        """
        Stop retrying, when the service stops for good and the database never came back.

        Without a journal, every row still queued is written to the error log in full (room,
        timestamp, JSON), so an operator can re-insert it: nothing disappears without a trace.
        With one, the rows stay in the journal and are written at the next start.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._journal is not None:
            if self._queue:
                self._log.warn(
                    "{what}: {count} rows kept in the journal {path} for the next start",
                    what=self._what,
                    count=len(self._queue),
                    path=self._journal.path,
                )
        else:
            for row in self._queue:
                self._log.critical(
                    "{what} row not written: {row_json}",
                    what=self._what,
                    row_json=json.dumps(_fields(row)),
                )
        self._queue.clear()
        self._fire_drained()

    def _schedule(self) -> None:
        if self._call is None and not self._in_flight:
            self._call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._call = None
        if not self._queue:
            self._fire_drained()
            return
        batch = [self._queue[i] for i in range(min(self._limit, len(self._queue)))]
        self._in_flight = True
        d = ensureDeferred(self._write(batch))
        d.addCallbacks(self._written, self._failed, callbackArgs=(len(batch),),
                       errbackArgs=(len(batch),))

    async def _write(self, batch: List[HistoryRow]) -> None:
        missing = sum(1 for row in batch if getattr(row, "hist_id", 0) is None)
        reserve = self.ID_RESERVE if self._journal is not None else 0
        spare = self._spare_ids
        # The reserve is topped up before it runs out, so that rows keep getting their id
        # when they are queued.
        if self._allocate_ids is not None and len(spare) < missing + reserve // 2:
            await self._allocate(missing - len(spare) + reserve, missing + reserve // 2)
        if missing and self._allocate_ids is not None:
            ids = iter([spare.popleft() for _ in range(missing)])
            batch = [row if row.hist_id is not None else attrs.evolve(row, hist_id=next(ids))
                     for row in batch]
            for index, row in enumerate(batch):
                self._queue[index] = row
            if self._journal is not None:
                self._journal.append({"ids": [[row.key, row.hist_id] for row in batch]})
        if self._journal is not None:
            # The rows and their ids must be on disk before they can be in the table, or a crash
            # in between would write them again under new ids. Usually the turn's fsync has
            # already run (rows from the reserve carry their id in their own record).
            await self._journal.sync()
        await maybeDeferred(self._write_batch, batch)

    def _written(self, _: object, count: int) -> None:
        self._in_flight = False
        if self._failures:
            self._log.info(
                "{what}: {where} answers again after {seconds:.1f} s and {failures} "
                "failed attempts; {count} rows queued",
                what=self._what,
                where=self._describe,
                seconds=self._reactor.seconds() - self._failing_since,
                failures=self._failures,
                count=len(self._queue) - count,
            )
        self._failures = 0
        self._limit = min(self._batch_size, self._limit * 2)
        for _ in range(count):
            self._queue.popleft()
        self._next()

    def _next(self) -> None:
        if self._journal is not None:
            self._trim_journal()
        if self._queue:
            self._call = self._reactor.callLater(0, self._flush)
        else:
            self._fire_drained()

    def _trim_journal(self) -> None:
        """
        Empty the journal when the queue is empty. Under a steady load the queue may never be
        empty, so a journal over the size limit goes on in a fresh file, and the old one is
        removed once every row in it is written: the journal stays bounded by what waits.
        """
        journal = self._journal
        if not self._queue:
            journal.truncate()
            self._rotated_key = None
            return
        if self._rotated_key is not None and self._queue[0].key > self._rotated_key:
            journal.drop_old()
            self._rotated_key = None
        if self._rotated_key is None and journal.size() > self.JOURNAL_ROTATE_BYTES:
            journal.rotate()
            self._rotated_key = self._next_key - 1

    def _failed(self, failure: Failure, count: int) -> None:
        self._in_flight = False
        if self._is_refused(failure.value):
            if count > 1:
                # Halve until the refused row is alone; the rows before it are written meanwhile.
                self._limit = max(1, count // 2)
            else:
                self._refuse(self._queue.popleft(), failure)
            self._next()
            return
        self._failures += 1
        if self._failures == 1:
            self._delays = exponential(self._retry_base, self.MAX_RETRY_DELAY)
        delay = next(self._delays)
        if self._failures == 1:
            self._failing_since = self._reactor.seconds()
            self._log.warn(
                "{what}: {where} does not take writes ({error}); {count} rows queued, "
                "retrying with a backoff",
                what=self._what,
                where=self._describe,
                error=_reason(failure),
                count=len(self._queue),
            )
        else:
            self._log.debug(
                "{what}: write attempt {attempt} failed ({error}); retrying in {delay} s",
                what=self._what,
                attempt=self._failures,
                error=_reason(failure),
                delay=delay,
            )
        self._call = self._reactor.callLater(delay, self._flush)

    def _refuse(self, row: HistoryRow, failure: Failure) -> None:
        # json.dumps keeps the log line ASCII, so even a lone surrogate can be logged and read.
        self._log.error(
            "{what} row refused by {where} ({error}), not stored: {row_json}",
            what=self._what,
            where=self._describe,
            error=_reason(failure),
            row_json=json.dumps(_fields(row)),
        )
        if self._journal is not None:
            self._journal.append({"drop": row.key})

    def _fire_drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)


def _fields(row: Any) -> Dict[str, Any]:
    """A row's fields for the journal and log lines (its journal key is not one of them)."""
    return attrs.asdict(row, filter=lambda attribute, _: attribute.name != "key")


def _reason(failure: Failure) -> str:
    return "{}: {}".format(type(failure.value).__name__, failure.value)
