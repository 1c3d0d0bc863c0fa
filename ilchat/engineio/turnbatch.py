# -*- test-case-name: tests.engineio.test_frames -*-
"""The connections that have something to write in this reactor turn, flushed once at its end.

Both transports batch per turn: a websocket's broadcast frames
(:class:`~ilchat.engineio._internals.FrameOutbox`) and the answers to parked polling GETs
(:class:`~ilchat.engineio.responses.PollOutbox`). :class:`TurnBatch` is the part they share.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.logger import Logger

__all__ = ["TurnBatch"]

_log = Logger(namespace="ilchat.engineio")


class TurnBatch:
    """
    Owners added during this reactor turn, each flushed once when it ends.

    The first L{add} of a turn schedules a C{callLater(0)} on the reactor it is given; L{flush}
    (that call, or earlier: the end of a bus pass) calls C{flush_owner(owner)} for every owner
    added since, in order. One owner's failure is logged and does not keep the others back.

    An owner keeps what it has to write itself and is added once per turn (it knows whether it
    is pending), so the hot path, one more frame for a recipient already pending, does not
    come here at all.
    """

    __slots__ = ("_flush_owner", "_failure", "_dirty", "_call")

    def __init__(self, flush_owner: Callable[[Any], None], failure: str) -> None:
        """
        @param flush_owner: writes what one owner has gathered.
        @param failure: the log line when that raises.
        """
        self._flush_owner = flush_owner
        self._failure = failure
        self._dirty: list[Any] = []
        self._call: Any = None

    def add(self, owner: Any, reactor: Any) -> None:
        """Flush C{owner} at the end of this turn (or at the next L{flush})."""
        self._dirty.append(owner)
        if self._call is None:
            self._call = reactor.callLater(0, self.flush)

    def flush(self) -> None:
        """Flush every owner added since the last flush."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        dirty, self._dirty = self._dirty, []
        flush_owner = self._flush_owner
        for owner in dirty:
            try:
                flush_owner(owner)
            except Exception:
                _log.failure(self._failure)

    def cancel(self) -> None:
        """Forget the owners and the scheduled flush (server shutdown)."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._dirty = []
