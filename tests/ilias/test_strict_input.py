"""
Input that used to poison the repository chat, sent over real sockets to a server on MariaDB: a
lone surrogate in a message or a login name, ``1e999`` in ``format`` or ``enterRoom``, a POST full
of refused events. Each closes (or is refused for) that one socket; nobody else notices, and the
history keeps being written.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from ilchat.ilias.repository import RepositoryChat
from tests.engineio.support import handshake, http
from tests.ilias.repository_support import RepositoryServerMixin, database_dict, sleep, wait_until
from tests.ilias.test_osc import ALICE, BOB, OscServerMixin, _is_message
from tests.support.rawsocket import RawSocketIO
from tests.support.server import RunningServer, start_server


class PoisonInputTests(RepositoryServerMixin, unittest.TestCase):
    async def start_on(self, databases: Dict[str, Any]) -> RunningServer:
        self.components: List[RepositoryChat] = []

        def component(ctx: Any) -> RepositoryChat:
            chat = RepositoryChat(ctx, grace=self.grace)
            self.components.append(chat)
            return chat

        clients = [{"name": name, "auth": {"key": f"key-{name}", "secret": f"secret-{name}"},
                    "database": database_dict(db)} for name, db in databases.items()]
        return await start_server(self, clients=clients, client_components=[component])

    def log_lines(self) -> List[Dict[str, Any]]:
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events

    async def stored_contents(self, expected: int) -> List[str]:
        """The contents in chatroom_history, once there are ``expected`` rows."""
        await self.components[0].chat.flush_history()
        rows = await self.history()
        self.assertEqual(len(rows), expected, rows)
        return [json.loads(row["message"])["content"] for row in rows]

    async def raw_member(self, user_id: int, login: str) -> RawSocketIO:
        """A user PHP let in, whose socket speaks raw packets, logged in and in room 1."""
        self.assertEqual((await self.php("Connect", 1, user_id)).json(), {"status": 200})
        self.assertEqual((await self.php("EnterPrivateRoom", 1, user_id)).json(), {"success": True})
        raw = await RawSocketIO(self.server.base_url).open("/onscreen")
        self.addCleanup(raw.close)
        await raw.send(f'42/onscreen,["login","{login}",{user_id},false]')
        while await raw.recv() != '42/onscreen,["loggedIn"]':
            pass
        await raw.send('42/onscreen,["enterRoom",1]')
        while not str(await raw.recv()).startswith('42/onscreen,["private_room_entered"'):
            pass
        return raw

    async def test_surrogate_in_a_message_closes_that_socket_and_history_goes_on(self):
        """The poison message is refused before delivery; later messages are delivered and stored."""
        alice, bob = await self.alice_and_bob_in_room()
        await alice.emit("message", {"content": "bad \ud800", "format": {}}, 1)
        await wait_until(alice.disconnected.is_set, what="alice's socket closed")
        await bob.emit("message", {"content": "after", "format": {}}, 1)
        await bob.wait_for("message")
        self.assertEqual([m["content"] for m in bob.payloads("message")], ["after"])
        self.assertEqual(await self.stored_contents(1), ["after"])

    async def test_surrogate_in_a_login_name_leaves_the_userlist_working(self):
        """A login named with a lone surrogate is closed; the next user's userlist reaches all."""
        alice, bob = await self.alice_and_bob_in_room()
        self.assertEqual((await self.php("Connect", 1, 8)).json(), {"status": 200})
        carol = await self.browser()
        await carol.emit("login", "\ud800carol", 8, False)
        await wait_until(carol.disconnected.is_set, what="carol's socket closed")
        self.assertEqual(carol.received("loggedIn"), [])
        dave = await self.enter(9, "dave")
        userlist = await alice.wait_for("userlist")
        names = sorted(u["username"] for u in userlist["users"].values())
        self.assertEqual(names, ["alice", "bob", "dave"])
        await bob.wait_for("userlist")
        await dave.emit("message", {"content": "hi from dave", "format": {}}, 1)
        await alice.wait_for("message")
        self.assertEqual(await self.stored_contents(1), ["hi from dave"])

    async def test_infinite_format_is_refused_and_nothing_invalid_is_stored(self):
        """``format: {"size": 1e999}`` closes that socket (1002, reason); PHP never sees Infinity."""
        alice, bob = await self.alice_and_bob_in_room()
        raw = await self.raw_member(8, "carol")
        await raw.send('42/onscreen,["message",{"content":"x","format":{"size":1e999}},1]')
        closed = await raw.until_closed()
        self.assertEqual(closed.code, 1002)
        self.assertIn("number out of range", closed.reason)
        await bob.emit("message", {"content": "after", "format": {"color": "#000"}}, 1)
        await alice.wait_for("message")
        self.assertEqual([m["content"] for m in alice.payloads("message")], ["after"])
        self.assertEqual(await self.stored_contents(1), ["after"])
        for row in await self.history():
            self.assertNotIn("Infinity", row["message"])

    async def test_enter_room_with_infinity_is_refused_without_a_traceback(self):
        """``enterRoom(1e999)`` closes that socket with a reason and logs no failure."""
        await self.start()
        events = self.log_lines()
        raw = await self.raw_member(8, "carol")
        await raw.send('42/onscreen,["enterRoom",1e999]')
        closed = await raw.until_closed()
        self.assertIn("number out of range", closed.reason)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([e for e in events if e.get("log_failure")], [])
        # The server goes on: a user enters and talks.
        alice = await self.enter(6, "alice")
        await alice.emit("message", {"content": "still working", "format": {}}, 1)
        await alice.wait_for("message")

    async def test_a_post_of_refused_events_logs_one_line_and_a_count(self):
        """400 refused events in one POST: one refusal line now, one with the count later."""
        await self.start()
        events = self.log_lines()
        sid, _ = await handshake(self.server.base_url)
        url = f"{self.server.base_url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http("POST", url, b"40/onscreen,")
        body = "\x1e".join(['42/onscreen,["enterRoom","not a room"]'] * 400).encode()
        response = await http("POST", url, body)
        self.assertEqual((response.code, response.body), (200, b"ok"))

        def refusals() -> List[str]:
            return [formatEvent(e) for e in events if "enterRoom from" in formatEvent(e)]

        self.assertEqual(len(refusals()), 1, refusals())
        self.components[0]._repeats.flush()
        self.assertEqual(len(refusals()), 2)
        self.assertIn("(repeated 399 times in", refusals()[1])
        await sleep(0)


