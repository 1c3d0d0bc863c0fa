# -*- test-case-name: tests.irc.test_protocol -*-
"""
The IRC side of the world: nicks, channels and their members, in one process.

This module knows IRC rules (casemapping, valid names, channel modes) but no chat rooms: a channel
that mirrors a chat room carries a L{ChannelLink} that the bridge implements, and the network asks
the link before a join, tells it about parts and hands it the channel's messages, so that the room
domain stays the one place where room messages are posted, stored and fanned out.

Members are local connections (L{ilchat.irc.protocol.IRCServerProtocol}), L{RemoteUser}s
(browser users in a bridged room) or, with several processes, the IRC users of the others
(L{ilchat.irc.replication.PeerUser}); all offer the same attributes. What local users do is
shown to the local members here and reported to the C{on_*} hooks, through which
L{ilchat.irc.replication} tells the other processes.
"""

import re
import unicodedata
import zlib
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ilchat.irc.batches import unique_id
from ilchat.irc.history_store import LocalHistory, event_line, kept_tagmsg
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
    "account_token",
    "mask_matches",
    "WhowasEntry",
    "ListEntry",
]

#: How many former nicks WHOWAS remembers.
WHOWAS_LENGTH = 200
#: The ``ilchat.cluster`` claim namespace of the nicks of local IRC connections (irc_lower'd).
NICK_NAMESPACE = "irc-nick"

#: ASCII characters a nick may hold besides letters and digits (RFC 2812 §2.3.1's specials).
_NICK_ASCII_SPECIALS = set("[]\\`_^{|}-")
#: Characters a nick may not start with (a digit neither): they read as prefixes or channels.
_NICK_BAD_FIRST = set("-#&$+~%:'")


def irc_lower(name: str) -> str:
    """
    Fold a nick or channel name as CASEMAPPING=rfc8265 (PRECIS UsernameCaseMapped, as Ergo):
    full- and half-width forms to their usual ones, lower case, then NFC. ASCII (the common
    case) is only lower-cased: ``[`` and ``{`` are different characters.
    """
    if name.isascii():
        return name.lower()
    widened = "".join(
        unicodedata.normalize("NFKC", char)
        if unicodedata.decomposition(char).startswith(("<wide>", "<narrow>")) else char
        for char in name
    )
    return unicodedata.normalize("NFC", widened.lower())


def _nick_char(char: str, first: bool) -> bool:
    """Whether C{char} may be in a nick: ASCII letters, digits and specials; other letters, marks, digits."""
    if char.isascii():
        if char.isalpha() or char in _NICK_ASCII_SPECIALS:
            return not (first and char in _NICK_BAD_FIRST)
        return char.isdigit() and not first
    category = unicodedata.category(char)
    if category.startswith("L"):
        return True
    return not first and (category.startswith("M") or category == "Nd")


def mask_matches(mask: str, name: str) -> bool:
    """
    Whether C{name} matches the IRC glob C{mask} (``*`` any run, ``?`` one character), folded
    with the casemapping: WHO masks, bans, invite exceptions and operator host masks.
    """
    pattern = _MASK_CACHE.get(mask)
    if pattern is None:
        parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in irc_lower(mask))
        pattern = re.compile("".join(parts), re.DOTALL)
        if len(_MASK_CACHE) > 1000:
            _MASK_CACHE.clear()
        _MASK_CACHE[mask] = pattern
    return pattern.fullmatch(irc_lower(name)) is not None


_MASK_CACHE: Dict[str, Any] = {}


def valid_nick(nick: str, max_length: int) -> bool:
    """
    Whether C{nick} is a valid nickname: RFC 2812's ASCII letters, digits and specials, and,
    as UTF-8 servers (Ergo) allow, letters, marks and digits of any script; no spaces,
    punctuation or symbols (emoji); not starting with a digit or ``-``; in NFC; at most
    C{max_length} characters.
    """
    if not 0 < len(nick) <= max_length or unicodedata.normalize("NFC", nick) != nick:
        return False
    return all(_nick_char(char, index == 0) for index, char in enumerate(nick))


def valid_channel(name: str, max_length: int) -> bool:
    """Whether C{name} is a valid ``#`` channel name (no space, comma, BEL or colon)."""
    if not name.startswith("#") or len(name) < 2 or len(name.encode("utf-8")) > max_length:
        return False
    return not any(char in name for char in " ,\x07:\r\n\0")


