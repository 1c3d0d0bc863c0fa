# -*- test-case-name: tests.store.test_purge -*-
"""
The daily purge of old chat messages (spec sections 4.3 and 5.2), and its schedule.

:meth:`PurgeStore.purge_old_messages` runs the Node server's four steps, each in its own
transaction and each logging its row count:

1. ``chatroom_history`` rows older than the bound (seconds), then the listeners registered with
   :meth:`PurgeStore.register_history_purge` (the standalone chat's shared files);
2. ``osc_messages`` rows older than the bound (milliseconds);
3. conversations without messages, **except those still in use** (docs/design.rst): the
   Node server deletes every conversation without messages, brand-new ones included, which then
   vanish at the next restart. ilchat keeps a conversation when

   * its id is in the keep set (the On-Screen Chat passes the conversations it holds in memory,
     through ``keep_conversation_ids`` or a provider registered with
     :meth:`PurgeStore.register_live_conversations`), or
   * it has a message (checked again in the ``DELETE`` itself, so a message written meanwhile
     saves it), or
   * a participant's ``osc_activity`` row is at or after the bound (someone read or closed it
     recently). ``osc_conversation`` has no timestamp of its own, so this is the only sign of
     recent use that survives a restart.

   Besides, ``update_conversation`` is an upsert, so a conversation that a racing purge removed
   is written back by its next change.
4. ``osc_activity`` rows whose conversation is gone (again except the keep set).

Steps 3 and 4 use ``NOT EXISTS`` subqueries, which MySQL/MariaDB and SQLite both run, instead
of the Node server's MySQL-only ``DELETE c FROM ... LEFT JOIN``.

:class:`DailyPurge` is the Twisted service that runs it every day at ``deletion_time`` local
time when ``deletion_mode`` is 1, with the bound "now minus ``deletion_value`` units" in local
calendar arithmetic. With a ``cluster`` (``ilchat.cluster``), each scheduled run first takes
the lock ``purge:<scheduled Unix time>`` for :data:`PURGE_LOCK_TTL` seconds: of several
processes whose timers fire for the same run, only the one holding it purges (the lock is not
given back, so a process whose timer fires a little later does not purge again). When the lock
cannot be had (Redis down) the process purges all the same: a second purge deletes nothing
more.
"""

from __future__ import annotations

import calendar
import datetime
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from ilchat.store.database import Database, Transaction

__all__ = ["PurgeStore", "DailyPurge", "PURGE_LOCK_TTL", "compute_bound", "next_run_after", "subtract_units"]

LiveConversationsProvider = Callable[[], Iterable[str]]

#: Seconds the lock of one scheduled purge is held: longer than the clocks of the processes
#: may disagree, shorter than a day.
PURGE_LOCK_TTL = 6 * 3600


