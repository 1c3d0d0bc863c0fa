# -*- test-case-name: tests.store.test_users -*-
"""
ILIAS user data that ilchat reads and never writes: ``usr_pref``, ``usr_data`` and ``usr_session``.

Methods (all return Deferreds / are coroutines):

* ``get_accepting_user_ids() -> set[int]`` users whose ``chat_osc_accept_msg`` preference is ``'y'``
  (the 20-minute poll, spec 5.3)
* ``get_login(login) -> dict | None`` ``{usr_id, login, passwd, passwd_enc_type, active: bool}``
  for the IRC bridge's authentication; the comparison follows the database collation
  (case-insensitive on ILIAS's utf8mb4_unicode_ci, and ``NOCASE`` on SQLite).
* ``get_logins(user_ids) -> dict[int, str]`` ``usr_data.login`` of the users the database has
  (the name ILIAS's On-Screen Chat shows)
* ``get_live_session(session_id, now_s) -> int | None`` the ``user_id`` of the ``usr_session`` row
  with exactly that id (PHP stores the cookie value as it is; compared case-sensitively although
  ILIAS's collation is not) whose ``expires`` is still ahead of ``now_s``; None for no such row, an expired one, or one without a user (``user_id`` 0)
"""

from __future__ import annotations

import hmac
from typing import Any, Dict, Iterable, Optional, Set

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

    async def get_logins(self, user_ids: Iterable[int]) -> Dict[int, str]:
        """``usr_data.login`` by user id, for the ids the database has."""
        ids = sorted({int(user_id) for user_id in user_ids})
        if not ids:
            return {}

        def get_logins_txn(txn: Transaction) -> Dict[int, str]:
            txn.execute(
                "SELECT usr_id, login FROM usr_data WHERE usr_id IN ({})".format(", ".join("?" * len(ids))),
                tuple(ids),
            )
            return {int(row[0]): row[1] for row in txn.fetchall() if row[1]}

        return await self.db.run_interaction("get_logins", get_logins_txn)

    async def get_live_session(self, session_id: str, now_s: int) -> Optional[int]:
        """The user of a live ILIAS session (see the module docstring), or None."""

        def get_live_session_txn(txn: Transaction) -> Optional[int]:
            txn.execute(
                "SELECT session_id, user_id FROM usr_session WHERE session_id = ? AND expires > ?",
                (session_id, int(now_s)),
            )
            for found, user_id in txn.fetchall():
                # ILIAS's *_unicode_ci collation ignores case; PHP's session ids do not.
                if hmac.compare_digest(str(found).encode(), session_id.encode()) and user_id and int(user_id) > 0:
                    return int(user_id)
            return None

        return await self.db.run_interaction("get_live_session", get_live_session_txn)
