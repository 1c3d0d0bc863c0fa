"""
WHO with masks and flags, WHOWAS, LUSERS, TIME, VERSION, INFO, ADMIN and the MOTD, and CTCP
between IRC users, on a real IRC listener with raw clients and Twisted's IRCClient.
"""

from typing import Any, List

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase
from twisted.words.protocols import irc

from tests.irc.support import make_config, start_irc


class WhoTests(TestCase):
    async def test_who_star_lists_visible_users_and_hides_invisible_strangers(self) -> None:
        """``WHO *`` lists every user except invisible (+i) ones the asker shares no channel with."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        await server.registered(self, "bob")
        carol = await server.registered(self, "carol")
        carol.send("MODE carol +i")
        await carol.wait_for("MODE")
        alice.send("WHO *")
        await alice.wait_for("315")
        self.assertEqual({m.params[5] for m in alice.since("352")}, {"alice", "bob"})
        alice.send("JOIN #both")
        await alice.wait_for("366")
        carol.send("JOIN #both")
        await carol.wait_for("366")
        alice.clear()
        alice.send("WHO 0")
        end = await alice.wait_for("315")
        self.assertEqual(end.params[1], "0")
        lines = {m.params[5]: m for m in alice.since("352")}
        self.assertEqual(set(lines), {"alice", "bob", "carol"})
        self.assertEqual(lines["carol"].params[1], "#both")
        self.assertEqual(lines["bob"].params[1], "*")

    async def test_who_nick_and_host_masks(self) -> None:
        """Masks match nick, user, host, realname (case-insensitively, ``*`` and ``?``)."""
        server = await start_irc(self)
        asker = await server.registered(self, "asker")
        await server.registered(self, "Anna")
        await server.registered(self, "annika")
        await server.registered(self, "bert")
        asker.send("WHO ann*")
        await asker.wait_for("315")
        self.assertEqual({m.params[5] for m in asker.since("352")}, {"Anna", "annika"})
        asker.clear()
        asker.send("WHO b?rt")
        await asker.wait_for("315")
        self.assertEqual([m.params[5] for m in asker.since("352")], ["bert"])
        asker.clear()
        asker.send("WHO *@127.0.0.1")
        await asker.wait_for("315")
        self.assertEqual(len(asker.since("352")), 4)
        asker.clear()
        asker.send("WHO nobody*")
        end = await asker.wait_for("315")
        self.assertEqual((asker.since("352"), end.params[1]), ([], "nobody*"))

    async def test_who_channel_flags_away_oper_and_prefix(self) -> None:
        """``WHO #chan``: H or G (away), ``*`` for an operator, then @/+; ``o`` lists opers only."""
        server = await start_irc(self)
        chanop = await server.registered(self, "chanop")
        chanop.send("JOIN #flags")
        await chanop.wait_for("366")
        member = await server.registered(self, "member")
        member.send("JOIN #flags")
        await member.wait_for("366")
        member.send("AWAY :lunch")
        await member.wait_for("306")
        server.network.find_user("member").user_modes.add("o")
        chanop.send("WHO #flags")
        await chanop.wait_for("315")
        flags = {m.params[5]: m.params[6] for m in chanop.since("352")}
        self.assertEqual(flags, {"chanop": "H@", "member": "G*"})
        chanop.clear()
        chanop.send("WHO #flags o")
        await chanop.wait_for("315")
        self.assertEqual([m.params[5] for m in chanop.since("352")], ["member"])


