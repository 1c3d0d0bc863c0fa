# -*- test-case-name: tests.test_readiness -*-
"""
The readiness check: can this process do its work right now, i.e. do its databases answer?

``/backend/Heartbeat/<name>`` stays what ILIAS expects (200 as long as the process serves HTTP:
ILIAS hides the chat when it fails, so a short database outage must not fail it). A load balancer
or an orchestrator asks ``/ready`` instead, which answers 503 while any client's database does not
answer a ``SELECT 1``.

A probe costs a pool thread, so its result is cached for ``cache_seconds`` and at most one probe
per store is in flight: a monitoring system polling every 100 ms, or a database that hangs (the
probe neither answers nor fails), never piles up threads. A probe that has not answered within
``timeout`` seconds counts as "not answering" while it goes on.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ilchat.web.responses import respond_with_json

__all__ = ["DatabaseProbe", "Readiness", "ReadinessResource"]

#: Seconds a probe's answer is reused.
CACHE_SECONDS = 1.0
#: Seconds a request waits for a probe before the database counts as not answering.
PROBE_TIMEOUT = 2.0


class DatabaseProbe:
    """The cached ``store.ping()`` of one client's store."""

    _log = Logger()

    def __init__(self, name: str, store: Any, clock: Any, cache_seconds: float, timeout: float) -> None:
        self.name = name
        self.store = store
        self.clock = clock
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        #: None when the last probe answered, else why not; checked_at is None before the first.
        self.error: Optional[str] = None
        self.checked_at: Optional[float] = None
        self._in_flight: Optional[defer.Deferred[None]] = None
        self._started_at = 0.0

    @property
    def up(self) -> Optional[bool]:
        """The last known state (None before the first probe): for the metrics."""
        if self._in_flight is not None and self.clock.seconds() - self._started_at >= self.timeout:
            return False
        return None if self.checked_at is None else self.error is None

    def refresh(self) -> None:
        """Start a probe if the cached answer is stale and none is running; never waits."""
        now = self.clock.seconds()
        if self._in_flight is None and (self.checked_at is None or now - self.checked_at >= self.cache_seconds):
            self._started_at = now
            self._in_flight = defer.ensureDeferred(self._probe())

    async def _probe(self) -> None:
        try:
            await self.store.ping()
        except Exception as e:
            error = " ".join(f"{type(e).__name__}: {e}".split())
            if self.error is None:
                self._log.warn("Readiness: the database of {name} does not answer: {error}",
                               name=self.name, error=error)
            self.error = error
        else:
            if self.error is not None and self.checked_at is not None:
                self._log.info("Readiness: the database of {name} answers again", name=self.name)
            self.error = None
        self.checked_at = self.clock.seconds()
        self._in_flight = None

    async def check(self) -> Optional[str]:
        """None when the database answers, else the reason; waits at most ``timeout``."""
        self.refresh()
        in_flight = self._in_flight
        if in_flight is not None:
            remaining = self.timeout - (self.clock.seconds() - self._started_at)
            if remaining <= 0 or not await _within(in_flight, remaining, self.clock):
                return f"the database does not answer within {self.timeout:g} s"
        return self.error


async def _within(d: "defer.Deferred[None]", seconds: float, clock: Any) -> bool:
    """Whether ``d`` fires within ``seconds``; ``d`` itself is left running either way."""
    result: defer.Deferred[bool] = defer.Deferred()
    call = clock.callLater(seconds, lambda: result.called or result.callback(False))

    def fired(value: Any) -> Any:
        if call.active():
            call.cancel()
        if not result.called:
            result.callback(True)
        return value

    d.addBoth(fired)
    return await result


class Readiness:
    """The probes of every client of the process, by client name."""

    def __init__(
        self,
        stores: Mapping[str, Any],
        clock: Any,
        cache_seconds: float = CACHE_SECONDS,
        timeout: float = PROBE_TIMEOUT,
    ) -> None:
        self.probes: Dict[str, DatabaseProbe] = {
            name: DatabaseProbe(name, store, clock, cache_seconds, timeout) for name, store in stores.items()
        }

    async def check(self, name: Optional[str] = None) -> Dict[str, Optional[str]]:
        """Client name -> None (ready) or the reason; every client, or just ``name``."""
        probes = [self.probes[name]] if name is not None else list(self.probes.values())
        reasons = await defer.gatherResults([defer.ensureDeferred(p.check()) for p in probes])
        return {probe.name: reason for probe, reason in zip(probes, reasons)}


class ReadinessResource(Resource):
    """
    ``GET /ready`` (every client) or ``/ready/<name>``: 200 ``{"status": 200, "clients":
    {"<name>": "ok"}}``, or 503 with the reason in place of ``"ok"``; 404 for an unknown name.
    """

    isLeaf = True

    def __init__(self, readiness: Readiness) -> None:
        super().__init__()
        self.readiness = readiness

    def render_GET(self, request: Any) -> Any:  # noqa: N802 (twisted API)
        segments = [s for s in request.postpath if s]
        if len(segments) > 1:
            respond_with_json(request, 404, {"status": 404, "message": "Not Found"})
            return NOT_DONE_YET
        name = segments[0].decode("utf-8", "replace") if segments else None
        if name is not None and name not in self.readiness.probes:
            respond_with_json(request, 404, {"status": 404, "message": f"Unknown client {name}"})
            return NOT_DONE_YET
        d = defer.ensureDeferred(self.readiness.check(name))
        d.addCallback(self._answer, request)
        return NOT_DONE_YET

    render_HEAD = render_GET

    @staticmethod
    def _answer(reasons: Dict[str, Optional[str]], request: Any) -> None:
        code = 200 if all(reason is None for reason in reasons.values()) else 503
        clients = {name: reason or "ok" for name, reason in reasons.items()}
        respond_with_json(request, code, {"status": code, "clients": clients})
