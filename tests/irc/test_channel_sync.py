"""
The merge of IRC-only channel state across processes (ilchat.irc.channel_sync): the same states
merged in any order give the same channel; the older creation wins; changes show as lines.
"""

import itertools
from typing import Any, Dict, List

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ilchat.irc.channel_sync import changes, channel_state, ensure_replica, fields
from ilchat.irc.network import Channel, IrcNetwork
from tests.irc.support import make_config


class _User:
    local = True
    caps: frozenset = frozenset()
    account = None
    away = None
    username = "u"
    host = "h"

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.realname = nick
        self.hostmask = f"{nick}!u@h"
        self.channels: set = set()
        self.lines: List[Any] = []

    def deliver(self, message: Any, client_tags: Any = None, msgid: Any = None, at: Any = None) -> None:
        self.lines.append(message)


def _process(instance: str, created: float) -> Dict[str, Any]:
    """A network with #c and its members alice and bob; the channel made at C{created}."""
    clock = Clock()
    clock.advance(created)
    network = IrcNetwork(make_config(), clock)
    channel = network.add_channel("#c")
    users = {nick: _User(nick) for nick in ("alice", "bob")}
    for nick, user in users.items():
        network.claim_nick(user, nick)
        network.add_member(channel, user, ("o",) if nick == "alice" else ())
    ensure_replica(channel, instance)
    return {"network": network, "channel": channel, "instance": instance, "users": users}


def _change(process: Dict[str, Any], **what: Any) -> Dict[str, Any]:
    """A local change on C{process}: its state as it would publish it."""
    channel: Channel = process["channel"]
    if "topic" in what:
        channel.topic, channel.topic_by, channel.topic_time = what["topic"], "alice", 1
    for letter in what.get("add", ""):
        channel.modes.add(letter)
    for letter in what.get("remove", ""):
        channel.modes.discard(letter)
    channel.replica.bump(channel, process["instance"])
    return channel_state(channel)


class MergeTests(TestCase):
    def test_concurrent_changes_converge_in_any_order(self) -> None:
        base = _process("node-1", 100)
        shared = channel_state(base["channel"])
        one = _process("node-1", 100)
        two = _process("node-2", 100)
        for process in (one, two):
            process["channel"].replica.origin = tuple(shared["origin"])
        states = [_change(one, topic="from one", add="m"), _change(two, topic="from two", remove="t"),
                  _change(one, add="s")]
        results = set()
        for order in itertools.permutations(states):
            target = _process("node-3", 100)
            target["channel"].replica.origin = tuple(shared["origin"])
            for state in order:
                target["channel"].replica.merge(target["network"], target["channel"], state)
            channel = target["channel"]
            results.add((channel.topic, tuple(sorted(channel.modes))))
        self.assertEqual(results, {("from two", ("m", "n", "s"))})

    def test_the_older_creation_wins_and_its_rival_loses_operator_status(self) -> None:
        older = _process("node-2", 100)
        newer = _process("node-1", 105)
        older_state = _change(older, topic="older")
        newer["channel"].members[newer["users"]["bob"]] = {"o"}  # made operator there
        newer_state = _change(newer, topic="newer", add="m")
        self.assertFalse(older["channel"].replica.merge(older["network"], older["channel"], newer_state))
        channel = newer["channel"]
        before = fields(channel)
        self.assertTrue(channel.replica.merge(newer["network"], channel, older_state))
        self.assertEqual((channel.topic, channel.replica.origin), ("older", (100, "node-2")))
        shown = [(m.command, m.params) for m in changes(newer["network"], channel, before, fields(channel), "srv")]
        self.assertEqual(shown, [("TOPIC", ("#c", "older")), ("MODE", ("#c", "-mo", "bob"))])


class BoundTests(TestCase):
    def test_the_versions_of_members_who_left_are_forgotten(self) -> None:
        """Nicks joining and leaving one channel for ever do not grow its versions."""
        process = _process("node-1", 100)
        network, channel = process["network"], process["channel"]
        peer = _process("node-2", 100)
        for number in range(50):
            user = _User(f"guest{number}")
            network.claim_nick(user, user.nick)
            network.add_member(channel, user, ("o",))
            channel.replica.bump(channel, "node-1")
            peer["channel"].replica.merge(peer["network"], peer["channel"], channel_state(channel))
            network.remove_member(channel, user, "PART", "bye")
            channel.replica.bump(channel, "node-1")
        members = {key for key in channel.replica.versions if key.startswith("member:")}
        self.assertEqual(members, set())
        remote_members = {key for key in peer["channel"].replica.versions if key.startswith("member:")}
        self.assertLessEqual(len(remote_members), 1)

    def test_the_counter_never_goes_back_when_versions_go(self) -> None:
        process = _process("node-1", 100)
        network, channel = process["network"], process["channel"]
        user = _User("guest")
        network.claim_nick(user, "guest")
        network.add_member(channel, user, ("o",))
        for _ in range(5):
            channel.replica.bump(channel, "node-1")
            channel.members[user] = set() if channel.members[user] else {"o"}
        channel.replica.bump(channel, "node-1")
        seen = max(version[0] for version in channel.replica.versions.values())
        network.remove_member(channel, user, "PART", "bye")
        channel.replica.bump(channel, "node-1")
        _change(process, topic="later")
        self.assertGreater(channel.replica.versions["topic"][0], seen)


