# -*- test-case-name: tests.irc.test_protocol -*-
"""
The IRC side of the world: nicks, channels and their members, in one process.

This module knows IRC rules (casemapping, valid names, channel modes) but no chat rooms: a channel
that mirrors a chat room carries a L{ChannelLink} that the bridge implements, and the network asks
the link before a join, tells it about parts and hands it the channel's messages, so that the room
domain stays the one place where room messages are posted, stored and fanned out.

Members are either local connections (L{ilchat.irc.protocol.IRCServerProtocol}) or L{RemoteUser}s
(browser users in a bridged room); both offer the L{IrcUser} attributes.
"""

import re
import unicodedata
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ilchat.irc.message import Message
from ilchat.irc.throttle import LoginThrottle

__all__ = [
    "IrcNetwork",
    "Channel",
    "RemoteUser",
    "ChannelLink",
    "irc_lower",
    "valid_nick",
    "valid_channel",
    "sanitise_nick",
]

_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_NICK_RE = re.compile(r"^[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*$")
_NICK_BAD_CHARS = re.compile(r"[^A-Za-z0-9\[\]\\`_^{|}-]")


def irc_lower(name: str) -> str:
    """Fold a nick or channel name with CASEMAPPING=rfc1459 (``[]\\~`` are upper case of ``{}|^``)."""
    return name.translate(_RFC1459)


def valid_nick(nick: str, max_length: int) -> bool:
    """Whether C{nick} is a valid nickname (RFC 2812 §2.3.1 characters, at most C{max_length})."""
    return 0 < len(nick) <= max_length and _NICK_RE.match(nick) is not None


def valid_channel(name: str, max_length: int) -> bool:
    """Whether C{name} is a valid ``#`` channel name (no space, comma, BEL or colon)."""
    if not name.startswith("#") or len(name) < 2 or len(name.encode("utf-8")) > max_length:
        return False
    return not any(char in name for char in " ,\x07:\r\n\0")


def sanitise_nick(name: str, max_length: int) -> str:
    """
    Turn any display name (an ILIAS login such as ``"jörg.müller"``) into a valid nick.

    Accents are dropped (``ö`` becomes ``o``), other characters IRC does not allow become ``_``,
    and a leading digit or dash gets a ``_`` in front.
    """
    decomposed = unicodedata.normalize("NFKD", name.strip())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    nick = _NICK_BAD_CHARS.sub("_", plain) or "user"
    if not _NICK_RE.match(nick):
        nick = "_" + nick
    return nick[:max_length]


class ChannelLink:
    """
    What a channel mirroring a chat room asks of the bridge. The default allows everything and
    handles nothing, which is a plain local channel.
    """

    #: Whether IRC users may change the topic (a bridged room's title is owned by ILIAS).
    topic_settable = True

    def check_join(self, user: Any) -> "defer.Deferred[Optional[Tuple[str, str]]]":
        """Fire with None to allow a join, or with C{(numeric, text)} to refuse it."""
        return defer.succeed(None)

    def joined(self, user: Any) -> None:
        """A local IRC user has joined the channel."""

    def parted(self, user: Any, reason: str) -> None:
        """A local IRC user has left (part, quit, kick)."""

    def send(self, user: Any, command: str, text: str, tags: Dict[str, str]) -> bool:
        """
        Take a channel PRIVMSG/NOTICE from a local user. Return True when the link delivers it
        (to IRC members too, through the bus); False lets the network deliver it locally.
        """
        return False

    def send_private(self, user: Any, target: "RemoteUser", command: str, text: str) -> None:
        """A private message from a local user to a remote (browser) user."""

    def kick(self, by: Any, target: Any, reason: str) -> bool:
        """An IRC operator kicks C{target}; return False to refuse."""
        return True


class RemoteUser:
    """A user who is not connected over IRC (a browser user in a bridged room)."""

    __slots__ = ("nick", "username", "host", "realname", "away", "user_id", "key", "channels", "link")

    local = False
    registered = True
    caps: frozenset = frozenset()

    def __init__(self, nick: str, username: str, host: str, realname: str, user_id: int, key: Any):
        self.nick = nick
        self.username = username
        self.host = host
        self.realname = realname
        self.away: Optional[str] = None
        self.user_id = user_id
        self.key = key
        self.channels: Set["Channel"] = set()
        self.link: Optional[ChannelLink] = None

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.username}@{self.host}"

    def deliver(self, message: Message) -> None:
        """Remote users get room traffic from the room domain, not from IRC."""


