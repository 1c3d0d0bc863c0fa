"""
Cross-protocol tests: python-socketio browsers and IRC clients in the same repository chat room,
against a whole server (ilchat.service) on the real MariaDB.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet import endpoints, reactor
from twisted.trial import unittest

from ilchat.ilias.repository import RepositoryChat
from ilchat.irc.service import IrcComponent
from tests.ilias.repository_support import RepositoryServerMixin, sleep, wait_until
from tests.irc.support import RawClient
from tests.support.server import start_server

CHANNEL = "#onscreen-1"


class IrcBridgeMixin(RepositoryServerMixin):
    """A server with the repository chat and the IRC component, and helpers for IRC clients."""

    irc_auth = "open"
    #: server.cfg ``irc`` → ``limits`` for the test's server.
    irc_limits: Dict[str, Any] = {}
    #: Further server.cfg ``irc`` keys for the test's server (operators, names).
    irc_settings: Dict[str, Any] = {}

    async def start_on(self, databases: Dict[str, Any]) -> Any:
        grace = self.grace
        clients = [{"name": name, "auth": {"key": f"key-{name}", "secret": f"secret-{name}"},
                    "database": _database_dict(db)} for name, db in databases.items()]
        self.irc_components: List[IrcComponent] = []

        def make_irc(context: Any) -> IrcComponent:
            component = IrcComponent(context)
            self.irc_components.append(component)
            return component

        return await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": self.irc_auth,
                            "server_name": "irc.test", "network_name": "ILIAS",
                            "limits": self.irc_limits, **self.irc_settings}},
            clients=clients,
            client_components=[lambda ctx: RepositoryChat(ctx, grace=grace)],
            server_components=[make_irc],
        )

    async def irc(self) -> RawClient:
        port = self.irc_components[0].ports[0].getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(self._close_irc, client)
        return client

    async def _close_irc(self, client: RawClient) -> None:
        if client.transport.connected:
            client.transport.loseConnection()
        await client.closed

    async def irc_in_room(self, nick: str, caps: tuple = ()) -> RawClient:
        client = await self.irc()
        await client.register(nick, caps=caps)
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        return client


async def userlist_with(browser: Any, predicate: Any) -> Dict[str, Any]:
    """The first userlist (users by id) for which C{predicate(users)} holds; userlists coalesce."""
    def find() -> Any:
        for payload in browser.payloads("userlist"):
            users = {int(k): v for k, v in payload["users"].items()}
            if predicate(users):
                return users
        return None

    return await wait_until(find, what="a matching userlist")


async def irc_id_in(browser: Any) -> int:
    """The (negative) id of the IRC user once a browser's userlist shows them."""
    users = await userlist_with(browser, lambda users: any(k < 0 for k in users))
    return next(k for k in users if k < 0)


def _database_dict(db: Any) -> Dict[str, Any]:
    from tests.support.server import database_dict

    return database_dict(db)


class OpenModeBridgeTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_room_is_a_channel_with_title_topic_and_browser_nicks(self) -> None:
        """The room is #<client>-<roomId>; NAMES/WHO list browser users under their login."""
        await self.start()
        await self.enter(7, "bob.müller")
        await self.enter(8, "1anna")
        irc = await self.irc()
        await irc.register("ircer")
        irc.send("LIST")
        entry = await irc.wait_for("322", lambda m: m.params[1] == CHANNEL)
        self.assertEqual(entry.params[3], "Main")
        irc.send(f"JOIN {CHANNEL}")
        topic = await irc.wait_for("332")
        self.assertEqual(topic.params[1:], (CHANNEL, "Main"))
        names = await irc.wait_for("353")
        self.assertEqual(set(names.params[3].split()), {"bob_müller", "_1anna", "ircer"})
        irc.send(f"WHO {CHANNEL}")
        await irc.wait_for("315")
        who = {m.params[5]: m for m in irc.since("352")}
        self.assertEqual(who["bob_müller"].params[7], "0 bob.müller")
        self.assertEqual(who["bob_müller"].params[3], "onscreen.ilias")

    async def test_irc_message_reaches_browsers_and_history(self) -> None:
        """An IRC PRIVMSG is an ILIAS message from the IRC user, stored in chatroom_history."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        users = await userlist_with(bob, lambda users: any(k < 0 for k in users))
        irc_ids = [k for k in users if k < 0]
        self.assertEqual(len(irc_ids), 1, "open-mode IRC users get negative ids")
        self.assertEqual(users[irc_ids[0]]["username"], "ircer")
        irc.send(f"PRIVMSG {CHANNEL} :hello browsers")
        message = await bob.wait_for("message")
        self.assertEqual(message["content"], "hello browsers")
        self.assertEqual(message["from"]["id"], irc_ids[0])
        self.assertEqual(message["from"]["username"], "ircer")
        self.assertEqual(message["roomId"], 1)
        rows = await wait_until_rows(self)
        stored = json.loads(rows[0]["message"])
        self.assertEqual((rows[0]["room_id"], stored["content"], stored["from"]["id"]),
                         (1, "hello browsers", irc_ids[0]))

    async def test_browser_message_appears_as_privmsg_from_the_user(self) -> None:
        """A browser message is a PRIVMSG from the browser user's nick; multi-line text splits."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        await bob.emit("message", {"content": "hi irc\nsecond line", "format": {}}, 1)
        first = await irc.wait_for("PRIVMSG")
        second = await irc.wait_for("PRIVMSG")
        self.assertEqual(first.prefix, "bob!ilias@onscreen.ilias")
        self.assertEqual((first.params, second.params), ((CHANNEL, "hi irc"), (CHANNEL, "second line")))

    async def test_echo_message_through_the_room(self) -> None:
        """With echo-message an IRC user's own channel message comes back (via the bus) once."""
        await self.start()
        irc = await self.irc_in_room("echoer", caps=("echo-message",))
        other = await self.irc_in_room("other")
        irc.send(f"PRIVMSG {CHANNEL} :ping pong")
        echo = await irc.wait_for("PRIVMSG")
        got = await other.wait_for("PRIVMSG")
        self.assertEqual(echo.params, got.params)
        self.assertTrue(got.prefix.startswith("echoer!"))

    async def test_browser_join_and_leave_show_on_irc(self) -> None:
        """A browser entering is a JOIN, leaving (PHP LeavePrivateRoom) a PART."""
        await self.start()
        irc = await self.irc_in_room("ircer")
        await self.enter(7, "bob")
        join = await irc.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))
        self.assertEqual(join.params, (CHANNEL,))
        await self.php("LeavePrivateRoom", 1, 7)
        part = await irc.wait_for("PART", lambda m: m.prefix.startswith("bob!"))
        self.assertEqual(part.params[0], CHANNEL)

    async def test_irc_join_and_part_show_in_browser(self) -> None:
        """
        Browsers see the IRC user in the userlist and a connect notice; a PART removes them with
        the ``disconnected`` notice of a member who left (ChatRooms.part_room).
        """
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        connect = await bob.wait_for("notice", "connect")
        self.assertEqual(connect["data"]["username"], "ircer")
        irc.send(f"PART {CHANNEL}")
        left = await bob.wait_for("notice", "disconnected")
        self.assertEqual(left["data"]["username"], "ircer")
        await wait_until(lambda: set(bob.payloads("userlist")[-1]["users"]) == {"7"},
                         what="a last userlist without the IRC user")

    async def test_whispers_both_ways(self) -> None:
        """A private PRIVMSG to a browser nick is a whisper; a browser whisper is a private PRIVMSG."""
        await self.start()
        bob = await self.enter(7, "bob")
        alice = await self.enter(6, "alice")
        irc = await self.irc_in_room("ircer")
        irc_id = await irc_id_in(bob)
        irc.send("PRIVMSG bob :just for you")
        whisper = await bob.wait_for("message")
        self.assertEqual(whisper["content"], "just for you")
        self.assertEqual(whisper["target"]["id"], 7)
        self.assertFalse(whisper["target"]["public"])
        await bob.emit("message", {"content": "secret back", "format": {},
                                   "target": {"username": "ircer", "id": irc_id, "public": 0}}, 1)
        private = await irc.wait_for("PRIVMSG")
        self.assertEqual(private.params, ("ircer", "secret back"))
        self.assertTrue(private.prefix.startswith("bob!"))
        await sleep(0.2)
        self.assertEqual(alice.payloads("message"), [])

    async def test_kick_from_ilias_removes_irc_user(self) -> None:
        """PHP Kick of the IRC user's id is a KICK on IRC; a kicked browser user too."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        irc_id = await irc_id_in(bob)
        await self.enter(8, "carl")
        await irc.wait_for("JOIN", lambda m: m.prefix.startswith("carl!"))
        await self.php("Kick", 1, 8)
        kick = await irc.wait_for("KICK")
        self.assertEqual(kick.params[:2], (CHANNEL, "carl"))
        await self.php("Kick", 1, irc_id)
        kick = await irc.wait_for("KICK")
        self.assertEqual(kick.params, (CHANNEL, "ircer", "Kicked from the chat room"))
        irc.send(f"PRIVMSG {CHANNEL} :am I out?")
        await irc.wait_for("404")
        await bob.wait_for("notice", "user_kicked", count=2)

    async def test_kick_of_one_of_two_users_with_the_same_name(self) -> None:
        """
        Two browser users called sam: PHP kicks id 8, IRC sees that one kicked and the other
        stays (the bridge goes by the member id in the event, never by a display name).
        """
        await self.start()
        irc = await self.irc_in_room("ircer")
        await self.enter(7, "sam")
        first = await irc.wait_for("JOIN", lambda m: m.prefix.startswith("sam"))
        await self.enter(8, "sam")
        second = await irc.wait_for("JOIN", lambda m: m.prefix.startswith("sam"))
        first_nick, second_nick = first.prefix.split("!")[0], second.prefix.split("!")[0]
        self.assertNotEqual(first_nick, second_nick)
        await self.php("Kick", 1, 8)
        kick = await irc.wait_for("KICK")
        self.assertEqual(kick.params, (CHANNEL, second_nick, "Kicked from the chat room"))
        irc.send(f"NAMES {CHANNEL}")
        names = await irc.wait_for("353")
        self.assertEqual(set(names.params[3].split()), {first_nick, "ircer"})

    async def test_clear_is_a_notice(self) -> None:
        """ClearMessages shows as a NOTICE to the channel."""
        await self.start()
        irc = await self.irc_in_room("ircer")
        await self.php("ClearMessages", 1, 7)
        notice = await irc.wait_for("NOTICE")
        self.assertIn("cleared", notice.params[1])

    async def test_typing_is_not_sent_to_irc(self) -> None:
        """Typing events stay in the browsers."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        await bob.emit("userStartedTyping", 1)
        await bob.emit("message", {"content": "done typing", "format": {}}, 1)
        message = await irc.wait_for("PRIVMSG")
        self.assertEqual(message.params[1], "done typing")
        self.assertEqual([m.command for m in irc.messages if m.command in ("TAGMSG",)], [])

    async def test_browser_nick_collision_gets_suffix(self) -> None:
        """A browser login equal to an IRC nick gets a unique suffixed nick."""
        await self.start()
        irc = await self.irc_in_room("bob")
        await self.enter(7, "bob")
        join = await irc.wait_for("JOIN", lambda m: not m.prefix.startswith("bob!"))
        self.assertEqual(join.prefix.split("!")[0], "bob_2")

    async def test_unknown_room_channel_is_403(self) -> None:
        """A channel name of a room that does not exist cannot be joined."""
        await self.start()
        irc = await self.irc()
        await irc.register("ircer")
        irc.send("JOIN #onscreen-999")
        await irc.wait_for("403")

    async def test_a_room_channel_with_other_digits_is_403(self) -> None:
        """``²`` is a digit to str.isdigit but no number: no such channel, not a handler error."""
        await self.start()
        irc = await self.irc()
        await irc.register("ircer")
        irc.send("JOIN #onscreen-\u00b2")
        self.assertEqual((await irc.wait_for("403")).params[1], "#onscreen-\u00b2")


async def wait_until_rows(test: Any) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []

    async def poll() -> bool:
        rows[:] = await test.history()
        return bool(rows)

    for _ in range(200):
        if await poll():
            return rows
        await sleep(0.05)
    raise AssertionError("no chatroom_history row")
