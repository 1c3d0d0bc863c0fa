# -*- test-case-name: tests.store.test_users -*-
"""
ILIAS user data that ilchat reads and never writes: ``usr_pref`` and ``usr_data``.

Methods (all return Deferreds / are coroutines):

* ``get_accepting_user_ids() -> set[int]`` users whose ``chat_osc_accept_msg`` preference is ``'y'``
  (the 20-minute poll, spec 5.3)
* ``get_login(login) -> dict | None`` ``{usr_id, login, passwd, passwd_enc_type, active: bool}``
  for the IRC bridge's authentication; the comparison follows the database collation
  (case-insensitive on ILIAS's utf8mb4_unicode_ci, and ``NOCASE`` on SQLite).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Set

from ilchat.store.database import Database, Transaction

__all__ = ["UserStore"]


class UserStore:
    """Read-only user queries (mixed into :class:`ilchat.store.Store`)."""

    db: Database

    async def get_accepting_user_ids(self) -> Set[int]:
        """The ids of users who accept On-Screen Chat messages."""

        def get_accepting_user_ids_txn(txn: Transaction) -> Set[int]:
            txn.execute(
                "SELECT usr_id FROM usr_pref WHERE keyword = ? AND value = ?", ("chat_osc_accept_msg", "y")
            )
            return {int(row[0]) for row in txn.fetchall()}

        return await self.db.run_interaction("get_accepting_user_ids", get_accepting_user_ids_txn)

    async def get_login(self, login: str) -> Optional[Dict[str, Any]]:
        """The account row for a login name, or None (the IRC bridge checks the password)."""

        def get_login_txn(txn: Transaction) -> Optional[Dict[str, Any]]:
            row = txn.select_one(
                "SELECT usr_id, login, passwd, passwd_enc_type, active FROM usr_data WHERE login = ?"
                " ORDER BY usr_id LIMIT 1",
                (login,),
            )
            if row is not None:
                row["usr_id"] = int(row["usr_id"])
                row["active"] = bool(row["active"])
            return row

        return await self.db.run_interaction("get_login", get_login_txn)
