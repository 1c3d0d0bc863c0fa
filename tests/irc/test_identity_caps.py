"""
The IRCv3 capabilities of identity and presence (issue 16): ``extended-join``, ``account-tag``,
``account-notify``, ``away-notify``, ``setname``, ``userhost-in-names`` and ``cap-notify``.

Raw line clients and Twisted's IRCClient on a real loopback listener for the IRC-only cases; python-socketio browsers,
the real MariaDB and SASL against ``usr_data`` for the accounts of ILIAS and web users.
"""

from __future__ import annotations

import base64
from twisted.internet import defer, endpoints, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest
from twisted.words.protocols import irc

from ilchat.irc.network import account_token
from ilchat.irc.registration import IDENTITY_CAPS
from tests.irc.support import RawClient, start_irc
from tests.irc.test_auth import IliasUsersMixin
from tests.irc.test_bridge import CHANNEL
from tests.irc.test_bridge_messages import log_in_again_as


async def settle() -> None:
    """Let lines that should not arrive have their chance to (a round trip on loopback)."""
    await deferLater(reactor, 0.2, lambda: None)


async def joined(client: RawClient, channel: str) -> None:
    client.send(f"JOIN {channel}")
    await client.wait_for("366")


class CapListTests(unittest.TestCase):
    async def test_identity_caps_are_offered_and_cap_notify_comes_with_302(self) -> None:
        """CAP LS offers every identity cap; LS 302 turns cap-notify on (CAP LIST shows it)."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("CAP LS 302")
        offered = (await client.wait_for("CAP")).params[2].split()
        self.assertTrue(set(IDENTITY_CAPS) <= set(offered), offered)
        client.send("CAP LIST")
        listed = await client.wait_for("CAP", lambda m: m.params[1] == "LIST")
        self.assertEqual(listed.params[2].split(), ["cap-notify"])
        old = await server.client(self)
        old.send("CAP LS")
        await old.wait_for("CAP")
        old.send("CAP LIST")
        listed = await old.wait_for("CAP", lambda m: m.params[1] == "LIST")
        self.assertEqual(listed.params[2], "")

    async def test_isupport_lines_have_at_most_15_parameters(self) -> None:
        """005 is split so that no line has more than IRC's 15 parameters; NAMELEN is there."""
        server = await start_irc(self)
        client = await server.registered(self, "counter")
        lines = client.since("005")
        self.assertGreater(len(lines), 1)
        self.assertTrue(all(len(m.params) <= 15 for m in lines))
        self.assertIn("NAMELEN=200", [token for m in lines for token in m.params])


