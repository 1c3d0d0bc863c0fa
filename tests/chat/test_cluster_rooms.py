"""
The room domain across processes, without processes: two or three L{ChatRooms} on strict
L{LocalBus}es wired to each other, on one fake clock, each with its own L{RoomRenderer}.

Each bus forwards what its own process publishes to the others (as Redis does, on a later
turn, in each publisher's order), so every assertion here is about what the real cluster
tests (``tests/cluster``) check with processes, only fast and deterministic.
"""

from typing import Any, Dict, List

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from ilchat.bus import LocalBus
from ilchat.chat.cluster_presence import ClusterPresence
from ilchat.chat.model import room_key
from ilchat.chat.presence import MOVE_CONFIRM_DELAY
from ilchat.chat.rooms import ChatRooms, NotInRoom, NotLoggedIn, UnknownRoom
from ilchat.ilias.rendering import RoomRenderer
from ilchat.ilias.room_namespace import rooms_body
from tests.chat.test_rooms import _Namespace, _Recorder, _Socket

TOPIC = "room:onscreen"


class _Node:
    """One process: its bus, domain, renderer and the rows its hook would move."""

    def __init__(self, name: str, clock: task.Clock) -> None:
        self.name = name
        self.bus = LocalBus(name, clock, strict=True)
        self.gone: List[tuple] = []
        self.chat = ChatRooms("onscreen", self.bus, clock,
                              on_member_gone=lambda uid, rooms: self.gone.append((uid, rooms)))
        self.rec = _Recorder(clock)
        self.renderer = RoomRenderer(clock, _Namespace(self.rec), instance=name)
        self.bus.subscribe(TOPIC, self.rec.event_seen)
        self.bus.subscribe(TOPIC, self.renderer.deliver)

    def login(self, conn: str, user_id: int, name: str) -> None:
        assert self.chat.login(conn, user_id, name) is not None
        self.renderer.add_socket(_Socket(conn, self.rec), user_id)

    def lose(self, conn: str) -> None:
        self.renderer.remove_socket(conn)
        self.chat.connection_lost(conn)

    def userlist(self, room: int = 1) -> List[int]:
        return list(self.renderer._view(room).ids)


class ClusterRoomsMixin:
    names = ("node-1", "node-2")

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1795301006.833)
        self.nodes: List[_Node] = []
        for name in self.names:
            self.add_node(name)
        self.a, self.b = self.nodes[0], self.nodes[1]
        self.a.chat.add_room(1)
        self.a.chat.add_room(2)
        self.settle()

    def add_node(self, name: str) -> _Node:
        node = _Node(name, self.clock)
        for other in self.nodes:
            self._wire(node, other)
            self._wire(other, node)
        self.nodes.append(node)
        self.successResultOf(node.chat.start())
        return node

    @staticmethod
    def _wire(source: _Node, target: _Node) -> None:
        def forward(envelope: Dict[str, Any]) -> None:
            if envelope["origin"] == source.name:
                target.bus.deliver(envelope)

        source.bus.subscribe(TOPIC, forward)

    def settle(self) -> None:
        for _ in range(10):
            self.clock.advance(0)

    def confirmed(self) -> None:
        """Past the wait before a process with peers moves the rows of those it saw leave."""
        self.clock.advance(MOVE_CONFIRM_DELAY)
        self.settle()

    def connect(self, node: _Node, user_id: int, room: int = 1) -> None:
        """PHP's Connect and EnterPrivateRoom, to C{node}."""
        node.chat.connect(user_id)
        node.chat.add_room_member(room, user_id)
        self.settle()

    def enter(self, node: _Node, conn: str, user_id: int, name: str, room: int = 1) -> None:
        node.login(conn, user_id, name)
        node.chat.enter_room(conn, room)
        self.settle()


