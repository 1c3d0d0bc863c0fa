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

__all__ = ["Command", "COMMANDS"]


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
    # Operators.
    Command("OPER", 2),
    Command("KILL", 2),
    Command("WALLOPS", 1),
)
