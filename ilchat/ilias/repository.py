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
most L{RESTORE_MAX_AGE} seconds ago. A page whose user was banned meanwhile gets ``shutdown`` at its
login; one whose user was kicked meanwhile gets ``userjustkicked`` at its ``enterRoom`` (as it
would have, had it been connected), and the ILIAS page then leaves for PHP, which decides again.
The identity check of every new socket still applies.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

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

    async def start(self) -> None:
        await super().start()
        await self._restore_admissions()

    async def stop(self) -> None:
        self.identity.stop()
        await self._keep_admissions()
        await super().stop()

    # -- restarts ---------------------------------------------------------------------------

    async def _keep_admissions(self) -> None:
        """Write who PHP connected and admitted where, for the next start (module docstring)."""
        admissions = self.chat.admissions()
        state = {"version": ADMISSIONS_VERSION, "stopped": int(self.reactor.seconds()),
                 "admissions": [[user_id, rooms] for user_id, rooms in sorted(admissions.items())]}
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
        stopped, admitted = admissions
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
        restored = self.chat.restore_admissions(kept, self.restore_grace)
        self._log.info(
            "{count} users of {name} may come back into their rooms within {grace:.0f} s of the"
            " restart ({dropped} admissions dropped: banned meanwhile)",
            count=restored, name=self.name, grace=self.restore_grace, dropped=dropped)

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
            name = _userdata_login(userdata)
            if name is None:
                name = login
        except Exception:
            self._log.failure("Reading the chat name of user {user_id} failed", user_id=user_id)
            name = None
        return claimed if name is None else name


def _parse_admissions(state: Any) -> Optional[tuple]:
    """``(stopped, {user_id: [room_id, ...]})`` of an admissions file, or None if it is not one."""
    if not isinstance(state, dict) or state.get("version") != ADMISSIONS_VERSION:
        return None
    stopped, entries = state.get("stopped"), state.get("admissions")
    if not _is_int(stopped) or not isinstance(entries, list):
        return None
    admitted: Dict[int, List[int]] = {}
    for entry in entries:
        if (not isinstance(entry, list) or len(entry) != 2 or not _is_int(entry[0])
                or not isinstance(entry[1], list) or not all(_is_int(r) for r in entry[1])):
            return None
        admitted[entry[0]] = list(entry[1])
    return stopped, admitted


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