def _invitable(process: Dict[str, Any], *nicks: str) -> None:
    """Users of C{process}'s network who are no members of #c (whom one may invite)."""
    for nick in nicks:
        user = _User(nick)
        process["network"].claim_nick(user, nick)
        process["users"][nick] = user


def _invite(process: Dict[str, Any], nick: str) -> Dict[str, Any]:
    """C{nick} invited on C{process} (as IrcNetwork.invite and the replication do)."""
    process["channel"].invited.add(nick)
    process["channel"].replica.bump(process["channel"], process["instance"])
    return channel_state(process["channel"])


class InvitationTests(TestCase):
    """Invitations merge by union; a -i clears those it is ordered after, the same everywhere."""

    def shared(self, *instances: str) -> List[Dict[str, Any]]:
        origin = tuple(channel_state(_process("node-1", 100)["channel"])["origin"])
        processes = []
        for instance in instances:
            process = _process(instance, 100)
            process["channel"].replica.origin = origin
            _invitable(process, "carol", "dave", "erin")
            processes.append(process)
        return processes

    def merged(self, states: List[Dict[str, Any]]) -> set:
        """What a third process holds after C{states}, the same in every order."""
        results = set()
        for order in itertools.permutations(states):
            (target,) = self.shared("node-3")
            for state in order:
                target["channel"].replica.merge(target["network"], target["channel"], state)
            results.add(frozenset(target["channel"].invited))
        self.assertEqual(len(results), 1, results)
        return set(results.pop())

    def test_invitations_made_at_once_on_two_processes_are_both_kept(self) -> None:
        one, two = self.shared("node-1", "node-2")
        states = [_invite(one, "carol"), _invite(two, "dave"), _change(two, topic="meanwhile")]
        self.assertEqual(self.merged(states), {"carol", "dave"})
        one["channel"].replica.merge(one["network"], one["channel"], states[1])
        two["channel"].replica.merge(two["network"], two["channel"], states[0])
        self.assertEqual(one["channel"].invited, {"carol", "dave"})
        self.assertEqual(two["channel"].invited, {"carol", "dave"})

    def test_a_minus_i_clears_what_it_is_ordered_after_everywhere(self) -> None:
        one, two = self.shared("node-1", "node-2")
        first = _invite(one, "carol")
        two["channel"].replica.merge(two["network"], two["channel"], first)
        # node-2's -i, made having seen carol's invitation, and node-1's invitation of dave at once.
        two["channel"].modes.add("i")
        two["channel"].replica.bump(two["channel"], "node-2")
        two["channel"].modes.discard("i")
        two["channel"].invited.clear()  # what MODE -i does
        two["channel"].replica.bump(two["channel"], "node-2")
        cleared = channel_state(two["channel"])
        concurrent = _invite(one, "dave")
        later = _invite(one, "erin")
        self.assertEqual(self.merged([first, concurrent, cleared]), set())
        # An invitation made after seeing the -i stands.
        one["channel"].replica.merge(one["network"], one["channel"], cleared)
        self.assertEqual(one["channel"].invited, set())
        after = _invite(one, "erin")
        self.assertEqual(self.merged([first, concurrent, cleared, later, after]), {"erin"})

    def test_a_used_up_invitation_does_not_come_back(self) -> None:
        one, two = self.shared("node-1", "node-2")
        state = _invite(one, "carol")
        channel = two["channel"]
        channel.replica.merge(two["network"], channel, state)
        two["network"].add_member(channel, two["users"]["carol"])  # carol joins on node-2
        channel.invited.discard("carol")
        channel.replica.seen(channel)
        channel.replica.merge(two["network"], channel, state)  # node-1's state from before
        self.assertEqual(channel.invited, set())
        two["network"].remove_member(channel, two["users"]["carol"], "PART", "bye")
        channel.replica.merge(two["network"], channel, state)  # ... arriving after a PART
        self.assertEqual(channel.invited, set())
        self.assertEqual(channel.replica.invites, {})
        # A new invitation, made having seen the first, stands.
        self.assertEqual(_invite(two, "carol")["invites"]["carol"][0], 2)

    def test_spent_invitations_are_kept_while_a_user_has_the_nick(self) -> None:
        """Nicks invited, joining and quitting for ever do not grow what a channel keeps."""
        (process,) = self.shared("node-1")
        network, channel = process["network"], process["channel"]
        for number in range(50):
            user = _User(f"guest{number}")
            network.claim_nick(user, user.nick)
            _invite(process, user.nick)
            channel.invited.discard(user.nick)
            network.add_member(channel, user)
            channel.replica.bump(channel, "node-1")
            network.quit(user, "bye")
        channel.replica.bump(channel, "node-1")
        self.assertEqual((channel.replica.invites, channel.replica.spent), ({}, {}))
