"""
Tests for L{ilchat.chat.rooms}: the transport-free room domain, on a fake clock.

Deliveries are observed the way adapters see them: by subscribing to the bus topic.
"""

import json
import random
from typing import Any, Dict, List, Sequence

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from ilchat.bus import LocalBus
from ilchat.chat.events import check_event
from ilchat.chat.history import HistoryRow
from ilchat.chat.model import room_key, room_parts
from ilchat.ilias.rendering import RoomRenderer, stored_message
from ilchat.ilias.room_namespace import rooms_body
from ilchat.chat.rooms import (
    MAX_STORED_MESSAGE_LENGTH,
    ChatRooms,
    ContentTooLong,
    NotInRoom,
    NotLoggedIn,
    UnknownRoom,
    UnknownUser,
)


class _Recorder:
    """
    Records what an ILIAS adapter would send: the room events rendered by a L{RoomRenderer}
    onto a namespace that records, as ``join``/``leave``/``emit`` entries per connection.
    """

    def __init__(self, clock: task.Clock) -> None:
        self._clock = clock
        self._messages: List[Dict[str, Any]] = []
        self.rooms: Dict[int, set] = {}
        #: The domain events as they came off the bus.
        self._events: List[Dict[str, Any]] = []

    @property
    def messages(self) -> List[Dict[str, Any]]:
        # The bus delivers on a later reactor turn: let it run before looking.
        self._clock.advance(0)
        return self._messages

    @messages.setter
    def messages(self, value: List[Dict[str, Any]]) -> None:
        self._messages = value

    @property
    def events_published(self) -> List[Dict[str, Any]]:
        self._clock.advance(0)
        return self._events

    def event_seen(self, envelope: Dict[str, Any]) -> None:
        self._events.append(envelope["event"])

    def membership(self, op: str, room: str, connection: str) -> None:
        room_id = int(room.split("_")[0])
        self._messages.append({"type": op, "room": room_id, "connections": [connection]})
        if op == "join":
            self.rooms.setdefault(room_id, set()).add(connection)
        else:
            self.rooms.setdefault(room_id, set()).discard(connection)

    def emitted(self, event: str, payload: Any, room: Any, skip: Any) -> None:
        entry: Dict[str, Any] = {"type": "emit", "event": event, "payload": payload}
        if isinstance(room, str):
            entry["room"] = int(room.split("_")[0])
            entry["skip"] = list(skip or ())
        else:
            entry["connections"] = list(room)
        self._messages.append(entry)

    def received(self, connection: str) -> List[tuple]:
        """(event, payload) pairs the connection would have received, in order."""
        out = []
        members: Dict[int, set] = {}
        for m in self.messages:
            if m["type"] == "join":
                members.setdefault(m["room"], set()).update(m["connections"])
            elif m["type"] == "leave":
                members.setdefault(m["room"], set()).difference_update(m["connections"])
            elif "connections" in m:
                if connection in m["connections"]:
                    out.append((m["event"], m["payload"]))
            elif connection in members.get(m["room"], ()) and connection not in m["skip"]:
                out.append((m["event"], m["payload"]))
        return out

    def events(self, connection: str) -> List[str]:
        return [e if e != "notice" else "notice:" + p["content"]
                for e, p in self.received(connection)]

    def clear(self) -> None:
        # Keep joins/leaves so membership stays known.
        self.messages = [m for m in self.messages if m["type"] != "emit"]