class IrcOnlyTests(unittest.TestCase):
    async def test_extended_join_without_account_is_star_and_realname(self) -> None:
        """With extended-join a JOIN carries ``*`` (no account in open mode) and the realname."""
        server = await start_irc(self)
        watcher = await server.registered(self, "watcher", caps=("extended-join",))
        plain = await server.registered(self, "plain")
        await joined(watcher, "#x")
        await joined(plain, "#x")
        join = await watcher.wait_for("JOIN", lambda m: m.prefix.startswith("plain!"))
        self.assertEqual(join.params, ("#x", "*", "Real plain"))
        own = plain.since("JOIN")[0]
        self.assertEqual(own.params, ("#x",))
        watcher.send("PRIVMSG #x :no account")
        message = await plain.wait_for("PRIVMSG")
        self.assertNotIn("account", message.tags)

    async def test_userhost_in_names(self) -> None:
        """userhost-in-names gives NAMES as ``nick!user@host`` (prefix first), others nicks."""
        server = await start_irc(self)
        full = await server.registered(self, "full", caps=("userhost-in-names",))
        short = await server.registered(self, "short")
        await joined(full, "#n")
        await joined(short, "#n")
        full.send("NAMES #n")
        names = await full.wait_for("353", lambda m: "short" in m.params[3])
        self.assertEqual(set(names.params[3].split()), {"@full!user@127.0.0.1", "short!user@127.0.0.1"})
        self.assertEqual(set(short.since("353")[0].params[3].split()), {"@full", "short"})

    async def test_away_notify_on_change_and_on_join(self) -> None:
        """
        away-notify: AWAY with the message when a peer goes away, AWAY without one when it
        comes back, and an AWAY after the JOIN of someone already away; not to others.
        """
        server = await start_irc(self)
        notified = await server.registered(self, "notified", caps=("away-notify",))
        plain = await server.registered(self, "plain")
        goer = await server.registered(self, "goer")
        for client in (notified, plain, goer):
            await joined(client, "#a")
        goer.send("AWAY :lunch")
        away = await notified.wait_for("AWAY")
        self.assertEqual((away.prefix, away.params), ("goer!user@127.0.0.1", ("lunch",)))
        goer.send("AWAY")
        back = await notified.wait_for("AWAY")
        self.assertEqual(back.params, ())
        late = await server.registered(self, "late")
        late.send("AWAY :already gone")
        await late.wait_for("306")
        await joined(late, "#a")
        join = await notified.wait_for("JOIN", lambda m: m.prefix.startswith("late!"))
        self.assertIsNotNone(join)
        after = await notified.wait_for("AWAY")
        self.assertEqual((after.prefix, after.params), ("late!user@127.0.0.1", ("already gone",)))
        await settle()
        self.assertEqual(plain.since("AWAY") + goer.since("AWAY") + late.since("AWAY"), [])

    async def test_setname_confirmed_shown_to_peers_with_the_cap_and_in_whois(self) -> None:
        """SETNAME: the sender and peers with setname see it, others not; WHOIS has the new name."""
        server = await start_irc(self)
        namer = await server.registered(self, "namer", caps=("setname",))
        peer = await server.registered(self, "peer", caps=("setname",))
        plain = await server.registered(self, "plain")
        for client in (namer, peer, plain):
            await joined(client, "#s")
        namer.send("SETNAME :New Name here")
        confirmed = await namer.wait_for("SETNAME")
        self.assertEqual(confirmed.params, ("New Name here",))
        seen = await peer.wait_for("SETNAME")
        self.assertEqual((seen.prefix, seen.params), ("namer!user@127.0.0.1", ("New Name here",)))
        plain.send("WHOIS namer")
        whois = await plain.wait_for("311")
        self.assertEqual(whois.params[5], "New Name here")
        self.assertEqual(plain.since("SETNAME"), [])

    async def test_setname_refuses_an_empty_or_long_realname(self) -> None:
        """An empty or over-long realname is ``FAIL SETNAME INVALID_REALNAME``; none is 461."""
        server = await start_irc(self)
        namer = await server.registered(self, "namer", caps=("setname",))
        namer.send("SETNAME :")
        fail = await namer.wait_for("FAIL")
        self.assertEqual(fail.params[:2], ("SETNAME", "INVALID_REALNAME"))
        namer.send("SETNAME :" + "x" * 201)
        fail = await namer.wait_for("FAIL")
        self.assertEqual(fail.params[:2], ("SETNAME", "INVALID_REALNAME"))
        namer.send("SETNAME")
        await namer.wait_for("461")
        namer.send("WHOIS namer")
        whois = await namer.wait_for("311")
        self.assertEqual(whois.params[5], "Real namer")
        self.assertEqual(namer.since("SETNAME"), [])


