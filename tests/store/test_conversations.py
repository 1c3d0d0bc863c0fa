"""
Tests for ilchat.store.conversations (On-Screen Chat), on MariaDB and on SQLite.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.db import StoreTestMixin, fetch_rows, insert_rows

CONV = "88ab8a71-0000-4000-8000-000000000001"
OTHER = "88ab8a71-0000-4000-8000-000000000002"
PAIR = '[{"id":6,"name":"alice"},{"id":7,"name":"bob"}]'


class ConversationStoreTestsMixin(StoreTestMixin):
    """The same tests on both databases (see the two subclasses at the end)."""

    async def test_insert_then_update_conversation(self) -> None:
        """A conversation is inserted with "[]" and then updated, as the Node server does (10.3)."""
        await self.store.insert_conversation(CONV, False, "[]")
        await self.store.update_conversation(CONV, PAIR, False)
        self.assertEqual(
            await self.store.get_conversations(), [{"id": CONV, "is_group": False, "participants": PAIR}]
        )
        await self.store.update_conversation(CONV, "[]", True)
        rows = fetch_rows(self.database, "SELECT id, is_group, participants FROM osc_conversation")
        self.assertEqual(rows, [{"id": CONV, "is_group": 1, "participants": "[]"}])

    async def test_update_of_a_vanished_conversation_writes_it_back(self) -> None:
        """An update for a row that a purge removed inserts it again instead of changing nothing."""
        await self.store.update_conversation(OTHER, PAIR, True)
        self.assertEqual(
            await self.store.get_conversations(), [{"id": OTHER, "is_group": True, "participants": PAIR}]
        )

    async def test_changes_at_once_keep_each_other(self) -> None:
        """Two changes of one row at once (two processes adding someone) both end up stored."""
        await self.store.insert_conversation(CONV, True, PAIR)

        def adding(user_id: int):
            def change(stored: str) -> str:
                return stored[:-1] + ',{"id":%d,"name":"u%d"}]' % (user_id, user_id)
            return change

        await defer.gatherResults([
            defer.ensureDeferred(self.store.update_conversation(CONV, "[]", True, change=adding(u))) for u in (8, 9, 10)
        ])
        stored = (await self.store.get_conversation(CONV))["participants"]
        self.assertEqual(sorted(stored.count('"id":%d' % u) for u in (6, 7, 8, 9, 10)), [1] * 5)
        # A row that vanished is written back with the given list.
        await self.store.update_conversation(OTHER, PAIR, True, change=adding(8))
        self.assertEqual((await self.store.get_conversation(OTHER))["participants"], PAIR)

    async def test_get_one_conversation_by_id(self) -> None:
        """One row by id (what a process reads for a conversation another one made), or None."""
        await self.store.insert_conversation(CONV, True, PAIR)
        self.assertEqual(await self.store.get_conversation(CONV), {"id": CONV, "is_group": True, "participants": PAIR})
        self.assertIsNone(await self.store.get_conversation(OTHER))

    async def test_messages_latest_and_history_pages(self) -> None:
        """The latest message, the newest page of 6, and older pages by timestamp, newest first."""
        self.assertIsNone(await self.store.get_latest_osc_message(CONV))
        for n in range(10):
            await self.store.add_osc_message("m%d" % n, CONV, 6 + n % 2, "text %d \U0001f389" % n, 1000 + n)
        await self.store.add_osc_message("x", OTHER, 6, "elsewhere", 5000)
        latest = await self.store.get_latest_osc_message(CONV)
        self.assertEqual(
            latest,
            {"id": "m9", "conversation_id": CONV, "user_id": 7, "message": "text 9 \U0001f389", "timestamp": 1009},
        )
        page = await self.store.get_osc_history(CONV, None)
        self.assertEqual([m["id"] for m in page], ["m9", "m8", "m7", "m6", "m5", "m4"])
        older = await self.store.get_osc_history(CONV, 1004)
        self.assertEqual([m["id"] for m in older], ["m3", "m2", "m1", "m0"])
        self.assertEqual([m["id"] for m in await self.store.get_osc_history(CONV, 1004, limit=2)], ["m3", "m2"])

    async def test_unread_count_is_per_participant(self) -> None:
        """
        Each participant's unread count is the number of messages after their own read marker;
        a participant without an activity row has 0 (the Node server's query).
        """
        for n, ts in enumerate((100, 200, 300)):
            await self.store.add_osc_message("m%d" % n, CONV, 6, "hi", ts)
        await self.store.track_activity(CONV, 6, 300)
        await self.store.track_activity(CONV, 7, 100)
        self.assertEqual(await self.store.count_unread(CONV, 6), 0)
        self.assertEqual(await self.store.count_unread(CONV, 7), 2)
        self.assertEqual(await self.store.count_unread(CONV, 8), 0)
        self.assertEqual(await self.store.count_unread(OTHER, 7), 0)

    async def test_track_activity_inserts_then_moves_marker_and_reopens(self) -> None:
        """
        No row: insert. A row and a timestamp > 0: move the marker and clear is_closed.
        A row and timestamp 0 (addUser): leave it as it is.
        """
        await self.store.track_activity(CONV, 7, 0)
        self.assertEqual(
            await self.store.get_activity(CONV, 7),
            {"conversation_id": CONV, "user_id": 7, "timestamp": 0, "is_closed": False},
        )
        await self.store.track_activity(CONV, 7, 500)
        self.assertTrue(await self.store.close_conversation(CONV, 7, 600))
        self.assertEqual((await self.store.get_activity(CONV, 7))["is_closed"], True)
        await self.store.track_activity(CONV, 7, 0)
        self.assertEqual(
            await self.store.get_activity(CONV, 7),
            {"conversation_id": CONV, "user_id": 7, "timestamp": 600, "is_closed": True},
        )
        await self.store.track_activity(CONV, 7, 700)
        self.assertEqual(
            await self.store.get_activity(CONV, 7),
            {"conversation_id": CONV, "user_id": 7, "timestamp": 700, "is_closed": False},
        )

    async def test_concurrent_first_activity_makes_one_row(self) -> None:
        """Two first trackActivity calls at once both succeed and leave one row."""
        await defer.gatherResults(
            [defer.ensureDeferred(self.store.track_activity(CONV, 7, 0)) for _ in range(10)], consumeErrors=True
        )
        self.assertEqual(len(fetch_rows(self.database, "SELECT * FROM osc_activity")), 1)

    async def test_activity_then_close_leaves_closed_row(self) -> None:
        """activity followed by closeConversation leaves (conv, user, now_ms, is_closed=1) (10.3)."""
        await self.store.track_activity(CONV, 7, 1795301069041)
        await self.store.close_conversation(CONV, 7, 1795301070000)
        rows = fetch_rows(self.database, "SELECT * FROM osc_activity")
        self.assertEqual(
            rows, [{"conversation_id": CONV, "user_id": 7, "timestamp": 1795301070000, "is_closed": 1}]
        )

    async def test_close_without_activity_row_does_nothing(self) -> None:
        """closeConversation without an activity row changes nothing and says so."""
        self.assertFalse(await self.store.close_conversation(CONV, 7, 5))
        self.assertIsNone(await self.store.get_activity(CONV, 7))

    async def test_activity_row_inserted_by_php_default_is_closed_zero(self) -> None:
        """A row inserted without is_closed reads back as not closed (the column's default)."""
        insert_rows(self.database, "osc_activity", [{"conversation_id": CONV, "user_id": 6, "timestamp": 9}])
        self.assertEqual((await self.store.get_activity(CONV, 6))["is_closed"], False)


class ConversationStoreMariaDBTests(ConversationStoreTestsMixin, unittest.TestCase):
    """On-Screen Chat queries on the real MariaDB server (a pool of eight connections)."""

    database_kind = "mysql"
    store_options = {"cp_min": 2, "cp_max": 8}


class ConversationStoreSQLiteTests(ConversationStoreTestsMixin, unittest.TestCase):
    """On-Screen Chat queries on SQLite."""

    database_kind = "sqlite"
