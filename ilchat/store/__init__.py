# -*- test-case-name: tests.store -*-
"""
Persistence: every SQL statement of ilchat, on MySQL/MariaDB (the ILIAS database) or SQLite.

This package is the only one that imports a database driver. Use::

    store = create_store(client_config.database, reactor)
    await store.open()          # MySQL: checks the ILIAS tables; SQLite: creates them
    ...
    await store.close()

Every method returns a Deferred (or is a coroutine) and runs its SQL through adbapi in a pool
thread, in a named transaction (``store.db.run_interaction(desc, func, *args)``). The methods
are grouped by concern in mixins, each module's docstring lists its methods:

* ``ilchat.store.rooms``: repository chat (rooms, ``chatroom_users`` -> sessions, history);
* ``ilchat.store.private_rooms``: ILIAS 8 private rooms (``chatroom_prooms``, ``chatroom_psessions``);
* ``ilchat.store.conversations``: On-Screen Chat;
* ``ilchat.store.users``: ``usr_pref`` / ``usr_data`` (read only);
* ``ilchat.store.setup_log``: ILIAS's setup log ``il_db_steps`` (read only);
* ``ilchat.store.purge``: the daily purge and its ``DailyPurge`` service;
* ``ilchat.store.database``: the pool, the transaction helper, retries and ``*_seq`` ids;
* ``ilchat.store.engines``: the MySQL/SQLite differences.

Writes whose loss would lose a chat message (``add_history``, ``add_history_batch``,
``add_osc_message``, ``insert_conversation``, ``update_conversation``) retry transient errors
with a backoff on the reactor's clock and log every failure to the error log.
"""

from __future__ import annotations

from typing import Any, Sequence

from ilchat.store.conversations import ConversationStore
from ilchat.store.database import (
    DEFAULT_QUERY_TIMEOUT,
    DEFAULT_RETRY_DELAYS,
    ILIAS_TABLES,
    Database,
    MissingTableError,
    StoreClosedError,
    StoreError,
)
from ilchat.store.private_rooms import PrivateRoomStore
from ilchat.store.purge import DailyPurge, PurgeStore
from ilchat.store.rooms import RoomStore
from ilchat.store.setup_log import SetupLogStore
from ilchat.store.users import UserStore

__all__ = [
    "Store",
    "create_store",
    "StoreError",
    "MissingTableError",
    "StoreClosedError",
    "DailyPurge",
    "ILIAS_TABLES",
]


class Store(RoomStore, PrivateRoomStore, ConversationStore, UserStore, PurgeStore, SetupLogStore):
    """
    The database of one ILIAS client (one ``client.cfg``).

    Attributes:
        db: the :class:`~ilchat.store.database.Database` (pool, engine, transactions).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def kind(self) -> str:
        """``"mysql"`` or ``"sqlite"``."""
        return self.db.engine.name

    async def open(self) -> None:
        """Connect; check (MySQL) or create (SQLite) the tables. Raises ``StoreError``."""
        await self.db.open()

    async def close(self) -> None:
        """Let running transactions finish, then close the pool."""
        await self.db.close()

    async def ping(self) -> None:
        """A ``SELECT 1`` round trip (the readiness check); raises the driver's error."""

        def ping_txn(txn: Any) -> None:
            txn.execute("SELECT 1")
            txn.fetchall()

        await self.db.run_interaction("ping", ping_txn)


def create_store(
    database_config: Any,
    reactor: Any,
    cp_min: int = 1,
    cp_max: int = 5,
    retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    timeout: float = DEFAULT_QUERY_TIMEOUT,
) -> Store:
    """
    Build (not yet open) the store for a ``DatabaseConfig``-like object.

    Args:
        database_config: has ``type`` (``"mysql"``, also ``"mariadb"``/``"innodb"``, or
            ``"sqlite"``), ``host``, ``port``, ``name`` (the SQLite file path for SQLite),
            ``user`` and ``password``.
        reactor: the reactor for the pool's threads and the retry timers.
        cp_min, cp_max: MySQL pool size (SQLite always has one connection).
        retry_delays: seconds between attempts of writes that must not be lost.
        timeout: seconds a query may wait for the database (server.cfg ``database_timeout``).
    """
    return Store(
        Database(database_config, reactor, cp_min=cp_min, cp_max=cp_max, retry_delays=retry_delays,
                 timeout=timeout)
    )