class ReplicationTests(ClusterRoomsMixin, SynchronousTestCase):
    def test_rooms_and_admissions_reach_every_process(self) -> None:
        """PHP calls node 1; the browser is on node 2: it enters, and both list it once."""
        self.assertEqual(sorted(r.id for r in self.b.chat.rooms()), [1, 2])
        self.connect(self.a, 7)
        self.enter(self.b, "b7", 7, "bob")
        self.assertEqual(self.a.userlist(), [7])
        self.assertEqual(self.b.userlist(), [7])
        self.assertEqual([u["id"] for u in rooms_body(self.a.chat)["rooms"]["1_0"]["users"]], [7])
        self.assertRaises(NotInRoom, self.b.chat.enter_room, "b7", 2)
        self.b.chat.add_room(5, "Side", "7")  # PHP's CreatePrivateRoom, to node 2
        self.settle()
        self.assertEqual((self.a.chat.get_room(5).title, self.a.chat.get_room(5).owner),
                         ("Side", "7"))

    def test_private_room_across_processes(self) -> None:
        """An ILIAS 8 private room made on node 1 is entered on node 2, deleted from node 1."""
        key = room_key(1, 5)
        for node in self.nodes:
            node.renderer.private_rooms = True
        self.a.chat.add_room(key, "Side", "7")
        self.connect(self.a, 7, room=key)
        self.enter(self.b, "b7", 7, "bob", room=key)
        self.assertEqual(self.a.userlist(key), [7])
        self.assertEqual(self.b.rec.rooms[1], {"b7"})  # socket room "1_5" (the recorder's 1)
        self.a.chat.delete_room(key)
        self.settle()
        self.assertIsNone(self.b.chat.get_room(key))
        self.assertEqual(self.b.chat.present(key), [])
        deleted = [payload for event, payload in self.b.rec.received("b7")
                   if event == "private_room_deleted"]
        self.assertEqual([(p["roomId"], p["subRoomId"]) for p in deleted], [(1, 5)])
        self.assertEqual(self.b.rec.rooms[1], set())
        self.assertRaises(UnknownRoom, self.b.chat.enter_room, "b7", key)

    def test_ilias8_notices_are_stored_once_by_their_publisher(self) -> None:
        """
        ILIAS 8 stores the connect and disconnected notices: every renderer sees the events, only
        the publisher's records them; a second tab elsewhere is no second connect.
        """
        stored: Dict[str, List[tuple]] = {node.name: [] for node in self.nodes}
        for node in self.nodes:
            node.renderer.private_rooms = True
            node.renderer.notice_history = (
                lambda key, notice, name=node.name: stored[name].append(
                    (key, notice["content"], notice["data"].get("username"))))
        self.connect(self.a, 7)
        self.connect(self.a, 8)
        self.enter(self.b, "b7", 7, "bob")
        self.enter(self.a, "a8", 8, "carol")
        self.enter(self.a, "a7", 7, "bob")
        self.assertEqual(stored, {"node-1": [(1, "connect", "carol")],
                                  "node-2": [(1, "connect", "bob")]})
        self.b.lose("b7")
        self.clock.advance(15)
        self.settle()
        self.assertEqual(len(stored["node-1"] + stored["node-2"]), 2)  # bob is still on node 1
        self.a.lose("a7")
        self.clock.advance(15)
        self.settle()
        self.assertEqual(stored, {"node-1": [(1, "connect", "carol"), (1, "disconnected", "bob")],
                                  "node-2": [(1, "connect", "bob")]})

    def test_an_admission_from_a_third_process_before_the_room_event(self) -> None:
        """node 3 admits to a room node 2 created; node 1 hears node 3 first."""
        c = self.add_node("node-3")
        self.settle()
        self.b.chat.add_room(6, "Late")
        c.chat.add_room(6, "Late")  # node 3 got node 2's event; node 1 not yet (simulated)
        self.a.chat._rooms.pop(6, None)
        c.chat.connect(9)
        c.chat.add_room_member(6, 9)
        self.settle()
        self.assertIn(9, self.a.chat.get_room(6).members)
        self.assertEqual(self.a.chat.get_room(6).title, "Late")

    def test_tabs_on_two_processes_are_one_entry_and_one_departure(self) -> None:
        self.connect(self.a, 7)
        self.connect(self.a, 8)
        self.enter(self.a, "a8", 8, "ann")
        self.enter(self.a, "a7", 7, "bob")
        self.a.rec.clear()
        self.enter(self.b, "b7", 7, "bob")
        self.assertEqual(self.a.userlist(), [7, 8])
        self.assertEqual(self.b.userlist(), [7, 8])
        # No "connect" notice for the second tab, on either process.
        self.assertNotIn("notice:connect", self.a.rec.events("a8"))
        self.a.lose("a7")
        self.clock.advance(16)
        self.settle()
        self.assertEqual(self.a.userlist(), [7, 8])
        self.assertNotIn("notice:disconnected", self.a.rec.events("a8"))
        self.assertEqual(self.a.gone, [])  # bob is online on node 2: his rows stay
        self.assertIn(7, self.a.chat.get_room(1).members)
        # The last tab goes: now everyone sees the departure, and node 2 moves the rows.
        self.b.lose("b7")
        self.clock.advance(16)
        self.settle()
        self.assertEqual(self.a.userlist(), [8])
        self.assertIn("notice:disconnected", self.a.rec.events("a8"))
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual(self.b.gone, [(7, [1])])
        self.assertEqual(self.a.gone, [])
        self.assertNotIn(7, self.a.chat.get_room(1).members)

    def test_graces_that_expire_at_once_on_two_processes_move_the_row(self) -> None:
        """
        Both tabs gone at once: each grace ends while the other process still holds bob
        (``last`` false on both); the other's ``left`` ends him, and each moves the row (the
        store's move is idempotent), where before nobody did.
        """
        self.connect(self.a, 7)
        self.enter(self.a, "a7", 7, "bob")
        self.enter(self.b, "b7", 7, "bob")
        self.a.lose("a7")
        self.b.lose("b7")
        self.clock.advance(15)  # both graces in one turn: neither heard the other's left yet
        self.settle()
        lefts = [e for e in self.a.rec.events_published if e["type"] == "left"]
        self.assertEqual([e["last"] for e in lefts], [False, False])
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual((self.a.gone, self.b.gone), ([(7, [1])], [(7, [1])]))
        for node in (self.a, self.b):
            self.assertEqual(node.userlist(), [])
            self.assertEqual(node.chat._unfinished, set())

    def test_graces_one_after_the_other_move_the_row_once(self) -> None:
        self.connect(self.a, 7)
        self.enter(self.a, "a7", 7, "bob")
        self.enter(self.b, "b7", 7, "bob")
        self.a.lose("a7")
        self.clock.advance(5)
        self.b.lose("b7")
        self.clock.advance(10)
        self.settle()
        self.assertEqual(self.a.chat._unfinished, {(1, 7)})
        self.clock.advance(5)
        self.settle()
        lefts = [e for e in self.a.rec.events_published if e["type"] == "left"]
        self.assertEqual([e["last"] for e in lefts], [False, True])
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual((self.a.gone, self.b.gone), ([], [(7, [1])]))
        self.assertEqual(self.a.chat._unfinished, set())

    def _forgotten(self, node: _Node, user_id: int) -> None:
        self.assertIsNone(node.chat.get_member(user_id))
        self.assertFalse(node.chat.claims.claimed(user_id))
        self.assertNotIn(user_id, node.chat._touched)
        self.assertFalse(any(user_id in room.members for room in node.chat.rooms()))
        self.assertEqual(node.chat.presence.rooms_of(user_id), [])

    def test_remote_only_members_are_forgotten_when_their_process_lets_go(self) -> None:
        """
        Node 2 knows bob and ann only through node 1: once node 1's grace ends them (bob in
        two rooms, ann never entered but admitted), node 2 keeps nothing of them; cyd, also
        on node 2, stays known on both.
        """
        self.connect(self.a, 7)
        self.a.chat.add_room_member(2, 7)
        self.enter(self.a, "a7", 7, "bob")
        self.a.chat.enter_room("a7", 2)
        self.connect(self.a, 9)
        self.enter(self.a, "a9", 9, "cyd")
        self.enter(self.b, "b9", 9, "cyd")
        self.assertIsNotNone(self.b.chat.get_member(7))
        for conn in ("a7", "a9"):
            self.a.lose(conn)
        self.clock.advance(16)
        self.settle()
        for node in (self.a, self.b):
            self._forgotten(node, 7)
        self.assertIsNotNone(self.b.chat.get_member(9))
        self.assertIsNotNone(self.a.chat.get_member(9))  # online on node 2: still known
        # Then cyd's last tab goes too: node 1 forgets them as well (no leak on either side).
        self.b.lose("b9")
        self.clock.advance(16)
        self.settle()
        for node in (self.a, self.b):
            self._forgotten(node, 9)
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual(self.b.gone, [(9, [1])])

    def test_invitees_who_never_came_are_forgotten_with_their_room(self) -> None:
        """
        PHP invites ann (8) and cyd (9) into bob's private room on node 1; neither ever
        connects. Node 2 keeps them for node 1 (its claim): a kick of cyd, then the room's
        deletion, leave nothing of either on both processes; bob, connected (and admitted to
        room 1), stays.
        """
        key = room_key(1, 5)
        self.a.chat.add_room(key, "Side", "7")
        self.connect(self.a, 7)
        self.a.chat.add_room_member(key, 7)
        self.enter(self.a, "a7", 7, "bob", room=key)
        for invitee in (8, 9):
            self.a.chat.invite(key, 7, invitee)
        self.settle()
        for node in (self.a, self.b):
            self.assertEqual(sorted(node.chat.get_room(key).members), [7, 8, 9])
        self.assertEqual((self.b.chat.claims.holders(8), self.b.chat.claims.holders(9)),
                         ({"node-1"}, {"node-1"}))
        self.assertTrue(self.a.chat.kick(key, 9))
        self.settle()
        for node in (self.a, self.b):
            self._forgotten(node, 9)
        self.a.chat.delete_room(key)
        self.settle()
        for node in (self.a, self.b):
            self._forgotten(node, 8)
            self.assertIsNotNone(node.chat.get_member(7))
        # Deleted from node 2 (PHP may call any process): the same.
        self.a.chat.add_room(key, "Again", "7")
        self.a.chat.add_room_member(key, 7)
        self.a.chat.invite(key, 7, 8)
        self.settle()
        self.assertEqual(self.b.chat.claims.holders(8), {"node-1"})
        self.b.chat.delete_room(key)
        self.settle()
        for node in (self.a, self.b):
            self._forgotten(node, 8)
            self.assertIsNotNone(node.chat.get_member(7))

    def test_a_departed_process_leaves_no_members_behind(self) -> None:
        self.connect(self.a, 7)
        self.enter(self.a, "a7", 7, "bob")
        self.connect(self.a, 8)  # admitted only: PHP's Connect, no page yet
        self.settle()
        self.assertIn(8, self.b.chat.get_room(1).members)
        self.successResultOf(self.a.chat.stop())
        self.settle()
        self.clock.advance(16)
        self.settle()
        self._forgotten(self.b, 7)
        self._forgotten(self.b, 8)
        self.assertEqual(self.b.chat.presence.present(1), [])

    def test_whispers_typing_and_messages_across(self) -> None:
        self.connect(self.a, 7)
        self.connect(self.b, 8)
        self.enter(self.a, "a7", 7, "bob")
        self.enter(self.b, "b8", 8, "ann")
        self.a.chat.post_message("a7", 1, "psst", {}, {"id": 8, "public": 0})
        self.a.chat.typing("a7", 1, True)
        self.settle()
        got = self.b.rec.received("b8")
        whisper = [p for e, p in got if e == "message"]
        self.assertEqual(whisper[0]["target"], {"username": "ann", "id": 8, "public": 0})
        self.assertIn("userStartedTyping", [e for e, _ in got])

    def test_kick_ban_clear_invite_from_either_process(self) -> None:
        self.connect(self.a, 7)
        self.connect(self.a, 8)
        self.enter(self.b, "b7", 7, "bob")
        self.enter(self.b, "b8", 8, "ann")
        self.assertTrue(self.a.chat.kick(1, 7))
        self.settle()
        self.assertIn("userjustkicked", self.b.rec.events("b7"))
        self.assertEqual(self.b.userlist(), [8])
        self.assertRaises(NotInRoom, self.b.chat.enter_room, "b7", 1)
        self.a.chat.clear(1)
        self.a.chat.invite(2, 8, 7)
        self.settle()
        self.assertIn("clear", self.b.rec.events("b8"))
        self.assertIn("user_invited", self.b.rec.events("b7"))
        self.b.chat.enter_room("b7", 2)
        self.assertTrue(self.a.chat.ban(1, 8))
        self.settle()
        self.assertIn("userjustbanned", self.b.rec.events("b8"))
        self.assertRaises(NotLoggedIn, self.b.chat.post_message, "b8", 1, "hi")

    def test_a_late_process_catches_up(self) -> None:
        self.connect(self.a, 7)
        self.enter(self.a, "a7", 7, "bob")
        self.connect(self.b, 8)
        self.enter(self.b, "b8", 8, "ann")
        late = self.add_node("node-3")
        self.settle()
        self.assertEqual(sorted(r.id for r in late.chat.rooms()), [1, 2])
        self.assertEqual(late.userlist(), [7, 8])
        self.assertIn(7, late.chat.get_room(1).members)
        late.login("c7", 7, "bob")
        late.chat.enter_room("c7", 1)
        self.settle()
        # Applying the same snapshot again changes nothing.
        self.b.chat.request_sync(fresh=False)
        self.settle()
        self.assertEqual(late.userlist(), [7, 8])
        self.assertEqual(late.chat.presence.holders(1, 7), {"node-1", "node-3"})