class PurgeStore:
    """The purge SQL (mixed into :class:`ilchat.store.Store`)."""

    db: Database
    _log = Logger()

    def register_live_conversations(
        self,
        provider: LiveConversationsProvider,
        on_deleted: Optional[Callable[[List[str]], None]] = None,
    ) -> Callable[[], None]:
        """
        Have every purge of this store keep the conversations ``provider()`` returns.

        The On-Screen Chat registers a function that returns the ids of the conversations it
        holds in memory and still uses, and optionally ``on_deleted(ids)``, called in the reactor
        thread with the ids of the conversations a purge deleted (to drop them from memory).
        Returns a callable that removes the registration again.
        """
        registrations = self.__dict__.setdefault("_live_conversation_providers", [])
        entry = (provider, on_deleted)
        registrations.append(entry)

        def unregister() -> None:
            if entry in registrations:
                registrations.remove(entry)

        return unregister

    def register_history_purge(self, listener: Callable[[int], Any]) -> Callable[[], None]:
        """
        Have C{listener(bound_s)} run after each purge of ``chatroom_history`` (in the reactor
        thread; a Deferred it returns is waited for): the standalone chat's shared files go with
        the history. Returns a callable that removes the registration again.
        """
        listeners = self.__dict__.setdefault("_history_purge_listeners", [])
        listeners.append(listener)

        def unregister() -> None:
            if listener in listeners:
                listeners.remove(listener)

        return unregister

    async def _history_purged(self, bound_s: int) -> None:
        for listener in list(self.__dict__.get("_history_purge_listeners", [])):
            try:
                await defer.maybeDeferred(listener, bound_s)
            except Exception:
                self._log.failure("A history purge listener failed")

    def _live_conversation_ids(self) -> Set[str]:
        ids: Set[str] = set()
        for provider, _ in list(self.__dict__.get("_live_conversation_providers", [])):
            ids.update(str(i) for i in provider())
        return ids

    def _conversations_deleted(self, ids: List[str]) -> None:
        for _, on_deleted in list(self.__dict__.get("_live_conversation_providers", [])):
            if on_deleted is None:
                continue
            try:
                on_deleted(list(ids))
            except Exception:
                self._log.failure("A purge listener failed")

    async def purge_old_messages(
        self, bound_ms: int, keep_conversation_ids: Iterable[str] = ()
    ) -> Dict[str, int]:
        """
        Delete what is older than ``bound_ms`` (see the module docstring for the rules).

        Args:
            bound_ms: Unix time in milliseconds; history before ``floor(bound_ms / 1000)``
                seconds and OSC messages before ``bound_ms`` go.
            keep_conversation_ids: conversations that must survive even without messages.

        Returns:
            the rows deleted per table: ``chatroom_history``, ``osc_messages``,
            ``osc_conversation``, ``osc_activity``.
        """
        keep = {str(i) for i in keep_conversation_ids} | self._live_conversation_ids()
        bound_ms = int(bound_ms)
        bound_s = bound_ms // 1000
        counts: Dict[str, int] = {}

        def purge_history_txn(txn: Transaction) -> int:
            txn.execute("DELETE FROM chatroom_history WHERE timestamp < ?", (bound_s,))
            return txn.rowcount

        def purge_osc_messages_txn(txn: Transaction) -> int:
            txn.execute("DELETE FROM osc_messages WHERE timestamp < ?", (bound_ms,))
            return txn.rowcount

        def purge_conversations_txn(txn: Transaction) -> List[str]:
            txn.execute(
                "SELECT c.id FROM osc_conversation c"
                " WHERE NOT EXISTS (SELECT 1 FROM osc_messages m WHERE m.conversation_id = c.id)"
                " AND NOT EXISTS (SELECT 1 FROM osc_activity a"
                " WHERE a.conversation_id = c.id AND a.timestamp >= ?)",
                (bound_ms,),
            )
            doomed = [row[0] for row in txn.fetchall() if str(row[0]) not in keep]
            deleted = []
            for conversation_id in doomed:
                # Checked again row by row: a message stored since the SELECT saves it.
                txn.execute(
                    "DELETE FROM osc_conversation WHERE id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM osc_messages m WHERE m.conversation_id = osc_conversation.id)",
                    (conversation_id,),
                )
                if txn.rowcount > 0:
                    deleted.append(str(conversation_id))
            return deleted

        def purge_activity_txn(txn: Transaction) -> int:
            txn.execute(
                "SELECT DISTINCT a.conversation_id FROM osc_activity a WHERE NOT EXISTS"
                " (SELECT 1 FROM osc_conversation c WHERE c.id = a.conversation_id)"
            )
            orphans = [row[0] for row in txn.fetchall() if str(row[0]) not in keep]
            deleted = 0
            for conversation_id in orphans:
                txn.execute(
                    "DELETE FROM osc_activity WHERE conversation_id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM osc_conversation c WHERE c.id = osc_activity.conversation_id)",
                    (conversation_id,),
                )
                deleted += max(txn.rowcount, 0)
            return deleted

        for table, desc, func in (
            ("chatroom_history", "purge_history", purge_history_txn),
            ("osc_messages", "purge_osc_messages", purge_osc_messages_txn),
            ("osc_conversation", "purge_conversations", purge_conversations_txn),
            ("osc_activity", "purge_activity", purge_activity_txn),
        ):
            result = await self.db.run_interaction(desc, func)
            if table == "chatroom_history":
                await self._history_purged(bound_s)
            if table == "osc_conversation":
                if result:
                    self._conversations_deleted(result)
                result = len(result)
            counts[table] = result
            self._log.info(
                "Purge: deleted {count} row(s) from {table}", count=counts[table], table=table
            )
        return counts


# -- calendar arithmetic -----------------------------------------------------------------------


