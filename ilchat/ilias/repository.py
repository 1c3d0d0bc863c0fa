# -*- test-case-name: tests.ilias.test_repository -*-
"""
The ILIAS repository chat: the ``/<name>`` namespace of L{RoomNamespace} with ILIAS logins.

What is ILIAS's own here: ``login(name, id, profilePictureVisible)`` with an id PHP never
connected, or one the socket may not act as (``ilchat.ilias.identity``: the ILIAS session of its
handshake, or its first login), gets ``shutdown`` and is disconnected; the name shown is the one
PHP wrote (``chatroom_users.userdata``, else ``usr_data.login``). The socket events, the room
events' rendering and the backend actions are L{ilchat.ilias.room_namespace}'s.

Restarts: the ILIAS page logs in again on every reconnect and enters its room once
``loggedIn`` comes, but PHP connects a user only when it renders the page. So a stopping server
keeps who PHP had connected and admitted to which rooms in
``<journal_dir>/ilchat-<name>-admissions.json`` (a file of its own rather than a table: ilchat
never adds tables to the ILIAS database, and ``chatroom_users``, PHP's table, is emptied at stop
and start as ILIAS's own server does). The next start takes that file (once; it is removed as it is
read), drops every admission ``chatroom_bans`` now holds and gives the rest back for
L{RESTORE_GRACE} seconds (L{ilchat.chat.rooms.ChatRooms.restore_admissions}), if the stop was at
most L{RESTORE_MAX_AGE} seconds ago. The file also holds the ``chatroom_users`` rows of the stop:
a user back in a room gets that row again (PHP lists who is in a room from that table), and
meanwhile the name PHP chose. A page whose user was banned meanwhile gets ``shutdown`` at its
login; one whose user was kicked meanwhile gets ``userjustkicked`` at its ``enterRoom`` (as it
would have, had it been connected), and the ILIAS page then leaves for PHP, which decides again.
The identity check of every new socket still applies.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from ilchat.chat.rooms import DISCONNECT_GRACE
from ilchat.ilias.identity import Identity, shut_down
from ilchat.ilias.rendering import envelope
from ilchat.ilias.throttle import connection_limit_refusal
from ilchat.ilias.room_namespace import RoomNamespace, parse_id
from ilchat.statefile import StateFile, StateFileError

__all__ = ["RepositoryChat", "component", "parse_id"]


#: Longest display name accepted at ``login`` (ILIAS logins and full names are far shorter).
MAX_NAME_LENGTH = 255

#: Seconds after a start during which the pages of the previous run may come back into their
#: rooms. socket.io-client retries at most every 5 s; a tab in the background may take a minute.
RESTORE_GRACE = 120.0

#: Admissions from a stop longer ago than this are not given back (PHP decided them that long ago).
RESTORE_MAX_AGE = 3600.0

#: Version of the admissions file.
ADMISSIONS_VERSION = 1


class RepositoryChat(RoomNamespace):
    """
    The repository chat of one ILIAS client, as a service component (``start``/``stop``).

    Args:
        client: the ``ilchat.service.ClientContext``.
        grace: the disconnect grace in seconds (15 as in ILIAS; tests may shorten it).
    """

    _log = Logger()

    def __init__(self, client: Any, grace: float = DISCONNECT_GRACE,
                 restore_grace: float = RESTORE_GRACE) -> None:
        super().__init__(client, grace=grace)
        self.identity = Identity(client.config, client.store, client.reactor)
        self.restore_grace = restore_grace
        self.admissions_file = StateFile(os.path.join(
            client.server_config.journal_dir, "ilchat-{}-admissions.json".format(self.name)))
        # The previous run's chatroom_users.userdata per (room, user) and per user, until the
        # user is back in that room or the restore grace is over.
        self._restored_rows: Dict[Tuple[int, int], str] = {}
        self._restored_names: Dict[int, str] = {}
        self._forget_restored: Optional[Any] = None

    async def start(self) -> None:
        await super().start()
        await self._restore_admissions()

    async def stop(self) -> None:
        self.identity.stop()
        if self._forget_restored is not None and self._forget_restored.active():
            self._forget_restored.cancel()
        await self._keep_admissions()
        await super().stop()

    # -- restarts ---------------------------------------------------------------------------

    async def _keep_admissions(self) -> None:
        """Write who PHP connected and admitted where, for the next start (module docstring)."""
        admissions = self.chat.admissions()
        userdata: Dict[Tuple[int, int], str] = {}
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
            await self.admissions_file.write(state)
        except Exception:
            self._log.failure("Keeping the room admissions of {name} for the restart failed",
                              name=self.name)
            return
        self._log.info("Room admissions of {count} users of {name} kept for the next start ({path})",
                       count=len(admissions), name=self.name, path=self.admissions_file.path)

    async def _restore_admissions(self) -> None:
        """Give the previous run's admissions back, without those banned meanwhile."""
        try:
            state = self.admissions_file.take()
        except StateFileError as e:
            self._log.warn("Room admissions of the last run not restored: {why}", why=str(e))
            return
        if state is None:
            return
        admissions = _parse_admissions(state)
        if admissions is None:
            self._log.warn("Room admissions of the last run not restored: {path} is not an"
                           " admissions file", path=self.admissions_file.path)
            return
        stopped, admitted, rows = admissions
        age = self.reactor.seconds() - stopped
        if not -60 <= age <= RESTORE_MAX_AGE:
            self._log.info("Room admissions of {name} not restored: the last run stopped {age:.0f} s"
                           " ago", name=self.name, age=age)
            return
        try:
            bans = await self.store.get_bans()
        except Exception:
            self._log.failure("Room admissions of {name} not restored: reading chatroom_bans"
                              " failed", name=self.name)
            return
        kept: Dict[int, List[int]] = {}
        dropped = 0
        for user_id, rooms in admitted.items():
            allowed = [room_id for room_id in rooms if (room_id, user_id) not in bans]
            dropped += len(rooms) - len(allowed)
            if allowed or not rooms:
                kept[user_id] = allowed
                for room_id in allowed:
                    userdata = rows.get((room_id, user_id))
                    if userdata is not None:
                        self._restored_rows[room_id, user_id] = userdata
                        self._restored_names.setdefault(user_id, userdata)
        restored = self.chat.restore_admissions(kept, self.restore_grace)
        self._forget_restored = self.reactor.callLater(self.restore_grace, self._restore_over)
        self._log.info(
            "{count} users of {name} may come back into their rooms within {grace:.0f} s of the"
            " restart ({dropped} admissions dropped: banned meanwhile)",
            count=restored, name=self.name, grace=self.restore_grace, dropped=dropped)

    def _restore_over(self) -> None:
        self._forget_restored = None
        self._restored_rows.clear()
        self._restored_names.clear()

    def entered(self, socket: Any, room_id: int) -> None:
        """
        Back in a room of the previous run: its ``chatroom_users`` row, which the stop moved to
        ``chatroom_sessions``, is written again (as PHP's ``connectUser`` would at a reload), so
        that PHP lists the user as in the room.
        """
        user_id = socket.data.get("user_id")
        userdata = self._restored_rows.pop((room_id, user_id), None)
        if userdata is None:
            return
        d = defer.ensureDeferred(self.store.add_chatroom_user(
            room_id, user_id, userdata, int(self.reactor.seconds())))
        d.addErrback(lambda f: self._log.failure(
            "Writing chatroom_users again for user {user_id} in room {room_id} failed", f,
            user_id=user_id, room_id=room_id))

    def not_admitted(self, socket: Any, room_id: int) -> None:
        """
        Not (or no longer) admitted: what the page would have got at a kick it missed while it was
        disconnected. ILIAS's page then leaves for PHP, which admits the user again or not.
        """
        socket.emit("userjustkicked", envelope("userjustkicked", self.chat.now_ms(),
                                               "userjustkicked", room_id))

    async def on_login(self, socket: Any, *args: Any) -> None:
        """
        ``login(name, id, profilePictureVisible)``: ``loggedIn``, or ``shutdown`` for an id PHP
        never connected or that this socket may not act as (``ilchat.ilias.identity``).

        The name shown to others is the one PHP wrote for the user (``chatroom_users.userdata``,
        else ``usr_data.login``); the client's ``name`` only where the database knows neither.
        """
        too_many = connection_limit_refusal(self._throttle.policy, socket)
        if too_many is not None:
            # What the page shows: a message from "Chat" (no notice key would translate), then
            # the server's disconnect, after which socket.io-client does not reconnect.
            self._system_message(socket, too_many, None)
            socket.disconnect()
            return
        if len(args) < 2 or not isinstance(args[0], str):
            self._refused(socket, "login", "expected login(name, id, profilePictureVisible)")
            return
        if len(args[0]) > MAX_NAME_LENGTH:
            # Every userlist repeats the name to every member: keep it to what ILIAS allows.
            self._refused(socket, "login", "name too long")
            return
        try:
            user_id = parse_id(args[1], "user id")
        except ValueError as e:
            self._refused(socket, "login", str(e))
            return
        picture = bool(args[2]) if len(args) > 2 else False
        refusal = await self.identity.bind(socket, user_id)
        if refusal is not None:
            shut_down(socket)
            return
        name = await self._php_name(user_id, args[0])
        if not socket.connected:
            return  # gone while the database answered
        member = self.chat.login(socket.sid, user_id, name, picture)
        if member is None:
            self._log.info(
                "Login of {user_id} on {ns} refused: not connected by ILIAS; shutting the socket down",
                user_id=user_id,
                ns=self.namespace.name,
            )
            shut_down(socket)
            return
        self.logged_in(socket, user_id)
        socket.emit("loggedIn")

    async def _php_name(self, user_id: int, claimed: str) -> str:
        """The name PHP chose for the user in the chat (see L{on_login})."""
        try:
            userdata, login = await self.store.get_chat_name_sources(user_id)
            if userdata is None:
                # Back after a restart: the row is written again only once the user re-enters.
                userdata = self._restored_names.get(user_id)
            name = _userdata_login(userdata)
            if name is None:
                name = login
        except Exception:
            self._log.failure("Reading the chat name of user {user_id} failed", user_id=user_id)
            name = None
        return claimed if name is None else name


def _parse_admissions(state: Any) -> Optional[tuple]:
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
    rows: Dict[Tuple[int, int], str] = {}
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


def _userdata_login(userdata: Optional[str]) -> Optional[str]:
    """``login`` of the ``chatroom_users.userdata`` JSON PHP writes (``{"login":..,"id":..}``)."""
    if not userdata:
        return None
    try:
        data = json.loads(userdata)
    except ValueError:
        return None
    login = data.get("login") if isinstance(data, dict) else None
    if isinstance(login, str) and login and len(login) <= MAX_NAME_LENGTH:
        return login
    return None



def component(client: Any) -> RepositoryChat:
    """The ILIAS repository chat of a client config."""
    return RepositoryChat(client)
