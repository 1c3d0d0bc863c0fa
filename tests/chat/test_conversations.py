"""
Tests for the On-Screen Chat domain (L{ilchat.chat.conversations} and the modules beside it): the
rules that need neither a socket nor a database (matching, presence, acceptance, input checks).
"""

import os
import time

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase


from ilchat.chat.conversation_acceptance import AcceptancePoll
from ilchat.chat.conversation_model import (
    Conversation,
    Refused,
    changed_participants,
    check_fits,
    parse_participants,
    parse_user_id,
)
from ilchat.chat.conversation_registry import ConversationRegistry


def _conversation(registry: ConversationRegistry, cid: str, ids, is_group: bool = False) -> Conversation:
    conversation = Conversation(cid, is_group)
    for user_id in ids:
        conversation.participants.append(registry.participant(user_id, f"user{user_id}"))
    registry.add(conversation)
    return conversation


class ExactMatchTests(SynchronousTestCase):
    """Conversations are found by their exact participant set, a 1:1 before a group."""

    def test_subset_does_not_match(self) -> None:
        """A group of three is not what ``[alice, bob]`` opens (ILIAS's subset test would)."""
        registry = ConversationRegistry()
        _conversation(registry, "g", [6, 7, 8], is_group=True)
        self.assertIsNone(registry.find_exact([6, 7]))

    def test_superset_does_not_match(self) -> None:
        """A conversation with fewer participants than asked for is not a match either."""
        registry = ConversationRegistry()
        _conversation(registry, "one", [6])
        self.assertIsNone(registry.find_exact([6, 7]))

    def test_one_to_one_before_group(self) -> None:
        """With a group and a 1:1 of the same two people, the 1:1 is opened."""
        registry = ConversationRegistry()
        _conversation(registry, "g", [6, 7], is_group=True)
        one = _conversation(registry, "o", [7, 6])
        self.assertIs(registry.find_exact([6, 7]), one)

    def test_group_with_exact_set_is_found(self) -> None:
        """Without a 1:1, a group with exactly these people is found."""
        registry = ConversationRegistry()
        group = _conversation(registry, "g", [6, 7, 8], is_group=True)
        self.assertIs(registry.find_exact([8, 6, 7]), group)

    def test_removed_participant_changes_the_match(self) -> None:
        """After someone leaves a group, it matches the remaining set only."""
        registry = ConversationRegistry()
        group = _conversation(registry, "g", [6, 7, 8], is_group=True)
        registry.remove_participant(group, 8)
        self.assertIsNone(registry.find_exact([6, 7, 8]))
        self.assertIs(registry.find_exact([6, 7]), group)
        self.assertEqual([c.id for c in registry.of_user(8)], [])


class PresenceTests(SynchronousTestCase):
    """``online`` follows the participant's connections."""

    def test_last_connection_gone_means_offline(self) -> None:
        """Two tabs: closing one keeps the user online, closing both makes them offline."""
        registry = ConversationRegistry()
        alice = registry.connect("tab1", 6, "alice")
        registry.connect("tab2", 6, "alice")
        self.assertTrue(alice.online)
        registry.disconnect("tab1")
        self.assertTrue(alice.online)
        registry.disconnect("tab2")
        self.assertFalse(alice.online)

    def test_relogin_as_other_user_moves_connection(self) -> None:
        """A connection that logs in again as someone else no longer counts for the first user."""
        registry = ConversationRegistry()
        alice = registry.connect("tab", 6, "alice")
        bob = registry.connect("tab", 7, "bob")
        self.assertFalse(alice.online)
        self.assertTrue(bob.online)
        self.assertIs(registry.logged_in("tab"), bob)

    def test_name_from_others_does_not_rename(self) -> None:
        """A name in someone else's participants list does not overwrite the user's own login name."""
        registry = ConversationRegistry()
        registry.connect("tab", 6, "alice")
        self.assertEqual(registry.participant(6, "mallory").name, "alice")


class AcceptanceTests(SynchronousTestCase):
    """``acceptsMessages`` from the ``usr_pref`` poll and from ``UserConfigChange``."""

    def test_everyone_accepts_before_first_poll(self) -> None:
        """Until ``usr_pref`` has been read, nobody is refused (ILIAS's default)."""
        registry = ConversationRegistry()
        self.assertTrue(registry.participant(6).accepts_messages)

    def test_poll_sets_exactly_the_listed_users(self) -> None:
        """Users without a ``y`` preference stop accepting; new participants follow the last poll."""
        registry = ConversationRegistry()
        alice = registry.participant(6)
        bob = registry.participant(7)
        registry.set_accepting({6})
        self.assertTrue(alice.accepts_messages)
        self.assertFalse(bob.accepts_messages)
        self.assertFalse(registry.participant(8).accepts_messages)
        registry.set_accepting({6, 9})
        self.assertTrue(registry.participant(9).accepts_messages)

    def test_config_change_only_touches_named_users(self) -> None:
        """``UserConfigChange`` switches the named users and remembers it for later participants."""
        registry = ConversationRegistry()
        alice = registry.participant(6)
        bob = registry.participant(7)
        registry.set_accepting({6, 7})
        registry.update_acceptance({7: False, 10: True})
        self.assertTrue(alice.accepts_messages)
        self.assertFalse(bob.accepts_messages)
        self.assertTrue(registry.participant(10).accepts_messages)


