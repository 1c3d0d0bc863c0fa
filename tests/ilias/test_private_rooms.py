"""
End-to-end tests of ILIAS 8 private rooms (``subRoomId``): PHP's ILIAS 8 URLs
(``class.ilChatroomServerConnector.php`` of ILIAS 8) with Basic auth, browsers running the ILIAS 8
socket calls (python-socketio), on a database with the ILIAS 8 tables, MariaDB and SQLite.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict

from twisted.trial import unittest

from ilchat.store import StoreError
from tests.ilias.repository_support import Browser, RepositoryServerMixin, sleep, wait_until
from tests.ilias.test_restart import AdmissionsFileMixin
from tests.support.db import create_ilias8_tables, insert_rows_async, make_database

SIDE = {"proom_id": 5, "parent_id": "1", "title": "Side", "owner": 6, "created": 0, "closed": 0}


def without_timestamp(payload: Dict[str, Any]) -> Dict[str, Any]:
    return {key: value for key, value in payload.items() if key != "timestamp"}


class PrivateRoomsServerMixin(RepositoryServerMixin):
    """A server on a database with the ILIAS 8 tables, and ILIAS 8's page as PHP renders it."""

    ilias8_tables = True

    async def start(self) -> Any:
        self.databases = {}
        db = make_database(self, self.database_kind)
        await insert_rows_async(db, "chatroom_settings", [{"room_id": 1}, {"room_id": 2}])
        if self.ilias8_tables:
            create_ilias8_tables(db)
            # One open private room PHP made before the start, one closed long ago.
            await insert_rows_async(db, "chatroom_prooms", [
                {"proom_id": 3, "parent_id": "1", "title": "Old", "owner": 7, "created": 0,
                 "closed": 0},
                {"proom_id": 4, "parent_id": "1", "title": "Gone", "owner": 7, "created": 0,
                 "closed": 1795301000},
            ])
        self.databases[self.client_names[0]] = db
        self.server = await self.start_on(self.databases)
        self.browsers = []
        self.addCleanup(self._close_browsers)
        return self.server

    async def enter8(self, user_id: int, login: str) -> Browser:
        """ILIAS 8's page: Connect, the chatroom_users row, EnterPrivateRoom/1/0, enterRoom(1, 0)."""
        self.assertEqual((await self.php("Connect", 1, user_id)).json(), {"status": 200})
        await insert_rows_async(self.databases[self.client_names[0]], "chatroom_users", [{
            "room_id": 1, "user_id": user_id,
            "userdata": json.dumps({"login": login, "id": user_id}, separators=(",", ":")),
            "connected": int(time.time()),
        }])
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 0, user_id)).json(),
                         {"success": True, "subRoomId": 0})
        browser = await self.browser()
        await browser.emit("login", login, user_id)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1, 0)
        await browser.wait_for("notice", "welcome_to_chat")
        return browser

    async def enter_private(self, browser: Browser, user_id: int, sub: int) -> None:
        """PHP admits the user (and writes chatroom_psessions), then the page enters."""
        self.assertEqual((await self.php("EnterPrivateRoom", 1, sub, user_id)).json(),
                         {"success": True, "subRoomId": sub})
        await insert_rows_async(self.databases[self.client_names[0]], "chatroom_psessions", [
            {"proom_id": sub, "user_id": user_id, "connected": int(time.time()),
             "disconnected": 0}])
        await browser.emit("enterRoom", 1, sub)
        await wait_until(lambda: [p for p in browser.payloads("private_room_entered")
                                  if p.get("subRoomId") == sub], what="private_room_entered")

    async def _history(self, count: int, types: tuple = ("message",)) -> list:
        """The first C{count} rows of these types (ILIAS 8 also stores notices), in id order."""
        deadline = time.monotonic() + 10
        while True:
            rows = [r for r in await self.rows(
                "SELECT hist_id, room_id, sub_room, message, timestamp FROM chatroom_history"
                " ORDER BY hist_id") if json.loads(r["message"])["type"] in types]
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            await sleep(0.05)


