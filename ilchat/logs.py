# -*- test-case-name: tests.test_logs -*-
"""
The ``log`` and ``error_log`` files of ``server.cfg``, as twisted.logger observers.

* ``log`` gets every event at or above ``log_level``;
* ``error_log`` gets every error and every failure logged with a traceback (``log.failure``,
  unhandled errors in Deferreds), whatever ``log_level`` says.

ILIAS offers the syslog level names; Twisted has fewer levels, so they map as follows:
``emerg``/``alert``/``crit`` → critical, ``error`` → error, ``warning`` → warn,
``notice``/``info`` → info, ``debug``/``silly`` → debug.

Under twistd, the observers twistd installed (stdout with ``-n``, or its ``twistd.log``) are
wrapped by the same level filter when the service starts (``filter_others``): the operator's
``log_level`` governs everything the process writes, not only the ``log`` file. Errors and failures
still reach them at any level, so a traceback is never lost from stdout. ``debug_wanted()`` tells
hot paths whether a debug event would reach anyone at all, so they skip building it.

The files are opened in append mode and reopened by ``reopen()`` (SIGHUP or SIGUSR1 under
twistd), so that logrotate can move them away and signal the server, like any other daemon.

Twisted announces every listening port (``ChatSite starting on 8888``); ilchat names each of its
listeners itself with the address and protocol, so those lines are dropped from the files and,
under twistd, from stdout: the start-up log names each listener once.

``RepeatedLog`` keeps a flood of identical lines (a client sending thousands of refused events)
to two: the first at once, then one with the count when the window ends.
"""

from __future__ import annotations

import os
import re
import time
from typing import IO, Any, Dict, Hashable, List, Optional

from twisted.application import service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    eventAsText,
    Logger,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = [
    "LEVELS",
    "LogFile",
    "LogService",
    "RepeatedLog",
    "debug_wanted",
    "format_line",
    "open_log_file",
]

LEVELS: Dict[str, LogLevel] = {
    "emerg": LogLevel.critical,
    "alert": LogLevel.critical,
    "crit": LogLevel.critical,
    "error": LogLevel.error,
    "warning": LogLevel.warn,
    "notice": LogLevel.info,
    "info": LogLevel.info,
    "debug": LogLevel.debug,
    "silly": LogLevel.debug,
}

_LEVEL_NAMES = {
    LogLevel.critical: "CRITICAL",
    LogLevel.error: "ERROR",
    LogLevel.warn: "WARN",
    LogLevel.info: "INFO",
    LogLevel.debug: "DEBUG",
}


# True until a LogService configured below debug starts: without one, nobody filters events, so
# every debug event may be wanted (tests, tools that observe the global publisher).
_debug_wanted = True


def debug_wanted() -> bool:
    """
    Whether a debug event can reach any observer.

    Hot paths (one event per HTTP request, per backend call, per new member) ask this before
    calling ``log.debug``: at ``log_level`` info the event would be built, formatted lazily and
    dropped by every filter, which costs CPU for nothing.
    """
    return _debug_wanted