def _to_local(ts: float, tz: Optional[datetime.tzinfo]) -> datetime.datetime:
    """Naive local wall-clock time for a Unix time (``tz=None``: the system's local zone)."""
    if tz is None:
        return datetime.datetime.fromtimestamp(ts)
    return datetime.datetime.fromtimestamp(ts, tz).replace(tzinfo=None, fold=0)


def _to_epoch(local: datetime.datetime, tz: Optional[datetime.tzinfo]) -> float:
    """Unix time of a naive local wall-clock time (the earlier one if it is ambiguous)."""
    local = local.replace(fold=0)
    if tz is None:
        return local.timestamp()
    return local.replace(tzinfo=tz).timestamp()


def _minus_months(local: datetime.datetime, months: int) -> datetime.datetime:
    index = local.year * 12 + (local.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    # Month ends clamp: 31 March minus one month is 28 (or 29) February, not 3 March.
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day)


def subtract_units(local: datetime.datetime, unit: Optional[str], value: int) -> datetime.datetime:
    """
    ``local`` minus ``value`` ``unit``s on the local calendar (wall-clock time is kept).

    ``days``; ``weeks`` (7 days each); ``months`` or ``month`` and ``years`` with month-end
    clamping. Any other unit returns ``local`` unchanged, as the Node server does (the
    configuration loader refuses such units anyway).
    """
    value = int(value or 0)
    if unit == "days":
        return local - datetime.timedelta(days=value)
    if unit == "weeks":
        return local - datetime.timedelta(days=7 * value)
    if unit in ("months", "month"):
        return _minus_months(local, value)
    if unit == "years":
        return _minus_months(local, 12 * value)
    return local


def compute_bound(
    now_ts: float, unit: Optional[str], value: int, tz: Optional[datetime.tzinfo] = None
) -> Tuple[int, datetime.datetime]:
    """
    The purge bound for "now minus ``value`` ``unit``s".

    Returns:
        ``(bound_ms, bound_local)``: Unix milliseconds and the naive local time (for the log).
    """
    local = subtract_units(_to_local(now_ts, tz), unit, value)
    return int(_to_epoch(local, tz) * 1000), local


def next_run_after(ts: float, hour: int, minute: int, tz: Optional[datetime.tzinfo] = None) -> float:
    """
    The first Unix time at or after ``ts`` whose local wall-clock time is ``hour:minute:00``.

    Computed on the calendar, so across a daylight-saving change the job stays at the same
    local time (the Node server's 24-hour ``setInterval`` drifts by an hour instead). A time
    that does not exist that day (the spring-forward gap) maps to the instant the clock jumps
    over it.
    """
    local = _to_local(ts, tz)
    candidate = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    while _to_epoch(candidate, tz) < ts:
        candidate += datetime.timedelta(days=1)
    return _to_epoch(candidate, tz)


def _parse_time(value: Union[str, Tuple[int, int], List[int]]) -> Tuple[int, int]:
    if isinstance(value, str):
        hour, _, minute = value.partition(":")
        return int(hour), int(minute)
    hour, minute = value
    return int(hour), int(minute)


# -- the service -------------------------------------------------------------------------------

KeepIdsProvider = Callable[[str], Union[Iterable[str], Awaitable[Iterable[str]]]]


