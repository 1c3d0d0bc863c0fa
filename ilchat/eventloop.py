# -*- test-case-name: tests.test_eventloop -*-
"""
The epoll reactor's dispatch of ready descriptors, without the legacy logging context.

``EPollReactor.doPoll`` hands every ready descriptor to ``_doReadOrWrite`` through
``twisted.python.log.callWithLogger``: it asks the descriptor for its ``logPrefix()`` and pushes
a ``{"system": prefix}`` context (a dict copied per event) for any legacy ``log.msg`` made
meanwhile, then pops it. ilchat logs through ``twisted.logger``, whose events never read that
context, and its log files leave the system out (``ilchat.logs.format_line``); yet with 500
long-polling clients, where every HTTP request is a read event of its own, the push and pop were
7 % of the server's CPU (bench ``polling``).

:func:`use_lean_dispatch` gives the reactor a ``doIteration`` that polls as ``doPoll`` does and
calls ``_doReadOrWrite`` directly. What ``callWithLogger`` does besides the context, logging an
exception that escapes the dispatch, it keeps. Reactors other than an unchanged
``EPollReactor`` are left as they are.
"""

from __future__ import annotations

import errno
from typing import Any, Callable, Optional

from twisted.logger import Logger

__all__ = ["use_lean_dispatch"]

_log = Logger()


def use_lean_dispatch(reactor: Any) -> bool:
    """Make C{reactor} dispatch ready descriptors without the log context; say whether it did."""
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return False
    if not isinstance(reactor, EPollReactor) or type(reactor).doIteration is not EPollReactor.doPoll:
        return False
    reactor.doIteration = _lean_poll(reactor)
    return True


def _lean_poll(reactor: Any) -> Callable[[Optional[float]], None]:
    def do_iteration(timeout: Optional[float]) -> None:
        """``EPollReactor.doPoll``, each ready descriptor dispatched without a log context."""
        selectables = reactor._selectables
        try:
            # As doPoll: at most as many events as descriptors, -1 waits without a limit.
            events = reactor._poller.poll(-1 if timeout is None else timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        dispatch = reactor._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue  # removed by an earlier event of this poll
            try:
                dispatch(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:  # as callWithLogger: logged, and the loop goes on
                _log.failure("Dispatching an event of {selectable!r} failed", selectable=selectable)

    return do_iteration
