# -*- test-case-name: tests.irc.test_web_nicks -*-
"""
The nicks of browser users on IRC (L{RemoteUser}s), the same on every process of a cluster.

A browser user's nick comes from their name (L{sanitise_nick}); the users whose names make
the same nick are a *group*, and the group's nicks follow from what every process knows alike:
its members sorted by their key (``(client, user id)``) take the plain nick, then ``_2``,
``_3``... in that order, skipping the nicks IRC users hold (local or of another process: an
IRC user's nick always wins over a browser nick) and those that are the plain nick of another
group. So however many names collide, and in whatever order a process learnt of them, every
process ends with the same nicks; when a member leaves, an IRC user frees a nick, or a lower
key arrives, the group is worked out again and those whose nick changed are renamed (NICK).

Every process that bridges the room knows every browser member (room presence is replicated),
so the groups are the same everywhere; the one case left to chance is two groups whose
suffixed nicks meet (cut to the nick length, or names that end like a suffix, ``x_2``): one of
the two members that want the nick keeps a nick of its own (``x_2_``), and working the nicks
out always ends.
"""

from typing import Any, Dict, List, Optional, Set

from ilchat.irc.network import IrcNetwork, RemoteUser, irc_lower, sanitise_nick

__all__ = ["BrowserNicks", "browser_nicks"]


def browser_nicks(network: IrcNetwork) -> "BrowserNicks":
    """The network's one L{BrowserNicks}: every bridge (ILIAS client) of the network shares it."""
    if network.browser_nicks is None:
        network.browser_nicks = BrowserNicks(network)
    return network.browser_nicks


class BrowserNicks:
    """The browser users' nicks of one network, by group (L{add}, L{remove}, L{rename})."""

    def __init__(self, network: IrcNetwork) -> None:
        self.network = network
        #: folded plain nick -> the browser users whose name makes it.
        self._groups: Dict[str, Set[RemoteUser]] = {}
        #: The groups being worked out (one may move another's member aside, never back).
        self._settling: Set[str] = set()
        network.on_nick.append(self._released)
        network.on_quit.append(lambda user, reason: self._released(user, user.nick))

    def _plain(self, remote: RemoteUser) -> str:
        return sanitise_nick(remote.realname, self.network.config.nick_length)

    def add(self, remote: RemoteUser) -> None:
        """A new browser user (C{nick} empty): in their group, with the group's nick for them."""
        self._groups.setdefault(irc_lower(self._plain(remote)), set()).add(remote)
        self.settle(self._plain(remote))

    def remove(self, remote: RemoteUser, also_taken: Optional[str] = None) -> None:
        """
        A browser user is gone from IRC (or became the IRC user C{also_taken} names, whose
        nick nobody else is to take meanwhile): the others may move up.
        """
        plain = self._plain(remote)
        group = self._groups.get(irc_lower(plain), set())
        group.discard(remote)
        if not group:
            self._groups.pop(irc_lower(plain), None)
        self.network.release_nick(remote)
        self.settle(plain, None if also_taken is None else irc_lower(also_taken))

    def rename(self, remote: RemoteUser, name: str) -> None:
        """A browser user's name changed: from one group to another."""
        old = self._plain(remote)
        group = self._groups.get(irc_lower(old), set())
        group.discard(remote)
        if not group:
            self._groups.pop(irc_lower(old), None)
        remote.realname = name
        self._groups.setdefault(irc_lower(self._plain(remote)), set()).add(remote)
        self.settle(self._plain(remote))
        self.settle(old)

    def give_way(self, nick: str) -> None:
        """An IRC user (of another process) is taking C{nick}: the browser user holding it moves."""
        holder = self.network.find_user(nick)
        if isinstance(holder, RemoteUser):
            self.settle(self._plain(holder), also_taken=irc_lower(nick))

    def _released(self, user: Any, old: str) -> None:
        """An IRC user let C{old} go: a group that wanted it works its nicks out again."""
        if isinstance(user, RemoteUser) or not old:
            return
        folded = irc_lower(old)
        if folded in self._groups:
            self.settle(folded)
        stem, _, number = folded.rpartition("_")
        if number.isdigit() and stem:
            # A suffixed nick: of the group whose plain nick it extends (or cut to length).
            for key in [key for key in self._groups if key.startswith(stem) and key != folded]:
                self.settle(key)

    def _suffixed(self, plain: str, counter: int) -> str:
        if counter == 1:
            return plain
        length = self.network.config.nick_length
        suffix = f"_{counter}"
        return plain[: length - len(suffix)] + suffix

    def wanted(self, plain: str, also_taken: Optional[str] = None) -> Dict[RemoteUser, str]:
        """The nick of each member of C{plain}'s group, by the rule every process follows."""
        folded_plain = irc_lower(plain)
        group = self._groups.get(folded_plain, set())
        result: Dict[RemoteUser, str] = {}
        given: Set[str] = set()
        counter = 1
        for remote in sorted(group, key=lambda r: r.key):
            while True:
                candidate = self._suffixed(plain, counter)
                folded = irc_lower(candidate)
                counter += 1
                holder = self.network.users.get(folded)
                held = holder is not None and not isinstance(holder, RemoteUser)
                other_plain = folded != folded_plain and bool(self._groups.get(folded))
                # A plain nick that ends like a suffix (``x_3`` at the nick length) comes round
                # again as one: two members wanting one nick would wait for each other for ever.
                if not (held or other_plain or folded == also_taken or folded in given):
                    break
            given.add(folded)
            result[remote] = candidate
        return result

    def settle(self, plain: str, also_taken: Optional[str] = None) -> None:
        """Give every member of C{plain}'s group the nick the rule says (NICK for a change)."""
        if irc_lower(plain) in self._settling:
            return
        self._settling.add(irc_lower(plain))
        try:
            self._settle(plain, also_taken)
        finally:
            self._settling.discard(irc_lower(plain))

    def _settle(self, plain: str, also_taken: Optional[str]) -> None:
        pending = [(remote, nick) for remote, nick in self.wanted(plain, also_taken).items()
                   if remote.nick != nick]
        aside: Set[RemoteUser] = set()
        while pending:
            blocked: List[Any] = []
            for remote, nick in pending:
                holder = self.network.find_user(nick)
                if holder is not None and holder is not remote:
                    if isinstance(holder, RemoteUser) and holder not in self._groups.get(irc_lower(plain), ()):
                        # A browser user of another group (cut to length, or not worked out
                        # again yet): theirs is worked out again after ours.
                        self.settle(self._plain(holder), also_taken=irc_lower(nick))
                        holder = self.network.find_user(nick)
                    if holder is not None and holder is not remote:
                        blocked.append((remote, nick))
                        continue
                self._give(remote, nick)
            if len(blocked) == len(pending):
                # Members swapping nicks: one steps aside first. One that stepped aside already
                # waits for a member of another group who does not move (two groups wanting
                # one nick, the case left to chance): it keeps the nick it has, so this ends.
                stuck = next((item for item in blocked if item[0] not in aside), None)
                if stuck is None:
                    break
                remote, nick = stuck
                aside.add(remote)
                self._give(remote, self.network.unique_nick(nick + "_"))
            pending = blocked

    def _give(self, remote: RemoteUser, nick: str) -> None:
        if remote.nick:
            self.network.change_nick(remote, nick)
        else:
            remote.nick = nick
            self.network.claim_nick(remote, nick)