class DailyPurge(Service):
    """
    Runs :meth:`PurgeStore.purge_old_messages` on every store once a day.

    Args:
        reactor: provides ``callLater`` (a ``task.Clock`` in tests).
        stores: ``{client name: store}`` (or ``(name, store)`` pairs); the name appears in the log
            lines where the Node server writes the namespace.
        deletion: an object with ``deletion_mode``, ``deletion_unit``, ``deletion_value`` and
            ``deletion_time`` (``(hour, minute)`` or ``"HH:MM"``), i.e. the ``ServerConfig``.
        keep_ids_provider: optional ``f(client name)`` returning (or resolving to) the ids of
            conversations to keep, on top of those the stores' registered providers return.
        now: the current Unix time; defaults to ``reactor.seconds``.
        tz: the time zone of ``deletion_time``; ``None`` is the system's local time zone.
        cluster: the process's ``ilchat.cluster`` object (``lock``): a scheduled run purges
            only on the process that takes its lock. ``None``: this process alone.

    Nothing is scheduled unless ``deletion_mode == 1``. The first run is at the next local
    ``deletion_time`` (now, if it is that minute's first second), then every day at that local
    time. Runs do not overlap: a run still busy when the next is due makes that one skip.
    """

    name = "ilchat-daily-purge"
    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        stores: Union[Mapping[str, Any], Iterable[Tuple[str, Any]]],
        deletion: Any,
        keep_ids_provider: Optional[KeepIdsProvider] = None,
        now: Optional[Callable[[], float]] = None,
        tz: Optional[datetime.tzinfo] = None,
        cluster: Any = None,
    ) -> None:
        self._reactor = reactor
        self._cluster = cluster
        self._stores: Dict[str, Any] = dict(stores.items() if isinstance(stores, Mapping) else stores)
        self._deletion = deletion
        self._keep_ids_provider = keep_ids_provider
        self._now = now or reactor.seconds
        self._tz = tz
        self._call: Any = None
        self._running: Optional[defer.Deferred] = None
        self.next_run: Optional[float] = None

    def wait_for_run(self) -> defer.Deferred:
        """A Deferred that fires when the purge now running ends (at once when none runs)."""
        if self._running is None:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._running.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    @property
    def enabled(self) -> bool:
        """True when ``deletion_mode`` is 1 (PHP writes it as a number or a numeric string)."""
        try:
            return int(getattr(self._deletion, "deletion_mode", 0) or 0) == 1
        except (TypeError, ValueError):
            return False

    def startService(self) -> None:
        super().startService()
        if not self.enabled:
            return
        if getattr(self._deletion, "deletion_time", None) is None:
            self._log.warn("Purge is on but deletion_time is not set; no purge is scheduled")
            return
        for name in self._stores:
            self._log.info("Clear messages process initialized for {name} once a day", name=name)
        self._schedule(self._now())

    def stopService(self) -> Optional[defer.Deferred]:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.next_run = None
        if self._running is not None:
            # Let a running purge finish before the stores close.
            return self._running
        return None

    def _schedule(self, after: float) -> None:
        hour, minute = _parse_time(self._deletion.deletion_time)
        self.next_run = next_run_after(after, hour, minute, self._tz)
        delay = max(0.0, self.next_run - self._now())
        self._call = self._reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._call = None
        scheduled = self.next_run if self.next_run is not None else self._now()
        # The next run is the same local time tomorrow, computed on the calendar.
        self._schedule(max(scheduled, self._now()) + 1)
        if self._running is not None:
            self._log.warn("The previous purge is still running; skipping this one")
            return
        d = defer.ensureDeferred(self._run_scheduled(scheduled))
        self._running = d

        def finished(result: Any) -> None:
            self._running = None

        d.addBoth(finished)

    async def _run_scheduled(self, scheduled: float) -> None:
        """The run due at ``scheduled``, on the one process of the cluster that locks it."""
        if self._cluster is not None:
            try:
                held = await self._cluster.lock(f"purge:{int(scheduled)}", PURGE_LOCK_TTL)
            except Exception as error:
                self._log.warn("The purge lock could not be taken ({error}); purging here all the same",
                               error=str(error))
                held = True
            if not held:
                self._log.info("The purge due at {when} runs on another instance; not here",
                               when=int(scheduled))
                return
        await self.run_once()

    async def run_once(self) -> None:
        """Purge every store with the bound computed from now (also callable by hand)."""
        now = self._now()
        bound_ms, bound_local = compute_bound(
            now, getattr(self._deletion, "deletion_unit", None), getattr(self._deletion, "deletion_value", 0), self._tz
        )
        for name, store in self._stores.items():
            self._log.info(
                "Start clear process for namespace {name} older then {bound_ms} [{bound}]",
                name=name,
                bound_ms=bound_ms,
                bound=bound_local.isoformat(sep=" ", timespec="seconds"),
            )
            try:
                keep: Set[str] = set()
                if self._keep_ids_provider is not None:
                    ids = await defer.maybeDeferred(self._keep_ids_provider, name)
                    keep.update(str(i) for i in ids)
                await store.purge_old_messages(bound_ms, keep)
            except Exception:
                self._log.failure("Clear process for namespace {name} failed", name=name)
                continue
            self._log.info("Clear process for namespace {name} finished", name=name)
