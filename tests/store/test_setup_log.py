"""
Tests for ilchat.store.setup_log (ILIAS's ``il_db_steps``), on MariaDB and on SQLite.
"""

from twisted.trial import unittest

from ilchat.ilias.escaping import ILIAS10_STEP
from tests.support.db import StoreTestMixin, execute, insert_rows, mark_ilias9


class SetupLogStoreTestsMixin(StoreTestMixin):
    """The same tests on both databases (see the two subclasses at the end)."""

    async def test_finished_step_is_found(self) -> None:
        """The test databases are ILIAS 10's: the On-Screen Chat step is finished."""
        self.assertTrue(await self.store.update_step_finished(*ILIAS10_STEP))
        self.assertFalse(await self.store.update_step_finished(ILIAS10_STEP[0], 2))
        self.assertFalse(await self.store.update_step_finished("ILIAS\\Chatroom\\Setup\\UpdateSteps", 1))

    async def test_missing_or_unfinished_step_is_not(self) -> None:
        """ILIAS 9's log lacks the row; a step still running (finished NULL) does not count."""
        mark_ilias9(self.database)
        self.assertFalse(await self.store.update_step_finished(*ILIAS10_STEP))
        insert_rows(self.database, "il_db_steps", [
            {"class": ILIAS10_STEP[0], "step": ILIAS10_STEP[1], "started": "2025-03-01 10:00:00.0",
             "finished": None}])
        self.assertFalse(await self.store.update_step_finished(*ILIAS10_STEP))

    async def test_no_setup_log_at_all(self) -> None:
        """A database without il_db_steps (not ILIAS's, or older than ILIAS 8) tells nothing."""
        execute(self.database, "DROP TABLE il_db_steps")
        self.assertFalse(await self.store.update_step_finished(*ILIAS10_STEP))


class SetupLogMariaDBTests(SetupLogStoreTestsMixin, unittest.TestCase):
    database_kind = "mysql"


class SetupLogSQLiteTests(SetupLogStoreTestsMixin, unittest.TestCase):
    database_kind = "sqlite"
