"""The one retry loop and backoff schedule (``ilchat.retry``), on a fake clock."""

from __future__ import annotations

import itertools
from typing import List

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from ilchat.retry import exponential, retry


class Flaky:
    """Fails with ``errors`` in turn, then answers ``"done"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


class ExponentialTests(TestCase):
    def test_doubles_up_to_the_ceiling_and_stays_there(self) -> None:
        self.assertEqual(list(itertools.islice(exponential(1.0, 30.0), 8)),
                         [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0])
        self.assertEqual(list(itertools.islice(exponential(0.5, 1.0, factor=3.0), 3)), [0.5, 1.0, 1.0])


class RetryTests(TestCase):
    def test_waits_each_delay_on_the_clock_then_succeeds(self) -> None:
        clock = task.Clock()
        flaky = Flaky(OSError("a"), OSError("b"))
        seen: List[tuple] = []
        d = defer.ensureDeferred(retry(
            flaky, [5.0, 10.0, 20.0], lambda e: isinstance(e, OSError), clock,
            on_retry=lambda n, e, delay: seen.append(("retry", n, str(e), delay)),
            on_recovered=lambda n: seen.append(("recovered", n)),
        ))
        self.assertEqual(flaky.calls, 1)
        clock.advance(4.9)
        self.assertEqual(flaky.calls, 1)
        clock.advance(0.1)
        self.assertEqual(flaky.calls, 2)
        clock.advance(10.0)
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(seen, [("retry", 1, "a", 5.0), ("retry", 2, "b", 10.0), ("recovered", 3)])
        self.assertFalse(clock.getDelayedCalls())

    def test_an_error_not_retried_is_raised_at_once(self) -> None:
        clock = task.Clock()
        flaky = Flaky(KeyError("no"))
        given_up: List[tuple] = []
        d = defer.ensureDeferred(retry(flaky, [1.0], lambda e: isinstance(e, OSError), clock,
                                       on_give_up=lambda n, e: given_up.append((n, type(e)))))
        self.failureResultOf(d, KeyError)
        self.assertEqual((flaky.calls, given_up), (1, [(1, KeyError)]))

    def test_the_last_error_is_raised_when_the_delays_run_out(self) -> None:
        clock = task.Clock()
        flaky = Flaky(OSError("1"), OSError("2"), OSError("3"))
        given_up: List[tuple] = []
        d = defer.ensureDeferred(retry(flaky, [1.0, 1.0], lambda e: True, clock,
                                       on_give_up=lambda n, e: given_up.append((n, str(e)))))
        clock.pump([1.0, 1.0])
        self.assertEqual(str(self.failureResultOf(d, OSError).value), "3")
        self.assertEqual(given_up, [(3, "3")])

    def test_zero_delays_retry_on_the_same_turn(self) -> None:
        flaky = Flaky(OSError(), OSError())
        d = defer.ensureDeferred(retry(flaky, [0.0, 0.0], lambda e: True, task.Clock()))
        self.assertEqual(self.successResultOf(d), "done")
        self.assertEqual(flaky.calls, 3)

    def test_a_failing_sleep_ends_the_retries(self) -> None:
        class Closed(Exception):
            pass

        async def sleep(delay: float) -> None:
            raise Closed()

        flaky = Flaky(OSError())
        d = defer.ensureDeferred(retry(flaky, [1.0], lambda e: True, sleep=sleep))
        self.failureResultOf(d, Closed)
        self.assertEqual(flaky.calls, 1)
