"""
Browser users' nicks (ilchat.irc.web_nicks): whatever order a network learns of colliding
names in, it ends with the same nicks, IRC users' nicks kept, renamed back as others go; an IRC
user's cluster claim (the real Redis) wins over a browser user given the nick meanwhile.
"""

import itertools
from typing import Dict, List, Tuple

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from ilchat.irc.network import IrcNetwork, RemoteUser
from ilchat.irc.web_nicks import browser_nicks
from tests.irc.support import make_config
from tests.support.private_redis import shared_redis_prefix
from tests.test_cluster_state import started_cluster

NAMES = [(20, "ann lee"), (30, "ann.lee"), (25, "ann+lee"), (10, "ann,lee")]


class _IrcUser:
    """An IRC user as the network's nick table holds one (not a browser user)."""

    local = True
    elsewhere = False
    caps: frozenset = frozenset()

    def __init__(self, nick: str) -> None:
        self.channels: set = set()
        self.nick = nick
        self.username, self.host, self.realname = "u", "h", nick
        self.hostmask = f"{nick}!u@h"


def _network() -> IrcNetwork:
    return IrcNetwork(make_config(), Clock())


def _join(network: IrcNetwork, order: List[Tuple[int, str]]) -> Dict[int, RemoteUser]:
    users = {}
    for user_id, name in order:
        users[user_id] = RemoteUser("", "ilias", "h", name, user_id, ("c", user_id))
        browser_nicks(network).add(users[user_id])
    return users


class BrowserNickTests(TestCase):
    def test_every_order_gives_the_same_nicks(self) -> None:
        results = set()
        for order in itertools.permutations(NAMES):
            network = _network()
            network.claim_nick(_IrcUser("ann_lee_3"), "ann_lee_3")
            users = _join(network, list(order))
            results.add(tuple(sorted((user_id, user.nick) for user_id, user in users.items())))
        self.assertEqual(results, {((10, "ann_lee"), (20, "ann_lee_2"), (25, "ann_lee_4"), (30, "ann_lee_5"))})

    def test_renamed_back_when_an_irc_user_or_a_member_goes(self) -> None:
        network = _network()
        irc = _IrcUser("ann_lee")
        network.claim_nick(irc, "ann_lee")
        users = _join(network, NAMES)
        self.assertEqual(users[10].nick, "ann_lee_2")
        network.quit(irc, "bye")
        self.assertEqual([users[i].nick for i in (10, 20, 25, 30)],
                         ["ann_lee", "ann_lee_2", "ann_lee_3", "ann_lee_4"])
        browser_nicks(network).remove(users[10])
        self.assertEqual([users[i].nick for i in (20, 25, 30)], ["ann_lee", "ann_lee_2", "ann_lee_3"])
        browser_nicks(network).rename(users[20], "bob")
        self.assertEqual([users[i].nick for i in (20, 25, 30)], ["bob", "ann_lee", "ann_lee_2"])
        # A browser user literally named like a suffixed nick keeps it; the group goes round.
        (plain,) = _join(network, [(99, "ann_lee_2")]).values()
        self.assertEqual([users[25].nick, users[30].nick, plain.nick], ["ann_lee", "ann_lee_3", "ann_lee_2"])
        self.assertEqual(network.find_user("ann_lee_2"), plain)

    async def test_a_cluster_claim_wins_over_a_browser_nick_given_meanwhile(self) -> None:
        network = _network()
        network.cluster = await started_cluster(self, "node-1", shared_redis_prefix(self))
        irc = _IrcUser("ann_lee")
        claim = defer.ensureDeferred(network.claim_cluster_nick(irc, "ann_lee"))
        (browser,) = _join(network, [(10, "ann lee")]).values()
        self.assertEqual(browser.nick, "ann_lee")  # the claim is still on its way to Redis
        self.assertTrue(await claim)
        self.assertEqual(browser.nick, "ann_lee_2")
        self.assertTrue(network.claim_nick(irc, "ann_lee"))


class _Hung(Exception):
    pass


def _settled_within(seconds: float, network: IrcNetwork, order: List[Tuple[int, str]]) -> Dict[int, RemoteUser]:
    """L{_join}, failing (not hanging the test run) when the nicks are not worked out in time."""
    import signal

    def hung(*_: object) -> None:
        raise _Hung(f"nicks not settled within {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return _join(network, order)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class SuffixLikeNameTests(TestCase):
    """Names that end like a suffix at the nick length (``…_3``): the nicks are worked out, and differ."""

    def test_a_group_whose_plain_nick_looks_suffixed(self) -> None:
        network = _network()
        name = "a" * (network.config.nick_length - 2) + "_3"
        users = _settled_within(2, network, [(23, name), (13, name), (12, name)])
        nicks = [users[user_id].nick for user_id in (12, 13, 23)]
        self.assertEqual(len(set(nicks)), 3)
        self.assertEqual(nicks[0], name)

    def test_two_groups_that_want_one_nick(self) -> None:
        network = _network()
        stem = "a" * (network.config.nick_length - 2)
        order = [(2, stem + "_4"), (23, stem + "_3"), (13, stem + "_3"), (1, stem + "_4"), (12, stem + "_3")]
        users = _settled_within(2, network, order)
        nicks = [user.nick for user in users.values()]
        self.assertEqual(len(set(nicks)), len(nicks))
        self.assertTrue(all(network.find_user(nick) is users[user_id] for user_id, nick in
                            ((user_id, user.nick) for user_id, user in users.items())))