def sanitise_nick(name: str, max_length: int) -> str:
    """
    Turn any display name (an ILIAS login such as ``"jörg.müller"``) into a valid nick, the
    same nick for the same name: letters of any script stay (``jörg_müller``), characters a nick
    may not hold (spaces, dots, emoji) become ``_``, a leading digit or dash gets a ``_`` in
    front, and a name with nothing left but ``_`` (all emoji) becomes ``user-<crc32 of the name>``.
    """
    text = unicodedata.normalize("NFC", name.strip())
    nick = "".join(char if _nick_char(char, False) else "_" for char in text)
    if not nick.strip("_"):
        nick = f"user-{zlib.crc32(text.encode('utf-8', 'surrogatepass')):08x}"
    if not _nick_char(nick[0], True):
        nick = "_" + nick
    return nick[:max_length]


def _elsewhere(user: Any) -> bool:
    """Whether C{user} is an IRC user of another process (whose nick is a cluster claim)."""
    return bool(getattr(user, "elsewhere", False))
def account_token(name: str) -> Optional[str]:
    """
    A web user's name as an IRCv3 account name (``extended-join``, ``account-tag``, WHOIS 330),
    the same token for the same name: the name the chat knows them by, each run of spaces and
    control or format characters (NUL, CR, LF, IRC colour codes, BiDi overrides: Unicode
    category C) as one ``_`` so that it fits a middle parameter and a tag value and cannot
    restyle or break a line; ``_`` before a leading ``:`` or ``*`` (``*`` means "no account");
    None for a name with nothing else.
    """
    words = "".join(" " if unicodedata.category(char)[0] == "C" else char for char in name).split()
    token = "_".join(words)
    if not token:
        return None
    return "_" + token if token.startswith((":", "*")) else token


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

    def send_private(self, user: Any, target: "RemoteUser", command: str, text: str,
                     tags: Optional[Dict[str, str]] = None, msgid: Optional[str] = None,
                     at: Optional[float] = None, lines: Any = None) -> None:
        """A private message from a local user to a remote (browser) user."""

    def kick(self, by: Any, target: Any, reason: str) -> bool:
        """An IRC operator kicks C{target}; return False to refuse."""
        return True

    def refusal(self, user: Any, action: str) -> Optional[str]:
        """
        Why C{user} may not C{action} (``"kick"``, ``"ban"``) in a bridged channel, or None; a
        local channel's chanops decide, so the default refuses nothing.
        """
        return None

    def change_ban(self, by: Any, adding: bool, mask: str) -> "defer.Deferred[Tuple[List[str], Optional[str]]]":
        """
        A ``+b``/``-b`` C{mask} the link keeps itself (a bridged room's bans): fires with the
        list masks set or lifted, and a notice for C{by} when nothing (or not all) changed.
        """
        return defer.succeed(([], None))

    def list_masks(self, letter: str) -> "defer.Deferred[List[Tuple[str, str, int]]]":
        """The ``(mask, set by, when)`` of a list mode (``b``) that the link keeps itself."""
        return defer.succeed([])

    def tagmsg(self, user: Any, tags: Dict[str, str]) -> None:
        """A local user's TAGMSG to the channel (client tags such as ``+typing``)."""

    def history(self, user: Any, limit: int, after: Any = None, before: Any = None,
                latest: bool = True) -> "defer.Deferred[List[Any]]":
        """
        The stored messages (L{ilchat.irc.history.HistoryLine}) between two bounds
        (``("id", n)`` or ``("ts", seconds)``), as the store's ``get_history_page``; a local
        channel keeps none.
        """
        return defer.succeed([])

    def latest_message_time(self) -> "defer.Deferred[Optional[float]]":
        """When the newest stored message was sent (seconds), or None (CHATHISTORY TARGETS)."""
        return defer.succeed(None)


class RemoteUser:
    """A user who is not connected over IRC (a browser user in a bridged room)."""

    __slots__ = ("nick", "username", "host", "realname", "away", "user_id", "key", "channels", "link",
                 "account")

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
        #: Web users are logged in (ILIAS or the standalone login): their name is their account.
        self.account: Optional[str] = account_token(realname)

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.username}@{self.host}"

    def deliver(self, message: Message) -> None:
        """Remote users get room traffic from the room domain, not from IRC."""


