# -*- test-case-name: tests.irc.test_operators -*-
"""
IRC operators: OPER against the operator blocks of server.cfg ``irc`` → ``operators``, then KILL
and WALLOPS (and, in bridged rooms, KICK: L{ilchat.irc.bridge.RoomBridge.irc_kick}).

A mixin of L{ilchat.irc.protocol.IRCServerProtocol}. The hashes are bcrypt, the format ircds and
``htpasswd -B`` write (ilchat already checks ILIAS's bcrypt passwords with the same library); a
check takes tens of milliseconds, so it runs in a thread, and it goes through the network's
failed-login throttle like every other password (growing delays, then a lock-out; the login
is ``oper:<name>``).
"""

from typing import Any, Optional

from twisted.internet import threads

from ilchat.irc.auth import check_bcryptphp
from ilchat.irc.message import Message
from ilchat.irc.network import mask_matches
from ilchat.irc.numerics import (
    ERR_NOOPERHOST,
    ERR_NOPRIVILEGES,
    ERR_NOSUCHNICK,
    ERR_PASSWDMISMATCH,
    RPL_YOUREOPER,
)
from ilchat.irc.queries import is_oper

__all__ = ["kill", "OperatorCommands"]


def kill(target: Any, prefix: str, by: str, reason: str) -> None:
    """Disconnect the local user C{target} for the operator C{by} (``nick!user@host`` C{prefix})."""
    target.deliver(Message("KILL", (target.nick, reason), prefix=prefix))
    target.close(f"Killed ({by} ({reason}))")


class OperatorCommands:
    """OPER, KILL and WALLOPS."""

    def _operator_block(self, name: str) -> Optional[Any]:
        """The block called C{name} whose host masks allow this connection, or None (491)."""
        for block in self.config.operators:
            if block.name != name:
                continue
            addresses = {f"{self.username or '*'}@{self.host}", f"{self.username or '*'}@{self.ip}"}
            if any(mask_matches(mask, address) for mask in block.hosts for address in addresses):
                return block
        return None

    async def irc_OPER(self, message: Message) -> None:
        name, password = message.params[0], message.params[1]
        block = self._operator_block(name)
        if block is None:
            self._log.info("OPER {name} refused for {nick} from {address}: no matching operator block",
                           name=name, nick=self.nick, address=self.ip)
            self.reply(ERR_NOOPERHOST, "No O-lines for your host")
            return

        def check(_login: str, given: str) -> Any:
            return threads.deferToThread(lambda: block if check_bcryptphp(given, block.password_hash) else None)

        right, refusal = await self._authenticate("oper:" + name, password, check)
        if self._closing:
            return
        if right is None:
            self.reply(ERR_PASSWDMISMATCH, refusal or "Password incorrect")
            return
        self.user_modes.add("o")
        self._log.info("{nick} from {address} is now IRC operator {name}",
                       nick=self.nick, address=self.ip, name=name)
        self.reply(RPL_YOUREOPER, "You are now an IRC operator")
        self.send_message(Message("MODE", (self.nick, "+o"), prefix=self.hostmask))
        self.network.user_changed(self)

    def irc_KILL(self, message: Message) -> None:
        """An operator disconnects an IRC user; browser users are kicked from their rooms instead."""
        if not is_oper(self):
            self.reply(ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
            return
        nick, reason = message.params[0], message.params[1] or "no reason"
        target = self.network.find_user(nick)
        if target is None:
            self.reply(ERR_NOSUCHNICK, nick, "No such nick/channel")
            return
        if getattr(target, "elsewhere", False):
            # An IRC user of another process: that process disconnects them.
            self._log.info("IRC operator {nick} killed {target} of {instance}: {reason}",
                           nick=self.nick, target=target.nick, instance=target.instance, reason=reason)
            target.link.kill(self, target, reason)
            return
        if not target.local:
            self.reply(ERR_NOPRIVILEGES, "A web chat user cannot be killed; KICK them from the chat room")
            return
        self._log.info("IRC operator {nick} killed {target} ({address}): {reason}",
                       nick=self.nick, target=target.nick, address=target.ip, reason=reason)
        kill(target, self.hostmask, self.nick, reason)

    def irc_WALLOPS(self, message: Message) -> None:
        """A message from an operator to every user with user mode ``+w``."""
        if not is_oper(self):
            self.reply(ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator")
            return
        wallops = Message("WALLOPS", (message.params[0],), prefix=self.hostmask)
        for user in list(self.network.users.values()):
            if user.local and "w" in user.user_modes:
                user.deliver(wallops)
