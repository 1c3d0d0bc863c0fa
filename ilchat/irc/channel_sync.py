# -*- test-case-name: tests.irc.test_channel_sync -*-
"""
The state of an IRC-only channel as the processes of a cluster exchange it, and the rules that
make every process end with the same state whatever order the changes arrive in.

* **One creation wins.** A channel's C{origin} is ``(created, instance)``: the second it was
  made and the process that made it. Two processes creating one channel at once each give their
  joiner operator status; when their states meet, the lower origin wins everywhere: its state
  is taken whole, the members that came with the other creation lose their prefix modes, and
  what is said under the other origin is ignored.
* **The last writer wins per field**, in one order that every process computes the same: each
  field (the topic, each flag mode, the key, the limit, each list, each member's prefix modes)
  carries the version of its last change, ``(counter, instance)``, where the counter is one more
  than the highest this process has seen on the channel (a Lamport clock), so a change made
  after seeing another always orders after it, and two made at once are ordered by instance.
* **Invitations are a set that merges by union**: each invitation carries the version it was
  made at, and a ``-i`` (which ends every invitation) the version it was made at
  (C{cleared}); an invitation is kept everywhere unless a ``-i`` ordered after it cleared it,
  so two made at once on two processes are both kept, and one made while Redis was away is
  known everywhere once the states meet again. An invitation used up (the invitee joined) or
  let go with its nick (NICK, QUIT) goes on every process as that event arrives, and its
  version is kept while a user has the nick (C{spent}: as many as the network's users at
  most), so a state sent before that event does not bring it back; nor does a merge bring one
  for a nick that is a member or not on the network.
* **Versions of members who left are forgotten**: a left member's prefix modes are no field any
  more, so their version goes at the next change or merge (the counter, kept apart, never goes
  back); a busy channel's versions stay as many as its members.
* **What changed is shown as it changed here**: the TOPIC and MODE lines a merge yields
  (L{changes}), not the line the other process showed, so a change that lost shows nothing.

Plain functions and one small class on plain JSON values; L{ilchat.irc.replication} sends them.
"""

from typing import Any, Dict, Iterable, List, Optional, Tuple

from ilchat.irc.message import Message
from ilchat.irc.network import Channel, IrcNetwork, ListEntry, irc_lower

__all__ = ["ChannelReplica", "apply_state", "changes", "channel_state", "ensure_replica", "fields", "replica_of"]

#: A field's version: (Lamport counter, instance).
Version = Tuple[int, str]
_NONE: Version = (0, "")
_FLAGS = "imnst"
#: Prefix modes given in one MODE line (as ircds' MODES=).
_MODES_PER_LINE = 4


def channel_state(channel: Channel) -> Dict[str, Any]:
    """The replicated state of an IRC-only channel, plain JSON values, with origin and versions."""
    replica = replica_of(channel)
    return {
        "topic": channel.topic, "topic_by": channel.topic_by, "topic_time": channel.topic_time,
        "created": channel.created, "modes": sorted(channel.modes), "key": channel.key,
        "limit": channel.limit, "invited": sorted(channel.invited),
        "invites": {nick: list(replica.invites.get(nick, _NONE) if replica else _NONE)
                    for nick in sorted(channel.invited)},
        "cleared": list(replica.cleared if replica is not None else _NONE),
        "lists": {letter: [[e.mask, e.by, e.when] for e in entries]
                  for letter, entries in channel.lists.items()},
        "prefixes": [[member.nick, sorted(modes)] for member, modes in channel.members.items()],
        "origin": list(replica.origin) if replica is not None else [channel.created, ""],
        "versions": {key: list(value) for key, value in (replica.versions if replica else {}).items()},
    }


