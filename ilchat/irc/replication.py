# -*- test-case-name: tests.cluster.test_irc_network -*-
"""
One IRC network over several processes: the IRC users of every process, the IRC-only channels
(``local_channels``) and the messages between IRC users, as plain events on the bus topic
``irc``.

Every process keeps the whole network in its L{IrcNetwork}: its own connections, and the IRC
users of the others as L{PeerUser}s, in the nick table and in the channels they joined. What a
local user does is applied here first (the network's own code, which shows it to the local
members) and reported to the network's C{on_*} hooks; this module publishes it, and every other
process applies it with the same network calls, showing it to its own members. Nothing is
published for what is applied (the actor is a peer then), so events never echo. The events,
each from the process of the user who acted:

* ``irc_user`` (``user``: nick, username, host, realname, away, user modes, ids, account,
  signon, server): a user registered, or changed away text or user modes;
* ``irc_nick`` (``old``, ``new``), ``irc_quit`` (``nick``, ``reason``);
* ``irc_join`` (``channel``, ``nick``, ``modes``, ``state``), ``irc_leave`` (``channel``,
  ``nick``, ``user_id``, ``command`` PART or KICK, ``reason``, ``by``): of any channel, bridged
  rooms too (so a room's IRC members show as themselves, not as browser users); a KICK removes
  the member the kicker saw (``user_id``), even if it changed its nick since or another took it;
* ``irc_channel`` (``channel``, ``command``, ``params``, ``prefix``, ``state``): a TOPIC or
  MODE of an IRC-only channel, with the channel's whole state after it (``state``: topic,
  modes, key, limit, ``b e I`` lists, invitations, members' prefix modes, the ``origin`` and
  the fields' ``versions``), merged, not replaced (L{ilchat.irc.channel_sync}), so that
  changes made at once on two processes, and one channel created on both, end the same
  everywhere;
* ``irc_invite`` (``channel``, ``nick``, ``target``, ``state``): into an IRC-only channel (it
  counts for ``+i`` everywhere; the target's process shows it); its ``state`` is merged as
  ``irc_channel``'s, and the invitations of every state (``invites``: nick -> version, and
  ``cleared``, the version of the last ``-i``) merge by union, so none is lost to a change
  made at once elsewhere or to a Redis outage;
* ``irc_message`` (``channel``, ``nick``, ``command``, ``text``, ``tags``): a channel PRIVMSG or
  NOTICE the network relayed (IRC-only channels; in bridged rooms NOTICE and CTCP other than
  ACTION, the rest being room messages); ``irc_private`` (``nick``, ``target``, ...) to an IRC
  user of another process; both with ``msgid``, ``at`` and ``lines``, and a PRIVMSG goes into
  the receiving processes' in-memory history too (CHATHISTORY answers the same everywhere);
  ``irc_tagmsg`` (``nick``, ``tags``, ``msgid`` and ``channel``, or ``target`` and
  ``instance``): a TAGMSG (``+typing``); ``irc_kill`` (``nick``, ``target``, ``user_id``,
  ``instance``, ``reason``): an operator's KILL of a user of that ``instance``, which
  disconnects them if they still are that user (id);
* ``irc_sync`` (a process started, or Redis is back): every process answers with
  ``irc_state`` (``users``, each with its ``channels`` and the state of its IRC-only ones),
  which *replaces* what the others know of its users (QUITs for the missing, JOINs for the
  new). A process that stops publishes an empty ``irc_state`` with a ``reason``.

An instance whose heartbeat is gone (``cluster.on_instance_gone``) has its users QUIT here; one
that is seen again (``on_instance_seen``) is asked for its state. A
browser user's nick (L{ilchat.irc.web_nicks}) yields to an IRC user of another process who
holds it in the cluster (IRC nicks are cluster claims): the browser user is renamed. An event that
does not have its documented shape is logged and dropped.
"""

from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.logger import Logger

from ilchat.irc.batches import unique_id
from ilchat.irc.channel_sync import apply_state, changes, channel_state, ensure_replica, fields
from ilchat.irc.history_store import HistoryLine, dm_key, dm_owners
from ilchat.irc.message import Message
from ilchat.irc.network import Channel, IrcNetwork, irc_lower
from ilchat.irc.operators import kill

__all__ = ["IrcReplication", "PeerUser", "TOPIC"]

#: The bus topic of the IRC network.
TOPIC = "irc"