class ListEntry:
    """One mask of a channel's ban, exception or invite-exception list (``+b``/``+e``/``+I``)."""

    __slots__ = ("mask", "by", "when")

    def __init__(self, mask: str, by: str, when: int) -> None:
        self.mask = mask
        self.by = by
        self.when = when


class Channel:
    """
    A channel: members with their prefix modes, topic, flag modes (``i m n s t``), the key
    (``k``), the member limit (``l``), the ``b e I`` mask lists and who was invited.
    """

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
        self.key: Optional[str] = None
        self.limit: Optional[int] = None
        self.lists: Dict[str, List[ListEntry]] = {"b": [], "e": [], "I": []}
        #: Folded nicks invited while the channel is ``+i`` (an invite is used up by the join).
        self.invited: Set[str] = set()
        # member -> set of prefix modes ("o", "v"); insertion order is join order.
        self.members: Dict[Any, Set[str]] = {}
        #: With several processes: the origin and the fields' versions that the cluster's
        #: merge keeps (L{ilchat.irc.channel_sync.ChannelReplica}); None on one process.
        self.replica: Any = None

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

    def broadcast(self, message: Message, skip: Any = None, client_tags: Optional[Dict] = None,
                  msgid: Optional[str] = None, at: Optional[float] = None) -> None:
        """Send C{message} to every local member except C{skip}."""
        for member in list(self.members):
            if member is not skip and member.local:
                member.deliver(message, client_tags, msgid, at)

    def mode_string(self, show_key: bool = True) -> Tuple[str, ...]:
        """The modes as RPL_CHANNELMODEIS gives them: ``("+klnt", key, limit)``."""
        letters = "".join(sorted(self.modes))
        args: List[str] = []
        if self.key is not None:
            letters += "k"
            args.append(self.key if show_key else "*")
        if self.limit is not None:
            letters += "l"
            args.append(str(self.limit))
        return ("+" + letters, *args)

    def listed(self, letter: str, user: Any) -> bool:
        """Whether C{user}'s ``nick!user@host`` matches a mask of list C{letter}."""
        return any(mask_matches(entry.mask, user.hostmask) for entry in self.lists[letter])

    def is_voiced(self, user: Any) -> bool:
        return bool({"o", "v"} & self.members.get(user, set()))


