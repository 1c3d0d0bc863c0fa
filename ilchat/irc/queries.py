# -*- test-case-name: tests.irc.test_queries -*-
"""
Queries of an IRC connection about users and the server: WHO (with masks), WHOIS, WHOWAS, ISON,
USERHOST, LUSERS, TIME, VERSION, INFO and ADMIN.

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}. Users are the network's: local connections,
the IRC users of other processes (L{ilchat.irc.replication.PeerUser}, with the ``server_info``
of their process) and the browser users of bridged rooms (L{ilchat.irc.network.RemoteUser}),
who have no user modes, so invisibility (``+i``) and operator status are read with C{getattr}.
"""

from datetime import datetime, timezone
from typing import Any, List, Optional

import twisted

import ilchat
from ilchat.irc.commands import COMMANDS, SUMMARIES
from ilchat.irc.message import Message, decimal_number
from ilchat.irc.network import Channel, irc_lower, mask_matches
from ilchat.irc.numerics import (
    ERR_HELPNOTFOUND,
    ERR_NONICKNAMEGIVEN,
    ERR_NOSUCHNICK,
    ERR_NOSUCHSERVER,
    ERR_WASNOSUCHNICK,
    RPL_ADMINEMAIL,
    RPL_ADMINLOC1,
    RPL_ADMINLOC2,
    RPL_ADMINME,
    RPL_AWAY,
    RPL_ENDOFHELP,
    RPL_ENDOFINFO,
    RPL_ENDOFWHO,
    RPL_ENDOFWHOIS,
    RPL_ENDOFWHOWAS,
    RPL_GLOBALUSERS,
    RPL_HELPSTART,
    RPL_HELPTXT,
    RPL_INFO,
    RPL_ISON,
    RPL_LOCALUSERS,
    RPL_LUSERCHANNELS,
    RPL_LUSERCLIENT,
    RPL_LUSERME,
    RPL_LUSEROP,
    RPL_LUSERUNKNOWN,
    RPL_TIME,
    RPL_USERHOST,
    RPL_VERSION,
    RPL_WHOISACCOUNT,
    RPL_WHOISCHANNELS,
    RPL_WHOISIDLE,
    RPL_WHOISOPERATOR,
    RPL_WHOISSERVER,
    RPL_WHOISUSER,
    RPL_WHOREPLY,
    RPL_WHOWASUSER,
)

__all__ = ["QueryCommands", "is_oper", "server_version"]

#: At most this many WHO lines for one mask, so that ``WHO *`` on a big network stays bounded.
MAX_WHO_REPLIES = 500


def is_oper(user: Any) -> bool:
    """Whether C{user} is an IRC operator (``+o``); browser users never are."""
    return "o" in getattr(user, "user_modes", ())


def is_invisible(user: Any) -> bool:
    return "i" in getattr(user, "user_modes", ())


def server_version() -> str:
    return f"ilchat-{ilchat.__version__}"


