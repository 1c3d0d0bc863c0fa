# -*- test-case-name: tests.irc.test_throttle -*-
"""
A token bucket for per-connection flood control.

Like Synapse's C{Ratelimiter}, the bucket is refilled on demand from the clock rather than by a
timer per connection, so an idle connection costs nothing.
"""

from twisted.internet.interfaces import IReactorTime

__all__ = ["TokenBucket"]


class TokenBucket:
    """
    C{burst} tokens, refilled at C{rate} tokens per second; each command costs one.

    IRC servers let a client send a short burst (joining channels, a paste) and then hold it to a
    steady rate; this is that rule.
    """

    __slots__ = ("_rate", "_burst", "_clock", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, clock: IReactorTime) -> None:
        self._rate = float(rate)
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def consume(self) -> bool:
        """Take one token if there is one; False means the caller must wait."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def delay(self) -> float:
        """Seconds until the next token is available (0 if one is available now)."""
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self._rate
