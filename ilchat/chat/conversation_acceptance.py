# -*- test-case-name: tests.chat.test_conversations -*-
"""
Who accepts On-Screen Chat messages: the ``usr_pref`` poll at every 20-minute wall-clock boundary
(local :00, :20, :40, as ILIAS's cron ``*/20``) and at start-up (spec §5.3).
"""

from __future__ import annotations

import time
from typing import Any, Optional

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ilchat.chat.conversation_registry import ConversationRegistry

__all__ = ["ACCEPTANCE_POLL_INTERVAL", "AcceptancePoll"]

#: ``usr_pref`` is polled at every 20-minute wall-clock boundary (:00, :20, :40), as ILIAS does.
ACCEPTANCE_POLL_INTERVAL = 20 * 60


def _utc_offset(timestamp: float) -> int:
    """Seconds east of UTC of the local time zone at C{timestamp}."""
    try:
        return time.localtime(timestamp).tm_gmtoff or 0
    except (OverflowError, OSError, ValueError):
        return 0


class AcceptancePoll:
    """
    Apply ``usr_pref`` to C{registry} once at L{start} and then on every boundary until L{stop}.

    Args:
        instance: the client name, for the log.
        store: the client's store (``get_accepting_user_ids``).
        registry: the participants to update.
        clock: the reactor, or a C{Clock} in tests.
    """

    _log = Logger()

    def __init__(self, instance: str, store: Any, registry: ConversationRegistry, clock: IReactorTime) -> None:
        self.instance = instance
        self.running = False
        self._store = store
        self._registry = registry
        self._clock = clock
        self._call: Optional[IDelayedCall] = None

    async def start(self) -> None:
        """ILIAS <= 10 runs the poll once at start-up and then at every :00/:20/:40."""
        self.running = True
        await self.poll()
        self.schedule()

    def stop(self) -> None:
        self.running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    async def poll(self) -> None:
        """Read ``usr_pref`` and apply it to every participant; a DB error keeps the old values."""
        try:
            user_ids = await self._store.get_accepting_user_ids()
        except Exception:
            self._log.failure("On-Screen Chat {instance}: reading usr_pref failed", instance=self.instance)
            return
        self._registry.set_accepting(int(i) for i in user_ids)

    def schedule(self) -> None:
        """Call L{poll} at the next boundary (while running)."""
        if not self.running:
            return
        now = self._clock.seconds()
        # ILIAS's cron "*/20 * * * *" runs on local time; in a zone such as +05:30 the local
        # :00/:20/:40 are not UTC's, so measure from local midnight.
        local = now + _utc_offset(now)
        delay = ACCEPTANCE_POLL_INTERVAL - (local % ACCEPTANCE_POLL_INTERVAL)
        self._call = self._clock.callLater(delay, self._run)

    def _run(self) -> None:
        self._call = None
        d = ensureDeferred(self.poll())
        d.addBoth(lambda _: self.schedule())
