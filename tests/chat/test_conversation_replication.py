"""
Tests for L{ilchat.chat.conversation_replication}: one process's On-Screen Chat events, built by
L{ilchat.chat.conversation_events} from its registry, applied to another process's registry.
"""

from twisted.trial.unittest import SynchronousTestCase

from ilchat.chat import conversation_events as events
from ilchat.chat.conversation_model import Conversation, Participant
from ilchat.chat.conversation_registry import ConversationRegistry
from ilchat.chat.conversation_replication import apply_remote_event, purged_ids
from ilchat.jsonutil import dumps, loads

ALICE, BOB, CAROL, DAVE, ERIN = (6, "alice"), (7, "bob"), (8, "carol"), (9, "dave"), (10, "erin")


def _wire(event):
    """What another process receives: the event after a JSON round trip."""
    return loads(dumps(event))


def _make(registry: ConversationRegistry, cid: str, users, is_group: bool = False) -> Conversation:
    conversation = Conversation(cid, is_group)
    for user_id, name in users:
        conversation.participants.append(registry.participant(user_id, name))
    registry.add(conversation)
    return conversation


def _message(cid: str, sender: int, text: str, timestamp: int) -> dict:
    return {"id": f"m-{timestamp}", "conversation_id": cid, "user_id": sender, "message": text, "timestamp": timestamp}