class TwistedClientTests(unittest.TestCase):
    async def test_twisted_ircclient_with_away_notify_and_setname(self) -> None:
        """Twisted's IRCClient, asking for away-notify and setname, gets AWAY and SETNAME lines."""
        server = await start_irc(self)
        seen: defer.Deferred = defer.Deferred()
        lines = []

        class Client(irc.IRCClient):
            nickname = "twisted"

            def connectionMade(self) -> None:
                self.sendLine("CAP LS 302")
                self.sendLine("CAP REQ :away-notify setname")
                self.sendLine("CAP END")
                super().connectionMade()

            def signedOn(self) -> None:
                self.join("#tw")

            def joined(self, channel: str) -> None:
                seen.callback(self)

            def irc_AWAY(self, prefix: str, params: list) -> None:
                lines.append(("AWAY", prefix, tuple(params)))

            def irc_SETNAME(self, prefix: str, params: list) -> None:
                lines.append(("SETNAME", prefix, tuple(params)))

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        client = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(client.transport.loseConnection)
        await seen
        other = await server.registered(self, "other", caps=("setname",))
        await joined(other, "#tw")
        other.send("AWAY :gone fishing")
        other.send("SETNAME :Other Person")
        await other.wait_for("SETNAME")
        other.send("AWAY")
        await other.wait_for("305")
        await settle()
        self.assertEqual(lines, [
            ("AWAY", "other!user@127.0.0.1", ("gone fishing",)),
            ("SETNAME", "other!user@127.0.0.1", ("Other Person",)),
            ("AWAY", "other!user@127.0.0.1", ()),
        ])


class AccountTokenTests(unittest.SynchronousTestCase):
    def test_web_names_as_accounts(self) -> None:
        """A web name is its account, spaces as ``_`` and no leading ``:``; no name is none."""
        self.assertEqual(account_token("bob"), "bob")
        self.assertEqual(account_token("Robert  Smith"), "Robert_Smith")
        self.assertEqual(account_token("jörg müller"), "jörg_müller")
        self.assertEqual(account_token(":x"), "_:x")
        self.assertEqual(account_token("*"), "_*")
        self.assertIsNone(account_token(" "))

    def test_control_characters_are_separators(self) -> None:
        """
        Control and format characters (NUL, CR/LF, IRC colours, BiDi overrides) count as spaces:
        a run of them is one ``_``; the same name always gives the same token.
        """
        self.assertEqual(account_token("Bob\x00\r\nSmith"), "Bob_Smith")
        self.assertEqual(account_token("\x02Bob\x02 \x034Smith\x0f"), "Bob_4Smith")
        self.assertEqual(account_token("evil\u202eesrever"), "evil_esrever")
        self.assertEqual(account_token("tab\tand\x7fdel"), "tab_and_del")
        self.assertIsNone(account_token("\x00\x01\u200b"))
        names = ["a\x00b", "x\x1by", "\u2028z"]
        self.assertEqual([account_token(name) for name in names], [account_token(name) for name in names])