def apply_state(network: IrcNetwork, channel: Channel, state: Dict[str, Any]) -> None:
    """Make C{channel} what C{state} (L{channel_state}) says (members' modes: of those here)."""
    channel.topic, channel.topic_by = str(state["topic"]), str(state["topic_by"])
    channel.topic_time, channel.created = int(state["topic_time"]), int(state["created"])
    channel.modes = {str(mode) for mode in state["modes"]}
    channel.key = None if state["key"] is None else str(state["key"])
    channel.limit = None if state["limit"] is None else int(state["limit"])
    channel.invited = {str(nick) for nick in state["invited"]}
    channel.lists = {letter: [ListEntry(str(mask), str(by), int(when))
                              for mask, by, when in state["lists"].get(letter, [])]
                     for letter in "beI"}
    for nick, modes in state["prefixes"]:
        member = network.find_user(str(nick))
        if member is not None and member in channel.members:
            channel.members[member] = {str(mode) for mode in modes}


def fields(channel: Channel) -> Dict[str, Any]:
    """The channel's state by versioned field (members' prefix modes by folded nick)."""
    values: Dict[str, Any] = {"topic": (channel.topic, channel.topic_by, channel.topic_time),
                              "key": channel.key, "limit": channel.limit}
    for letter in _FLAGS:
        values["mode:" + letter] = letter in channel.modes
    for letter, entries in channel.lists.items():
        values["list:" + letter] = tuple((e.mask, e.by, e.when) for e in entries)
    for member, modes in channel.members.items():
        values["member:" + irc_lower(member.nick)] = tuple(sorted(modes))
    return values


def _state_fields(state: Dict[str, Any]) -> Dict[str, Any]:
    """L{fields} of a L{channel_state}."""
    values: Dict[str, Any] = {
        "topic": (str(state["topic"]), str(state["topic_by"]), int(state["topic_time"])),
        "key": None if state["key"] is None else str(state["key"]),
        "limit": None if state["limit"] is None else int(state["limit"]),
    }
    modes = {str(mode) for mode in state["modes"]}
    for letter in _FLAGS:
        values["mode:" + letter] = letter in modes
    for letter in "beI":
        values["list:" + letter] = tuple((str(m), str(b), int(w)) for m, b, w in state["lists"].get(letter, []))
    for nick, member_modes in state["prefixes"]:
        values["member:" + irc_lower(str(nick))] = tuple(sorted(str(mode) for mode in member_modes))
    return values


def _set_field(network: IrcNetwork, channel: Channel, key: str, value: Any) -> None:
    kind, _, name = key.partition(":")
    if kind == "topic":
        channel.topic, channel.topic_by, channel.topic_time = value
    elif kind == "key":
        channel.key = value
    elif kind == "limit":
        channel.limit = value
    elif kind == "mode":
        (channel.modes.add if value else channel.modes.discard)(name)
    elif kind == "list":
        channel.lists[name] = [ListEntry(*entry) for entry in value]
    elif kind == "member":
        member = network.find_user(name)
        if member is not None and member in channel.members:
            channel.members[member] = set(value)


