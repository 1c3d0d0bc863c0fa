# -*- test-case-name: tests.irc.test_protocol,tests.irc.test_auth -*-
"""
Registration of an IRC connection: capability negotiation (CAP, IRCv3 302), SASL PLAIN, PASS,
WEBIRC, NICK and USER, the password check in ``ilias`` auth mode (through the network's failed-login
throttle), guests (``irc`` → ``guests``: no login, no account, no nick that is an ILIAS login)
and the welcome burst (001-005, MOTD).

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}: it works on the connection's own attributes.
The command table (L{ilchat.irc.commands}) has already checked parameter counts, registration
state and re-registration (462) before these handlers run.
"""

import base64
import binascii
import hmac
import ipaddress
import math
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet import defer, task
from twisted.internet.interfaces import ISSLTransport

import ilchat
from ilchat.irc.batches import MULTILINE_MAX_BYTES, MULTILINE_MAX_LINES
from ilchat.irc.history import isupport_tokens
from ilchat.irc.channels import CHANNEL_LIMIT, KICK_LENGTH, MODES_PER_LINE
from ilchat.irc.message import MESSAGE_TARGETS, Message, decimal_number, split_text
from ilchat.irc.network import valid_nick
from ilchat.irc.numerics import (
    ERR_ALREADYREGISTERED,
    ERR_ERRONEUSNICKNAME,
    ERR_INVALIDCAPCMD,
    ERR_NEEDMOREPARAMS,
    ERR_NICKNAMEINUSE,
    ERR_NOMOTD,
    ERR_NONICKNAMEGIVEN,
    ERR_PASSWDMISMATCH,
    ERR_SASLABORTED,
    ERR_SASLALREADY,
    ERR_SASLFAIL,
    ERR_SASLTOOLONG,
    RPL_CREATED,
    RPL_ENDOFMOTD,
    RPL_ISUPPORT,
    RPL_LOGGEDIN,
    RPL_MOTD,
    RPL_MOTDSTART,
    RPL_MYINFO,
    RPL_SASLMECHS,
    RPL_SASLSUCCESS,
    RPL_WELCOME,
    RPL_YOURHOST,
)

__all__ = ["RegistrationCommands", "SUPPORTED_CAPS", "IDENTITY_CAPS", "REALNAME_LENGTH"]

_USERNAME_BAD = re.compile(r"[^A-Za-z0-9._-]")

#: The caps of message ids, batches and history (ilchat.irc.batches, ilchat.irc.history), with
#: the values CAP LS 302 shows.
HISTORY_CAPS = {
    "batch": "",
    "labeled-response": "",
    "draft/chathistory": "",
    "draft/event-playback": "",
    "draft/multiline": f"max-bytes={MULTILINE_MAX_BYTES},max-lines={MULTILINE_MAX_LINES}",
}
#: IRCv3 capabilities of who users are and whether they are there: accounts (``account-tag``,
#: ``account-notify``, ``extended-join``), away, realname changes, full masks in NAMES, and
#: ``cap-notify`` (this list never changes while the server runs, so there is never a CAP NEW).
IDENTITY_CAPS = (
    "account-notify",
    "account-tag",
    "away-notify",
    "cap-notify",
    "extended-join",
    "setname",
    "userhost-in-names",
)
#: IRCv3 capabilities this server offers (``sasl`` only when an authenticator is configured).
SUPPORTED_CAPS = (
    ("server-time", "message-tags", "echo-message", "multi-prefix", "invite-notify")
    + IDENTITY_CAPS
    + ("sasl",)
    + tuple(HISTORY_CAPS)
)
#: The longest realname (USER, SETNAME), advertised as NAMELEN.
REALNAME_LENGTH = 200

# Modes of channel members, highest first, with their NAMES prefixes.
_PREFIX = "(ov)@+"
_CHANMODES = "beI,k,l,imnst"
#: 004: user modes, channel modes, channel modes that take a parameter.
_USER_MODES = "iow"
_CHANNEL_MODES = "Ibeiklmnostv"
_PARAM_MODES = "Ibeklov"
_SASL_CHUNK = 400
_SASL_MAX = 4096
_MAX_AUTH_FAILURES = 3
_RESERVED_NICK = "Nickname is an ILIAS login: log in with SASL PLAIN to use it, or pick another"


