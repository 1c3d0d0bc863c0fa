"""
Tests for L{ilchat.irc.throttle}: the failed-login throttle on a fake clock (delays, locks, expiry,
the bounded table, one log line per burst). The same throttle in front of real password checks
against MariaDB is tested in L{tests.irc.test_auth}.
"""

from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ilchat.config import IrcLoginLimits
from ilchat.irc.throttle import LoginThrottle
from tests.irc.support import capture_log, log_lines


def throttle_lines(events: List[Dict[str, Any]]) -> List[str]:
    return log_lines(events, "ailed IRC login")


class LoginThrottleTests(SynchronousTestCase):
    def make(self, **limits: Any) -> LoginThrottle:
        self.clock = Clock()
        self.clock.advance(1000)
        return LoginThrottle(IrcLoginLimits(**limits), self.clock)

    def test_delay_starts_after_free_failures_and_doubles_up_to_the_cap(self) -> None:
        """No delay for the first failures; then delay, 2x, 4x, ... capped at max_delay."""
        throttle = self.make(free_failures=2, delay=1.0, max_delay=5.0, failures_per_account=50)
        delays = []
        for _ in range(7):
            delays.append(throttle.delay("10.0.0.1", "alice"))
            throttle.failed("10.0.0.1", "alice")
        self.assertEqual(delays, [0.0, 0.0, 1.0, 2.0, 4.0, 5.0, 5.0])

    def test_locked_after_the_limit_then_free_after_lockout(self) -> None:
        """The Nth failure locks: refused for lockout seconds; then free, until the next failure."""
        throttle = self.make(failures_per_account=3, lockout=300.0)
        for _ in range(2):
            throttle.failed("10.0.0.1", "alice")
        self.assertIsNone(throttle.refusal("10.0.0.1", "alice"))
        throttle.failed("10.0.0.1", "alice")
        self.assertEqual(throttle.refusal("10.0.0.1", "alice"), 300.0)
        self.clock.advance(200)
        self.assertEqual(throttle.refusal("10.0.0.1", "alice"), 100.0)
        self.clock.advance(100)
        self.assertIsNone(throttle.refusal("10.0.0.1", "alice"))
        throttle.failed("10.0.0.1", "alice")  # within the window: the count is still there
        self.assertEqual(throttle.refusal("10.0.0.1", "alice"), 300.0)

    def test_other_address_and_other_account_unaffected(self) -> None:
        """A lock of (address, account) leaves other addresses and other accounts alone."""
        throttle = self.make(failures_per_account=3)
        for _ in range(3):
            throttle.failed("10.0.0.1", "alice")
        self.assertIsNotNone(throttle.refusal("10.0.0.1", "alice"))
        self.assertIsNotNone(throttle.refusal("10.0.0.1", "ALICE"))  # logins ignore case
        self.assertIsNone(throttle.refusal("10.0.0.2", "alice"))
        self.assertIsNone(throttle.refusal("10.0.0.1", "bob"))
        self.assertEqual(throttle.delay("10.0.0.2", "alice"), 0.0)

    def test_address_trying_many_accounts_is_locked(self) -> None:
        """failures_per_ip failures over any accounts lock the address for every account."""
        throttle = self.make(failures_per_ip=5, failures_per_account=50)
        for index in range(5):
            throttle.failed("10.0.0.9", f"user{index}")
        self.assertIsNotNone(throttle.refusal("10.0.0.9", "someone-else"))
        self.assertIsNone(throttle.refusal("10.0.0.8", "someone-else"))

    def test_account_tried_from_many_addresses_is_locked(self) -> None:
        """failures_per_account_total failures from any addresses lock the account."""
        throttle = self.make(failures_per_account_total=5, failures_per_account=50)
        events = capture_log(self)
        for index in range(5):
            throttle.failed(f"10.0.1.{index}", "alice")
        self.assertIsNotNone(throttle.refusal("10.9.9.9", "alice"))
        self.assertIsNone(throttle.refusal("10.9.9.9", "bob"))
        self.assertIn("5 failed IRC logins for 'alice' from 5 addresses in 0 s; account locked for 300 s",
                      throttle_lines(events))

    def test_account_log_line_caps_the_addresses_it_remembers(self) -> None:
        """An account guessed from thousands of addresses keeps 20 of them: "from 20+ addresses"."""
        throttle = self.make(failures_per_account_total=500, failures_per_ip=50)
        events = capture_log(self)
        for index in range(500):
            throttle.failed(f"10.1.{index // 256}.{index % 256}", "alice")
        self.assertIn("500 failed IRC logins for 'alice' from 20+ addresses in 0 s; account locked for 300 s",
                      throttle_lines(events))

    def test_success_resets_that_address_and_account_only(self) -> None:
        """A right password clears the address's failures for that account, not the address's."""
        throttle = self.make(free_failures=1, failures_per_account=10, failures_per_ip=4)
        for _ in range(3):
            throttle.failed("10.0.0.1", "alice")
        self.assertGreater(throttle.delay("10.0.0.1", "alice"), 0)
        throttle.succeeded("10.0.0.1", "alice")
        self.assertEqual(throttle.delay("10.0.0.1", "alice"), 0.0)
        throttle.failed("10.0.0.1", "alice")
        self.assertIsNotNone(throttle.refusal("10.0.0.1", "bob"))  # the 4th for the address

    def test_failures_expire_after_the_window(self) -> None:
        """Failures older than window are forgotten, so they never add up to a lock."""
        throttle = self.make(failures_per_account=3, window=60.0)
        throttle.failed("10.0.0.1", "alice")
        throttle.failed("10.0.0.1", "alice")
        self.clock.advance(61)
        throttle.failed("10.0.0.1", "alice")
        self.assertIsNone(throttle.refusal("10.0.0.1", "alice"))
        self.assertEqual(len(throttle), 3)  # one key each: pair, address, account

    def test_table_is_bounded(self) -> None:
        """A flood of new addresses and accounts never holds more than max_entries keys."""
        throttle = self.make(max_entries=100)
        for index in range(1000):
            throttle.failed(f"10.{index // 256}.{index % 256}.1", f"user{index}")
        self.assertLessEqual(len(throttle), 100)
        self.clock.advance(10_000)
        throttle.failed("10.200.0.1", "late")
        self.assertEqual(len(throttle), 3)  # the expired keys went first

    def test_one_log_line_per_burst(self) -> None:
        """Twelve failures log the first one and the lock, not twelve lines."""
        throttle = self.make(failures_per_account=12, lockout=300.0)
        events = capture_log(self)
        for _ in range(12):
            throttle.failed("127.0.0.1", "alice")
            self.clock.advance(5)
        for _ in range(20):
            throttle.refusal("127.0.0.1", "alice")
        self.assertEqual(throttle_lines(events), [
            "Failed IRC login from 127.0.0.1 for 'alice'",
            "12 failed IRC logins from 127.0.0.1 for 'alice' in 55 s; locked for 300 s",
        ])
