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
"""

from __future__ import annotations

import os
import re
import time
from typing import IO, Any, Dict, List, Optional

from twisted.application import service
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    eventAsText,
    globalLogPublisher,
)
from zope.interface import implementer

__all__ = ["LEVELS", "LogFile", "LogService", "debug_wanted", "format_line", "open_log_file"]

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
