# -*- test-case-name: tests.irc.test_protocol,tests.irc.test_commands -*-
"""
The IRC server protocol: one instance per client connection, and its factory.

L{IRCServerProtocol} puts the parts together: the connection (L{ilchat.irc.connection}: buffers,
queues, flood control, timers, the one send path), registration (L{ilchat.irc.registration}: CAP,
SASL, PASS, WEBIRC, NICK, USER) and the channel commands (L{ilchat.irc.channels}); this module adds
the dispatch, messages and queries. Every parsed line is checked against the command table
(L{ilchat.irc.commands}: known command, registration, parameter count) before its
C{irc_<COMMAND>} method runs.
"""

from typing import Any, Dict, List, Optional, Set, Tuple

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.irc.batches import MultilineCommands, unique_id
from ilchat.irc.channels import ChannelCommands
from ilchat.irc.commands import COMMANDS
from ilchat.irc.connection import IrcConnection
from ilchat.irc.message import (
    MESSAGE_TARGETS,
    Message,
    MessageError,
    echoed,
    format_message,
    parse_message,
)
from ilchat.irc.network import Channel, IrcNetwork, irc_lower
from ilchat.irc.numerics import (
    ERR_ALREADYREGISTERED,
    ERR_CANNOTSENDTOCHAN,
    ERR_NEEDMOREPARAMS,
    ERR_NOORIGIN,
    ERR_NORECIPIENT,
    ERR_NOSUCHCHANNEL,
    ERR_NOSUCHNICK,
    ERR_NOTEXTTOSEND,
    ERR_NOTREGISTERED,
    ERR_TOOMANYTARGETS,
    ERR_UNKNOWNCOMMAND,
    ERR_UNKNOWNERROR,
    RPL_AWAY,
    RPL_NOWAWAY,
    RPL_UNAWAY,
)
from ilchat.irc.history import HistoryCommands
from ilchat.irc.history_store import HistoryLine, dm_key, dm_owners, event_line, kept_tagmsg
from ilchat.irc.operators import OperatorCommands
from ilchat.irc.queries import QueryCommands
from ilchat.irc.registration import REALNAME_LENGTH, SUPPORTED_CAPS, RegistrationCommands

__all__ = ["IRCServerProtocol", "IrcServerFactory", "SUPPORTED_CAPS"]