class RegistrationCommands:
    """CAP, PASS, WEBIRC, NICK, USER, AUTHENTICATE and MOTD, and completing a registration."""

    def _init_registration(self) -> None:
        self.username: Optional[str] = None
        self.realname = ""
        self.user_id: Optional[int] = None
        self.account: Optional[str] = None
        self.account_client: Optional[str] = None
        self.signon = 0
        self._password: Optional[str] = None
        self._login_hint = ""
        self._cap_negotiating = False
        self._registering = False
        self._webirc_done = False
        self._sasl_buffer: Optional[str] = None
        self._auth_failures = 0
        self._auth_delay: Optional[defer.Deferred] = None

    def reregistering(self, command: str) -> bool:
        """Whether a registration command (PASS, USER) comes too late: 462."""
        return self.registered or (command == "USER" and self.username is not None)

    @property
    def guest(self) -> bool:
        """Whether this is a guest: registered without a login where logins are checked."""
        return self.network.authenticator is not None and self.account is None

    def _stop_registration(self) -> None:
        """The connection is gone: a delayed login answer is not waited for."""
        if self._auth_delay is not None:
            self._auth_delay.cancel()

    def _caps_offered(self, version: int) -> List[str]:
        caps = []
        for cap in SUPPORTED_CAPS:
            if cap == "sasl":
                if self.network.authenticator is None:
                    continue
                caps.append("sasl=PLAIN" if version >= 302 else "sasl")
            elif HISTORY_CAPS.get(cap) and version >= 302:
                caps.append(f"{cap}={HISTORY_CAPS[cap]}")
            else:
                caps.append(cap)
        return caps

    def irc_CAP(self, message: Message) -> Optional[defer.Deferred]:
        sub = message.params[0].upper()
        target = self.nick or "*"
        server = self.config.server_name
        if sub == "LS":
            if not self.registered:
                self._cap_negotiating = True
            version = 0
            if len(message.params) > 1 and decimal_number(message.params[1]):
                version = int(message.params[1])
            if version >= 302:
                self.caps.add("cap-notify")  # implied by CAP LS 302 (IRCv3 cap-notify)
            self.send_message(
                Message("CAP", (target, "LS", " ".join(self._caps_offered(version))), prefix=server)
            )
        elif sub == "LIST":
            self.send_message(Message("CAP", (target, "LIST", " ".join(sorted(self.caps))), prefix=server))
        elif sub == "REQ":
            if not self.registered:
                self._cap_negotiating = True
            wanted = message.params[1] if len(message.params) > 1 else ""
            names = wanted.split()
            offered = {cap.split("=")[0] for cap in self._caps_offered(302)}
            if names and all(name.lstrip("-") in offered for name in names):
                for name in names:
                    if name.startswith("-"):
                        self.caps.discard(name[1:])
                    else:
                        self.caps.add(name)
                self.send_message(Message("CAP", (target, "ACK", wanted), prefix=server))
            else:
                self.send_message(Message("CAP", (target, "NAK", wanted), prefix=server))
        elif sub == "END":
            if self._cap_negotiating:
                self._cap_negotiating = False
                return self._try_register()
        else:
            self.reply(ERR_INVALIDCAPCMD, message.params[0], "Invalid CAP command")
        return None

    def irc_PASS(self, message: Message) -> None:
        self._password = message.params[0]

    def irc_WEBIRC(self, message: Message) -> None:
        """
        ``WEBIRC password gateway hostname ip``: a trusted web gateway tells us the real user's
        address. Only from a configured gateway address, with its password (compared in
        constant time), and only once, before registration.
        """
        if self.registered or self._webirc_done:
            # Answered as a malformed WEBIRC, as it always was: only a gateway sends it.
            self.reply(ERR_NEEDMOREPARAMS, "WEBIRC", "Not enough parameters")
            return
        password, _gateway, hostname, address = message.params[:4]
        try:
            peer = ipaddress.ip_address(self.ip)
            real = ipaddress.ip_address(address)
        except ValueError:
            self.close("WEBIRC: invalid address")
            return
        for gateway in self.config.webirc:
            if any(peer in network for network in gateway.networks) and hmac.compare_digest(
                password.encode("utf-8"), gateway.password.encode("utf-8")
            ):
                self._webirc_done = True
                self.ip = str(real)
                valid = re.fullmatch(r"[A-Za-z0-9.-]+", hostname) and len(hostname) <= 63
                self.host = hostname if valid else self._safe_host(self.ip)
                self._log.info("WEBIRC from {peer} for {ip}", peer=str(peer), ip=self.ip)
                return
        self._log.warn("Refused WEBIRC from {peer}", peer=self.transport.getPeer().host)
        self.close("WEBIRC: access denied")

    def irc_NICK(self, message: Message) -> Optional[defer.Deferred]:
        if not message.params or not message.params[0]:
            self.reply(ERR_NONICKNAMEGIVEN, "No nickname given")
            return None
        nick = unicodedata.normalize("NFC", message.params[0])
        if not valid_nick(nick, self.config.nick_length):
            self.reply(ERR_ERRONEUSNICKNAME, nick, "Erroneous nickname")
            return None
        if self.nick == nick:
            return None
        # Claimed across the cluster first; the connection's next lines wait for the answer.
        return defer.ensureDeferred(self._take_nick(nick))

    async def _take_nick(self, nick: str) -> None:
        """C{nick} claimed in the cluster, then taken here (433 if held here or elsewhere)."""
        network = self.network
        if self.registered and self.guest and await network.authenticator.is_login(nick):
            self.reply(ERR_NICKNAMEINUSE, nick, _RESERVED_NICK)
            return
        if not await network.claim_cluster_nick(self, nick):
            self.reply(ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
            return
        if self._closing or self.transport is None:
            network.give_back_nick(nick)  # gone while the claim was on its way
            return
        if not self.registered:
            if not network.claim_nick(self, nick):
                self.reply(ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
                return
            self.nick = nick
            await defer.maybeDeferred(self._try_register)
            return
        if not network.change_nick(self, nick):
            self.reply(ERR_NICKNAMEINUSE, nick, "Nickname is already in use")

    def irc_USER(self, message: Message) -> Optional[defer.Deferred]:
        # The table refuses an empty realname as a missing one (modern ircdocs, irctest).
        self.username = (_USERNAME_BAD.sub("", message.params[0]) or "user")[:10]
        self._login_hint = message.params[0]
        self.realname = message.params[3][:REALNAME_LENGTH]
        return self._try_register()

    def irc_AUTHENTICATE(self, message: Message) -> Optional[defer.Deferred]:
        """SASL PLAIN (IRCv3 sasl-3.1): base64 in chunks of 400, "+" for an empty chunk."""
        if self.network.authenticator is None or "sasl" not in self.caps:
            self.reply(ERR_SASLFAIL, "SASL authentication failed")
            return None
        if self.account is not None:
            self.reply(ERR_SASLALREADY, "You have already authenticated using SASL")
            return None
        if self.registered:
            # A guest has not logged in: 907 would say it had. SASL is for registration only.
            self.reply(ERR_ALREADYREGISTERED, "You may not reregister: log in with SASL before registration")
            return None
        data = message.params[0]
        if data == "*":
            self._sasl_buffer = None
            self.reply(ERR_SASLABORTED, "SASL authentication aborted")
            return None
        if self._sasl_buffer is None:
            if data.upper() != "PLAIN":
                self.reply(RPL_SASLMECHS, "PLAIN", "are available SASL mechanisms")
                self.reply(ERR_SASLFAIL, "SASL authentication failed")
                return None
            self._sasl_buffer = ""
            self.send_message(Message("AUTHENTICATE", ("+",)))
            return None
        if data != "+":
            self._sasl_buffer += data
        if len(self._sasl_buffer) > _SASL_MAX:
            self._sasl_buffer = None
            self.reply(ERR_SASLTOOLONG, "SASL message too long")
            return None
        if len(data) == _SASL_CHUNK:
            return None
        payload, self._sasl_buffer = self._sasl_buffer, None
        try:
            decoded = base64.b64decode(payload, validate=True).decode("utf-8")
            _authzid, login, password = decoded.split("\0")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self.reply(ERR_SASLFAIL, "SASL authentication failed")
            return None
        return defer.ensureDeferred(self._sasl_check(login, password))

    async def _authenticate(
        self, login: str, password: str, check: Optional[Callable[[str, str], Any]] = None
    ) -> Tuple[Any, Optional[str]]:
        """
        Check a password through the network's failed-login throttle: with C{check(login,
        password)} (a Deferred or coroutine of an identity or None; OPER's), else against ILIAS.

        Returns:
            ``(identity, None)`` for the right password, ``(None, None)`` for a wrong one (both
            after the throttle's delay, which grows with the failures of this address and
            account), or ``(None, text)`` without checking while the throttle refuses.
        """
        throttle = self.network.login_throttle
        locked = throttle.refusal(self.ip, login)
        if locked is not None:
            seconds = math.ceil(locked)
            return None, f"Too many failed logins; try again in {seconds} second{'s' * (seconds != 1)}"
        delay = throttle.delay(self.ip, login)
        check = check or self.network.authenticator.authenticate
        identity = await check(login, password)
        if identity is None:
            throttle.failed(self.ip, login)
        else:
            throttle.succeeded(self.ip, login)
        if delay > 0 and not self._closing:
            # The answer waits, right or wrong, so that a guesser cannot stop waiting early
            # and read a quick answer as a success.
            self._auth_delay = task.deferLater(self.clock, delay, lambda: None)
            try:
                await self._auth_delay
            except defer.CancelledError:
                return None, None  # the connection is gone
            finally:
                self._auth_delay = None
        return identity, None

    async def _sasl_check(self, login: str, password: str) -> None:
        identity, refusal = await self._authenticate(login, password)
        if self._closing:
            return
        if identity is None:
            self.reply(ERR_SASLFAIL, f"SASL authentication failed: {refusal}" if refusal else "SASL authentication failed")
            self._auth_failures += 1
            if self._auth_failures >= _MAX_AUTH_FAILURES:
                self.close(refusal or "Too many failed authentication attempts")
            return
        self.account = identity.login
        self.user_id = identity.user_id
        self.account_client = identity.client
        mask = f"{self.nick or '*'}!{self.username or '*'}@{self.host}"
        self.reply(RPL_LOGGEDIN, mask, identity.login, f"You are now logged in as {identity.login}")
        self.reply(RPL_SASLSUCCESS, "SASL authentication successful")

    def _try_register(self) -> Optional[defer.Deferred]:
        if self.registered or self._registering or self._cap_negotiating:
            return None
        if self.nick is None or self.username is None:
            return None
        if self.network.authenticator is not None and self.account is None:
            if not self._password and self.config.guests:
                self._registering = True
                return defer.ensureDeferred(self._register_guest())
            if not self._password:
                self.reply(ERR_PASSWDMISMATCH, "Password required: use SASL PLAIN or PASS login:password")
                self.close("Bad password")
                return None
            login, sep, password = self._password.partition(":")
            if not sep:
                login, password = self._login_hint, self._password
            self._registering = True
            return defer.ensureDeferred(self._password_check(login, password))
        if self.config.password is not None and not hmac.compare_digest(
            (self._password or "").encode("utf-8"), self.config.password.encode("utf-8")
        ):
            # RFC 2812 3.1.1: a missing or wrong server password is refused with 464.
            self.reply(ERR_PASSWDMISMATCH, "Password incorrect")
            self.close("Bad password")
            return None
        return self._complete_registration()

    async def _password_check(self, login: str, password: str) -> None:
        identity, refusal = await self._authenticate(login, password)
        self._registering = False
        if self._closing:
            return
        if identity is None:
            self.reply(ERR_PASSWDMISMATCH, refusal or "Password incorrect")
            self.close(refusal or "Bad password")
            return
        self.account = identity.login
        self.user_id = identity.user_id
        self.account_client = identity.client
        self._complete_registration()

    async def _register_guest(self) -> None:
        """
        A client without a login in ``guests`` mode: registered without an account, unless its
        nick is an ILIAS login (433: it picks another, or logs in, and registration goes on).
        """
        nick = self.nick
        reserved = await self.network.authenticator.is_login(nick)
        self._registering = False
        if self._closing or self.registered or self.nick != nick:
            return
        if reserved:
            self.network.release_nick(self)
            self.nick = None
            self.reply(ERR_NICKNAMEINUSE, nick, _RESERVED_NICK)
            return
        self._complete_registration()

    def _complete_registration(self) -> None:
        if self.user_id is None:
            self.user_id = self.network.allocate_open_id()
        self.signon = int(self.clock.seconds())
        self.registration_done()
        config = self.config
        server = config.server_name
        version = f"ilchat-{ilchat.__version__}"
        self.reply(RPL_WELCOME, f"Welcome to the {config.network_name} Network, {self.hostmask}")
        self.reply(RPL_YOURHOST, f"Your host is {server}, running version {version}")
        created = datetime.fromtimestamp(self.network.created, tz=timezone.utc)
        self.reply(RPL_CREATED, f"This server was created {created:%Y-%m-%d %H:%M:%S} UTC")
        self.reply(RPL_MYINFO, server, version, _USER_MODES, _CHANNEL_MODES, _PARAM_MODES)
        self.send_isupport()
        secure = "TLS" if ISSLTransport.providedBy(self.transport) else "plain TCP"
        self._log.info("{who} logged in to IRC from {address} over {secure}",
                       who=self._who(), address=self.ip, secure=secure)
        self.send_lusers()
        self._send_motd()
        for hook in self.network.on_register:
            hook(self)

    def send_isupport(self) -> None:
        """005: what this server supports (after 004, and after VERSION)."""
        config = self.config
        tokens = [
            "CHANTYPES=#",
            f"PREFIX={_PREFIX}",
            "CASEMAPPING=rfc8265",
            "UTF8ONLY",
            f"NICKLEN={config.nick_length}",
            f"CHANNELLEN={config.channel_length}",
            f"TOPICLEN={config.topic_length}",
            f"NETWORK={config.network_name}",
            f"CHANMODES={_CHANMODES}",
            "EXCEPTS=e",
            "INVEX=I",
            f"CHANLIMIT=#:{CHANNEL_LIMIT}",
            f"MODES={MODES_PER_LINE}",
            f"TARGMAX=PRIVMSG:{MESSAGE_TARGETS},NOTICE:{MESSAGE_TARGETS},JOIN:,PART:,NAMES:1,WHOIS:1,KICK:1",
            "AWAYLEN=200",
            f"KICKLEN={KICK_LENGTH}",
            *isupport_tokens(config),
            f"NAMELEN={REALNAME_LENGTH}",
        ]
        # At most 13 tokens a line: with the nick and the text, the 15 parameters IRC allows.
        for start in range(0, len(tokens), 13):
            self.reply(RPL_ISUPPORT, *tokens[start:start + 13], "are supported by this server")

    def _send_motd(self) -> None:
        motd = self.config.motd
        if not motd:
            self.reply(ERR_NOMOTD, "MOTD File is missing")
            return
        self.reply(RPL_MOTDSTART, f"- {self.config.server_name} Message of the day - ")
        for line in motd:
            for piece in split_text(line, 400) or [""]:
                self.reply(RPL_MOTD, f"- {piece}")
        self.reply(RPL_ENDOFMOTD, "End of /MOTD command.")

    def irc_MOTD(self, message: Message) -> None:
        self._send_motd()