class Channel:
    """A channel: members with their prefix modes, topic and the ``n``/``t`` modes."""

    def __init__(self, network: "IrcNetwork", name: str, link: Optional[ChannelLink] = None):
        self.network = network
        self.name = name
        self.link = link or ChannelLink()
        self.bridged = link is not None
        self.topic = ""
        self.topic_by = ""
        self.topic_time = 0
        self.created = int(network.clock.seconds())
        self.modes: Set[str] = {"n", "t"}
        # member -> set of prefix modes ("o", "v"); insertion order is join order.
        self.members: Dict[Any, Set[str]] = {}

    def __repr__(self) -> str:
        return f"<Channel {self.name} {len(self.members)} members>"

    def is_op(self, user: Any) -> bool:
        return "o" in self.members.get(user, ())

    def prefix_of(self, user: Any, multi: bool) -> str:
        modes = self.members.get(user, set())
        prefix = ("@" if "o" in modes else "") + ("+" if "v" in modes else "")
        return prefix if multi else prefix[:1]

    def local_members(self) -> List[Any]:
        return [member for member in self.members if member.local]

    def broadcast(self, message: Message, skip: Any = None, client_tags: Optional[Dict] = None) -> None:
        """Send C{message} to every local member except C{skip}."""
        for member in list(self.members):
            if member is not skip and member.local:
                member.deliver(message, client_tags)

    def mode_string(self) -> str:
        return "+" + "".join(sorted(self.modes))


