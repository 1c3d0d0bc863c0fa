# -*- test-case-name: tests.store.test_conversations -*-
"""
On-Screen Chat: conversations, their messages and each participant's read marker.

Timestamps here are Unix **milliseconds** (``osc_messages.timestamp``, ``osc_activity.timestamp``).
The SQL is the Node server's (spec sections 3.4 and 4.2) unless noted.

Methods (all return Deferreds / are coroutines):

* ``get_conversations() -> list[dict]`` rows ``{id, is_group: bool, participants: str}``
* ``get_conversation(conversation_id) -> dict | None`` one such row
* ``insert_conversation(conversation_id, is_group, participants_json)``
* ``update_conversation(conversation_id, participants_json, is_group, change=None)`` (an upsert;
  ``change`` edits the stored list in the same transaction, see there)
* ``add_osc_message(message_id, conversation_id, user_id, message, timestamp_ms)`` (retried)
* ``add_osc_messages(rows)`` a batch of rows with those fields; ids already stored are skipped
* ``get_latest_osc_message(conversation_id) -> dict | None``
* ``get_osc_history(conversation_id, older_than_ms=None, limit=6) -> list[dict]`` newest first
* ``count_unread(conversation_id, user_id) -> int``
* ``get_activity(conversation_id, user_id) -> dict | None`` ``{conversation_id, user_id,
  timestamp, is_closed: bool}``
* ``track_activity(conversation_id, user_id, timestamp_ms)``
* ``close_conversation(conversation_id, user_id, now_ms) -> bool`` whether a row changed

Message rows are the raw ``osc_messages`` columns ``{id, conversation_id, user_id, message,
timestamp}``; the caller adds the ``userId``/``conversationId`` copies the browser expects.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ilchat.store.database import Database, Transaction

__all__ = ["ConversationStore"]

_MESSAGE_COLUMNS = "id, conversation_id, user_id, message, timestamp"


def _message_row(row: Dict[str, Any]) -> Dict[str, Any]:
    row["user_id"] = int(row["user_id"])
    row["timestamp"] = int(row["timestamp"])
    return row


def _activity_row(row: Dict[str, Any]) -> Dict[str, Any]:
    row["user_id"] = int(row["user_id"])
    row["timestamp"] = int(row["timestamp"])
    row["is_closed"] = bool(row["is_closed"])
    return row


class ConversationStore:
    """The On-Screen Chat queries (mixed into :class:`ilchat.store.Store`)."""

    db: Database

    async def get_conversations(self) -> List[Dict[str, Any]]:
        """Every stored conversation, loaded at start-up; ``participants`` is the JSON text."""

        def get_conversations_txn(txn: Transaction) -> List[Dict[str, Any]]:
            rows = txn.select("SELECT id, is_group, participants FROM osc_conversation")
            for row in rows:
                row["is_group"] = bool(row["is_group"])
            return rows

        return await self.db.run_interaction("get_conversations", get_conversations_txn)

    async def get_conversation(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        """One stored conversation (another process may have made it), or None."""

        def get_conversation_txn(txn: Transaction) -> Optional[Dict[str, Any]]:
            row = txn.select_one(
                "SELECT id, is_group, participants FROM osc_conversation WHERE id = ?", (conversation_id,)
            )
            if row is not None:
                row["is_group"] = bool(row["is_group"])
            return row

        return await self.db.run_interaction("get_conversation", get_conversation_txn)

    async def insert_conversation(self, conversation_id: str, is_group: bool, participants_json: str) -> None:
        """Persist a new conversation (the Node server inserts it with ``"[]"`` participants)."""

        def insert_conversation_txn(txn: Transaction, row: Tuple[str, int, str]) -> None:
            txn.execute("INSERT INTO osc_conversation (id, is_group, participants) VALUES (?, ?, ?)", row)

        await self.db.run_interaction_retrying(
            "insert_conversation", insert_conversation_txn, (conversation_id, 1 if is_group else 0, participants_json)
        )

    async def update_conversation(
        self, conversation_id: str, participants_json: str, is_group: bool,
        change: Optional[Callable[[str], str]] = None,
    ) -> None:
        """
        Store a conversation's participants and group flag.

        The Node server runs a plain ``UPDATE``; this is an upsert instead, so that a
        conversation which vanished from the table (deleted by an old Node purge, or by a purge
        racing with its creation) is written back rather than silently lost at the next restart.

        With C{change}, the stored participants are read in the same transaction, their row held
        (``FOR UPDATE`` on MySQL), and ``change(stored_text)`` is written instead: two processes
        that add or remove someone in one group at once then each change what the other wrote,
        rather than overwriting it. A vanished row still gets C{participants_json}.
        """
        sql = self.db.engine.upsert("osc_conversation", ("id",), ("is_group", "participants"))

        def update_conversation_txn(txn: Transaction, row: Tuple[str, int, str]) -> None:
            if change is not None:
                stored = txn.select_one(
                    "SELECT participants FROM osc_conversation WHERE id = ?" + txn.engine.for_update, (row[0],)
                )
                if stored is not None:
                    row = (row[0], row[1], change(stored["participants"] or "[]"))
            txn.execute(sql, row)

        await self.db.run_interaction_retrying(
            "update_conversation", update_conversation_txn, (conversation_id, 1 if is_group else 0, participants_json)
        )

    async def add_osc_message(
        self, message_id: str, conversation_id: str, user_id: int, message: str, timestamp_ms: int
    ) -> None:
        """Store one conversation message; retried on transient errors so it is not lost."""

        def add_osc_message_txn(txn: Transaction, row: Tuple[str, str, int, str, int]) -> None:
            txn.execute(
                "INSERT INTO osc_messages (id, conversation_id, user_id, message, timestamp) VALUES (?, ?, ?, ?, ?)", row
            )

        # The row goes in as an argument so that a write lost for good is logged with it.
        await self.db.run_interaction_retrying(
            "add_osc_message",
            add_osc_message_txn,
            (message_id, conversation_id, int(user_id), message, int(timestamp_ms)),
        )

    async def add_osc_messages(self, rows: Sequence[Any]) -> None:
        """
        Store conversation messages (objects with ``id``, ``conversation_id``, ``user_id``,
        ``message``, ``timestamp`` in ms) in one transaction, skipping ids already stored, so a
        journal replayed after a crash stores each message once. Not retried: the caller (the
        On-Screen Chat's writer) keeps the rows and retries.
        """
        values = [(str(r.id), str(r.conversation_id), int(r.user_id), str(r.message), int(r.timestamp))
                  for r in rows]
        if not values:
            return

        def add_osc_messages_txn(txn: Transaction, values: List[Tuple[str, str, int, str, int]]) -> None:
            txn.execute(
                "SELECT id FROM osc_messages WHERE id IN ({})".format(", ".join("?" * len(values))),
                [v[0] for v in values],
            )
            present = {row[0] for row in txn.fetchall()}
            txn.executemany(
                "INSERT INTO osc_messages (id, conversation_id, user_id, message, timestamp) VALUES (?, ?, ?, ?, ?)",
                [v for v in values if v[0] not in present],
            )

        await self.db.run_interaction("add_osc_messages", add_osc_messages_txn, values)

    async def get_latest_osc_message(self, conversation_id: str) -> Optional[Dict[str, Any]]:
        """The newest message of a conversation, or None."""

        def get_latest_osc_message_txn(txn: Transaction) -> Optional[Dict[str, Any]]:
            row = txn.select_one(
                "SELECT {} FROM osc_messages WHERE conversation_id = ? ORDER BY timestamp DESC LIMIT 1".format(
                    _MESSAGE_COLUMNS
                ),
                (conversation_id,),
            )
            return _message_row(row) if row else None

        return await self.db.run_interaction("get_latest_osc_message", get_latest_osc_message_txn)

    async def get_osc_history(
        self, conversation_id: str, older_than_ms: Optional[int] = None, limit: int = 6
    ) -> List[Dict[str, Any]]:
        """
        A page of a conversation's messages, newest first.

        Args:
            older_than_ms: only messages strictly older than this (the oldest one the browser
                has), or None for the newest page.
            limit: page size; the Node server always uses 6.
        """

        def get_osc_history_txn(txn: Transaction) -> List[Dict[str, Any]]:
            sql = "SELECT {} FROM osc_messages WHERE conversation_id = ?".format(_MESSAGE_COLUMNS)
            args: List[Any] = [conversation_id]
            if older_than_ms is not None:
                sql += " AND timestamp < ?"
                args.append(int(older_than_ms))
            sql += " ORDER BY timestamp DESC LIMIT ?"
            args.append(int(limit))
            return [_message_row(row) for row in txn.select(sql, args)]

        return await self.db.run_interaction("get_osc_history", get_osc_history_txn)

    async def count_unread(self, conversation_id: str, user_id: int) -> int:
        """
        How many messages of the conversation are newer than this participant's read marker.

        The Node server's query (spec 3.4 item 2): 0 when the participant has no activity row.
        """

        def count_unread_txn(txn: Transaction) -> int:
            txn.execute(
                "SELECT COUNT(m.id) AS numMessages FROM osc_messages m"
                " LEFT JOIN osc_activity a ON a.conversation_id = m.conversation_id"
                " WHERE m.conversation_id = ? AND a.user_id = ? AND m.timestamp > a.timestamp",
                (conversation_id, int(user_id)),
            )
            row = txn.fetchone()
            return int(row[0]) if row else 0

        return await self.db.run_interaction("count_unread", count_unread_txn)

    async def get_activity(self, conversation_id: str, user_id: int) -> Optional[Dict[str, Any]]:
        """A participant's ``osc_activity`` row (read marker and "closed" flag), or None."""

        def get_activity_txn(txn: Transaction) -> Optional[Dict[str, Any]]:
            row = txn.select_one(
                "SELECT conversation_id, user_id, timestamp, is_closed FROM osc_activity"
                " WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, int(user_id)),
            )
            return _activity_row(row) if row else None

        return await self.db.run_interaction("get_activity", get_activity_txn)

    async def track_activity(self, conversation_id: str, user_id: int, timestamp_ms: int) -> None:
        """
        Move a participant's read marker (spec 3.4 item 8, ``trackActivity``).

        With a row and ``timestamp_ms > 0``: set the marker and reopen the conversation
        (``is_closed = 0``). Without a row: insert one (``addUser`` passes 0 to create the rows
        of new group members). A row with ``timestamp_ms <= 0`` is left as it is. Two concurrent
        first calls both see no row; the insert skips an existing key, so the second one does
        not fail.
        """
        insert = self.db.engine.insert_ignore("osc_activity", ("conversation_id", "user_id", "timestamp"))

        def track_activity_txn(txn: Transaction) -> None:
            txn.execute(
                "SELECT timestamp FROM osc_activity WHERE conversation_id = ? AND user_id = ?",
                (conversation_id, int(user_id)),
            )
            if txn.fetchone() is None:
                txn.execute(insert, (conversation_id, int(user_id), int(timestamp_ms)))
            elif timestamp_ms > 0:
                txn.execute(
                    "UPDATE osc_activity SET timestamp = ?, is_closed = 0 WHERE conversation_id = ? AND user_id = ?",
                    (int(timestamp_ms), conversation_id, int(user_id)),
                )

        await self.db.run_interaction("track_activity", track_activity_txn)

    async def close_conversation(self, conversation_id: str, user_id: int, now_ms: int) -> bool:
        """
        Mark a conversation closed for one participant (spec 3.4 item 9).

        Only an existing activity row changes; returns whether there was one.
        """

        def close_conversation_txn(txn: Transaction) -> bool:
            txn.execute(
                "UPDATE osc_activity SET is_closed = 1, timestamp = ? WHERE conversation_id = ? AND user_id = ?",
                (int(now_ms), conversation_id, int(user_id)),
            )
            return txn.rowcount > 0

        return await self.db.run_interaction("close_conversation", close_conversation_txn)