class ChannelReplica:
    """What the cluster's merge keeps of one channel: its origin, the fields' versions, the last state synced."""

    def __init__(self, origin: Tuple[int, str]) -> None:
        self.origin = origin
        self.versions: Dict[str, Version] = {}
        self.synced: Dict[str, Any] = {}
        #: The version of each invitation of C{channel.invited} (folded nick).
        self.invites: Dict[str, Version] = {}
        #: The version of the last ``-i``: invitations not newer are gone.
        self.cleared: Version = _NONE
        #: Invitations used up or let go here, by folded nick, while a user has that nick: a
        #: state sent before its process saw the JOIN does not bring one back.
        self.spent: Dict[str, Version] = {}
        #: The highest counter seen on the channel (the Lamport clock), kept when versions go.
        self.counter = 0

    def _take(self, versions: Iterable[Version]) -> None:
        """Versions seen: the clock moves past them."""
        self.counter = max([self.counter, *(version[0] for version in versions)])

    def _forget_left(self, members: Any) -> None:
        """Drop the versions of the prefix modes of those no longer members (C{members}: keys kept)."""
        for key in [key for key in self.versions if key.startswith("member:") and key not in members]:
            del self.versions[key]

    def bump(self, channel: Channel, instance: str) -> None:
        """
        A local change: every field that differs from the last synced state gets a new version,
        and so does every new invitation; a ``-i`` clears the invitations up to its version.
        """
        now = fields(channel)
        changed = [key for key, value in now.items() if self.synced.get(key, _MISSING) != value]
        self._forget_uninvited(channel)
        invited = [nick for nick in channel.invited if nick not in self.invites]
        if changed or invited:
            self._take(self.versions.values())
            self.counter += 1
            version = (self.counter, instance)
            for key in changed:
                self.versions[key] = version
            for nick in invited:
                self.invites[nick] = version
            if "mode:i" in changed and not now["mode:i"]:
                self.cleared = version
        self._forget_left(now)
        self.synced = now

    def seen(self, channel: Channel) -> None:
        """
        The channel changed here as it did on another process (a peer joined, a nick let go):
        the invitations used up or let go lose their versions, the rest is synced.
        """
        self._forget_uninvited(channel)
        self.synced = fields(channel)

    def _forget_uninvited(self, channel: Channel) -> None:
        for nick in [nick for nick in self.invites if nick not in channel.invited]:
            self.spent[nick] = max(self.spent.get(nick, _NONE), self.invites.pop(nick))
        for nick in [nick for nick, version in self.spent.items()
                     if version <= self.cleared or channel.network.find_user(nick) is None]:
            del self.spent[nick]

    def _merge_invites(self, network: IrcNetwork, channel: Channel, state: Dict[str, Any]) -> None:
        """The union of both sides' invitations, less those a ``-i`` ordered after them cleared."""
        self.cleared = max(self.cleared, _version(state.get("cleared")))
        members = {irc_lower(member.nick) for member in channel.members}
        for nick, version in _invites(state).items():
            if (version > max(self.cleared, self.invites.get(nick, _NONE), self.spent.get(nick, _NONE))
                    and nick not in members and network.find_user(nick) is not None):
                self.invites[nick] = version
                channel.invited.add(nick)
        for nick in [nick for nick, version in self.invites.items() if version <= self.cleared]:
            del self.invites[nick]
            channel.invited.discard(nick)

    def merge(self, network: IrcNetwork, channel: Channel, state: Dict[str, Any]) -> Optional[bool]:
        """
        Take another process's C{state} of the channel: True when it was applied (some of it),
        False when it is of a creation that lost (ignored), None when nothing of it was newer.
        """
        origin = _origin(state)
        versions = {str(key): (int(v[0]), str(v[1])) for key, v in dict(state.get("versions") or {}).items()}
        if origin > self.origin:
            return False
        remote = _state_fields(state)
        self._take([*versions.values(), _version(state.get("cleared")), *_invites(state).values()])
        self._forget_uninvited(channel)
        if origin < self.origin:
            # The other creation was first: its state, whole; ours is forgotten.
            self.origin, self.versions = origin, versions
            apply_state(network, channel, state)
            channel.invited, self.invites, self.cleared = set(), {}, _NONE
            self._merge_invites(network, channel, state)
            listed = {key for key in remote if key.startswith("member:")}
            for member in channel.members:
                if "member:" + irc_lower(member.nick) not in listed:
                    channel.members[member] = set()
            applied: Optional[bool] = True
        else:
            applied = None
            for key, value in remote.items():
                version = versions.get(key, _NONE)
                if version > self.versions.get(key, _NONE):
                    self.versions[key] = version
                    _set_field(network, channel, key, value)
                    applied = True
            self._merge_invites(network, channel, state)
        self.synced = fields(channel)
        # The sender's members are kept too: one of them may be joining here right after.
        self._forget_left(self.synced.keys() | remote.keys())
        return applied


