# -*- test-case-name: tests.irc.test_protocol -*-
"""
Channel commands of an IRC connection: JOIN, PART, NAMES, TOPIC, LIST, MODE (channel and user
modes), INVITE and KICK.

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}. The network (L{ilchat.irc.network}) holds
the channels; a bridged channel's L{ChannelLink} decides joins, kicks and whether the topic may be
set, so these handlers never touch a chat room.
"""

import re
from typing import List, Optional, Tuple

from twisted.internet import defer

from ilchat.irc.message import Message, decimal_number
from ilchat.irc.network import Channel, ListEntry, irc_lower, valid_channel
from ilchat.irc.numerics import (
    ERR_BADCHANNELKEY,
    ERR_BANLISTFULL,
    ERR_BANNEDFROMCHAN,
    ERR_CHANNELISFULL,
    ERR_CHANOPRIVSNEEDED,
    ERR_INVALIDKEY,
    ERR_INVALIDMODEPARAM,
    ERR_INVITEONLYCHAN,
    ERR_NEEDMOREPARAMS,
    ERR_NOSUCHCHANNEL,
    ERR_NOSUCHNICK,
    ERR_NOTONCHANNEL,
    ERR_TOOMANYCHANNELS,
    ERR_UMODEUNKNOWNFLAG,
    ERR_UNKNOWNMODE,
    ERR_USERNOTINCHANNEL,
    ERR_USERONCHANNEL,
    ERR_USERSDONTMATCH,
    RPL_AWAY,
    RPL_BANLIST,
    RPL_CHANNELMODEIS,
    RPL_CREATIONTIME,
    RPL_ENDOFBANLIST,
    RPL_ENDOFEXCEPTLIST,
    RPL_ENDOFINVITELIST,
    RPL_ENDOFNAMES,
    RPL_EXCEPTLIST,
    RPL_INVITELIST,
    RPL_INVITING,
    RPL_LIST,
    RPL_LISTEND,
    RPL_LISTSTART,
    RPL_NAMREPLY,
    RPL_NOTOPIC,
    RPL_TOPIC,
    RPL_TOPICWHOTIME,
    RPL_UMODEIS,
)

__all__ = ["ChannelCommands"]

#: The list modes: the numeric of an entry, of the end, and the end's text (``MODE #c b``).
_LISTS = {
    "b": (RPL_BANLIST, RPL_ENDOFBANLIST, "End of channel ban list"),
    "e": (RPL_EXCEPTLIST, RPL_ENDOFEXCEPTLIST, "End of channel exception list"),
    "I": (RPL_INVITELIST, RPL_ENDOFINVITELIST, "End of channel invite list"),
}
#: Modes without a parameter: invite only, moderated, no outside messages, secret, topic lock.
_FLAG_MODES = "imnst"
#: Masks in one list of one channel.
MAX_LIST_ENTRIES = 50
#: What 005 promises (CHANLIMIT, MODES, KICKLEN): the most channels one user is in, the most
#: modes with a parameter one MODE line makes (the rest of them are ignored, as ircds do), and
#: the longest KICK reason (longer ones are cut).
CHANNEL_LIMIT = 50
MODES_PER_LINE = 4
KICK_LENGTH = 300
_KEY_RE = re.compile(r"[^\s,:\x00-\x1f]{1,23}")


def _normal_mask(mask: str) -> str:
    """``nick`` -> ``nick!*@*``, ``user@host`` -> ``*!user@host``, as ircds complete a ban mask."""
    if "!" not in mask and "@" not in mask:
        return mask + "!*@*"
    if "!" not in mask:
        return "*!" + mask
    if "@" not in mask:
        return mask + "@*"
    return mask