class PeerUser:
    """An IRC user connected to another process (C{instance}), as this process knows them."""

    local = False
    registered = True
    #: Their nick is a cluster claim of their process (see L{IrcNetwork.claim_nick}).
    elsewhere = True
    caps: frozenset = frozenset()
    chat_connection = None

    def __init__(self, instance: str, info: Dict[str, Any], link: "IrcReplication") -> None:
        self.instance = instance
        self.link = link
        self.channels: Set[Channel] = set()
        self.last_message = 0.0
        self.update(info)

    def update(self, info: Dict[str, Any]) -> None:
        """Take the fields of an ``irc_user`` event (KeyError, TypeError: not one)."""
        self.nick = str(info["nick"])
        self.username = str(info["username"])
        self.host = str(info["host"])
        self.realname = str(info["realname"])
        self.away = _optional_str(info["away"])
        self.user_id = int(info["user_id"])
        self.account = _optional_str(info["account"])
        self.account_client = _optional_str(info["account_client"])
        self.user_modes = {str(mode) for mode in info["modes"]}
        self.signon = int(info["signon"])
        self.server_info = (str(info["server"]), f"IRC on the ilchat process {self.instance}")

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.username}@{self.host}"

    def deliver(self, message: Message, client_tags: Optional[Dict[str, str]] = None) -> None:
        """Lines for a peer are its own process's to send."""

    def __repr__(self) -> str:
        return f"<PeerUser {self.nick} on {self.instance}>"


