# -*- test-case-name: tests.store.test_rooms -*-
"""
Repository chat: rooms, the users PHP connected, their sessions, bans and the message history.

Timestamps here are Unix **seconds**, as ILIAS stores them in ``chatroom_history``,
``chatroom_users`` and ``chatroom_sessions`` (spec section 4.1).

Methods (all return Deferreds / are coroutines):

* ``get_room_ids() -> list[int]``
* ``ensure_rooms(room_ids) -> int`` rows added (standalone chat on SQLite)
* ``add_history(room_id, message_json, timestamp_s) -> hist_id`` (retried; see below)
* ``add_history_batch(rows) -> list[hist_id]`` with rows of ``(room_id, message_json, timestamp_s)``
* ``add_history_rows(rows) -> list[hist_id]`` with rows of ``(hist_id or None, room_id, message_json,
  timestamp_s[, sub_room])``; a row whose ``hist_id`` is already stored is skipped
* ``next_history_ids(count) -> list[hist_id]`` ids for rows written later
* ``is_refused_data(error) -> bool`` whether a failed write was refused for its data
* ``get_history(room_id, limit) -> list[dict]`` the latest ``limit`` rows, oldest first
* ``get_history_page(room_id, limit, after=, before=, latest=)`` rows between two bounds (IRC
  CHATHISTORY), ``get_history_row(room_id, hist_id)``, ``get_history_times(room_ids)``
* ``clear_history(room_id) -> int`` rows deleted
* ``add_chatroom_user(room_id, user_id, userdata_json, connected_s)``
* ``get_chatroom_users(room_id=None) -> list[dict]``
* ``get_chatroom_userdata(user_id, room_id=None) -> str | None`` the ``userdata`` JSON PHP wrote
  for the user (in that room, else the newest row), i.e. the name PHP chose for the chat
* ``get_chat_name_sources(user_id) -> (userdata | None, login | None)`` that ``userdata`` and
  ``usr_data.login`` in one transaction (a login reads both: one round trip to the pool)
* ``move_all_users_to_sessions(now_s) -> int`` rows moved (spec 4.2 ``disconnectAllUsers``)
* ``move_user_to_sessions(user_id, room_ids, now_s) -> int`` (spec 4.2 ``disconnectUser``)
* ``move_users_to_sessions(user_ids, now_s) -> int`` every row of those users (a cluster
  process that stops: the users only it holds)
* ``is_banned(room_id, user_id) -> bool``
* ``banned_pairs() -> set[(room_id, user_id)]``
* ``get_bans(room_id, limit, user_ids=None) -> list[dict]`` the room's bans (``user_id``,
  ``timestamp``, ``actor_id``, ``login`` from ``usr_data`` or None), oldest first
* ``ban_user(room_id, user_id, actor_id, timestamp_s)`` a ban as PHP's ``ilChatroom::banUser``
  writes it (an IRC operator's ``+b``)
* ``unban_users(room_id, user_ids) -> int`` rows deleted, as PHP's ``ilChatroom::unbanUser``

History writes use :meth:`Database.run_interaction_retrying`: a transient error (the server went
away, a lock timeout) is logged to the error log and retried with a backoff for about three
minutes; only then does the Deferred fail, after a "critical" log line that holds the message.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ilchat.store.database import Database, Transaction

__all__ = ["RoomStore"]


def _session_rows_txn(txn: Transaction, rows: List[Dict[str, Any]], now_s: int) -> None:
    """Copy ``chatroom_users`` rows to ``chatroom_sessions`` with ids from the sequence."""
    if not rows:
        return
    # The rows were read FOR UPDATE (MySQL), so a concurrent move of the same rows waits and then
    # finds them gone; committing the id allocation would release those locks, hence commit=False.
    ids = txn.next_ids("chatroom_sessions", len(rows), commit=False)
    txn.executemany(
        "INSERT INTO chatroom_sessions (sess_id, room_id, user_id, userdata, connected, disconnected)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (sess_id, row["room_id"], row["user_id"], row["userdata"], row["connected"], now_s)
            for sess_id, row in zip(ids, rows)
        ],
    )
    # Delete exactly the rows that were copied: a row PHP adds meanwhile stays for next time.
    txn.executemany(
        "DELETE FROM chatroom_users WHERE room_id = ? AND user_id = ?",
        [(row["room_id"], row["user_id"]) for row in rows],
    )


class RoomStore:
    """The repository-chat queries (mixed into :class:`ilchat.store.Store`)."""

    db: Database

    async def get_room_ids(self) -> List[int]:
        """Every room ILIAS knows (``chatroom_settings``), read at start-up."""

        def get_room_ids_txn(txn: Transaction) -> List[int]:
            txn.execute("SELECT room_id FROM chatroom_settings ORDER BY room_id")
            return [int(row[0]) for row in txn.fetchall()]

        return await self.db.run_interaction("get_room_ids", get_room_ids_txn)

    async def ensure_rooms(self, room_ids: Iterable[int]) -> int:
        """
        Add a ``chatroom_settings`` row for each configured room that has none.

        Only the standalone chat calls this (on its own SQLite database); on an ILIAS database
        PHP owns the rooms. Returns the number of rows added.
        """
        ids = sorted({int(room_id) for room_id in room_ids})
        sql = self.db.engine.insert_ignore("chatroom_settings", ("room_id", "object_id"))

        def ensure_rooms_txn(txn: Transaction) -> int:
            added = 0
            for room_id in ids:
                txn.execute(sql, (room_id, room_id))
                added += max(txn.rowcount, 0)
            return added

        return await self.db.run_interaction("ensure_rooms", ensure_rooms_txn)

    async def add_history(self, room_id: int, message_json: str, timestamp_s: int) -> int:
        """
        Store one repository-chat message and return its ``hist_id``.

        ``message_json`` is stored as given (ILIAS PHP reads it back); ``timestamp_s`` is in
        seconds. Retried on transient errors (see the module docstring).
        """
        return (await self.add_history_batch([(room_id, message_json, timestamp_s)]))[0]

    async def add_history_batch(
        self, rows: Sequence[Tuple[int, str, int]], retry: bool = True
    ) -> List[int]:
        """
        Store several messages in one transaction; ids come from ``chatroom_history_seq``.

        Args:
            rows: ``(room_id, message_json, timestamp_s)`` tuples, stored in this order, so the
                ids ascend with it.
            retry: False for a caller that keeps the rows and retries itself: one retry policy
                per write, and no "lost for good" log line for rows that are in fact still queued.

        Returns:
            the ``hist_id`` of each row, in the order given.
        """
        return await self.add_history_rows([(None, r, m, t) for r, m, t in rows], retry=retry)

    async def next_history_ids(self, count: int) -> List[int]:
        """
        ``count`` fresh ``hist_id`` values, committed at once, for rows written later.

        The history writer journals them before it writes the rows, so that a row written just
        before a crash keeps its id when the journal is replayed (see :meth:`add_history_rows`).
        """

        def next_history_ids_txn(txn: Transaction) -> List[int]:
            return txn.next_ids("chatroom_history", int(count))

        return await self.db.run_interaction("next_history_ids", next_history_ids_txn)

    async def add_history_rows(
        self, rows: Sequence[Tuple[Any, ...]], retry: bool = False
    ) -> List[int]:
        """
        Store ``(hist_id, room_id, message_json, timestamp_s)`` rows in one transaction, in order;
        rows of ``(hist_id, room_id, message_json, timestamp_s, sub_room)`` also write the ILIAS 8
        column ``sub_room`` (every row of a batch has the same form).

        A row whose ``hist_id`` is None gets a fresh one; a row whose ``hist_id`` is already in
        ``chatroom_history`` is skipped, so writing the same rows twice (a journal replayed after
        a crash) stores them once. Returns the ``hist_id`` of each row. With ``retry``,
        transient errors are retried as described in the module docstring.
        """
        rows = [(None if row[0] is None else int(row[0]), int(row[1]), str(row[2]),
                 *(int(value) for value in row[3:])) for row in rows]
        if not rows:
            return []
        columns = "hist_id, room_id, message, timestamp" + (", sub_room" if len(rows[0]) > 4 else "")
        insert = "INSERT INTO chatroom_history ({}) VALUES ({})".format(
            columns, ", ".join("?" * (columns.count(",") + 1)))

        def add_history_txn(txn: Transaction, rows: List[Tuple[Any, ...]]) -> List[int]:
            given = [row[0] for row in rows if row[0] is not None]
            present = set()
            if given:
                txn.execute(
                    "SELECT hist_id FROM chatroom_history WHERE hist_id IN ({})".format(
                        ", ".join("?" * len(given))
                    ),
                    given,
                )
                present = {int(row[0]) for row in txn.fetchall()}
            fresh = iter(txn.next_ids("chatroom_history", sum(1 for row in rows if row[0] is None)))
            ids = [next(fresh) if row[0] is None else row[0] for row in rows]
            txn.executemany(
                insert,
                [(hist_id,) + row[1:] for hist_id, row in zip(ids, rows) if hist_id not in present],
            )
            return ids

        if not retry:
            return await self.db.run_interaction("add_history", add_history_txn, rows)
        # The rows go in as an argument so that a write lost for good is logged with them.
        return await self.db.run_interaction_retrying("add_history", add_history_txn, rows)

    def is_refused_data(self, error: BaseException) -> bool:
        """True when the database (or its driver) refused a write for the data it was given."""
        return self.db.engine.is_data_error(error)

    async def get_history(self, room_id: int, limit: int) -> List[Dict[str, Any]]:
        """
        The latest ``limit`` messages of a room, oldest first (for the standalone chat).

        Rows are dicts with ``hist_id``, ``room_id``, ``message`` (the JSON text) and
        ``timestamp`` (seconds). Ordered by ``hist_id``, which follows the order of writing.
        """

        def get_history_txn(txn: Transaction) -> List[Dict[str, Any]]:
            rows = txn.select(
                "SELECT hist_id, room_id, message, timestamp FROM chatroom_history"
                " WHERE room_id = ? ORDER BY hist_id DESC LIMIT ?",
                (int(room_id), int(limit)),
            )
            rows.reverse()
            return rows

        return await self.db.run_interaction("get_history", get_history_txn)

    async def get_history_page(
        self,
        room_id: int,
        limit: int,
        after: Optional[Tuple[str, float]] = None,
        before: Optional[Tuple[str, float]] = None,
        latest: bool = True,
    ) -> List[Dict[str, Any]]:
        """
        At most ``limit`` rows of a room strictly between two bounds, oldest first (IRC
        CHATHISTORY). A bound is ``("id", hist_id)`` or ``("ts", seconds)``; with ``latest`` the
        rows nearest ``before`` (the newest), else those nearest ``after`` (the oldest).
        """
        where, params = ["room_id = ?"], [int(room_id)]
        for bound, op in ((after, ">"), (before, "<")):
            if bound is not None:
                kind, value = bound
                where.append(("hist_id" if kind == "id" else "timestamp") + f" {op} ?")
                params.append(int(value) if kind == "id" else float(value))
        order = "DESC" if latest else "ASC"

        def get_history_page_txn(txn: Transaction) -> List[Dict[str, Any]]:
            rows = txn.select(
                "SELECT hist_id, room_id, message, timestamp FROM chatroom_history WHERE "
                + " AND ".join(where) + f" ORDER BY hist_id {order} LIMIT ?",
                tuple(params) + (int(limit),),
            )
            if latest:
                rows.reverse()
            return rows

        return await self.db.run_interaction("get_history_page", get_history_page_txn)

    async def get_history_row(self, room_id: int, hist_id: int) -> Optional[Dict[str, Any]]:
        """One row of a room's history by its id (a CHATHISTORY ``msgid=`` reference), or None."""

        def get_history_row_txn(txn: Transaction) -> Optional[Dict[str, Any]]:
            return txn.select_one(
                "SELECT hist_id, room_id, message, timestamp FROM chatroom_history"
                " WHERE room_id = ? AND hist_id = ?",
                (int(room_id), int(hist_id)),
            )

        return await self.db.run_interaction("get_history_row", get_history_row_txn)

    async def get_history_times(self, room_ids: List[int]) -> Dict[int, int]:
        """The newest history timestamp (seconds) of each of these rooms that has one."""
        ids = [int(room_id) for room_id in room_ids]
        if not ids:
            return {}

        def get_history_times_txn(txn: Transaction) -> Dict[int, int]:
            rows = txn.select(
                "SELECT room_id, MAX(timestamp) AS latest FROM chatroom_history WHERE room_id IN ({})"
                " GROUP BY room_id".format(", ".join("?" * len(ids))),
                tuple(ids),
            )
            return {int(row["room_id"]): int(row["latest"]) for row in rows}

        return await self.db.run_interaction("get_history_times", get_history_times_txn)

    async def clear_history(self, room_id: int) -> int:
        """Delete a room's history (the standalone chat's "clear"); returns the rows deleted."""

        def clear_history_txn(txn: Transaction) -> int:
            txn.execute("DELETE FROM chatroom_history WHERE room_id = ?", (int(room_id),))
            return txn.rowcount

        return await self.db.run_interaction("clear_history", clear_history_txn)

    async def add_chatroom_user(
        self, room_id: int, user_id: int, userdata_json: str, connected_s: int
    ) -> None:
        """
        Record a user as connected to a room, as PHP's ``ilChatroom::connectUser`` does.

        ``REPLACE`` like PHP: a second connect overwrites the first row. The standalone chat
        needs it because there is no PHP to do it.
        """

        def add_chatroom_user_txn(txn: Transaction) -> None:
            txn.execute(
                "REPLACE INTO chatroom_users (room_id, user_id, userdata, connected) VALUES (?, ?, ?, ?)",
                (int(room_id), int(user_id), userdata_json, int(connected_s)),
            )

        await self.db.run_interaction("add_chatroom_user", add_chatroom_user_txn)

    async def get_chatroom_users(self, room_id: Optional[int] = None) -> List[Dict[str, Any]]:
        """The ``chatroom_users`` rows (of one room, or all), ordered by room and user."""

        def get_chatroom_users_txn(txn: Transaction) -> List[Dict[str, Any]]:
            sql = "SELECT room_id, user_id, userdata, connected FROM chatroom_users"
            args: Tuple[Any, ...] = ()
            if room_id is not None:
                sql += " WHERE room_id = ?"
                args = (int(room_id),)
            return txn.select(sql + " ORDER BY room_id, user_id", args)

        return await self.db.run_interaction("get_chatroom_users", get_chatroom_users_txn)

    async def get_chatroom_userdata(self, user_id: int, room_id: Optional[int] = None) -> Optional[str]:
        """The ``userdata`` PHP wrote for a user: that room's row first, then the newest one."""

        def get_chatroom_userdata_txn(txn: Transaction) -> Optional[str]:
            return _chatroom_userdata(txn, user_id, room_id)

        return await self.db.run_interaction("get_chatroom_userdata", get_chatroom_userdata_txn)

    async def get_chat_name_sources(self, user_id: int) -> Tuple[Optional[str], Optional[str]]:
        """
        The user's newest ``chatroom_users.userdata`` and ``usr_data.login``, read together:
        every login needs the first and often the second, and one transaction per login instead
        of two halves the pool's thread hand-offs in a crowd.
        """

        def get_chat_name_sources_txn(txn: Transaction) -> Tuple[Optional[str], Optional[str]]:
            userdata = _chatroom_userdata(txn, user_id, None)
            txn.execute("SELECT login FROM usr_data WHERE usr_id = ?", (int(user_id),))
            login = txn.fetchone()
            return userdata, (login[0] if login and login[0] else None)

        return await self.db.run_interaction("get_chat_name_sources", get_chat_name_sources_txn)

    async def max_user_id(self) -> int:
        """
        The highest ``user_id`` of ``chatroom_users`` and ``chatroom_sessions`` (0 when both are
        empty): the standalone chat's ids start above it, whatever its id counter forgot.
        """

        def max_user_id_txn(txn: Transaction) -> int:
            highest = 0
            for sql in ("SELECT MAX(user_id) FROM chatroom_users",
                        "SELECT MAX(user_id) FROM chatroom_sessions"):
                txn.execute(sql)
                row = txn.fetchone()
                if row and row[0] is not None:
                    highest = max(highest, int(row[0]))
            return highest

        return await self.db.run_interaction("max_user_id", max_user_id_txn)

    async def move_all_users_to_sessions(self, now_s: int) -> int:
        """
        Turn every ``chatroom_users`` row into a ``chatroom_sessions`` row ending at ``now_s``.

        Spec section 4.2 ``disconnectAllUsers``, run at start-up and at shutdown: nobody is
        connected to a server that is not running. Returns the number of rows moved.
        """

        def move_all_users_to_sessions_txn(txn: Transaction) -> int:
            rows = txn.select(
                "SELECT room_id, user_id, userdata, connected FROM chatroom_users ORDER BY room_id, user_id"
                + txn.engine.for_update
            )
            _session_rows_txn(txn, rows, int(now_s))
            return len(rows)

        return await self.db.run_interaction(
            "move_all_users_to_sessions", move_all_users_to_sessions_txn
        )

    async def move_user_to_sessions(self, user_id: int, room_ids: Iterable[int], now_s: int) -> int:
        """
        Turn one user's ``chatroom_users`` rows for ``room_ids`` into sessions ending at ``now_s``.

        Spec section 4.2 ``disconnectUser``, after the 15 s grace period. Does nothing for an
        empty ``room_ids``. Returns the number of rows moved.
        """
        ids = sorted({int(r) for r in room_ids})
        if not ids:
            return 0

        def move_user_to_sessions_txn(txn: Transaction) -> int:
            rows = txn.select(
                "SELECT room_id, user_id, userdata, connected FROM chatroom_users"
                " WHERE user_id = ? AND room_id IN ({}) ORDER BY room_id{}".format(
                    ", ".join("?" * len(ids)), txn.engine.for_update
                ),
                (int(user_id), *ids),
            )
            _session_rows_txn(txn, rows, int(now_s))
            return len(rows)

        return await self.db.run_interaction("move_user_to_sessions", move_user_to_sessions_txn)

    async def move_users_to_sessions(self, user_ids: Iterable[int], now_s: int) -> int:
        """
        Turn every ``chatroom_users`` row of C{user_ids} into a session ending at ``now_s``.

        What a process of a cluster does at stop for the users only it holds: the rows of users
        online on another process stay. Returns the number of rows moved.
        """
        ids = sorted({int(u) for u in user_ids})
        if not ids:
            return 0

        def move_users_to_sessions_txn(txn: Transaction) -> int:
            rows: List[Dict[str, Any]] = []
            for start in range(0, len(ids), 500):  # bounded IN lists
                chunk = ids[start:start + 500]
                rows.extend(txn.select(
                    "SELECT room_id, user_id, userdata, connected FROM chatroom_users"
                    " WHERE user_id IN ({}) ORDER BY room_id, user_id{}".format(
                        ", ".join("?" * len(chunk)), txn.engine.for_update
                    ),
                    tuple(chunk),
                ))
            _session_rows_txn(txn, rows, int(now_s))
            return len(rows)

        return await self.db.run_interaction("move_users_to_sessions", move_users_to_sessions_txn)

    async def is_banned(self, room_id: int, user_id: int) -> bool:
        """True when ``chatroom_bans`` (written by PHP) bans the user from the room."""

        def is_banned_txn(txn: Transaction) -> bool:
            txn.execute(
                "SELECT 1 FROM chatroom_bans WHERE room_id = ? AND user_id = ?", (int(room_id), int(user_id))
            )
            return txn.fetchone() is not None

        return await self.db.run_interaction("is_banned", is_banned_txn)

    async def banned_pairs(self) -> Set[Tuple[int, int]]:
        """Every ``(room_id, user_id)`` of ``chatroom_bans`` (a restart re-checks admissions)."""

        def banned_pairs_txn(txn: Transaction) -> Set[Tuple[int, int]]:
            txn.execute("SELECT room_id, user_id FROM chatroom_bans")
            return {(int(row[0]), int(row[1])) for row in txn.fetchall()}

        return await self.db.run_interaction("banned_pairs", banned_pairs_txn)

    async def get_bans(self, room_id: int, limit: int = 100,
                       user_ids: Optional[Iterable[int]] = None) -> List[Dict[str, Any]]:
        """
        The bans of a room (the IRC ``+b`` list), oldest first, at most C{limit}; only those of
        C{user_ids} when given.
        """
        ids = None if user_ids is None else sorted({int(u) for u in user_ids})[:limit]
        if ids == []:
            return []

        def get_bans_txn(txn: Transaction) -> List[Dict[str, Any]]:
            among = "" if ids is None else " AND b.user_id IN ({})".format(", ".join("?" * len(ids)))
            txn.execute(
                "SELECT b.user_id, b.timestamp, b.actor_id, u.login FROM chatroom_bans b"
                " LEFT JOIN usr_data u ON u.usr_id = b.user_id"
                " WHERE b.room_id = ?" + among + " ORDER BY b.timestamp, b.user_id LIMIT ?",
                (int(room_id), *(ids or ()), int(limit)),
            )
            return [
                {"user_id": int(row[0]), "timestamp": int(row[1] or 0),
                 "actor_id": None if row[2] is None else int(row[2]), "login": row[3]}
                for row in txn.fetchall()
            ]

        return await self.db.run_interaction("get_bans", get_bans_txn)

    async def ban_user(self, room_id: int, user_id: int, actor_id: int, timestamp_s: int) -> None:
        """
        Ban a user from a room as PHP's ``ilChatroom::banUser`` does: ``REPLACE`` of the
        ``(room_id, user_id)`` row with the actor, the time in seconds and an empty remark. PHP
        writes its moderators' bans itself; this is for the IRC operators' ``+b``.
        """

        def ban_user_txn(txn: Transaction) -> None:
            txn.execute(
                "REPLACE INTO chatroom_bans (room_id, user_id, actor_id, timestamp, remark)"
                " VALUES (?, ?, ?, ?, ?)",
                (int(room_id), int(user_id), int(actor_id), int(timestamp_s), ""),
            )

        await self.db.run_interaction("ban_user", ban_user_txn)

    async def unban_users(self, room_id: int, user_ids: Iterable[int]) -> int:
        """
        Lift bans as PHP's ``ilChatroom::unbanUser`` does (ILIAS's "delete" of its ban list):
        delete the rows of C{user_ids} in the room. Returns the rows deleted.
        """
        ids = sorted({int(u) for u in user_ids})
        if not ids:
            return 0

        def unban_users_txn(txn: Transaction) -> int:
            txn.execute(
                "DELETE FROM chatroom_bans WHERE room_id = ? AND user_id IN ({})".format(
                    ", ".join("?" * len(ids))),
                (int(room_id), *ids),
            )
            return txn.rowcount

        return await self.db.run_interaction("unban_users", unban_users_txn)


def _chatroom_userdata(txn: Transaction, user_id: int, room_id: Optional[int]) -> Optional[str]:
    """``userdata`` of the user's row in ``room_id``, else of the newest row (or None)."""
    txn.execute(
        "SELECT userdata FROM chatroom_users WHERE user_id = ?"
        " ORDER BY CASE WHEN room_id = ? THEN 0 ELSE 1 END, connected DESC, room_id LIMIT 1",
        (int(user_id), -1 if room_id is None else int(room_id)),
    )
    row = txn.fetchone()
    return None if row is None else row[0]