_MISSING = object()


def _version(value: Any) -> Version:
    """A version of a state (absent: none)."""
    return _NONE if value is None else (int(value[0]), str(value[1]))


def _invites(state: Dict[str, Any]) -> Dict[str, Version]:
    """The invitations of a state with their versions (a state without them: none)."""
    return {irc_lower(str(nick)): _version(version)
            for nick, version in dict(state.get("invites") or {}).items()}


def _origin(state: Dict[str, Any]) -> Tuple[int, str]:
    origin = state.get("origin") or [state["created"], ""]
    return (int(origin[0]), str(origin[1]))


def replica_of(channel: Channel) -> Optional[ChannelReplica]:
    return channel.replica


def ensure_replica(channel: Channel, instance: str, state: Optional[Dict[str, Any]] = None) -> ChannelReplica:
    """The channel's replica; a new one has the origin of C{state}, else this process's creation."""
    replica = replica_of(channel)
    if replica is None:
        origin = _origin(state) if state is not None else (channel.created, instance)
        replica = channel.replica = ChannelReplica(origin)
        if state is not None:
            replica.versions = {str(key): (int(v[0]), str(v[1]))
                                for key, v in dict(state.get("versions") or {}).items()}
            replica.cleared = _version(state.get("cleared"))
            replica.invites = {nick: version for nick, version in _invites(state).items()
                               if nick in channel.invited}
            replica._take([*replica.versions.values(), replica.cleared, *replica.invites.values()])
        replica.synced = fields(channel)
    return replica


def changes(network: IrcNetwork, channel: Channel, before: Dict[str, Any], after: Dict[str, Any],
            prefix: str) -> List[Message]:
    """The TOPIC and MODE lines that turn C{before} into C{after} (L{fields}), from C{prefix}."""
    messages = []
    if before.get("topic") != after.get("topic"):
        messages.append(Message("TOPIC", (channel.name, after["topic"][0]), prefix=prefix))
    flags: List[Tuple[str, str, Optional[str]]] = []
    for letter in _FLAGS:
        old, new = before.get("mode:" + letter, False), after.get("mode:" + letter, False)
        if old != new:
            flags.append(("+" if new else "-", letter, None))
    if before.get("key") != after.get("key"):
        flags.append(("+", "k", after["key"]) if after.get("key") is not None else ("-", "k", "*"))
    if before.get("limit") != after.get("limit"):
        flags.append(("+", "l", str(after["limit"])) if after.get("limit") is not None else ("-", "l", None))
    for letter in "beI":
        old_masks = [entry[0] for entry in before.get("list:" + letter, ())]
        new_masks = [entry[0] for entry in after.get("list:" + letter, ())]
        flags.extend(("-", letter, mask) for mask in old_masks if mask not in new_masks)
        flags.extend(("+", letter, mask) for mask in new_masks if mask not in old_masks)
    for key, modes in after.items():
        if not key.startswith("member:") or key not in before:
            continue
        member = network.find_user(key[len("member:"):])
        nick = member.nick if member is not None else key[len("member:"):]
        old_modes = set(before[key])
        flags.extend(("-", mode, nick) for mode in sorted(old_modes - set(modes)))
        flags.extend(("+", mode, nick) for mode in sorted(set(modes) - old_modes))
    for start in range(0, len(flags), _MODES_PER_LINE):
        messages.append(_mode_line(channel.name, flags[start:start + _MODES_PER_LINE], prefix))
    return messages


def _mode_line(name: str, flags: List[Tuple[str, str, Optional[str]]], prefix: str) -> Message:
    text, sign, args = "", "", []
    for flag_sign, letter, arg in flags:
        if flag_sign != sign:
            text += flag_sign
            sign = flag_sign
        text += letter
        if arg is not None:
            args.append(arg)
    return Message("MODE", (name, text, *args), prefix=prefix)
