# -*- test-case-name: tests.store.test_private_rooms -*-
"""
ILIAS 8 private rooms (``subRoomId``): the tables ILIAS 9 dropped (spec §4.1).

PHP creates the rows (``chatroom_prooms`` when a user opens a private room, ``chatroom_proomaccess``
when it invites someone, ``chatroom_psessions`` when a user enters one); the chat server reads the
open rooms at start, marks a room closed when its last member is gone, and ends the sessions of a
user whose disconnect grace expired, as the ILIAS 8 Node server does. ``chatroom_history.sub_room``
is written with each message (``add_history_rows`` with five-field rows).

Methods (coroutines):

* ``has_private_rooms() -> bool`` whether the database has the ILIAS 8 schema: ``chatroom_prooms``
  and ``chatroom_psessions`` with their columns, and ``chatroom_history.sub_room``
* ``get_private_rooms() -> list[dict]`` the open rooms: ``proom_id``, ``parent_id`` (int),
  ``title``, ``owner``
* ``close_private_room(proom_id, now_s) -> int`` rows changed (``closed`` set)
* ``end_private_sessions(user_id, proom_ids, now_s) -> int`` the user's open sessions in those
  rooms (``disconnected`` 0) ended at ``now_s``
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List

from ilchat.store.database import Database, Transaction

__all__ = ["PrivateRoomStore", "PRIVATE_ROOM_COLUMNS"]

#: What ilchat reads and writes of the ILIAS 8 schema, table by table.
PRIVATE_ROOM_COLUMNS: Dict[str, frozenset] = {
    "chatroom_prooms": frozenset({"proom_id", "parent_id", "title", "owner", "closed"}),
    "chatroom_psessions": frozenset({"proom_id", "user_id", "disconnected"}),
    "chatroom_history": frozenset({"sub_room"}),
}


class PrivateRoomStore:
    """The ILIAS 8 private-room queries (mixed into :class:`ilchat.store.Store`)."""

    db: Database

    async def has_private_rooms(self) -> bool:
        """Whether every table and column of L{PRIVATE_ROOM_COLUMNS} exists."""

        def has_private_rooms_txn(txn: Transaction) -> bool:
            for table, needed in sorted(PRIVATE_ROOM_COLUMNS.items()):
                sql, args = txn.engine.columns_query(table)
                txn.execute(sql, args)
                if not needed <= {str(row[0]).lower() for row in txn.fetchall()}:
                    return False
            return True

        return await self.db.run_interaction("has_private_rooms", has_private_rooms_txn)

    async def get_private_rooms(self) -> List[Dict[str, Any]]:
        """
        The rooms not closed (``closed`` 0 or NULL), as the ILIAS 8 server preloads them.
        ``parent_id`` is a text column in ILIAS; rows whose parent is not a number are skipped.
        """

        def get_private_rooms_txn(txn: Transaction) -> List[Dict[str, Any]]:
            rows = txn.select(
                "SELECT proom_id, parent_id, title, owner FROM chatroom_prooms"
                " WHERE closed = 0 OR closed IS NULL ORDER BY proom_id"
            )
            rooms = []
            for row in rows:
                parent = str(row["parent_id"]).strip()
                if parent.isdigit():
                    rooms.append({"proom_id": int(row["proom_id"]), "parent_id": int(parent),
                                  "title": row["title"], "owner": row["owner"]})
            return rooms

        return await self.db.run_interaction("get_private_rooms", get_private_rooms_txn)

    async def close_private_room(self, proom_id: int, now_s: int) -> int:
        """Mark a private room closed at ``now_s`` (its last member is gone)."""

        def close_private_room_txn(txn: Transaction) -> int:
            txn.execute("UPDATE chatroom_prooms SET closed = ? WHERE proom_id = ?",
                        (int(now_s), int(proom_id)))
            return txn.rowcount

        return await self.db.run_interaction("close_private_room", close_private_room_txn)

    async def end_private_sessions(self, user_id: int, proom_ids: Iterable[int], now_s: int) -> int:
        """
        End the user's open ``chatroom_psessions`` rows in those rooms at ``now_s`` (the ILIAS 8
        server's ``disconnectUser``, but without rewriting sessions that had ended before).
        """
        ids = sorted({int(p) for p in proom_ids})
        if not ids:
            return 0

        def end_private_sessions_txn(txn: Transaction) -> int:
            txn.execute(
                "UPDATE chatroom_psessions SET disconnected = ? WHERE user_id = ? AND disconnected = 0"
                " AND proom_id IN ({})".format(", ".join("?" * len(ids))),
                (int(now_s), int(user_id), *ids),
            )
            return txn.rowcount

        return await self.db.run_interaction("end_private_sessions", end_private_sessions_txn)
