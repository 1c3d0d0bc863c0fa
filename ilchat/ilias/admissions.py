# -*- test-case-name: tests.ilias.test_restart -*-
"""
The room admissions one run of the repository chat leaves for the next, so that restarts go
unnoticed.

The ILIAS page logs in again on every reconnect and enters its room once ``loggedIn`` comes, but
PHP connects a user (``Connect``, ``EnterPrivateRoom``) only when it renders the page. So a
stopping server keeps who PHP had connected and admitted to which rooms, with their
``chatroom_users`` rows, in ``<journal_dir>/ilchat-<name>-admissions.json``: a file of its own
rather than a table, as ilchat adds no tables to the ILIAS database and ``chatroom_users``, PHP's
table, is emptied at stop and start as ILIAS's own server does.

The next start takes that file (once: it is removed as it is read), drops every admission
``chatroom_bans`` now holds, and gives the rest back for L{RESTORE_GRACE} seconds
(L{ilchat.chat.rooms.ChatRooms.restore_admissions}) if the stop was at most L{RESTORE_MAX_AGE}
seconds ago. Meanwhile a returning user's name is the one PHP chose (the row's ``userdata``), and
a user back in a room gets its row again, as PHP's ``connectUser`` would have written it at a
reload (PHP lists who is in a room from that table). The identity check of every new socket
still applies; what a page of a user banned or kicked meanwhile gets is the adapter's
(L{ilchat.ilias.repository}).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from ilchat.chat.model import room_parts
from ilchat.statefile import StateFile, StateFileError

__all__ = ["ADMISSIONS_VERSION", "Admissions", "RESTORE_GRACE", "RESTORE_MAX_AGE", "parse_admissions"]

#: Seconds after a start during which the pages of the previous run may come back into their
#: rooms. socket.io-client retries at most every 5 s; a tab in the background may take a minute.
RESTORE_GRACE = 120.0

#: Admissions from a stop longer ago than this are not given back (PHP decided them that long ago).
RESTORE_MAX_AGE = 3600.0

#: Version of the admissions file.
ADMISSIONS_VERSION = 1

Rows = Dict[Tuple[int, int], str]


class Admissions:
    """
    The admissions file of one client's repository chat.

    Args:
        client: the ``ilchat.service.ClientContext`` (``store``, ``reactor``, ``journal_dir``).
        chat: its L{ilchat.chat.rooms.ChatRooms}.
        grace: seconds the restored admissions wait for their users.
    """

    _log = Logger()

    def __init__(self, client: Any, chat: Any, grace: float = RESTORE_GRACE) -> None:
        self.name = client.config.name
        self.store = client.store
        self.reactor = client.reactor
        self.chat = chat
        self.grace = grace
        self.file = StateFile(os.path.join(
            client.server_config.journal_dir, "ilchat-{}-admissions.json".format(self.name)))
        # The previous run's chatroom_users.userdata per (room, user) and per user, until the
        # user is back in that room or the grace is over.
        self._rows: Rows = {}
        self._names: Dict[int, str] = {}
        self._forget: Optional[Any] = None

    async def keep(self) -> None:
        """At stop: write who PHP connected and admitted where, with PHP's rows."""
        if self._forget is not None and self._forget.active():
            self._forget.cancel()
        admissions = self.chat.admissions()
        userdata: Rows = {}
        try:
            for row in await self.store.get_chatroom_users():
                userdata[int(row["room_id"]), int(row["user_id"])] = row["userdata"]
        except Exception:
            self._log.failure("Reading chatroom_users of {name} failed: the admissions are kept"
                              " without PHP's rows", name=self.name)
        state = {"version": ADMISSIONS_VERSION, "stopped": int(self.reactor.seconds()),
                 "admissions": [
                     [user_id, [[room_id, userdata.get((room_id, user_id))] for room_id in rooms]]
                     for user_id, rooms in sorted(admissions.items())]}
        try:
            await self.file.write(state)
        except Exception:
            self._log.failure("Keeping the room admissions of {name} for the restart failed",
                              name=self.name)
            return
        self._log.info("Room admissions of {count} users of {name} kept for the next start ({path})",
                       count=len(admissions), name=self.name, path=self.file.path)

    async def restore(self) -> None:
        """At start, before serving: give the previous run's admissions back, bans re-checked."""
        try:
            state = self.file.take()
        except StateFileError as e:
            self._log.warn("Room admissions of the last run not restored: {why}", why=str(e))
            return
        if state is None:
            return
        parsed = parse_admissions(state)
        if parsed is None:
            self._log.warn("Room admissions of the last run not restored: {path} is not an"
                           " admissions file", path=self.file.path)
            return
        stopped, admitted, rows = parsed
        age = self.reactor.seconds() - stopped
        if not -60 <= age <= RESTORE_MAX_AGE:
            self._log.info("Room admissions of {name} not restored: the last run stopped {age:.0f} s"
                           " ago", name=self.name, age=age)
            return
        try:
            bans = await self.store.banned_pairs()
        except Exception:
            self._log.failure("Room admissions of {name} not restored: reading chatroom_bans"
                              " failed", name=self.name)
            return
        kept: Dict[int, List[int]] = {}
        dropped = 0
        for user_id, rooms in admitted.items():
            # A ban from a room also bans from its ILIAS 8 private rooms (keys of that room).
            allowed = [room_id for room_id in rooms
                       if (room_parts(room_id)[0], user_id) not in bans]
            dropped += len(rooms) - len(allowed)
            if rooms and not allowed:
                continue  # banned from every room it was in: PHP decides at the next page
            kept[user_id] = allowed
            for room_id in allowed:
                userdata = rows.get((room_id, user_id))
                if userdata is not None:
                    self._rows[room_id, user_id] = userdata
                    self._names.setdefault(user_id, userdata)
        restored = self.chat.restore_admissions(kept, self.grace)
        self._forget = self.reactor.callLater(self.grace, self._over)
        self._log.info(
            "{count} users of {name} may come back into their rooms within {grace:.0f} s of the"
            " restart ({dropped} admissions dropped: banned meanwhile)",
            count=restored, name=self.name, grace=self.grace, dropped=dropped)

    def userdata(self, user_id: int) -> Optional[str]:
        """PHP's ``userdata`` of a returning user whose row is not written again yet."""
        return self._names.get(user_id)

    def back_in(self, room_id: int, user_id: int) -> None:
        """A returning user entered a room: its ``chatroom_users`` row is written again."""
        userdata = self._rows.pop((room_id, user_id), None)
        if userdata is None:
            return
        d = defer.ensureDeferred(self.store.add_chatroom_user(
            room_id, user_id, userdata, int(self.reactor.seconds())))
        d.addErrback(lambda f: self._log.failure(
            "Writing chatroom_users again for user {user_id} in room {room_id} failed", f,
            user_id=user_id, room_id=room_id))

    def _over(self) -> None:
        self._forget = None
        self._rows.clear()
        self._names.clear()


def parse_admissions(state: Any) -> Optional[Tuple[int, Dict[int, List[int]], Rows]]:
    """
    ``(stopped, {user_id: [room_id, ...]}, {(room_id, user_id): userdata})`` of an admissions
    file, or None if it is not one.
    """
    if not isinstance(state, dict) or state.get("version") != ADMISSIONS_VERSION:
        return None
    stopped, entries = state.get("stopped"), state.get("admissions")
    if not _is_int(stopped) or not isinstance(entries, list):
        return None
    admitted: Dict[int, List[int]] = {}
    rows: Rows = {}
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 2 or not _is_int(entry[0]):
            return None
        user_id, rooms = entry
        if not isinstance(rooms, list):
            return None
        admitted[user_id] = []
        for room in rooms:
            if (not isinstance(room, list) or len(room) != 2 or not _is_int(room[0])
                    or not (room[1] is None or isinstance(room[1], str))):
                return None
            admitted[user_id].append(room[0])
            if room[1] is not None:
                rows[room[0], user_id] = room[1]
    return stopped, admitted, rows


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
