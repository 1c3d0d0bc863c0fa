# -*- test-case-name: tests.ilias.test_osc -*-
"""
Unread counts of the On-Screen Chat, read from ``osc_activity``/``osc_messages`` with a time limit.

A message is delivered with each recipient's count, so a slow or failing count (a frozen database
answers only after ``database_timeout``) must not hold it up: after L{STORE_WAIT} seconds the
count is shown as 0. While the database is down every count fails, so that is one warning and one
"works again" line, not one per message.
"""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["STORE_WAIT", "UnreadCounts", "at_most"]

#: Seconds a message's delivery waits for its row to reach the table, and for each unread count.
STORE_WAIT = 2.0


def at_most(clock: IReactorTime, d: "Deferred[Any]", seconds: float) -> "Deferred[None]":
    """Fire when C{d} fires or after C{seconds}, whichever is first (C{d} itself goes on)."""
    done: Deferred[None] = Deferred()

    def finish(_: Any = None) -> Any:
        if call.active():
            call.cancel()
        if not done.called:
            done.callback(None)
        return _

    call = clock.callLater(seconds, finish)
    d.addBoth(finish)
    return done


class UnreadCounts:
    """C{await counts.count(conversation_id, user_id)}: the store's count, or 0 in time."""

    _log = Logger()

    def __init__(self, store: Any, clock: IReactorTime) -> None:
        self._store = store
        self._clock = clock
        self._failing = False

    async def count(self, conversation_id: str, user_id: int) -> int:
        outcome: List[Any] = []
        counted = maybeDeferred(self._store.count_unread, conversation_id, user_id)
        counted.addBoth(outcome.append)
        await at_most(self._clock, counted, STORE_WAIT)
        if not outcome or isinstance(outcome[0], Failure):
            if not self._failing:
                error = outcome[0].value if outcome else f"no answer within {STORE_WAIT} s"
                self._log.warn("Counting unread messages fails ({error!r}); showing 0 until the "
                               "database answers again", error=error)
            self._failing = True
            return 0
        count = int(outcome[0] or 0)
        if self._failing:
            self._log.info("Counting unread messages works again")
            self._failing = False
        return count
