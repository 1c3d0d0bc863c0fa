# -*- test-case-name: tests.chat.test_history -*-
"""
Background persistence of room messages: deliver first, write after, lose nothing.

The chat domain hands every delivered room message to a L{HistoryWriter}. The writer queues the
rows and writes them in batches on a later reactor turn, so a slow or failing database never
delays live delivery. A failed batch stays at the head of the queue and is retried with a growing
delay (1 s, 2 s, 4 s ... capped at 30 s) until the database takes it; rows are written in the
order they were delivered. L{HistoryWriter.drain} waits for the queue to empty on shutdown.
"""

from collections import deque
from typing import Any, Awaitable, Callable, Deque, List, Optional, Sequence

import attrs
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["HistoryRow", "HistoryWriter"]


@attrs.frozen(slots=True)
class HistoryRow:
    """One ``chatroom_history`` row: ``message`` is the stored JSON, ``timestamp`` in seconds."""

    room_id: int
    message: str
    timestamp: int


WriteBatch = Callable[[Sequence[HistoryRow]], "Awaitable[Any] | Deferred[Any] | Any"]


class HistoryWriter:
    """
    Queue of history rows written in order, in batches, retried on failure.

    Args:
        reactor: provides C{callLater}; a C{task.Clock} in tests.
        write_batch: writes a list of rows in one transaction (e.g. C{store.add_history_batch}).
            It may return a Deferred or a coroutine; a failure means "nothing was written" and the
            same rows are offered again later.
        batch_size: the most rows handed to C{write_batch} at once.
    """

    _log = Logger()

    MAX_RETRY_DELAY = 30.0

    def __init__(
        self,
        reactor: IReactorTime,
        write_batch: WriteBatch,
        batch_size: int = 500,
        retry_base: float = 1.0,
    ) -> None:
        self._reactor = reactor
        self._retry_base = retry_base
        self._write_batch = write_batch
        self._batch_size = batch_size
        self._queue: Deque[HistoryRow] = deque()
        self._call: Optional[IDelayedCall] = None
        self._in_flight = False
        self._failures = 0
        self._drain_waiters: List[Deferred[None]] = []

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, row: HistoryRow) -> None:
        """Queue C{row}; it is written on a later reactor turn, never synchronously."""
        self._queue.append(row)
        if self._call is None and not self._in_flight:
            self._call = self._reactor.callLater(0, self._flush)

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

        Every row still queued is written to the error log in full (room, timestamp, JSON), so
        an operator can re-insert it: nothing disappears without a trace.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for row in self._queue:
            self._log.critical(
                "Chat history row not written: room_id={room_id} timestamp={timestamp} "
                "message={message_json}",
                room_id=row.room_id,
                timestamp=row.timestamp,
                message_json=row.message,
            )
        self._queue.clear()
        self._fire_drained()

    def _flush(self) -> None:
        self._call = None
        if not self._queue:
            self._fire_drained()
            return
        batch = [self._queue[i] for i in range(min(self._batch_size, len(self._queue)))]
        self._in_flight = True
        d = maybeDeferred(_call_maybe_coroutine, self._write_batch, batch)
        d.addCallbacks(self._written, self._failed, callbackArgs=(len(batch),))

    def _written(self, _: object, count: int) -> None:
        self._in_flight = False
        if self._failures:
            self._log.info("Chat history written again after {failures} failed attempts",
                           failures=self._failures)
        self._failures = 0
        for _ in range(count):
            self._queue.popleft()
        if self._queue:
            self._call = self._reactor.callLater(0, self._flush)
        else:
            self._fire_drained()

    def _failed(self, failure: Failure) -> None:
        self._in_flight = False
        self._failures += 1
        delay = min(self.MAX_RETRY_DELAY, self._retry_base * 2.0 ** (self._failures - 1))
        self._log.failure(
            "Writing {count} chat history rows failed (attempt {attempt}); retrying in {delay} s",
            failure,
            count=len(self._queue),
            attempt=self._failures,
            delay=delay,
        )
        self._call = self._reactor.callLater(delay, self._flush)

    def _fire_drained(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for d in waiters:
            d.callback(None)


def _call_maybe_coroutine(fn: WriteBatch, batch: Sequence[HistoryRow]) -> Any:
    result = fn(batch)
    if hasattr(result, "__await__") and not isinstance(result, Deferred):
        return Deferred.fromCoroutine(result)  # type: ignore[arg-type]
    return result
