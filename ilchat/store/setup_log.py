# -*- test-case-name: tests.store.test_setup_log -*-
"""
ILIAS's setup log ``il_db_steps``: which database update steps ILIAS's setup has run.

ILIAS (8 and later) writes one row per step of each ``ilDatabaseUpdateSteps`` class it ran:
``class`` (the PHP class name, namespace included), ``step``, ``started``, ``finished`` (text
times, NULL while the step runs). A step that exists only from some ILIAS version on tells that
the database is of that version or later (``ilchat.ilias.escaping``). The server only reads it.

Methods (coroutines):

* ``update_step_finished(class_name, step) -> bool`` whether ``il_db_steps`` exists and has that
  step finished
"""

from __future__ import annotations

from ilchat.store.database import Database, Transaction

__all__ = ["SetupLogStore"]

#: The columns ilchat reads of ``il_db_steps``.
_COLUMNS = frozenset({"class", "step", "finished"})


class SetupLogStore:
    """The ``il_db_steps`` query (mixed into :class:`ilchat.store.Store`)."""

    db: Database

    async def update_step_finished(self, class_name: str, step: int) -> bool:
        """Whether ILIAS's setup finished step C{step} of C{class_name} (no table: False)."""

        def update_step_finished_txn(txn: Transaction) -> bool:
            sql, args = txn.engine.columns_query("il_db_steps")
            txn.execute(sql, args)
            if not _COLUMNS <= {str(row[0]).lower() for row in txn.fetchall()}:
                return False
            txn.execute("SELECT 1 FROM il_db_steps WHERE class = ? AND step = ?"
                        " AND finished IS NOT NULL", (class_name, step))
            return txn.fetchone() is not None

        return await self.db.run_interaction("update_step_finished", update_step_finished_txn)
