"""
End-to-end tests of the ILIAS repository chat: PHP's HTTP calls with Basic auth, then browsers on
real sockets (python-socketio), against a whole server on a fresh ILIAS-shaped database.

Every scenario runs twice: on the real MariaDB server and on SQLite.
"""

from __future__ import annotations

import json
import re
import time

import websocket
from twisted.internet import threads
from twisted.trial import unittest

from tests.ilias.repository_support import (
    E2E_GRACE,
    RepositoryServerMixin,
    database_dict,
    sleep,
    wait_until,
)
from tests.support.db import insert_rows_async, make_database
from tests.support.server import start_server

#: The notice keys ILIAS 10's room page can show (its ``lang`` table, tpl.chatroom.html); any other
#: ``content`` is shown as "-content-".
ILIAS_NOTICE_KEYS = frozenset({
    "welcome_to_chat", "connect", "disconnected", "left", "user_invited", "user_kicked",
    "user_invited_self", "private_room_closed", "private_room_entered", "private_room_left",
    "private_room_entered_user", "kicked_from_private_room", "history_has_been_cleared",
})

class TwoUsersScenarioMixin(RepositoryServerMixin):
    """The flow of spec §10.2: Bob observes, Alice enters, talks, types, whispers, leaves."""

    async def test_two_users_enter_talk_type_whisper(self) -> None:
        """Every frame of §10.2 arrives with the fields and roomId types of ILIAS 10."""
        await self.start()
        bob = await self.enter(7, "bob", False)
        await bob.wait_for("notice", "welcome_to_chat")
        self.assertEqual(bob.names(), ["loggedIn", "private_room_entered", "userlist",
                                       "notice:welcome_to_chat"])
        entered = bob.payloads("private_room_entered")[0]
        self.assertTimestampMs(entered["timestamp"])
        self.assertEqual(entered, {"type": "private_room_entered",
                                   "timestamp": entered["timestamp"],
                                   "content": "private_room_entered", "roomId": 1,
                                   "subscriber": {"id": 7, "username": "bob"}})
        self.assertEqual(bob.payloads("userlist")[0]["users"],
                         {"7": {"id": 7, "username": "bob", "profile_picture_visible": False}})
        welcome = bob.payloads("notice")[0]
        self.assertEqual(welcome, {"type": "notice", "timestamp": welcome["timestamp"],
                                   "content": "welcome_to_chat", "roomId": 1,
                                   "data": {"id": 7, "username": "bob", "title": "Main"}})
        bob.clear()

        await sleep(0.2)  # outside bob's userlist window: the §10.2 order exactly
        alice = await self.enter(6, "alice", True)
        await alice.wait_for("notice", "welcome_to_chat")
        self.assertEqual(alice.names(), ["loggedIn", "private_room_entered", "userlist",
                                         "notice:welcome_to_chat"])
        both = {"6": {"id": 6, "username": "alice", "profile_picture_visible": True},
                "7": {"id": 7, "username": "bob", "profile_picture_visible": False}}
        userlist = alice.payloads("userlist")[0]
        self.assertEqual(userlist, {"type": "userlist", "timestamp": userlist["timestamp"],
                                    "content": "userlist", "roomId": 1, "users": both})
        self.assertEqual(list(userlist["users"]), ["6", "7"])
        await bob.wait_for("notice", "connect")
        self.assertEqual(bob.names(), ["userlist", "notice:connect"])
        self.assertEqual(bob.payloads("userlist")[0]["users"], both)
        connect = bob.payloads("notice")[0]
        self.assertEqual(connect["data"], {"id": 6, "username": "alice", "title": "Main"})
        self.assertEqual(connect["roomId"], 1)
        alice.clear()
        bob.clear()

        await alice.emit("message", {"content": "hello", "format": {}}, 1)
        message = await bob.wait_for("message")
        await alice.wait_for("message")
        self.assertTimestampMs(message["timestamp"])
        self.assertEqual(message, {"type": "message", "timestamp": message["timestamp"],
                                   "content": "hello", "roomId": 1,
                                   "from": {"id": 6, "username": "alice",
                                            "profile_picture_visible": True},
                                   "format": {}})
        self.assertEqual(alice.payloads("message")[0], message)

        await alice.emit("userStartedTyping", 1)
        started = await bob.wait_for("userStartedTyping")
        self.assertEqual(started, {"type": "user_started_typing",
                                   "timestamp": started["timestamp"],
                                   "content": "user_started_typing", "roomId": 1,
                                   "subscriber": '{"id":6,"username":"alice"}'})
        await alice.emit("userStoppedTyping", 1)
        stopped = await bob.wait_for("userStoppedTyping")
        self.assertEqual(stopped["type"], "user_stopped_typing")
        self.assertEqual(stopped["subscriber"], '{"id":6,"username":"alice"}')

        carol = await self.enter(8, "carol")
        await carol.wait_for("notice", "welcome_to_chat")
        target = {"username": "bob", "id": 7, "public": 0}
        await alice.emit("message", {"content": "psst", "format": {}, "target": target}, 1)
        whisper = await bob.wait_for("message", "psst")
        self.assertEqual(whisper["target"], target)
        self.assertEqual(whisper["from"]["id"], 6)
        await alice.wait_for("message", "psst")
        # Alice's typing never reached Alice, the whisper never reached Carol.
        self.assertEqual(alice.received("userStartedTyping"), [])
        await carol.emit("message", {"content": "after", "format": {}}, 1)
        await carol.wait_for("message", "after")
        self.assertEqual(carol.payloads("message", "psst"), [])

        rows = await self._history_rows(3)
        self.assertEqual([r["room_id"] for r in rows], [1, 1, 1])
        stored = json.loads(rows[0]["message"])
        self.assertEqual(stored, dict(message, timestamp=message["timestamp"] // 1000))
        self.assertEqual(rows[0]["timestamp"], message["timestamp"] // 1000)
        self.assertEqual(rows[0]["message"],
                         '{"type":"message","timestamp":%d,"content":"hello","roomId":1,'
                         '"from":{"id":6,"username":"alice","profile_picture_visible":true},'
                         '"format":{}}' % (message["timestamp"] // 1000))
        self.assertEqual(json.loads(rows[1]["message"])["target"], target)
        self.assertEqual(rows[0]["hist_id"] + 1, rows[1]["hist_id"])

    async def _history_rows(self, count: int) -> list:
        deadline = time.monotonic() + 10
        while True:
            rows = await self.history()
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await sleep(0.05)

    async def test_disconnect_grace_moves_rows_to_sessions(self) -> None:
        """After the grace the room hears userlist + disconnected (string roomId), rows move."""
        await self.start()
        bob = await self.enter(7, "bob")
        alice = await self.enter(6, "alice", True)
        await bob.wait_for("notice", "connect")
        await sleep(0.2)
        bob.clear()
        started = time.monotonic()
        await alice.close()
        notice = await bob.wait_for("notice", "disconnected", timeout=10)
        self.assertGreaterEqual(time.monotonic() - started, E2E_GRACE * 0.9)
        self.assertEqual(bob.names(), ["userlist", "notice:disconnected"])
        userlist = bob.payloads("userlist")[0]
        self.assertEqual(userlist["roomId"], "1")
        self.assertEqual(userlist["users"],
                         {"7": {"id": 7, "username": "bob", "profile_picture_visible": False}})
        self.assertEqual(notice, {"type": "notice", "timestamp": notice["timestamp"],
                                  "content": "disconnected", "roomId": "1",
                                  "data": {"username": "alice"}})
        for _ in range(200):
            sessions = await self.rows("SELECT * FROM chatroom_sessions WHERE user_id = 6")
            if sessions:
                break
            await sleep(0.05)
        self.assertEqual(len(sessions), 1)
        self.assertEqual(sessions[0]["room_id"], 1)
        self.assertEqual(sessions[0]["userdata"], '{"login":"alice","id":6}')
        self.assertLessEqual(sessions[0]["connected"], sessions[0]["disconnected"])
        users = await self.rows("SELECT user_id FROM chatroom_users ORDER BY user_id")
        self.assertEqual([u["user_id"] for u in users], [7])
        # Alice was forgotten: her old id cannot log in again without PHP's Connect.
        again = await self.browser()
        await again.emit("login", "alice", 6, True)
        await again.wait_for("shutdown")

    async def test_second_tab_keeps_the_user_in(self) -> None:
        """Closing one of two tabs does not remove the user, even long after the grace."""
        await self.start()
        bob = await self.enter(7, "bob")
        alice1 = await self.enter(6, "alice")
        alice2 = await self.browser()
        await alice2.emit("login", "alice", 6, False)
        await alice2.wait_for("loggedIn")
        await alice2.emit("enterRoom", 1)
        await alice2.wait_for("private_room_entered")
        await sleep(0.2)
        self.assertEqual(alice2.payloads("notice", "welcome_to_chat"), [])
        bob.clear()
        await alice1.close()
        await sleep(E2E_GRACE * 3)
        self.assertEqual(bob.payloads("notice", "disconnected"), [])
        rooms = (await self.php("GetRooms")).json()
        self.assertEqual([u["id"] for u in rooms["rooms"]["1_0"]["users"]], [6, 7])
        await alice2.emit("message", {"content": "still here", "format": {}}, 1)
        await bob.wait_for("message", "still here")
        await alice2.close()
        await bob.wait_for("notice", "disconnected")


class ModerationScenarioMixin(RepositoryServerMixin):
    """Kick, ban, clear, leave and invite as PHP sends them."""

    async def test_kick_removes_the_user_from_the_room(self) -> None:
        """The kicked sockets get userjustkicked + notice, then nothing more from the room."""
        alice, bob = await self.alice_and_bob_in_room()
        response = await self.php("Kick", 1, 7)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.json(), {"success": True})
        kicked = await bob.wait_for("userjustkicked")
        self.assertEqual(kicked, {"type": "userjustkicked", "timestamp": kicked["timestamp"],
                                  "content": "userjustkicked", "roomId": 1})
        notice = await bob.wait_for("notice", "kicked_from_private_room")
        self.assertEqual(notice["data"], {"title": "Main"})
        user_kicked = await alice.wait_for("notice", "user_kicked")
        self.assertEqual(user_kicked["data"], {"user": "bob"})
        self.assertEqual(alice.payloads("userlist")[-1]["users"],
                         {"6": {"id": 6, "username": "alice", "profile_picture_visible": False}})
        await alice.emit("message", {"content": "bye bob", "format": {}}, 1)
        await alice.wait_for("message", "bye bob")
        await bob.emit("message", {"content": "let me in", "format": {}}, 1)
        await sleep(0.3)
        self.assertEqual(bob.names(), ["userjustkicked", "notice:kicked_from_private_room"])
        self.assertEqual(alice.payloads("message", "let me in"), [])
        # Kick does not touch the database (PHP does).
        users = await self.rows("SELECT user_id FROM chatroom_users ORDER BY user_id")
        self.assertEqual([u["user_id"] for u in users], [6, 7])
        # A user who is not in the chat can still be kicked (PHP needs the success).
        self.assertEqual((await self.php("Kick", 1, 999)).json(), {"success": True})

    async def test_ban_removes_and_logs_out(self) -> None:
        """The banned socket gets userjustbanned with no payload and can no longer act."""
        alice, bob = await self.alice_and_bob_in_room()
        self.assertEqual((await self.php("Ban", 1, 7)).json(), {"success": True})
        await bob.wait_for("userjustbanned")
        self.assertEqual(bob.received("userjustbanned"), [("userjustbanned", ())])
        notice = await alice.wait_for("notice", "user_kicked")
        self.assertEqual(notice["roomId"], "1")
        self.assertEqual(notice["data"], {"user": "bob"})
        await bob.emit("message", {"content": "spam", "format": {}}, 1)
        await bob.emit("enterRoom", 1)
        await sleep(0.3)
        self.assertEqual(bob.names(), ["userjustbanned"])
        self.assertEqual(alice.payloads("message"), [])
        self.assertEqual((await self.php("Ban", 1, 999)).json(), {"success": True})

    async def test_clear_messages(self) -> None:
        """ClearMessages sends clear and a data-less notice to the room."""
        await self.start()
        bob = await self.enter(7, "bob")
        bob.clear()
        self.assertEqual((await self.php("ClearMessages", 1, 7)).json(), {"success": True})
        clear = await bob.wait_for("clear")
        self.assertEqual(clear, {"type": "clear", "timestamp": clear["timestamp"],
                                 "content": "history_has_been_cleared", "roomId": 1})
        notice = await bob.wait_for("notice", "history_has_been_cleared")
        self.assertEqual(notice, {"type": "notice", "timestamp": notice["timestamp"],
                                  "content": "history_has_been_cleared", "roomId": 1})

    async def test_leave_and_invite(self) -> None:
        """LeavePrivateRoom and InvitePrivateRoom reach the right sockets."""
        alice, bob = await self.alice_and_bob_in_room()
        self.assertEqual((await self.php("LeavePrivateRoom", 1, 7)).json(), {"success": True})
        await bob.wait_for("notice", "left")
        left = await alice.wait_for("notice", "private_room_left")
        self.assertEqual(left["data"], {"user": "bob", "title": "Main"})
        self.assertEqual((await self.php("InvitePrivateRoom", 2, 6, 7)).json(), {"success": True})
        invited = await bob.wait_for("user_invited")
        self.assertEqual(invited, {"type": "user_invited", "timestamp": invited["timestamp"],
                                   "content": "user_invited", "roomId": 2, "title": "Main",
                                   "owner": None})
        self_notice = await bob.wait_for("notice", "user_invited_self")
        self.assertEqual(self_notice["data"], {"user": "alice", "room": "Main"})
        await alice.wait_for("notice", "user_invited")


class BackendActionsMixin(RepositoryServerMixin):
    """The backend bodies PHP checks, the ILIAS 8 URL forms and the error answers."""

    async def test_success_bodies_and_errors(self) -> None:
        """Exact success bodies; 404 JSON for unknown rooms and users; 400 for bad ids."""
        await self.start()
        self.assertEqual((await self.php("Connect", 1, 6)).json(), {"status": 200})
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 6)).json(), {"success": True})
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 0, 6)).json(),
                         {"success": True, "subRoomId": 0})
        response = await self.php("EnterPrivateRoom", 99, 6)
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json()["status"], 404)
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 12345)).code, 404)
        self.assertEqual((await self.php("EnterPrivateRoom", 1, "abc")).code, 400)
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 3, 6)).code, 404)
        self.assertEqual((await self.php("Kick", 99, 6)).code, 404)
        self.assertEqual((await self.php("Ban", 99, 6)).code, 404)
        self.assertEqual((await self.php("ClearMessages", 99, 6)).code, 404)
        self.assertEqual((await self.php("LeavePrivateRoom", 1, 999)).code, 404)
        self.assertEqual((await self.php("Kick", 1, 0, 6)).json(),
                         {"success": True, "subRoomId": 0})
        self.assertEqual((await self.php("Post", 1)).json(), {"success": True})
        self.assertEqual((await self.php("Connect", 1, 6, auth=False)).code, 403)

        title = "Neuer%20Raum%20%C3%A4%20%F0%9F%8E%89"
        self.assertEqual((await self.php("CreatePrivateRoom", 5, 6, title)).json(),
                         {"success": True})
        self.assertEqual((await self.php("CreatePrivateRoom", 1, 6, "Other")).json(),
                         {"success": True})
        self.assertEqual((await self.php("CreatePrivateRoom", 6, 0, 6, "Eight")).json(),
                         {"success": True, "subRoomId": 0})
        rooms = (await self.php("GetRooms")).json()["rooms"]
        self.assertEqual(sorted(rooms), ["1_0", "2_0", "5_0", "6_0"])
        self.assertEqual(rooms["1_0"], {"id": 1, "title": "Main", "owner": None, "users": []})
        self.assertEqual(rooms["5_0"]["title"], "Neuer Raum \u00e4 \U0001f389")
        self.assertEqual(rooms["5_0"]["owner"], "6")

        # A room created at run time works for a browser.
        self.assertEqual((await self.php("EnterPrivateRoom", 5, 6)).json(), {"success": True})
        alice = await self.browser()
        await alice.emit("login", "alice", 6, False)
        await alice.wait_for("loggedIn")
        await alice.emit("enterRoom", 5)
        welcome = await alice.wait_for("notice", "welcome_to_chat")
        self.assertEqual(welcome["data"]["title"], "Neuer Raum \u00e4 \U0001f389")
        rooms = (await self.php("GetRooms")).json()["rooms"]
        self.assertEqual(rooms["5_0"]["users"],
                         [{"id": 6, "username": "alice", "profile_picture_visible": False}])

    async def test_default_components_serve_the_repository_chat(self) -> None:
        """With the service's own component list (OSC beside it) the room chat works."""
        db = make_database(self, self.database_kind)
        await insert_rows_async(db, "chatroom_settings", [{"room_id": 3}])
        self.databases = {"onscreen": db}
        self.browsers = []
        self.addCleanup(self._close_browsers)
        self.server = await start_server(self, clients=[{"name": "onscreen",
                                                         "database": database_dict(db)}])
        rooms = (await self.php("GetRooms")).json()
        self.assertEqual(rooms, {"rooms": {"3_0": {"id": 3, "title": "Main", "owner": None,
                                                    "users": []}}})
        bob = await self.enter(7, "bob", room=3)
        await bob.emit("message", {"content": "hi", "format": {}}, 3)
        message = await bob.wait_for("message")
        self.assertEqual(message["roomId"], 3)

    async def test_login_for_unknown_id_is_shut_down(self) -> None:
        """A login for an id PHP never connected gets shutdown and is disconnected."""
        await self.start()
        mallory = await self.browser()
        await mallory.emit("login", "mallory", 666, False)
        await mallory.wait_for("shutdown")
        await wait_until(mallory.disconnected.is_set, 5, "disconnect")
        self.assertEqual(mallory.names(), ["shutdown"])

    async def test_bad_input_is_refused_and_server_keeps_serving(self) -> None:
        """Wrong types, unknown rooms and events before login do nothing; others go on."""
        await self.start()
        bob = await self.enter(7, "bob")
        rogue = await self.browser()
        await rogue.emit("message", {"content": "before login", "format": {}}, 1)
        await rogue.emit("enterRoom", 1)
        await rogue.emit("userStartedTyping", 1)
        await rogue.emit("login")
        await rogue.emit("login", {"x": 1}, [7])
        await rogue.emit("login", "bob", True)
        await rogue.emit("login", "bob", "7; DROP TABLE")
        await rogue.emit("login", "b" * 256, 7, False)
        await sleep(0.2)
        self.assertEqual(rogue.names(), [])
        alice = await self.enter(6, "alice")
        await alice.emit("enterRoom", 9999)
        await alice.emit("enterRoom", "x")
        await alice.emit("enterRoom")
        await alice.emit("message", "not an object", 1)
        await alice.emit("message", {"content": 5, "format": {}}, 1)
        await alice.emit("message", {"content": "x", "format": "y"}, 1)
        await alice.emit("message", {"content": "x", "format": {}}, 2)
        await alice.emit("message", {"content": "x", "format": {},
                                     "target": {"id": 424242, "public": 0}}, 1)
        await alice.emit("message", {"content": "x", "format": {}, "target": "bob"}, 1)
        await alice.emit("userStartedTyping", 2)
        await alice.emit("message", {"content": "ok", "format": {}}, 1)
        await bob.wait_for("message", "ok")
        self.assertEqual([p["content"] for p in bob.payloads("message")], ["ok"])

    async def test_non_utf8_frame_costs_only_that_connection(self) -> None:
        """Invalid UTF-8 in a text frame closes that websocket; the room goes on."""
        await self.start()
        bob = await self.enter(7, "bob")

        def rogue() -> str:
            ws = websocket.create_connection(
                self.server.base_url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket",
                timeout=5)
            try:
                ws.recv()  # the Engine.IO open packet
                ws.send("40/onscreen,")
                ws.recv()  # the namespace CONNECT answer
                ws.send('42/onscreen,["login","bob",7,false]')
                ws.recv()  # loggedIn: a valid login as bob
                ws.send(b'42/onscreen,["message",{"content":"\xff\xfe","format":{}},1]',
                        opcode=websocket.ABNF.OPCODE_TEXT)
                try:
                    while True:
                        frame = ws.recv_data_frame(True)[1]
                        if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                            return "closed"
                except (websocket.WebSocketConnectionClosedException, OSError):
                    return "closed"
            finally:
                ws.close()

        self.assertEqual(await threads.deferToThread(rogue), "closed")
        alice = await self.enter(6, "alice")
        await alice.emit("message", {"content": "still serving", "format": {}}, 1)
        await bob.wait_for("message", "still serving")
        self.assertEqual([p["content"] for p in bob.payloads("message")], ["still serving"])

    async def test_messages_up_to_the_column_are_stored_longer_ones_refused_legibly(self) -> None:
        """
        Every message whose row fits ``chatroom_history.message`` (4,000 characters of JSON) is
        delivered and stored whole; a longer one (ILIAS's textarea has no maxlength) is refused
        with a message from "Chat" that says how much fits, never with a notice: the ILIAS page
        shows a notice's ``content`` through its language entries, "-key-" for any other.
        """
        await self.start()
        alice = await self.enter(6, "alice")
        bob = await self.enter(7, "bob")
        await alice.emit("message", {"content": "x" * 3990, "format": {}}, 1)
        refusal = await alice.wait_for("message")
        self.assertEqual(refusal["from"], {"id": 0, "username": "Chat",
                                           "profile_picture_visible": False})
        self.assertNotIn("target", refusal)
        match = re.fullmatch(r"Your message of 3,990 characters is too long for the chat history: it"
                             r" was not delivered\. At most ([\d,]+) characters fit\. Please send it"
                             r" in several shorter messages\.", refusal["content"])
        self.assertIsNotNone(match, refusal["content"])
        fits = int(match.group(1).replace(",", ""))
        self.assertGreater(fits, 3700)
        # Exactly what fits arrives and is stored whole (MariaDB's strict mode would refuse more).
        await alice.emit("message", {"content": "y" * fits, "format": {}}, 1)
        await bob.wait_for("message")
        await alice.emit("message", {"content": "z" * (fits + 1), "format": {}}, 1)
        await alice.wait_for("message", count=3)
        self.assertIn(f"of {fits + 1:,} characters", alice.payloads("message")[2]["content"])
        await alice.emit("message", {"content": "Party \U0001f389 \u00fcber \u4e2d\u6587",
                                     "format": {}}, 1)
        await bob.wait_for("message", count=2)
        self.assertEqual([p["content"] for p in bob.payloads("message")],
                         ["y" * fits, "Party \U0001f389 \u00fcber \u4e2d\u6587"])
        for page in (alice, bob):
            self.assertLessEqual({p["content"] for p in page.payloads("notice")},
                                 ILIAS_NOTICE_KEYS)
        for _ in range(200):
            rows = await self.history()
            if len(rows) == 2:
                break
            await sleep(0.05)
        self.assertEqual(len(rows), 2)
        self.assertEqual(len(rows[0]["message"]), 4000)
        self.assertEqual(json.loads(rows[0]["message"])["content"], "y" * fits)
        self.assertIn('"content":"Party \U0001f389 \u00fcber \u4e2d\u6587"', rows[1]["message"])


