"""
``irc`` → ``guests``: an ``ilias`` listener that offers SASL PLAIN against the real MariaDB's
``usr_data`` and also admits clients without a login, as guests (no account, IRC-only channels,
no nick that is an ILIAS login); the users of tests.irc.test_auth (jdoe, other, password
``secret``).
"""

from __future__ import annotations

import base64
from typing import Any, List

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.irc.test_auth import IliasUsersMixin
from tests.irc.test_bridge import CHANNEL

CAPS = ("extended-join", "account-tag", "draft/chathistory", "batch", "message-tags", "server-time",
        "echo-message")


async def sasl_login(client: RawClient, nick: str, login: str, password: str, caps: tuple = CAPS) -> str:
    """CAP, NICK, USER and SASL PLAIN; the SASL answer (903 or 904), CAP not ended yet."""
    client.send("CAP LS 302")
    client.send("CAP REQ :" + " ".join(("sasl",) + caps))
    await client.wait_for("CAP", lambda m: m.params[1] == "ACK")
    client.send(f"NICK {nick}")
    client.send(f"USER u 0 * :{nick} here")
    client.send("AUTHENTICATE PLAIN")
    await client.wait_for("AUTHENTICATE")
    client.send("AUTHENTICATE " + base64.b64encode(f"\0{login}\0{password}".encode()).decode())
    return (await client.wait_for("903|904")).command


async def history_lines(client: RawClient, target: str) -> List[Any]:
    """The PRIVMSGs of CHATHISTORY LATEST C{target}."""
    client.clear()
    client.send(f"CHATHISTORY LATEST {target} * 20")
    start = await client.wait_for("BATCH", lambda m: m.params[0].startswith("+"))
    ref = start.params[0][1:]
    await client.wait_for("BATCH", lambda m: m.params[0] == "-" + ref)
    return [m for m in client.messages if m.tags.get("batch") == ref and m.command == "PRIVMSG"]


