"""
Tests for ilchat.store.users (usr_pref, usr_data, usr_session), on MariaDB and on SQLite.
"""

from twisted.trial import unittest

from tests.support.db import StoreTestMixin, insert_rows


class UserStoreTestsMixin(StoreTestMixin):
    """The same tests on both databases (see the two subclasses at the end)."""

    async def test_accepting_users_are_those_with_y(self) -> None:
        """Only chat_osc_accept_msg = 'y' counts; other values and other keywords do not."""
        insert_rows(
            self.database,
            "usr_pref",
            [
                {"usr_id": 6, "keyword": "chat_osc_accept_msg", "value": "y"},
                {"usr_id": 7, "keyword": "chat_osc_accept_msg", "value": "n"},
                {"usr_id": 8, "keyword": "language", "value": "y"},
                {"usr_id": 9, "keyword": "chat_osc_accept_msg", "value": "y"},
            ],
        )
        self.assertEqual(await self.store.get_accepting_user_ids(), {6, 9})

    async def test_get_login_returns_the_account(self) -> None:
        """The IRC bridge gets id, password hash, its type and the active flag for a login."""
        insert_rows(
            self.database,
            "usr_data",
            [
                {"usr_id": 6, "login": "alice", "passwd": "$2y$10$abc", "passwd_enc_type": "bcryptphp", "active": 1},
                {"usr_id": 7, "login": "bob", "passwd": "x", "passwd_enc_type": "md5", "active": 0},
            ],
        )
        self.assertEqual(
            await self.store.get_login("alice"),
            {"usr_id": 6, "login": "alice", "passwd": "$2y$10$abc", "passwd_enc_type": "bcryptphp", "active": True},
        )
        self.assertFalse((await self.store.get_login("bob"))["active"])
        self.assertIsNone(await self.store.get_login("carol"))

    async def test_get_login_ignores_case_like_ilias(self) -> None:
        """Logins compare case-insensitively, as on ILIAS's utf8mb4_unicode_ci tables."""
        insert_rows(self.database, "usr_data", [{"usr_id": 6, "login": "Alice", "passwd": "p"}])
        self.assertEqual((await self.store.get_login("alice"))["usr_id"], 6)

    async def test_get_logins_of_the_users_the_database_has(self) -> None:
        """Logins by id; unknown ids and empty logins are left out; no ids, no query."""
        insert_rows(self.database, "usr_data", [
            {"usr_id": 6, "login": "alice"}, {"usr_id": 7, "login": "bob"}, {"usr_id": 8, "login": ""}])
        self.assertEqual(await self.store.get_logins([7, 6, 8, 99, 6]), {6: "alice", 7: "bob"})
        self.assertEqual(await self.store.get_logins([]), {})

    async def test_live_session_is_the_user_of_an_unexpired_row(self) -> None:
        """The cookie value is the session_id as stored; expired, userless or unknown: None."""
        insert_rows(self.database, "usr_session", [
            {"session_id": "live", "user_id": 6, "expires": 1_000},
            {"session_id": "old", "user_id": 7, "expires": 999},
            {"session_id": "guest", "user_id": 0, "expires": 2_000},
        ])
        self.assertEqual(await self.store.get_live_session("live", 999), 6)
        self.assertIsNone(await self.store.get_live_session("live", 1_000))
        self.assertIsNone(await self.store.get_live_session("old", 999))
        self.assertIsNone(await self.store.get_live_session("guest", 999))
        # PHP's session ids are case-sensitive, whatever the column's collation.
        self.assertIsNone(await self.store.get_live_session("LIVE", 999))
        self.assertIsNone(await self.store.get_live_session("' OR '1'='1", 0))


class UserStoreMariaDBTests(UserStoreTestsMixin, unittest.TestCase):
    """User queries on the real MariaDB server."""

    database_kind = "mysql"


class UserStoreSQLiteTests(UserStoreTestsMixin, unittest.TestCase):
    """User queries on SQLite."""

    database_kind = "sqlite"
