"""
Tests for ilchat.store.rooms: the repository-chat queries, on MariaDB and on SQLite.
"""

from twisted.internet import defer
from twisted.trial import unittest

from tests.support.db import StoreTestMixin, fetch_rows, insert_rows

ALICE = '{"login":"alice","id":6}'
BOB = '{"login":"bob","id":7}'


class RoomStoreTestsMixin(StoreTestMixin):
    """The same tests on both databases (see the two subclasses at the end)."""

    async def test_get_room_ids_lists_chatroom_settings(self) -> None:
        """Every chatroom_settings row is a room, returned as ints in ascending order."""
        insert_rows(self.database, "chatroom_settings", [{"room_id": 3}, {"room_id": 1}])
        self.assertEqual(await self.store.get_room_ids(), [1, 3])

    async def test_ensure_rooms_adds_only_missing_rooms(self) -> None:
        """The standalone chat's configured rooms are added once; existing ones stay as they are."""
        insert_rows(self.database, "chatroom_settings", [{"room_id": 1, "object_id": 99}])
        self.assertEqual(await self.store.ensure_rooms([1, 2, 2, 5]), 2)
        self.assertEqual(await self.store.get_room_ids(), [1, 2, 5])
        rows = fetch_rows(self.database, "SELECT object_id FROM chatroom_settings WHERE room_id = 1")
        self.assertEqual(rows, [{"object_id": 99}])
        self.assertEqual(await self.store.ensure_rooms([1, 2]), 0)

    async def test_start_up_move_turns_users_into_sessions(self) -> None:
        """
        move_all_users_to_sessions copies each chatroom_users row to chatroom_sessions with ids
        from chatroom_sessions_seq and disconnected = now, then empties chatroom_users
        (spec 4.2 disconnectAllUsers, 10.2).
        """
        insert_rows(
            self.database,
            "chatroom_users",
            [
                {"room_id": 1, "user_id": 6, "userdata": ALICE, "connected": 1795301006},
                {"room_id": 1, "user_id": 7, "userdata": BOB, "connected": 1795301005},
            ],
        )
        moved = await self.store.move_all_users_to_sessions(1795301024)
        self.assertEqual(moved, 2)
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_users"), [])
        sessions = fetch_rows(self.database, "SELECT * FROM chatroom_sessions ORDER BY sess_id")
        self.assertEqual(
            sessions,
            [
                {"sess_id": 1, "room_id": 1, "user_id": 6, "userdata": ALICE, "connected": 1795301006, "disconnected": 1795301024},
                {"sess_id": 2, "room_id": 1, "user_id": 7, "userdata": BOB, "connected": 1795301005, "disconnected": 1795301024},
            ],
        )
        self.assertEqual(fetch_rows(self.database, "SELECT sequence FROM chatroom_sessions_seq"), [{"sequence": 2}])

    async def test_start_up_move_with_no_users_changes_nothing(self) -> None:
        """The second run (the IM namespace shares the database) finds no rows and moves none."""
        self.assertEqual(await self.store.move_all_users_to_sessions(100), 0)
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_sessions"), [])

    async def test_session_ids_continue_the_sequence(self) -> None:
        """Session ids follow the existing sequence value, as ILIAS's own nextId would."""
        insert_rows(self.database, "chatroom_sessions_seq", [{"sequence": 41}])
        await self.store.add_chatroom_user(2, 6, ALICE, 10)
        await self.store.move_all_users_to_sessions(20)
        rows = fetch_rows(self.database, "SELECT sess_id FROM chatroom_sessions")
        self.assertEqual(rows, [{"sess_id": 42}])

    async def test_move_user_to_sessions_moves_only_that_users_rooms(self) -> None:
        """disconnectUser moves the user's rows of the given rooms and leaves everything else."""
        insert_rows(
            self.database,
            "chatroom_users",
            [
                {"room_id": 1, "user_id": 6, "userdata": ALICE, "connected": 5},
                {"room_id": 2, "user_id": 6, "userdata": ALICE, "connected": 6},
                {"room_id": 3, "user_id": 6, "userdata": ALICE, "connected": 7},
                {"room_id": 1, "user_id": 7, "userdata": BOB, "connected": 8},
            ],
        )
        self.assertEqual(await self.store.move_user_to_sessions(6, [1, 2], 50), 2)
        left = fetch_rows(self.database, "SELECT room_id, user_id FROM chatroom_users ORDER BY room_id, user_id")
        self.assertEqual(left, [{"room_id": 1, "user_id": 7}, {"room_id": 3, "user_id": 6}])
        sessions = fetch_rows(
            self.database, "SELECT sess_id, room_id, user_id, connected, disconnected FROM chatroom_sessions ORDER BY sess_id"
        )
        self.assertEqual(
            sessions,
            [
                {"sess_id": 1, "room_id": 1, "user_id": 6, "connected": 5, "disconnected": 50},
                {"sess_id": 2, "room_id": 2, "user_id": 6, "connected": 6, "disconnected": 50},
            ],
        )

    async def test_move_users_to_sessions_moves_every_row_of_those_users_only(self) -> None:
        """A cluster process that stops moves its own users' rows and leaves the others'."""
        insert_rows(
            self.database,
            "chatroom_users",
            [{"room_id": r, "user_id": u, "userdata": "{}", "connected": 3}
             for r in (1, 2) for u in range(1, 600, 3)],
        )
        mine = list(range(1, 600, 6))  # 100 users: more than one IN list of 500 would be too
        self.assertEqual(await self.store.move_users_to_sessions(mine + [9999], 40), 200)
        left = fetch_rows(self.database, "SELECT DISTINCT user_id FROM chatroom_users ORDER BY user_id")
        self.assertEqual([r["user_id"] for r in left], list(range(4, 600, 6)))
        sessions = fetch_rows(self.database,
                              "SELECT user_id, disconnected FROM chatroom_sessions ORDER BY sess_id")
        self.assertEqual(sorted({r["user_id"] for r in sessions}), mine)
        self.assertEqual({r["disconnected"] for r in sessions}, {40})
        self.assertEqual(await self.store.move_users_to_sessions([], 40), 0)

    async def test_move_users_to_sessions_in_chunks(self) -> None:
        ids = list(range(1, 1200))
        insert_rows(self.database, "chatroom_users",
                    [{"room_id": 1, "user_id": u, "userdata": "{}", "connected": 1} for u in ids])
        self.assertEqual(await self.store.move_users_to_sessions(ids, 2), len(ids))
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_users"), [])

    async def test_concurrent_moves_copy_each_row_once(self) -> None:
        """
        Moves running at the same time (shutdown while grace timers fire) never copy a row
        twice: the rows are locked while they move, and every session id is distinct.
        """
        insert_rows(
            self.database,
            "chatroom_users",
            [{"room_id": r, "user_id": u, "userdata": "{}", "connected": 1} for r in (1, 2) for u in range(10)],
        )
        calls = [defer.ensureDeferred(self.store.move_all_users_to_sessions(9)) for _ in range(4)]
        calls += [defer.ensureDeferred(self.store.move_user_to_sessions(u, [1, 2], 9)) for u in range(10)]
        moved = await defer.gatherResults(calls, consumeErrors=True)
        self.assertEqual(sum(moved), 20)
        sessions = fetch_rows(self.database, "SELECT sess_id, room_id, user_id FROM chatroom_sessions")
        self.assertEqual(len(sessions), 20)
        self.assertEqual(len({s["sess_id"] for s in sessions}), 20)
        self.assertEqual(len({(s["room_id"], s["user_id"]) for s in sessions}), 20)
        self.assertEqual(fetch_rows(self.database, "SELECT * FROM chatroom_users"), [])

    async def test_max_user_id_of_users_and_sessions(self) -> None:
        """Where the standalone chat's ids start again when its id counter forgot them."""
        self.assertEqual(await self.store.max_user_id(), 0)
        await self.store.add_chatroom_user(1, 6, ALICE, 5)
        self.assertEqual(await self.store.max_user_id(), 6)
        await self.store.add_chatroom_user(1, 40, BOB, 5)
        await self.store.move_user_to_sessions(40, [1], 9)
        await self.store.add_chatroom_user(2, 7, BOB, 9)
        self.assertEqual(await self.store.max_user_id(), 40)

    async def test_move_user_to_sessions_with_no_rooms_does_nothing(self) -> None:
        """An empty room list moves nothing (the Node server skips the call)."""
        await self.store.add_chatroom_user(1, 6, ALICE, 5)
        self.assertEqual(await self.store.move_user_to_sessions(6, [], 50), 0)
        self.assertEqual(len(await self.store.get_chatroom_users()), 1)

    async def test_add_chatroom_user_replaces_like_php(self) -> None:
        """A second connect of the same user to the same room replaces the row (PHP's REPLACE)."""
        await self.store.add_chatroom_user(1, 6, ALICE, 5)
        await self.store.add_chatroom_user(1, 6, '{"login":"alice2","id":6}', 9)
        await self.store.add_chatroom_user(2, 7, BOB, 9)
        self.assertEqual(
            await self.store.get_chatroom_users(1),
            [{"room_id": 1, "user_id": 6, "userdata": '{"login":"alice2","id":6}', "connected": 9}],
        )
        self.assertEqual(len(await self.store.get_chatroom_users()), 2)

    async def test_add_history_stores_the_row_with_seconds_and_seq_id(self) -> None:
        """A history row gets hist_id from chatroom_history_seq, the JSON as given, sub_room 0."""
        message = '{"type":"message","timestamp":1795301007,"content":"hello","roomId":1}'
        hist_id = await self.store.add_history(1, message, 1795301007)
        self.assertEqual(hist_id, 1)
        self.assertEqual(
            fetch_rows(self.database, "SELECT * FROM chatroom_history"),
            [{"hist_id": 1, "room_id": 1, "message": message, "timestamp": 1795301007, "sub_room": 0}],
        )
        self.assertEqual(await self.store.add_history(1, message, 1795301008), 2)
        self.assertEqual(fetch_rows(self.database, "SELECT sequence FROM chatroom_history_seq"), [{"sequence": 2}])

    async def test_history_keeps_four_byte_characters(self) -> None:
        """An emoji (4 bytes in UTF-8) survives the round trip: utf8mb4, unlike the Node server."""
        message = '{"content":"party \U0001f389 time \u00e4\u00f6\u00fc"}'
        await self.store.add_history(1, message, 5)
        self.assertEqual([row["message"] for row in await self.store.get_history(1, 10)], [message])

    async def test_add_history_batch_stores_rows_in_order(self) -> None:
        """A batch gets consecutive ids in the order given, in one transaction."""
        ids = await self.store.add_history_batch([(1, '{"n":1}', 10), (2, '{"n":2}', 11), (1, '{"n":3}', 12)])
        self.assertEqual(ids, [1, 2, 3])
        self.assertEqual(await self.store.add_history_batch([]), [])
        rows = fetch_rows(self.database, "SELECT hist_id, room_id, message FROM chatroom_history ORDER BY hist_id")
        self.assertEqual([(r["hist_id"], r["room_id"], r["message"]) for r in rows],
                         [(1, 1, '{"n":1}'), (2, 2, '{"n":2}'), (3, 1, '{"n":3}')])

    async def test_get_history_returns_the_latest_rows_oldest_first(self) -> None:
        """The latest N messages of the one room, in the order they were written."""
        for n in range(5):
            await self.store.add_history(1, '{"n":%d}' % n, 100 + n)
        await self.store.add_history(2, '{"other":1}', 200)
        history = await self.store.get_history(1, 3)
        self.assertEqual([row["message"] for row in history], ['{"n":2}', '{"n":3}', '{"n":4}'])
        self.assertEqual(history[-1]["timestamp"], 104)
        self.assertEqual(await self.store.get_history(9, 3), [])

    async def test_clear_history_deletes_one_room(self) -> None:
        """clear_history empties one room's history and leaves the others."""
        await self.store.add_history(1, "{}", 1)
        await self.store.add_history(2, "{}", 1)
        self.assertEqual(await self.store.clear_history(1), 1)
        self.assertEqual(len(await self.store.get_history(2, 5)), 1)

    async def test_is_banned_reads_chatroom_bans(self) -> None:
        """A chatroom_bans row bans exactly that user from exactly that room."""
        insert_rows(self.database, "chatroom_bans", [{"room_id": 1, "user_id": 7, "timestamp": 5}])
        self.assertTrue(await self.store.is_banned(1, 7))
        self.assertFalse(await self.store.is_banned(2, 7))
        self.assertFalse(await self.store.is_banned(1, 6))

    async def test_banned_pairs_lists_every_ban(self) -> None:
        """banned_pairs: every (room, user) pair of chatroom_bans, nothing else."""
        self.assertEqual(await self.store.banned_pairs(), set())
        insert_rows(self.database, "chatroom_bans", [{"room_id": 1, "user_id": 7, "timestamp": 5},
                                                     {"room_id": 2, "user_id": 6, "timestamp": 5}])
        self.assertEqual(await self.store.banned_pairs(), {(1, 7), (2, 6)})

    async def test_get_bans_lists_a_rooms_bans_with_logins(self) -> None:
        """get_bans: that room's bans, oldest first, with usr_data.login where there is one."""
        insert_rows(self.database, "usr_data", [{"usr_id": 7, "login": "bob"}])
        insert_rows(self.database, "chatroom_bans", [
            {"room_id": 1, "user_id": 8, "timestamp": 9, "actor_id": 6},
            {"room_id": 1, "user_id": 7, "timestamp": 5},
            {"room_id": 2, "user_id": 9, "timestamp": 1},
        ])
        self.assertEqual(await self.store.get_bans(1), [
            {"user_id": 7, "timestamp": 5, "actor_id": None, "login": "bob"},
            {"user_id": 8, "timestamp": 9, "actor_id": 6, "login": None},
        ])
        self.assertEqual(len(await self.store.get_bans(1, limit=1)), 1)
        self.assertEqual(await self.store.get_bans(3), [])

    async def test_ban_user_and_unban_users_write_as_php_does(self) -> None:
        """
        ban_user is PHP's banUser (REPLACE: a second ban renews actor and time, empty remark);
        unban_users deletes exactly those users' rows of that room; get_bans filters by user.
        """
        insert_rows(self.database, "chatroom_bans", [{"room_id": 2, "user_id": 7, "timestamp": 1}])
        await self.store.ban_user(1, 7, 6, 100)
        await self.store.ban_user(1, 7, 5, 200)
        await self.store.ban_user(1, 8, 0, 150)
        rows = fetch_rows(self.database, "SELECT room_id, user_id, actor_id, timestamp, remark"
                          " FROM chatroom_bans ORDER BY room_id, user_id")
        self.assertEqual(rows, [
            {"room_id": 1, "user_id": 7, "actor_id": 5, "timestamp": 200, "remark": ""},
            {"room_id": 1, "user_id": 8, "actor_id": 0, "timestamp": 150, "remark": ""},
            {"room_id": 2, "user_id": 7, "actor_id": None, "timestamp": 1, "remark": None},
        ])
        self.assertEqual([b["user_id"] for b in await self.store.get_bans(1, user_ids=[7, 9])], [7])
        self.assertEqual(await self.store.get_bans(1, user_ids=[]), [])
        self.assertEqual(await self.store.unban_users(1, [7, 9]), 1)
        self.assertEqual(await self.store.unban_users(1, []), 0)
        self.assertFalse(await self.store.is_banned(1, 7))
        self.assertTrue(await self.store.is_banned(1, 8))
        self.assertTrue(await self.store.is_banned(2, 7))

    async def test_chatroom_userdata_prefers_the_room_then_the_newest(self) -> None:
        """The name PHP wrote: that room's row, else the newest row of the user, else None."""
        await self.store.add_chatroom_user(1, 6, '{"login":"alice one","id":6}', 100)
        await self.store.add_chatroom_user(2, 6, '{"login":"alice two","id":6}', 200)
        self.assertEqual(await self.store.get_chatroom_userdata(6, 1), '{"login":"alice one","id":6}')
        self.assertEqual(await self.store.get_chatroom_userdata(6), '{"login":"alice two","id":6}')
        self.assertEqual(await self.store.get_chatroom_userdata(6, 3), '{"login":"alice two","id":6}')
        self.assertIsNone(await self.store.get_chatroom_userdata(7))

    async def test_chat_name_sources_read_userdata_and_login_together(self) -> None:
        """The newest userdata and usr_data.login in one call; None for what is missing."""
        await self.store.add_chatroom_user(1, 6, '{"login":"alice one","id":6}', 100)
        await self.store.add_chatroom_user(2, 6, '{"login":"alice two","id":6}', 200)
        insert_rows(self.database, "usr_data", [{"usr_id": 6, "login": "alice", "passwd": "p"},
                                                {"usr_id": 8, "login": "bob", "passwd": "p"}])
        self.assertEqual(await self.store.get_chat_name_sources(6),
                         ('{"login":"alice two","id":6}', "alice"))
        self.assertEqual(await self.store.get_chat_name_sources(8), (None, "bob"))
        self.assertEqual(await self.store.get_chat_name_sources(7), (None, None))


class RoomStoreMariaDBTests(RoomStoreTestsMixin, unittest.TestCase):
    """Repository-chat queries on the real MariaDB server (a pool of eight connections)."""

    database_kind = "mysql"
    store_options = {"cp_min": 2, "cp_max": 8}


class RoomStoreSQLiteTests(RoomStoreTestsMixin, unittest.TestCase):
    """Repository-chat queries on SQLite."""

    database_kind = "sqlite"
