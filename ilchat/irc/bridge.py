# -*- test-case-name: tests.irc.test_bridge -*-
"""
The bridge between IRC channels and repository chat rooms.

Each exposed room of a client is the channel ``#<client name>-<roomId>`` with the room title as
its topic. An IRC user who joins becomes a member of the room through the very calls a browser
makes (``connect``, ``add_room_member``, ``login``, ``enter_room``) with the connection id
``"irc:<n>"``, so browsers see them in the userlist; a PART is L{ChatRooms.part_room}. What they
say goes through L{ChatRooms.post_message}: browsers get an ILIAS ``message`` and it is stored in
``chatroom_history`` like any other, and IRC members get it back from the bus like everyone else.
The bridge uses the domain's public calls only; it never edits rooms or members itself.

The other way, the bridge subscribes to the client's bus topic and renders the room events
(L{ilchat.chat.events}) as IRC, from the event and its own state only (the rooms' titles and who
is present, recorded from the domain at start and from the events since): ``message`` as PRIVMSG
from the browser user (echo suppression by the event's ``connection``), ``entered`` as a JOIN of
a browser user (who gets a valid, unique nick derived from their name), ``left``/``parted`` as
PART "Disconnected", ``room_left`` as PART, ``kicked``/``banned`` as KICK (of the IRC user or the
browser user with that member id), ``cleared`` as a NOTICE, ``typing`` as TAGMSG ``+typing``
(to clients with message-tags; their own ``+typing`` is the room's typing). Messages carry the
event's ``id`` as ``msgid`` (the history row's id) and its time; the rooms' stored history is
what CHATHISTORY and the JOIN playback read (L{ilchat.irc.history}).

With several processes, the IRC users of the others (L{ilchat.irc.replication.PeerUser}) are
channel members as themselves: their room events add no browser user, their room messages come
from their own nick, and a browser user shown before the IRC user was known gives way to them.
A browser user's nick is the same on every process: an IRC user (of any process) keeps a nick
they hold, and browser users whose names make one nick share it out by a rule over their ids
that every process follows (L{ilchat.irc.web_nicks}).

User ids: in ``ilias`` auth mode an IRC user has their ILIAS usr_id. In ``open`` mode the network
allocates negative ids (-1, -2, ...), which no ILIAS usr_id can be (they are positive).
"""

import re
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from ilchat.chat.cluster_presence import ClusterPresence
from ilchat.chat.rooms import ChatError, ChatRooms, ContentTooLong
from ilchat.irc.history_store import Bound, HistoryLine
from ilchat.irc.message import Message, decimal_number
from ilchat.irc.web_nicks import browser_nicks
from ilchat.jsonutil import JSONError, loads
from ilchat.irc.network import (
    Channel,
    ChannelLink,
    IrcNetwork,
    RemoteUser,
    account_token,
    irc_lower,
    mask_matches,
    sanitise_nick,
)

__all__ = ["RoomBridge", "channel_name"]

_FORMATTING = re.compile(r"\x03(\d{1,2}(,\d{1,2})?)?|[\x02\x0f\x11\x16\x1d\x1e\x1f]")
_CHANNEL_BAD = re.compile(r"[\s,\x07:]")
_HOST_BAD = re.compile(r"[^A-Za-z0-9.-]")

KICK_REASON = "Kicked from the chat room"
BAN_REASON = "Banned from the chat room"
#: How a web message says it is an action: the ``/me`` command as chat clients write it.
ME = "/me "
#: IRC texts of this process's IRC messages by message id, until the bus brings the message back.
_MAX_PENDING = 1000
#: The ``+typing`` values of IRCv3 typing notifications.
TYPING_STATES = ("active", "paused", "done")
#: Bans listed for ``MODE #room b``.
MAX_BAN_LIST = 100


def channel_name(instance: str, room_id: int) -> str:
    """``#<client name>-<roomId>``, with characters IRC forbids in channel names replaced."""
    return f"#{_CHANNEL_BAD.sub('_', instance)}-{room_id}"


def ctcp_command(text: str) -> Optional[str]:
    """The CTCP command of a message (``ACTION``, ``VERSION``...), upper case, or None for text."""
    if not text.startswith("\x01"):
        return None
    return text[1:].rstrip("\x01").split(" ", 1)[0].upper()


def irc_to_chat_text(text: str) -> Optional[str]:
    """
    Text of an IRC message as browsers should see it: formatting codes removed, a CTCP ACTION
    (``/me`` on IRC) as ``/me text``, the web's spelling of it; None for other CTCP requests
    (VERSION, PING...), which are not chat, and for text that is empty once cleaned.
    """
    command = ctcp_command(text)
    if command == "ACTION":
        body = _FORMATTING.sub("", text[1:].rstrip("\x01")[7:]).strip()
        return ME + body if body else None
    if command is not None:
        return None
    cleaned = _FORMATTING.sub("", text)
    return cleaned if cleaned.strip() else None