class ServerQueryTests(TestCase):
    async def test_whowas_remembers_quits_and_nick_changes(self) -> None:
        """A nick that quit or was changed is in WHOWAS with user, host and realname; else 406."""
        server = await start_irc(self)
        asker = await server.registered(self, "asker")
        gone = await server.registered(self, "gone")
        renamed = await server.registered(self, "oldname")
        gone.send("QUIT :bye")
        await gone.closed
        renamed.send("NICK newname")
        await renamed.wait_for("NICK")
        asker.send("WHOWAS gone")
        user = await asker.wait_for("314")
        self.assertEqual(user.params[1:], ("gone", "user", "127.0.0.1", "*", "Real gone"))
        await asker.wait_for("312")
        await asker.wait_for("369")
        asker.send("WHOWAS oldname")
        self.assertEqual((await asker.wait_for("314")).params[1], "oldname")
        asker.send("WHOWAS never")
        self.assertEqual((await asker.wait_for("406")).params[1], "never")
        self.assertEqual((await asker.wait_for("369")).params[1], "never")
        asker.send("WHOWAS")
        await asker.wait_for("431")

    async def test_help_lists_the_commands_and_explains_one(self) -> None:
        """HELP (and HELPOP): 704, the command names in 705 lines, 706; HELP <command> its
        summary; an unknown subject 524."""
        server = await start_irc(self)
        asker = await server.registered(self, "asker")
        asker.send("HELP")
        start = await asker.wait_for("704")
        self.assertEqual(start.params[:2], ("asker", "*"))
        end = await asker.wait_for("706")
        listed = " ".join(m.params[2] for m in asker.since("705")).split()
        self.assertIn("PRIVMSG", listed)
        self.assertIn("CHATHISTORY", listed)
        self.assertLess(asker.messages.index(start), asker.messages.index(end))
        asker.clear()
        asker.send("HELPOP privmsg")
        start = await asker.wait_for("704")
        self.assertEqual(start.params[1], "PRIVMSG")
        self.assertTrue(start.params[2].startswith("PRIVMSG <target>"))
        self.assertEqual((await asker.wait_for("706")).params[1], "PRIVMSG")
        asker.send("HELP NOSUCHTHING")
        self.assertEqual((await asker.wait_for("524")).params[1], "NOSUCHTHING")

    async def test_lusers_at_registration_and_on_request(self) -> None:
        """251-255, 265 and 266 after 005 at registration, and for LUSERS, with the counts."""
        server = await start_irc(self)
        first = await server.registered(self, "first")
        commands = [m.command for m in first.messages]
        for numeric in ("251", "252", "253", "254", "255", "265", "266"):
            self.assertIn(numeric, commands)
        self.assertLess(commands.index("005"), commands.index("251"))
        self.assertLess(commands.index("266"), commands.index("375"))
        await server.registered(self, "second")
        first.send("JOIN #one")
        await first.wait_for("366")
        first.clear()
        first.send("LUSERS")
        await first.wait_for("266")
        replies = {m.command: m.params for m in first.messages}
        self.assertEqual(replies["251"][1], "There are 2 users and 0 invisible on 1 servers")
        self.assertEqual(replies["254"][1], "1")
        self.assertEqual(replies["255"][1], "I have 2 clients and 0 servers")
        self.assertEqual(replies["265"][1:3], ("2", "2"))

    async def test_lusers_counts_a_nick_without_user_as_unknown(self) -> None:
        """A connection that sent NICK but not USER holds its nick, yet LUSERS counts it in 253."""
        server = await start_irc(self)
        first = await server.registered(self, "first")
        pending = await server.client(self)
        pending.send("NICK pending")
        pending.send("PING sync")
        await pending.wait_for("451|PONG")
        first.clear()
        first.send("LUSERS")
        await first.wait_for("266")
        replies = {m.command: m.params for m in first.messages}
        self.assertEqual(replies["251"][1], "There are 1 users and 0 invisible on 1 servers")
        self.assertEqual(replies["253"][1], "1")
        self.assertEqual((replies["255"][1], replies["266"][1]), ("I have 1 clients and 0 servers", "1"))

    async def test_time_version_info_admin(self) -> None:
        """TIME 391, VERSION 351 then 005, INFO 371/374, ADMIN 256-259; another server is 402."""
        config = make_config(admin_location="IT services, room 42", admin_email="it@example.org")
        server = await start_irc(self, config)
        client = await server.registered(self, "asker")
        client.send("TIME")
        time = await client.wait_for("391")
        self.assertEqual(time.params[1], "irc.test")
        self.assertIn("+00:00", time.params[2])
        client.send("VERSION")
        version = await client.wait_for("351")
        self.assertTrue(version.params[1].startswith("ilchat-"))
        self.assertEqual(version.params[2], "irc.test")
        await client.wait_for("005")
        client.send("INFO")
        await client.wait_for("374")
        self.assertTrue(client.since("371"))
        client.send("ADMIN")
        admin = [await client.wait_for(n) for n in ("256", "257", "258", "259")]
        self.assertEqual(admin[1].params[1], "IT services, room 42")
        self.assertEqual(admin[3].params[1], "it@example.org")
        client.send("VERSION irc.elsewhere")
        self.assertEqual((await client.wait_for("402")).params[1], "irc.elsewhere")
        client.send("TIME irc.test")
        await client.wait_for("391")

    async def test_motd_from_config_and_without_one(self) -> None:
        """MOTD sends the configured lines (a file's, read by the config); none is 422."""
        server = await start_irc(self, make_config(motd=("Welcome, Jürgen!", "", "Ask in #help.")))
        client = await server.registered(self, "reader")
        client.clear()
        client.send("MOTD")
        await client.wait_for("376")
        self.assertEqual([m.params[1] for m in client.since("372")],
                         ["- Welcome, Jürgen!", "- ", "- Ask in #help."])
        bare = await start_irc(self, make_config(motd=()))
        other = await bare.registered(self, "other")
        self.assertTrue(other.since("422"))


