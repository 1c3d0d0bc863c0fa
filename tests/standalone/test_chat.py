"""
End-to-end tests of the standalone chat: a whole server on SQLite with a ``standalone`` client,
browsers played by python-socketio over real websockets on loopback.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from twisted.trial import unittest

from ilchat.standalone import StandaloneChat, validate_name
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.db import fetch_rows_async
from tests.support.server import RunningServer, start_server

GRACE = 0.6

STANDALONE = {
    "title": "Test chat",
    "welcome": "Hello <b>there</b>",
    "rooms": [{"id": 1, "title": "Lobby"}, {"id": 2, "title": "Café"}],
    "history": 3,
}


def standalone_client(**overrides: Any) -> Dict[str, Any]:
    return {"name": "chat", "standalone": {**STANDALONE, **overrides}}


async def lobby_browser(test: Any, server: Any, name: str) -> Browser:
    """A browser logged in to the standalone chat as C{name}, in the Lobby; closed at C{test}'s end."""
    browser = Browser(server, "/chat")
    test.addCleanup(browser.close)
    await browser.connect()
    await browser.emit("login", name)
    await browser.wait_for("loggedIn")
    await browser.emit("enterRoom", 1)
    await browser.wait_for("notice", "welcome_to_chat")
    return browser


class ValidateNameTests(unittest.SynchronousTestCase):
    """The name rules of the login screen, without a server."""

    def test_name_is_trimmed(self):
        """Spaces around a name are dropped; the rest is kept as typed."""
        self.assertEqual(validate_name("  Zoë M. ", 32), ("Zoë M.", None))

    def test_empty_and_blank_names_are_refused(self):
        """Nothing or only spaces is not a name."""
        self.assertIsNone(validate_name("", 32)[0])
        self.assertIsNone(validate_name("   ", 32)[0])

    def test_too_long_name_is_refused_with_the_limit(self):
        """33 characters are one too many, and the reason says how many are allowed."""
        name, reason = validate_name("x" * 33, 32)
        self.assertIsNone(name)
        self.assertIn("32", reason)
        self.assertEqual(validate_name("x" * 32, 32)[0], "x" * 32)

    def test_control_and_invisible_characters_are_refused(self):
        """Control characters, line breaks and bidi overrides cannot hide in a name."""
        for bad in ("a\x00b", "a\nb", "a\tb", "ad\u202emin", "a\u200bb", "a\x7fb"):
            self.assertIsNone(validate_name(bad, 32)[0], repr(bad))

    def test_non_text_is_refused(self):
        """A number or an object sent as the name is refused, not crashed on."""
        self.assertIsNone(validate_name(42, 32)[0])
        self.assertIsNone(validate_name({"a": 1}, 32)[0])


