# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limits that cost nothing while idle.

One token bucket serves every limit in ilchat: the web chat's messages and typing events per
connection, and IRC's flood control per connection.
"""

from typing import Callable, Optional, Tuple

__all__ = ["TokenBucket"]


class TokenBucket:
    """
    A leaky token bucket for one connection: ``rate`` actions per second, bursts up to ``burst``.

    As Synapse's ``Ratelimiter`` does, nothing ticks: the bucket remembers when it was last
    looked at and computes how much has leaked since, so a million idle connections cost no timer.
    The clock is injected (anything with ``seconds()``, such as the reactor or a ``task.Clock``).
    """

    __slots__ = ("rate", "burst", "on_refused", "_clock", "_tokens", "_updated")

    def __init__(
        self, rate: float, burst: float, clock, on_refused: Optional[Callable[[], None]] = None
    ) -> None:
        """
        Args:
            rate: tokens added per second; ``0`` or less means unlimited.
            burst: the bucket's size, the most actions allowed at once after a quiet spell.
            clock: provides ``seconds()``.
            on_refused: called on every refused ``consume`` (the metrics count refusals).
        """
        self.rate = rate
        self.burst = max(burst, 1)
        self.on_refused = on_refused
        self._clock = clock
        self._tokens = float(self.burst)
        self._updated = clock.seconds()

    def _refill(self) -> None:
        now = self._clock.seconds()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._updated = now

    def consume(self, cost: float = 1.0) -> Tuple[bool, float]:
        """
        Take C{cost} tokens if there are enough.

        Returns:
            ``(allowed, retry_after)``: whether the action may go on, and if not, the seconds
            until it would be (so that the refusal can say when to try again).
        """
        if self.rate <= 0:
            return True, 0.0
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return True, 0.0
        if self.on_refused is not None:
            self.on_refused()
        return False, (cost - self._tokens) / self.rate