class IRCServerProtocol(
    RegistrationCommands, ChannelCommands, QueryCommands, OperatorCommands, HistoryCommands,
    MultilineCommands, IrcConnection
):
    """
    One IRC client connection: registration, capabilities, commands, limits and timers.

    The connection is also the user object the network keeps in its channels (C{local = True}).
    """

    _log = Logger()

    local = True

    def __init__(self, network: IrcNetwork, clock: Any) -> None:
        super().__init__(network, clock)
        self._init_registration()
        self.away: Optional[str] = None
        #: The chat connection id the bridge uses for this user (see ilchat.irc.bridge).
        self.chat_connection: Optional[str] = None
        self.channels: Set[Channel] = set()
        self.user_modes: Set[str] = set()
        self.last_message = 0.0
        self._init_multiline()

    def __repr__(self) -> str:
        return f"<IRCServerProtocol {self.nick or '*'}@{self.ip}>"

    # -- identity --------------------------------------------------------------------------------

    @property
    def hostmask(self) -> str:
        return f"{self.nick}!{self.username or '*'}@{self.host}"

    @property
    def display_name(self) -> str:
        """The name browsers see: the ILIAS login in ``ilias`` mode, else the nick."""
        return self.account or self.nick or "*"

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        super().connectionLost(reason)
        self._stop_registration()
        if self.registered:
            self._log_departure()
            self.network.quit(self, self._quit_reason)
        else:
            self.network.release_nick(self)
        self.registered = False

    def _who(self) -> str:
        """The user as log lines name it: nick, then ILIAS login and id (or the open-mode id)."""
        if self.account is not None:
            return f"{self.nick} ({self.account}, {self.user_id}, {self.account_client})"
        return f"{self.nick} ({self.user_id})"

    def _log_departure(self) -> None:
        # One line per registered connection, as its login had one: a quit, or a kill (the
        # server closed it: ping timeout, flood, SendQ, shutdown).
        if self._closed_by_server and not self._quit_by_client:
            self._log.info("{who} disconnected from IRC by the server ({address}): {reason}",
                           who=self._who(), address=self.ip, reason=self._quit_reason)
        else:
            self._log.info("{who} quit IRC ({address}): {reason}",
                           who=self._who(), address=self.ip, reason=self._quit_reason)

    # -- dispatch --------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> Optional[defer.Deferred]:
        if b"\0" in line:
            # NUL is not allowed anywhere in an IRC message, and a reply echoing it could not be
            # sent. The line is dropped with ERR_UNKNOWNERROR saying why (ergo refuses such
            # lines too); the connection goes on, since one stray byte should not cost it.
            self.reply(ERR_UNKNOWNERROR, "*", "Line dropped: it contains a NUL character")
            return None
        text, utf8 = self.decode(line)
        try:
            message = parse_message(text)
        except MessageError:
            return None
        if message.command.isdigit():
            return None
        label = message.tags.get("label") if "labeled-response" in self.caps else None
        if label and self.opens_batch(message):
            label = None  # the batch's end answers, with its label (ilchat.irc.batches)
        if label:
            self.start_label(label)
        if not utf8:
            # UTF8ONLY: the sender learns that its line was not UTF-8 (and was read as Latin-1).
            self.send_message(Message("WARN", echoed((message.command[:32], "INVALID_UTF8",
                                                      "Message was not UTF-8; it was read as Latin-1")),
                                      prefix=self.config.server_name))
        if not message.command.isalpha() or not message.command.isascii():
            self.reply(ERR_UNKNOWNCOMMAND, message.command[:32] or "*", "Unknown command")
            result = None
        else:
            result = self.dispatch(message)
        if label:
            if result is None:
                self.end_label()
            else:
                result.addBoth(self.end_label)
        return result

    def dispatch(self, message: Message) -> Optional[defer.Deferred]:
        """
        Check C{message} against the command table, then run its C{irc_<COMMAND>} method: a
        Deferred (always fired with None; a handler's failure is logged here) or None when the
        table refused the line.
        """
        command = COMMANDS.get(message.command)
        if not self.registered and (command is None or not command.before_registration):
            self.reply(ERR_NOTREGISTERED, "You have not registered")
            return None
        if command is None:
            self.reply(ERR_UNKNOWNCOMMAND, message.command, "Unknown command")
            return None
        if command.once and self.reregistering(command.name):
            self.reply(ERR_ALREADYREGISTERED, "You may not reregister")
            return None
        if command.lacks_params(message.params):
            self.reply(ERR_NEEDMOREPARAMS, command.name, "Not enough parameters")
            return None
        if command.name in ("PRIVMSG", "NOTICE"):
            self.last_message = self.clock.seconds()
        result = defer.maybeDeferred(getattr(self, "irc_" + command.name), message)
        result.addErrback(
            lambda f: self._log.failure(
                "Error handling {command} from {ip}", f, command=message.command, ip=self.ip
            )
        )
        return result

    # -- connection upkeep -----------------------------------------------------------------------

    def irc_PING(self, message: Message) -> None:
        if not message.params:
            self.reply(ERR_NOORIGIN, "No origin specified")
            return
        self.send_message(
            Message("PONG", (self.config.server_name, message.params[0]), prefix=self.config.server_name)
        )

    def irc_PONG(self, message: Message) -> None:
        """Any line counts as activity; a PONG needs nothing more."""

    def irc_QUIT(self, message: Message) -> None:
        reason = message.params[0] if message.params else ""
        self._quit_by_client = True
        self.close(f"Quit: {reason}" if reason else "Client Quit")

    def irc_AWAY(self, message: Message) -> None:
        text = message.params[0] if message.params else ""
        if text:
            self.away = text[:200]
            self.reply(RPL_NOWAWAY, "You have been marked as being away")
            self.network.notify(self, "away-notify", "AWAY", self.away)
        else:
            was_away, self.away = self.away, None
            self.reply(RPL_UNAWAY, "You are no longer marked as being away")
            if was_away:
                self.network.notify(self, "away-notify", "AWAY")
        self.network.user_changed(self)

    def irc_SETNAME(self, message: Message) -> None:
        """IRCv3 ``setname``: a new realname, confirmed to the sender and shown to its peers."""
        realname = message.params[0]
        if not realname.strip() or len(realname) > REALNAME_LENGTH:
            self.send_message(Message("FAIL", ("SETNAME", "INVALID_REALNAME", "Realname is not valid"),
                                      prefix=self.config.server_name))
            return
        self.network.set_realname(self, realname)
        self.network.user_changed(self)

    # -- messages --------------------------------------------------------------------------------

    def irc_PRIVMSG(self, message: Message) -> None:
        self._message("PRIVMSG", message)

    def irc_NOTICE(self, message: Message) -> None:
        self._message("NOTICE", message)

    def _message(self, command: str, message: Message) -> None:
        errors = command == "PRIVMSG"  # NOTICE never gets an automatic reply (RFC 2812 §3.3.2)
        if not message.params or not message.params[0]:
            if errors:
                self.reply(ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if self.in_multiline(command, message):
            return
        if len(message.params) < 2 or not message.params[1]:
            if errors:
                self.reply(ERR_NOTEXTTOSEND, "No text to send")
            return
        text = message.params[1]
        client_tags = {key: value for key, value in message.tags.items() if key.startswith("+")}
        self.send_chat(command, message.params[0], text, client_tags)

    def send_chat(self, command: str, targets: str, text: str, client_tags: Dict[str, str],
                  lines: Optional[List[Tuple[str, bool]]] = None) -> None:
        """
        A PRIVMSG/NOTICE to its targets: one line, or a multiline batch's C{text} (its C{lines},
        with their concat flags, for IRC users; its text for a chat room).
        """
        errors = command == "PRIVMSG"
        at = self.clock.seconds()
        for index, target in enumerate(targets.split(",")):
            if index >= MESSAGE_TARGETS:
                # One 407 for all the rest: a line of a hundred targets gets one answer, not 96.
                if errors:
                    self.reply(ERR_TOOMANYTARGETS, target,
                               f"Too many targets: at most {MESSAGE_TARGETS}; not sent to this one and those after it")
                break
            msgid = unique_id()
            if target.startswith("#"):
                channel = self.network.find_channel(target)
                if channel is None:
                    if errors:
                        self.reply(ERR_NOSUCHCHANNEL, target, "No such channel")
                    continue
                if self not in channel.members and "n" in channel.modes:
                    if errors:
                        self.reply(ERR_CANNOTSENDTOCHAN, channel.name, "Cannot send to channel")
                    continue
                if "m" in channel.modes and not channel.is_voiced(self):
                    if errors:
                        self.reply(ERR_CANNOTSENDTOCHAN, channel.name, "Cannot send to channel (+m)")
                    continue
                if not channel.link.send(self, command, text, client_tags):
                    self.network.relay(channel, self, command, text, client_tags, msgid, at, lines)
                    if errors and not channel.bridged:
                        self._remember(irc_lower(channel.name), msgid, at, text, channel.name)
                continue
            user = self.network.find_user(target)
            if user is None:
                if errors:
                    self.reply(ERR_NOSUCHNICK, target, "No such nick/channel")
                continue
            if user is self:
                # To oneself: the copy received is not the reply (the echo is, with echo-message).
                with self.not_a_reply():
                    self.relay_text(command, user.nick, text, self.hostmask, client_tags, msgid, at, lines)
            elif user.local:
                user.relay_text(command, user.nick, text, self.hostmask, client_tags, msgid, at, lines)
            elif user.link is not None:
                if not user.link.send_private(self, user, command, text, client_tags, msgid, at, lines):
                    if errors:
                        self.reply(ERR_NOSUCHNICK, user.nick, "No chat room in common: join one of their rooms first")
                    continue
            if errors and (user.local or getattr(user, "elsewhere", False)):
                self._remember(dm_key(irc_lower(self.nick), irc_lower(user.nick)), msgid, at, text,
                               user.nick, dm_owners(self, user))
            if errors and user.away:
                self.reply(RPL_AWAY, user.nick, user.away)
            if "echo-message" in self.caps:
                self.relay_text(command, user.nick, text, self.hostmask, client_tags, msgid, at, lines)

    def _remember(self, key: Any, msgid: str, at: float, text: str, target: str,
                  owners: Optional[Dict[str, Any]] = None) -> None:
        """An IRC-only PRIVMSG in the network's history (CHATHISTORY; never in the database)."""
        self.network.history.add(key, HistoryLine(msgid, at, self.hostmask, text, target=target), owners)

    def irc_TAGMSG(self, message: Message) -> None:
        """Client-only tags (typing notifications) between IRC clients, and to bridged rooms."""
        if not message.params:
            return
        client_tags = {key: value for key, value in message.tags.items() if key.startswith("+")}
        target = message.params[0]
        outgoing = Message("TAGMSG", (target,), prefix=self.hostmask)
        msgid = unique_id()
        if target.startswith("#"):
            channel = self.network.find_channel(target)
            if channel is not None and self in channel.members:
                # A bridged room hears +typing as the web's typing notices (ilchat.irc.bridge).
                channel.link.tagmsg(self, client_tags)
                self.network.tagmsg(channel, self, client_tags, msgid)
            else:
                return
        else:
            user = self.network.find_user(target)
            if user is None or not (user.local or getattr(user, "elsewhere", False)):
                return
            if not user.local:
                user.link.send_tagmsg(self, user, client_tags, msgid)  # through their process
            elif "message-tags" in user.caps:
                if user is self:
                    with self.not_a_reply():
                        user.deliver(outgoing, client_tags, msgid)
                else:
                    user.deliver(outgoing, client_tags, msgid)
            if kept_tagmsg(client_tags):
                # Kept for CHATHISTORY's event playback, as the conversation's messages are.
                line = event_line(outgoing, msgid, self.clock.seconds(), client_tags)
                self.network.history.add(dm_key(irc_lower(self.nick), irc_lower(user.nick)), line,
                                         dm_owners(self, user))
        if "echo-message" in self.caps and "message-tags" in self.caps:
            self.deliver(outgoing, client_tags, msgid)


class _RefusedProtocol(protocol.Protocol):
    """Tells a refused client why (address not allowed, too many connections), then closes."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        line = format_message(Message("ERROR", (f"Closing Link: {self.reason}",)))
        self.transport.write(line.encode("utf-8") + b"\r\n")
        self.transport.loseConnection()


class IrcServerFactory(protocol.ServerFactory):
    """
    Builds L{IRCServerProtocol}s for one network, enforcing the process's network policy (the
    ``network`` section: allow-list and per-IP limit, counted together with the web's) and the
    IRC section's own C{max_connections_per_ip}.

    Args:
        policy: the shared C{NetworkPolicy} (C{allows}, C{acquire_connection},
            C{release_connection}), or None to let every address in without a shared count.
    """

    _log = Logger()
    noisy = False

    def __init__(self, network: IrcNetwork, clock: Any, policy: Any = None) -> None:
        self.network = network
        self.clock = clock
        self.policy = policy
        self.connections: Set[IRCServerProtocol] = set()

    def _refuse(self, reason: str) -> protocol.Protocol:
        refused = _RefusedProtocol(reason)
        refused.factory = self
        return refused

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        host = getattr(addr, "host", "")
        policy = self.policy
        if policy is not None and not policy.allows(host):
            self._log.info("IRC connection from {host} refused: not in the allow-list", host=host)
            policy.refused("address")
            return self._refuse("Your address is not allowed on this server")
        limit = self.network.config.max_connections_per_ip
        count = self.network.connections_per_ip.get(host, 0)
        if limit and count >= limit:
            if policy is not None:
                policy.refused("connections_per_ip")
            return self._refuse("Too many connections from your address")
        proto = _TrackedProtocol(self.network, self.clock)
        if policy is not None and not policy.acquire_connection(host, proto):
            return self._refuse("Too many connections from your address")
        proto.factory = self
        proto._counted_ip = host
        proto._policy, proto._policy_address = policy, host
        self.network.connections_per_ip[host] = count + 1
        return proto

    def close_all(self, reason: str = "Server shutting down") -> None:
        for proto in list(self.connections):
            proto.close(reason)


class _TrackedProtocol(IRCServerProtocol):
    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.factory.connections.discard(self)
        super().connectionLost(reason)
