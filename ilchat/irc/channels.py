# -*- test-case-name: tests.irc.test_protocol -*-
"""
Channel commands of an IRC connection: JOIN, PART, NAMES, TOPIC, LIST, MODE (channel and user
modes) and KICK.

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}. The network (L{ilchat.irc.network}) holds
the channels; a bridged channel's L{ChannelLink} decides joins, kicks and whether the topic may be
set, so these handlers never touch a chat room.
"""

from typing import List, Optional, Tuple

from twisted.internet import defer

from ilchat.irc.message import Message
from ilchat.irc.network import Channel, irc_lower, valid_channel
from ilchat.irc.numerics import (
    ERR_CHANOPRIVSNEEDED,
    ERR_NEEDMOREPARAMS,
    ERR_NOSUCHCHANNEL,
    ERR_NOSUCHNICK,
    ERR_NOTONCHANNEL,
    ERR_UMODEUNKNOWNFLAG,
    ERR_UNKNOWNMODE,
    ERR_USERNOTINCHANNEL,
    ERR_USERSDONTMATCH,
    RPL_CHANNELMODEIS,
    RPL_CREATIONTIME,
    RPL_ENDOFBANLIST,
    RPL_ENDOFEXCEPTLIST,
    RPL_ENDOFINVITELIST,
    RPL_ENDOFNAMES,
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

#: The numeric and text that end an empty list mode query (``MODE #c b``).
_LIST_ENDS = {
    "b": (RPL_ENDOFBANLIST, "End of channel ban list"),
    "e": (RPL_ENDOFEXCEPTLIST, "End of channel exception list"),
    "I": (RPL_ENDOFINVITELIST, "End of channel invite list"),
}


class ChannelCommands:
    """JOIN, PART, NAMES, TOPIC, LIST, MODE and KICK."""

    def irc_JOIN(self, message: Message) -> Optional[defer.Deferred]:
        if message.params[0] == "0":
            for channel in list(self.channels):
                self.network.remove_member(channel, self, "PART", "Left all channels")
            return None
        return defer.ensureDeferred(self._join_all(message.params[0].split(",")))

    async def _join_all(self, names: List[str]) -> None:
        for name in names:
            if self._closing:
                return
            await self._join(name)

    async def _join(self, name: str) -> None:
        if not valid_channel(name, self.config.channel_length):
            self.reply(ERR_NOSUCHCHANNEL, name or "*", "No such channel")
            return
        channel = self.network.find_channel(name)
        modes: Tuple[str, ...] = ()
        if channel is None:
            if not self.config.local_channels or self.network.reserved(name):
                self.reply(ERR_NOSUCHCHANNEL, name, "No such channel")
                return
            channel = self.network.add_channel(name)
            modes = ("o",)
        if self in channel.members:
            return
        refusal = await channel.link.check_join(self)
        if self._closing or not self.registered:
            return
        if refusal is not None:
            numeric, text = refusal
            self.reply(numeric, channel.name, text)
            self.network.remove_channel_if_empty(channel)
            return
        self.network.add_member(channel, self, modes)
        channel.link.joined(self)
        if channel.topic:
            self._send_topic(channel)
        self._send_names(channel)

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
        names = [channel.prefix_of(member, multi) + member.nick for member in channel.members]
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
            if wanted is None or key in wanted:
                self.reply(RPL_LIST, channel.name, str(len(channel.members)), channel.topic)
        self.reply(RPL_LISTEND, "End of /LIST")


    def irc_MODE(self, message: Message) -> None:
        target = message.params[0]
        if not target.startswith("#"):
            self._user_mode(target, message.params[1:])
            return
        channel = self.network.find_channel(target)
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, target, "No such channel")
            return
        if len(message.params) == 1:
            self.reply(RPL_CHANNELMODEIS, channel.name, channel.mode_string())
            self.reply(RPL_CREATIONTIME, channel.name, str(channel.created))
            return
        changes = message.params[1]
        args = list(message.params[2:])
        if changes.lstrip("+") in ("b", "e", "I") and not args:
            numeric, text = _LIST_ENDS[changes.lstrip("+")]
            self.reply(numeric, channel.name, text)
            return
        if not channel.is_op(self):
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "You're not channel operator")
            return
        applied: List[str] = []
        applied_args: List[str] = []
        sign = "+"
        for char in changes:
            if char in "+-":
                sign = char
                continue
            if char in "nt":
                if (sign == "+") != (char in channel.modes):
                    (channel.modes.add if sign == "+" else channel.modes.discard)(char)
                    applied.append(sign + char)
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
                    if (sign == "+") != (char in modes):
                        (modes.add if sign == "+" else modes.discard)(char)
                        applied.append(sign + char)
                        applied_args.append(member.nick)
            elif char in "beIkl":
                if args:
                    args.pop(0)
                self.reply(ERR_UNKNOWNMODE, char, "is not supported on this server")
            else:
                self.reply(ERR_UNKNOWNMODE, char, "is unknown mode char to me")
        if applied:
            text = ""
            last = ""
            for change in applied:
                if change[0] != last:
                    text += change[0]
                    last = change[0]
                text += change[1]
            channel.broadcast(Message("MODE", (channel.name, text, *applied_args), prefix=self.hostmask))

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
            elif char == "i":
                if (sign == "+") != ("i" in self.user_modes):
                    (self.user_modes.add if sign == "+" else self.user_modes.discard)("i")
                    changed += sign + "i"
            else:
                self.reply(ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")
        if changed:
            self.send_message(Message("MODE", (self.nick, changed), prefix=self.hostmask))

    def irc_KICK(self, message: Message) -> None:
        channel = self.network.find_channel(message.params[0])
        if channel is None:
            self.reply(ERR_NOSUCHCHANNEL, message.params[0], "No such channel")
            return
        if self not in channel.members:
            self.reply(ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
            return
        if not channel.is_op(self):
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "You're not channel operator")
            return
        reason = message.params[2] if len(message.params) > 2 else self.nick
        for nick in message.params[1].split(","):
            target = self.network.find_user(nick)
            if target is None or target not in channel.members:
                self.reply(ERR_USERNOTINCHANNEL, nick, channel.name, "They aren't on that channel")
                continue
            if not channel.link.kick(self, target, reason):
                self.reply(ERR_CHANOPRIVSNEEDED, channel.name, "Cannot kick that user from the chat room")
                continue
            self.network.remove_member(channel, target, "KICK", reason, by=self)

