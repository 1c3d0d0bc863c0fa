# -*- test-case-name: tests.ilias.test_repository -*-
"""
The ILIAS repository chat: the ``/<name>`` namespace of L{RoomNamespace} with ILIAS logins.

What is ILIAS's own here: ``login(name, id, profilePictureVisible)`` with an id PHP never
connected, or one the socket may not act as (``ilchat.ilias.identity``: the ILIAS session of its
handshake, or its first login), gets ``shutdown`` and is disconnected; the name shown is the one
PHP wrote (``chatroom_users.userdata``, else ``usr_data.login``). The socket events, the room
events' rendering and the backend actions are L{ilchat.ilias.room_namespace}'s.

Restarts (L{ilchat.ilias.admissions}): a page reconnecting after a restart logs in and enters its
room again with the admissions the previous run kept; one whose user was banned meanwhile gets
``shutdown`` at its login (PHP never connected it in this run), and an ``enterRoom`` into a room
the user is not admitted to, as after a kick the page missed while it was disconnected, gets
``userjustkicked``: the ILIAS page then leaves for PHP, which decides again.

Message texts are HTML-escaped for the ILIAS 8 and 9 pages (client.cfg ``escape_messages``,
L{ilchat.ilias.escaping}).
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.logger import Logger

from ilchat.chat.rooms import DISCONNECT_GRACE
from ilchat.ilias.admissions import RESTORE_GRACE, Admissions
from ilchat.ilias.escaping import escape_messages
from ilchat.ilias.identity import Identity, shut_down
from ilchat.ilias.rendering import envelope
from ilchat.ilias.throttle import connection_limit_refusal
from ilchat.ilias.room_namespace import RoomNamespace, parse_id

__all__ = ["RepositoryChat", "component", "parse_id"]


#: Longest display name accepted at ``login`` (ILIAS logins and full names are far shorter).
MAX_NAME_LENGTH = 255


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
        self.admissions = Admissions(client, self.chat, restore_grace)

    async def start(self) -> None:
        await super().start()
        await self.admissions.restore()

    async def stop(self) -> None:
        self.identity.stop()
        await self.admissions.keep()
        await super().stop()

    async def escape_mode(self) -> bool:
        """client.cfg ``escape_messages``, or whether the database is older than ILIAS 10."""
        return await escape_messages(self.client.config, self.store, f"{self.name} repository chat")

    def entered(self, socket: Any, room_id: int) -> None:
        """Back in a room after a restart: PHP's ``chatroom_users`` row is written again."""
        self.admissions.back_in(room_id, socket.data.get("user_id"))

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
                userdata = self.admissions.userdata(user_id)
            name = _userdata_login(userdata)
            if name is None:
                name = login
        except Exception:
            self._log.failure("Reading the chat name of user {user_id} failed", user_id=user_id)
            name = None
        return claimed if name is None else name


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