class OnScreenChatStrictInputTests(OscServerMixin, unittest.TestCase):
    """The On-Screen Chat socket and PHP's ``UserConfigChange`` with the same poison."""

    async def test_surrogate_in_a_conversation_message_closes_that_tab_only(self):
        """Nothing is delivered or stored; the conversation goes on for the others."""
        await self.start()
        alice = await self.tab(ALICE)
        bob = await self.tab(BOB)
        init = await self.open(alice, ALICE, BOB)
        await alice.emit("message", init["id"], 6, "poison \ud800")
        await wait_until(alice.disconnected.is_set, what="alice's tab closed")
        await bob.emit("message", init["id"], 7, "still here")
        await bob.wait_for("message", _is_message("still here"))
        rows = await self.rows("SELECT message FROM osc_messages")
        self.assertEqual(rows, [{"message": "still here"}])
        self.assertEqual(bob.payloads("message", _is_message("poison \ud800")), [])

    async def test_user_config_change_refuses_what_strict_json_refuses(self):
        """Infinity, a lone surrogate key, deep nesting and a 5,000-digit id are 400s with a reason."""
        await self.start()
        cases = {
            '{"7":{"acceptsMessages":1e999}}': "number out of range",
            '{"7":{"acceptsMessages":NaN}}': "NaN is not JSON",
            '{"\\ud800":{"acceptsMessages":true}}': "lone surrogate",
            '{"7":' + "[" * 40 + "]" * 40 + "}": "nested deeper than 32",
            '{"7":{"acceptsMessages":' + "1" * 5000 + "}}": "integer of more than 32 digits",
        }
        for message, reason in cases.items():
            response = await self.user_config_change(message)
            self.assertEqual(response.code, 400, message[:40])
            self.assertIn(reason, response.json()["message"], message[:40])