class InputTests(SynchronousTestCase):
    """Malformed input is refused with a clear reason."""

    def test_user_ids_as_numbers_or_numeric_strings(self) -> None:
        """ILIAS sends ids as numbers or as strings from data attributes; both are the same user."""
        self.assertEqual(parse_user_id(6), 6)
        self.assertEqual(parse_user_id("6"), 6)
        self.assertEqual(parse_user_id(6.0), 6)

    def test_bad_user_ids_refused(self) -> None:
        """Booleans, negative numbers, fractions, text and huge numbers are not user ids."""
        for value in (True, -1, 0, 1.5, "six", None, [], {}, 2**60, "9" * 40):
            self.assertRaises(Refused, parse_user_id, value)

    def test_malformed_participants_refused(self) -> None:
        """A participants list must be a non-empty list of objects with valid ids."""
        for value in (None, "6,7", [], [6, 7], [{"id": "x"}], [{"name": "a"}], [{"id": 6, "name": ["a"]}]):
            self.assertRaises(Refused, parse_participants, value)

    def test_duplicate_participants_collapse(self) -> None:
        """The same user twice counts once."""
        self.assertEqual(
            parse_participants([{"id": 6, "name": "a"}, {"id": "6", "name": "a"}, {"id": 7, "name": "b"}]),
            [{"id": 6, "name": "a"}, {"id": 7, "name": "b"}],
        )

    def test_too_many_participants_refused(self) -> None:
        """A list longer than the limit is refused as a whole."""
        self.assertRaises(Refused, parse_participants, [{"id": i, "name": "x"} for i in range(1, 200)])


class StorableTests(SynchronousTestCase):
    """Participant lists must fit ILIAS's ``osc_conversation.participants`` (text 4000)."""

    def test_list_longer_than_the_column_refused(self) -> None:
        """Thirty participants with 200-character names do not fit; a normal list does."""
        check_fits([{"id": i, "name": "n" * 20} for i in range(1, 30)])
        self.assertRaises(Refused, check_fits, [{"id": i, "name": "n" * 200} for i in range(1, 30)])


def use_time_zone(test_case: SynchronousTestCase, zone: str) -> None:
    """Switch the process's local time zone for one test."""
    old = os.environ.get("TZ")

    def restore() -> None:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()

    test_case.addCleanup(restore)
    os.environ["TZ"] = zone
    time.tzset()


class PollScheduleTests(SynchronousTestCase):
    """The ``usr_pref`` poll runs at local :00/:20/:40, like ILIAS's cron ``*/20``."""

    def _next_poll_at(self, now: float) -> float:
        clock = Clock()
        clock.advance(now)
        poll = AcceptancePoll("onscreen", None, ConversationRegistry(), clock)
        poll.running = True
        poll.schedule()
        [call] = clock.getDelayedCalls()
        call.cancel()
        return call.getTime()

    def test_next_boundary_in_utc(self) -> None:
        """At 03:05 UTC in a UTC zone the next poll is at 03:20."""
        use_time_zone(self, "UTC")
        self.assertEqual(self._next_poll_at(3 * 3600 + 5 * 60), 3 * 3600 + 20 * 60)

    def test_exactly_on_a_boundary_waits_a_full_period(self) -> None:
        """A poll that just ran at 03:20 schedules the next one at 03:40, not at once."""
        use_time_zone(self, "UTC")
        self.assertEqual(self._next_poll_at(3 * 3600 + 20 * 60), 3 * 3600 + 40 * 60)

    def test_boundary_in_local_time_with_half_hour_offset(self) -> None:
        """In India (+05:30) 03:05 UTC is 08:35 local: the next poll is 08:40 local, 03:10 UTC."""
        use_time_zone(self, "Asia/Kolkata")
        self.assertEqual(self._next_poll_at(3 * 3600 + 5 * 60), 3 * 3600 + 10 * 60)


class ChangedParticipantsTests(SynchronousTestCase):
    """One participant added to or removed from the stored list, what else is there kept."""

    def test_add_remove_and_fallback(self) -> None:
        stored = '[{"id":6,"name":"alice"},{"id":9,"name":"dave"}]'
        self.assertEqual(changed_participants(stored, "[]", add={"id": 8, "name": "carol"}),
                         '[{"id":6,"name":"alice"},{"id":9,"name":"dave"},{"id":8,"name":"carol"}]')
        self.assertEqual(changed_participants(stored, "[]", add={"id": 9, "name": "other"}), stored)
        self.assertEqual(changed_participants(stored, "[]", remove=6), '[{"id":9,"name":"dave"}]')
        self.assertEqual(changed_participants(stored, "[]", remove=7), stored)
        for unreadable in ("not json", '{"id":6}', ""):
            self.assertEqual(changed_participants(unreadable, "ours", remove=6), "ours")