class IrcNetwork:
    """
    Nick and channel registry shared by every IRC connection of the process.

    Args:
        config: the L{ilchat.config.IrcConfig}.
        clock: the reactor, for timestamps.
        authenticator: checks passwords in ``ilias`` auth mode (see L{ilchat.irc.auth}).
    """

    _log = Logger()
    #: Lines read from and written to every connection, plain counts for ``ilchat.metrics``.
    lines_received = lines_sent = 0

    def __init__(self, config: Any, clock: IReactorTime, authenticator: Any = None) -> None:
        self.config = config
        self.clock = clock
        self.authenticator = authenticator
        #: Failed password checks per address and account (see L{ilchat.irc.throttle}).
        self.login_throttle = LoginThrottle(config.login_limits, clock)
        self.users: Dict[str, Any] = {}
        self.channels: Dict[str, Channel] = {}
        self.created = clock.seconds()
        self.connections_per_ip: Dict[str, int] = {}
        self._next_open_id = -1
        #: ``ilchat.cluster`` ``IdBlocks`` for open-mode ids unique across processes (set by the
        #: IRC component); None: this network counts them itself.
        self.open_ids: Any = None
        #: Called with (user) when a local user is fully registered.
        self.on_register: List[Callable[[Any], None]] = []
        #: Called with (user, old nick) after a registered user changed nick.
        self.on_nick: List[Callable[[Any, str], None]] = []
        #: Called with (user) when a registered user has left the network (after its QUIT).
        self.on_quit: List[Callable[[Any], None]] = []
        #: Objects with C{resolve(name) -> Channel | None} and C{refresh()}: the bridges, which
        #: create the channel of a room on demand (rooms appear while the server runs).
        self.resolvers: List[Any] = []

    # -- ids -------------------------------------------------------------------------------------

    def allocate_open_id(self) -> int:
        """
        An id for an IRC user in ``open`` auth mode.

        ILIAS usr_ids are positive, so negative ids (-1, -2, ...) can never collide with a browser
        user's id; they are unique within this process (across the cluster with C{open_ids})
        and are not reused while it runs.
        """
        if self.open_ids is not None:
            return -self.open_ids.take()
        user_id = self._next_open_id
        self._next_open_id -= 1
        return user_id

    # -- nicks -----------------------------------------------------------------------------------

    def find_user(self, nick: str) -> Any:
        return self.users.get(irc_lower(nick))

    def claim_nick(self, user: Any, nick: str) -> bool:
        """Register C{nick} for C{user}; False if someone else holds it."""
        key = irc_lower(nick)
        holder = self.users.get(key)
        if holder is not None and holder is not user:
            return False
        old = getattr(user, "nick", None)
        if old and self.users.get(irc_lower(old)) is user and irc_lower(old) != key:
            del self.users[irc_lower(old)]
        self.users[key] = user
        return True

    def release_nick(self, user: Any) -> None:
        nick = getattr(user, "nick", None)
        if nick and self.users.get(irc_lower(nick)) is user:
            del self.users[irc_lower(nick)]

    def unique_nick(self, base: str) -> str:
        """A free nick derived from C{base}: sanitised, then suffixed ``_2``, ``_3``... on collision."""
        length = self.config.nick_length
        nick = sanitise_nick(base, length)
        candidate = nick
        counter = 1
        while irc_lower(candidate) in self.users:
            counter += 1
            suffix = f"_{counter}"
            candidate = nick[: length - len(suffix)] + suffix
        return candidate

    def peers_of(self, user: Any) -> Set[Any]:
        """Every local user sharing a channel with C{user} (not C{user})."""
        peers: Set[Any] = set()
        for channel in user.channels:
            for member in channel.members:
                if member.local and member is not user:
                    peers.add(member)
        return peers

    def change_nick(self, user: Any, new: str) -> bool:
        """Rename C{user}, telling everyone who shares a channel; False if the nick is taken."""
        old_mask = user.hostmask
        if not self.claim_nick(user, new):
            return False
        message = Message("NICK", (new,), prefix=old_mask)
        old = user.nick
        user.nick = new
        for hook in list(self.on_nick):
            try:
                hook(user, old)
            except Exception:
                self._log.failure("on_nick hook {hook!r} failed", hook=hook)
        for peer in self.peers_of(user):
            peer.deliver(message)
        if user.local:
            user.deliver(message)
        return True

    # -- channels --------------------------------------------------------------------------------

    def find_channel(self, name: str) -> Optional[Channel]:
        channel = self.channels.get(irc_lower(name))
        if channel is None:
            for resolver in self.resolvers:
                channel = resolver.resolve(name)
                if channel is not None:
                    break
        return channel

    def reserved(self, name: str) -> bool:
        """Whether C{name} is a bridged room's channel name (so no local channel may take it)."""
        return any(resolver.reserves(name) for resolver in self.resolvers)

    def refresh(self) -> None:
        """Let the bridges add channels for rooms created since (before a LIST)."""
        for resolver in self.resolvers:
            resolver.refresh()

    def add_channel(self, name: str, link: Optional[ChannelLink] = None, topic: str = "") -> Channel:
        """Create (or return) a channel; the bridge calls this for every exposed room."""
        channel = self.channels.get(irc_lower(name))
        if channel is None:
            channel = Channel(self, name, link)
            self.channels[irc_lower(name)] = channel
        if topic:
            channel.topic = topic
            channel.topic_by = self.config.server_name
            channel.topic_time = int(self.clock.seconds())
        return channel

    def remove_channel_if_empty(self, channel: Channel) -> None:
        if not channel.members and not channel.bridged:
            self.channels.pop(irc_lower(channel.name), None)

    def set_topic(self, channel: Channel, topic: str, by: str) -> None:
        """Set the topic and show it to the channel, e.g. when a room title changes."""
        channel.topic = topic
        channel.topic_by = by
        channel.topic_time = int(self.clock.seconds())
        channel.broadcast(Message("TOPIC", (channel.name, topic), prefix=by))

    def add_member(self, channel: Channel, user: Any, modes: Iterable[str] = ()) -> None:
        """Add C{user} and show the JOIN to the local members (the joiner included)."""
        if user in channel.members:
            return
        channel.members[user] = set(modes)
        user.channels.add(channel)
        channel.broadcast(Message("JOIN", (channel.name,), prefix=user.hostmask))

    def remove_member(
        self, channel: Channel, user: Any, command: str = "PART", reason: str = "", by: Any = None
    ) -> None:
        """
        Remove C{user} from C{channel}, showing a PART or KICK (the leaver included).

        A QUIT is shown by L{quit} instead, once per peer.
        """
        if user not in channel.members:
            return
        if command == "KICK":
            source = by.hostmask if by is not None else self.config.server_name
            message = Message("KICK", (channel.name, user.nick, reason or user.nick), prefix=source)
        else:
            params = (channel.name, reason) if reason else (channel.name,)
            message = Message("PART", params, prefix=user.hostmask)
        channel.broadcast(message)
        del channel.members[user]
        user.channels.discard(channel)
        if user.local:
            channel.link.parted(user, reason)
        self.remove_channel_if_empty(channel)

    def quit(self, user: Any, reason: str) -> None:
        """Remove C{user} from the network, showing one QUIT to each peer."""
        message = Message("QUIT", (reason,), prefix=user.hostmask)
        for peer in self.peers_of(user):
            peer.deliver(message)
        for channel in list(user.channels):
            del channel.members[user]
            if user.local:
                channel.link.parted(user, reason)
            self.remove_channel_if_empty(channel)
        user.channels.clear()
        self.release_nick(user)
        for hook in list(self.on_quit):
            try:
                hook(user)
            except Exception:
                self._log.failure("on_quit hook {hook!r} failed", hook=hook)