class RestartAndClientsMixin(RepositoryServerMixin):
    """History survives a restart; two ILIAS clients in one process share nothing."""

    client_names = ("alpha", "beta")

    async def test_restart_keeps_history(self) -> None:
        """After a restart the history is still there and new ids continue after it."""
        await self.start()
        alice = await self.enter(6, "alice", client="alpha")
        await alice.emit("message", {"content": "before restart", "format": {}}, 1)
        await alice.wait_for("message")
        await self.server.stop()
        before = await self.history(client="alpha")
        self.assertEqual([json.loads(r["message"])["content"] for r in before],
                         ["before restart"])
        sessions = await self.rows("SELECT user_id FROM chatroom_sessions", client="alpha")
        self.assertEqual([s["user_id"] for s in sessions], [6])
        self.server = await self.start_on(self.databases)
        alice = await self.enter(6, "alice", client="alpha")
        await alice.emit("message", {"content": "after restart", "format": {}}, 1)
        await alice.wait_for("message")
        for _ in range(200):
            rows = await self.history(client="alpha")
            if len(rows) == 2:
                break
            await sleep(0.05)
        self.assertEqual([json.loads(r["message"])["content"] for r in rows],
                         ["before restart", "after restart"])
        self.assertGreater(rows[1]["hist_id"], rows[0]["hist_id"])

    async def test_two_clients_do_not_leak(self) -> None:
        """The same user id on two clients: separate members, rooms, history, grace."""
        await self.start()
        a_bob = await self.enter(7, "bob-alpha", client="alpha")
        b_bob = await self.enter(7, "bob-beta", client="beta")
        a_alice = await self.enter(6, "alice-alpha", client="alpha")
        await a_alice.emit("message", {"content": "alpha only", "format": {}}, 1)
        await a_bob.wait_for("message", "alpha only")
        self.assertEqual(b_bob.payloads("userlist")[-1]["users"],
                         {"7": {"id": 7, "username": "bob-beta",
                                "profile_picture_visible": False}})
        # Credentials of one client do not work for the other.
        response = await self.php("Connect", 1, 6, client="beta")
        self.assertEqual(response.code, 200)
        from tests.support.http import http_request
        wrong = await http_request(self.server.url("/backend/Connect/beta/1/6"),
                                   headers=self.server.auth_header("alpha"))
        self.assertEqual(wrong.code, 403)
        # Disconnecting bob on alpha does not touch bob on beta.
        await a_bob.close()
        await a_alice.wait_for("notice", "disconnected")
        await sleep(E2E_GRACE)
        self.assertEqual(b_bob.payloads("notice", "disconnected"), [])
        beta_rooms = (await self.php("GetRooms", client="beta")).json()["rooms"]
        self.assertEqual([u["username"] for u in beta_rooms["1_0"]["users"]], ["bob-beta"])
        await sleep(0.2)
        self.assertEqual(await self.history(client="beta"), [])
        self.assertEqual(len(await self.history(client="alpha")), 1)
        self.assertEqual(b_bob.payloads("message"), [])


class TwoUsersMariaDBTests(TwoUsersScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class TwoUsersSQLiteTests(TwoUsersScenarioMixin, unittest.TestCase):
    database_kind = "sqlite"


class ModerationMariaDBTests(ModerationScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class ModerationSQLiteTests(ModerationScenarioMixin, unittest.TestCase):
    database_kind = "sqlite"


class BackendActionsMariaDBTests(BackendActionsMixin, unittest.TestCase):
    database_kind = "mysql"


class BackendActionsSQLiteTests(BackendActionsMixin, unittest.TestCase):
    database_kind = "sqlite"


class RestartAndClientsMariaDBTests(RestartAndClientsMixin, unittest.TestCase):
    database_kind = "mysql"


class RestartAndClientsSQLiteTests(RestartAndClientsMixin, unittest.TestCase):
    database_kind = "sqlite"