class _Namespace:
    """The two calls of a Socket.IO namespace a L{RoomRenderer} makes, recorded."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec = rec

    def emit(self, event: str, *args: Any, room: Any = None, skip: Any = None) -> None:
        self.rec.emitted(event, json.loads(json.dumps(args[0])) if args else None, room, skip)

    def emit_json(self, data_json: str, room: Any = None, skip: Any = None) -> None:
        event, payload = json.loads(data_json)
        self.rec.emitted(event, payload, room, skip)


class _Socket:
    def __init__(self, sid: str, rec: _Recorder) -> None:
        self.sid = sid
        self.rec = rec

    def join(self, room: str) -> None:
        self.rec.membership("join", room, self.sid)

    def leave(self, room: str) -> None:
        self.rec.membership("leave", room, self.sid)


class _History:
    """A history sink that can be told to fail."""

    def __init__(self) -> None:
        self.rows: List[HistoryRow] = []
        self.fail_next = 0
        self.calls = 0

    def __call__(self, rows: Sequence[HistoryRow]) -> "Deferred[None]":
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            return fail(RuntimeError("database is down"))
        self.rows.extend(rows)
        return succeed(None)


class ChatRoomsTestsMixin:
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1795301006.833)
        self.bus = LocalBus("test", self.clock, strict=True)
        self.rec = _Recorder(self.clock)
        self.history = _History()
        self.gone: List[tuple] = []
        self.chat = ChatRooms("onscreen", self.bus, self.clock, write_history=self.history,
                              on_member_gone=lambda uid, rooms: self.gone.append((uid, rooms)),
                              stored_format=stored_message)
        # The test is the adapter owning every connection: a logged-in connection is a socket.
        self.renderer = RoomRenderer(self.clock, _Namespace(self.rec))
        self.bus.subscribe("room:onscreen", self.rec.event_seen)
        self.bus.subscribe("room:onscreen", self.renderer.deliver)
        login, lost = self.chat.login, self.chat.connection_lost

        def logged_in(conn: str, user_id: int, *args: Any) -> Any:
            member = login(conn, user_id, *args)
            if member is not None:
                self.renderer.add_socket(_Socket(conn, self.rec), user_id)
            return member

        def connection_lost(conn: str) -> None:
            self.renderer.remove_socket(conn)
            lost(conn)

        self.chat.login = logged_in  # type: ignore[method-assign]
        self.chat.connection_lost = connection_lost  # type: ignore[method-assign]
        self.chat.add_room(1)
        self.chat.add_room(2)

    def enter(self, conn: str, user_id: int, name: str, ppv: bool = False, room: int = 1,
              member: bool = True) -> None:
        self.chat.connect(user_id)
        if member:
            self.chat.add_room_member(room, user_id)
        self.assertIsNotNone(self.chat.login(conn, user_id, name, ppv))
        self.chat.enter_room(conn, room)


class EnterRoomTests(ChatRoomsTestsMixin, SynchronousTestCase):
    def test_first_join_sends_ilias_frames_in_order(self) -> None:
        """A lone user gets private_room_entered, userlist and welcome_to_chat, as ILIAS 10."""
        self.enter("b", 7, "bob")
        got = self.rec.received("b")
        self.assertEqual([e for e, _ in got], ["private_room_entered", "userlist", "notice"])
        self.assertEqual(got[0][1], {"type": "private_room_entered", "timestamp": 1795301006833,
                                     "content": "private_room_entered", "roomId": 1,
                                     "subscriber": {"id": 7, "username": "bob"}})
        self.assertEqual(got[1][1], {"type": "userlist", "timestamp": 1795301006833,
                                     "content": "userlist", "roomId": 1,
                                     "users": {"7": {"id": 7, "username": "bob",
                                                     "profile_picture_visible": False}}})
        self.assertEqual(got[2][1], {"type": "notice", "timestamp": 1795301006833,
                                     "content": "welcome_to_chat", "roomId": 1,
                                     "data": {"id": 7, "username": "bob", "title": "Main"}})
        self.assertEqual(list(got[0][1]), ["type", "timestamp", "content", "roomId",
                                           "subscriber"])

    def test_second_user_others_get_userlist_and_connect(self) -> None:
        """When Alice joins after the window, Bob gets the new userlist and a connect notice."""
        self.enter("b", 7, "bob")
        self.clock.advance(0.3)
        self.enter("a", 6, "alice", True)
        self.assertEqual(self.rec.events("a"), ["private_room_entered", "userlist",
                                                "notice:welcome_to_chat"])
        self.assertEqual(self.rec.events("b")[3:], ["userlist", "notice:connect"])
        userlist = self.rec.received("b")[3][1]
        self.assertEqual(list(userlist["users"]), ["6", "7"])
        self.assertEqual(self.rec.received("b")[4][1]["data"],
                         {"id": 6, "username": "alice", "title": "Main"})

    def test_second_tab_gets_no_welcome_again(self) -> None:
        """A member already present gets no welcome_to_chat and the others no connect."""
        self.enter("a1", 6, "alice")
        self.clock.advance(1)
        self.chat.login("a2", 6, "alice", False)
        self.chat.enter_room("a2", 1)
        self.assertEqual(self.rec.events("a2"), ["private_room_entered", "userlist"])

    def test_enter_without_membership_is_refused(self) -> None:
        """
        Without PHP's EnterPrivateRoom (or InvitePrivateRoom) the room stays closed: nothing is
        sent and the connection joins nothing (ILIAS 10 lets it in with an empty userlist).
        """
        self.chat.connect(7)
        self.chat.login("b", 7, "bob")
        self.assertRaises(NotInRoom, self.chat.enter_room, "b", 1)
        self.assertEqual(self.rec.received("b"), [])
        self.assertEqual(self.rec.messages, [])
        self.chat.invite(1, 6, 7)
        self.chat.enter_room("b", 1)
        self.assertEqual(self.rec.events("b")[:2], ["private_room_entered", "userlist"])

    def test_login_cannot_switch_the_connection_to_another_member(self) -> None:
        """A connection logged in as alice stays alice; renaming herself is allowed (IRC nicks)."""
        self.enter("a", 6, "alice")
        self.chat.connect(7)
        self.assertIsNone(self.chat.login("a", 7, "bob"))
        self.assertEqual(self.chat.member_for("a").id, 6)
        self.assertEqual(self.chat.login("a", 6, "alice2").name, "alice2")

    def test_enter_unknown_room_or_before_login(self) -> None:
        """Unknown rooms and connections that never logged in are refused."""
        self.chat.connect(6)
        self.assertRaises(NotLoggedIn, self.chat.enter_room, "x", 1)
        self.chat.login("x", 6, "alice")
        self.assertRaises(UnknownRoom, self.chat.enter_room, "x", 9999)
        self.assertRaises(UnknownRoom, self.chat.enter_room, "x", "1")

    def test_login_unknown_id_returns_none(self) -> None:
        """An id PHP never connected cannot log in."""
        self.assertIsNone(self.chat.login("x", 42, "mallory"))
        self.assertIsNone(self.chat.member_for("x"))

    def test_crowd_join_coalesces_userlists(self) -> None:
        """1,000 joins send O(n) room-wide userlists, yet each newcomer gets one at once."""
        for i in range(1000):
            self.enter(f"c{i}", 1000 + i, f"user{i}")
        roomwide = [m for m in self.rec.messages
                    if m["type"] == "emit" and m["event"] == "userlist" and "room" in m]
        self.assertEqual(len(roomwide), 1)
        for i in (1, 500, 999):
            events = self.rec.events(f"c{i}")
            self.assertEqual(events[:3], ["private_room_entered", "userlist",
                                          "notice:welcome_to_chat"])
        self.clock.advance(10.0)
        roomwide = [m for m in self.rec.messages
                    if m["type"] == "emit" and m["event"] == "userlist" and "room" in m]
        self.assertEqual(len(roomwide), 2)
        self.assertEqual(len(roomwide[-1]["payload"]["users"]), 1000)

    def test_crowd_connect_notices_are_marked(self) -> None:
        """
        Past CROWD_SIZE, joins inside a userlist window send no connect notice to browsers;
        every join is still an ``entered`` event (first=True) for the other adapters (IRC).
        """
        for i in range(300):
            self.enter(f"c{i}", 1000 + i, f"user{i}")
        connects = [m for m in self.rec.messages
                    if m["type"] == "emit" and m["event"] == "notice"
                    and m["payload"]["content"] == "connect"]
        self.assertEqual(len(connects), RoomRenderer.CROWD_SIZE)
        self.assertEqual([m["payload"]["data"]["id"] for m in connects],
                         list(range(1000, 1000 + RoomRenderer.CROWD_SIZE)))
        entered = [e for e in self.rec.events_published if e["type"] == "entered"]
        self.assertEqual(len(entered), 300)
        self.assertTrue(all(e["first"] for e in entered))
        # In a quiet room, a join is announced to the browsers again.
        self.clock.advance(1.0)
        self.clock.advance(10.0)
        self.enter("late", 5000, "late")
        self.assertEqual(self.rec.messages[-1]["payload"]["content"], "connect")

    def test_crowd_leaving_marks_disconnected_notices(self) -> None:
        """When a big room empties at once, the departures past the first reach no browser."""
        for i in range(300):
            self.enter(f"c{i}", 1000 + i, f"user{i}")
        self.clock.advance(1.0)
        self.clock.advance(10.0)
        self.rec.clear()
        for i in range(150):
            self.chat.connection_lost(f"c{i}")
        self.clock.advance(15.0)
        gone = [m for m in self.rec.messages if m["type"] == "emit"
                and m["event"] == "notice" and m["payload"]["content"] == "disconnected"]
        self.assertEqual(len(gone), 1)
        self.assertEqual(gone[0]["payload"]["data"], {"username": "user0"})
        left = [e for e in self.rec.events_published if e["type"] == "left"]
        self.assertEqual(len(left), 150)
        self.clock.advance(10.0)
        userlists = [m for m in self.rec.messages if m["type"] == "emit"
                     and m["event"] == "userlist"]
        self.assertEqual(len(userlists), 2)
        self.assertEqual(len(userlists[-1]["payload"]["users"]), 150)


class MessageTests(ChatRoomsTestsMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.enter("b", 7, "bob")
        self.clock.advance(0.3)
        self.enter("a", 6, "alice", True)
        self.rec.clear()

    def test_room_message_and_history(self) -> None:
        """A message reaches the whole room at once and is stored afterwards, in seconds."""
        self.chat.post_message("a", 1, "hello", {})
        self.assertEqual(self.history.rows, [])
        expected = {"type": "message", "timestamp": 1795301007133, "content": "hello",
                    "roomId": 1, "from": {"id": 6, "username": "alice",
                                          "profile_picture_visible": True}, "format": {}}
        self.assertEqual(self.rec.received("b"), [("message", expected)])
        self.assertEqual(self.rec.received("a"), [("message", expected)])
        self.clock.advance(0)
        self.assertEqual(self.history.rows, [HistoryRow(
            1, '{"type":"message","timestamp":1795301007,"content":"hello","roomId":1,'
               '"from":{"id":6,"username":"alice","profile_picture_visible":true},"format":{}}',
            1795301007)])

    def test_emoji_is_stored_as_characters(self) -> None:
        """Emoji stay characters in the stored JSON (utf8mb4), not \\u escapes."""
        self.chat.post_message("a", 1, "party \U0001f389", {})
        self.clock.advance(0)
        self.assertIn("party \U0001f389", self.history.rows[0].message)

    def test_whisper_goes_to_sender_and_target_only(self) -> None:
        """A non-public target message reaches every connection of sender and target only."""
        self.enter("c", 8, "carol")
        self.rec.clear()
        target = {"username": "bob", "id": 7, "public": 0}
        self.chat.post_message("a", 1, "psst", {}, target)
        self.assertEqual(self.rec.events("a"), ["message"])
        self.assertEqual(self.rec.events("b"), ["message"])
        self.assertEqual(self.rec.events("c"), [])
        self.assertEqual(self.rec.received("b")[0][1]["target"], target)
        self.clock.advance(0)
        self.assertEqual(len(self.history.rows), 1)

    def test_whisper_target_is_found_by_id_and_named_by_the_server(self) -> None:
        """A forged target name is replaced by the member's name; the id decides who gets it."""
        self.enter("c", 8, "carol")
        self.rec.clear()
        self.chat.post_message("a", 1, "psst", {}, {"username": "carol", "id": "7", "public": 0})
        self.assertEqual(self.rec.events("b"), ["message"])
        self.assertEqual(self.rec.events("c"), [])
        self.assertEqual(self.rec.received("b")[0][1]["target"],
                         {"username": "bob", "id": 7, "public": 0})

    def test_whisper_to_someone_outside_the_room_is_refused(self) -> None:
        """A known user who is not a member of the room cannot be whispered to there."""
        self.enter("c", 8, "carol", room=2)
        self.rec.clear()
        self.assertRaises(UnknownUser, self.chat.post_message, "a", 1, "x", {},
                          {"username": "carol", "id": 8, "public": 0})
        self.assertEqual(self.rec.received("c"), [])

    def test_whisper_to_unknown_user_is_refused(self) -> None:
        """An unknown target id is an error, and nothing is delivered."""
        self.assertRaises(UnknownUser, self.chat.post_message, "a", 1, "x", {},
                          {"username": "z", "id": 99, "public": 0})
        self.assertEqual(self.rec.messages[-1]["type"], "join")

    def test_oversize_message_is_refused_before_delivery(self) -> None:
        """A message whose stored JSON exceeds 4000 characters is neither sent nor stored."""
        refused = self.assertRaises(ContentTooLong, self.chat.post_message, "a", 1,
                                    "x" * MAX_STORED_MESSAGE_LENGTH, {})
        self.clock.advance(0)
        self.assertEqual(self.rec.received("b"), [])
        self.assertEqual(self.history.rows, [])
        # ``fits`` is the content that would have made the row exactly as long as allowed.
        self.assertLess(refused.fits, MAX_STORED_MESSAGE_LENGTH)
        self.chat.post_message("a", 1, "x" * refused.fits, {})
        self.assertRaises(ContentTooLong, self.chat.post_message, "a", 1,
                          "x" * (refused.fits + 1), {})

    def test_message_needs_login_and_room(self) -> None:
        """Posting before login, to an unknown room or a room not entered is refused."""
        self.assertRaises(NotLoggedIn, self.chat.post_message, "nobody", 1, "x", {})
        self.assertRaises(UnknownRoom, self.chat.post_message, "a", 5, "x", {})
        self.assertRaises(NotInRoom, self.chat.post_message, "a", 2, "x", {})

    def test_history_retried_on_database_error(self) -> None:
        """A failing write is retried later, in order, and nothing is lost."""
        self.history.fail_next = 2
        self.chat.post_message("a", 1, "one", {})
        self.clock.advance(0)
        self.chat.post_message("a", 1, "two", {})
        self.clock.advance(0)
        self.assertEqual(self.history.rows, [])
        self.clock.advance(1)
        self.clock.advance(2)
        self.assertEqual([json.loads(r.message)["content"] for r in self.history.rows],
                         ["one", "two"])
        self.assertEqual(self.rec.events("b"), ["message", "message"])
        # An outage is a warning line, not a traceback per attempt.
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])

    def test_typing_goes_to_other_members_with_string_subscriber(self) -> None:
        """Typing events reach the others only, with subscriber as compact JSON text."""
        self.chat.typing("a", 1, True)
        self.chat.typing("a", 1, False)
        self.assertEqual(self.rec.received("a"), [])
        got = self.rec.received("b")
        self.assertEqual([e for e, _ in got], ["userStartedTyping", "userStoppedTyping"])
        self.assertEqual(got[0][1], {"type": "user_started_typing", "timestamp": 1795301007133,
                                     "content": "user_started_typing", "roomId": 1,
                                     "subscriber": '{"id":6,"username":"alice"}'})
        self.assertEqual(got[1][1]["type"], "user_stopped_typing")


