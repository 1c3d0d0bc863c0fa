# -*- test-case-name: tests.test_descriptors -*-
"""
File descriptors: as many as the system allows, and one clear log line when they run out.

Every open connection is a descriptor. Most systems start a process with a soft limit of 1,024,
which a lecture hall of websockets (plus the database pool and the log files) exhausts; the hard
limit is usually far higher and may be taken without privileges, so :func:`raise_open_file_limit`
does that at start.

When ``accept()`` fails for lack of descriptors, Twisted's listening port logs a line per
refused socket at info level ("EMFILE encountered; ...", "EMFILE recovery: Closed socket from
..."). :func:`watch_accept_errors` replaces them by one warning per burst that says what happened
and what to do.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import implementer

__all__ = ["raise_open_file_limit", "watch_accept_errors", "AcceptErrorObserver"]

#: A soft limit above this is never asked for (an "unlimited" hard limit cannot be a soft one).
_MOST = 1 << 20

_log = Logger()

#: How Twisted's tcp.Port words its lines about accept() failures (twisted.internet.tcp._accept).
_ACCEPT_ERROR_LINES = ("EMFILE", "Re-reserving EMFILE", "Could not accept new connection")


def raise_open_file_limit() -> Optional[Tuple[int, int]]:
    """
    Raise the soft ``RLIMIT_NOFILE`` to the hard limit; ``(before, after)``, or ``None`` where
    there is no such limit (not POSIX).
    """
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows)
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _MOST if hard == resource.RLIM_INFINITY else min(hard, _MOST)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as e:
            _log.warn("Cannot raise the open file limit from {soft} to {wanted}: {error}",
                      soft=soft, wanted=wanted, error=e)
            return soft, soft
        return soft, wanted
    return soft, soft


def open_file_limit() -> Optional[int]:
    """The current soft limit of open files, or ``None`` where there is none."""
    try:
        import resource
    except ImportError:  # pragma: no cover
        return None
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@implementer(ILogObserver)
class AcceptErrorObserver:
    """
    Stands between a listening port and the log: its ``accept()`` failures (EMFILE, ENFILE,
    ENOBUFS, ENOMEM) become one warning per C{interval} seconds with the number of connections
    refused meanwhile; every other event goes on unchanged.
    """

    def __init__(self, name: str, clock: Any, observer: Any = None, interval: float = 10.0) -> None:
        self.name = name
        self._clock = clock
        self._observer = observer if observer is not None else globalLogPublisher
        self.interval = interval
        self._last: Optional[float] = None
        self._pending: Any = None
        self._error = ""
        self._refused = 0
        self._log = Logger(namespace="ilchat.descriptors", observer=self._observer)

    def __call__(self, event: dict) -> None:
        text = event.get("log_format") or ""
        if not text.startswith(_ACCEPT_ERROR_LINES):
            self._observer(event)
            return
        if text.startswith("EMFILE recovery") or text.startswith("Could not accept"):
            self._refused += 1
        self._error = event.get("acceptError", self._error or "EMFILE")
        if self._pending is None and (
            self._last is None or self._clock.seconds() - self._last >= self.interval
        ):
            # At the end of this turn, so that the line counts the whole burst of refusals.
            self._pending = self._clock.callLater(0, self._warn)

    def _warn(self) -> None:
        self._pending = None
        self._last = self._clock.seconds()
        refused, self._refused = self._refused, 0
        self._log.warn(
            "Out of file descriptors on {name} ({error}, open file limit {limit}): refused"
            " {refused} new connection(s) since the last such line. Raise LimitNOFILE= in the"
            " systemd unit or 'ulimit -n', or lower network.max_connections_per_ip /"
            " max_http_connections_per_ip.",
            name=self.name,
            error=self._error,
            limit=open_file_limit(),
            refused=refused,
        )


def watch_accept_errors(port: Any, name: str, clock: Any) -> AcceptErrorObserver:
    """Route the accept errors of a listening C{port} (Twisted's tcp.Port) through one observer."""
    observer = AcceptErrorObserver(name, clock)
    # tcp.Port logs accept() failures through its class-level ``_logger``: one of our own per port.
    port._logger = Logger(namespace=type(port).__module__ + ".Port", observer=observer)
    return observer