class CtcpTests(TestCase):
    async def test_ctcp_between_irc_users_is_untouched(self) -> None:
        """
        Private and channel CTCP (ACTION, VERSION) reach Twisted's IRCClient as CTCP: it sees an
        action and answers the VERSION query with its CTCP reply, which arrives untouched.
        """
        server = await start_irc(self)
        alpha = await server.registered(self, "alpha")
        alpha.send("JOIN #ctcp")
        await alpha.wait_for("366")
        actions: List[Any] = []
        joined: defer.Deferred = defer.Deferred()
        got_actions: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "beta"
            versionName = "betaclient"
            versionNum = "1.0"
            versionEnv = "trial"

            def signedOn(self) -> None:
                self.join("#ctcp")

            def joined(self, channel: str) -> None:
                joined.callback(channel)

            def action(self, user: str, channel: str, data: str) -> None:
                actions.append((user.split("!")[0], channel, data))
                if len(actions) == 2:
                    got_actions.callback(None)

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        proto = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(proto.transport.loseConnection)
        await joined
        alpha.send("PRIVMSG beta :\x01ACTION private action\x01")
        alpha.send("PRIVMSG #ctcp :\x01ACTION dances\x01")
        await got_actions
        self.assertEqual(actions, [("alpha", "beta", "private action"), ("alpha", "#ctcp", "dances")])
        alpha.send("PRIVMSG beta :\x01VERSION\x01")
        reply = await alpha.wait_for("NOTICE", lambda m: m.prefix.startswith("beta!"))
        self.assertEqual(reply.params, ("alpha", "\x01VERSION betaclient:1.0:trial\x01"))
        proto.describe("alpha", "waves back")
        back = await alpha.wait_for("PRIVMSG", lambda m: m.prefix.startswith("beta!"))
        self.assertEqual(back.params, ("alpha", "\x01ACTION waves back\x01"))


class IrcPackageTests(TestCase):
    async def test_irc_package_with_a_utf8_nick_and_actions(self) -> None:
        """
        The ``irc`` package (jaraco) registers as ``Jürgen``, sends an ACTION (its ``action``
        event on the other side is a raw CTCP ACTION here) and gets one back as an action.
        """
        import time

        import irc.client
        from twisted.internet import threads

        server = await start_irc(self)
        peer = await server.registered(self, "peer")
        peer.send("JOIN #utf")
        await peer.wait_for("366")
        port = server.port.getHost().port
        actions: List[str] = []

        def run_client() -> None:
            client_reactor = irc.client.Reactor()
            connection = client_reactor.server().connect("127.0.0.1", port, "Jürgen")
            client_reactor.add_global_handler("welcome", lambda c, e: c.join("#utf"))
            client_reactor.add_global_handler(
                "join", lambda c, e: c.action("#utf", "winkt") if e.source.nick == "Jürgen" else None
            )
            client_reactor.add_global_handler("action", lambda c, e: actions.append(e.arguments[0]))
            deadline = time.monotonic() + 10
            while not actions and time.monotonic() < deadline:
                client_reactor.process_once(0.05)
            connection.quit("done")
            client_reactor.process_once(0.05)
            connection.close()

        finished = threads.deferToThread(run_client)
        action = await peer.wait_for("PRIVMSG")
        self.assertEqual(action.params, ("#utf", "\x01ACTION winkt\x01"))
        self.assertTrue(action.prefix.startswith("Jürgen!"))
        peer.send("WHOIS jürgen")
        self.assertEqual((await peer.wait_for("311")).params[1], "Jürgen")
        peer.send("PRIVMSG #utf :\x01ACTION winkt zurück\x01")
        await finished
        self.assertEqual(actions, ["winkt zurück"])