class GuestTests(IliasUsersMixin, unittest.TestCase):
    irc_settings = {"guests": True}

    async def account(self, nick: str, login: str) -> RawClient:
        client = await self.irc()
        self.assertEqual(await sasl_login(client, nick, login, "secret"), "903")
        client.send("CAP END")
        await client.wait_for("376|422")
        return client

    async def guest(self, nick: str, caps: tuple = CAPS) -> RawClient:
        client = await self.irc()
        await client.register(nick, caps=caps)
        return client

    async def join(self, client: RawClient, channel: str = "#lobby") -> None:
        client.send(f"JOIN {channel}")
        await client.wait_for("366")

    async def test_guests_and_accounts_in_one_channel(self) -> None:
        """
        A guest and two account holders in an IRC-only channel: extended-join and account-tag
        show the account of the logged-in users only; WHOIS has 330 for them alone.
        """
        await self.start()
        watcher = await self.account("watcher", "other")
        await self.join(watcher)
        visitor = await self.guest("visitor")
        await self.join(visitor)
        jdoe = await self.account("jdoe", "jdoe")
        await self.join(jdoe)
        guest_join = await watcher.wait_for("JOIN", lambda m: m.prefix.startswith("visitor!"))
        account_join = await watcher.wait_for("JOIN", lambda m: m.prefix.startswith("jdoe!"))
        self.assertEqual(guest_join.params, ("#lobby", "*", "Real visitor"))
        self.assertEqual(account_join.params, ("#lobby", "jdoe", "jdoe here"))
        visitor.send("PRIVMSG #lobby :hello from a guest")
        from_guest = await watcher.wait_for("PRIVMSG", lambda m: m.params[1] == "hello from a guest")
        jdoe.send("PRIVMSG #lobby :hello from jdoe")
        from_jdoe = await watcher.wait_for("PRIVMSG", lambda m: m.params[1] == "hello from jdoe")
        self.assertNotIn("account", from_guest.tags)
        self.assertEqual(from_jdoe.tags["account"], "jdoe")
        # The guest sees the account too: it is the sign of who is logged in.
        seen_by_guest = await visitor.wait_for("PRIVMSG", lambda m: m.params[1] == "hello from jdoe")
        self.assertEqual(seen_by_guest.tags["account"], "jdoe")
        watcher.send("WHOIS visitor")
        await watcher.wait_for("318")
        self.assertEqual(watcher.since("330"), [])
        watcher.send("WHOIS jdoe")
        account = await watcher.wait_for("330")
        self.assertEqual(account.params[1:3], ("jdoe", "jdoe"))

    async def test_wrong_password_is_904_then_the_client_may_go_on_as_a_guest(self) -> None:
        """A wrong SASL password is refused (904) and logs nobody in; CAP END makes a guest."""
        await self.start()
        client = await self.irc()
        self.assertEqual(await sasl_login(client, "trier", "jdoe", "wrong"), "904")
        self.assertEqual(client.since("900"), [])
        client.send("CAP END")
        await client.wait_for("001")
        client.send("WHOIS trier")
        await client.wait_for("318")
        self.assertEqual(client.since("330"), [])

    async def test_sasl_after_registration_is_462_for_a_guest_and_907_for_an_account(self) -> None:
        """
        AUTHENTICATE after registration: a guest has not logged in, so 907 ("already
        authenticated") would be false; it gets 462 (SASL before registration only, irctest's
        answer for servers without post-registration SASL). An account holder still gets 907.
        """
        await self.start()
        guest = await self.guest("visitor", caps=("sasl",))
        guest.send("AUTHENTICATE PLAIN")
        refused = await guest.wait_for("462|907|AUTHENTICATE")
        self.assertEqual(refused.command, "462")
        jdoe = await self.account("jdoe", "jdoe")
        jdoe.send("AUTHENTICATE PLAIN")
        self.assertEqual((await jdoe.wait_for("462|907|AUTHENTICATE")).command, "907")

    async def test_a_wrong_pass_login_is_still_refused(self) -> None:
        """A client that gives PASS login:password must have it right: 464 and closed."""
        await self.start()
        client = await self.irc()
        client.send("PASS jdoe:wrong")
        client.send("NICK someone")
        client.send("USER u 0 * :U")
        await client.wait_for("464")
        await client.closed
        self.assertEqual(client.since("001"), [])

    async def test_a_guest_cannot_take_a_login_as_nick(self) -> None:
        """
        ``jdoe`` (any case) is an ILIAS login: a guest gets 433 at registration and at NICK and
        registers under another nick; the account holder logs in under it.
        """
        await self.start()
        client = await self.irc()
        client.send("NICK JDoe")
        client.send("USER u 0 * :U")
        refused = await client.wait_for("433")
        self.assertEqual(refused.params[1], "JDoe")
        self.assertIn("ILIAS login", refused.params[2])
        self.assertEqual(client.since("001"), [])
        client.send("NICK visitor")
        await client.wait_for("001")
        client.send("NICK jdoe")
        refused = await client.wait_for("433")
        self.assertEqual(refused.params[1], "jdoe")
        client.send("NICK gone")  # an inactive account's login is one too
        await client.wait_for("433", lambda m: m.params[1] == "gone")
        client.send("NICK visitor2")
        await client.wait_for("NICK")
        jdoe = await self.account("jdoe", "jdoe")
        jdoe.send("WHOIS jdoe")
        await jdoe.wait_for("330")

    async def test_guests_stay_out_of_ilias_rooms(self) -> None:
        """A bridged room is ILIAS's: a guest gets 477, an account holder joins."""
        await self.start()
        visitor = await self.guest("visitor")
        visitor.send(f"JOIN {CHANNEL}")
        refused = await visitor.wait_for("477")
        self.assertIn("Guests", refused.params[2])
        jdoe = await self.account("jdoe", "jdoe")
        await self.join(jdoe, CHANNEL)

    async def test_chathistory_for_guests_and_accounts(self) -> None:
        """
        Both read the channel's history; a private talk of a guest and an account holder is
        theirs, and a later guest under the same nick does not read it.
        """
        await self.start()
        jdoe = await self.account("jdoe", "jdoe")
        visitor = await self.guest("visitor")
        for client in (jdoe, visitor):
            await self.join(client)
        echoes = []
        for n, client in enumerate((jdoe, visitor, jdoe, visitor)):
            client.send(f"PRIVMSG #lobby :line {n}")
            echoes.append(await client.wait_for("PRIVMSG", lambda m, n=n: m.params[1] == f"line {n}"
                                                and m.tags.get("msgid") is not None
                                                and m.prefix.split("!")[0] == ("jdoe", "visitor")[n % 2]))
            await sleep(0.003)
        expected = [(m.tags["msgid"], m.prefix.split("!")[0], m.params[1]) for m in echoes]
        for client in (jdoe, visitor):
            lines = await history_lines(client, "#lobby")
            self.assertEqual([(m.tags["msgid"], m.prefix.split("!")[0], m.params[1]) for m in lines],
                             expected)
        visitor.send("PRIVMSG jdoe :just between us")
        await jdoe.wait_for("PRIVMSG", lambda m: m.params[1] == "just between us")
        jdoe.send("PRIVMSG visitor :indeed")
        await visitor.wait_for("PRIVMSG", lambda m: m.params[1] == "indeed")
        talk = ["just between us", "indeed"]
        self.assertEqual([m.params[1] for m in await history_lines(jdoe, "visitor")], talk)
        self.assertEqual([m.params[1] for m in await history_lines(visitor, "jdoe")], talk)
        visitor.send("QUIT")
        await visitor.closed
        later = await self.guest("visitor")
        self.assertEqual(await history_lines(later, "jdoe"), [])

    async def test_twisted_ircclient_registers_as_a_guest(self) -> None:
        """Twisted's IRCClient, which knows nothing of SASL, joins an IRC-only channel as a guest."""
        from twisted.words.protocols import irc

        await self.start()
        joined: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "twisted"

            def signedOn(self) -> None:
                self.join("#lobby")

            def joined(self, channel: str) -> None:
                joined.callback(channel)

        port = self.irc_components[0].ports[0].getHost().port
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(client.transport.loseConnection)
        self.assertEqual(await joined, "#lobby")