class IrcReplication:
    """
    Keeps C{network} in step with the IRC networks of the other processes over C{bus}
    (topic L{TOPIC}); C{cluster} tells when a process is gone. ``await start()`` after the
    bridges started, C{stop()} before the bus closes.
    """

    _log = Logger()

    def __init__(self, network: IrcNetwork, bus: Any, cluster: Any) -> None:
        self.network = network
        self.bus = bus
        self.cluster = cluster
        self._undo: List[Callable[[], Any]] = []
        #: (instance, folded nick) -> the IRC user of that process with that nick.
        self._peers: Dict[Tuple[str, str], PeerUser] = {}

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        network = self.network
        for hooks, hook in (
            (network.on_register, self._registered), (network.on_user_change, self._registered),
            (network.on_nick, self._nick_changed), (network.on_quit, self._quit),
            (network.on_join, self._joined), (network.on_leave, self._left),
            (network.on_channel_change, self._channel_changed), (network.on_relay, self._relayed),
            (network.on_invite, self._invited), (network.on_tagmsg, self._tagged),
        ):
            hooks.append(hook)
            self._undo.append(lambda hooks=hooks, hook=hook: hook in hooks and hooks.remove(hook))
        self._undo.append(self.bus.subscribe(TOPIC, self._received))
        self._undo.append(self.bus.on_resumed(self._resync))
        self._undo.append(self.cluster.on_instance_gone(self._instance_gone))
        # A process back after it was judged gone (or started again at once under its name):
        # its users QUIT here at the departure, its state is asked for again.
        self._undo.append(self.cluster.on_instance_seen(lambda name: self._resync()))
        await self.bus.subscribed()
        self._resync()

    def stop(self, reason: str = "Server shutting down") -> None:
        """Tell the others that this process's users are gone, and stop listening."""
        self._publish({"type": "irc_state", "users": [], "reason": reason})
        for undo in reversed(self._undo):
            undo()
        self._undo = []

    def _resync(self) -> None:
        self._publish({"type": "irc_sync"})
        self._publish_state()

    # -- what this process's users do ------------------------------------------------------------

    def _publish(self, event: Dict[str, Any]) -> None:
        self.bus.publish(TOPIC, event)

    def _user_info(self, user: Any) -> Dict[str, Any]:
        return {
            "nick": user.nick, "username": user.username or "*", "host": user.host,
            "realname": user.realname or user.nick, "away": user.away, "user_id": user.user_id,
            "account": user.account, "account_client": user.account_client,
            "modes": sorted(user.user_modes), "signon": user.signon,
            "server": self.network.config.server_name,
        }

    def _registered(self, user: Any) -> None:
        if user.local and user.registered:
            self._publish({"type": "irc_user", "user": self._user_info(user)})

    def _nick_changed(self, user: Any, old: str) -> None:
        if user.local and user.registered:
            self._publish({"type": "irc_nick", "old": old, "new": user.nick})

    def _quit(self, user: Any, reason: str) -> None:
        if user.local:
            self._publish({"type": "irc_quit", "nick": user.nick, "reason": reason})

    def _joined(self, channel: Channel, user: Any) -> None:
        if user.local:
            if not channel.bridged:
                ensure_replica(channel, self.bus.instance).bump(channel, self.bus.instance)
            self._publish({"type": "irc_join", "channel": channel.name, "nick": user.nick,
                           "modes": sorted(channel.members.get(user, ())),
                           "state": None if channel.bridged else channel_state(channel)})

    def _left(self, channel: Channel, user: Any, command: str, reason: str, by: Any) -> None:
        actor = user if by is None else by
        if actor.local:
            self._publish({"type": "irc_leave", "channel": channel.name, "nick": user.nick,
                           "user_id": user.user_id, "command": command, "reason": reason,
                           "by": None if by is None else by.nick})

    def _channel_changed(self, channel: Channel, message: Message) -> None:
        nick = (message.prefix or "").split("!", 1)[0]
        user = self.network.find_user(nick)
        if channel.bridged or user is None or not user.local:
            return  # a room title (each process's bridge shows it), or applied from a peer
        ensure_replica(channel, self.bus.instance).bump(channel, self.bus.instance)
        self._publish({"type": "irc_channel", "channel": channel.name, "command": message.command,
                       "params": list(message.params), "prefix": message.prefix,
                       "state": channel_state(channel)})

    def _invited(self, channel: Channel, by: Any, target: Any) -> None:
        if by.local:
            ensure_replica(channel, self.bus.instance).bump(channel, self.bus.instance)
            self._publish({"type": "irc_invite", "channel": channel.name, "nick": by.nick,
                           "target": target.nick, "state": channel_state(channel)})

    def _relayed(self, channel: Channel, sender: Any, command: str, text: str,
                 tags: Dict[str, str], msgid: Optional[str] = None, at: Optional[float] = None,
                 lines: Optional[List[Tuple[str, bool]]] = None) -> None:
        if sender.local:
            self._publish({"type": "irc_message", "channel": channel.name, "nick": sender.nick,
                           "command": command, "text": text, "tags": tags, "msgid": msgid,
                           "at": at, "lines": lines})

    def send_private(self, user: Any, target: PeerUser, command: str, text: str,
                     tags: Optional[Dict[str, str]] = None, msgid: Optional[str] = None,
                     at: Optional[float] = None, lines: Optional[List[Tuple[str, bool]]] = None) -> bool:
        """
        The link of every L{PeerUser}: a private PRIVMSG/NOTICE to them, through their
        process, with its msgid, time and lines (the same message, and history, there).
        """
        self._publish({"type": "irc_private", "nick": user.nick, "target": target.nick,
                       "instance": target.instance, "command": command, "text": text,
                       "tags": tags or {}, "msgid": msgid, "at": at, "lines": lines})
        return True

    def send_tagmsg(self, user: Any, target: PeerUser, tags: Dict[str, str], msgid: str) -> None:
        """The link of every L{PeerUser}: a private TAGMSG (``+typing``), through their process."""
        self._publish({"type": "irc_tagmsg", "nick": user.nick, "target": target.nick,
                       "instance": target.instance, "tags": tags, "msgid": msgid})

    def _tagged(self, channel: Channel, sender: Any, tags: Dict[str, str], msgid: str) -> None:
        if sender.local:
            self._publish({"type": "irc_tagmsg", "channel": channel.name, "nick": sender.nick,
                           "tags": tags, "msgid": msgid})

    def kill(self, by: Any, target: PeerUser, reason: str) -> None:
        """The link of every L{PeerUser}: an operator's KILL, carried out by their process."""
        self._publish({"type": "irc_kill", "nick": by.nick, "prefix": by.hostmask,
                       "target": target.nick, "user_id": target.user_id,
                       "instance": target.instance, "reason": reason})

    def _publish_state(self) -> None:
        users = []
        for user in list(self.network.users.values()):
            if not (user.local and user.registered):
                continue
            info = self._user_info(user)
            info["channels"] = [
                [channel.name, sorted(channel.members[user]),
                 None if channel.bridged else channel_state(channel)]
                for channel in sorted(user.channels, key=lambda c: c.name)
            ]
            users.append(info)
        self._publish({"type": "irc_state", "users": users})

    # -- what the other processes' users do ------------------------------------------------------

    def _received(self, envelope: Dict[str, Any]) -> None:
        origin, event = envelope["origin"], envelope["event"]
        if origin == self.bus.instance:
            return
        handler = getattr(self, "_on_" + str(event.get("type")), None)
        if handler is None:
            return
        try:
            handler(origin, event)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self._log.warn("Dropped an IRC event of {origin} that cannot be applied ({error!r}): {event}",
                           origin=origin, error=error, event=event)

    def _peer(self, origin: str, nick: Any) -> Optional[PeerUser]:
        return self._peers.get((origin, irc_lower(str(nick))))

    def _peers_of(self, origin: str) -> List[PeerUser]:
        return [peer for (instance, _), peer in list(self._peers.items()) if instance == origin]

    def _make_room(self, nick: str) -> None:
        """
        A browser user holding C{nick} here gives it up for an IRC user, who holds it in the
        cluster. (An IRC user of yet another process holding it here gave it up there: their
        NICK or QUIT is on its way, L{IrcNetwork.claim_nick} lets the nick go.)
        """
        if self.network.browser_nicks is not None:
            self.network.browser_nicks.give_way(nick)

    def _add_peer(self, origin: str, info: Dict[str, Any]) -> PeerUser:
        peer = PeerUser(origin, info, self)
        self._peers[origin, irc_lower(peer.nick)] = peer
        self.network.peers_by_id.setdefault(peer.user_id, set()).add(peer)
        # Bridges first: a browser user who is this IRC user becomes them in the rooms.
        self.network.run_hooks(self.network.on_peer, peer)
        self._make_room(peer.nick)
        if not self.network.claim_nick(peer, peer.nick):
            self._log.warn("IRC user {nick} of {origin} collides with a user of this process",
                           nick=peer.nick, origin=origin)
        return peer

    def _remove_peer(self, peer: PeerUser, reason: str) -> None:
        if self._peers.get((peer.instance, irc_lower(peer.nick))) is peer:
            del self._peers[peer.instance, irc_lower(peer.nick)]
        ids = self.network.peers_by_id.get(peer.user_id, set())
        ids.discard(peer)
        if not ids:
            self.network.peers_by_id.pop(peer.user_id, None)
        self.network.quit(peer, reason)

    def _on_irc_user(self, origin: str, event: Dict[str, Any]) -> None:
        info = event["user"]
        peer = self._peer(origin, info["nick"])
        if peer is None:
            self._add_peer(origin, info)
            return
        away, realname = peer.away, peer.realname
        peer.update(info)
        # The same notices as for a local user's AWAY or SETNAME, to this process's users.
        if peer.away != away and (peer.away or away):
            self.network.notify(peer, "away-notify", "AWAY", *((peer.away,) if peer.away else ()))
        if peer.realname != realname:
            self.network.notify(peer, "setname", "SETNAME", peer.realname)

    def _on_irc_nick(self, origin: str, event: Dict[str, Any]) -> None:
        peer = self._peer(origin, event["old"])
        new = str(event["new"])
        if peer is None:
            return
        if irc_lower(new) != irc_lower(peer.nick):
            self._make_room(new)
        old = irc_lower(peer.nick)
        if self.network.change_nick(peer, new):
            del self._peers[origin, old]
            self._peers[origin, irc_lower(new)] = peer
        else:
            self._log.warn("IRC user {nick} of {origin} cannot be renamed {new} here: a user of this"
                           " process holds it", nick=peer.nick, origin=origin, new=new)

    def _on_irc_quit(self, origin: str, event: Dict[str, Any]) -> None:
        peer = self._peer(origin, event["nick"])
        if peer is not None:
            self._remove_peer(peer, str(event["reason"]))

    def _channel(self, name: str, state: Optional[Dict[str, Any]]) -> Optional[Channel]:
        """The channel C{name} here: a bridged room's, or an IRC-only one, made from C{state}."""
        channel = self.network.find_channel(name)
        if channel is None and state is not None and not self.network.reserved(name):
            channel = self.network.add_channel(name)
            apply_state(self.network, channel, state)
            ensure_replica(channel, self.bus.instance, state)
        return channel

    def _on_irc_join(self, origin: str, event: Dict[str, Any]) -> None:
        peer = self._peer(origin, event["nick"])
        if peer is not None:
            self._enter(str(event["channel"]), peer, event["modes"], event["state"])

    def _enter(self, name: str, peer: PeerUser, modes: List[str],
               state: Optional[Dict[str, Any]]) -> Optional[Channel]:
        """
        C{peer} is in channel C{name} with C{state}: merged into ours (a creation that lost
        gives its joiner no operator status here, as it loses it there), then the JOIN.
        """
        existed = self.network.find_channel(name) is not None
        channel = self._channel(name, state)
        if channel is None:
            return None
        if existed and state is not None and not channel.bridged:
            if self._merge(channel, state, self.network.config.server_name) is False:
                modes = []
        self._join(channel, peer, modes)
        return channel

    def _join(self, channel: Channel, peer: PeerUser, modes: List[str]) -> None:
        channel.invited.discard(irc_lower(peer.nick))  # used up, as on the joiner's process
        self.network.add_member(channel, peer, [str(mode) for mode in modes])
        if channel.replica is not None:
            channel.replica.seen(channel)

    def _merge(self, channel: Channel, state: Dict[str, Any], prefix: str) -> Optional[bool]:
        """Merge another process's state of C{channel} (L{ChannelReplica.merge}) and show what changed."""
        replica = ensure_replica(channel, self.bus.instance)
        before = fields(channel)
        result = replica.merge(self.network, channel, state)
        if result:
            for message in changes(self.network, channel, before, fields(channel), prefix):
                channel.broadcast(message)
        return result

    def _on_irc_leave(self, origin: str, event: Dict[str, Any]) -> None:
        channel = self.network.find_channel(str(event["channel"]))
        if channel is None:
            return
        command = "KICK" if event["command"] == "KICK" else "PART"
        by = None
        if event["by"] is not None:
            by = self._peer(origin, event["by"])
        if command == "KICK":
            target = _kicked(channel, str(event["nick"]), event.get("user_id"))  # anyone's, ours too
        else:
            target = self._peer(origin, event["nick"])
        if target is not None:
            self.network.remove_member(channel, target, command, str(event["reason"]), by=by)

    def _on_irc_channel(self, origin: str, event: Dict[str, Any]) -> None:
        channel = self.network.find_channel(str(event["channel"]))
        if channel is None or channel.bridged:
            return
        self._merge(channel, event["state"], str(event["prefix"]))

    def _on_irc_invite(self, origin: str, event: Dict[str, Any]) -> None:
        channel = self.network.find_channel(str(event["channel"]))
        by = self._peer(origin, event["nick"])
        target = self.network.find_user(str(event["target"]))
        if channel is None or channel.bridged or by is None or target is None:
            return
        state = event.get("state")
        if state is not None:
            # Merged as a state (the invitation's version): shown unless a -i ordered after it
            # cleared it meanwhile.
            self._merge(channel, state, self.network.config.server_name)
            if irc_lower(target.nick) not in channel.invited:
                return
        self.network.invite(channel, by, target)

    def _on_irc_message(self, origin: str, event: Dict[str, Any]) -> None:
        channel = self.network.find_channel(str(event["channel"]))
        peer = self._peer(origin, event["nick"])
        if channel is None or peer is None:
            return
        peer.last_message = self.network.clock.seconds()
        command, text, tags, msgid, at, lines = self._message_fields(event)
        self.network.relay(channel, peer, command, text, tags, msgid, at, lines)
        if command == "PRIVMSG" and not channel.bridged:
            self._remember(irc_lower(channel.name), peer, msgid, at, text, channel.name)

    def _message_fields(self, event: Dict[str, Any]) -> Tuple[str, str, Dict[str, str], str, float, Any]:
        """Command, text, client tags, msgid, time and multiline lines of a message event."""
        msgid, at, lines = event.get("msgid"), event.get("at"), event.get("lines")
        return (
            _command(event), str(event["text"]), _tags(event),
            str(msgid) if msgid is not None else unique_id(),
            float(at) if isinstance(at, (int, float)) else self.network.clock.seconds(),
            [(str(line), bool(concat)) for line, concat in lines] if isinstance(lines, list) else None,
        )

    def _remember(self, key: Any, peer: PeerUser, msgid: str, at: float, text: str, target: str,
                  owners: Optional[Dict[str, Any]] = None) -> None:
        """A peer's IRC-only PRIVMSG in this process's history too: CHATHISTORY agrees everywhere."""
        self.network.history.add(key, HistoryLine(msgid, at, peer.hostmask, text, target=target), owners)

    def _local_target(self, origin: str, event: Dict[str, Any]) -> Tuple[Any, Optional[PeerUser]]:
        """The local user a private event of C{origin} is for, and its sender (None: not ours)."""
        if event["instance"] != self.bus.instance:
            return None, None
        target = self.network.find_user(str(event["target"]))
        peer = self._peer(origin, event["nick"])
        if target is None or not target.local or peer is None:
            return None, None
        return target, peer

    def _on_irc_private(self, origin: str, event: Dict[str, Any]) -> None:
        target, peer = self._local_target(origin, event)
        if peer is None:
            return
        peer.last_message = self.network.clock.seconds()
        command, text, tags, msgid, at, lines = self._message_fields(event)
        target.relay_text(command, target.nick, text, peer.hostmask, tags, msgid, at, lines)
        if command == "PRIVMSG":
            self._remember(dm_key(irc_lower(peer.nick), irc_lower(target.nick)), peer, msgid, at,
                           text, target.nick, dm_owners(peer, target))

    def _on_irc_tagmsg(self, origin: str, event: Dict[str, Any]) -> None:
        """A TAGMSG of a peer: to an IRC-only or bridged channel's local members, or to one of ours."""
        msgid = str(event["msgid"])
        if "channel" in event:
            channel = self.network.find_channel(str(event["channel"]))
            peer = self._peer(origin, event["nick"])
            if channel is not None and peer is not None and peer in channel.members:
                self.network.tagmsg(channel, peer, _tags(event), msgid)
            return
        target, peer = self._local_target(origin, event)
        if peer is not None and "message-tags" in target.caps:
            target.deliver(Message("TAGMSG", (target.nick,), prefix=peer.hostmask), _tags(event), msgid)

    def _on_irc_kill(self, origin: str, event: Dict[str, Any]) -> None:
        target = self.network.find_user(str(event["target"]))
        # The user the operator saw: not whoever took the nick since (``user_id``: their id).
        wanted = event.get("user_id")
        if wanted is not None and target is not None and target.user_id != int(wanted):
            return
        if event["instance"] == self.bus.instance and target is not None and target.local:
            self._log.info("IRC operator {nick} of {origin} killed {target} ({address}): {reason}",
                           nick=event["nick"], origin=origin, target=target.nick,
                           address=target.ip, reason=event["reason"])
            kill(target, str(event["prefix"]), str(event["nick"]), str(event["reason"]))

    def _on_irc_sync(self, origin: str, event: Dict[str, Any]) -> None:
        self._publish_state()

    def _on_irc_state(self, origin: str, event: Dict[str, Any]) -> None:
        """What C{origin} holds replaces what was known of it: QUITs, new users, JOINs, PARTs."""
        reason = str(event.get("reason") or "Disconnected")
        listed: Dict[str, Dict[str, Any]] = {irc_lower(str(info["nick"])): info for info in event["users"]}
        for peer in self._peers_of(origin):
            if irc_lower(peer.nick) not in listed:
                self._remove_peer(peer, reason)
        for info in listed.values():
            peer = self._peer(origin, info["nick"])
            if peer is None:
                peer = self._add_peer(origin, info)
            else:
                peer.update(info)
            wanted: Set[Channel] = set()
            for name, modes, state in info["channels"]:
                channel = self._enter(str(name), peer, modes, state)
                if channel is not None:
                    wanted.add(channel)
            for channel in list(peer.channels - wanted):
                self.network.remove_member(channel, peer, "PART", "Disconnected")

    def _instance_gone(self, name: str) -> None:
        """A process without heartbeat: its IRC users quit here."""
        for peer in self._peers_of(name):
            self._remove_peer(peer, f"Server gone ({name})")


def _optional_str(value: Any) -> Optional[str]:
    """A text field of an event that may be null, as text (a line takes no other value)."""
    return None if value is None else str(value)


def _command(event: Dict[str, Any]) -> str:
    return "NOTICE" if event["command"] == "NOTICE" else "PRIVMSG"


def _tags(event: Dict[str, Any]) -> Dict[str, str]:
    """The client tags of an event, as strings."""
    return {str(key): str(value) for key, value in dict(event["tags"]).items()}


def _kicked(channel: Channel, nick: str, user_id: Any) -> Any:
    """
    The member of C{channel} a peer's KICK removed: the user the kicker saw, by C{user_id}, not
    whoever holds C{nick} now (the kicked user may have changed nick meanwhile and another
    taken it, as with KILL); of several members with that id (one ILIAS user on two clients),
    the one with C{nick}. Without an id (a process of an older version), the one with C{nick}.
    """
    lower = irc_lower(nick)
    if user_id is None:
        return next((m for m in channel.members if irc_lower(m.nick) == lower), None)
    same = [member for member in channel.members if member.user_id == int(user_id)]
    named = [member for member in same if irc_lower(member.nick) == lower]
    if len(named) == 1:
        return named[0]
    return same[0] if len(same) == 1 else None
