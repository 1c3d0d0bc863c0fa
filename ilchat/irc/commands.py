# -*- test-case-name: tests.irc.test_commands -*-
"""
The command table: every command the server knows, how many parameters it needs and whether a
client may send it before registration.

The protocol checks a line against its table entry before it calls the command's
C{irc_<COMMAND>} method, as ircds do (ergo's C{minParams}, Synapse's C{VALID_INBOUND_COMMANDS}):
a command that is not in the table is 421 (451 before registration), one that needs registration
is 451 before it, a registration command sent again is 462, and too few parameters are 461. So a
handler starts with its parameters there and writes no 461 of its own.
"""

from typing import Dict, Sequence

import attr

__all__ = ["Command", "COMMANDS", "SUMMARIES"]


@attr.s(frozen=True, auto_attribs=True)
class Command:
    """
    One row of the table.

    Attributes:
        name: the command, upper case; its handler is C{irc_<name>}.
        min_params: parameters it needs; fewer are 461 (ERR_NEEDMOREPARAMS).
        before_registration: whether a client may send it before it is registered (else 451).
        once: a registration command that may be sent only once (PASS, USER): 462 afterwards.
        nonempty: an empty required parameter (a trailing ``:``) counts as missing.
    """

    name: str
    min_params: int = 0
    before_registration: bool = False
    once: bool = False
    nonempty: bool = False

    def lacks_params(self, params: Sequence[str]) -> bool:
        """Whether C{params} are too few for this command (461)."""
        if len(params) < self.min_params:
            return True
        return self.nonempty and not all(params[: self.min_params])


def _table(*commands: Command) -> Dict[str, Command]:
    return {command.name: command for command in commands}


#: Every command the server handles, by name.
COMMANDS: Dict[str, Command] = _table(
    # Registration and connection upkeep: allowed before registration.
    Command("CAP", 1, before_registration=True),
    Command("PASS", 1, before_registration=True, once=True),
    Command("NICK", before_registration=True),  # no nick is 431, not 461
    Command("USER", 4, before_registration=True, once=True, nonempty=True),
    Command("AUTHENTICATE", 1, before_registration=True),  # 461 before the SASL state, as ergo
    Command("WEBIRC", 4, before_registration=True),
    Command("PING", before_registration=True),  # no origin is 409, not 461
    Command("PONG", before_registration=True),
    Command("QUIT", before_registration=True),
    # Channels.
    Command("JOIN", 1, nonempty=True),
    Command("PART", 1, nonempty=True),
    Command("TOPIC", 1),
    Command("NAMES"),
    Command("LIST"),
    Command("MODE", 1),
    Command("KICK", 2),
    Command("INVITE", 2),
    # Messages.
    Command("PRIVMSG"),  # no recipient or text is 411/412 (RFC 2812 §3.3.1), not 461
    Command("NOTICE"),  # never answered automatically (RFC 2812 §3.3.2)
    Command("TAGMSG"),
    Command("BATCH", 1),  # a client's draft/multiline batch (ilchat.irc.batches)
    Command("CHATHISTORY", 3),  # draft/chathistory (ilchat.irc.history)
    # Queries and user state.
    Command("WHO"),
    Command("WHOIS"),  # no nick is 431
    Command("ISON"),
    Command("USERHOST"),
    Command("AWAY"),
    Command("SETNAME", 1),
    Command("MOTD"),
    Command("WHOWAS"),  # no nick is 431
    Command("LUSERS"),
    Command("TIME"),
    Command("VERSION"),
    Command("INFO"),
    Command("ADMIN"),
    Command("HELP"),
    Command("HELPOP"),  # InspIRCd's and UnrealIRCd's name for HELP
    # Operators.
    Command("OPER", 2),
    Command("KILL", 2),
    Command("WALLOPS", 1),
)

#: What ``HELP <command>`` says about each command of the table.
SUMMARIES: Dict[str, str] = {
    "CAP": "CAP LS|REQ|LIST|END: negotiate IRCv3 capabilities",
    "PASS": "PASS <password>: the server password (login:password in ilias mode)",
    "NICK": "NICK <nick>: choose or change your nick",
    "USER": "USER <user> 0 * :<realname>: register the connection",
    "AUTHENTICATE": "AUTHENTICATE PLAIN: log in with SASL",
    "WEBIRC": "WEBIRC <password> <gateway> <host> <ip>: a web gateway's user address",
    "PING": "PING <token>: the server answers PONG <token>",
    "PONG": "PONG <token>: the answer to the server's PING",
    "QUIT": "QUIT [:<reason>]: disconnect",
    "JOIN": "JOIN <channel>[,<channel>] [<key>[,<key>]]: join channels",
    "PART": "PART <channel>[,<channel>] [:<reason>]: leave channels",
    "TOPIC": "TOPIC <channel> [:<topic>]: show or set a channel's topic",
    "NAMES": "NAMES [<channel>]: who is in a channel",
    "LIST": "LIST [<channel>]: the channels and their topics",
    "MODE": "MODE <channel|nick> [<modes> [<params>]]: show or change modes",
    "KICK": "KICK <channel> <nick> [:<reason>]: remove a member from a channel",
    "INVITE": "INVITE <nick> <channel>: invite a user into a channel",
    "PRIVMSG": "PRIVMSG <target>[,<target>] :<text>: a message to channels or users",
    "NOTICE": "NOTICE <target> :<text>: a message never answered automatically",
    "TAGMSG": "TAGMSG <target>: a message of tags only (message-tags)",
    "BATCH": "BATCH +<id> draft/multiline <target> ... BATCH -<id>: a multi-line message",
    "CHATHISTORY": "CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN|TARGETS ...: history",
    "WHO": "WHO [<mask>|<channel>] [o]: list users",
    "WHOIS": "WHOIS <nick>: about a user",
    "ISON": "ISON <nick> [<nick>...]: which of these nicks are online",
    "USERHOST": "USERHOST <nick> [<nick>...]: the hosts of these nicks",
    "AWAY": "AWAY [:<message>]: set or clear your away message",
    "SETNAME": "SETNAME :<realname>: change your realname",
    "MOTD": "MOTD: the message of the day",
    "WHOWAS": "WHOWAS <nick> [<count>]: about a user who has left",
    "LUSERS": "LUSERS: how many users and channels there are",
    "TIME": "TIME: the server's time",
    "VERSION": "VERSION: the server's version and ISUPPORT tokens",
    "INFO": "INFO: about the server",
    "ADMIN": "ADMIN: who runs the server",
    "HELP": "HELP [<command>]: the commands, or what one does",
    "HELPOP": "HELPOP [<command>]: the same as HELP",
    "OPER": "OPER <name> <password>: become an IRC operator",
    "KILL": "KILL <nick> :<reason>: disconnect a user (operators)",
    "WALLOPS": "WALLOPS :<text>: a message to the users with +w (operators)",
}