class StandaloneChatTests(unittest.TestCase):
    """The standalone chat as the page and other clients use it."""

    async def start(self, network: Optional[Dict[str, Any]] = None, folder: Optional[str] = None,
                    grace: float = GRACE, **standalone: Any) -> RunningServer:
        server = {"network": network} if network is not None else None
        self.server = await start_server(
            self,
            server=server,
            clients=[standalone_client(**standalone)],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=grace)],
            folder=folder,
        )
        self.browsers = getattr(self, "browsers", [])
        if not hasattr(self, "_closing"):
            self._closing = True
            self.addCleanup(self._close_browsers)
        return self.server

    async def _close_browsers(self) -> None:
        for browser in self.browsers:
            await browser.close()

    async def browser(self) -> Browser:
        browser = Browser(self.server, "/chat")
        self.browsers.append(browser)
        return await browser.connect()

    async def login(self, name: str, enter: bool = True) -> Browser:
        browser = await self.browser()
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        if enter:
            await browser.emit("enterRoom", 1)
            await browser.wait_for("notice", "welcome_to_chat")
        return browser

    async def test_login_with_a_name_only(self):
        """A name is enough: loggedIn carries a positive id, the name, a token and the rooms."""
        await self.start()
        alice = await self.browser()
        await alice.emit("login", "  Alice ")
        info = await alice.wait_for("loggedIn")
        self.assertGreater(info["id"], 0)
        self.assertEqual(info["username"], "Alice")
        self.assertTrue(info["token"])
        self.assertEqual(info["rooms"], [{"id": 1, "title": "Lobby"}, {"id": 2, "title": "Café"}])

    async def test_configured_rooms_are_created_in_sqlite(self):
        """The rooms of the config are rows of chatroom_settings in the client's SQLite file."""
        server = await self.start()
        database = server.client_configs[0].database
        rows = await fetch_rows_async(database, "SELECT room_id FROM chatroom_settings ORDER BY room_id")
        self.assertEqual([row["room_id"] for row in rows], [1, 2])

    async def test_invalid_name_gets_a_clear_message(self):
        """A name with a line break is refused with loginFailed and a sentence, not silence."""
        await self.start()
        browser = await self.browser()
        await browser.emit("login", "bad\nname")
        failed = await browser.wait_for("loginFailed")
        self.assertEqual(failed["error"], "invalid_name")
        self.assertIn("line breaks", failed["message"])
        self.assertEqual(browser.received("loggedIn"), [])

    async def test_taken_name_is_refused_whatever_its_case(self):
        """Names are unique among everyone online: "ALICE" is taken while "alice" is online."""
        await self.start()
        await self.login("alice")
        other = await self.browser()
        await other.emit("login", "ALICE")
        failed = await other.wait_for("loginFailed")
        self.assertEqual(failed["error"], "name_taken")
        self.assertIn("ALICE", failed["message"])

    async def test_irc_nicks_count_as_taken(self):
        """A name the IRC side reports as in use (through ChatRooms.name_checks) is taken."""
        server = await self.start()
        chat = server.client("chat").components[0].chat
        chat.name_checks.append(lambda name: name.lower() == "ircbob")
        browser = await self.browser()
        await browser.emit("login", "IrcBob")
        self.assertEqual((await browser.wait_for("loginFailed"))["error"], "name_taken")

    async def test_two_users_talk_see_each_other_and_typing(self):
        """Messages, the user list and typing go through the room domain to both users."""
        await self.start()
        alice = await self.login("alice")
        bob = await self.login("bob")
        await alice.wait_for("notice", "connect")
        # The room's user list is coalesced: wait for the one that has both.
        await wait_until(lambda: len(alice.payloads("userlist")[-1]["users"]) == 2)
        users = alice.payloads("userlist")[-1]["users"]
        self.assertEqual(sorted(u["username"] for u in users.values()), ["alice", "bob"])

        await bob.emit("userStartedTyping", 1)
        typing = await alice.wait_for("userStartedTyping")
        self.assertEqual(json.loads(typing["subscriber"])["username"], "bob")

        await bob.emit("message", {"content": "<img src=x onerror=alert(1)>", "format": {}}, 1)
        message = await alice.wait_for("message")
        self.assertEqual(message["content"], "<img src=x onerror=alert(1)>")
        self.assertEqual(message["from"]["username"], "bob")
        await bob.wait_for("message")

    async def test_newcomer_gets_the_latest_messages(self):
        """With history 3, a newcomer gets the last three messages of the room, oldest first."""
        await self.start()
        alice = await self.login("alice")
        for number in range(5):
            await alice.emit("message", {"content": f"m{number}", "format": {}}, 1)
        await alice.wait_for("message", count=5)
        carol = await self.browser()
        await carol.emit("login", "carol")
        await carol.wait_for("loggedIn")
        await carol.emit("enterRoom", 1)
        history = await carol.wait_for("history")
        self.assertEqual(history["roomId"], 1)
        self.assertEqual([m["content"] for m in history["messages"]], ["m2", "m3", "m4"])
        self.assertGreater(history["messages"][0]["timestamp"], 10**12)  # milliseconds
        # The history comes before the answers of enterRoom (each written as it is produced, so
        # wait for the answer too).
        await carol.wait_for("private_room_entered")
        self.assertLess(carol.names().index("history"), carol.names().index("private_room_entered"))

    async def test_history_survives_a_restart(self):
        """The history is read from chatroom_history when the server starts again."""
        server = await self.start()
        folder = server.folder
        alice = await self.login("alice")
        await alice.emit("message", {"content": "before the restart", "format": {}}, 1)
        await alice.wait_for("message")
        await alice.close()
        await server.stop()

        await self.start(folder=folder)
        bob = await self.browser()
        await bob.emit("login", "bob")
        await bob.wait_for("loggedIn")
        await bob.emit("enterRoom", 1)
        history = await bob.wait_for("history")
        self.assertEqual([m["content"] for m in history["messages"]], ["before the restart"])
        self.assertEqual(history["messages"][0]["from"]["username"], "alice")

    async def test_too_long_message_is_refused_not_dropped(self):
        """Over max_message_length the sender hears why; nobody gets the message."""
        await self.start(network={"max_message_length": 10})
        alice = await self.login("alice")
        await alice.emit("message", {"content": "x" * 11, "format": {}}, 1)
        refused = await alice.wait_for("refused")
        self.assertEqual(refused["error"], "message_too_long")
        self.assertEqual(refused["max_length"], 10)
        await sleep(0.2)
        self.assertEqual(alice.received("message"), [])

    async def test_throttle_refuses_messages_over_the_burst(self):
        """With burst 2 and one message a second, the third quick message is refused clearly."""
        await self.start(network={"message_rate": 1, "message_burst": 2})
        alice = await self.login("alice")
        for number in range(3):
            await alice.emit("message", {"content": f"m{number}", "format": {}}, 1)
        refused = await alice.wait_for("refused")
        self.assertEqual(refused["error"], "rate_limited")
        self.assertIn("too fast", refused["message"])
        await alice.wait_for("message", count=2)
        await sleep(0.2)
        self.assertEqual([p["content"] for p in alice.payloads("message")], ["m0", "m1"])

    async def test_token_takes_the_name_back_after_a_lost_connection(self):
        """
        Within the disconnect grace the name is still taken, except for the page that holds the
        token: it gets the same id back.
        """
        await self.start()
        alice = await self.login("alice")
        info = alice.payloads("loggedIn")[0]
        await alice.close()
        stranger = await self.browser()
        await stranger.emit("login", "alice")
        self.assertEqual((await stranger.wait_for("loginFailed"))["error"], "name_taken")
        again = await self.browser()
        await again.emit("login", "alice", info["token"])
        back = await again.wait_for("loggedIn")
        self.assertEqual(back["id"], info["id"])

    async def test_name_is_free_again_after_the_grace(self):
        """Once the disconnect grace is over, anyone may take the name."""
        await self.start()
        alice = await self.login("alice")
        await alice.close()
        await sleep(GRACE + 0.3)
        other = await self.browser()
        await other.emit("login", "alice")
        await other.wait_for("loggedIn")

    async def test_message_before_login_is_refused(self):
        """A socket that did not log in gets a refusal explaining what to do."""
        await self.start()
        browser = await self.browser()
        await browser.emit("message", {"content": "hi", "format": {}}, 1)
        refused = await browser.wait_for("refused")
        self.assertEqual(refused["error"], "not_logged_in")

    async def test_clear_messages_empties_the_stored_history(self):
        """The backend's ClearMessages tells the room and deletes the room's stored history."""
        from tests.support.http import http_request

        server = await self.start()
        alice = await self.login("alice")
        await alice.emit("message", {"content": "to be cleared", "format": {}}, 1)
        await alice.wait_for("message")
        response = await http_request(
            server.url("/backend/ClearMessages/chat/1/0"), headers=server.auth_header()
        )
        self.assertEqual(response.json(), {"success": True})
        await alice.wait_for("clear")
        rows = await fetch_rows_async(
            server.client_configs[0].database, "SELECT hist_id FROM chatroom_history"
        )
        self.assertEqual(rows, [])
        bob = await self.browser()
        await bob.emit("login", "bob")
        await bob.wait_for("loggedIn")
        await bob.emit("enterRoom", 1)
        self.assertEqual((await bob.wait_for("history"))["messages"], [])

    async def test_ids_never_collide_with_backend_connected_members(self):
        """A member the backend's Connect registered keeps its id; name logins get other ids."""
        from tests.support.http import http_request

        server = await self.start()
        await http_request(server.url("/backend/Connect/chat/1/1"), headers=server.auth_header())
        alice = await self.browser()
        await alice.emit("login", "alice")
        self.assertNotEqual((await alice.wait_for("loggedIn"))["id"], 1)

    async def test_history_zero_sends_no_history(self):
        """With history 0 a newcomer gets no history event at all."""
        await self.start(history=0)
        alice = await self.login("alice")
        await alice.emit("message", {"content": "not kept for newcomers", "format": {}}, 1)
        await alice.wait_for("message")
        bob = await self.login("bob")
        await sleep(0.2)
        self.assertEqual(bob.received("history"), [])

    async def test_typing_flood_is_dropped_without_crowding_out_refusals(self):
        """
        Typing notifications have their own throttle (twice the message one); the excess is
        dropped without an answer, so the only refusal the sender sees is the message's, with the
        refused text in it (the page puts it back into the input box).
        """
        await self.start(network={"message_rate": 1, "message_burst": 2})
        alice = await self.login("alice")
        bob = await self.login("bob")
        for _ in range(8):
            await alice.emit("userStartedTyping", 1)
        await bob.wait_for("userStartedTyping", count=4)
        for number in range(3):
            await alice.emit("message", {"content": f"m{number}\nline two", "format": {}}, 1)
        refused = await alice.wait_for("refused")
        self.assertEqual(refused["error"], "rate_limited")
        self.assertEqual(refused["content"], "m2\nline two")
        await alice.wait_for("message", count=2)
        await sleep(0.3)
        self.assertEqual(len(alice.received("refused")), 1)
        self.assertEqual(len(bob.received("userStartedTyping")), 4)

    async def test_leave_takes_the_member_out_at_once(self):
        """
        ``leave`` skips the disconnect grace (here 60 s): the others get the userlist without the
        member and a ``disconnected`` notice, the name is free, the socket is disconnected.
        """
        await self.start(grace=60.0)
        alice = await self.login("alice")
        bob = await self.login("bob")
        await wait_until(lambda: len(alice.payloads("userlist")[-1]["users"]) == 2)
        await bob.emit("leave")
        await alice.wait_for("notice", "disconnected")
        await wait_until(lambda: [u["username"] for u in alice.payloads("userlist")[-1]["users"].values()]
                         == ["alice"])
        other = await self.browser()
        await other.emit("login", "bob")
        await other.wait_for("loggedIn")
        await wait_until(lambda: bob.disconnected.is_set())

    async def test_a_lost_connection_keeps_the_grace(self):
        """Without ``leave`` the member stays listed during the grace (a network hiccup)."""
        await self.start(grace=60.0)
        alice = await self.login("alice")
        bob = await self.login("bob")
        await wait_until(lambda: len(alice.payloads("userlist")[-1]["users"]) == 2)
        await bob.close()
        stranger = await self.browser()
        await stranger.emit("login", "bob")
        self.assertEqual((await stranger.wait_for("loginFailed"))["error"], "name_taken")
        self.assertEqual([p for p in alice.payloads("notice") if p["content"] == "disconnected"], [])

    async def test_rename_reaches_every_page_and_frees_the_old_name(self):
        """``rename`` changes the name for everyone (``renamed``), in the userlist and messages."""
        await self.start()
        alice = await self.login("alice")
        bob = await self.login("bob")
        await bob.emit("rename", "Robert")
        renamed = await alice.wait_for("renamed")
        self.assertEqual(renamed["username"], "Robert")
        self.assertEqual(renamed["id"], bob.payloads("loggedIn")[0]["id"])
        await bob.wait_for("renamed")
        await bob.emit("message", {"content": "new name", "format": {}}, 1)
        message = await alice.wait_for("message")
        self.assertEqual(message["from"]["username"], "Robert")
        carol = await self.login("bob")
        self.assertTrue(carol.payloads("loggedIn"))
        await carol.emit("enterRoom", 1)
        await wait_until(lambda: "Robert" in [u["username"] for u in carol.payloads("userlist")[-1]["users"].values()])

    async def test_rename_to_a_taken_or_invalid_name_is_refused(self):
        """A taken name (any case) or an invalid one gets ``refused``; a case change of one's own works."""
        await self.start()
        await self.login("alice")
        bob = await self.login("bob")
        await bob.emit("rename", "ALICE")
        refused = await bob.wait_for("refused")
        self.assertEqual(refused["error"], "name_taken")
        await bob.emit("rename", "b\u200bob")
        self.assertEqual((await bob.wait_for("refused", count=2))["error"], "invalid_name")
        await bob.emit("rename", "Bob")
        self.assertEqual((await bob.wait_for("renamed"))["username"], "Bob")