class ChannelCommands:
    """JOIN, PART, NAMES, TOPIC, LIST, MODE, INVITE and KICK."""

    def irc_JOIN(self, message: Message) -> Optional[defer.Deferred]:
        if message.params[0] == "0":
            for channel in list(self.channels):
                self.network.remove_member(channel, self, "PART", "Left all channels")
            return None
        keys = message.params[1].split(",") if len(message.params) > 1 else []
        return defer.ensureDeferred(self._join_all(message.params[0].split(","), keys))

    async def _join_all(self, names: List[str], keys: List[str]) -> None:
        for index, name in enumerate(names):
            if self._closing:
                return
            await self._join(name, keys[index] if index < len(keys) else None)

    async def _join(self, name: str, key: Optional[str] = None) -> None:
        if not valid_channel(name, self.config.channel_length):
            self.reply(ERR_NOSUCHCHANNEL, name or "*", "No such channel")
            return
        channel = self.network.find_channel(name)
        if (channel is None or self not in channel.members) and len(self.channels) >= CHANNEL_LIMIT:
            self.reply(ERR_TOOMANYCHANNELS, name, "You have joined too many channels")
            return
        modes: Tuple[str, ...] = ()
        if channel is None:
            if not self.config.local_channels or self.network.reserved(name):
                self.reply(ERR_NOSUCHCHANNEL, name, "No such channel")
                return
            channel = self.network.add_channel(name)
            modes = ("o",)
        if self in channel.members:
            return
        refusal = None if channel.bridged else self.join_refusal(channel, key)
        if refusal is None:
            refusal = await channel.link.check_join(self)
        if self._closing or not self.registered:
            return
        if refusal is not None:
            numeric, text = refusal
            self.reply(numeric, channel.name, text)
            self.network.remove_channel_if_empty(channel)
            return
        channel.invited.discard(irc_lower(self.nick))
        self.network.add_member(channel, self, modes)
        channel.link.joined(self)
        if channel.topic:
            self._send_topic(channel)
        self._send_names(channel)
        await self.play_back(channel)  # ilchat.irc.history

    def irc_PART(self, message: Message) -> None:
        reason = message.params[1] if len(message.params) > 1 else ""
        for name in message.params[0].split(","):
            channel = self.network.find_channel(name)
            if channel is None:
                self.reply(ERR_NOSUCHCHANNEL, name, "No such channel")
            elif self not in channel.members:
                self.reply(ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
            else:
                self.network.remove_member(channel, self, "PART", reason)

    def _send_topic(self, channel: Channel) -> None:
        self.reply(RPL_TOPIC, channel.name, channel.topic)
        self.reply(RPL_TOPICWHOTIME, channel.name, channel.topic_by or self.config.server_name, str(channel.topic_time))

    def _send_names(self, channel: Channel) -> None:
        multi = "multi-prefix" in self.caps
        full = "userhost-in-names" in self.caps
        names = [channel.prefix_of(member, multi) + (member.hostmask if full else member.nick)
                 for member in channel.members]
        head = f":{self.config.server_name} {RPL_NAMREPLY} {self.nick} = {channel.name} :"
        room = 510 - len(head.encode("utf-8"))
        line: List[str] = []
        size = 0
        for name in names:
            if line and size + len(name) + 1 > room:
                self.reply(RPL_NAMREPLY, "=", channel.name, " ".join(line))
                line, size = [], 0
            line.append(name)
            size += len(name) + 1
        if line:
            self.reply(RPL_NAMREPLY, "=", channel.name, " ".join(line))
        self.reply(RPL_ENDOFNAMES, channel.name, "End of /NAMES list")

    def irc_NAMES(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.reply(RPL_ENDOFNAMES, "*", "End of /NAMES list")
            return
        for name in message.params[0].split(","):
            channel = self.network.find_channel(name)
            if channel is None:
                self.reply(RPL_ENDOFNAMES, name, "End of /NAMES list")
            else:
                self._send_names(channel)

    def irc_TOPIC(self, message: Message) -> None:
        channel = self.network.find_channel(message.params[0])
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, message.params[0], "No such channel")
            return
        if len(message.params) == 1:
            if channel.topic:
                self._send_topic(channel)
            else:
                self.reply(RPL_NOTOPIC, channel.name, "No topic is set")
            return
        if self not in channel.members:
            self.reply(ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
            return
        if not channel.link.topic_settable:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "The topic is the chat room's title, set in ILIAS")
            return
        if "t" in channel.modes and not channel.is_op(self):
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "You're not channel operator")
            return
        topic = message.params[1][: self.config.topic_length]
        self.network.set_topic(channel, topic, self.hostmask)

    def irc_LIST(self, message: Message) -> None:
        wanted = None
        if message.params and message.params[0]:
            wanted = {irc_lower(name) for name in message.params[0].split(",")}
        self.network.refresh()
        self.reply(RPL_LISTSTART, "Channel", "Users  Name")
        for key, channel in sorted(self.network.channels.items()):
            hidden = "s" in channel.modes and self not in channel.members
            if not hidden and (wanted is None or key in wanted):
                self.reply(RPL_LIST, channel.name, str(len(channel.members)), channel.topic)
        self.reply(RPL_LISTEND, "End of /LIST")


    def irc_MODE(self, message: Message) -> Optional[defer.Deferred]:
        target = message.params[0]
        if not target.startswith("#"):
            self._user_mode(target, message.params[1:])
            return None
        channel = self.network.find_channel(target)
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, target, "No such channel")
            return None
        if len(message.params) == 1:
            self.reply(RPL_CHANNELMODEIS, channel.name, *channel.mode_string(self in channel.members))
            self.reply(RPL_CREATIONTIME, channel.name, str(channel.created))
            return None
        changes = message.params[1]
        args = list(message.params[2:])
        if changes.lstrip("+") in _LISTS and not args:
            return defer.ensureDeferred(self._send_list(channel, changes.lstrip("+")))
        if channel.bridged:
            return defer.ensureDeferred(self._bridged_modes(channel, changes, args))
        if not channel.is_op(self):
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "You're not channel operator")
            return None
        self._change_modes(channel, changes, args)
        return None

    async def _bridged_modes(self, channel: Channel, changes: str, args: List[str]) -> None:
        """
        A chat room's modes are ILIAS's: ``+b``/``-b`` with a mask is an IRC operator's ban or
        unban of ILIAS users (L{ChannelLink.change_ban}), shown as MODE lines of the room's ban
        masks; every other mode is 482.
        """
        bans: List[Tuple[bool, str]] = []
        other = False
        sign = "+"
        for char in changes:
            if char in "+-":
                sign = char
                continue
            takes_argument = char in "ovk" or char in _LISTS or (char == "l" and sign == "+")
            argument = args.pop(0) if takes_argument and args else None
            if char == "b" and argument is not None:
                if len(bans) < MODES_PER_LINE:
                    bans.append((sign == "+", _normal_mask(argument)))
            else:
                other = True
        if other:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name,
                       "The modes of a chat room are set in ILIAS (IRC operators may +b/-b a mask)")
        if not bans:
            return
        refusal = channel.link.refusal(self, "ban")
        if refusal is not None:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, refusal)
            return
        for adding, mask in bans:
            masks, note = await channel.link.change_ban(self, adding, mask)
            if self._closing:
                return
            if note is not None:
                self.send_message(Message("NOTICE", (self.nick, note), prefix=self.config.server_name))
            for start in range(0, len(masks), MODES_PER_LINE):
                shown = masks[start:start + MODES_PER_LINE]
                letters = ("+" if adding else "-") + "b" * len(shown)
                self.network.show_change(channel, Message("MODE", (channel.name, letters, *shown),
                                                          prefix=self.hostmask))

    async def _send_list(self, channel: Channel, letter: str) -> None:
        """``MODE #c b`` (or e, I): the masks, then the end; a bridged room's bans are ILIAS's."""
        numeric, end, text = _LISTS[letter]
        if channel.bridged:
            entries = await channel.link.list_masks(letter)
        else:
            entries = [(e.mask, e.by, e.when) for e in channel.lists[letter]]
        for mask, by, when in entries:
            self.reply(numeric, channel.name, mask, by, str(when))
        self.reply(end, channel.name, text)

    def _change_modes(self, channel: Channel, changes: str, args: List[str]) -> None:
        """Apply a chanop's mode string to an IRC channel and show the changes to its members."""
        applied: List[Tuple[str, str]] = []
        applied_args: List[str] = []
        sign = "+"
        with_parameter = 0
        for char in changes:
            if char in "+-":
                sign = char
                continue
            adding = sign == "+"
            if args and (char in "ovk" or char in _LISTS or (char == "l" and adding)):
                with_parameter += 1
                if with_parameter > MODES_PER_LINE:
                    continue
            if char in _FLAG_MODES:
                if adding != (char in channel.modes):
                    (channel.modes.add if adding else channel.modes.discard)(char)
                    applied.append((sign, char))
                    if char == "i" and not adding:
                        channel.invited.clear()
            elif char in "ov":
                if not args:
                    # A missing argument of one mode char, not of the command (the table's).
                    self.reply(ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                    continue
                nick = args.pop(0)
                member = self.network.find_user(nick)
                if member is None:
                    self.reply(ERR_NOSUCHNICK, nick, "No such nick/channel")
                elif member not in channel.members:
                    self.reply(ERR_USERNOTINCHANNEL, nick, channel.name, "They aren't on that channel")
                else:
                    modes = channel.members[member]
                    if adding != (char in modes):
                        (modes.add if adding else modes.discard)(char)
                        applied.append((sign, char))
                        applied_args.append(member.nick)
            elif char in _LISTS:
                if not args:
                    continue  # "+b" without a mask in a longer string: nothing to do
                mask = _normal_mask(args.pop(0))
                if self._change_list(channel, char, adding, mask):
                    applied.append((sign, char))
                    applied_args.append(mask)
            elif char == "k":
                if adding:
                    if not args:
                        self.reply(ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                        continue
                    key = args.pop(0)
                    if not _KEY_RE.fullmatch(key):
                        self.reply(ERR_INVALIDKEY, channel.name, "Key is not well-formed")
                        continue
                    channel.key = key
                    applied.append((sign, char))
                    applied_args.append(key)
                else:
                    if args:
                        args.pop(0)  # modern servers take the key with -k and ignore it
                    if channel.key is not None:
                        channel.key = None
                        applied.append((sign, char))
                        applied_args.append("*")
            elif char == "l":
                if adding:
                    if not args:
                        self.reply(ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
                        continue
                    value = args.pop(0)
                    if not decimal_number(value) or not 0 < int(value) <= 100000:
                        self.reply(ERR_INVALIDMODEPARAM, channel.name, "l", value,
                                   "The limit must be a number from 1 to 100000")
                        continue
                    channel.limit = int(value)
                    applied.append((sign, char))
                    applied_args.append(value)
                elif channel.limit is not None:
                    channel.limit = None
                    applied.append((sign, char))
            else:
                self.reply(ERR_UNKNOWNMODE, char, "is unknown mode char to me")
        if applied:
            text = ""
            last = ""
            for change_sign, letter in applied:
                if change_sign != last:
                    text += change_sign
                    last = change_sign
                text += letter
            self.network.show_change(channel, Message("MODE", (channel.name, text, *applied_args),
                                                      prefix=self.hostmask))

    def _change_list(self, channel: Channel, letter: str, adding: bool, mask: str) -> bool:
        entries = channel.lists[letter]
        present = [e for e in entries if irc_lower(e.mask) == irc_lower(mask)]
        if adding:
            if present:
                return False
            if len(entries) >= MAX_LIST_ENTRIES:
                self.reply(ERR_BANLISTFULL, channel.name, mask, "Channel list is full")
                return False
            entries.append(ListEntry(mask, self.nick, int(self.clock.seconds())))
            return True
        for entry in present:
            entries.remove(entry)
        return bool(present)

    def join_refusal(self, channel: Channel, key: Optional[str]) -> Optional[Tuple[str, str]]:
        """Why an IRC channel's modes refuse this user's JOIN (474, 473, 475, 471), or None."""
        if channel.listed("b", self) and not channel.listed("e", self):
            return ERR_BANNEDFROMCHAN, "Cannot join channel (+b)"
        invite = irc_lower(self.nick) in channel.invited
        if "i" in channel.modes and not (invite or channel.listed("I", self)):
            return ERR_INVITEONLYCHAN, "Cannot join channel (+i)"
        if channel.key is not None and key != channel.key:
            return ERR_BADCHANNELKEY, "Cannot join channel (+k)"
        # An INVITE lets a user in despite the limit (Modern IRC, client limit mode).
        if channel.limit is not None and len(channel.members) >= channel.limit and not invite:
            return ERR_CHANNELISFULL, "Cannot join channel (+l)"
        return None

    def _user_mode(self, nick: str, params: Tuple[str, ...]) -> None:
        user = self.network.find_user(nick)
        if user is None:
            self.reply(ERR_NOSUCHNICK, nick, "No such nick/channel")
            return
        if user is not self:
            self.reply(ERR_USERSDONTMATCH, "Can't change mode for other users")
            return
        if not params:
            self.reply(RPL_UMODEIS, "+" + "".join(sorted(self.user_modes)))
            return
        sign = "+"
        changed = ""
        for char in params[0]:
            if char in "+-":
                sign = char
            elif char in "iw" or (char == "o" and sign == "-"):
                # +o only through OPER; -o gives operator status up.
                if (sign == "+") != (char in self.user_modes):
                    (self.user_modes.add if sign == "+" else self.user_modes.discard)(char)
                    changed += sign + char
            elif char == "o":
                continue
            else:
                self.reply(ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
        if changed:
            self.send_message(Message("MODE", (self.nick, changed), prefix=self.hostmask))
            self.network.user_changed(self)

    def irc_INVITE(self, message: Message) -> None:
        """
        ``INVITE nick #channel``: into a ``+i`` IRC channel (by a chanop), or any channel its
        members may invite to; the invitee gets an INVITE, members with ``invite-notify`` too.
        A bridged room's members are admitted by ILIAS: 482 there.
        """
        nick, name = message.params[0], message.params[1]
        target = self.network.find_user(nick)
        if target is None:
            self.reply(ERR_NOSUCHNICK, nick, "No such nick/channel")
            return
        channel = self.network.find_channel(name)
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, name, "No such channel")
            return
        if self not in channel.members:
            self.reply(ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
            return
        if channel.bridged:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name,
                       "Who may enter a chat room is decided in ILIAS (invite them there)")
            return
        if "i" in channel.modes and not channel.is_op(self):
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "You're not channel operator")
            return
        if target in channel.members:
            self.reply(ERR_USERONCHANNEL, target.nick, channel.name, "is already on channel")
            return
        self.reply(RPL_INVITING, target.nick, channel.name)
        self.network.invite(channel, self, target)
        if target.away:
            self.reply(RPL_AWAY, target.nick, target.away)

    def irc_KICK(self, message: Message) -> None:
        channel = self.network.find_channel(message.params[0])
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, message.params[0], "No such channel")
            return
        if self not in channel.members:
            self.reply(ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
            return
        refusal = channel.link.refusal(self, "kick") if channel.bridged else (
            None if channel.is_op(self) else "You're not channel operator")
        if refusal is not None:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, refusal)
            return
        reason = (message.params[2] if len(message.params) > 2 else self.nick)[:KICK_LENGTH]
        for nick in message.params[1].split(","):
            target = self.network.find_user(nick)
            if target is None or target not in channel.members:
                self.reply(ERR_USERNOTINCHANNEL, nick, channel.name, "They aren't on that channel")
                continue
            if not channel.link.kick(self, target, reason):
                self.reply(ERR_USERNOTINCHANNEL, nick, channel.name, "They aren't in the chat room")
                continue
            if not channel.bridged:
                # A chat room's kick comes back as its ``kicked`` event, for everyone at once.
                self.network.remove_member(channel, target, "KICK", reason, by=self)