def _format_time(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return stamp.strftime("%A %B %d %Y -- %H:%M:%S +00:00")


class QueryCommands:
    """WHO, WHOIS, WHOWAS, ISON, USERHOST, LUSERS, TIME, VERSION, INFO, ADMIN."""

    # -- WHO -------------------------------------------------------------------------------------

    def _who_line(self, channel_name: str, member: Any, channel: Optional[Channel]) -> None:
        flags = "G" if member.away else "H"
        if is_oper(member):
            flags += "*"
        if channel is not None:
            flags += channel.prefix_of(member, "multi-prefix" in self.caps)
        self.reply(
            RPL_WHOREPLY,
            channel_name,
            member.username or "*",
            member.host,
            getattr(member, "server_info", (self.config.server_name,))[0],
            member.nick,
            flags,
            f"0 {member.realname or member.nick}",
        )

    def _visible_to_me(self, user: Any) -> bool:
        """Invisible users (``+i``) show in a mask WHO only to those who share a channel."""
        return user is self or not is_invisible(user) or bool(user.channels & self.channels)

    def _who_matches(self, mask: str, user: Any) -> bool:
        if mask in ("*", "0"):
            return True
        fields = (user.nick, user.username or "*", user.host, user.realname or "",
                  self.config.server_name, user.hostmask)
        return any(mask_matches(mask, field) for field in fields)

    def _shown_channel(self, user: Any) -> Optional[Channel]:
        """The channel a WHO line names for a user: one shared with the asker, else a public one."""
        shared = sorted(user.channels & self.channels, key=lambda c: c.name)
        if shared:
            return shared[0]
        public = sorted((c for c in user.channels if "s" not in c.modes), key=lambda c: c.name)
        return public[0] if public else None

    def irc_WHO(self, message: Message) -> None:
        mask = message.params[0] if message.params and message.params[0] else "*"
        opers_only = len(message.params) > 1 and "o" in message.params[1]
        if mask.startswith("#"):
            channel = self.network.find_channel(mask)
            if channel is not None and (self in channel.members or "s" not in channel.modes):
                for member in list(channel.members):
                    if (self in channel.members or not is_invisible(member)) and (
                        not opers_only or is_oper(member)
                    ):
                        self._who_line(channel.name, member, channel)
        else:
            shown = 0
            for user in list(self.network.users.values()):
                if shown >= MAX_WHO_REPLIES:
                    break
                if opers_only and not is_oper(user):
                    continue
                exact = irc_lower(user.nick) == irc_lower(mask)
                if not self._who_matches(mask, user) or not (exact or self._visible_to_me(user)):
                    continue
                channel = self._shown_channel(user)
                self._who_line(channel.name if channel else "*", user, channel)
                shown += 1
        self.reply(RPL_ENDOFWHO, mask, "End of /WHO list")

    # -- WHOIS, WHOWAS ---------------------------------------------------------------------------

    def irc_WHOIS(self, message: Message) -> None:
        if not message.params or not message.params[-1]:
            self.reply(ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        for nick in message.params[-1].split(",")[:5]:
            user = self.network.find_user(nick)
            if user is None:
                self.reply(ERR_NOSUCHNICK, nick, "No such nick/channel")
                self.reply(RPL_ENDOFWHOIS, nick, "End of /WHOIS list")
                continue
            self.reply(RPL_WHOISUSER, user.nick, user.username or "*", user.host, "*", user.realname or user.nick)
            channels = [c.prefix_of(user, False) + c.name for c in user.channels
                        if "s" not in c.modes or self in c.members]
            if channels:
                self.reply(RPL_WHOISCHANNELS, user.nick, " ".join(sorted(channels)))
            server, where = getattr(user, "server_info", None) or (
                self.config.server_name, self.config.server_name if user.local else "ILIAS web chat")
            self.reply(RPL_WHOISSERVER, user.nick, server, where)
            if is_oper(user):
                self.reply(RPL_WHOISOPERATOR, user.nick, "is an IRC operator")
            if user.away:
                self.reply(RPL_AWAY, user.nick, user.away)
            if getattr(user, "account", None):
                self.reply(RPL_WHOISACCOUNT, user.nick, user.account, "is logged in as")
            if user.local or getattr(user, "signon", None):  # IRC users, here or elsewhere
                idle = int(self.clock.seconds() - (user.last_message or user.signon))
                self.reply(RPL_WHOISIDLE, user.nick, str(max(idle, 0)), str(user.signon), "seconds idle, signon time")
            self.reply(RPL_ENDOFWHOIS, user.nick, "End of /WHOIS list")

    def irc_WHOWAS(self, message: Message) -> None:
        if not message.params or not message.params[0]:
            self.reply(ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        count = 0
        if len(message.params) > 1 and decimal_number(message.params[1].removeprefix("-")):
            count = int(message.params[1])
        for nick in message.params[0].split(",")[:5]:
            entries = [e for e in reversed(self.network.whowas) if mask_matches(nick, e.nick)]
            if count > 0:
                entries = entries[:count]
            if not entries:
                self.reply(ERR_WASNOSUCHNICK, nick, "There was no such nickname")
            for entry in entries[:20]:
                self.reply(RPL_WHOWASUSER, entry.nick, entry.username, entry.host, "*", entry.realname)
                self.reply(RPL_WHOISSERVER, entry.nick, self.config.server_name, _format_time(entry.when))
            self.reply(RPL_ENDOFWHOWAS, nick, "End of WHOWAS")

    # -- ISON, USERHOST --------------------------------------------------------------------------

    def irc_ISON(self, message: Message) -> None:
        nicks = " ".join(message.params).split()
        online = [self.network.find_user(nick).nick for nick in nicks if self.network.find_user(nick)]
        self.reply(RPL_ISON, " ".join(online))

    def irc_USERHOST(self, message: Message) -> None:
        replies = []
        for nick in message.params[:5]:
            user = self.network.find_user(nick)
            if user is not None:
                oper = "*" if is_oper(user) else ""
                replies.append(f"{user.nick}{oper}={'-' if user.away else '+'}{user.username}@{user.host}")
        self.reply(RPL_USERHOST, " ".join(replies))

    # -- the server ------------------------------------------------------------------------------

    def _other_server(self, message: Message) -> bool:
        """A query for another server (``VERSION irc.elsewhere``): 402, as there is only this one."""
        if not message.params or not message.params[0]:
            return False
        name = message.params[0]
        if mask_matches(name, self.config.server_name) or self.network.find_user(name) is not None:
            return False
        self.reply(ERR_NOSUCHSERVER, name, "No such server")
        return True

    def send_lusers(self) -> None:
        """251-255, 265, 266: the counts of users (web users of bridged rooms too), opers, channels."""
        # A connection that has sent NICK but not USER holds its nick, yet it is an unknown
        # connection (253), not a user.
        users: List[Any] = [user for user in self.network.users.values() if user.registered]
        local = [user for user in users if user.local]
        invisible = sum(1 for user in users if is_invisible(user))
        opers = sum(1 for user in users if is_oper(user))
        total = len(users)
        connections = sum(self.network.connections_per_ip.values())
        unknown = max(connections - len(local), 0)
        network = self.network
        network.max_local = max(network.max_local, len(local))
        network.max_global = max(network.max_global, total)
        # Every process: the live ones, and those whose users are known before their heartbeat.
        live = network.cluster.live_instances() if network.cluster is not None else {"this"}
        servers = len(set(live) | {user.instance for user in users if getattr(user, "elsewhere", False)})
        self.reply(RPL_LUSERCLIENT,
                   f"There are {total - invisible} users and {invisible} invisible on {servers} servers")
        self.reply(RPL_LUSEROP, str(opers), "operator(s) online")
        self.reply(RPL_LUSERUNKNOWN, str(unknown), "unknown connection(s)")
        self.reply(RPL_LUSERCHANNELS, str(len(network.channels)), "channels formed")
        self.reply(RPL_LUSERME, f"I have {len(local)} clients and {servers - 1} servers")
        self.reply(RPL_LOCALUSERS, str(len(local)), str(network.max_local),
                   f"Current local users {len(local)}, max {network.max_local}")
        self.reply(RPL_GLOBALUSERS, str(total), str(network.max_global),
                   f"Current global users {total}, max {network.max_global}")

    def irc_LUSERS(self, message: Message) -> None:
        self.send_lusers()

    def irc_TIME(self, message: Message) -> None:
        if not self._other_server(message):
            self.reply(RPL_TIME, self.config.server_name, _format_time(self.clock.seconds()))

    def irc_VERSION(self, message: Message) -> None:
        if self._other_server(message):
            return
        self.reply(RPL_VERSION, server_version(), self.config.server_name,
                   "IRC server and bridge to ILIAS chat rooms")
        self.send_isupport()

    def irc_INFO(self, message: Message) -> None:
        if self._other_server(message):
            return
        lines: List[str] = [
            f"{server_version()}: an IRC server and bridge to ILIAS chat rooms",
            f"on Twisted {twisted.__version__}",
            f"network {self.config.network_name}, server {self.config.server_name}",
            f"up since {_format_time(self.network.created)}",
        ]
        for line in lines:
            self.reply(RPL_INFO, line)
        self.reply(RPL_ENDOFINFO, "End of /INFO list")

    def irc_HELP(self, message: Message) -> None:
        """``HELP [<command>]`` (Modern IRC): the command list, or one command's summary."""
        subject = message.params[0].upper() if message.params else ""
        if not subject:
            names = sorted(COMMANDS)
            self.reply(RPL_HELPSTART, "*", "The commands of this server (HELP <command> for one):")
            for start in range(0, len(names), 10):
                self.reply(RPL_HELPTXT, "*", " ".join(names[start:start + 10]))
            self.reply(RPL_ENDOFHELP, "*", "End of /HELP")
        elif subject in COMMANDS:
            self.reply(RPL_HELPSTART, subject, SUMMARIES[subject])
            self.reply(RPL_ENDOFHELP, subject, "End of /HELP")
        else:
            self.reply(ERR_HELPNOTFOUND, subject[:32], "No help available on this topic")

    irc_HELPOP = irc_HELP

    def irc_ADMIN(self, message: Message) -> None:
        if self._other_server(message):
            return
        config = self.config
        self.reply(RPL_ADMINME, config.server_name, "Administrative info")
        self.reply(RPL_ADMINLOC1, config.admin_location or config.network_name)
        self.reply(RPL_ADMINLOC2, f"{config.server_name} ({config.network_name})")
        self.reply(RPL_ADMINEMAIL, config.admin_email or "No e-mail address given")
