# -*- test-case-name: tests.test_retry -*-
"""
Trying again what may heal (a database that restarts, a deadlock), with waits between attempts.

:func:`retry` is the one loop: the database's deadlock retries and its writes that must not be
lost use it. :func:`exponential` is the one backoff schedule (first wait, doubled each time, up
to a ceiling); the history writer, which retries from a queue rather than a loop, takes its waits
from it too.
"""

from __future__ import annotations

import itertools
from typing import Awaitable, Callable, Iterable, Iterator, Optional, TypeVar

from twisted.internet import task
from twisted.internet.interfaces import IReactorTime

__all__ = ["exponential", "retry"]

T = TypeVar("T")


def exponential(first: float, maximum: float, factor: float = 2.0) -> Iterator[float]:
    """The waits ``first``, ``first * factor``, ... each at most ``maximum``, for ever."""
    delay = first
    while delay < maximum:
        yield delay
        delay *= factor
    yield from itertools.repeat(maximum)


async def retry(
    attempt: Callable[[], "Awaitable[T]"],
    delays: Iterable[float],
    retry_on: Callable[[Exception], bool],
    clock: Optional[IReactorTime] = None,
    on_retry: Optional[Callable[[int, Exception, float], None]] = None,
    on_give_up: Optional[Callable[[int, Exception], None]] = None,
    on_recovered: Optional[Callable[[int], None]] = None,
    sleep: Optional[Callable[[float], Awaitable[None]]] = None,
) -> T:
    """
    ``await attempt()`` until it succeeds; after a failure that ``retry_on`` accepts, wait the
    next of ``delays`` (0: at once, on the same turn) and try again.

    Args:
        on_retry: ``(failed attempts, error, delay)`` before each wait, for the log line.
        on_give_up: ``(attempts, error)`` when the error is not retried or the delays ran out;
            the error is raised after it.
        on_recovered: ``(attempts)`` after a success that took more than one attempt.
        sleep: how to wait (default: ``task.deferLater`` on ``clock``); whatever it raises ends
            the retries and is raised.
    """
    waits = iter(delays)
    attempts = 0
    while True:
        attempts += 1
        try:
            result = await attempt()
        except Exception as e:
            delay = next(waits, None) if retry_on(e) else None
            if delay is None:
                if on_give_up is not None:
                    on_give_up(attempts, e)
                raise
            if on_retry is not None:
                on_retry(attempts, e, delay)
            if delay > 0:
                if sleep is not None:
                    await sleep(delay)
                else:
                    await task.deferLater(clock, delay, lambda: None)
        else:
            if attempts > 1 and on_recovered is not None:
                on_recovered(attempts)
            return result