class IliasAccountTests(IliasUsersMixin, unittest.TestCase):
    """IRC users logged in with SASL against usr_data, and browsers, in the same room."""

    async def sasl_in_room(self, login: str, caps: tuple = ()) -> RawClient:
        """Log in with SASL PLAIN as C{login} (password ``secret``), with C{caps}, and join."""
        client = await self.irc()
        client.send("CAP LS 302")
        client.send("CAP REQ :" + " ".join(("sasl",) + caps))
        await client.wait_for("CAP", lambda m: m.params[1] == "ACK")
        client.send(f"NICK {login}_irc")
        client.send(f"USER u 0 * :{login} on IRC")
        client.send("AUTHENTICATE PLAIN")
        await client.wait_for("AUTHENTICATE")
        client.send("AUTHENTICATE " + base64.b64encode(f"\0{login}\0secret".encode()).decode())
        await client.wait_for("903")
        client.send("CAP END")
        await client.wait_for("376|422")
        await joined(client, CHANNEL)
        return client

    async def test_sasl_account_in_extended_join_account_tag_and_whois(self) -> None:
        """
        An IRC user logged in as ``jdoe``: peers with extended-join see ``JOIN #c jdoe
        :realname``, with account-tag their messages carry ``account=jdoe``, WHOIS has 330.
        """
        await self.start()
        watcher = await self.sasl_in_room("other", caps=("extended-join", "account-tag"))
        jdoe = await self.sasl_in_room("jdoe")
        join = await watcher.wait_for("JOIN", lambda m: m.prefix.startswith("jdoe_irc!"))
        self.assertEqual(join.params, (CHANNEL, "jdoe", "jdoe on IRC"))
        jdoe.send(f"PRIVMSG {CHANNEL} :tagged")
        message = await watcher.wait_for("PRIVMSG")
        self.assertEqual((message.params[1], message.tags.get("account")), ("tagged", "jdoe"))
        jdoe.send("PRIVMSG other_irc :private")
        private = await watcher.wait_for("PRIVMSG")
        self.assertEqual((private.params[1], private.tags.get("account")), ("private", "jdoe"))
        watcher.send("WHOIS jdoe_irc")
        account = await watcher.wait_for("330")
        self.assertEqual(account.params[1:3], ("jdoe_irc", "jdoe"))
        await settle()
        self.assertEqual([m for m in jdoe.messages if "account" in m.tags], [])

    async def test_browser_user_account_in_extended_join_and_account_tag(self) -> None:
        """A browser user is logged in as their ILIAS name: their JOIN and messages show it."""
        await self.start()
        watcher = await self.sasl_in_room("other", caps=("extended-join", "account-tag"))
        bob = await self.enter(7, "Bob Smith")
        join = await watcher.wait_for("JOIN", lambda m: m.prefix.startswith("Bob_Smith!"))
        self.assertEqual(join.params, (CHANNEL, "Bob_Smith", "Bob Smith"))
        await bob.emit("message", {"content": "from the web", "format": {}}, 1)
        message = await watcher.wait_for("PRIVMSG")
        self.assertEqual((message.params[1], message.tags.get("account")), ("from the web", "Bob_Smith"))
        watcher.send("WHOIS Bob_Smith")
        account = await watcher.wait_for("330")
        self.assertEqual(account.params[2], "Bob_Smith")

    async def test_browser_name_with_control_characters_is_a_safe_account(self) -> None:
        """
        A browser name with IRC formatting codes, a CTCP marker and a BiDi override: the account
        in the JOIN, the ``account`` tag and WHOIS 330 is one token without them.
        """
        await self.start()
        watcher = await self.sasl_in_room("other", caps=("extended-join", "account-tag"))
        evil = await self.enter(7, "\x02Eve\x01\x034 Evil\x0f\u202e")
        join = await watcher.wait_for("JOIN", lambda m: "Eve" in m.prefix)
        self.assertEqual(join.params[1], "Eve_4_Evil")
        await evil.emit("message", {"content": "still here", "format": {}}, 1)
        message = await watcher.wait_for("PRIVMSG")
        self.assertEqual((message.params[1], message.tags.get("account")), ("still here", "Eve_4_Evil"))
        watcher.send("WHOIS " + join.prefix.split("!")[0])
        account = await watcher.wait_for("330")
        self.assertEqual(account.params[2], "Eve_4_Evil")

    async def test_browser_rename_is_account_and_setname(self) -> None:
        """
        A browser user logged in again under a new name: NICK, then SETNAME (the name) and
        ACCOUNT (its account) to IRC users with setname and account-notify; not to others.
        """
        await self.start()
        await self.enter(7, "bob")
        notified = await self.sasl_in_room("other", caps=("setname", "account-notify"))
        plain = await self.sasl_in_room("jdoe")
        await log_in_again_as(self, 7, "Robert Smith")
        nick = await notified.wait_for("NICK")
        new = nick.params[0]
        setname = await notified.wait_for("SETNAME")
        self.assertEqual((setname.prefix.split("!")[0], setname.params), (new, ("Robert Smith",)))
        account = await notified.wait_for("ACCOUNT")
        self.assertEqual(account.params, ("Robert_Smith",))
        await plain.wait_for("NICK")
        await settle()
        self.assertEqual(plain.since("SETNAME") + plain.since("ACCOUNT"), [])