def chat_action(content: str) -> Optional[str]:
    """The action of a web message written as ``/me text`` (C{"text"}), else None."""
    if content.startswith(ME) and content[len(ME):].strip():
        return content[len(ME):]
    return None


def _store_bound(bound: Optional[Bound]) -> Any:
    """A CHATHISTORY bound as the store's (``("id", hist_id)``/``("ts", s)``); False for none."""
    if bound is None or bound[0] == "ts":
        return bound
    kind, msgid = bound
    if not decimal_number(msgid):
        return False
    return ("id", int(msgid) + 1) if kind == "upto" else ("id", int(msgid))


class RoomLink(ChannelLink):
    """The link of one bridged channel to its room."""

    topic_settable = False

    def __init__(self, bridge: "RoomBridge", room_id: int) -> None:
        self.bridge = bridge
        self.room_id = room_id

    def check_join(self, user: Any) -> "defer.Deferred[Optional[Tuple[str, str]]]":
        return defer.ensureDeferred(self.bridge.check_join(user, self.room_id))

    def joined(self, user: Any) -> None:
        self.bridge.irc_joined(user, self.room_id)

    def parted(self, user: Any, reason: str) -> None:
        self.bridge.irc_parted(user, self.room_id)

    def send(self, user: Any, command: str, text: str, tags: Dict[str, str]) -> bool:
        """
        A PRIVMSG is a room message; a NOTICE and a CTCP request other than ACTION are IRC's
        own (not chat, never stored): False lets the network relay them to the IRC members
        untouched.
        """
        if command != "PRIVMSG" or ctcp_command(text) not in (None, "ACTION"):
            return False
        self.bridge.irc_message(user, self.room_id, text, tags)
        return True

    def kick(self, by: Any, target: Any, reason: str) -> bool:
        return self.bridge.irc_kick(by, target, self.room_id)

    def refusal(self, user: Any, action: str) -> Optional[str]:
        return self.bridge.oper_refusal(user, action)

    def change_ban(self, by: Any, adding: bool, mask: str) -> "defer.Deferred[Tuple[List[str], Optional[str]]]":
        return defer.ensureDeferred(self.bridge.irc_ban(by, self.room_id, adding, mask))

    def list_masks(self, letter: str) -> "defer.Deferred[List[Tuple[str, str, int]]]":
        if letter != "b":
            return defer.succeed([])
        return defer.ensureDeferred(self.bridge.ban_masks(self.room_id))

    def tagmsg(self, user: Any, tags: Dict[str, str]) -> None:
        self.bridge.irc_typing(user, self.room_id, tags)

    def history(self, user: Any, limit: int, after: Any = None, before: Any = None,
                latest: bool = True) -> "defer.Deferred[List[HistoryLine]]":
        return defer.ensureDeferred(self.bridge.history(user, self.room_id, limit, after, before, latest))

    def latest_message_time(self) -> "defer.Deferred[Optional[float]]":
        return defer.ensureDeferred(self.bridge.latest_message_time(self.room_id))