def open_log_file(path: str) -> IO[str]:
    """Open (create) a log file for appending; its folder is created when missing."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    return open(path, "a", encoding="utf-8", buffering=1)


def format_line(event: Dict[str, Any]) -> str:
    """
    ``[<ISO-8601 local time with offset>] LEVEL - message``, as ILIAS 11's winston 3 writes it,
    followed by the traceback when the event carries a failure.
    """
    when = event.get("log_time") or time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))
    stamp += f".{int((when % 1) * 1000):03d}" + time.strftime("%z", time.localtime(when))
    level = _LEVEL_NAMES.get(event.get("log_level"), "INFO")
    text = eventAsText(event, includeTraceback=True, includeTimestamp=False, includeSystem=False)
    return f"[{stamp}] {level} - {text}\n"


@implementer(ILogObserver)
class LogFile:
    """One append-only log file that can be reopened after rotation."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: Optional[IO[str]] = open_log_file(path)

    def __call__(self, event: Dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(format_line(event))
        except Exception:
            # Never let a full disk or a bad format turn one log line into a crash of the caller.
            pass

    def reopen(self) -> None:
        """Close and open the path again: after logrotate, writes go to the new file."""
        old, self._file = self._file, None
        if old is not None:
            old.close()
        self._file = open_log_file(self.path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


#: What ``twisted.internet.tcp.Port`` logs (as a legacy ``log.msg``) when it starts listening.
_PORT_ANNOUNCEMENT = re.compile(r"^[\w.]+ starting on \d+$")


def _is_port_announcement(event: Dict[str, Any]) -> PredicateResult:
    message = event.get("message")
    if (
        event.get("log_namespace") == "log_legacy"
        and isinstance(message, tuple)
        and len(message) == 1
        and isinstance(message[0], str)
        and _PORT_ANNOUNCEMENT.match(message[0])
    ):
        return PredicateResult.no
    return PredicateResult.maybe


def _is_error(event: Dict[str, Any]) -> PredicateResult:
    if event.get("log_failure") is not None:
        return PredicateResult.yes
    level = event.get("log_level")
    if level is not None and level >= LogLevel.error:
        return PredicateResult.yes
    return PredicateResult.no


def _at_level_or_error(level: LogLevel) -> Any:
    """A predicate for observers ilchat does not own: the configured level, plus every error."""
    by_level = LogLevelFilterPredicate(defaultLogLevel=level)

    def predicate(event: Dict[str, Any]) -> PredicateResult:
        if _is_error(event) is PredicateResult.yes:
            return PredicateResult.yes
        if _is_port_announcement(event) is PredicateResult.no:
            return PredicateResult.no
        return by_level(event)

    return predicate


class LogService(service.Service):
    """Adds the two file observers to the global log publisher while it runs."""

    def __init__(self, server_config: Any, publisher: Any = None, filter_others: bool = False) -> None:
        """
        Args:
            server_config: uses ``log``, ``error_log`` and ``log_level``.
            publisher: where to observe events; the global publisher by default (tests pass a
                ``LogPublisher``).
            filter_others: wrap the observers already on the publisher (twistd's stdout or
                ``twistd.log``) in the level filter while the service runs. Only the twistd entry
                point sets it: in-process tests must not filter the test runner's own observers.
        """
        self.log_path = server_config.log
        self.error_log_path = server_config.error_log
        self.level = LEVELS.get(server_config.log_level, LogLevel.info)
        self.publisher = publisher if publisher is not None else globalLogPublisher
        self.filter_others = filter_others
        self.files: List[LogFile] = []
        self._observers: List[Any] = []
        self._wrapped: List[tuple] = []  # (original observer, its filtering wrapper)

    def startService(self) -> None:  # noqa: N802 (twisted API)
        log_file = LogFile(self.log_path)
        error_file = LogFile(self.error_log_path)
        self.files = [log_file, error_file]
        predicate = LogLevelFilterPredicate(defaultLogLevel=self.level)
        self._observers = [
            FilteringLogObserver(log_file, [_is_port_announcement, predicate]),
            FilteringLogObserver(error_file, [_is_error]),
        ]
        if self.filter_others:
            # LogPublisher has no public way to list its observers; without the attribute (another
            # publisher type) nothing is wrapped and only the files are filtered.
            others = list(getattr(self.publisher, "_observers", ()))
            for other in others:
                wrapper = FilteringLogObserver(other, [_at_level_or_error(self.level)])
                self.publisher.removeObserver(other)
                self.publisher.addObserver(wrapper)
                self._wrapped.append((other, wrapper))
        for observer in self._observers:
            self.publisher.addObserver(observer)
        global _debug_wanted
        _debug_wanted = self.level <= LogLevel.debug
        super().startService()

    def stopService(self) -> None:  # noqa: N802 (twisted API)
        super().stopService()
        global _debug_wanted
        _debug_wanted = True
        for observer in self._observers:
            self.publisher.removeObserver(observer)
        self._observers = []
        for other, wrapper in self._wrapped:
            self.publisher.removeObserver(wrapper)
            self.publisher.addObserver(other)
        self._wrapped = []
        for log_file in self.files:
            log_file.close()
        self.files = []

    def reopen(self) -> None:
        """Reopen both files (SIGHUP): logrotate has moved them away."""
        for log_file in self.files:
            log_file.reopen()


class _Run:
    """One kind of line inside its window: when it started, how many were held back."""

    __slots__ = ("started", "held", "call", "level", "format", "fields")

    def __init__(self, started: float, level: LogLevel, format: str, fields: Dict[str, Any]) -> None:
        self.started = started
        self.held = 0
        self.call: Optional[IDelayedCall] = None
        self.level = level
        self.format = format
        self.fields = fields


class RepeatedLog:
    """
    Rate-limits identical log lines: the first goes out at once, the repeats become one line.

    Lines are identical when they have the same level, format and field values (or the same
    ``key=`` the caller gives). Within ``interval`` seconds of the first, repeats are only
    counted; when the window ends, one line ``<the line> (repeated N times in S s)`` is written.
    The owner calls ``flush()`` when it stops, so that no count (and no timer) is left behind.

    Usage::

        self._repeats = RepeatedLog(self._log, reactor)
        self._repeats.info("{event} from {sid} refused: {reason}", event=e, sid=sid, reason=r)
    """

    #: Kinds of line tracked at once; past that, lines whose window is over are forgotten first.
    MAX_KINDS = 1024

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = 10.0) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self._runs: Dict[Hashable, _Run] = {}

    def info(self, format: str, key: Hashable = None, **fields: Any) -> None:
        """An info line, unless an identical one went out less than ``interval`` s ago."""
        self.emit(LogLevel.info, format, key, **fields)

    def warn(self, format: str, key: Hashable = None, **fields: Any) -> None:
        """A warning line, rate-limited like ``info``."""
        self.emit(LogLevel.warn, format, key, **fields)

    def emit(self, level: LogLevel, format: str, key: Hashable = None, **fields: Any) -> None:
        if key is None:
            try:
                key = (level, format, tuple(sorted(fields.items())))
                hash(key)
            except TypeError:
                key = (level, format, repr(sorted(fields.items(), key=lambda kv: kv[0])))
        now = self.clock.seconds()
        run = self._runs.get(key)
        if run is not None and now - run.started < self.interval:
            run.held += 1
            if run.call is None:
                run.call = self.clock.callLater(
                    run.started + self.interval - now, self._report, key
                )
            return
        if run is not None and run.held:
            self._report(key)
        if len(self._runs) >= self.MAX_KINDS:
            self._forget_ended(now)
        if len(self._runs) < self.MAX_KINDS:
            self._runs[key] = _Run(now, level, format, fields)
        self.log.emit(level, format, **fields)

    def _forget_ended(self, now: float) -> None:
        for key, run in list(self._runs.items()):
            if not run.held and now - run.started >= self.interval:
                del self._runs[key]

    def _report(self, key: Hashable) -> None:
        run = self._runs.pop(key, None)
        if run is None:
            return
        if run.call is not None and run.call.active():
            run.call.cancel()
        run.call = None
        if run.held:
            self.log.emit(
                run.level,
                run.format + " (repeated {log_repeats} times in {log_repeat_seconds} s)",
                log_repeats=run.held,
                log_repeat_seconds=round(self.clock.seconds() - run.started, 1),
                **run.fields,
            )

    def flush(self) -> None:
        """Write every pending count now and cancel the timers (the owner is stopping)."""
        for key in list(self._runs):
            self._report(key)
