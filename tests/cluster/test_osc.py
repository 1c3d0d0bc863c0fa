"""
The On-Screen Chat across two real ``twistd ilchat`` processes on one MariaDB database and one
Redis prefix: browsers (python-socketio, ILIAS's ``/<client>-im`` calls) on different processes
share conversations, messages, typing, read markers, participant changes and the "accepts
messages" setting; PHP's ``UserConfigChange`` may reach either process; each message row is
written once, by the process that accepted it.

Where a test must know that an event from one process has arrived at the other before it goes
on, it uses that events from one process arrive everywhere in the order it published them: it
waits until something published *after* it (a typing notice) reaches a tab on the other process.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any, Dict, List, Sequence
from urllib.parse import quote

from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.trial.unittest import TestCase

from ilchat.jsonutil import dumps, loads
from tests.ilias.repository_support import sleep
from tests.ilias.test_osc import ALICE, BOB, CAROL, NAMESPACE, Tab
from tests.support.cluster import Cluster, ClusterNode, start_cluster
from tests.support.db import fetch_rows_async, insert_rows_async
from tests.support.http import http_request
from tests.support.server import DEFAULT_CLIENT


DAVE = {"id": 9, "name": "dave"}
ERIN = {"id": 10, "name": "erin"}


def _text(text: str):
    return lambda p: isinstance(p, dict) and p.get("message") == text


def _of(conversation_id: str):
    return lambda p: isinstance(p, dict) and p.get("id") == conversation_id


def _typing_in(conversation_id: str):
    return lambda p: isinstance(p, dict) and p["conversation"]["id"] == conversation_id


class OscClusterTests(TestCase):
    timeout = 240

    async def start(self, accepting: Sequence[int] = (6, 7, 8)) -> Cluster:
        """Two nodes on a database where C{accepting} accept messages (read at each start)."""
        self.cluster = await start_cluster(self, size=2, start=False)
        await insert_rows_async(self.cluster.database, "usr_pref", [
            {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in accepting])
        for node in self.cluster.nodes:
            await self.cluster.start(node.name)
        self.tabs: List[Tab] = []
        self.addCleanup(self._close_tabs)
        return self.cluster

    async def _close_tabs(self) -> None:
        for tab in self.tabs:
            await tab.close()

    async def tab(self, node: ClusterNode, user: Dict[str, Any]) -> Tab:
        """A tab on C{node}, logged in as C{user} (its conversations listed)."""
        tab = Tab(SimpleNamespace(base_url=node.url), NAMESPACE)
        self.tabs.append(tab)
        await tab.connect()
        await tab.emit("login", user["id"], user["name"])
        self.assertEqual(await tab.wait_for("login"), user)
        return tab

    async def open(self, tab: Tab, *users: Dict[str, Any]) -> Dict[str, Any]:
        before = len(tab.payloads("conversation-init"))
        await tab.emit("conversation", list(users))
        return await tab.wait_for("conversation-init", count=before + 1)

    async def user_config_change(self, node: ClusterNode, changes: Dict[int, bool]) -> None:
        """PHP's ``UserConfigChange`` to C{node}."""
        auth = DEFAULT_CLIENT["auth"]
        token = base64.b64encode(f"{auth['key']}:{auth['secret']}".encode()).decode()
        message = dumps({str(u): {"acceptsMessages": accepts} for u, accepts in changes.items()})
        response = await http_request(
            f"{node.url}/backend/UserConfigChange/{self.cluster.client_name}?message={quote(message)}",
            headers={"Authorization": f"Basic {token}"})
        self.assertEqual((response.code, response.json()), (200, {"status": 200}))

    async def typed(self, typist: Tab, user: Dict[str, Any], conversation_id: str, *readers: Tab) -> None:
        """C{typist} starts typing and every reader sees it: what was published before it arrived too."""
        counts = [len(r.payloads("userStartedTyping", _typing_in(conversation_id))) for r in readers]
        await typist.emit("userStartedTyping", conversation_id, user["id"])
        for reader, count in zip(readers, counts):
            notice = await reader.wait_for("userStartedTyping", _typing_in(conversation_id), count=count + 1)
            self.assertEqual(notice["participant"], user)

    async def rows(self, sql: str, args: Sequence[Any] = ()) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.cluster.database, sql, args)

    async def message_rows(self, conversation_id: str, count: int) -> List[Dict[str, Any]]:
        """The conversation's ``osc_messages`` rows once there are C{count} (written after delivery)."""
        sql = "SELECT id, user_id, message FROM osc_messages WHERE conversation_id = ? ORDER BY timestamp"
        found: List[Dict[str, Any]] = []

        async def enough() -> bool:
            found[:] = await self.rows(sql, (conversation_id,))
            return len(found) >= count

        for _ in range(500):
            if await enough():
                return found
            await sleep(0.02)
        self.fail(f"{count} rows expected in {conversation_id}, found {found}")

    async def test_a_conversation_of_one_process_takes_messages_from_the_other(self) -> None:
        """
        Alice has a tab on each process, Bob one on node 2. A conversation Alice opens on node 1
        reaches both of her tabs; Bob's messages from node 2 and hers from node 1 reach every
        tab; typing crosses; history, unread counts and read markers agree on both processes;
        each message is one row.
        """
        cluster = await self.start()
        one, two = cluster.nodes
        alice1, alice2, bob = await self.tab(one, ALICE), await self.tab(two, ALICE), await self.tab(two, BOB)

        init = await self.open(alice1, ALICE, BOB)
        conv = init["id"]
        self.assertEqual(await alice2.wait_for("conversation-init"), init)
        self.assertEqual(init["participants"], [ALICE, BOB])

        # Bob reads up to now (node 2), so the unread counts below are his real ones.
        self.assertIsNone(await bob.call("activity", conv, 7, 1))
        await bob.emit("message", conv, 7, "from bob on node 2")
        for tab in (alice1, alice2, bob):
            message = await tab.wait_for("message", _text("from bob on node 2"))
        self.assertEqual((message["conversationId"], message["userId"]), (conv, 7))
        for text in ("alice 1", "alice 2"):
            await alice1.emit("message", conv, 6, text)
        for tab in (alice1, alice2, bob):
            await tab.wait_for("message", _text("alice 2"))
        # Bob's count is computed on node 1 from the shared tables: his message and both of Alice's.
        update = await bob.wait_for("conversation", lambda p: p["latestMessage"] and p["latestMessage"]["message"] == "alice 2")
        self.assertEqual(update["numNewMessages"], 3)
        self.assertEqual([m["message"] for m in bob.payloads("message")], ["from bob on node 2", "alice 1", "alice 2"])

        await self.typed(bob, BOB, conv, alice1, alice2)
        await self.typed(alice2, ALICE, conv, bob)
        self.assertEqual(alice1.payloads("userStartedTyping", _typing_in(conv))[0]["conversation"]["id"], conv)
        self.assertEqual(alice2.payloads("userStartedTyping", _typing_in(conv)), alice1.payloads("userStartedTyping", _typing_in(conv)))

        rows = await self.message_rows(conv, 3)
        self.assertEqual([(r["user_id"], r["message"]) for r in rows],
                         [(7, "from bob on node 2"), (6, "alice 1"), (6, "alice 2")])
        self.assertEqual(sorted(r["id"] for r in rows), sorted(m["id"] for m in bob.payloads("message")))

        # The history is the same from either process.
        pages = []
        for tab in (alice1, bob):
            await tab.emit("history", conv)
            pages.append(await tab.wait_for("history"))
        self.assertEqual([m["message"] for m in pages[0]["messages"]], ["alice 2", "alice 1", "from bob on node 2"])
        self.assertEqual(pages[0]["messages"], pages[1]["messages"])

        # Bob's read marker set on node 2 is what a new tab of his on node 1 is told.
        self.assertIsNone(await bob.call("activity", conv, 7, pages[0]["messages"][0]["timestamp"]))
        bob_on_one = await self.tab(one, BOB)
        listed = await bob_on_one.wait_for("conversation", _of(conv))
        self.assertEqual((listed["numNewMessages"], listed["latestMessage"]["message"]), (0, "alice 2"))
        await bob_on_one.emit("message", conv, 7, "bob from node 1")
        for tab in (alice1, alice2, bob):
            await tab.wait_for("message", _text("bob from node 1"))

        # Exactly once: one row per message, whichever process took it.
        await self.message_rows(conv, 4)
        rows = await self.rows("SELECT id, COUNT(*) AS n FROM osc_messages GROUP BY id")
        self.assertEqual(sorted(r["n"] for r in rows), [1, 1, 1, 1])
        self.assertEqual(len(await self.rows("SELECT id FROM osc_conversation")), 1)

    async def test_participants_added_and_removed_on_either_process(self) -> None:
        """
        Carol (node 1) is added on node 1 and removed on node 1, added again from node 2: node 2's
        messages and lookups always follow the current participants, never a stale list.
        """
        cluster = await self.start()
        one, two = cluster.nodes
        alice, carol, bob = await self.tab(one, ALICE), await self.tab(one, CAROL), await self.tab(two, BOB)
        alice2, carol2 = await self.tab(two, ALICE), await self.tab(two, CAROL)

        pair = (await self.open(alice, ALICE, BOB))["id"]
        await alice.emit("addUser", pair, 8, "carol")
        added = await alice.wait_for("addUser")
        group = added["id"]
        self.assertNotEqual(group, pair)
        self.assertEqual((added["participants"], added["isGroup"]), ([ALICE, BOB, CAROL], True))
        # Alice's tab on node 2 gets the group too; ``addUser`` answers the asking tab only.
        self.assertEqual((await alice2.wait_for("conversation", _of(group)))["participants"], [ALICE, BOB, CAROL])

        # Node 2 learnt the group: Bob's message there reaches Carol and Alice on node 1.
        await bob.emit("message", group, 7, "hello group")
        for tab in (alice, alice2, carol, carol2, bob):
            await tab.wait_for("message", _text("hello group"))
        update = await carol.wait_for("conversation", _of(group))
        self.assertEqual(update["participants"], [ALICE, BOB, CAROL])
        self.assertEqual(alice2.payloads("addUser"), [])

        # Carol leaves on node 1 (both her tabs hear it); node 2 must not send her Bob's next message.
        await carol.emit("removeUser", group, 8, "carol")
        for tab in (carol, carol2):
            self.assertEqual((await tab.wait_for("removeUser"))["participants"], [ALICE, BOB])
        await self.typed(alice, ALICE, group, bob)  # node 1's removal has reached node 2
        await bob.emit("message", group, 7, "without carol")
        for tab in (alice, alice2, bob):
            await tab.wait_for("message", _text("without carol"))
        self.assertEqual(bob.payloads("conversation", _of(group))[-1]["participants"], [ALICE, BOB])
        # Node 2's exact-set lookup follows it too: [alice, bob] is the 1:1, [alice, bob, carol] new.
        self.assertEqual((await self.open(bob, BOB, ALICE))["id"], pair)
        trio = (await self.open(bob, ALICE, BOB, CAROL))["id"]
        self.assertNotIn(trio, (pair, group))

        # Bob adds Carol back to the group on node 2: node 1 has her in it again.
        await bob.emit("addUser", group, 8, "carol")
        self.assertEqual((await bob.wait_for("addUser"))["id"], group)
        await self.typed(bob, BOB, group, alice)
        await alice.emit("message", group, 6, "carol is back")
        await carol.wait_for("message", _text("carol is back"))
        for tab in (carol, carol2):
            await tab.wait_for("message", _text("carol is back"))
            self.assertEqual([m["message"] for m in tab.payloads("message")], ["hello group", "carol is back"])

        stored = {r["id"]: r["participants"] for r in await self.rows("SELECT id, participants FROM osc_conversation")}
        self.assertEqual(stored[group], dumps([ALICE, BOB, CAROL]))
        self.assertEqual(stored[pair], dumps([ALICE, BOB]))
        self.assertEqual(len(stored), 3)
        # A new tab of Carol's on node 2 lists the group with its participants.
        carol3 = await self.tab(two, CAROL)
        listed = await carol3.wait_for("conversation", _of(group))
        self.assertEqual(listed["participants"], [ALICE, BOB, CAROL])

        # Carol leaves from node 2 this time; node 1 no longer sends her the group's messages.
        await carol2.emit("removeUser", group, 8, "carol")
        for tab in (carol, carol2, carol3):
            await tab.wait_for("removeUser", count=2 if tab is not carol3 else 1)
        await self.typed(bob, BOB, group, alice)  # node 2's removal has reached node 1
        await alice.emit("message", group, 6, "carol left again")
        for tab in (alice, bob):
            await tab.wait_for("message", _text("carol left again"))
        # A message node 1 publishes after that one: once Carol has it, she would have had the other.
        direct = (await self.open(alice, ALICE, CAROL))["id"]
        await alice.emit("message", direct, 6, "just to carol")
        for tab in (carol, carol2):
            await tab.wait_for("message", _text("just to carol"))
            self.assertEqual([m["message"] for m in tab.payloads("message")],
                             ["hello group", "carol is back", "just to carol"])
        stored = await self.rows("SELECT participants FROM osc_conversation WHERE id = ?", (group,))
        self.assertEqual(stored[0]["participants"], dumps([ALICE, BOB]))

    async def test_two_processes_add_to_one_group_at_once(self) -> None:
        """
        Alice adds Dave on node 1 while Bob adds Erin on node 2: whatever the interleaving, both
        processes and the stored row end with all five, and messages from either reach both.
        """
        cluster = await self.start(accepting=(6, 7, 8, 9, 10))
        one, two = cluster.nodes
        alice, bob = await self.tab(one, ALICE), await self.tab(two, BOB)
        dave, erin = await self.tab(two, DAVE), await self.tab(one, ERIN)
        group = (await self.open(alice, ALICE, BOB, CAROL))["id"]
        await self.typed(alice, ALICE, group, bob)  # node 2 knows the group

        await gatherResults([ensureDeferred(alice.emit("addUser", group, 9, "dave")),
                             ensureDeferred(bob.emit("addUser", group, 10, "erin"))])
        await alice.wait_for("addUser")
        await bob.wait_for("addUser")
        await self.typed(alice, ALICE, group, bob)
        await self.typed(bob, BOB, group, alice)  # each process has the other's change now

        everyone = {6, 7, 8, 9, 10}
        await alice.emit("message", group, 6, "from node 1")
        await bob.emit("message", group, 7, "from node 2")
        for tab in (dave, erin):
            await tab.wait_for("message", _text("from node 1"))
            await tab.wait_for("message", _text("from node 2"))
        # The conversation updates that came with the two messages: one made on each process.
        for tab in (alice, bob):
            await tab.wait_for("message", _text("from node 2"))
            await tab.wait_for("message", _text("from node 1"))
            updates = tab.payloads("conversation", _of(group))[-2:]
            self.assertEqual([{p["id"] for p in u["participants"]} for u in updates], [everyone, everyone])
        stored = await self.rows("SELECT participants FROM osc_conversation WHERE id = ?", (group,))
        self.assertEqual({p["id"] for p in loads(stored[0]["participants"])}, everyone)

    async def test_user_config_change_to_either_process_applies_on_both(self) -> None:
        """
        ``UserConfigChange`` to node 2 stops Bob's messages from node 1; one to node 1 lets his
        messages from node 2 through again.
        """
        cluster = await self.start()
        one, two = cluster.nodes
        alice, bob = await self.tab(one, ALICE), await self.tab(two, BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]

        await self.user_config_change(two, {7: False})
        await self.typed(bob, BOB, conv, alice)  # node 2's change has reached node 1
        await alice.emit("message", conv, 6, "bob does not take this")
        suppressed = await alice.wait_for("participantsSuppressedMessages")
        self.assertEqual((suppressed["message"], suppressed["ignoredParticipants"]), ("bob does not take this", {"7": 7}))
        await bob.emit("message", conv, 7, "nor may he send")
        self.assertEqual((await bob.wait_for("senderSuppressesMessages"))["message"], "nor may he send")

        await self.user_config_change(one, {7: True})
        await self.typed(alice, ALICE, conv, bob)  # node 1's change has reached node 2
        await bob.emit("message", conv, 7, "bob is back")
        await alice.wait_for("message", _text("bob is back"))
        await alice.emit("message", conv, 6, "welcome back")
        for tab in (alice, bob):
            await tab.wait_for("message", _text("welcome back"))
        self.assertEqual([m["message"] for m in bob.payloads("message")], ["bob is back", "welcome back"])
        self.assertEqual([m["message"] for m in alice.payloads("message")], ["bob does not take this", "bob is back", "welcome back"])
        rows = await self.message_rows(conv, 3)
        self.assertEqual([r["message"] for r in rows], ["bob does not take this", "bob is back", "welcome back"])