class DepartureTests(ClusterRoomsMixin, SynchronousTestCase):
    names = ("node-1", "node-2", "node-3")

    def test_a_clean_stop_ends_its_holdings_after_the_grace_published_once(self) -> None:
        a, b, c = self.nodes
        self.connect(a, 7)
        self.connect(a, 8)
        self.enter(a, "a7", 7, "bob")
        self.enter(a, "a8", 8, "ann")
        self.connect(c, 9)
        self.enter(c, "c9", 9, "cyd")
        self.successResultOf(a.chat.stop())
        self.settle()
        # bob reconnects to node 3 within the grace; ann does not come back.
        self.clock.advance(5)
        c.login("c7", 7, "bob")
        c.chat.enter_room("c7", 1)
        self.settle()
        c.rec.clear()
        self.clock.advance(11)
        self.settle()
        self.assertEqual(b.userlist(), [7, 9])
        self.assertEqual(c.userlist(), [7, 9])
        events = c.rec.events("c9")
        self.assertEqual(events.count("notice:disconnected"), 1)  # ann's only
        lefts = [e for e in b.rec.events_published if e["type"] == "left"]
        self.assertEqual([(e["member"]["id"], e["instance"]) for e in lefts],
                         [(7, "node-1"), (8, "node-1")])
        # node 2, the lowest name that saw it, moved ann's rows; nobody moved bob's.
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual(b.gone, [(8, [1])])
        self.assertEqual(c.gone, [])
        self.assertNotIn(8, c.chat.get_room(1).members)
        self.assertNotIn("node-1", c.chat.live_instances())

    def test_instance_gone_twice_and_a_restart_under_the_same_name(self) -> None:
        a, b, c = self.nodes
        self.connect(a, 7)
        self.enter(a, "a7", 7, "bob")
        for node in (b, c):
            node.chat.instance_gone("node-1")  # a SIGKILL, as ilchat.cluster would report it
            node.chat.instance_gone("node-1")
        # It starts again under its name and bob's page reconnects to it.
        restarted = _Node("node-1", self.clock)
        self.nodes[0] = restarted
        for other in (b, c):
            self._wire(restarted, other)
            self._wire(other, restarted)
        self.successResultOf(restarted.chat.start())
        self.settle()
        restarted.chat.connect(7)
        self.settle()
        self.assertIn(7, restarted.chat.get_room(1).members)
        restarted.login("r7", 7, "bob")
        restarted.chat.enter_room("r7", 1)
        self.settle()
        self.clock.advance(16)
        self.settle()
        for node in (b, c, restarted):
            self.assertEqual(node.userlist(), [7], node.name)
        self.assertEqual(b.gone + c.gone, [])

    def test_the_next_lowest_takes_over_when_the_decider_stops_in_the_grace(self) -> None:
        a, b, c = self.nodes
        self.connect(a, 7)
        self.enter(a, "a7", 7, "bob")
        self.successResultOf(a.chat.stop())
        self.settle()
        self.clock.advance(5)
        self.successResultOf(b.chat.stop())  # node 2 would have decided for node 1
        self.settle()
        self.clock.advance(11)
        self.settle()
        self.assertEqual(c.userlist(), [])
        lefts = [e for e in c.rec.events_published if e["type"] == "left"]
        self.assertEqual([e["instance"] for e in lefts], ["node-1"])
        self.confirmed()  # the rows move once the bus had time to say otherwise
        self.assertEqual(c.gone, [(7, [1])])
        self.assertEqual(b.gone, [])


