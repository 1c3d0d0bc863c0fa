"""
End-to-end tests of the On-Screen Chat (``/<name>-im``): browsers on real sockets
(python-socketio, and once the npm socket.io-client), PHP's ``UserConfigChange``, a whole server
on a fresh ILIAS-shaped database. Every scenario runs on the real MariaDB server and on SQLite.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from twisted.internet import reactor, threads, utils
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from ilchat.bus import LocalBus
from ilchat.chat.conversation_model import MAX_MESSAGE_BYTES, Conversation, Refused
from ilchat.chat.conversation_registry import ConversationRegistry
from ilchat.chat.conversations import OnScreenChat
from ilchat.ilias.osc import OnScreenChatComponent, conversation_json, message_json, stored_message_json
from ilchat.jsonutil import dumps
from ilchat.store import create_store
from tests.chat.test_conversations import use_time_zone
from tests.ilias.repository_support import Browser, wait_until
from tests.support.db import execute, fetch_rows_async, insert_rows_async, make_database
from tests.support.http import http_request
from tests.support.server import RunningServer, start_server

NAMESPACE = "/onscreen-im"
ALICE = {"id": 6, "name": "alice"}
BOB = {"id": 7, "name": "bob"}
CAROL = {"id": 8, "name": "carol"}
JS_DIR = Path(__file__).resolve().parent.parent / "js"


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class Tab(Browser):
    """
    One browser tab running ILIAS's OSC socket calls (``OnScreenChat/resources/chat.js``); OSC
    payloads have no ``content`` key, so they are filtered with a predicate instead.
    """

    def __init__(self, server: RunningServer, namespace: str = NAMESPACE,
                 headers: Optional[Dict[str, str]] = None, **kwargs: Any) -> None:
        super().__init__(server, namespace, headers, **kwargs)

    async def call(self, event: str, *args: Any) -> Any:
        """Emit asking for an acknowledgement, and return it."""
        data: Any = args[0] if len(args) == 1 else tuple(args)
        return await threads.deferToThread(self.sio.call, event, data, namespace=self.namespace, timeout=10)

    def payloads(self, event: str, where: Optional[Callable[[Any], bool]] = None) -> List[Any]:
        with self._lock:
            found = [args[0] if args else None for name, args in self.events if name == event]
        return [p for p in found if where is None or where(p)]

    def names(self) -> List[str]:
        with self._lock:
            return [name for name, _ in self.events]

    async def wait_for(self, event: str, where: Optional[Callable[[Any], bool]] = None,
                       count: int = 1, timeout: float = 10.0) -> Any:
        """Wait until C{count} such events arrived; returns the last of them."""
        await wait_until(lambda: len(self.payloads(event, where)) >= count, timeout,
                         f"{event} x{count} on {self.namespace}: got {self.names()}")
        return self.payloads(event, where)[count - 1]


class OscServerMixin:
    """A server with only the On-Screen Chat on a fresh database of C{database_kind}."""

    database_kind = "mysql"
    accepting = (6, 7, 8)

    async def start(self, database: Any = None) -> RunningServer:
        if database is None:
            database = make_database(self, self.database_kind)
            rows = [{"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in self.accepting]
            await insert_rows_async(database, "usr_pref", rows)
        self.database = database
        self.server = await start_server(
            self, database=database, client_components=[OnScreenChatComponent]
        )
        if not hasattr(self, "tabs"):
            self.tabs: List[Tab] = []
            self.addCleanup(self._close_tabs)
        return self.server

    async def restart(self) -> RunningServer:
        for tab in self.tabs:
            await tab.close()
        await self.server.stop()
        return await self.start(self.database)

    async def _close_tabs(self) -> None:
        for tab in self.tabs:
            await tab.close()

    @property
    def chat(self) -> OnScreenChat:
        component = self.server.client().components[0]
        return component.chat

    async def tab(self, user: Optional[Dict[str, Any]] = None) -> Tab:
        """A connected tab, logged in as C{user} (its conversations listed) unless None."""
        tab = Tab(self.server)
        self.tabs.append(tab)
        await tab.connect()
        if user is not None:
            await tab.emit("login", user["id"], user["name"])
            self.assertEqual(await tab.wait_for("login"), user)
        return tab

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.database, sql, args)

    async def open(self, tab: Tab, *users: Dict[str, Any]) -> Dict[str, Any]:
        """``conversation([...users])`` and the ``conversation-init`` it answers with."""
        before = len(tab.payloads("conversation-init"))
        await tab.emit("conversation", list(users))
        return await tab.wait_for("conversation-init", count=before + 1)

    async def user_config_change(self, message: Optional[str], auth: bool = True):
        path = "/backend/UserConfigChange/onscreen"
        if message is not None:
            path += "?message=" + quote(message)
        headers = self.server.auth_header() if auth else {}
        return await http_request(self.server.url(path), headers=headers)

    def assertTimestampMs(self, value: Any) -> None:
        self.assertIsInstance(value, int)
        self.assertLess(abs(value - time.time() * 1000), 60_000)


async def wait_until_rows(test: Any, sql: str, count: int = 1) -> List[Dict[str, Any]]:
    """The rows of ``sql`` once there are ``count`` (messages are stored just after delivery)."""
    deadline = time.monotonic() + 10
    rows = await test.rows(sql)
    while len(rows) < count and time.monotonic() < deadline:
        await sleep(0.02)
        rows = await test.rows(sql)
    return rows


def _is_message(text: str) -> Callable[[Any], bool]:
    return lambda p: isinstance(p, dict) and p.get("message") == text


class ConversationScenarioMixin(OscServerMixin):
    """Two users, two tabs, a conversation and its messages (spec §10.3)."""

    async def test_open_conversation_and_exchange_messages_in_every_tab(self) -> None:
        """The §10.3 frames field by field; both of Alice's tabs receive everything, and rows land."""
        await self.start()
        alice1 = await self.tab(ALICE)
        alice2 = await self.tab(ALICE)
        bob = await self.tab(BOB)

        init = await self.open(alice1, ALICE, BOB)
        self.assertEqual(
            init,
            {"id": init["id"], "participants": [ALICE, BOB], "latestMessage": None,
             "numNewMessages": 0, "isGroup": False},
        )
        self.assertEqual(len(init["id"]), 36)
        self.assertEqual(init["id"][14], "4")  # UUID v4
        self.assertEqual(await alice2.wait_for("conversation-init"), init)
        rows = await self.rows("SELECT id, is_group, participants FROM osc_conversation")
        self.assertEqual(rows, [{"id": init["id"], "is_group": 0,
                                 "participants": '[{"id":6,"name":"alice"},{"id":7,"name":"bob"}]'}])

        await alice1.emit("message", init["id"], 6, "hi bob")
        message = await bob.wait_for("message")
        self.assertTimestampMs(message["timestamp"])
        self.assertEqual(message, {"conversationId": init["id"], "userId": 6, "message": "hi bob",
                                   "timestamp": message["timestamp"], "id": message["id"]})
        self.assertEqual(await alice1.wait_for("message"), message)
        self.assertEqual(await alice2.wait_for("message"), message)
        conversation = await bob.wait_for("conversation")
        self.assertEqual(conversation["id"], init["id"])
        self.assertEqual(conversation["participants"], [ALICE, BOB])
        self.assertEqual(conversation["latestMessage"], {
            "id": message["id"], "conversation_id": init["id"], "user_id": 6, "message": "hi bob",
            "timestamp": message["timestamp"], "userId": 6, "conversationId": init["id"]})
        self.assertFalse(conversation["isGroup"])
        # The conversation event comes before the message, as in ILIAS.
        self.assertLess(bob.names().index("conversation"), bob.names().index("message"))
        stored = await wait_until_rows(self, "SELECT id, conversation_id, user_id, message, timestamp FROM osc_messages")
        self.assertEqual(stored, [{"id": message["id"], "conversation_id": init["id"], "user_id": 6,
                                   "message": "hi bob", "timestamp": message["timestamp"]}])

        # Bob's browser sends ids as strings (data attributes): the same conversation opens.
        again = await self.open(bob, {"id": "7", "name": "bob"}, {"id": "6", "name": "alice"})
        self.assertEqual(again["id"], init["id"])
        self.assertEqual(again["latestMessage"]["id"], message["id"])
        self.assertEqual(len(await self.rows("SELECT id FROM osc_conversation")), 1)

    async def test_emoji_and_long_text_are_stored_and_delivered(self) -> None:
        """4-byte UTF-8 reaches the other side and the history (the Node server lost it)."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        text = "party 🎉 " + "x" * 5000
        await alice.emit("message", conv, 6, text)
        self.assertEqual((await bob.wait_for("message"))["message"], text)
        await bob.emit("history", conv, None, False)
        history = await bob.wait_for("history")
        self.assertEqual(history["messages"][0]["message"], text)

    async def test_concurrent_senders_see_one_order_matching_the_history(self) -> None:
        """Two users sending at once: everyone sees the same order, and timestamps follow it."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]

        async def burst(tab: Tab, user_id: int, prefix: str) -> None:
            for index in range(20):
                await tab.emit("message", conv, user_id, f"{prefix}{index}")

        await gatherResults([ensureDeferred(burst(alice, 6, "a")), ensureDeferred(burst(bob, 7, "b"))])
        await alice.wait_for("message", count=40)
        await bob.wait_for("message", count=40)
        seen_by_alice = alice.payloads("message")
        self.assertEqual(seen_by_alice, bob.payloads("message"))
        stamps = [m["timestamp"] for m in seen_by_alice]
        self.assertEqual(stamps, sorted(set(stamps)))
        for who in ("a", "b"):
            mine = [m["message"] for m in seen_by_alice if m["message"].startswith(who)]
            self.assertEqual(mine, [f"{who}{i}" for i in range(20)])
        stored = await wait_until_rows(self, "SELECT id FROM osc_messages ORDER BY timestamp", 40)
        self.assertEqual([r["id"] for r in stored], [m["id"] for m in seen_by_alice])

    async def test_typing_reaches_the_other_participants_only(self) -> None:
        """``userStartedTyping``/``userStoppedTyping`` payloads, never echoed to the typist."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = await self.open(alice, ALICE, BOB)
        await alice.emit("userStartedTyping", conv["id"], 6)
        started = await bob.wait_for("userStartedTyping")
        self.assertEqual(started["participant"], ALICE)
        self.assertEqual(started["conversation"]["id"], conv["id"])
        self.assertEqual(started["conversation"]["participants"], [ALICE, BOB])
        await alice.emit("userStoppedTyping", conv["id"], 6)
        stopped = await bob.wait_for("userStoppedTyping")
        self.assertEqual(stopped["participant"], ALICE)
        self.assertEqual(alice.payloads("userStartedTyping"), [])

    async def test_history_pages_of_six_older_than_a_timestamp(self) -> None:
        """Pages of six, newest first or reversed, with ``oldestMessageTimestamp`` for the next page."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        for index in range(8):
            await alice.emit("message", conv, 6, f"m{index}")
            await bob.wait_for("message", _is_message(f"m{index}"))
        await bob.emit("history", conv, None, False)
        first = await bob.wait_for("history")
        self.assertEqual([m["message"] for m in first["messages"]], ["m7", "m6", "m5", "m4", "m3", "m2"])
        self.assertEqual(first["oldestMessageTimestamp"], first["messages"][-1]["timestamp"])
        self.assertFalse(first["reverseSorting"])
        self.assertEqual(first["id"], conv)
        self.assertEqual(first["participants"], [ALICE, BOB])
        self.assertEqual(first["latestMessage"]["message"], "m7")
        row = first["messages"][0]
        self.assertEqual(sorted(row), sorted(["id", "conversation_id", "user_id", "message", "timestamp",
                                              "userId", "conversationId"]))
        self.assertEqual((row["userId"], row["conversationId"]), (6, conv))
        stamps = [m["timestamp"] for m in first["messages"]]
        self.assertEqual(stamps, sorted(stamps, reverse=True))
        self.assertEqual(len(set(stamps)), 6)  # strictly increasing per conversation

        await bob.emit("history", conv, first["oldestMessageTimestamp"], False)
        second = await bob.wait_for("history", count=2)
        self.assertEqual([m["message"] for m in second["messages"]], ["m1", "m0"])
        await bob.emit("history", conv, second["oldestMessageTimestamp"], False)
        third = await bob.wait_for("history", count=3)
        self.assertEqual(third["messages"], [])
        self.assertEqual(third["oldestMessageTimestamp"], second["oldestMessageTimestamp"])

        await bob.emit("history", conv, None, True)
        reverse = await bob.wait_for("history", count=4)
        self.assertTrue(reverse["reverseSorting"])
        self.assertEqual([m["message"] for m in reverse["messages"]], ["m2", "m3", "m4", "m5", "m6", "m7"])

    async def test_unread_counts_differ_per_participant(self) -> None:
        """After Alice reads and Bob does not, each one's list shows their own count."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        start = int(time.time() * 1000) - 1000
        await alice.emit("activity", conv, 6, start)
        await bob.emit("activity", conv, 7, start)
        await sleep(0.2)
        for text in ("one", "two"):
            await alice.emit("message", conv, 6, text)
            await bob.wait_for("message", _is_message(text))
        pushed = await bob.wait_for("conversation", lambda p: p["latestMessage"]["message"] == "two")
        self.assertEqual(pushed["numNewMessages"], 2)

        await alice.emit("activity", conv, 6, int(time.time() * 1000) + 10)
        await sleep(0.2)
        alice.clear()
        bob.clear()
        await alice.emit("conversations")
        await bob.emit("conversations")
        self.assertEqual((await alice.wait_for("conversation"))["numNewMessages"], 0)
        self.assertEqual((await bob.wait_for("conversation"))["numNewMessages"], 2)
        rows = await self.rows("SELECT user_id, is_closed FROM osc_activity ORDER BY user_id")
        self.assertEqual(rows, [{"user_id": 6, "is_closed": 0}, {"user_id": 7, "is_closed": 0}])

    async def test_close_hides_until_a_new_message_and_reopen(self) -> None:
        """A closed 1:1 is not listed; a new message lists it again; ``activity`` reopens it."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        await bob.emit("activity", conv, 7, int(time.time() * 1000))
        await sleep(0.1)
        await bob.emit("closeConversation", conv, 7)
        await sleep(0.2)
        rows = await self.rows("SELECT is_closed FROM osc_activity WHERE user_id = 7")
        self.assertEqual(rows, [{"is_closed": 1}])
        bob.clear()
        await bob.emit("conversations")
        await sleep(0.4)
        self.assertEqual(bob.payloads("conversation"), [])

        await sleep(0.01)
        await alice.emit("message", conv, 6, "still there?")
        await bob.wait_for("message")
        bob.clear()
        await bob.emit("conversations")
        listed = await bob.wait_for("conversation")
        self.assertEqual((listed["id"], listed["numNewMessages"]), (conv, 1))

        await bob.emit("activity", conv, 7, int(time.time() * 1000) + 10)
        await sleep(0.2)
        rows = await self.rows("SELECT is_closed FROM osc_activity WHERE user_id = 7")
        self.assertEqual(rows, [{"is_closed": 0}])

    async def test_third_user_makes_a_group_and_leaves_it(self) -> None:
        """``addUser`` on a 1:1 makes a new group; ``removeUser`` lets a member leave it."""
        await self.start()
        alice1, alice2 = await self.tab(ALICE), await self.tab(ALICE)
        bob, carol = await self.tab(BOB), await self.tab(CAROL)
        one = (await self.open(alice1, ALICE, BOB))["id"]
        await alice1.emit("addUser", one, 8, "carol")
        added = await alice1.wait_for("addUser")
        self.assertNotEqual(added["id"], one)
        self.assertEqual(added["participants"], [ALICE, BOB, CAROL])
        self.assertTrue(added["isGroup"])
        self.assertEqual((await alice1.wait_for("conversation"))["id"], added["id"])
        await alice2.wait_for("conversation", lambda p: p["id"] == added["id"])
        self.assertEqual(alice2.payloads("addUser"), [])  # addUser goes to the asking tab only
        rows = await self.rows("SELECT id, is_group, participants FROM osc_conversation ORDER BY is_group")
        self.assertEqual([(r["id"], r["is_group"]) for r in rows], [(one, 0), (added["id"], 1)])
        self.assertEqual(json.loads(rows[1]["participants"]), [ALICE, BOB, CAROL])
        activity = await self.rows(
            "SELECT user_id, timestamp FROM osc_activity WHERE conversation_id = ? ORDER BY user_id", [added["id"]])
        self.assertEqual(activity, [{"user_id": u, "timestamp": 0} for u in (6, 7, 8)])

        await bob.emit("message", added["id"], 7, "hello group")
        for tab in (alice1, alice2, carol, bob):
            await tab.wait_for("message", _is_message("hello group"))
        # The 1:1 is untouched and still opens for [alice, bob].
        self.assertEqual((await self.open(bob, BOB, ALICE))["id"], one)

        await carol.emit("removeUser", added["id"], 8, "carol")
        left = await carol.wait_for("removeUser")
        self.assertEqual(left["participants"], [ALICE, BOB])
        update = await bob.wait_for("conversation", lambda p: p["id"] == added["id"] and len(p["participants"]) == 2)
        self.assertTrue(update["isGroup"])
        rows = await self.rows("SELECT participants FROM osc_conversation WHERE id = ?", [added["id"]])
        self.assertEqual(json.loads(rows[0]["participants"]), [ALICE, BOB])
        carol.clear()
        await bob.emit("message", added["id"], 7, "carol gone")
        await alice1.wait_for("message", _is_message("carol gone"))
        await sleep(0.3)
        self.assertEqual(carol.payloads("message"), [])

    async def test_list_and_history_answer_the_asking_tab_only(self) -> None:
        """A conversation list or a history page goes to the tab that asked; events to every tab."""
        await self.start()
        alice1, alice2 = await self.tab(ALICE), await self.tab(ALICE)
        bob = await self.tab(BOB)
        conv = (await self.open(alice1, ALICE, BOB))["id"]
        await alice2.wait_for("conversation-init")
        await bob.emit("message", conv, 7, "hi")
        await alice1.wait_for("message")
        await alice2.wait_for("message")
        alice1.clear()
        alice2.clear()
        await alice1.emit("history", conv, None, False)
        await alice1.emit("conversations")
        self.assertEqual([m["message"] for m in (await alice1.wait_for("history"))["messages"]], ["hi"])
        self.assertEqual((await alice1.wait_for("conversation"))["id"], conv)
        await sleep(0.3)
        self.assertEqual((alice2.payloads("history"), alice2.payloads("conversation")), ([], []))

    async def test_online_follows_the_sockets(self) -> None:
        """A user is online while one tab is open; the last tab gone makes them offline."""
        await self.start()
        tab1, tab2 = await self.tab(ALICE), await self.tab(ALICE)
        alice = self.chat.registry.participants[6]
        self.assertTrue(alice.online)
        await tab1.close()
        await wait_until(lambda: len(alice.connections) == 1, what="one tab left")
        self.assertTrue(alice.online)
        await tab2.close()
        await wait_until(lambda: not alice.online, what="offline")

    async def test_default_service_serves_the_osc_beside_the_repository_chat(self) -> None:
        """With the component list ``twistd ilchat`` uses, ``/<name>-im`` works and ``/<name>`` exists."""
        database = make_database(self, self.database_kind)
        await insert_rows_async(database, "usr_pref",
                                [{"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in (6, 7)])
        self.database = database
        self.server = await start_server(self, database=database)
        self.tabs = []
        self.addCleanup(self._close_tabs)
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        await alice.emit("message", conv, 6, "default wiring")
        await bob.wait_for("message", _is_message("default wiring"))
        repository = Tab(self.server, "/onscreen")
        self.tabs.append(repository)
        await repository.connect()  # an unknown namespace would be refused with CONNECT_ERROR

    async def test_restart_keeps_conversations_messages_and_read_markers(self) -> None:
        """After a restart the same conversation, latest message, history and closed state come back."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        one = (await self.open(alice, ALICE, BOB))["id"]
        await alice.emit("addUser", one, 8, "carol")
        group = (await alice.wait_for("addUser"))["id"]
        await alice.emit("message", one, 6, "before restart")
        await bob.wait_for("message")
        await alice.emit("activity", one, 6, int(time.time() * 1000) + 10)
        await alice.emit("activity", group, 6, int(time.time() * 1000) + 10)
        await sleep(0.1)
        await alice.emit("closeConversation", group, 6)
        await sleep(0.3)

        await self.restart()
        self.assertEqual(set(self.chat.registry.conversations), {one, group})
        alice = await self.tab(ALICE)
        listed = await alice.wait_for("conversation")
        await sleep(0.3)
        self.assertEqual([p["id"] for p in alice.payloads("conversation")], [one])  # group is closed
        self.assertEqual(listed["participants"], [ALICE, BOB])
        self.assertEqual(listed["latestMessage"]["message"], "before restart")
        self.assertEqual((await self.open(alice, ALICE, BOB))["id"], one)
        await alice.emit("history", one, None, False)
        self.assertEqual([m["message"] for m in (await alice.wait_for("history"))["messages"]], ["before restart"])
        self.assertTrue(self.chat.registry.conversations[group].is_group)


class AcceptanceScenarioMixin(OscServerMixin):
    """``acceptsMessages`` from ``usr_pref`` and from PHP's ``UserConfigChange``."""

    accepting = (6, 8)  # bob (7) has no 'y' preference row

    async def test_participant_without_pref_row_does_not_get_messages(self) -> None:
        """The sender learns that Bob refuses messages; Bob gets nothing; the row is stored."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        await alice.emit("message", conv, 6, "anyone?")
        suppressed = await alice.wait_for("participantsSuppressedMessages")
        self.assertEqual(suppressed["ignoredParticipants"], {"7": 7})
        self.assertEqual((suppressed["conversationId"], suppressed["userId"], suppressed["message"]),
                         (conv, 6, "anyone?"))
        await alice.wait_for("message")
        await sleep(0.3)
        self.assertEqual(bob.payloads("message"), [])
        self.assertEqual(len(await self.rows("SELECT id FROM osc_messages")), 1)

    async def test_user_config_change_switches_at_once(self) -> None:
        """``UserConfigChange`` lets Bob receive, and stops Alice sending (nothing stored)."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        response = await self.user_config_change('{"7":{"acceptsMessages":true}}')
        self.assertEqual((response.code, response.json()), (200, {"status": 200}))
        await alice.emit("message", conv, 6, "now?")
        await bob.wait_for("message", _is_message("now?"))
        self.assertEqual(alice.payloads("participantsSuppressedMessages"), [])

        response = await self.user_config_change(json.dumps({"6": {"acceptsMessages": False}}))
        self.assertEqual(response.json(), {"status": 200})
        await alice.emit("message", conv, 6, "muted")
        suppressed = await alice.wait_for("senderSuppressesMessages")
        self.assertEqual((suppressed["message"], suppressed["userId"]), ("muted", 6))
        await sleep(0.3)
        self.assertEqual(bob.payloads("message", _is_message("muted")), [])
        self.assertEqual(len(await self.rows("SELECT id FROM osc_messages")), 1)

    async def test_user_config_change_bad_input_is_a_400(self) -> None:
        """A missing or broken ``message`` is a 400 JSON answer; no credentials is a 403."""
        await self.start()
        for message in (None, "{not json", "[1,2]", '{"x":{}}', '{"7":true}'):
            response = await self.user_config_change(message)
            self.assertEqual(response.code, 400, message)
            self.assertIsInstance(response.json(), dict)
        response = await self.user_config_change('{"7":{"acceptsMessages":true}}', auth=False)
        self.assertEqual(response.code, 403)
        self.assertFalse(self.chat.registry.participant(7).accepts_messages)


class RefusalScenarioMixin(OscServerMixin):
    """Bad input and impersonation: refused for that socket, nothing stored, others served."""

    async def test_impersonation_is_refused(self) -> None:
        """Mallory cannot send, read-mark, close or leave as Alice, nor use a conversation she is not in."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        mallory = await self.tab({"id": 9, "name": "mallory"})
        conv = (await self.open(alice, ALICE, BOB))["id"]

        answer = await mallory.call("message", conv, 6, "I am alice")
        self.assertEqual(answer["event"], "message")
        self.assertIn("logged in as", answer["reason"])
        refused = await mallory.wait_for("refused")
        self.assertEqual(refused, answer)
        answer = await mallory.call("message", conv, 9, "let me in")
        self.assertIn("not a participant", answer["reason"])
        for event, args in (("activity", (conv, 6, 1)), ("closeConversation", (conv, 6)),
                            ("userStartedTyping", (conv, 6)), ("history", (conv, None, False)),
                            ("addUser", (conv, 9, "mallory")), ("removeUser", (conv, 6, "alice"))):
            answer = await mallory.call(event, *args)
            self.assertEqual(answer["event"], event)
        # Alice herself may not claim another id in her own conversation either.
        answer = await alice.call("message", conv, 7, "as bob")
        self.assertIn("logged in as", answer["reason"])
        await sleep(0.3)
        self.assertEqual(bob.payloads("message"), [])
        self.assertEqual(bob.payloads("userStartedTyping"), [])
        self.assertEqual(await self.rows("SELECT id FROM osc_messages"), [])
        self.assertEqual(await self.rows("SELECT user_id FROM osc_activity"), [])

        await alice.emit("message", conv, 6, "still working")
        await bob.wait_for("message", _is_message("still working"))

    async def test_message_the_database_cannot_take_is_delivered_and_kept_until_it_can(self) -> None:
        """
        With ``osc_messages`` gone, a message is still delivered (it is in the journal first),
        the failing writes are one warning, and once the table is back the row is stored.
        """
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        create = [line for line in await self.rows_of_schema("osc_messages")]
        await threads.deferToThread(execute, self.database, "DROP TABLE osc_messages")
        self.assertIsNone(await alice.call("message", conv, 6, "into the void?"))
        message = await bob.wait_for("message", _is_message("into the void?"))
        journal = self.chat.messages._journal.path
        self.assertGreater(os.path.getsize(journal), 0)
        for statement in create:
            await threads.deferToThread(execute, self.database, statement)
        await wait_until(lambda: os.path.getsize(journal) == 0, 60, "the row to be written")
        stored = await self.rows("SELECT id, message FROM osc_messages")
        self.assertEqual(stored, [{"id": message["id"], "message": "into the void?"}])
        # The failing writes and the failing unread counts are a warning each, no traceback.
        self.assertEqual(self.flushLoggedErrors(), [])

    async def rows_of_schema(self, table: str) -> List[str]:
        """The CREATE statements of ``table`` in the schema this test's database was made with."""
        from ilchat.store.database import read_schema
        from ilchat.store.engines import split_sql_script

        schema = "mysql_schema.sql" if self.database_kind == "mysql" else "sqlite_schema.sql"
        return [statement for statement in split_sql_script(read_schema(schema))
                if " {} ".format(table) in statement.replace("(", " ")]

    async def test_lone_surrogate_message_is_refused_for_the_sender(self) -> None:
        """Text that is not valid Unicode can be neither stored nor shown: refused, with a reason."""
        await self.start()
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        chat = self.chat
        actor_connection = next(iter(chat.registry.participant(6).connections))
        with self.assertRaises(Exception) as caught:
            await chat.send_message(actor_connection, conv, 6, "bad \ud800 text")
        self.assertIn("lone surrogate", str(caught.exception))
        await sleep(0.2)
        self.assertEqual(bob.payloads("message"), [])
        self.assertEqual(await self.rows("SELECT id FROM osc_messages"), [])

    async def test_bad_input_refused_clearly_nothing_stored(self) -> None:
        """Events before login, malformed lists, unknown ids, huge texts and bad timestamps."""
        await self.start()
        stranger = await self.tab()
        answer = await stranger.call("conversation", [ALICE, BOB])
        self.assertEqual(answer, {"event": "conversation", "reason": "not logged in"})
        answer = await stranger.call("login", "abc", "x")
        self.assertIn("user id", answer["reason"])

        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        for participants in (None, "6,7", [], [6, 7], [{"id": "x"}], [ALICE], [BOB, CAROL],
                             [ALICE, ALICE], [{"id": i, "name": "x"} for i in range(1, 500)]):
            answer = await alice.call("conversation", participants)
            self.assertEqual(answer["event"], "conversation", participants)
        self.assertEqual(alice.payloads("conversation-init"), [])
        self.assertEqual(await self.rows("SELECT id FROM osc_conversation"), [])

        conv = (await self.open(alice, ALICE, BOB))["id"]
        for args in (("no-such-id", 6, "x"), (None, 6, "x"), (conv, 6, ""), (conv, 6, {"text": 1}),
                     (conv, 6, "x" * (MAX_MESSAGE_BYTES + 1))):
            answer = await alice.call("message", *args)
            self.assertEqual(answer["event"], "message")
        self.assertIn("longer than", answer["reason"])
        for args in ((conv, "yesterday", False), (conv, -5, False), ("nope", None, False)):
            answer = await alice.call("history", *args)
            self.assertEqual(answer["event"], "history")
        answer = await alice.call("addUser", conv, 7, "bob")
        self.assertIn("already", answer["reason"])
        answer = await alice.call("removeUser", conv, 6, "alice")
        self.assertIn("group", answer["reason"])
        await sleep(0.2)
        self.assertEqual(await self.rows("SELECT id FROM osc_messages"), [])
        self.assertEqual(len(await self.rows("SELECT id FROM osc_conversation")), 1)
        self.assertEqual(bob.payloads("message"), [])

        self.assertIsNone(await alice.call("message", conv, 6, "x" * MAX_MESSAGE_BYTES))
        await bob.wait_for("message")


class JavaScriptClientScenarioMixin(OscServerMixin):
    """The npm socket.io-client (the browser's library) against the On-Screen Chat."""

    async def test_socket_io_client_login_conversation_message(self) -> None:
        """socket.io-client 4.8: login, open a conversation, send, receive its own message."""
        node = shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
            raise SkipTest("node or socket.io-client (tests/js) missing (apt-get install nodejs npm; scripts/test then runs npm ci in tests/js)")
        await self.start()
        bob = await self.tab(BOB)
        script = """
const { io } = require("socket.io-client");
const socket = io(process.argv[1] + "/onscreen-im", { transports: ["polling", "websocket"] });
const seen = [];
const done = (code) => { console.log(JSON.stringify(seen)); socket.close(); process.exit(code); };
setTimeout(() => done(2), 10000);
socket.onAny((event, ...args) => {
  seen.push([event, ...args]);
  if (event === "login") socket.emit("conversation", [{id: 6, name: "alice"}, {id: "7", name: "bob"}]);
  if (event === "conversation-init") socket.emit("message", args[0].id, 6, "from node");
  if (event === "message") done(0);
});
socket.on("connect", () => socket.emit("login", 6, "alice"));
"""
        out, err, code = await utils.getProcessOutputAndValue(
            node, ["-e", script, self.server.base_url], env=dict(os.environ), path=str(JS_DIR), reactor=reactor
        )
        self.assertEqual(code, 0, err)
        seen = json.loads(out.decode().strip().splitlines()[-1])
        names = [e[0] for e in seen]
        self.assertEqual(names[0], "login")
        self.assertEqual(seen[0][1], ALICE)
        self.assertIn("conversation-init", names)
        message = [e[1] for e in seen if e[0] == "message"][0]
        self.assertEqual((message["userId"], message["message"]), (6, "from node"))
        self.assertEqual(await bob.wait_for("message"), message)


class ConversationMariaDBTests(ConversationScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class ConversationSQLiteTests(ConversationScenarioMixin, unittest.TestCase):
    database_kind = "sqlite"


class AcceptanceMariaDBTests(AcceptanceScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class AcceptanceSQLiteTests(AcceptanceScenarioMixin, unittest.TestCase):
    database_kind = "sqlite"


class RefusalMariaDBTests(RefusalScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class RefusalSQLiteTests(RefusalScenarioMixin, unittest.TestCase):
    database_kind = "sqlite"


class JavaScriptClientTests(JavaScriptClientScenarioMixin, unittest.TestCase):
    database_kind = "mysql"


class AcceptancePollTestsMixin:
    """The 20-minute ``usr_pref`` poll, on a fake clock and a real database."""

    database_kind = "sqlite"

    async def _chat(self, clock: Clock) -> OnScreenChat:
        self.database = make_database(self, self.database_kind)
        store = create_store(self.database, reactor)
        await store.open()
        self.addCleanup(lambda: ensureDeferred(store.close()))
        chat = OnScreenChat("onscreen", store, LocalBus("test", clock, strict=True), clock)
        self.addCleanup(lambda: ensureDeferred(chat.stop()))
        return chat

    async def test_poll_at_start_and_every_twenty_minutes_on_the_boundary(self) -> None:
        """Read at start, then at :00/:20/:40 wall-clock time; a change shows at the next boundary."""
        use_time_zone(self, "UTC")
        clock = Clock()
        clock.advance(3 * 3600 + 5 * 60)  # 03:05
        chat = await self._chat(clock)
        await insert_rows_async(self.database, "usr_pref",
                                [{"usr_id": 6, "keyword": "chat_osc_accept_msg", "value": "y"},
                                 {"usr_id": 7, "keyword": "chat_osc_accept_msg", "value": "n"}])
        await chat.start()
        alice, bob = chat.registry.participant(6), chat.registry.participant(7)
        self.assertEqual((alice.accepts_messages, bob.accepts_messages), (True, False))
        calls = clock.getDelayedCalls()
        self.assertEqual([c.getTime() for c in calls], [3 * 3600 + 20 * 60])

        await insert_rows_async(self.database, "usr_pref",
                                [{"usr_id": 8, "keyword": "chat_osc_accept_msg", "value": "y"}])
        carol = chat.registry.participant(8)
        self.assertFalse(carol.accepts_messages)
        clock.advance(15 * 60 - 1)  # 03:19:59
        await sleep(0.1)
        self.assertFalse(carol.accepts_messages)
        clock.advance(1)  # 03:20
        await wait_until(lambda: carol.accepts_messages, what="poll applied")
        await wait_until(lambda: clock.getDelayedCalls(), what="next poll scheduled")
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [3 * 3600 + 40 * 60])
        self.assertTrue(alice.accepts_messages)
        self.assertFalse(bob.accepts_messages)

    async def test_live_conversations_are_kept_from_the_purge(self) -> None:
        """A conversation just opened, or with someone online, is in use; an idle old one is not."""
        clock = Clock()
        clock.advance(1_000_000)
        chat = await self._chat(clock)
        await chat.start()
        chat.login("tab-a", 6, "alice")
        await chat.open_conversation("tab-a", [ALICE, BOB])
        new = next(iter(chat.registry.conversations))
        self.assertEqual(chat.live_conversation_ids(), {new})
        chat.disconnect("tab-a")
        clock.advance(2 * 24 * 3600)
        self.assertEqual(chat.live_conversation_ids(), set())
        chat.login("tab-b", 7, "bob")
        self.assertEqual(chat.live_conversation_ids(), {new})

    async def test_purge_keeps_live_conversations_and_forgets_deleted_ones(self) -> None:
        """The daily purge keeps a conversation in use and drops the ones it deleted from memory."""
        clock = Clock()
        clock.advance(1_000_000)
        chat = await self._chat(clock)
        await chat.start()
        chat.login("tab-a", 6, "alice")
        await chat.open_conversation("tab-a", [ALICE, BOB])
        idle = next(iter(chat.registry.conversations))
        chat.disconnect("tab-a")
        clock.advance(2 * 24 * 3600)
        chat.login("tab-c", 8, "carol")
        await chat.open_conversation("tab-c", [CAROL, BOB])
        fresh = [c for c in chat.registry.conversations if c != idle][0]
        await chat._store.purge_old_messages(int(time.time() * 1000))
        self.assertEqual(set(chat.registry.conversations), {fresh})
        rows = await fetch_rows_async(self.database, "SELECT id FROM osc_conversation")
        self.assertEqual([r["id"] for r in rows], [fresh])


class AcceptancePollSQLiteTests(AcceptancePollTestsMixin, unittest.TestCase):
    database_kind = "sqlite"


class AcceptancePollMariaDBTests(AcceptancePollTestsMixin, unittest.TestCase):
    database_kind = "mysql"


class RenderingTests(unittest.SynchronousTestCase):
    """ILIAS's payloads (spec §3.4), rendered here from the domain's plain values."""

    def test_conversation_json_fields(self) -> None:
        """id, participants as {id, name}, latestMessage, numNewMessages and isGroup."""
        registry = ConversationRegistry()
        conversation = Conversation("c1", False)
        for user_id in (6, 7):
            conversation.participants.append(registry.participant(user_id, f"user{user_id}"))
        registry.add(conversation)
        self.assertEqual(
            conversation_json(conversation.snapshot(), 3),
            {
                "id": "c1",
                "participants": [{"id": 6, "name": "user6"}, {"id": 7, "name": "user7"}],
                "latestMessage": None,
                "numNewMessages": 3,
                "isGroup": False,
            },
        )

    def test_message_and_stored_message_keys_in_ilias_order(self) -> None:
        """``message`` is ``{conversationId, userId, message, timestamp, id}``; a stored row
        (history, ``latestMessage``) keeps its columns and adds ``userId``/``conversationId``."""
        row = {"id": "m1", "conversation_id": "c1", "user_id": 6, "message": "hi", "timestamp": 5}
        self.assertEqual(list(message_json(row).items()),
                         [("conversationId", "c1"), ("userId", 6), ("message", "hi"), ("timestamp", 5), ("id", "m1")])
        self.assertEqual(list(stored_message_json(row).items()),
                         [("id", "m1"), ("conversation_id", "c1"), ("user_id", 6), ("message", "hi"),
                          ("timestamp", 5), ("userId", 6), ("conversationId", "c1")])
        snapshot = {"id": "c1", "is_group": True, "participants": [ALICE], "latest_message": row}
        self.assertEqual(conversation_json(snapshot, 0)["latestMessage"], stored_message_json(row))


class OscEventTestsMixin:
    """What the On-Screen Chat publishes on ``osc:<name>``: plain JSON events addressed by user ids."""

    database_kind = "sqlite"

    async def _chat(self) -> Tuple[OnScreenChat, List[Dict[str, Any]]]:
        self.database = make_database(self, self.database_kind)
        await insert_rows_async(self.database, "usr_pref", [
            {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in (6, 7, 8)])
        store = create_store(self.database, reactor)
        await store.open()
        self.addCleanup(lambda: ensureDeferred(store.close()))
        bus = LocalBus("proc-1", reactor, strict=True)
        chat = OnScreenChat("onscreen", store, bus, reactor)
        await chat.start()
        self.addCleanup(lambda: ensureDeferred(chat.stop()))
        seen: List[Dict[str, Any]] = []
        bus.subscribe(chat.topic, seen.append)
        for connection, user in (("tab-a", ALICE), ("tab-b", BOB), ("tab-c", CAROL)):
            chat.login(connection, user["id"], user["name"])
        return chat, seen

    async def test_message_posted_is_plain_and_addressed_by_user_ids(self) -> None:
        """The envelope, the snapshot, the message, each recipient's unread count; no ILIAS names."""
        chat, seen = await self._chat()
        conversation = await chat.open_conversation("tab-a", [ALICE, BOB])
        message = await chat.send_message("tab-a", conversation.id, 6, "hello")
        await wait_until(lambda: len(seen) == 2, what="both events delivered")
        opened, posted = seen
        snapshot = {"id": conversation.id, "is_group": False, "participants": [ALICE, BOB], "latest_message": None}
        self.assertEqual(opened, {"v": 1, "origin": "proc-1", "topic": "osc:onscreen", "event": {
            "type": "conversation_opened", "conversation": snapshot, "recipients": [{"id": 6, "unread": 0}]}})
        row = {"id": message["id"], "conversation_id": conversation.id, "user_id": 6, "message": "hello",
               "timestamp": message["timestamp"]}
        self.assertEqual(posted["event"], {
            "type": "message_posted", "conversation": dict(snapshot, latest_message=row), "message": row,
            "sender": ALICE, "recipients": [{"id": 6, "unread": 0}, {"id": 7, "unread": 0}], "ignored": []})
        text = dumps(seen)
        for wire_name in ("conversationId", "userId", "numNewMessages", "latestMessage", "isGroup", "user:"):
            self.assertNotIn(wire_name, text)

    async def test_typing_leaving_and_withheld_messages(self) -> None:
        """Typing goes to the others by id; a leaver and the remaining members; a withheld message."""
        chat, seen = await self._chat()
        group = await chat.open_conversation("tab-a", [ALICE, BOB, CAROL])
        chat.typing("tab-b", group.id, 7, True)
        await chat.remove_user("tab-c", group.id, 8)
        chat.registry.update_acceptance({6: False})
        withheld = await chat.send_message("tab-a", group.id, 6, "not sent")
        await wait_until(lambda: len(seen) == 4, what="four events delivered")
        typing, removed, not_sent = (envelope["event"] for envelope in seen[1:])
        self.assertEqual(typing, {
            "type": "typing", "user": BOB, "started": True, "to": [6, 8],
            "conversation": {"id": group.id, "is_group": True, "participants": [ALICE, BOB, CAROL],
                             "latest_message": None}})
        self.assertEqual(removed["type"], "participant_removed")
        self.assertEqual((removed["user"], removed["unread"]), (CAROL, 0))
        self.assertEqual(removed["recipients"], [{"id": 6, "unread": 0}, {"id": 7, "unread": 0}])
        self.assertEqual(removed["conversation"]["participants"], [ALICE, BOB])
        self.assertEqual(not_sent, {"type": "message_withheld", "message": withheld, "sender": ALICE})
        self.assertEqual(await self.rows_of("osc_messages"), [])

    async def test_participant_added_names_the_group_and_the_asking_connection(self) -> None:
        """Adding to a 1:1 makes a group; the event names both, the newcomer and the asking socket."""
        chat, seen = await self._chat()
        one = await chat.open_conversation("tab-a", [ALICE, BOB])
        group = await chat.add_user("tab-a", one.id, 8, "carol")
        await wait_until(lambda: len(seen) == 2, what="both events delivered")
        self.assertEqual(seen[1]["event"], {
            "type": "participant_added", "source_id": one.id, "user": CAROL, "actor": 6,
            "connection": "tab-a", "recipients": [{"id": 6, "unread": 0}],
            "conversation": {"id": group.id, "is_group": True, "participants": [ALICE, BOB, CAROL],
                             "latest_message": None}})

    async def rows_of(self, table: str) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.database, f"SELECT * FROM {table}")

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.database, sql, args)

    async def test_acceptance_changes_travel_and_apply_from_other_processes(self) -> None:
        """``UserConfigChange`` is published; another process's change applies, our own echo not."""
        chat, seen = await self._chat()
        chat.set_acceptance({7: False})
        self.assertFalse(chat.registry.participant(7).accepts_messages)
        await wait_until(lambda: seen, what="the event delivered")
        self.assertEqual(seen[0]["event"], {"type": "acceptance_changed", "changes": [{"id": 7, "accepts": False}]})
        remote = {"v": 1, "origin": "proc-2", "topic": chat.topic, "event": {
            "type": "acceptance_changed", "changes": [{"id": 7, "accepts": True}, {"id": 6, "accepts": False}]}}
        chat.apply_remote(remote)
        self.assertTrue(chat.registry.participant(7).accepts_messages)
        self.assertFalse(chat.registry.participant(6).accepts_messages)
        own = dict(remote, origin="proc-1", event={"type": "acceptance_changed", "changes": [{"id": 7, "accepts": False}]})
        chat.apply_remote(own)
        self.assertTrue(chat.registry.participant(7).accepts_messages)

    async def test_a_conversation_only_in_the_store_is_read_on_a_miss(self) -> None:
        """One another process made while this one missed its event is read from osc_conversation."""
        chat, seen = await self._chat()
        elsewhere = "2a1b0000-0000-4000-8000-00000000000e"
        await chat._store.insert_conversation(elsewhere, False, dumps([ALICE, BOB]))
        message = await chat.send_message("tab-b", elsewhere, 7, "found it")
        self.assertEqual(chat.registry.find_exact([6, 7]).id, elsewhere)
        await wait_until(lambda: len(seen) == 1, what="the message published")
        self.assertEqual(seen[0]["event"]["recipients"], [{"id": 6, "unread": 0}, {"id": 7, "unread": 0}])
        self.assertEqual(seen[0]["event"]["message"], message)
        with self.assertRaises(Refused):
            await chat.send_message("tab-c", elsewhere, 8, "not mine")
        with self.assertRaises(Refused):
            await chat.history("tab-a", "2a1b0000-0000-4000-8000-00000000000f")

    async def test_other_processes_events_apply_and_a_malformed_one_is_dropped(self) -> None:
        """A remote conversation_opened makes the conversation usable here; a bad event is one warning."""
        chat, seen = await self._chat()
        snapshot = {"id": "c-remote", "is_group": True, "participants": [ALICE, BOB, CAROL], "latest_message": None}
        chat.apply_remote({"v": 1, "origin": "proc-2", "topic": chat.topic, "event": {
            "type": "conversation_opened", "conversation": snapshot, "recipients": [{"id": 7, "unread": 0}]}})
        self.assertEqual(chat.registry.find_exact([8, 7, 6]).id, "c-remote")
        chat.typing("tab-c", "c-remote", 8, True)
        bad = {"v": 1, "origin": "proc-2", "topic": chat.topic, "event": {
            "type": "participant_removed", "conversation": dict(snapshot, participants="everyone")}}
        logged: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        chat.apply_remote(bad)
        chat.apply_remote(bad)
        self.assertEqual(chat.registry.get("c-remote").participant_ids(), {6, 7, 8})
        warnings = [e for e in logged if "dropped a" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        await wait_until(lambda: seen, what="typing published")
        self.assertEqual(seen[0]["event"]["to"], [6, 7])

    async def test_a_snapshot_naming_other_participants_reads_the_stored_list(self) -> None:
        """A change whose event this process missed: the next snapshot that disagrees brings it."""
        chat, seen = await self._chat()
        group = await chat.open_conversation("tab-a", [ALICE, BOB, CAROL])
        # Another process removed Carol and added Dave; its events never came (Redis was down).
        await chat._store.update_conversation(group.id, dumps([ALICE, BOB, {"id": 9, "name": "dave"}]), True)
        snapshot = {"id": group.id, "is_group": True, "latest_message": None,
                    "participants": [ALICE, BOB, {"id": 9, "name": "dave"}]}
        chat.apply_remote({"v": 1, "origin": "proc-2", "topic": chat.topic, "event": {
            "type": "typing", "conversation": snapshot, "user": BOB, "started": True, "to": [6, 9]}})
        await wait_until(lambda: group.participant_ids() == {6, 7, 9}, what="the stored list taken")
        self.assertEqual(group.participants_list(), [ALICE, BOB, {"id": 9, "name": "dave"}])
        self.assertIs(chat.registry.find_exact([6, 7, 9]), group)
        self.assertEqual([c.id for c in chat.registry.of_user(8)], [])
        self.assertEqual([c.id for c in chat.registry.of_user(9)], [group.id])

    async def test_a_purge_elsewhere_writes_back_what_is_in_use_here(self) -> None:
        """Another process purged two conversations: the one in use here comes back, the other goes."""
        chat, seen = await self._chat()
        used = await chat.open_conversation("tab-a", [ALICE, BOB])
        idle = chat.registry.load_row({"id": "c-idle", "is_group": False, "participants": '[{"id":9,"name":"dave"},{"id":10,"name":"erin"}]'})
        await threads.deferToThread(execute, self.database, "DELETE FROM osc_conversation")  # the other's purge
        chat.apply_remote({"v": 1, "origin": "proc-2", "topic": chat.topic, "event": {
            "type": "conversations_purged", "ids": [used.id, idle.id, "c-unknown"]}})
        self.assertEqual(set(chat.registry.conversations), {used.id})
        rows = await wait_until_rows(self, "SELECT id, is_group, participants FROM osc_conversation")
        self.assertEqual(rows, [{"id": used.id, "is_group": 0, "participants": dumps([ALICE, BOB])}])
        # This process's own purge tells the others.
        chat.forget_conversations([used.id])
        await wait_until(lambda: len(seen) == 2, what="the purge published")
        self.assertEqual(seen[1]["event"], {"type": "conversations_purged", "ids": [used.id]})
        self.assertEqual(chat.registry.conversations, {})


class OscEventSQLiteTests(OscEventTestsMixin, unittest.TestCase):
    database_kind = "sqlite"


class OscEventMariaDBTests(OscEventTestsMixin, unittest.TestCase):
    database_kind = "mysql"
