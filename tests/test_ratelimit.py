"""Tests for L{ilchat.ratelimit}: the one token bucket of the web chat and IRC."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ilchat.ratelimit import TokenBucket


class TokenBucketTests(SynchronousTestCase):
    """The token bucket, on a fake clock."""

    def test_burst_then_refusal_with_retry_after(self):
        """A full bucket allows C{burst} actions at once, then says how long to wait."""
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, clock=clock)
        self.assertEqual([bucket.consume()[0] for _ in range(3)], [True, True, True])
        allowed, retry_after = bucket.consume()
        self.assertFalse(allowed)
        self.assertAlmostEqual(retry_after, 0.5)

    def test_leaks_on_demand_at_rate(self):
        """Tokens come back at C{rate} per second, computed when asked (no timer)."""
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, clock=clock)
        for _ in range(3):
            bucket.consume()
        clock.advance(0.5)
        self.assertTrue(bucket.consume()[0])
        self.assertFalse(bucket.consume()[0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refill_never_exceeds_burst(self):
        """A long silence refills the bucket to C{burst}, not more."""
        clock = Clock()
        bucket = TokenBucket(rate=10, burst=2, clock=clock)
        clock.advance(3600)
        self.assertEqual([bucket.consume()[0] for _ in range(3)], [True, True, False])

    def test_rate_zero_is_unlimited(self):
        """A rate of 0 turns the throttle off."""
        bucket = TokenBucket(rate=0, burst=1, clock=Clock())
        self.assertTrue(all(bucket.consume()[0] for _ in range(1000)))

    def test_on_refused_is_called_for_each_refusal_only(self):
        """The metrics hook: one call per refused consume, none for allowed ones."""
        clock = Clock()
        refusals = []
        bucket = TokenBucket(rate=1, burst=2, clock=clock, on_refused=lambda: refusals.append(clock.seconds()))
        results = [bucket.consume()[0] for _ in range(4)]
        self.assertEqual(results, [True, True, False, False])
        self.assertEqual(len(refusals), 2)
        clock.advance(1)
        self.assertTrue(bucket.consume()[0])
        self.assertEqual(len(refusals), 2)