class BobAndAliceSeatedMixin(ChatRoomsTestsMixin):
    """Bob (7) then Alice (6) in room 1, the clock past the entry userlists, nothing recorded."""

    def setUp(self) -> None:
        super().setUp()
        self.enter("b", 7, "bob")
        self.clock.advance(0.3)
        self.enter("a", 6, "alice", True)
        self.clock.advance(5)
        self.rec.clear()


class DisconnectGraceTests(BobAndAliceSeatedMixin, SynchronousTestCase):

    def test_last_connection_gone_leaves_after_15_seconds(self) -> None:
        """15 s after the last socket, the room gets userlist + disconnected with a string id."""
        self.chat.connection_lost("a")
        self.clock.advance(14.9)
        self.assertEqual(self.rec.received("b"), [])
        self.clock.advance(0.1)
        got = self.rec.received("b")
        self.assertEqual([e for e, _ in got], ["userlist", "notice"])
        self.assertEqual(got[0][1]["roomId"], "1")
        self.assertEqual(got[0][1]["users"], {"7": {"id": 7, "username": "bob",
                                                    "profile_picture_visible": False}})
        self.assertEqual(got[1][1], {"type": "notice", "timestamp": got[1][1]["timestamp"],
                                     "content": "disconnected", "roomId": "1",
                                     "data": {"username": "alice"}})
        self.assertEqual(self.gone, [(6, [1])])
        self.assertIsNone(self.chat.get_member(6))

    def test_other_tab_keeps_user_in(self) -> None:
        """While another connection of the user is open, no grace timer runs."""
        self.chat.login("a2", 6, "alice", True)
        self.chat.connection_lost("a")
        self.clock.advance(60)
        self.assertEqual(self.rec.received("b"), [])
        self.assertEqual(self.gone, [])
        self.chat.connection_lost("a2")
        self.assertTrue(self.chat.has_grace_timer(6))
        self.clock.advance(15)
        self.assertEqual(self.gone, [(6, [1])])

    def test_connection_closed_on_purpose_leaves_at_once(self) -> None:
        """A departure on purpose ("Leave", a closed page) skips the grace: the room hears now."""
        self.chat.connection_closed("a")
        got = self.rec.received("b")
        self.assertEqual([e for e, _ in got], ["userlist", "notice"])
        self.assertEqual(got[1][1]["data"], {"username": "alice"})
        self.assertEqual(self.gone, [(6, [1])])
        self.assertIsNone(self.chat.get_member(6))
        self.assertFalse(self.chat.has_grace_timer(6))

    def test_connection_closed_with_another_tab_open_keeps_the_member(self) -> None:
        """Only the member's last connection makes them leave; an unknown one is nothing."""
        self.chat.login("a2", 6, "alice", True)
        self.chat.connection_closed("a")
        self.chat.connection_closed("never-logged-in")
        self.clock.advance(60)
        self.assertEqual((self.rec.received("b"), self.gone), ([], []))
        self.chat.connection_closed("a2")
        self.assertEqual(self.gone, [(6, [1])])

    def test_connect_login_or_enter_keep_the_member_in(self) -> None:
        """Connect (a whole grace again), login and enterRoom within 15 s: no removal then."""
        for action in (lambda: self.chat.connect(6),
                       lambda: self.chat.login("a", 6, "alice", True),
                       lambda: (self.chat.login("a", 6, "alice", True),
                                self.chat.enter_room("a", 1))):
            self.chat.connection_lost("a")
            self.clock.advance(10)
            action()
            self.clock.advance(10)
            self.assertEqual(self.gone, [])
            self.chat.login("a", 6, "alice", True)

    def test_connect_without_a_login_here_ends_a_grace_later(self) -> None:
        """
        PHP connects a member in their grace, and no page of theirs logs in here (in a cluster
        it may log in on another process): they leave a whole grace after the Connect.
        """
        self.chat.connection_lost("a")
        self.clock.advance(10)
        self.chat.connect(6)
        self.clock.advance(14.9)
        self.assertEqual(self.gone, [])
        self.clock.advance(0.1)
        self.assertEqual(self.gone, [(6, [1])])

    def test_failed_session_move_is_retried(self) -> None:
        """A failing on_member_gone hook is retried with a growing delay until it works."""
        calls = []

        def hook(user_id: int, rooms: list) -> "Deferred[None]":
            calls.append((user_id, rooms))
            if len(calls) < 3:
                return fail(RuntimeError("database is down"))
            return succeed(None)

        chat = ChatRooms("retry", self.bus, self.clock, on_member_gone=hook)
        chat.add_room(1)
        chat.connect(6)
        chat.add_room_member(1, 6)
        chat.login("x", 6, "alice")
        chat.enter_room("x", 1)
        chat.connection_lost("x")
        self.clock.advance(15)
        self.assertEqual(calls, [(6, [1])])
        self.clock.advance(2)
        self.assertEqual(len(calls), 2)
        self.clock.advance(4)
        self.assertEqual(calls, [(6, [1])] * 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_grace_is_per_instance(self) -> None:
        """The same user id on another instance has its own timer."""
        other = ChatRooms("other", self.bus, self.clock)
        other.add_room(1)
        other.connect(6)
        other.login("x", 6, "alice-other")
        other.connection_lost("x")
        self.chat.connect(6)
        self.clock.advance(15)
        self.assertIsNone(other.get_member(6))
        self.assertIsNotNone(self.chat.get_member(6))


class RestartTests(BobAndAliceSeatedMixin, SynchronousTestCase):
    """What a stopping server keeps of PHP's admissions, and how the next run gives them back."""

    def test_admissions_are_ilias_members_and_their_rooms(self) -> None:
        """Every registered ILIAS id (not IRC's negative ones), with the rooms PHP admitted it to."""
        self.chat.connect(8)
        self.chat.connect(-5)
        self.chat.add_room_member(2, 6)
        self.assertEqual(self.chat.admissions(), {6: [1, 2], 7: [1], 8: []})

    def test_restored_member_logs_in_and_enters_without_php(self) -> None:
        """A restored member enters its rooms as if PHP had connected it; nobody is present."""
        admissions = self.chat.admissions()
        self.setUp_fresh()
        self.assertEqual(self.chat.restore_admissions({**admissions, 9: [99]}, 60.0), 3)
        self.assertEqual(self.chat.rooms()[0].joined, set())
        self.enter("a2", 6, "alice", member=False)
        self.assertEqual(self.chat.get_room(1).joined, {6})
        self.assertRaises(NotInRoom, self.chat.enter_room, "a2", 2)

    def test_restored_member_who_does_not_come_back_is_forgotten_silently(self) -> None:
        """
        After the grace a restored member that never logged in is gone, with no event but the
        ``released`` that tells the other processes (renderers ignore it).
        """
        admissions = self.chat.admissions()
        self.setUp_fresh()
        self.chat.restore_admissions(admissions, 60.0)
        self.enter("b2", 7, "bob", member=False)
        before = len(self.rec.events_published)
        self.clock.advance(61)
        self.assertIsNone(self.chat.get_member(6))
        self.assertEqual(set(self.chat.get_room(1).members), {7})
        self.assertEqual([event["type"] for event in self.rec.events_published[before:]],
                         ["released"])
        self.assertEqual(self.gone, [])

    def test_php_connect_or_ban_wins_over_a_restored_admission(self) -> None:
        """A restored member is a member like any: a kick or ban takes the admission back."""
        admissions = self.chat.admissions()
        self.setUp_fresh()
        self.chat.restore_admissions(admissions, 60.0)
        self.assertTrue(self.chat.kick(1, 7))
        self.assertTrue(self.chat.ban(1, 6))
        self.assertIsNone(self.chat.login("a2", 6, "alice"))
        self.chat.login("b2", 7, "bob")
        self.assertRaises(NotInRoom, self.chat.enter_room, "b2", 1)

    def setUp_fresh(self) -> None:  # noqa: N802 (unittest style)
        """The next run: a new domain with the same rooms and nobody in it."""
        ChatRoomsTestsMixin.setUp(self)
        self.rec.clear()


class PartRoomTests(ChatRoomsTestsMixin, SynchronousTestCase):
    def test_part_leaves_one_room_and_tells_it(self) -> None:
        """An IRC-style PART: the room hears userlist + disconnected; the member stays known."""
        self.enter("irc:1", -5, "ircuser")
        self.clock.advance(1)
        self.enter("b", 7, "bob")
        self.clock.advance(1)
        self.rec.clear()
        self.chat.part_room("irc:1", 1)
        self.assertEqual(self.rec.events("b"), ["userlist", "notice:disconnected"])
        self.assertEqual(self.rec.received("b")[1][1]["data"], {"username": "ircuser"})
        self.assertEqual(self.rec.received("b")[0][1]["users"],
                         {"7": {"id": 7, "username": "bob", "profile_picture_visible": False}})
        self.assertNotIn("irc:1", self.rec.rooms[1])
        self.assertIsNotNone(self.chat.get_member(-5))
        self.assertRaises(NotInRoom, self.chat.part_room, "irc:1", 1)
        self.assertRaises(NotInRoom, self.chat.post_message, "irc:1", 1, "x", {})

    def test_part_with_another_connection_in_the_room_is_silent(self) -> None:
        """While another connection of the member stays in the room, nobody is told."""
        self.enter("b1", 7, "bob")
        self.chat.login("b2", 7, "bob")
        self.chat.enter_room("b2", 1)
        self.clock.advance(1)
        self.rec.clear()
        self.chat.part_room("b2", 1)
        self.assertEqual([m["type"] for m in self.rec.messages if m["type"] == "emit"], [])
        self.assertIn(7, self.chat.get_room(1).joined)


class RoomKeyTests(SynchronousTestCase):
    def test_keys_round_trip_and_never_meet(self) -> None:
        """Main rooms keep their id; each (room, sub-room) pair has its own negative key."""
        self.assertEqual((room_key(7), room_key(7, 0), room_parts(7)), (7, 7, (7, 0)))
        pairs = [(1, 1), (1, 2), (2, 1), (2**31 - 1, 2**31 - 1)]
        keys = [room_key(*pair) for pair in pairs]
        self.assertEqual([room_parts(key) for key in keys], pairs)
        self.assertEqual(len(set(keys)), len(keys))
        self.assertTrue(all(key < 0 for key in keys))
        for bad in ((0, 1), (-1, 1), (1, -1), (1, 2**32)):
            self.assertRaises(ValueError, room_key, *bad)

    def test_delete_room_removes_it_for_everyone(self) -> None:
        """An ILIAS 8 private room is deleted with its presence; its members heard of it."""
        clock = task.Clock()
        bus = LocalBus("local", clock, strict=True)
        chat = ChatRooms("onscreen", bus, clock)
        seen: list = []
        bus.subscribe(chat.topic, lambda envelope: seen.append(envelope["event"]))
        key = room_key(1, 5)
        chat.add_room(1)
        chat.add_room(key, "Side", "6")
        chat.connect(6)
        chat.connect(7)
        chat.add_room_member(key, 6)
        chat.invite(key, 6, 7)
        chat.login("a", 6, "alice")
        chat.enter_room("a", key)
        chat.delete_room(key)
        clock.advance(0)
        deleted = seen[-1]
        self.assertEqual((deleted["type"], deleted["room"], deleted["title"], deleted["members"]),
                         ("room_deleted", key, "Side", [6, 7]))
        self.assertIsNone(chat.get_room(key))
        self.assertEqual(chat.present(key), [])
        self.assertRaises(UnknownRoom, chat.enter_room, "a", key)
        self.assertRaises(UnknownRoom, chat.delete_room, key)


class BackendActionTests(BobAndAliceSeatedMixin, SynchronousTestCase):

    def test_kick_removes_sockets_from_room(self) -> None:
        """The kicked user gets userjustkicked + notice, leaves, and the rest get user_kicked."""
        self.assertTrue(self.chat.kick(1, 7))
        self.assertEqual(self.rec.events("b"), ["userjustkicked",
                                                "notice:kicked_from_private_room"])
        self.assertEqual(self.rec.received("b")[1][1]["data"], {"title": "Main"})
        self.assertEqual(self.rec.events("a"), ["userlist", "notice:user_kicked"])
        self.assertEqual(self.rec.received("a")[1][1]["data"], {"user": "bob"})
        self.assertNotIn("b", self.rec.rooms[1])
        self.chat.post_message("a", 1, "after", {})
        self.assertEqual(self.rec.events("b"), ["userjustkicked",
                                                "notice:kicked_from_private_room"])
        self.assertRaises(NotInRoom, self.chat.post_message, "b", 1, "x", {})

    def test_kicked_member_stays_out_until_php_admits_again(self) -> None:
        """Neither enterRoom nor a new login undoes a kick; PHP's EnterPrivateRoom does."""
        self.chat.kick(1, 7)
        self.rec.clear()
        self.assertRaises(NotInRoom, self.chat.enter_room, "b", 1)
        self.chat.login("b2", 7, "bob")
        self.assertRaises(NotInRoom, self.chat.enter_room, "b2", 1)
        self.assertEqual(self.rec.received("b") + self.rec.received("b2"), [])
        self.chat.connect(7)
        self.chat.add_room_member(1, 7)
        self.chat.enter_room("b2", 1)
        self.assertIn("7", self.rec.received("b2")[1][1]["users"])

    def test_banned_member_is_out_of_every_room_until_php_admits_again(self) -> None:
        """After a ban, a Connect alone admits to nothing; EnterPrivateRoom admits to one room."""
        self.chat.add_room_member(2, 7)
        self.chat.ban(1, 7)
        self.assertIsNone(self.chat.login("b2", 7, "bob"))
        self.chat.connect(7)
        self.chat.login("b2", 7, "bob")
        self.assertRaises(NotInRoom, self.chat.enter_room, "b2", 1)
        self.assertRaises(NotInRoom, self.chat.enter_room, "b2", 2)
        self.chat.add_room_member(2, 7)
        self.chat.enter_room("b2", 2)
        self.assertRaises(NotInRoom, self.chat.enter_room, "b2", 1)

    def test_ban_forgets_the_member(self) -> None:
        """A banned user gets userjustbanned without payload and can no longer act."""
        self.assertTrue(self.chat.ban(1, 7))
        self.assertEqual(self.rec.received("b"), [("userjustbanned", None)])
        self.assertEqual(self.rec.received("a")[1][1]["roomId"], "1")
        self.assertRaises(NotLoggedIn, self.chat.post_message, "b", 1, "x", {})
        self.assertFalse(self.chat.ban(1, 999))

    def test_clear(self) -> None:
        """ClearMessages sends clear and a notice without data to the room."""
        self.chat.clear(1)
        got = self.rec.received("b")
        self.assertEqual(got[0][1], {"type": "clear", "timestamp": got[0][1]["timestamp"],
                                     "content": "history_has_been_cleared", "roomId": 1})
        self.assertNotIn("data", got[1][1])
        self.assertRaises(UnknownRoom, self.chat.clear, 99)

    def test_leave_room(self) -> None:
        """LeavePrivateRoom: the user's sockets get left + userlist and leave the room."""
        self.chat.leave_room(1, 7)
        self.assertEqual(self.rec.events("b"), ["notice:left", "userlist"])
        self.assertEqual(self.rec.events("a"), ["userlist", "notice:private_room_left"])
        self.assertEqual(self.rec.received("a")[1][1]["data"], {"user": "bob", "title": "Main"})
        self.assertRaises(UnknownUser, self.chat.leave_room, 1, 999)

    def test_invite(self) -> None:
        """The invitee becomes a room member and host and invitee are told."""
        self.chat.invite(2, 6, 7)
        self.assertIn(7, self.chat.get_room(2).members)
        self.assertEqual(self.rec.events("a"), ["notice:user_invited"])
        self.assertEqual(self.rec.events("b"), ["user_invited", "notice:user_invited_self"])
        self.assertEqual(self.rec.received("b")[0][1]["title"], "Main")

    def test_rooms_json(self) -> None:
        """GetRooms reports every room under its "<id>_0" key with the present users."""
        body = rooms_body(self.chat)
        self.assertEqual(set(body["rooms"]), {"1_0", "2_0"})
        self.assertEqual(body["rooms"]["1_0"]["title"], "Main")
        self.assertEqual([u["id"] for u in body["rooms"]["1_0"]["users"]], [6, 7])


class UserlistUpkeepTests(SynchronousTestCase):
    """The userlist a renderer keeps up to date equals one built from scratch, after any change."""

    def renderer(self) -> RoomRenderer:
        return RoomRenderer(task.Clock())

    @staticmethod
    def info(user_id: int, identity: Dict[int, tuple]) -> Dict[str, Any]:
        name, picture = identity[user_id]
        return {"id": user_id, "name": name, "picture": picture}

    def test_random_comings_goings_and_renames(self) -> None:
        rng = random.Random(8)
        renderer = self.renderer()
        view = renderer._view(1)
        identity = {user_id: (f"u{user_id}", False) for user_id in range(1, 60)}
        present: set = set()
        for step in range(3000):
            user_id = rng.randrange(1, 60)
            action = rng.randrange(4)
            if action == 0:
                renderer._present(view, self.info(user_id, identity))
                present.add(user_id)
            elif action == 1:
                renderer._absent(view, user_id)
                present.discard(user_id)
            elif action == 2:
                name = rng.choice(["ann", "Zoë", 'q"uote', None, f"u{user_id}"])
                identity[user_id] = (name, identity[user_id][1])
                renderer._on_renamed({"ts": 0, "member": self.info(user_id, identity)})
            else:
                identity[user_id] = (identity[user_id][0], not identity[user_id][1])
                renderer._on_renamed({"ts": 0, "member": self.info(user_id, identity)})
            users = view.userlist()
            expected = {
                str(uid): {"id": uid, "username": identity[uid][0],
                           "profile_picture_visible": identity[uid][1]}
                for uid in sorted(present)
            }
            self.assertEqual(list(users.items()), list(expected.items()), step)
            self.assertEqual(
                json.loads(users.json, object_pairs_hook=list),
                json.loads(json.dumps(expected), object_pairs_hook=list),
                step,
            )

    def test_a_member_in_two_rooms_is_renamed_in_both(self) -> None:
        renderer = self.renderer()
        first, second = renderer._view(1), renderer._view(2)
        for view in (first, second):
            renderer._present(view, {"id": 5, "name": "before", "picture": False})
        renderer._on_renamed({"ts": 0, "member": {"id": 5, "name": "after", "picture": False}})
        self.assertEqual(first.userlist()["5"]["username"], "after")
        self.assertIn('"username":"after"', second.userlist().json)
        renderer._absent(first, 5)
        renderer._on_renamed({"ts": 0, "member": {"id": 5, "name": "again", "picture": False}})
        self.assertEqual(first.userlist(), {})
        self.assertIn('"username":"again"', second.userlist().json)

    def test_a_new_name_in_an_entered_event_reaches_the_other_rooms(self) -> None:
        """A member banned and connected again enters with a new name: every list follows."""
        renderer = self.renderer()
        first, second = renderer._view(1), renderer._view(2)
        renderer._present(first, {"id": 5, "name": "old", "picture": False})
        renderer._present(second, {"id": 5, "name": "new", "picture": True})
        self.assertIn('"username":"new","profile_picture_visible":true', first.userlist().json)


class EventCheckTests(SynchronousTestCase):
    """L{events.check_event}: what another process sends is refused, naming the field, when malformed."""

    MEMBER = {"id": 6, "name": "alice", "picture": False}

    def refused(self, event: Dict[str, Any]) -> str:
        with self.assertRaises(ValueError) as caught:
            check_event(event)
        return str(caught.exception)

    def test_wellformed_events_pass(self) -> None:
        check_event({"type": "left", "ts": 1, "room": 1, "member": self.MEMBER, "last": True,
                     "instance": "node-2", "whole": True})
        check_event({"type": "banned", "ts": 1, "room": None, "member": self.MEMBER, "rooms": [2]})
        check_event({"type": "snapshot", "ts": 1, "rooms": [{"id": 1, "title": None, "owner": "6"}],
                     "members": [dict(self.MEMBER, rooms=[1], claimed=True)], "held": [[1, 6]]})
        check_event({"type": "released", "ts": 1, "member": self.MEMBER})
        # An older version's last word carries no state; this one's does.
        check_event({"type": "instance_stopping", "ts": 1})
        check_event({"type": "instance_stopping", "ts": 1, "rooms": [], "held": [[1, 6]],
                     "members": [dict(self.MEMBER, rooms=[], claimed=False)],
                     "live": ["node-1", "node-2"]})
        check_event({"type": "not_known_here", "anything": None})

    def test_each_malformed_field_is_named(self) -> None:
        self.assertIn("field member", self.refused({"type": "entered", "ts": 1, "room": 1, "title": "t",
                                                    "connection": "c", "first": True}))
        self.assertIn("field ts", self.refused({"type": "cleared", "room": 1}))
        self.assertIn("field room", self.refused({"type": "cleared", "ts": 1, "room": "1"}))
        self.assertIn("field member", self.refused({"type": "left", "ts": 1, "room": 1, "last": True,
                                                    "member": {"id": "six"}}))
        self.assertIn("field rooms", self.refused({"type": "snapshot", "ts": 1, "rooms": 5,
                                                   "members": [], "held": []}))
        self.assertIn("field held", self.refused({"type": "snapshot", "ts": 1, "rooms": [],
                                                  "members": [], "held": [[1, "6"]]}))
        self.assertIn("field held", self.refused({"type": "instance_stopping", "ts": 1,
                                                  "rooms": [], "members": [], "held": 5}))
        self.assertIn("field live", self.refused({"type": "instance_stopping", "ts": 1,
                                                  "rooms": [], "members": [], "held": [],
                                                  "live": [1]}))
        self.assertIn("field members", self.refused({
            "type": "snapshot", "ts": 1, "rooms": [], "held": [],
            "members": [dict(self.MEMBER, rooms=[], claimed="yes")]}))
        self.assertIn("field member", self.refused({"type": "released", "ts": 1}))
        self.assertIn("field whole", self.refused({"type": "left", "ts": 1, "room": 1, "last": True,
                                                   "member": self.MEMBER, "whole": "yes"}))
        self.assertIn("field content", self.refused({
            "type": "message", "ts": 1, "id": "x", "room": 1, "connection": "c",
            "sender": self.MEMBER, "content": None, "format": {}, "target": None}))