class ClusterPresenceTests(SynchronousTestCase):
    """The helper itself: the union of holdings, whatever the interleaving."""

    def test_a_stopping_instance_says_what_it_held(self) -> None:
        """Heard of only through its ``instance_stopping``: held by its previous run, until the ``left``."""
        presence = ClusterPresence("n2")
        bob = {"id": 7, "name": "bob", "picture": False}
        stopping = {"type": "instance_stopping", "ts": 1, "rooms": [], "held": [[1, 7]],
                    "members": [dict(bob, rooms=[1], via=None)]}
        self.assertEqual(presence.apply_event("n1", stopping), [(1, bob, True)])
        self.assertEqual(presence.holders(1, 7), {"n1~"})
        departed = {"type": "left", "room": 1, "member": bob, "instance": "n1", "last": True}
        self.assertEqual(presence.apply_event("n2", departed), [(1, bob, False)])

    def test_union_and_previous_runs(self) -> None:
        presence = ClusterPresence()
        bob = {"id": 7, "name": "bob", "picture": False}
        entered = {"type": "entered", "room": 1, "member": bob, "connection": "x", "title": "t",
                   "first": True}
        self.assertEqual(presence.apply_event("n1", entered), [(1, bob, True)])
        self.assertEqual(presence.apply_event("n2", entered), [])
        self.assertEqual(presence.apply_event("n1", {"type": "left", "room": 1, "member": bob}), [])
        presence.apply_event("n2", {"type": "instance_stopping"})
        presence.apply_event("n2", entered)  # back on the restarted n2
        self.assertEqual(presence.holders(1, 7), {"n2", "n2~"})
        departed = {"type": "left", "room": 1, "member": bob, "instance": "n2"}
        self.assertEqual(presence.apply_event("n3", departed), [])
        self.assertEqual(presence.holders(1, 7), {"n2"})
        self.assertEqual(presence.apply_event("n2", {"type": "snapshot", "held": [],
                                                      "members": []}), [(1, bob, False)])
