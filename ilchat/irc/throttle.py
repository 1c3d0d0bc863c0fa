# -*- test-case-name: tests.irc.test_throttle -*-
"""
Failed-login throttle for IRC password checks (SASL PLAIN and ``PASS login:password``).

Without it, one address can try passwords against ILIAS accounts as fast as bcrypt answers. Failures
are counted under three keys: the address and account together, the address alone (one address
trying many accounts) and the account alone (many addresses trying one account). Past
``free_failures`` for an address and account, every answer for them waits ``delay``, doubled per
further failure up to ``max_delay`` (so a NAT'd lecture hall is not slowed down by one student's
typos); at a key's limit the key is locked for ``lockout`` seconds, and while locked every
login is refused without checking the password, the right one included. A success clears the
address-and-account key only, so a user who mistyped goes on normally, while a guesser who also
knows one password gains nothing for the other accounts.

Each key forgets its failures ``window`` seconds after the last one (and not before its lock has
ended): so one more failure right after a lock locks again, while a success clears the count. The
table holds at most ``max_entries`` keys: expired ones go first, then the least recently used, so a
flood of new addresses costs bounded memory. Logging is once per burst: the first failure of an
address for a login, and one line when a key is locked, with the count and the time span.
"""

from collections import OrderedDict
from typing import Any, Optional, Set, Tuple

import attr
from twisted.logger import Logger

__all__ = ["LoginThrottle"]

#: Distinct addresses remembered per account, only for its log line ("from 20+ addresses").
_MAX_ADDRESSES = 20


@attr.s(slots=True, auto_attribs=True)
class _Entry:
    failures: int = 0
    first: float = 0.0
    last: float = 0.0
    locked_until: float = 0.0
    #: The addresses seen for an account key (bounded), for its log line.
    addresses: Set[str] = attr.ib(factory=set)


class LoginThrottle:
    """
    Counts failed IRC logins per address, account, and both, on an injected clock.

    Use: L{refusal} before checking a password (seconds left of a lock, or None), L{delay} for how
    long to hold the answer, then L{failed} or L{succeeded} with the outcome.
    """

    _log = Logger()

    def __init__(self, limits: Any, clock: Any) -> None:
        """
        Args:
            limits: an L{ilchat.config.IrcLoginLimits} (server.cfg ``irc`` → ``limits``).
            clock: provides ``seconds()`` (the reactor, or a C{task.Clock} in tests).
        """
        self.limits = limits
        self._clock = clock
        self._entries: "OrderedDict[Tuple[str, ...], _Entry]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _keys(address: str, login: str) -> Tuple[Tuple[str, ...], ...]:
        account = login.casefold()  # usr_data.login compares case-insensitively in MariaDB
        return (("pair", address, account), ("ip", address), ("account", account))

    def _limit(self, key: Tuple[str, ...]) -> int:
        limits = self.limits
        return {"pair": limits.failures_per_account, "ip": limits.failures_per_ip,
                "account": limits.failures_per_account_total}[key[0]]

    def _live(self, key: Tuple[str, ...], now: float) -> Optional[_Entry]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._expired(entry, now):
            del self._entries[key]
            return None
        return entry

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now >= entry.locked_until and now >= entry.last + self.limits.window

    def refusal(self, address: str, login: str) -> Optional[float]:
        """Seconds until a login for C{login} from C{address} is possible again, or None."""
        now = self._clock.seconds()
        left = 0.0
        for key in self._keys(address, login):
            entry = self._live(key, now)
            if entry is not None and entry.locked_until > now:
                left = max(left, entry.locked_until - now)
        return left or None

    def delay(self, address: str, login: str) -> float:
        """Seconds to hold the answer to this attempt: grows with the address's failures for the login."""
        entry = self._live(self._keys(address, login)[0], self._clock.seconds())
        extra = (entry.failures if entry is not None else 0) - self.limits.free_failures
        if extra < 0:
            return 0.0
        return min(self.limits.max_delay, self.limits.delay * 2 ** min(extra, 32))

    def failed(self, address: str, login: str) -> None:
        """Count one failed login; lock (and log) every key that reaches its limit."""
        now = self._clock.seconds()
        for key in self._keys(address, login):
            entry = self._live(key, now)
            if entry is None:
                entry = self._add(key, now)
                if key[0] == "pair":
                    self._log.info("Failed IRC login from {address} for {login!r}",
                                   address=address, login=login)
            else:
                self._entries.move_to_end(key)
            entry.failures += 1
            entry.last = now
            if key[0] == "account" and len(entry.addresses) < _MAX_ADDRESSES:
                entry.addresses.add(address)
            if entry.failures >= self._limit(key) and entry.locked_until <= now:
                entry.locked_until = now + self.limits.lockout
                self._log_lock(key, entry, now, login)

    def succeeded(self, address: str, login: str) -> None:
        """A correct password: forget this address's failures for this account."""
        self._entries.pop(self._keys(address, login)[0], None)

    def _add(self, key: Tuple[str, ...], now: float) -> _Entry:
        # Least recently failed first: expired keys are dropped from the front, and when the table
        # is still full the oldest key goes, whatever its state.
        while self._entries and self._expired(next(iter(self._entries.values())), now):
            self._entries.popitem(last=False)
        while len(self._entries) >= self.limits.max_entries:
            self._entries.popitem(last=False)
        entry = _Entry(first=now, last=now)
        self._entries[key] = entry
        return entry

    def _log_lock(self, key: Tuple[str, ...], entry: _Entry, now: float, login: str) -> None:
        fields = dict(count=entry.failures, span=round(now - entry.first), lockout=f"{self.limits.lockout:g}")
        if key[0] == "pair":
            self._log.warn(
                "{count} failed IRC logins from {address} for {login!r} in {span} s; locked for {lockout} s",
                address=key[1], login=login, **fields)
        elif key[0] == "ip":
            self._log.warn(
                "{count} failed IRC logins from {address} in {span} s; address locked for {lockout} s",
                address=key[1], **fields)
        else:
            self._log.warn(
                "{count} failed IRC logins for {login!r} from {addresses} addresses in {span} s; "
                "account locked for {lockout} s",
                login=login, **fields,
                addresses=f"{_MAX_ADDRESSES}+" if len(entry.addresses) >= _MAX_ADDRESSES else len(entry.addresses))
