"""
Tests for ilchat.store.private_rooms (ILIAS 8 private rooms), on MariaDB and on SQLite.
"""

import json

from twisted.trial import unittest

from tests.support.db import StoreTestMixin, create_ilias8_tables, execute, fetch_rows, insert_rows


class PrivateRoomStoreTestsMixin(StoreTestMixin):
    """The same tests on both databases (see the two subclasses at the end)."""

    async def test_schema_is_detected_from_the_ilias8_tables(self) -> None:
        """Without chatroom_prooms/psessions it is an ILIAS 9+ database; with them ILIAS 8."""
        self.assertFalse(await self.store.has_private_rooms())
        create_ilias8_tables(self.database)
        self.assertTrue(await self.store.has_private_rooms())
        execute(self.database, "DROP TABLE chatroom_psessions")
        self.assertFalse(await self.store.has_private_rooms())

    async def test_open_private_rooms_are_read_at_start(self) -> None:
        """Rooms with closed 0 or NULL, in id order; a parent that is no number is skipped."""
        create_ilias8_tables(self.database)
        insert_rows(self.database, "chatroom_prooms", [
            {"proom_id": 4, "parent_id": "1", "title": "Four", "owner": 6, "closed": 0},
            {"proom_id": 2, "parent_id": "2", "title": "Two", "owner": 7, "closed": None},
            {"proom_id": 3, "parent_id": "1", "title": "Closed", "owner": 6, "closed": 1795301000},
            {"proom_id": 5, "parent_id": "x", "title": "Odd", "owner": 6, "closed": 0},
        ])
        self.assertEqual(await self.store.get_private_rooms(), [
            {"proom_id": 2, "parent_id": 2, "title": "Two", "owner": 7},
            {"proom_id": 4, "parent_id": 1, "title": "Four", "owner": 6},
        ])
        self.assertEqual(await self.store.close_private_room(4, 1795301024), 1)
        self.assertEqual([r["proom_id"] for r in await self.store.get_private_rooms()], [2])
        self.assertEqual(
            fetch_rows(self.database, "SELECT closed FROM chatroom_prooms WHERE proom_id = 4"),
            [{"closed": 1795301024}])

    async def test_private_sessions_end_once(self) -> None:
        """Only the user's open sessions in those rooms end; an earlier end is kept."""
        create_ilias8_tables(self.database)
        insert_rows(self.database, "chatroom_psessions", [
            {"proom_id": 4, "user_id": 6, "connected": 100, "disconnected": 0},
            {"proom_id": 4, "user_id": 6, "connected": 50, "disconnected": 60},
            {"proom_id": 5, "user_id": 6, "connected": 100, "disconnected": 0},
            {"proom_id": 4, "user_id": 7, "connected": 100, "disconnected": 0},
        ])
        self.assertEqual(await self.store.end_private_sessions(6, [4], 200), 1)
        self.assertEqual(await self.store.end_private_sessions(6, [], 200), 0)
        rows = fetch_rows(self.database, "SELECT proom_id, user_id, connected, disconnected"
                          " FROM chatroom_psessions ORDER BY proom_id, user_id, connected")
        self.assertEqual([r["disconnected"] for r in rows], [60, 200, 0, 0])

    async def test_history_rows_with_sub_room(self) -> None:
        """Five-field rows write chatroom_history.sub_room; four-field rows leave its default."""
        message = json.dumps({"type": "message", "roomId": 1, "subRoomId": 5})
        ids = await self.store.add_history_rows([(None, 1, message, 1795301007, 5)])
        await self.store.add_history_rows([(None, 1, "{}", 1795301008)])
        rows = fetch_rows(self.database, "SELECT hist_id, room_id, message, sub_room"
                          " FROM chatroom_history ORDER BY hist_id")
        self.assertEqual(rows, [
            {"hist_id": ids[0], "room_id": 1, "message": message, "sub_room": 5},
            {"hist_id": ids[0] + 1, "room_id": 1, "message": "{}", "sub_room": 0},
        ])


class PrivateRoomStoreMariaDBTests(PrivateRoomStoreTestsMixin, unittest.TestCase):
    database_kind = "mysql"


class PrivateRoomStoreSQLiteTests(PrivateRoomStoreTestsMixin, unittest.TestCase):
    database_kind = "sqlite"