class RoomBridge:
    """
    Bridges the rooms of one client (one ``ChatRooms`` instance) to the IRC network.

    Args:
        network: the process's IRC network.
        chat: the client's room domain.
        store: the client's store (``is_banned``).
        exposed: the room ids to expose, or None for all rooms.
        auth_mode: ``"ilias"`` or ``"open"``.
        keeps_bans: whether the rooms' bans are ILIAS's (``chatroom_bans``, which PHP checks
            before it lets a user in): an operator's ``+b`` is refused where nothing would
            enforce it (the standalone chat's users are new ids at every login).
    """

    _log = Logger()

    def __init__(
        self,
        network: IrcNetwork,
        chat: ChatRooms,
        store: Any,
        exposed: Optional[Iterable[int]] = None,
        auth_mode: str = "open",
        bus: Any = None,
        written_text: Optional[Callable[[str], str]] = None,
        keeps_bans: bool = True,
    ) -> None:
        self.network = network
        self.keeps_bans = keeps_bans
        #: A stored message text as its writer wrote it (the room's adapter may store texts
        #: HTML-escaped for its pages, which IRC users must not see).
        self.written_text: Callable[[str], str] = written_text or (lambda text: text)
        #: The browser users' nicks, shared by the network's bridges (ilchat.irc.web_nicks).
        self.nicks = browser_nicks(network)
        self.chat = chat
        self.store = store
        self.bus = bus
        self.instance = chat.instance
        self.exposed: Optional[Set[int]] = None if exposed is None else set(exposed)
        self.auth_mode = auth_mode
        self.channels: Dict[int, Channel] = {}
        #: connection id -> local IRC user, for every IRC user logged in to this client's chat.
        self.conns: Dict[str, Any] = {}
        self.remotes: Dict[int, RemoteUser] = {}
        self._prefix = irc_lower(channel_name(self.instance, 0)[:-1])
        self._host = (_HOST_BAD.sub("-", self.instance) or "client") + ".ilias"
        # What the bridge knows of the rooms, from the domain at start and then from events
        # only: titles, and who is present on any process, for channels made later.
        self._titles: Dict[int, str] = {}
        self._presence = ClusterPresence()
        self._suppress_part: Set[Any] = set()
        #: message id -> (IRC text, client tags) of messages this process's IRC users posted.
        self._pending: "OrderedDict[str, Tuple[str, Dict[str, str]]]" = OrderedDict()
        self._unsubscribe: Any = None
        self._counter = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, bus: Any) -> None:
        """Subscribe to the client's room topic and create channels for the rooms known now."""
        self.bus = bus
        for room in self.chat.rooms():
            self._titles[room.id] = room.title
        self._presence = self.chat.presence.copy()
        self._unsubscribe = bus.subscribe(self.chat.topic, self._deliver)
        self.network.resolvers.append(self)
        self.network.on_quit.append(self._irc_user_gone)
        self.network.on_nick.append(self._irc_nick_changed)
        self.network.on_peer.append(self._irc_user_elsewhere)
        if hasattr(self.chat, "name_checks"):
            self.chat.name_checks.append(self._irc_name_in_use)
        self.refresh()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self in self.network.resolvers:
            self.network.resolvers.remove(self)
        if self._irc_user_gone in self.network.on_quit:
            self.network.on_quit.remove(self._irc_user_gone)
        if self._irc_nick_changed in self.network.on_nick:
            self.network.on_nick.remove(self._irc_nick_changed)
        if self._irc_user_elsewhere in self.network.on_peer:
            self.network.on_peer.remove(self._irc_user_elsewhere)
        if hasattr(self.chat, "name_checks") and self._irc_name_in_use in self.chat.name_checks:
            self.chat.name_checks.remove(self._irc_name_in_use)

    def _irc_name_in_use(self, name: str) -> bool:
        """Browser users of the standalone chat may not take a name an IRC user (of any process) has as nick."""
        user = self.network.find_user(name)
        return user is not None and (user.local or bool(getattr(user, "elsewhere", False)))

    # -- channels --------------------------------------------------------------------------------

    def is_exposed(self, room_id: int) -> bool:
        # ILIAS 8 private rooms (negative room keys) are PHP's invitation-only rooms: no channel.
        return room_id >= 0 and (self.exposed is None or room_id in self.exposed)

    def refresh(self) -> None:
        """Make sure every exposed room has its channel (rooms created since, e.g. by PHP)."""
        for room in self.chat.rooms():
            if self.is_exposed(room.id):
                self._ensure_channel(room.id, room.title)

    def reserves(self, name: str) -> bool:
        """Names of the form ``#<client>-<digits>`` belong to the bridge, room or not."""
        folded = irc_lower(name)
        return folded.startswith(self._prefix) and folded[len(self._prefix) :].isdigit()

    def resolve(self, name: str) -> Optional[Channel]:
        """The channel for C{name} if it names an exposed room of this client."""
        folded = irc_lower(name)
        if not folded.startswith(self._prefix):
            return None
        rest = folded[len(self._prefix) :]
        if not decimal_number(rest):
            return None
        room = self.chat.get_room(int(rest))
        if room is None or not self.is_exposed(room.id):
            return None
        self._titles.setdefault(room.id, room.title)
        return self._ensure_channel(room.id, self._titles[room.id])

    def _ensure_channel(self, room_id: int, title: str) -> Channel:
        channel = self.channels.get(room_id)
        if channel is not None:
            return channel
        channel = self.network.add_channel(
            channel_name(self.instance, room_id), RoomLink(self, room_id), topic=title
        )
        self.channels[room_id] = channel
        # Browser users already present appear without JOIN lines: nobody on IRC is there yet.
        # Who is present is the bridge's own record, built from the room events.
        for member in self._presence.present(room_id):
            if not self._is_irc_id(member["id"]):
                remote = self._remote_for(member["id"], member["name"])
                channel.members[remote] = set()
                remote.channels.add(channel)
        return channel

    def _is_irc_id(self, user_id: int) -> bool:
        """Whether an IRC user (of this process or another) is this member: not a browser nick."""
        return any(user.user_id == user_id for user in self.conns.values()) or bool(
            self._peers_with_id(user_id))

    def _peers_with_id(self, user_id: int) -> List[Any]:
        """The IRC users of other processes who are this client's member C{user_id}."""
        return [peer for peer in self.network.irc_users_with_id(user_id)
                if peer.account_client in (None, self.instance)]

    def _irc_user_elsewhere(self, peer: Any) -> None:
        """
        An IRC user of another process appears: if their member was shown as a browser user
        (the room events came first), the IRC user takes that place, without PART and JOIN.
        """
        if peer.account_client not in (None, self.instance):
            return
        remote = self.remotes.pop(peer.user_id, None)
        if remote is None:
            return
        for channel in list(remote.channels):
            channel.members[peer] = channel.members.pop(remote)
            peer.channels.add(channel)
            if remote.nick != peer.nick:
                channel.broadcast(Message("NICK", (peer.nick,), prefix=remote.hostmask))
        remote.channels.clear()
        self.nicks.remove(remote, also_taken=peer.nick)

    def _remote_for(self, user_id: int, name: Optional[str]) -> RemoteUser:
        remote = self.remotes.get(user_id)
        if remote is None:
            display = name or f"user{user_id}"
            remote = RemoteUser("", "ilias", self._host, display, user_id, (self.instance, user_id))
            remote.link = self
            self.remotes[user_id] = remote
            self.nicks.add(remote)
        return remote

    def _drop_remote_if_unused(self, remote: RemoteUser) -> None:
        if not remote.channels:
            self.remotes.pop(remote.user_id, None)
            self.nicks.remove(remote)

    def _conn_of(self, user: Any) -> str:
        conn = getattr(user, "chat_connection", None)
        if conn is None:
            self._counter += 1
            conn = f"irc:{self.instance}:{self._counter}:{id(user)}"
            user.chat_connection = conn
        return conn

    # -- IRC -> chat -----------------------------------------------------------------------------

    async def check_join(self, user: Any, room_id: int) -> Optional[Tuple[str, str]]:
        """Refuse guests and users of another ILIAS client (477), banned users (474) and gone rooms."""
        if self.chat.get_room(room_id) is None:
            return ("403", "No such channel")
        if self.auth_mode == "ilias":
            if user.account is None:
                return ("477", "Guests cannot join ILIAS chat rooms: log in with SASL PLAIN")
            if user.account_client != self.instance:
                return ("477", f"Your account is not an account of the ILIAS client {self.instance}")
            try:
                banned = await self.store.is_banned(room_id, user.user_id)
            except Exception:
                self._log.failure("Cannot check the ban of {user} in room {room}",
                                  user=user.user_id, room=room_id)
                return ("474", "Cannot join channel (the ban list cannot be read now)")
            if banned:
                return ("474", "Cannot join channel (+b) - you are banned from this chat room")
        return None

    async def ban_masks(self, room_id: int) -> List[Tuple[str, str, int]]:
        """
        The room's ILIAS bans as a ``+b`` list: ``<nick of the login>!*@<client host>`` (the
        user id where ``usr_data`` has no login), set by ``ILIAS``.
        """
        try:
            bans = await self.store.get_bans(room_id, MAX_BAN_LIST)
        except Exception:
            self._log.failure("Cannot read the bans of room {room}", room=room_id)
            return []
        return [(self._ban_mask(ban), "ILIAS", ban["timestamp"]) for ban in bans]

    def _ban_mask(self, ban: Dict[str, Any]) -> str:
        """How a ``chatroom_bans`` row shows in the ``+b`` list."""
        nick = sanitise_nick(ban["login"] or str(ban["user_id"]), self.network.config.nick_length)
        return f"{nick}!*@{self._host}"

    def oper_refusal(self, user: Any, action: str) -> Optional[str]:
        """
        Why C{user} may not C{action} (``"kick"``, ``"ban"``) in this client's rooms from IRC,
        or None: only IRC operators act there, as ILIAS moderators, and only where the server
        allows it (``irc.oper_kick``, ``irc.oper_ban``).
        """
        if "o" not in getattr(user, "user_modes", ()):
            return f"Only IRC operators may {action} in a chat room from IRC (ILIAS moderators {action} in ILIAS)"
        allowed = self.network.config.oper_ban if action == "ban" else self.network.config.oper_kick
        if not allowed:
            return f"IRC operators may not {action} in chat rooms on this server ({action}s are set in ILIAS)"
        if action == "ban" and not self.keeps_bans:
            return "This chat keeps no bans (its users are not ILIAS accounts); KICK instead"
        return None

    def irc_kick(self, by: Any, target: Any, room_id: int) -> bool:
        """
        An IRC operator (``OPER``) kicks a member out of the room as an ILIAS moderator would
        (L{ChatRooms.kick}: out of the room everywhere); nobody else may kick in a chat room.
        """
        if self.oper_refusal(by, "kick") is not None:
            return False
        user_id = target.user_id
        self._log.info("IRC operator {nick} kicks user {user} from room {room}",
                       nick=by.nick, user=user_id, room=room_id)
        try:
            return self.chat.kick(room_id, user_id)
        except ChatError:
            return False

    async def irc_ban(self, by: Any, room_id: int, adding: bool,
                      mask: str) -> Tuple[List[str], Optional[str]]:
        """
        An IRC operator's ``+b``/``-b`` C{mask} (``nick!user@host``): the ``+b`` masks of the
        bans set or lifted, and a notice for the operator when some or all were not.
        """
        if self.oper_refusal(by, "ban") is not None:
            return [], None
        if adding:
            return await self._ban(by, room_id, mask)
        return await self._unban(by, room_id, mask)

    async def _ban(self, by: Any, room_id: int, mask: str) -> Tuple[List[str], Optional[str]]:
        """
        Ban every ILIAS user of the room whose nick!user@host matches, as a moderator's ban in
        ILIAS goes: the ``chatroom_bans`` row PHP would write (first: no ban that a restart or
        another process forgets), then the backend's Ban (L{ChatRooms.ban}: out of every room,
        browsers get ``userjustbanned``), then their ``chatroom_users`` rows become sessions
        (PHP's ``disconnectUser``). The operator's own account and open-mode IRC users (no
        ILIAS account) are never banned.
        """
        name = channel_name(self.instance, room_id)
        channel = self.channels.get(room_id)
        targets: Dict[int, str] = {}
        for member in list(channel.members) if channel is not None else []:
            if member.user_id > 0 and member.user_id != by.user_id and mask_matches(mask, member.hostmask):
                targets.setdefault(member.user_id, member.nick)
        if not targets:
            return [], f"Nobody in {name} matches {mask}: nobody banned"
        own = by.user_id > 0 and getattr(by, "account_client", None) == self.instance
        actor = by.user_id if own else 0
        now = int(self.network.clock.seconds())
        banned: List[int] = []
        failed: List[str] = []
        for user_id, nick in sorted(targets.items()):
            try:
                await self.store.ban_user(room_id, user_id, actor, now)
            except Exception:
                self._log.failure("Cannot store the ban of user {user} from room {room}",
                                  user=user_id, room=room_id)
                failed.append(nick)
                continue
            self._log.info("IRC operator {nick} bans user {user} from room {room} (+b {mask})",
                           nick=by.nick, user=user_id, room=room_id, mask=mask)
            self.chat.ban(room_id, user_id)
            banned.append(user_id)
            try:
                await self.store.move_user_to_sessions(user_id, [room_id], now)
            except Exception:
                self._log.failure("Cannot end the chatroom_users row of banned user {user}", user=user_id)
        note = f"Cannot store the ban of {', '.join(failed)} now: not banned" if failed else None
        return await self._masks_of(room_id, banned), note

    async def _masks_of(self, room_id: int, user_ids: List[int]) -> List[str]:
        """The ``+b`` masks of these users' bans (a MODE line shows what the list now holds)."""
        try:
            bans = await self.store.get_bans(room_id, MAX_BAN_LIST, user_ids=user_ids)
        except Exception:
            self._log.failure("Cannot read the bans of room {room}", room=room_id)
            return []
        return [self._ban_mask(ban) for ban in bans]

    async def _unban(self, by: Any, room_id: int, mask: str) -> Tuple[List[str], Optional[str]]:
        """Lift the room's bans whose ``+b`` mask the operator's mask matches, as ILIAS's unban does."""
        name = channel_name(self.instance, room_id)
        try:
            bans = await self.store.get_bans(room_id, MAX_BAN_LIST)
            matched = [ban for ban in bans if mask_matches(mask, self._ban_mask(ban))]
            if matched:
                await self.store.unban_users(room_id, [ban["user_id"] for ban in matched])
        except Exception:
            self._log.failure("Cannot lift bans of room {room}", room=room_id)
            return [], f"Cannot change the bans of {name} now: nothing lifted"
        if not matched:
            return [], f"No ban of {name} matches {mask}: nothing lifted"
        self._log.info("IRC operator {nick} lifts the bans of users {users} from room {room} (-b {mask})",
                       nick=by.nick, users=[ban["user_id"] for ban in matched], room=room_id, mask=mask)
        return [self._ban_mask(ban) for ban in matched], None

    def irc_joined(self, user: Any, room_id: int) -> None:
        """Enter the room as a browser would; browsers see the IRC user in the userlist."""
        conn = self._conn_of(user)
        self.conns[conn] = user
        try:
            self.chat.connect(user.user_id)
            self.chat.add_room_member(room_id, user.user_id)
            self.chat.login(conn, user.user_id, user.display_name)
            self.chat.enter_room(conn, room_id)
        except ChatError as e:
            self._log.warn("IRC user {nick} cannot enter room {room}: {error}",
                           nick=user.nick, room=room_id, error=str(e))

    def irc_parted(self, user: Any, room_id: int) -> None:
        """
        The IRC connection leaves the room through L{ChatRooms.part_room}.

        Not C{leave_room}: that is PHP's LeavePrivateRoom, which would also send ``left`` to the
        browser tabs of the same ILIAS account and take them out of the room. ``part_room`` takes
        out this connection only; the member leaves (browsers get the ``userlist`` and a
        ``disconnected`` notice) only when no other connection of theirs is in the room.
        """
        if user in self._suppress_part:
            return
        try:
            self.chat.part_room(self._conn_of(user), room_id)
        except ChatError as e:
            # Never entered (irc_joined was refused) or the room is gone: nothing to undo.
            self._log.debug("IRC user {nick} parts room {room}: {error}",
                            nick=user.nick, room=room_id, error=str(e))

    def irc_typing(self, user: Any, room_id: int, tags: Dict[str, str]) -> None:
        """A TAGMSG ``+typing`` is the web's typing notice: ``active`` started, else stopped."""
        state = tags.get("+typing", tags.get("+draft/typing"))
        conn = getattr(user, "chat_connection", None)
        if state not in TYPING_STATES or conn not in self.conns:
            return
        try:
            self.chat.typing(conn, room_id, state == "active")
        except ChatError as e:
            self._log.debug("Typing of IRC user {nick} in room {room}: {error}",
                            nick=user.nick, room=room_id, error=str(e))

    # -- history ---------------------------------------------------------------------------------

    async def history(self, user: Any, room_id: int, limit: int, after: Optional[Bound] = None,
                      before: Optional[Bound] = None, latest: bool = True) -> List[HistoryLine]:
        """The room's stored messages as IRC lines; whispers only for their sender and target."""
        bounds = [_store_bound(bound) for bound in (after, before)]
        if any(bound is False for bound in bounds):
            return []  # a msgid that names no stored message (an IRC-only one's)
        rows = await self.store.get_history_page(room_id, limit, after=bounds[0], before=bounds[1],
                                                 latest=latest)
        lines = []
        for row in rows:
            line = self._history_line(row, user)
            if line is not None:
                lines.append(line)
        return lines

    async def latest_message_time(self, room_id: int) -> Optional[float]:
        return (await self.store.get_history_times([room_id])).get(room_id)

    def _history_line(self, row: Dict[str, Any], user: Any) -> Optional[HistoryLine]:
        try:
            payload = loads(row["message"])
            sender = payload["from"]
            content = self.written_text(str(payload["content"]))
            sender_id = int(sender["id"])
        except (JSONError, KeyError, TypeError, ValueError):
            return None
        target = payload.get("target")
        if isinstance(target, dict):
            if not target.get("public") and user.user_id not in (sender_id, target.get("id")):
                return None
            if target.get("username") and chat_action(content) is None:
                content = f"{target['username']}: {content}"
        own = next((u for u in self.conns.values() if u.user_id == sender_id), None)
        remote = self.remotes.get(sender_id)
        if own is not None:
            prefix = own.hostmask
        elif remote is not None:
            prefix = remote.hostmask
        else:
            nick = sanitise_nick(str(sender.get("username") or f"user{sender_id}"),
                                 self.network.config.nick_length)
            prefix = f"{nick}!ilias@{self._host}"
        action = chat_action(content)
        return HistoryLine(str(row["hist_id"]), float(row["timestamp"]), prefix,
                           action if action is not None else content,
                           "ACTION" if action is not None else None)

    def _irc_nick_changed(self, user: Any, old: str) -> None:
        """In open mode the nick is the name browsers see: their next messages carry the new one."""
        conn = getattr(user, "chat_connection", None)
        if conn is None or conn not in self.conns or self.auth_mode != "open":
            return
        member = self.chat.member_for(conn)
        if member is not None:
            self.chat.login(conn, member.id, user.display_name, member.profile_picture_visible)

    def _irc_user_gone(self, user: Any, reason: str = "") -> None:
        conn = getattr(user, "chat_connection", None)
        if conn is not None and self.conns.pop(conn, None) is not None:
            self.chat.connection_lost(conn)

    def irc_message(self, user: Any, room_id: int, text: str,
                    tags: Optional[Dict[str, str]] = None) -> None:
        """An IRC user's channel message becomes a room message (delivered, then stored)."""
        content = irc_to_chat_text(text)
        if content is None:
            return
        self._post(user, room_id, content, None, text, tags)

    def send_private(self, user: Any, target: RemoteUser, command: str, text: str,
                     tags: Optional[Dict[str, str]] = None, msgid: Optional[str] = None,
                     at: Optional[float] = None, lines: Any = None) -> bool:
        """
        A private message to a browser user is an ILIAS whisper (a non-public target) in a room
        both are in (with the whisper's own id and time, not C{msgid} and C{at}); False when
        there is none. A NOTICE or a CTCP request is not chat: it is
        dropped (a browser cannot answer it), as a NOTICE would be by an absent client.
        """
        content = irc_to_chat_text(text)
        if content is None or command != "PRIVMSG":
            return True
        shared = [rid for rid, channel in self.channels.items()
                  if user in channel.members and target in channel.members]
        if not shared:
            return False
        target_info = {"id": target.user_id, "username": target.realname, "public": 0}
        self._post(user, shared[0], content, target_info, text, None)
        return True

    def _post(self, user: Any, room_id: int, content: str, target: Optional[Dict[str, Any]],
              text: str, tags: Optional[Dict[str, str]]) -> None:
        conn = self._conn_of(user)
        try:
            event = self.chat.post_message(conn, room_id, content, {}, target=target)
        except ContentTooLong:
            user.deliver(Message("NOTICE", (user.nick, "Message too long for the chat room; not sent."),
                                 prefix=self.network.config.server_name))
            return
        except ChatError as e:
            self._log.warn("Message of IRC user {nick} refused: {error}", nick=user.nick, error=str(e))
            user.deliver(Message("NOTICE", (user.nick, f"Message not delivered to the chat room ({e.code})."),
                                 prefix=self.network.config.server_name))
            return
        # The IRC members get the message from the bus like everyone else, in the room's order,
        # but as the IRC user wrote it (CTCP, formatting, client tags), one line as ircds relay it.
        self._pending[event["id"]] = (text, dict(tags or {}))
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

    # -- chat -> IRC -----------------------------------------------------------------------------

    def _deliver(self, envelope: Dict[str, Any]) -> None:
        """Bus subscriber: the room events as IRC lines, from the event and the bridge's state."""
        event = envelope["event"]
        departed = self._presence.apply(envelope)
        kind = event.get("type")
        if kind in ("parted", "left") and not departed:
            return  # another process still holds them in the room: no PART
        if kind in ("snapshot", "sync_request", "instance_stopping"):
            self._holdings_replaced(departed)
            return
        handler = getattr(self, "_on_" + str(event.get("type")), None)
        if handler is not None:
            handler(event)

    def _holdings_replaced(self, changes: List[Any]) -> None:
        """Another process's holdings after its restart or an outage: JOINs and PARTs."""
        for room_id, member, present in changes:
            channel = self._channel_for(room_id)
            if channel is None or self._is_irc_id(member["id"]):
                continue
            if present:
                remote = self._remote_for(member["id"], member["name"])
                if remote not in channel.members:
                    self.network.add_member(channel, remote)
            else:
                self._remove_remote(channel, member["id"], "PART", "Disconnected")

    def _channel_for(self, room_id: Any) -> Optional[Channel]:
        channel = self.channels.get(room_id)
        if channel is None and room_id in self._titles and self.is_exposed(room_id):
            channel = self._ensure_channel(room_id, self._titles[room_id])
        return channel

    def _irc_users_of(self, user_id: int, channel: Channel) -> List[Any]:
        return [user for user in self.conns.values()
                if user.user_id == user_id and user in channel.members]

    def _remove_remote(self, channel: Channel, user_id: int, command: str, reason: str) -> None:
        remote = self.remotes.get(user_id)
        if remote is not None and remote in channel.members:
            self.network.remove_member(channel, remote, command, reason)
            self._drop_remote_if_unused(remote)

    def _remove_irc_user(self, channel: Channel, user: Any, command: str, reason: str,
                         channels: Optional[List[Channel]] = None) -> None:
        if command == "KICK":
            self._log.info("IRC user {nick} ({account}) removed from {channel} ({address}): {reason}",
                           nick=user.nick, account=user.account or user.user_id,
                           channel=channel.name, address=user.ip, reason=reason)
        self._suppress_part.add(user)
        try:
            for other in channels or [channel]:
                if user in other.members:
                    self.network.remove_member(other, user, command, reason)
        finally:
            self._suppress_part.discard(user)

    def _on_room_created(self, event: Dict[str, Any]) -> None:
        self._titles[event["room"]] = event["title"]

    def _on_entered(self, event: Dict[str, Any]) -> None:
        """A browser user entering is a JOIN (IRC users joined on IRC already)."""
        channel = self._channel_for(event["room"])
        member = event["member"]
        if channel is None or self._is_irc_id(member["id"]):
            return
        remote = self._remote_for(member["id"], member["name"])
        if remote not in channel.members:
            self.network.add_member(channel, remote)

    def _on_parted(self, event: Dict[str, Any]) -> None:
        if event["gone"]:
            self._on_left(event)

    def _on_left(self, event: Dict[str, Any]) -> None:
        channel = self._channel_for(event["room"])
        if channel is not None:
            self._remove_remote(channel, event["member"]["id"], "PART", "Disconnected")

    def _on_room_left(self, event: Dict[str, Any]) -> None:
        self._member_out(event, "PART", "Left the chat room")

    def _on_kicked(self, event: Dict[str, Any]) -> None:
        self._member_out(event, "KICK", KICK_REASON)

    def _member_out(self, event: Dict[str, Any], command: str, reason: str) -> None:
        """The member of the event is out of its room: their IRC users and browser nick."""
        channel = self._channel_for(event["room"])
        if channel is None:
            return
        user_id = event["member"]["id"]
        for user in self._irc_users_of(user_id, channel):
            self._remove_irc_user(channel, user, command, reason)
        self._remove_remote(channel, user_id, command, reason)

    def _on_banned(self, event: Dict[str, Any]) -> None:
        user_id = event["member"]["id"]
        channel = None if event["room"] is None else self._channel_for(event["room"])
        if channel is not None:
            # A ban logs the member out of the whole client, as it does a browser.
            for user in self._irc_users_of(user_id, channel):
                self._remove_irc_user(channel, user, "KICK", BAN_REASON,
                                      channels=list(self.channels.values()))
            self._remove_remote(channel, user_id, "KICK", KICK_REASON)
        for room_id in event["rooms"]:
            other = self._channel_for(room_id)
            if other is not None:
                self._remove_remote(other, user_id, "PART", "Left the chat room")

    def _on_renamed(self, event: Dict[str, Any]) -> None:
        """A browser user's new name is a NICK on IRC (an IRC user's own NICK was shown already)."""
        member = event["member"]
        user_id, name = member["id"], member["name"]  # the presence took the name already
        remote = self.remotes.get(user_id)
        if remote is None or self._is_irc_id(user_id) or not name:
            return
        old_name = remote.realname
        self.nicks.rename(remote, name)
        if name != old_name:
            self.network.notify(remote, "setname", "SETNAME", name)
        self.network.set_account(remote, account_token(name))

    def _on_cleared(self, event: Dict[str, Any]) -> None:
        channel = self._channel_for(event["room"])
        if channel is not None:
            channel.broadcast(Message("NOTICE", (channel.name, "The chat history of this room has been cleared."),
                                      prefix=self.network.config.server_name))

    def _on_typing(self, event: Dict[str, Any]) -> None:
        """
        A web member's typing as TAGMSG ``+typing`` (active/done) to the IRC members it is
        for, with message-tags; an IRC user's own TAGMSG reached this process's IRC users already.
        """
        member = event["member"]
        channel = self._channel_for(event["room"])
        if channel is None or self._is_irc_id(member["id"]):
            return
        remote = self.remotes.get(member["id"])
        if remote is None or remote not in channel.members:
            return
        recipients = set(event["recipients"])
        outgoing = Message("TAGMSG", (channel.name,), prefix=remote.hostmask)
        tags = {"+typing": "active" if event["started"] else "done"}
        for user in channel.local_members():
            if user.user_id in recipients and "message-tags" in user.caps:
                user.deliver(outgoing, tags, at=event["ts"] / 1000)

    def _on_message(self, event: Dict[str, Any]) -> None:
        """A room message (or whisper) as PRIVMSG to the IRC users who should get it."""
        channel = self._channel_for(event["room"])
        if channel is None:
            return
        sender_info = event["sender"]
        sender_id = sender_info["id"]
        content = event["content"]
        # Echo suppression by the ids in the event: the connection that posted, else an IRC
        # user of the same account (who posted from a browser tab).
        sender = self.conns.get(event["connection"])
        if sender is None:
            sender = next((u for u in self.conns.values()
                           if u.user_id == sender_id and u in channel.members), None)
        peer = None if sender is not None else next(
            (p for p in self._peers_with_id(sender_id) if p in channel.members), None)
        if sender is not None:
            prefix = sender.hostmask
        elif peer is not None:
            prefix = peer.hostmask  # an IRC user of another process
        else:
            remote = self._remote_for(sender_id, sender_info["name"])
            if remote not in channel.members:
                self.network.add_member(channel, remote)
            prefix = remote.hostmask
        target = event["target"]
        raw = self._pending.pop(event["id"], None)
        meta = (event["id"], event["ts"] / 1000)
        if target is None or target["public"]:
            if target is not None and target["name"] and chat_action(content) is None:
                content = f"{target['name']}: {content}"
            for member in channel.local_members():
                if member is sender and "echo-message" not in member.caps:
                    continue
                self._send_chat(member, channel.name, content, prefix, raw, meta)
            return
        # A whisper: only the sender's and the target's IRC connections get it.
        recipients = {sender_id, target["id"]}
        for user in list(self.conns.values()):
            if user.user_id not in recipients:
                continue
            if user is sender:
                if "echo-message" in user.caps:
                    remote = self.remotes.get(target["id"])
                    if remote is not None:
                        self._send_chat(user, remote.nick, content, prefix, raw, meta)
                continue
            self._send_chat(user, user.nick, content, prefix, raw, meta)

    @staticmethod
    def _send_chat(user: Any, target: str, content: str, prefix: str,
                   raw: Optional[Tuple[str, Dict[str, str]]], meta: Tuple[str, float]) -> None:
        """
        A room message to one IRC user, with its id (``msgid``) and time: an IRC user's own
        text as one line, untouched; a web message split to fit (a draft/multiline batch with
        that cap), a ``/me`` one as CTCP ACTION.
        """
        msgid, at = meta
        if raw is not None:
            user.relay_text("PRIVMSG", target, raw[0], prefix, raw[1], msgid, at)
            return
        action = chat_action(content)
        if action is not None:
            user.send_text("PRIVMSG", target, action, prefix, ctcp="ACTION", msgid=msgid, at=at)
        else:
            user.send_text("PRIVMSG", target, content, prefix, msgid=msgid, at=at)
