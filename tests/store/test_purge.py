"""
Tests for ilchat.store.purge: the purge SQL on MariaDB and SQLite, the calendar arithmetic of the
bound, and the daily schedule on a fake clock (with a daylight-saving change).
"""

import datetime
from types import SimpleNamespace
from typing import Any, Iterable, List, Tuple
from zoneinfo import ZoneInfo

from twisted.internet import defer, task
from twisted.logger import capturedLogs
from twisted.trial import unittest

from ilchat.store.purge import DailyPurge, compute_bound, next_run_after, subtract_units
from tests.support.db import StoreTestMixin, fetch_rows, insert_rows

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(*args: int) -> float:
    """Unix time of a Berlin wall-clock time."""
    return datetime.datetime(*args, tzinfo=BERLIN).timestamp()


def local(ts: float) -> datetime.datetime:
    """Berlin wall-clock time of a Unix time, without the zone."""
    return datetime.datetime.fromtimestamp(ts, BERLIN).replace(tzinfo=None)


class PurgeSQLTestsMixin(StoreTestMixin):
    """The purge steps (spec 4.3) on both databases, with ilchat's in-use rule for conversations."""

    BOUND_MS = 1_700_000_000_500

    async def _fixture(self) -> None:
        bound_s = self.BOUND_MS // 1000
        insert_rows(
            self.database,
            "chatroom_history",
            [
                {"hist_id": 1, "room_id": 1, "message": "old", "timestamp": bound_s - 1},
                {"hist_id": 2, "room_id": 1, "message": "at bound", "timestamp": bound_s},
                {"hist_id": 3, "room_id": 2, "message": "new", "timestamp": bound_s + 100},
            ],
        )
        insert_rows(
            self.database,
            "osc_conversation",
            [
                {"id": "old-only", "is_group": 0, "participants": "[]"},
                {"id": "mixed", "is_group": 0, "participants": "[]"},
                {"id": "empty-live", "is_group": 0, "participants": "[]"},
                {"id": "empty-dead", "is_group": 1, "participants": "[]"},
                {"id": "empty-recent", "is_group": 0, "participants": "[]"},
                {"id": "empty-registered", "is_group": 0, "participants": "[]"},
            ],
        )
        insert_rows(
            self.database,
            "osc_messages",
            [
                {"id": "a", "conversation_id": "old-only", "user_id": 6, "message": "x", "timestamp": self.BOUND_MS - 1},
                {"id": "b", "conversation_id": "mixed", "user_id": 6, "message": "x", "timestamp": self.BOUND_MS - 1},
                {"id": "c", "conversation_id": "mixed", "user_id": 7, "message": "x", "timestamp": self.BOUND_MS},
            ],
        )
        insert_rows(
            self.database,
            "osc_activity",
            [
                {"conversation_id": "old-only", "user_id": 6, "timestamp": 5, "is_closed": 0},
                {"conversation_id": "empty-dead", "user_id": 6, "timestamp": self.BOUND_MS - 1, "is_closed": 0},
                {"conversation_id": "empty-recent", "user_id": 7, "timestamp": self.BOUND_MS, "is_closed": 1},
                {"conversation_id": "gone", "user_id": 7, "timestamp": 1, "is_closed": 0},
                {"conversation_id": "gone-live", "user_id": 7, "timestamp": 1, "is_closed": 0},
            ],
        )

    async def test_purge_deletes_old_rows_and_keeps_conversations_in_use(self) -> None:
        """
        Old history and OSC messages go; a conversation left without messages goes unless it is
        in the keep set, registered as live, or has activity at or after the bound; activity rows
        of deleted conversations go, except for conversations in the keep set.
        """
        await self._fixture()
        deleted = []
        self.store.register_live_conversations(lambda: ["empty-registered"], on_deleted=deleted.extend)
        counts = await self.store.purge_old_messages(self.BOUND_MS, {"empty-live", "gone-live"})
        self.assertEqual(
            counts, {"chatroom_history": 1, "osc_messages": 2, "osc_conversation": 2, "osc_activity": 3}
        )
        history = fetch_rows(self.database, "SELECT hist_id FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([r["hist_id"] for r in history], [2, 3])
        messages = fetch_rows(self.database, "SELECT id FROM osc_messages ORDER BY id")
        self.assertEqual([r["id"] for r in messages], ["c"])
        conversations = fetch_rows(self.database, "SELECT id FROM osc_conversation ORDER BY id")
        self.assertEqual(
            [r["id"] for r in conversations], ["empty-live", "empty-recent", "empty-registered", "mixed"]
        )
        self.assertEqual(sorted(deleted), ["empty-dead", "old-only"])
        activity = fetch_rows(self.database, "SELECT conversation_id FROM osc_activity ORDER BY conversation_id")
        self.assertEqual([r["conversation_id"] for r in activity], ["empty-recent", "gone-live"])

    async def test_unregistered_provider_no_longer_protects(self) -> None:
        """Removing a live-conversation provider lets the purge delete its unused conversations."""
        insert_rows(self.database, "osc_conversation", [{"id": "c1", "is_group": 0, "participants": "[]"}])
        unregister = self.store.register_live_conversations(lambda: ["c1"])
        self.assertEqual((await self.store.purge_old_messages(self.BOUND_MS))["osc_conversation"], 0)
        unregister()
        self.assertEqual((await self.store.purge_old_messages(self.BOUND_MS))["osc_conversation"], 1)

    async def test_purge_of_an_empty_database_deletes_nothing(self) -> None:
        """Every count is 0 on empty tables."""
        counts = await self.store.purge_old_messages(self.BOUND_MS, ())
        self.assertEqual(set(counts.values()), {0})

    async def test_scheduled_run_purges_the_database(self) -> None:
        """DailyPurge on a fake clock runs the real purge on the store at deletion_time."""
        await self._fixture()
        clock = task.Clock()
        now = berlin(2023, 11, 20, 2, 0)
        clock.advance(now)
        deletion = SimpleNamespace(deletion_mode=1, deletion_unit="days", deletion_value=1, deletion_time=(3, 0))
        purge = DailyPurge(clock, {"onscreen": self.store}, deletion, keep_ids_provider=lambda name: ["empty-live"], tz=BERLIN)
        purge.startService()
        self.addCleanup(purge.stopService)
        clock.advance(3600)
        await purge.wait_for_run()
        # The bound is 2023-11-19 03:00 Berlin, later than every fixture timestamp.
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_history"), [])
        conversations = fetch_rows(self.database, "SELECT id FROM osc_conversation ORDER BY id")
        self.assertEqual([r["id"] for r in conversations], ["empty-live"])


class PurgeSQLMariaDBTests(PurgeSQLTestsMixin, unittest.TestCase):
    """Purge SQL on the real MariaDB server."""

    database_kind = "mysql"


class PurgeSQLSQLiteTests(PurgeSQLTestsMixin, unittest.TestCase):
    """Purge SQL on SQLite."""

    database_kind = "sqlite"


class BoundTests(unittest.SynchronousTestCase):
    """The bound is "now minus N units" on the local calendar."""

    def test_days_and_weeks(self) -> None:
        """Days and weeks (7 days) keep the wall-clock time, even across a DST change."""
        now = datetime.datetime(2026, 3, 30, 3, 0)
        self.assertEqual(subtract_units(now, "days", 1), datetime.datetime(2026, 3, 29, 3, 0))
        self.assertEqual(subtract_units(now, "weeks", 2), datetime.datetime(2026, 3, 16, 3, 0))
        bound_ms, bound_local = compute_bound(berlin(2026, 3, 30, 3, 0), "days", 2, BERLIN)
        self.assertEqual(bound_local, datetime.datetime(2026, 3, 28, 3, 0))
        self.assertEqual(bound_ms, int(berlin(2026, 3, 28, 3, 0) * 1000))
        # 47 hours, not 48: the night of 29 March was one hour short.
        self.assertEqual(berlin(2026, 3, 30, 3, 0) * 1000 - bound_ms, 47 * 3600 * 1000)

    def test_months_clamp_to_the_month_end(self) -> None:
        """31 March minus one month is 28 February; "month" is accepted like "months"."""
        self.assertEqual(
            subtract_units(datetime.datetime(2026, 3, 31, 3, 0), "months", 1), datetime.datetime(2026, 2, 28, 3, 0)
        )
        self.assertEqual(
            subtract_units(datetime.datetime(2026, 3, 31, 3, 0), "month", 13), datetime.datetime(2025, 2, 28, 3, 0)
        )
        self.assertEqual(
            subtract_units(datetime.datetime(2026, 1, 15, 3, 0), "months", 3), datetime.datetime(2025, 10, 15, 3, 0)
        )

    def test_years_clamp_leap_day(self) -> None:
        """29 February minus one year is 28 February."""
        self.assertEqual(
            subtract_units(datetime.datetime(2028, 2, 29, 3, 0), "years", 1), datetime.datetime(2027, 2, 28, 3, 0)
        )

    def test_unknown_unit_means_now(self) -> None:
        """Like the Node server, an unknown unit gives bound = now."""
        ms, _ = compute_bound(berlin(2026, 5, 1, 3, 0), "fortnights", 2, BERLIN)
        self.assertEqual(ms, int(berlin(2026, 5, 1, 3, 0) * 1000))


class NextRunTests(unittest.SynchronousTestCase):
    """The next local h:m."""

    def test_later_today_or_tomorrow(self) -> None:
        """Before h:m it is today; after it, tomorrow; exactly at it, now."""
        self.assertEqual(next_run_after(berlin(2026, 6, 1, 2, 0), 3, 0, BERLIN), berlin(2026, 6, 1, 3, 0))
        self.assertEqual(next_run_after(berlin(2026, 6, 1, 3, 0, 1), 3, 0, BERLIN), berlin(2026, 6, 2, 3, 0))
        self.assertEqual(next_run_after(berlin(2026, 6, 1, 3, 0), 3, 0, BERLIN), berlin(2026, 6, 1, 3, 0))

    def test_time_in_the_spring_forward_gap(self) -> None:
        """02:30 does not exist on 29 March 2026 in Berlin; the job runs when the clock jumps."""
        run = next_run_after(berlin(2026, 3, 29, 0, 0), 2, 30, BERLIN)
        self.assertEqual(local(run), datetime.datetime(2026, 3, 29, 3, 30))
        self.assertTrue(berlin(2026, 3, 29, 0, 0) < run < berlin(2026, 3, 30, 0, 0))


class RecordingStore:
    """Stands in for a store in schedule tests: records the purge calls it gets."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: List[Tuple[int, set]] = []
        self.fail = fail

    def purge_old_messages(self, bound_ms: int, keep: Iterable[str]) -> defer.Deferred:
        self.calls.append((bound_ms, set(keep)))
        if self.fail:
            return defer.fail(RuntimeError("database down"))
        return defer.succeed({})


class DailyPurgeScheduleTests(unittest.SynchronousTestCase):
    """The schedule of DailyPurge on a fake clock, in the Europe/Berlin time zone."""

    def _purge(self, start: float, store: Any = None, mode: Any = 1, time: Any = (3, 0), **kwargs: Any) -> Tuple[DailyPurge, task.Clock, RecordingStore]:
        clock = task.Clock()
        clock.advance(start)
        store = store or RecordingStore()
        deletion = SimpleNamespace(deletion_mode=mode, deletion_unit="days", deletion_value=7, deletion_time=time)
        purge = DailyPurge(clock, {"onscreen": store}, deletion, tz=BERLIN, **kwargs)
        return purge, clock, store

    def test_first_run_at_next_local_time_then_daily(self) -> None:
        """From 10:00 the first run is at 03:00 the next day, then every day at 03:00."""
        purge, clock, store = self._purge(berlin(2026, 6, 1, 10, 0))
        purge.startService()
        self.assertEqual(purge.next_run, berlin(2026, 6, 2, 3, 0))
        clock.advance(17 * 3600 - 1)
        self.assertEqual(store.calls, [])
        clock.advance(1)
        self.assertEqual(len(store.calls), 1)
        self.assertEqual(store.calls[0][0], int(berlin(2026, 5, 26, 3, 0) * 1000))
        clock.advance(24 * 3600)
        clock.advance(24 * 3600)
        self.assertEqual(len(store.calls), 3)
        self.assertEqual(store.calls[2][0], int(berlin(2026, 5, 28, 3, 0) * 1000))
        self.assertEqual(purge.next_run, berlin(2026, 6, 5, 3, 0))
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_string_deletion_time_and_run_now_at_the_exact_minute(self) -> None:
        """At exactly HH:MM:00 the first run is now (delay 0); "HH:MM" strings are understood."""
        purge, clock, store = self._purge(berlin(2026, 6, 1, 3, 0), time="03:00")
        purge.startService()
        clock.advance(0)
        self.assertEqual(len(store.calls), 1)
        self.assertEqual(purge.next_run, berlin(2026, 6, 2, 3, 0))

    def test_stays_at_local_time_across_dst_changes(self) -> None:
        """
        Across the spring and autumn changes the runs stay at 03:00 local time: 23 hours apart on
        the short night and 25 hours on the long one (the Node server drifts by an hour instead).
        """
        purge, clock, store = self._purge(berlin(2026, 3, 27, 12, 0))
        purge.startService()
        runs = []
        for _ in range(4):
            runs.append(purge.next_run)
            clock.advance(purge.next_run - clock.seconds())
        self.assertEqual(len(store.calls), 4)
        self.assertEqual([local(r) for r in runs], [datetime.datetime(2026, 3, d, 3, 0) for d in (28, 29, 30, 31)])
        self.assertEqual(runs[1] - runs[0], 23 * 3600)
        self.assertEqual(runs[2] - runs[1], 24 * 3600)

        purge.stopService()
        purge, clock, store = self._purge(berlin(2026, 10, 24, 12, 0))
        purge.startService()
        first = purge.next_run
        clock.advance(first - clock.seconds())
        second = purge.next_run
        self.assertEqual(local(second), datetime.datetime(2026, 10, 26, 3, 0))
        self.assertEqual(second - first, 24 * 3600)  # 25 Oct 03:00 -> 26 Oct 03:00
        self.assertEqual(first - berlin(2026, 10, 24, 12, 0), 16 * 3600)  # 24 Oct 12:00 -> 25 Oct 03:00 is 16 h, with the extra hour

    def test_off_unless_deletion_mode_is_1(self) -> None:
        """deletion_mode 0 schedules nothing; "1" (a string from PHP) counts as on."""
        purge, clock, store = self._purge(berlin(2026, 6, 1, 10, 0), mode=0)
        purge.startService()
        self.assertEqual(clock.getDelayedCalls(), [])
        purge, clock, store = self._purge(berlin(2026, 6, 1, 10, 0), mode="1")
        purge.startService()
        self.assertEqual(len(clock.getDelayedCalls()), 1)

    def test_stop_cancels_the_timer(self) -> None:
        """Stopping the service leaves no delayed call behind."""
        purge, clock, store = self._purge(berlin(2026, 6, 1, 10, 0))
        purge.startService()
        purge.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_keep_ids_provider_is_asked_per_client(self) -> None:
        """The provider gets the client name, and its ids reach the store's purge."""
        asked = []

        def provider(name: str) -> List[str]:
            asked.append(name)
            return ["c1", "c2"]

        purge, clock, store = self._purge(berlin(2026, 6, 1, 2, 59), keep_ids_provider=provider)
        purge.startService()
        clock.advance(60)
        self.assertEqual(asked, ["onscreen"])
        self.assertEqual(store.calls[0][1], {"c1", "c2"})

    def test_logs_the_node_servers_lines(self) -> None:
        """Set-up, start and end of each run are logged with the Node server's wording."""
        purge, clock, store = self._purge(berlin(2026, 6, 1, 2, 59))
        with capturedLogs() as events:
            purge.startService()
            clock.advance(60)
        from twisted.logger import formatEvent

        texts = [formatEvent(e) for e in events]
        self.assertIn("Clear messages process initialized for onscreen once a day", texts)
        self.assertIn(
            "Start clear process for namespace onscreen older then {} [2026-05-25 03:00:00]".format(
                int(berlin(2026, 5, 25, 3, 0) * 1000)
            ),
            texts,
        )
        self.assertIn("Clear process for namespace onscreen finished", texts)

    def test_a_failing_store_does_not_stop_the_others_or_the_schedule(self) -> None:
        """A store whose purge fails is logged; the next store is purged and tomorrow's run stays."""
        clock = task.Clock()
        clock.advance(berlin(2026, 6, 1, 2, 59))
        bad, good = RecordingStore(fail=True), RecordingStore()
        deletion = SimpleNamespace(deletion_mode=1, deletion_unit="days", deletion_value=1, deletion_time=(3, 0))
        purge = DailyPurge(clock, [("a", bad), ("b", good)], deletion, tz=BERLIN)
        purge.startService()
        clock.advance(60)
        self.assertEqual((len(bad.calls), len(good.calls)), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(purge.next_run, berlin(2026, 6, 2, 3, 0))