class ApplyRemoteEventTests(SynchronousTestCase):
    """Process 1 acts on its registry and publishes; process 2 applies the event to its own."""

    def setUp(self) -> None:
        self.one = ConversationRegistry()
        self.two = ConversationRegistry()

    def apply(self, event, now: float = 100.0):
        return apply_remote_event(self.two, _wire(event), now)

    def test_an_opened_conversation_is_known_and_found_by_its_exact_set(self) -> None:
        """Process 2 learns the conversation, its participants in order, and finds it for [bob, alice]."""
        made = _make(self.one, "c1", [ALICE, BOB])
        self.two.participant(7, "")  # known here without a name: the event names them
        self.two.participant(6, "alice (own login)")  # only her own login renames her
        conversation = self.apply(events.conversation_opened(made, 6, 0), now=50.0)
        self.assertIs(self.two.find_exact([7, 6]), conversation)
        self.assertEqual(conversation.participants_list(), [{"id": 6, "name": "alice (own login)"}, {"id": 7, "name": "bob"}])
        self.assertFalse(conversation.is_group)
        self.assertEqual(conversation.touched_at, 50.0)
        self.assertEqual([c.id for c in self.two.of_user(7)], ["c1"])
        self.assertEqual(self.two.participants[6].connections, set())  # connections stay each process's own

    def test_adds_and_removes_are_changes_that_commute(self) -> None:
        """Two processes add dave and erin to one group at once: either order ends with both."""
        group = _make(self.one, "g", [ALICE, BOB, CAROL], is_group=True)
        opened = events.conversation_opened(group, 6, 0)
        self.one.add_participant(group, self.one.participant(*DAVE))
        added_dave = events.participant_added(group, "g", self.one.participants[9], 6, "sid-1", 0)
        # Process 3 made its own change to its copy at the same moment: erin, without dave.
        three = ConversationRegistry()
        apply_remote_event(three, _wire(opened), 1.0)
        copy = three.get("g")
        three.add_participant(copy, three.participant(*ERIN))
        added_erin = events.participant_added(copy, "g", three.participants[10], 7, "sid-3", 0)
        for first, second in ((added_dave, added_erin), (added_erin, added_dave)):
            two = ConversationRegistry()
            for event in (opened, first, second):
                apply_remote_event(two, _wire(event), 1.0)
            self.assertEqual(two.get("g").participant_ids(), {6, 7, 8, 9, 10})
            self.assertIs(two.find_exact([6, 7, 8, 9, 10]), two.get("g"))
        apply_remote_event(three, _wire(added_dave), 1.0)
        self.assertEqual(three.get("g").participant_ids(), {6, 7, 8, 9, 10})

        self.apply(opened)
        self.apply(added_dave)
        self.one.remove_participant(group, 8)
        self.apply(events.participant_removed(group, self.one.participants[8], 0, [(6, 0)]))
        self.assertEqual(self.two.get("g").participant_ids(), {6, 7, 9})
        self.assertEqual(self.two.of_user(8), [])
        self.assertIsNone(self.two.find_exact([6, 7, 8, 9]))
        self.assertIs(self.two.find_exact([6, 7, 9]), self.two.get("g"))

    def test_a_group_made_from_a_one_to_one_is_new_with_the_newcomer(self) -> None:
        """Adding carol to a 1:1 makes a group elsewhere; the 1:1 stays as it was."""
        one = _make(self.one, "o", [ALICE, BOB])
        self.apply(events.conversation_opened(one, 6, 0))
        group = _make(self.one, "g", [ALICE, BOB, CAROL], is_group=True)
        self.apply(events.participant_added(group, "o", self.one.participants[8], 6, "sid", 0))
        self.assertEqual(self.two.get("o").participant_ids(), {6, 7})
        self.assertEqual(self.two.get("g").participant_ids(), {6, 7, 8})
        self.assertTrue(self.two.get("g").is_group)
        self.assertIs(self.two.find_exact([6, 7]), self.two.get("o"))

    def test_a_removal_from_a_group_unknown_here_keeps_the_rest(self) -> None:
        """The snapshot of a group this process never heard of already lacks the leaver."""
        group = _make(self.one, "g", [ALICE, BOB], is_group=True)
        self.apply(events.participant_removed(group, Participant(8, "carol"), 0, [(6, 0)]))
        self.assertEqual(self.two.get("g").participant_ids(), {6, 7})

    def test_the_newest_message_is_the_latest_and_typing_changes_nothing(self) -> None:
        """A message becomes the latest; an older one arriving later does not; typing is no use."""
        made = _make(self.one, "c", [ALICE, BOB])
        newer, older = _message("c", 6, "second", 2000), _message("c", 7, "first", 1000)
        self.apply(events.message_posted(made, newer, self.one.participants[6], [(6, 0), (7, 1)], []), now=10.0)
        conversation = self.two.get("c")
        self.assertEqual((conversation.latest_message, conversation.latest_loaded), (newer, True))
        self.apply(events.message_posted(made, older, self.one.participants[7], [(6, 1), (7, 0)], []), now=20.0)
        self.assertEqual(conversation.latest_message, newer)
        self.assertEqual(conversation.touched_at, 20.0)
        tie = dict(newer, id="m-1999", message="same millisecond, lower id")
        self.apply(events.message_posted(made, tie, self.one.participants[7], [(6, 1), (7, 0)], []), now=20.0)
        self.assertEqual(conversation.latest_message, newer)
        made.latest_message = _message("c", 6, "cached elsewhere", 3000)
        self.apply(events.typing(made, self.one.participants[6], True, [7]), now=30.0)
        self.assertEqual((conversation.latest_message, conversation.touched_at), (newer, 20.0))

    def test_acceptance_and_events_without_a_conversation(self) -> None:
        """``acceptance_changed`` applies; ``message_withheld`` and unknown types change nothing."""
        self.two.participant(7, "bob")
        self.apply(events.acceptance_changed({7: False, 8: False}))
        self.assertFalse(self.two.participants[7].accepts_messages)
        self.assertFalse(self.two.participant(8, "carol").accepts_messages)
        self.assertIsNone(self.apply(events.message_withheld(_message("c", 6, "x", 1), Participant(6, "alice"))))
        self.assertIsNone(self.apply({"type": "from_a_newer_version", "conversation": None}))
        self.assertEqual(self.two.conversations, {})

    def test_a_malformed_event_raises_and_changes_nothing(self) -> None:
        """Bad snapshots, participants, messages and acceptance lists are ValueErrors, nothing applied."""
        made = _make(self.one, "c", [ALICE, BOB])
        good = events.message_posted(made, _message("c", 6, "hi", 5), self.one.participants[6], [(6, 0)], [])
        bad = [
            dict(good, conversation="c"),
            dict(good, conversation=dict(good["conversation"], is_group=1)),
            dict(good, conversation=dict(good["conversation"], participants=[{"id": -1, "name": "x"}])),
            dict(good, conversation=dict(good["conversation"], participants=[{"id": 6}])),
            dict(good, message={"id": "m"}),
            dict(good, message=dict(good["message"], timestamp="soon")),
            {"type": "participant_added", "conversation": good["conversation"], "user": {"id": "x", "name": "x"}},
            {"type": "acceptance_changed", "changes": [{"id": 6, "accepts": "no"}]},
            {"type": "acceptance_changed"},
        ]
        for event in bad:
            self.assertRaises(ValueError, apply_remote_event, self.two, event, 1.0)
        self.assertEqual(purged_ids(_wire(events.conversations_purged(["a", "b"]))), ["a", "b"])
        for ids in (None, "a", ["a", 1]):
            self.assertRaises(ValueError, purged_ids, {"type": "conversations_purged", "ids": ids})
        self.assertEqual((self.two.conversations, self.two.participants), ({}, {}))


class TwinTests(SynchronousTestCase):
    """Two processes that created the same 1:1 at once pick the same one once both know both."""

    def test_lowest_id_wins_whatever_the_order(self) -> None:
        first, second = ConversationRegistry(), ConversationRegistry()
        _make(first, "b-twin", [ALICE, BOB])
        _make(second, "a-twin", [ALICE, BOB])
        apply_remote_event(first, _wire(events.conversation_opened(second.get("a-twin"), 6, 0)), 1.0)
        apply_remote_event(second, _wire(events.conversation_opened(first.get("b-twin"), 7, 0)), 1.0)
        self.assertEqual(first.find_exact([6, 7]).id, "a-twin")
        self.assertEqual(second.find_exact([6, 7]).id, "a-twin")
        # A 1:1 still comes before a group of the same people, whatever its id.
        _make(first, "0-group", [ALICE, BOB], is_group=True)
        self.assertEqual(first.find_exact([6, 7]).id, "a-twin")