class PrivateRoomsMixin(PrivateRoomsServerMixin):
    """ILIAS 8's private-room flow, every frame with its ``subRoomId``."""

    async def test_private_room_life(self) -> None:
        """Create, enter, talk, type, invite, leave, clear, delete: ILIAS 8's frames and rows."""
        await self.start()
        alice = await self.enter8(6, "alice")
        entered = alice.payloads("private_room_entered")[0]
        self.assertEqual(without_timestamp(entered), {
            "type": "private_room_entered", "content": "private_room_entered", "roomId": 1,
            "subRoomId": 0, "subscriber": {"id": 6, "username": "alice"}})
        self.assertEqual(list(entered), ["type", "timestamp", "content", "roomId", "subRoomId",
                                         "subscriber"])
        bob = await self.enter8(7, "bob")
        await sleep(0.2)
        alice.clear()
        bob.clear()

        # PHP (ilChatroom::addPrivateRoom) writes the row, then tells the server.
        await insert_rows_async(self.databases[self.client_names[0]], "chatroom_prooms", [SIDE])
        self.assertEqual((await self.php("CreatePrivateRoom", 1, 5, 6, "Side")).json(),
                         {"success": True, "subRoomId": 5})
        created = await alice.wait_for("private_room_created")
        self.assertEqual(without_timestamp(created), {
            "type": "private_room_created", "content": "private_room_created", "roomId": 1,
            "subRoomId": 5, "title": "Side", "ownerId": "6"})
        self.assertEqual(bob.received("private_room_created"), [])

        await self.enter_private(alice, 6, 5)
        welcome = await alice.wait_for("notice", "private_room_entered")
        self.assertEqual(without_timestamp(welcome), {
            "type": "notice", "content": "private_room_entered", "roomId": 1, "subRoomId": 5,
            "data": {"id": 6, "username": "alice", "title": "Side"}})
        userlist = [p for p in alice.payloads("userlist") if p["subRoomId"] == 5][-1]
        self.assertEqual(userlist["users"],
                         {"6": {"id": 6, "username": "alice", "profile_picture_visible": False}})
        rooms = (await self.php("GetRooms")).json()["rooms"]
        self.assertEqual(sorted(rooms), ["1_0", "1_3", "1_5", "2_0"])
        self.assertEqual(rooms["1_5"]["subRoomId"], 5)
        self.assertEqual(rooms["1_3"]["title"], "Old")

        # An invitation to the private room (PHP writes chatroom_proomaccess itself).
        self.assertEqual((await self.php("InvitePrivateRoom", 1, 5, 6, 7)).json(),
                         {"success": True, "subRoomId": 5})
        invited = await bob.wait_for("user_invited")
        self.assertEqual(without_timestamp(invited), {
            "type": "user_invited", "content": "user_invited", "roomId": 1, "subRoomId": 5,
            "title": "Side", "owner": "6"})
        invited_self = await bob.wait_for("notice", "user_invited_self")
        self.assertEqual((invited_self["subRoomId"], invited_self["data"]),
                         (-1, {"user": "alice", "room": "Side"}))
        await alice.wait_for("notice", "user_invited")

        await self.enter_private(bob, 7, 5)
        joined = await alice.wait_for("notice", "private_room_entered_user")
        self.assertEqual((joined["subRoomId"], joined["data"]),
                         (5, {"id": 7, "username": "bob", "title": "Side"}))
        alice.clear()
        bob.clear()

        # Talk and type in the private room, and once in the main room.
        await bob.emit("message", {"content": "psst", "format": {}}, 1, 5)
        message = await alice.wait_for("message", "psst")
        self.assertEqual(without_timestamp(message), {
            "type": "message", "content": "psst", "roomId": 1, "subRoomId": 5,
            "from": {"id": 7, "username": "bob", "profile_picture_visible": False},
            "format": {}})
        # ILIAS 8's page inserts the text as HTML: it arrives (and is stored) escaped, as ILIAS 8.
        await bob.emit("message", {"content": '<b>hi</b> & "all" &amp;', "format": {}}, 1, 0)
        escaped = "&lt;b&gt;hi&lt;/b&gt; &amp; &quot;all&quot; &amp;"
        self.assertEqual((await alice.wait_for("message", escaped))["subRoomId"], 0)
        await bob.emit("userStartedTyping", 1, 5)
        typing = await alice.wait_for("userStartedTyping")
        self.assertEqual(without_timestamp(typing), {
            "type": "user_started_typing", "content": "user_started_typing", "roomId": 1,
            "subRoomId": 5, "subscriber": '{"id":7,"username":"bob"}'})
        self.assertEqual(bob.received("userStartedTyping"), [])
        rows = await self._history(2)
        self.assertEqual([(r["room_id"], r["sub_room"]) for r in rows], [(1, 5), (1, 0)])
        stored = json.loads(rows[0]["message"])
        self.assertEqual(stored, dict(message, timestamp=message["timestamp"] // 1000))

        # PHP's LeavePrivateRoom: bob is back in the main room, the private room hears it.
        self.assertEqual((await self.php("LeavePrivateRoom", 1, 5, 7)).json(),
                         {"success": True, "subRoomId": 5})
        left = await bob.wait_for("notice", "left")
        self.assertEqual((left["roomId"], left["subRoomId"]), (1, 0))
        main_list = await wait_until(lambda: [p for p in bob.payloads("userlist")
                                              if p["subRoomId"] == 0], what="main userlist")
        self.assertEqual(sorted(main_list[0]["users"]), ["6", "7"])
        private_left = await alice.wait_for("notice", "private_room_left")
        self.assertEqual((private_left["subRoomId"], private_left["data"]),
                         (5, {"user": "bob", "title": "Side"}))
        await bob.emit("message", {"content": "after leaving", "format": {}}, 1, 5)

        cleared = await self.php("ClearMessages", 1, 5, 6)
        self.assertEqual(cleared.json(), {"success": True, "subRoomId": 5})
        clear = await alice.wait_for("clear")
        self.assertEqual((clear["roomId"], clear["subRoomId"]), (1, 5))
        self.assertEqual(bob.received("clear"), [])

        # PHP's DeletePrivateRoom: the members hear it, the main room sees it closed.
        self.assertEqual((await self.php("DeletePrivateRoom", 1, 5, 6)).json(),
                         {"success": True, "subRoomId": 5})
        deleted = await alice.wait_for("private_room_deleted")
        self.assertEqual(without_timestamp(deleted), {
            "type": "private_room_deleted", "content": "private_room_deleted", "roomId": 1,
            "subRoomId": 5})
        await bob.wait_for("private_room_deleted")  # invited: a member still
        closed = await bob.wait_for("notice", "private_room_closed")
        self.assertEqual((closed["roomId"], closed["subRoomId"], closed["data"]),
                         (1, 0, {"title": "Side"}))
        self.assertNotIn("1_5", (await self.php("GetRooms")).json()["rooms"])
        self.assertEqual((await self.php("DeletePrivateRoom", 1, 5, 6)).code, 404)
        self.assertEqual((await self.php("DeletePrivateRoom", 1, 0, 6)).code, 404)
        alice.clear()
        await alice.emit("message", {"content": "into nothing", "format": {}}, 1, 5)
        await alice.emit("message", {"content": "still here", "format": {}}, 1, 0)
        await alice.wait_for("message", "still here")
        self.assertEqual(alice.payloads("message", "into nothing"), [])
        # Neither "after leaving" (bob was out) nor "into nothing" was stored.
        rows = await self._history(3)
        self.assertEqual([json.loads(r["message"])["content"] for r in rows],
                         ["psst", escaped, "still here"])

    async def test_connect_and_disconnected_notices_are_stored(self) -> None:
        """
        As ILIAS 8's EnterRoom and Disconnect (``addHistory``): each first entry's ``connect``
        (in a private room ``private_room_entered_user``) and each departure's ``disconnected``
        notice is a chatroom_history row with its sub_room, the notice as sent, in seconds.
        """
        await self.start()
        alice = await self.enter8(6, "alice")
        bob = await self.enter8(7, "bob")
        connect = await alice.wait_for("notice", "connect")
        await self.enter_private(alice, 6, 3)
        await bob.emit("message", {"content": "hello", "format": {}}, 1, 0)
        await alice.wait_for("message", "hello")
        await alice.close()
        gone = await bob.wait_for("notice", "disconnected")
        rows = await self._history(6, ("notice", "message"))
        stored = [json.loads(r["message"]) for r in rows]
        self.assertEqual([(r["room_id"], r["sub_room"], m["type"], m["content"])
                          for r, m in zip(rows[:4], stored)],
                         [(1, 0, "notice", "connect"), (1, 0, "notice", "connect"),
                          (1, 3, "notice", "private_room_entered_user"),
                          (1, 0, "message", "hello")])
        # Bob's connect is what alice got, the timestamp in seconds (as in the row's column).
        self.assertEqual(stored[1], dict(connect, timestamp=connect["timestamp"] // 1000))
        self.assertEqual(list(stored[1]), ["type", "timestamp", "content", "roomId", "subRoomId",
                                           "data"])
        self.assertEqual(rows[1]["timestamp"], stored[1]["timestamp"])
        self.assertEqual((stored[2]["roomId"], stored[2]["subRoomId"], stored[2]["data"]),
                         (1, 3, {"id": 6, "username": "alice", "title": "Old"}))
        # Alice's departures, one per room she was in, the ids strings (ILIAS 8 split "1_3").
        departures = {r["sub_room"]: m for r, m in zip(rows[4:], stored[4:])}
        self.assertEqual(departures[0], dict(gone, timestamp=gone["timestamp"] // 1000))
        self.assertEqual(
            {sub: (m["content"], m["roomId"], m["subRoomId"], m["data"])
             for sub, m in departures.items()},
            {0: ("disconnected", "1", "0", {"username": "alice"}),
             3: ("disconnected", "1", "3", {"username": "alice"})})
        self.assertEqual([r["room_id"] for r in rows[4:]], [1, 1])

    async def test_grace_ends_private_sessions_and_closes_the_room(self) -> None:
        """The last member gone from a preloaded private room: psessions ended, room closed."""
        await self.start()
        bob = await self.enter8(7, "bob")
        await self.enter_private(bob, 7, 3)
        await bob.close()

        async def ended() -> Any:
            rows = await self.rows("SELECT disconnected FROM chatroom_psessions WHERE user_id = 7")
            return rows and rows[0]["disconnected"] > 0

        deadline = time.monotonic() + 10
        while not await ended():
            self.assertLess(time.monotonic(), deadline, "chatroom_psessions never ended")
            await sleep(0.05)
        await sleep(0.2)
        closed = await self.rows("SELECT closed FROM chatroom_prooms WHERE proom_id = 3")
        self.assertGreater(closed[0]["closed"], 0)
        self.assertEqual(await self.rows("SELECT * FROM chatroom_users"), [])
        sessions = await self.rows("SELECT room_id, user_id FROM chatroom_sessions")
        self.assertEqual(sessions, [{"room_id": 1, "user_id": 7}])

    async def test_kick_and_ban_in_a_private_room(self) -> None:
        """Kick/1/3: out of the private room only; Ban/1/3: out of the main room too."""
        await self.start()
        alice = await self.enter8(6, "alice")
        bob = await self.enter8(7, "bob")
        await self.enter_private(alice, 6, 3)
        await self.enter_private(bob, 7, 3)
        await sleep(0.2)
        alice.clear()
        bob.clear()
        self.assertEqual((await self.php("Kick", 1, 3, 7)).json(), {"success": True, "subRoomId": 3})
        kicked = await bob.wait_for("userjustkicked")
        self.assertEqual(without_timestamp(kicked), {
            "type": "userjustkicked", "content": "userjustkicked", "roomId": 1, "subRoomId": 3})
        notice = await bob.wait_for("notice", "kicked_from_private_room")
        self.assertEqual((notice["subRoomId"], notice["data"]), (0, {"title": "Old"}))
        user_kicked = await alice.wait_for("notice", "user_kicked")
        self.assertEqual((user_kicked["subRoomId"], user_kicked["data"]), (3, {"user": "bob"}))
        await bob.emit("message", {"content": "main still", "format": {}}, 1, 0)
        await alice.wait_for("message", "main still")
        await bob.emit("enterRoom", 1, 3)  # not admitted any more: the ILIAS page is sent away
        await bob.wait_for("userjustkicked", count=2)

        self.assertEqual((await self.php("Ban", 1, 0, 6)).json(), {"success": True, "subRoomId": 0})
        await alice.wait_for("userjustbanned")
        await bob.wait_for("notice", "user_kicked")
        rooms = (await self.php("GetRooms")).json()["rooms"]
        self.assertEqual((rooms["1_0"]["users"], rooms["1_3"]["users"]),
                         ([{"id": 7, "username": "bob", "profile_picture_visible": False}], []))

class PrivateRoomsMariaDBTests(PrivateRoomsMixin, unittest.TestCase):
    database_kind = "mysql"


class PrivateRoomsSQLiteTests(PrivateRoomsMixin, unittest.TestCase):
    database_kind = "sqlite"


class PrivateRoomsRestartMixin(PrivateRoomsServerMixin):
    """A restart between two in-process runs sharing one ``journal_dir`` (the admissions file)."""

    start_on = AdmissionsFileMixin.start_on

    async def test_pages_come_back_into_their_private_room(self) -> None:
        """Alice is let back into private room 1_3; bob, banned from room 1 meanwhile, is not."""
        await self.start()
        alice = await self.enter8(6, "alice")
        await self.enter_private(alice, 6, 3)
        bob = await self.enter8(7, "bob")
        await self.enter_private(bob, 7, 3)
        await self.server.stop()
        await insert_rows_async(self.databases[self.client_names[0]], "chatroom_bans", [
            {"room_id": 1, "user_id": 7, "timestamp": int(time.time()), "remark": ""}])
        self.server = await self.start_on(self.databases)
        self.assertIn("1 users of onscreen may come back into their rooms", self.server.log_text())
        back = await self.browser()
        await back.emit("login", "alice", 6)
        await back.wait_for("loggedIn")
        await back.emit("enterRoom", 1, 3)
        welcome = await back.wait_for("notice", "private_room_entered")
        self.assertEqual((welcome["roomId"], welcome["subRoomId"], welcome["data"]["title"]),
                         (1, 3, "Old"))
        banned = await self.browser()
        await banned.emit("login", "bob", 7)
        await banned.wait_for("shutdown")


class PrivateRoomsRestartMariaDBTests(PrivateRoomsRestartMixin, unittest.TestCase):
    database_kind = "mysql"


class PrivateRoomsRestartSQLiteTests(PrivateRoomsRestartMixin, unittest.TestCase):
    database_kind = "sqlite"


class PrivateRoomsModeMixin(PrivateRoomsServerMixin):
    """client.cfg ``private_rooms`` overrides what the schema says."""

    async def test_off_refuses_sub_rooms_despite_the_tables(self) -> None:
        """``off``: ILIAS 10's behaviour on an ILIAS 8 database (404, no subRoomId)."""
        self.client_settings = {"private_rooms": "off"}
        await self.start()
        response = await self.php("EnterPrivateRoom", 1, 3, 6)
        self.assertEqual(response.code, 404)
        self.assertIn("private rooms", response.json()["message"])
        self.assertNotIn("1_3", (await self.php("GetRooms")).json()["rooms"])
        alice = await self.enter8(6, "alice")
        # ILIAS 10's frames: no subRoomId anywhere.
        self.assertNotIn("subRoomId", alice.payloads("private_room_entered")[0])
        await alice.emit("message", {"content": "hi", "format": {}}, 1, 0)
        self.assertNotIn("subRoomId", await alice.wait_for("message", "hi"))

    async def test_on_without_the_tables_stops_the_start(self) -> None:
        """``on`` on an ILIAS 9+ database: the start fails with one line naming the tables."""
        self.client_settings = {"private_rooms": "on"}
        self.ilias8_tables = False
        with self.assertRaises(StoreError) as caught:
            await self.start()
        self.assertIn('private_rooms is "on" but the database has no ILIAS 8', str(caught.exception))


class PrivateRoomsModeMariaDBTests(PrivateRoomsModeMixin, unittest.TestCase):
    database_kind = "mysql"


class PrivateRoomsModeSQLiteTests(PrivateRoomsModeMixin, unittest.TestCase):
    database_kind = "sqlite"