class WhowasEntry:
    """A nick that was: who had it, for WHOWAS."""

    __slots__ = ("nick", "username", "host", "realname", "when")

    def __init__(self, user: Any, when: float) -> None:
        self.nick = user.nick
        self.username = user.username or "*"
        self.host = user.host
        self.realname = user.realname or user.nick
        self.when = when


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
        #: What IRC-only channels and private messages said, for CHATHISTORY (in memory).
        self.history = LocalHistory(config.chathistory_limit)
        self.users: Dict[str, Any] = {}
        self.channels: Dict[str, Channel] = {}
        self.created = clock.seconds()
        self.connections_per_ip: Dict[str, int] = {}
        self._next_open_id = -1
        #: ``ilchat.cluster`` ``IdBlocks`` for open-mode ids unique across processes (set by the
        #: IRC component); None: this network counts them itself.
        self.open_ids: Any = None
        #: The process's ``ilchat.cluster`` (set by the IRC component): the nicks of local
        #: connections are claimed in it, so no two processes hand out one nick. None: this
        #: network alone decides.
        self.cluster: Any = None
        #: The last nicks that quit or were changed, newest last (WHOWAS).
        self.whowas: Deque[WhowasEntry] = deque(maxlen=WHOWAS_LENGTH)
        #: The most users seen at once, local and in all (LUSERS).
        self.max_local = self.max_global = 0
        #: Called with (user) when a local user is fully registered.
        self.on_register: List[Callable[[Any], None]] = []
        #: Called with (user, old nick) after a registered user changed nick.
        self.on_nick: List[Callable[[Any, str], None]] = []
        #: Called with (user, reason) when a registered user has left the network (after its QUIT).
        self.on_quit: List[Callable[[Any, str], None]] = []
        #: Called with (channel, user) after a user joined a channel.
        self.on_join: List[Callable[[Channel, Any], None]] = []
        #: Called with (channel, user, command, reason, by) after a user left a channel
        #: (PART or KICK; a QUIT is C{on_quit}).
        self.on_leave: List[Callable[..., None]] = []
        #: Called with (channel, message) after a TOPIC or MODE change was shown to a channel.
        self.on_channel_change: List[Callable[[Channel, Message], None]] = []
        #: Called with (channel, user, command, text, client tags) after a channel PRIVMSG or
        #: NOTICE was relayed to the local members (not the room messages of a bridged room).
        self.on_relay: List[Callable[..., None]] = []
        #: Called with (channel, user, client tags, msgid) after a channel TAGMSG was shown to
        #: the local members.
        self.on_tagmsg: List[Callable[..., None]] = []
        #: Called with (channel, by, target) after an INVITE into an IRC-only channel.
        self.on_invite: List[Callable[..., None]] = []
        #: Called with (user) when a local user's away text or user modes changed.
        self.on_user_change: List[Callable[[Any], None]] = []
        #: Called with (user) when an IRC user of another process appears here.
        self.on_peer: List[Callable[[Any], None]] = []
        #: The browser users' nicks (L{ilchat.irc.web_nicks.browser_nicks}, made by the first bridge).
        self.browser_nicks: Any = None
        #: The IRC users of other processes by user id (kept by ilchat.irc.replication).
        self.peers_by_id: Dict[int, Set[Any]] = {}
        #: Objects with C{resolve(name) -> Channel | None} and C{refresh()}: the bridges, which
        #: create the channel of a room on demand (rooms appear while the server runs).
        self.resolvers: List[Any] = []

    def run_hooks(self, hooks: List[Callable[..., None]], *args: Any) -> None:
        """Call every hook of C{hooks}; one that fails is logged and keeps none from the others."""
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                self._log.failure("IRC hook {hook!r} failed", hook=hook)

    def user_changed(self, user: Any) -> None:
        """A local user's away text or user modes changed (the other processes are told)."""
        self.run_hooks(self.on_user_change, user)

    # -- events of IRC-only channels (draft/event-playback) ----------------------------------------

    def event_id(self, channel: Channel) -> Tuple[Optional[str], float]:
        """
        The msgid and time of an event shown in C{channel}: an IRC-only channel's events are
        kept in its history (CHATHISTORY plays them back) and carry the id they are kept
        under; a bridged room's (whose history is the database's) carry none.
        """
        return (None if channel.bridged else unique_id()), self.clock.seconds()

    def record_event(self, channel: Channel, message: Message, msgid: Optional[str], at: float,
                     client_tags: Optional[Dict[str, str]] = None) -> None:
        """Keep an event shown in an IRC-only channel (L{event_id} gave it an id)."""
        if msgid is not None and not channel.bridged:
            self.history.add(irc_lower(channel.name), event_line(message, msgid, at, client_tags))

    # -- ids -------------------------------------------------------------------------------------

    def allocate_open_id(self) -> int:
        """
        An id for an IRC user in ``open`` auth mode.

        ILIAS usr_ids are positive, so negative ids (-1, -2, ...) can never collide with a browser
        user's id; they are unique within this process (across the cluster with C{open_ids})
        and are not reused while it runs (nor in its next runs: C{open_ids} keeps its counter).
        """
        if self.open_ids is not None:
            return -self.open_ids.take()
        user_id = self._next_open_id
        self._next_open_id -= 1
        return user_id

    # -- nicks -----------------------------------------------------------------------------------

    def find_user(self, nick: str) -> Any:
        return self.users.get(irc_lower(nick))

    async def claim_cluster_nick(self, user: Any, nick: str) -> bool:
        """
        Whether C{nick} may be C{user}'s as far as the other processes go: claimed in the
        cluster (at once without one, or when a local user holds it: L{claim_nick} decides).
        A claim that no local user takes up is given back by L{give_back_nick}.
        """
        key = irc_lower(nick)
        holder = self.users.get(key)
        if self.cluster is None or (holder is not None and holder is not user and not _elsewhere(holder)):
            return True
        # Held by an IRC user of another process: the cluster knows whether it still is.
        claimed = bool(await self.cluster.claim(NICK_NAMESPACE, key))
        if claimed and self.browser_nicks is not None:
            # A browser user given the nick while the claim was on its way yields: the claim wins.
            self.browser_nicks.give_way(nick)
        return claimed

    def give_back_nick(self, nick: str) -> None:
        """Release C{nick}'s cluster claim unless a user of this process holds it."""
        key = irc_lower(nick)
        if self.cluster is None or key in self.users:
            return
        defer.ensureDeferred(self.cluster.release(NICK_NAMESPACE, key)).addErrback(
            lambda failure: self._log.failure("Could not release the nick {key}", failure, key=key))

    def claim_nick(self, user: Any, nick: str) -> bool:
        """
        Register C{nick} for C{user}; False if someone else holds it. An IRC user whose cluster
        claim succeeded (of this process or another) takes it from an IRC user of another
        process who gave it up there: their NICK or QUIT is on its way.
        """
        key = irc_lower(nick)
        holder = self.users.get(key)
        displaces = (user.local or _elsewhere(user)) and _elsewhere(holder)
        if holder is not None and holder is not user and not displaces:
            return False
        old = getattr(user, "nick", None)
        if old and self.users.get(irc_lower(old)) is user and irc_lower(old) != key:
            del self.users[irc_lower(old)]
            if user.local:
                self.give_back_nick(old)
        self.users[key] = user
        return True

    def irc_users_with_id(self, user_id: int) -> Set[Any]:
        """The IRC users of other processes with this user id (ilchat.irc.replication's)."""
        return self.peers_by_id.get(user_id, set())

    def release_nick(self, user: Any) -> None:
        nick = getattr(user, "nick", None)
        if nick and self.users.get(irc_lower(nick)) is user:
            del self.users[irc_lower(nick)]
            if user.local:
                self.give_back_nick(nick)

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

    def account_of(self, source: Optional[str]) -> Optional[str]:
        """The account of the user a message's C{nick!user@host} source names (``account-tag``)."""
        if not source or "!" not in source:
            return None
        user = self.users.get(irc_lower(source.partition("!")[0]))
        return getattr(user, "account", None)

    def notify(self, user: Any, cap: str, command: str, *params: str) -> None:
        """
        Tell the local users sharing a channel with C{user}, and C{user} itself, that have
        C{cap} of a change to it (``AWAY``, ``SETNAME``, ``ACCOUNT``); the others are not told.
        """
        message = Message(command, params, prefix=user.hostmask)
        told = self.peers_of(user) | ({user} if user.local else set())
        for peer in told:
            if cap in peer.caps:
                peer.deliver(message)

    def set_realname(self, user: Any, realname: str) -> None:
        """A new realname (IRCv3 ``setname``: SETNAME, or a web user's rename)."""
        user.realname = realname
        self.notify(user, "setname", "SETNAME", realname)

    def set_account(self, user: Any, account: Optional[str]) -> None:
        """A new account (a web user's rename): ``ACCOUNT`` to those with ``account-notify``."""
        if account == user.account:
            return
        user.account = account
        self.notify(user, "account-notify", "ACCOUNT", account or "*")

    def change_nick(self, user: Any, new: str) -> bool:
        """Rename C{user}, telling everyone who shares a channel; False if the nick is taken."""
        old_mask = user.hostmask
        if not self.claim_nick(user, new):
            return False
        message = Message("NICK", (new,), prefix=old_mask)
        old = user.nick
        self.whowas.append(WhowasEntry(user, self.clock.seconds()))
        user.nick = new
        self._uninvite(old)
        self.run_hooks(self.on_nick, user, old)
        msgid, at = self._user_event(user, message)
        for peer in self.peers_of(user):
            peer.deliver(message, None, msgid, at)
        if user.local:
            user.deliver(message, None, msgid, at)
        return True

    def _user_event(self, user: Any, message: Message) -> Tuple[Optional[str], float]:
        """
        A NICK or QUIT shown in every channel of C{user}: kept in those that are IRC-only, under
        one msgid (None when all are bridged rooms).
        """
        local = [channel for channel in user.channels if not channel.bridged]
        if not local:
            return None, self.clock.seconds()
        msgid, at = self.event_id(local[0])
        for channel in local:
            self.record_event(channel, message, msgid, at)
        return msgid, at

    def _uninvite(self, nick: str) -> None:
        """
        A nick let go loses its invitations: they were for its holder, not for whoever takes it
        next (and a channel's invitations stay as many as the users who can use them).
        """
        folded = irc_lower(nick)
        for channel in self.channels.values():
            channel.invited.discard(folded)

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
        message = Message("TOPIC", (channel.name, topic), prefix=by)
        msgid, at = self.event_id(channel)
        self.record_event(channel, message, msgid, at)
        self.show_change(channel, message, msgid, at)

    def show_change(self, channel: Channel, message: Message, msgid: Optional[str] = None,
                    at: Optional[float] = None) -> None:
        """Show a TOPIC or MODE change to the local members and tell the C{on_channel_change} hooks."""
        channel.broadcast(message, msgid=msgid, at=at)
        self.run_hooks(self.on_channel_change, channel, message)

    def relay(self, channel: Channel, sender: Any, command: str, text: str, tags: Dict[str, str],
              msgid: Optional[str] = None, at: Optional[float] = None,
              lines: Optional[List[Tuple[str, bool]]] = None) -> None:
        """
        A channel PRIVMSG/NOTICE to the local members (the sender with echo-message only), with
        its msgid, time and multiline lines, the same on every process.
        """
        for member in channel.local_members():
            if member is not sender or "echo-message" in member.caps:
                member.relay_text(command, channel.name, text, sender.hostmask, tags, msgid, at, lines)
        self.run_hooks(self.on_relay, channel, sender, command, text, tags, msgid, at, lines)

    def tagmsg(self, channel: Channel, sender: Any, tags: Dict[str, str], msgid: str) -> None:
        """A channel TAGMSG (client tags such as ``+typing``) to the local members with message-tags."""
        outgoing = Message("TAGMSG", (channel.name,), prefix=sender.hostmask)
        at = self.clock.seconds()
        if kept_tagmsg(tags):
            self.record_event(channel, outgoing, msgid, at, tags)
        for member in channel.local_members():
            if member is not sender and "message-tags" in member.caps:
                member.deliver(outgoing, tags, msgid, at)
        self.run_hooks(self.on_tagmsg, channel, sender, tags, msgid)

    def invite(self, channel: Channel, by: Any, target: Any) -> None:
        """
        C{by} invites C{target}: the invitation counts for ``+i``, the target (if local) gets
        the INVITE, and so do the local operators with ``invite-notify``.
        """
        channel.invited.add(irc_lower(target.nick))
        invite = Message("INVITE", (target.nick, channel.name), prefix=by.hostmask)
        if target.local:
            target.deliver(invite)
        for member in channel.local_members():
            if member is not by and "invite-notify" in member.caps and channel.is_op(member):
                member.deliver(invite)
        self.run_hooks(self.on_invite, channel, by, target)

    def add_member(self, channel: Channel, user: Any, modes: Iterable[str] = ()) -> None:
        """Add C{user} and show the JOIN to the local members (the joiner included)."""
        if user in channel.members:
            return
        channel.members[user] = set(modes)
        user.channels.add(channel)
        plain = Message("JOIN", (channel.name,), prefix=user.hostmask)
        extended = Message("JOIN", (channel.name, user.account or "*", user.realname or user.nick),
                           prefix=user.hostmask)
        away = Message("AWAY", (user.away,), prefix=user.hostmask) if user.away else None
        msgid, at = self.event_id(channel)
        self.record_event(channel, plain, msgid, at)
        for member in channel.local_members():
            member.deliver(extended if "extended-join" in member.caps else plain, None, msgid, at)
            if away is not None and member is not user and "away-notify" in member.caps:
                member.deliver(away)
        self.run_hooks(self.on_join, channel, user)

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
        msgid, at = self.event_id(channel)
        self.record_event(channel, message, msgid, at)
        channel.broadcast(message, msgid=msgid, at=at)
        del channel.members[user]
        user.channels.discard(channel)
        if user.local:
            channel.link.parted(user, reason)
        self.remove_channel_if_empty(channel)
        self.run_hooks(self.on_leave, channel, user, command, reason, by)

    def quit(self, user: Any, reason: str) -> None:
        """Remove C{user} from the network, showing one QUIT to each peer."""
        message = Message("QUIT", (reason,), prefix=user.hostmask)
        self.whowas.append(WhowasEntry(user, self.clock.seconds()))
        msgid, at = self._user_event(user, message)
        for peer in self.peers_of(user):
            peer.deliver(message, None, msgid, at)
        for channel in list(user.channels):
            del channel.members[user]
            if user.local:
                channel.link.parted(user, reason)
            self.remove_channel_if_empty(channel)
        user.channels.clear()
        self._uninvite(user.nick)
        self.release_nick(user)
        self.run_hooks(self.on_quit, user, reason)
