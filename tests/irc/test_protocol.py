"""
Tests for L{ilchat.irc.protocol}: registration, commands and their numerics, limits.

Real sockets on loopback, with a raw line client (tests.irc.support) for exact replies and
malformed input, and Twisted's C{IRCClient} as a real client library.
"""

from typing import Any, List

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.words.protocols import irc

from ilchat.irc.message import parse_message
from ilchat.irc.network import IrcNetwork, irc_lower, sanitise_nick, valid_nick
from ilchat.irc.protocol import IRCServerProtocol
from ilchat.irc.registration import IDENTITY_CAPS
from tests.irc.support import capture_log, log_lines, make_config, start_irc


class RegistrationTests(TestCase):
    async def test_welcome_numerics_and_isupport(self) -> None:
        """NICK and USER register: 001-005 with the ISUPPORT tokens, then the MOTD."""
        server = await start_irc(self)
        client = await server.client(self)
        await client.register("alice")
        commands = [m.command for m in client.messages]
        for numeric in ("001", "002", "003", "004", "005", "375", "372", "376"):
            self.assertIn(numeric, commands)
        isupport = " ".join(" ".join(m.params) for m in client.since("005"))
        for token in ("CHANTYPES=#", "PREFIX=(ov)@+", "CASEMAPPING=rfc8265", "UTF8ONLY", "NICKLEN=30",
                      "CHANNELLEN=64", "TOPICLEN=390", "NETWORK=TestNet", "CHANMODES="):
            self.assertIn(token, isupport)
        welcome = client.since("001")[0]
        self.assertEqual(welcome.params[0], "alice")
        self.assertIn("alice!user@127.0.0.1", welcome.params[1])

    async def test_cap_negotiation_holds_registration_until_cap_end(self) -> None:
        """After CAP LS, NICK and USER do not register until CAP END."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("CAP LS 302")
        ls = await client.wait_for("CAP")
        self.assertEqual(ls.params[1], "LS")
        self.assertEqual(set(ls.params[2].split()),
                         {"server-time", "message-tags", "echo-message", "multi-prefix", "invite-notify",
                          "batch", "labeled-response", "draft/chathistory", "draft/event-playback",
                          "draft/multiline=max-bytes=4096,max-lines=100", *IDENTITY_CAPS})
        client.send("NICK bob")
        client.send("USER bob 0 * :Bob")
        client.send("CAP REQ :server-time multi-prefix")
        ack = await client.wait_for("CAP")
        self.assertEqual(ack.params[1:], ("ACK", "server-time multi-prefix"))
        self.assertEqual(client.since("001"), [])
        client.send("CAP END")
        welcome = await client.wait_for("001")
        self.assertIn("time", welcome.tags)

    async def test_cap_req_unknown_is_nakked(self) -> None:
        """A request with an unknown capability is refused as a whole."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("CAP REQ :server-time unicorns")
        nak = await client.wait_for("CAP")
        self.assertEqual(nak.params[1], "NAK")

    async def test_commands_before_registration_get_451(self) -> None:
        """JOIN before registration is answered with ERR_NOTREGISTERED."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("JOIN #a")
        reply = await client.wait_for("451")
        self.assertEqual(reply.params[0], "*")

    async def test_erroneous_nick_432(self) -> None:
        """A nick with invalid characters or too long is refused with 432."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("NICK 1abc")
        await client.wait_for("432")
        client.send("NICK " + "a" * 31)
        await client.wait_for("432")
        client.send("NICK")
        await client.wait_for("431")

    async def test_nick_collision_433_case_insensitive(self) -> None:
        """Nicks collide under rfc8265 casemapping: Bob and bOB, Jürgen and JÜRGEN are the same."""
        server = await start_irc(self)
        await server.registered(self, "Bob")
        await server.registered(self, "Jürgen")
        client = await server.client(self)
        client.send("NICK bOB")
        reply = await client.wait_for("433")
        self.assertEqual(reply.params[1], "bOB")
        client.send("NICK JÜRGEN")
        self.assertEqual((await client.wait_for("433")).params[1], "JÜRGEN")

    async def test_user_needs_four_parameters_461_and_reregister_462(self) -> None:
        """USER with too few parameters gets 461; USER after registration gets 462."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("USER x")
        await client.wait_for("461")
        await client.register("carol")
        client.send("USER a b c :d")
        await client.wait_for("462")

    async def test_user_with_empty_realname_461(self) -> None:
        """``USER name * * :`` has no realname: 461, no registration; a proper USER then works."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("NICK dave")
        client.send_raw(b"USER dave * * :\r\n")
        reply = await client.wait_for("461")
        self.assertEqual(reply.params[1:], ("USER", "Not enough parameters"))
        client.send("USER dave * * :Dave")
        await client.wait_for("001")

    async def test_registration_timeout_closes(self) -> None:
        """A client that never registers is disconnected after registration_timeout."""
        clock = task.Clock()
        server = await start_irc(self, make_config(registration_timeout=5.0), clock=clock)
        client = await server.client(self)
        await task.deferLater(reactor, 0.05, lambda: None)
        clock.advance(6)
        error = await client.wait_for("ERROR")
        self.assertIn("Registration timed out", error.params[0])
        await client.closed

    async def test_twisted_ircclient_registers_and_joins(self) -> None:
        """Twisted's IRCClient (a real client library) registers, joins and talks."""
        server = await start_irc(self)
        peer = await server.registered(self, "peer")
        peer.send("JOIN #lib")
        await peer.wait_for("366")
        joined: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "twistedbot"

            def signedOn(self) -> None:
                self.join("#lib")

            def joined(self, channel: str) -> None:
                self.msg("#lib", "hello from IRCClient")
                joined.callback(channel)

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        proto = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(proto.transport.loseConnection)
        self.assertEqual(await joined, "#lib")
        message = await peer.wait_for("PRIVMSG")
        self.assertEqual(message.params, ("#lib", "hello from IRCClient"))
        self.assertTrue(message.prefix.startswith("twistedbot!"))


class IrcPackageClientTests(TestCase):
    async def test_irc_package_client_registers_joins_and_talks(self) -> None:
        """The ``irc`` package's client (jaraco) registers, joins, sends and receives."""
        import time

        import irc.client

        server = await start_irc(self)
        peer = await server.registered(self, "peer")
        peer.send("JOIN #pkg")
        await peer.wait_for("366")
        port = server.port.getHost().port
        received: List[str] = []

        def run_client() -> None:
            client_reactor = irc.client.Reactor()
            connection = client_reactor.server().connect("127.0.0.1", port, "jaraco")
            client_reactor.add_global_handler("welcome", lambda c, e: c.join("#pkg"))
            client_reactor.add_global_handler(
                "join", lambda c, e: c.privmsg("#pkg", "hello from jaraco") if e.source.nick == "jaraco" else None
            )
            client_reactor.add_global_handler("pubmsg", lambda c, e: received.append(e.arguments[0]))
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                client_reactor.process_once(0.05)
            connection.quit("done")
            client_reactor.process_once(0.05)
            connection.close()

        from twisted.internet import threads

        finished = threads.deferToThread(run_client)
        message = await peer.wait_for("PRIVMSG")
        self.assertEqual(message.params, ("#pkg", "hello from jaraco"))
        peer.send("PRIVMSG #pkg :hello back")
        await finished
        self.assertEqual(received, ["hello back"])


class CommandTests(TestCase):
    async def test_ping_echoes_token(self) -> None:
        """PONG carries the client's token back; PING without token gets 409."""
        server = await start_irc(self)
        client = await server.registered(self, "pinger")
        client.send("PING :abc 123")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params, ("irc.test", "abc 123"))
        client.send("PING")
        await client.wait_for("409")

    async def test_ping_works_before_registration(self) -> None:
        """Clients ping before registration to measure lag; the server answers."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("PING x")
        await client.wait_for("PONG")

    async def test_unknown_command_421(self) -> None:
        """An unknown command gets ERR_UNKNOWNCOMMAND naming it."""
        server = await start_irc(self)
        client = await server.registered(self, "dave")
        client.send("FROB x")
        reply = await client.wait_for("421")
        self.assertEqual(reply.params[1], "FROB")

    async def test_join_names_and_channel_message(self) -> None:
        """JOIN shows to members; NAMES lists the creator as op; PRIVMSG reaches the others."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        alice.send("JOIN #room")
        names = await alice.wait_for("353")
        self.assertEqual(names.params[1:], ("=", "#room", "@alice"))
        bob.send("JOIN #room")
        join = await alice.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))
        self.assertEqual(join.params, ("#room",))
        names = await bob.wait_for("353")
        self.assertEqual(names.params[3], "@alice bob")
        bob.send("PRIVMSG #room :hi all")
        message = await alice.wait_for("PRIVMSG")
        self.assertEqual(message.params, ("#room", "hi all"))
        self.assertEqual(message.prefix, "bob!user@127.0.0.1")
        self.assertEqual(bob.since("PRIVMSG"), [])

    async def test_echo_message_and_server_time(self) -> None:
        """With echo-message the sender gets its own PRIVMSG; server-time adds a time tag."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice", caps=("echo-message", "server-time"))
        alice.send("JOIN #e")
        await alice.wait_for("366")
        alice.send("PRIVMSG #e :me too")
        echo = await alice.wait_for("PRIVMSG")
        self.assertEqual(echo.params, ("#e", "me too"))
        self.assertRegex(echo.tags["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    async def test_message_tags_forwarded_only_to_capable_clients(self) -> None:
        """Client-only tags (+...) reach clients with message-tags, and nobody else."""
        server = await start_irc(self)
        tagged = await server.registered(self, "tagged", caps=("message-tags",))
        plain = await server.registered(self, "plain")
        sender = await server.registered(self, "sender")
        for client in (tagged, plain, sender):
            client.send("JOIN #t")
            await client.wait_for("366")
        sender.send("@+draft/reply=abc;other=x PRIVMSG #t :tagged")
        got = await tagged.wait_for("PRIVMSG")
        self.assertEqual(got.tags, {"+draft/reply": "abc", "msgid": got.tags["msgid"]})
        got = await plain.wait_for("PRIVMSG")
        self.assertEqual(got.tags, {})

    async def test_privmsg_errors(self) -> None:
        """411 no recipient, 412 no text, 401 no such nick, 403 no such channel, 404 +n."""
        server = await start_irc(self)
        owner = await server.registered(self, "owner")
        owner.send("JOIN #closed")
        await owner.wait_for("366")
        client = await server.registered(self, "erin")
        client.send("PRIVMSG")
        await client.wait_for("411")
        client.send("PRIVMSG nobody")
        await client.wait_for("412")
        client.send("PRIVMSG nobody :x")
        await client.wait_for("401")
        client.send("PRIVMSG #nowhere :x")
        await client.wait_for("403")
        client.send("PRIVMSG #closed :x")
        await client.wait_for("404")

    async def test_notice_never_gets_error_replies(self) -> None:
        """NOTICE to nowhere is silently dropped (RFC 2812), then PING proves the line was read."""
        server = await start_irc(self)
        client = await server.registered(self, "quiet")
        client.send("NOTICE nobody :x")
        client.send("PING done")
        await client.wait_for("PONG")
        self.assertEqual(client.since("401"), [])

    async def test_private_message_and_away(self) -> None:
        """A private PRIVMSG reaches the nick; an away target gives 301 to the sender."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        bob.send("AWAY :lunch")
        await bob.wait_for("306")
        alice.send("PRIVMSG Bob :psst")
        message = await bob.wait_for("PRIVMSG")
        self.assertEqual(message.params, ("bob", "psst"))
        away = await alice.wait_for("301")
        self.assertEqual(away.params[1:], ("bob", "lunch"))
        bob.send("AWAY")
        await bob.wait_for("305")

    async def test_part_errors_and_part(self) -> None:
        """PART: 461 without channel, 403 unknown channel, 442 not on it; a part is shown."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        alice.send("JOIN #p")
        await alice.wait_for("366")
        bob.send("PART")
        await bob.wait_for("461")
        bob.send("PART #nope")
        await bob.wait_for("403")
        bob.send("PART #p")
        await bob.wait_for("442")
        bob.send("JOIN #p")
        await bob.wait_for("366")
        bob.send("PART #p :bye")
        part = await alice.wait_for("PART")
        self.assertEqual(part.params, ("#p", "bye"))

    async def test_topic_query_set_and_operator_rule(self) -> None:
        """TOPIC: 331 when unset; ops set it under +t, others get 482; 442 off channel."""
        server = await start_irc(self)
        op = await server.registered(self, "op")
        user = await server.registered(self, "user")
        outsider = await server.registered(self, "outsider")
        op.send("JOIN #t")
        await op.wait_for("366")
        user.send("JOIN #t")
        await user.wait_for("366")
        user.send("TOPIC #t")
        await user.wait_for("331")
        user.send("TOPIC #t :mine")
        await user.wait_for("482")
        op.send("TOPIC #t :Welcome here")
        topic = await user.wait_for("TOPIC")
        self.assertEqual(topic.params, ("#t", "Welcome here"))
        outsider.send("TOPIC #t :x")
        await outsider.wait_for("442")
        outsider.send("TOPIC #t")
        reply = await outsider.wait_for("332")
        self.assertEqual(reply.params[2], "Welcome here")
        outsider.send("TOPIC")
        await outsider.wait_for("461")

    async def test_mode_query_ops_and_errors(self) -> None:
        """MODE: 324 +nt query, +o by an op, 482 for non-ops, 472 unknown, ban list end 368."""
        server = await start_irc(self)
        op = await server.registered(self, "op")
        user = await server.registered(self, "user")
        op.send("JOIN #m")
        await op.wait_for("366")
        user.send("JOIN #m")
        await user.wait_for("366")
        user.send("MODE #m")
        modes = await user.wait_for("324")
        self.assertEqual(modes.params[1:], ("#m", "+nt"))
        user.send("MODE #m b")
        await user.wait_for("368")
        user.send("MODE #m -t")
        await user.wait_for("482")
        op.send("MODE #m +o-t user")
        change = await user.wait_for("MODE")
        self.assertEqual(change.params, ("#m", "+o-t", "user"))
        op.send("MODE #m +z")
        await op.wait_for("472")
        user.send("MODE #nope")
        await user.wait_for("403")
        user.send("MODE op")
        await user.wait_for("502")
        user.send("MODE user")
        umode = await user.wait_for("221")
        self.assertEqual(umode.params[1], "+")

    async def test_multi_prefix_names(self) -> None:
        """multi-prefix shows every prefix (@+) in NAMES; without it only the highest."""
        server = await start_irc(self)
        op = await server.registered(self, "op", caps=("multi-prefix",))
        plain = await server.registered(self, "plain")
        op.send("JOIN #mp")
        await op.wait_for("366")
        plain.send("JOIN #mp")
        await plain.wait_for("366")
        op.send("MODE #mp +v op")
        await op.wait_for("MODE")
        op.send("NAMES #mp")
        names = await op.wait_for("353")
        self.assertIn("@+op", names.params[3].split())
        plain.send("NAMES #mp")
        names = await plain.wait_for("353", lambda m: "@op" in m.params[3])
        self.assertNotIn("@+op", names.params[3])

    async def test_kick_by_operator_and_errors(self) -> None:
        """KICK: 482 for non-ops, 441 unknown target, and an op's kick removes the user."""
        server = await start_irc(self)
        op = await server.registered(self, "op")
        victim = await server.registered(self, "victim")
        op.send("JOIN #k")
        await op.wait_for("366")
        victim.send("JOIN #k")
        await victim.wait_for("366")
        victim.send("KICK #k op")
        await victim.wait_for("482")
        op.send("KICK #k ghost")
        await op.wait_for("441")
        op.send("KICK #k")
        await op.wait_for("461")
        op.send("KICK #k victim :behave")
        kick = await victim.wait_for("KICK")
        self.assertEqual(kick.params, ("#k", "victim", "behave"))
        victim.send("PRIVMSG #k :still here?")
        await victim.wait_for("404")

    async def test_who_whois_list(self) -> None:
        """WHO lists members (352/315), WHOIS a user (311/319/318, 401), LIST channels (322)."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        alice.send("JOIN #w")
        await alice.wait_for("366")
        alice.send("TOPIC #w :chatting")
        await alice.wait_for("TOPIC")
        bob.send("WHO #w")
        who = await bob.wait_for("352")
        self.assertEqual(who.params[1:7], ("#w", "user", "127.0.0.1", "irc.test", "alice", "H@"))
        await bob.wait_for("315")
        bob.send("WHOIS alice")
        whois = await bob.wait_for("311")
        self.assertEqual(whois.params[1:4], ("alice", "user", "127.0.0.1"))
        channels = await bob.wait_for("319")
        self.assertEqual(channels.params[2], "@#w")
        await bob.wait_for("318")
        bob.send("WHOIS ghost")
        await bob.wait_for("401")
        bob.send("LIST")
        entry = await bob.wait_for("322")
        self.assertEqual(entry.params[1:], ("#w", "1", "chatting"))
        await bob.wait_for("323")

    async def test_nick_change_is_shown_to_channel_peers(self) -> None:
        """A NICK change goes to the user and everyone sharing a channel; the old nick is free."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        for client in (alice, bob):
            client.send("JOIN #n")
            await client.wait_for("366")
        bob.send("NICK robert")
        change = await alice.wait_for("NICK")
        self.assertEqual((change.prefix, change.params), ("bob!user@127.0.0.1", ("robert",)))
        await bob.wait_for("NICK")
        bob.send("NICK alice")
        await bob.wait_for("433")
        carol = await server.client(self)
        await carol.register("bob")

    async def test_quit_sends_error_and_shows_quit(self) -> None:
        """QUIT: the quitter gets ERROR and is closed; channel peers see QUIT with the reason."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        for client in (alice, bob):
            client.send("JOIN #q")
            await client.wait_for("366")
        bob.send("QUIT :gone fishing")
        error = await bob.wait_for("ERROR")
        self.assertIn("Quit: gone fishing", error.params[0])
        await bob.closed
        quit = await alice.wait_for("QUIT")
        self.assertEqual(quit.params, ("Quit: gone fishing",))

    async def test_join_errors(self) -> None:
        """JOIN: 461 without a channel, 403 for a bad name; JOIN 0 parts every channel."""
        server = await start_irc(self)
        client = await server.registered(self, "joiner")
        client.send("JOIN")
        await client.wait_for("461")
        client.send("JOIN nochan")
        await client.wait_for("403")
        client.send("JOIN #a,#b")
        await client.wait_for("366", lambda m: m.params[1] == "#b")
        client.send("JOIN 0")
        first = await client.wait_for("PART")
        second = await client.wait_for("PART")
        self.assertEqual({first.params[0], second.params[0]}, {"#a", "#b"})

    async def test_no_local_channels_means_403(self) -> None:
        """Without local channels only existing (bridged) channels can be joined."""
        server = await start_irc(self, make_config(local_channels=False))
        client = await server.registered(self, "joiner")
        client.send("JOIN #free")
        await client.wait_for("403")


class LimitTests(TestCase):
    async def test_lines_split_on_cr_lf_in_any_mix(self) -> None:
        """Bare LF, bare CR and CR LF all end a line; a line split across packets is whole."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send_raw(b"NICK mix\nUSER m 0 * :M\r")
        await client.wait_for("001")
        client.send_raw(b"PING a\r\nPI")
        client.send_raw(b"NG b\n")
        first = await client.wait_for("PONG")
        second = await client.wait_for("PONG")
        self.assertEqual((first.params[1], second.params[1]), ("a", "b"))

    async def test_over_long_line_is_truncated_to_512_bytes(self) -> None:
        """
        A 600-byte PRIVMSG is cut to 510 bytes plus CR LF (RFC 1459) and delivered as one line;
        the cut never splits a UTF-8 character.
        """
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        alice.send("JOIN #long")
        await alice.wait_for("366")
        bob = await server.registered(self, "bob")
        bob.send("JOIN #long")
        await bob.wait_for("366")
        head = "PRIVMSG #long :"
        bob.send_raw((head + "x" * 600).encode() + b"\r\n")
        message = await alice.wait_for("PRIVMSG")
        self.assertEqual(set(message.params[1]), {"x"})
        self.assertEqual(len(alice.raw.split(b"\r\n")[-2]), 510)  # with bob's prefix in front
        bob.send_raw((head + "é" * 300).encode() + b"\r\n")
        message = await alice.wait_for("PRIVMSG")
        self.assertTrue(set(message.params[1]) == {"é"})
        bob.send("PRIVMSG #long :short")
        message = await alice.wait_for("PRIVMSG")
        self.assertEqual(message.params[1], "short")
        self.assertEqual(bob.since("417") + alice.since("417"), [])

    async def test_relayed_text_at_the_limit_is_one_line(self) -> None:
        """A 510-byte PRIVMSG grows with the sender's prefix; it is relayed as one cut line."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        bob = await server.registered(self, "bob")
        text = " ".join(["word"] * 99)
        line = "PRIVMSG alice :" + text
        self.assertLessEqual(len(line), 510)
        bob.send(line)
        bob.send("PRIVMSG alice :next")
        first = await alice.wait_for("PRIVMSG")
        second = await alice.wait_for("PRIVMSG")
        self.assertTrue(text.startswith(first.params[1]))
        self.assertEqual(len(alice.raw.split(b"\r\n")[-3]), 510)
        self.assertEqual(second.params[1], "next")

    async def test_client_tags_over_4094_bytes_get_417(self) -> None:
        """IRCv3: clients send at most 4,094 bytes of tag data; more is 417 and the line dropped."""
        server = await start_irc(self)
        client = await server.registered(self, "tagger")
        client.send_raw(b"@+big=" + b"v" * 4089 + b" PING fits\r\n")  # 4,094 bytes of tag data
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "fits")
        client.send_raw(b"@+big=" + b"v" * 4090 + b" PING toolong\r\n")
        client.send("PING after")
        refused = await client.wait_for("417")
        self.assertEqual(refused.params[1], "Input line contained too much tag data")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "after")

    async def test_endless_line_without_newline_is_bounded(self) -> None:
        """Megabytes without a line end are never buffered; the line's first 510 bytes run."""
        server = await start_irc(self)
        client = await server.registered(self, "endless")
        client.send_raw(b"PING ")
        for _ in range(20):
            client.send_raw(b"A" * 65536)
        client.send_raw(b"\r\nPING after\r\n")
        first = await client.wait_for("PONG")
        # The line ran cut to 510 bytes; its PONG, longer by the server's name, is cut to fit.
        self.assertEqual(first.params[1], "A" * (510 - len(":irc.test PONG irc.test ")))
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "after")
        proto = next(iter(server.factory.connections))
        self.assertLess(len(proto._buffer), 10000)
        self.assertEqual(client.since("417"), [])

    async def test_endless_tags_without_newline_get_417(self) -> None:
        """Tag data that never ends is answered with 417 and thrown away up to the line end."""
        server = await start_irc(self)
        client = await server.registered(self, "endless")
        for _ in range(5):
            client.send_raw(b"@" + b"t" * 65536)
        client.send_raw(b" PING no\r\nPING after\r\n")
        await client.wait_for("417")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "after")
        self.assertEqual(len(client.since("PONG")), 1)

    async def test_tags_may_make_a_line_longer(self) -> None:
        """Up to 8191 bytes of tags are allowed on top of the 512 byte line."""
        server = await start_irc(self)
        client = await server.registered(self, "tagger")
        client.send("@+big=" + "v" * 4000 + " PING tagged")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "tagged")

    async def test_invalid_utf8_never_crashes(self) -> None:
        """Latin-1 and broken UTF-8 are decoded (Latin-1 fallback) and the connection goes on."""
        server = await start_irc(self)
        alice = await server.registered(self, "alice")
        alice.send("JOIN #u")
        await alice.wait_for("366")
        bob = await server.registered(self, "bob")
        bob.send("JOIN #u")
        await bob.wait_for("366")
        bob.send_raw(b"PRIVMSG #u :caf\xe9 \xff\xfe\r\n")
        message = await alice.wait_for("PRIVMSG")
        self.assertEqual(message.params[1], "café ÿþ")
        # UTF8ONLY: the sender is told, with the command, and no one else is.
        warning = await bob.wait_for("WARN")
        self.assertEqual(warning.params[:2], ("PRIVMSG", "INVALID_UTF8"))
        self.assertEqual(alice.since("WARN"), [])
        bob.send_raw(b"\x00\x01\x02 garbage \xc3\r\n:only-prefix\r\nPING ok\r\n")
        dropped = await bob.wait_for("400")
        self.assertEqual(dropped.params[1:], ("*", "Line dropped: it contains a NUL character"))
        await bob.wait_for("PONG")

    async def test_flood_is_throttled_then_disconnected(self) -> None:
        """Beyond the burst lines wait; when the receive queue overflows: Excess Flood."""
        server = await start_irc(self, make_config(flood_rate=1.0, flood_burst=5, recvq=2048))
        client = await server.registered(self, "flooder")
        client.send_raw(b"PING x\r\n" * 1000)
        error = await client.wait_for("ERROR")
        self.assertIn("Excess Flood", error.params[0])
        await client.closed
        self.assertLess(len(client.since("PONG")), 20)

    async def test_sendq_exceeded_disconnects_slow_reader(self) -> None:
        """A client that does not read is cut off once sendq bytes are queued for it."""
        server = await start_irc(self, make_config(sendq=4096))
        reader = await server.registered(self, "reader")
        proto = next(p for p in server.factory.connections if p.nick == "reader")
        proto.pauseProducing()  # what the TCP transport does when the peer stops reading
        writer = await server.registered(self, "writer")
        for index in range(40):
            writer.send(f"PRIVMSG reader :message number {index} " + "y" * 100)
        await reader.closed
        self.assertEqual(proto._quit_reason, "SendQ exceeded")

    async def test_max_connections_per_ip(self) -> None:
        """The connection over the per-address limit gets ERROR and is closed."""
        server = await start_irc(self, make_config(max_connections_per_ip=2))
        await server.client(self)
        await server.client(self)
        third = await server.client(self)
        error = await third.wait_for("ERROR")
        self.assertIn("Too many connections", error.params[0])
        await third.closed


class NulTests(TestCase):
    async def test_lines_with_nul_are_dropped_with_400_and_log_no_error(self) -> None:
        """
        Commands whose replies would echo a client's NUL (401, 403, 432, TAGMSG tags) get one
        400 each; no reply is attempted with the NUL, so no ERROR log line per reply.
        """
        from twisted.logger import LogLevel

        events = capture_log(self)
        server = await start_irc(self)
        client = await server.registered(self, "nul")
        peer = await server.registered(self, "peer", caps=("message-tags",))
        bad = [b"PRIVMSG no\x00body :hi", b"WHOIS a\x00b", b"JOIN #a\x00b", b"NICK a\x00b",
               b"@+typing=a\x00b TAGMSG peer", b"PRIVMSG peer :a\x00b"]
        for line in bad:
            client.send_raw(line + b"\r\n")
        client.send("PING done")
        await client.wait_for("PONG")
        self.assertEqual(len(client.since("400")), len(bad))
        self.assertEqual([m.command for m in client.messages[-len(bad) - 1:]], ["400"] * len(bad) + ["PONG"])
        self.assertEqual(peer.since("PRIVMSG") + peer.since("TAGMSG"), [])
        errors = [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
        self.assertEqual(errors, [])


class LongEchoTests(TestCase):
    async def test_reply_echoing_a_long_argument_is_cut_and_logs_no_error(self) -> None:
        """A 401 for a 490-byte target is over 512 bytes: it arrives cut, and nothing logs an ERROR."""
        from twisted.logger import LogLevel

        events = capture_log(self)
        server = await start_irc(self)
        client = await server.registered(self, "echo")
        target = "t" * 490
        client.send(f"PRIVMSG {target} :x")
        reply = await client.wait_for("401")
        self.assertTrue(target.startswith(reply.params[1]))
        self.assertEqual(len(client.raw.split(b"\r\n")[-2]), 510)
        client.send(f"PING :{'p' * 500}")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.params[1], "p" * (510 - len(":irc.test PONG irc.test ")))
        self.assertEqual([e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)], [])


class ConnectionLogTests(TestCase):
    """IRC logins, quits and kills are logged, one line each, as web logins are."""

    async def test_login_and_quit_are_logged(self) -> None:
        """Registration logs nick, id, address and transport; QUIT logs the reason."""
        events = capture_log(self)
        server = await start_irc(self)
        client = await server.registered(self, "alice")
        proto = next(iter(server.factory.connections))
        self.assertEqual(log_lines(events, "logged in to IRC"),
                         [f"alice ({proto.user_id}) logged in to IRC from 127.0.0.1 over plain TCP"])
        client.send("QUIT :see you")
        await client.closed
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(log_lines(events, "quit IRC"),
                         [f"alice ({proto.user_id}) quit IRC (127.0.0.1): Quit: see you"])

    async def test_dropped_connection_is_logged_as_a_quit(self) -> None:
        """A client that just goes away is logged once with "Connection closed"."""
        events = capture_log(self)
        server = await start_irc(self)
        client = await server.registered(self, "bob")
        client.transport.loseConnection()
        await client.closed
        await task.deferLater(reactor, 0.05, lambda: None)
        lines = log_lines(events, "quit IRC")
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].endswith("quit IRC (127.0.0.1): Connection closed"), lines[0])

    async def test_kill_by_the_server_is_logged_with_its_reason(self) -> None:
        """A ping timeout (the server closes the connection) is logged as such, not as a quit."""
        events = capture_log(self)
        clock = task.Clock()
        server = await start_irc(self, make_config(ping_interval=60.0, ping_timeout=30.0), clock=clock)
        client = await server.registered(self, "sleepy")
        clock.advance(60)
        await client.wait_for("PING")
        clock.advance(30)
        await client.closed
        await task.deferLater(reactor, 0.05, lambda: None)
        lines = log_lines(events, "disconnected from IRC by the server")
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r"^sleepy \(-\d+\) disconnected from IRC by the server \(127\.0\.0\.1\): "
                                   r"Ping timeout: 90 seconds$")
        self.assertEqual(log_lines(events, "quit IRC"), [])


class WebircTests(TestCase):
    def _config(self) -> Any:
        import ipaddress

        from ilchat.config import WebircGateway

        gateway = WebircGateway(networks=(ipaddress.ip_network("127.0.0.0/8"),), password="gw-secret")
        return make_config(webirc=(gateway,))

    async def test_webirc_from_gateway_sets_real_host(self) -> None:
        """WEBIRC with the right password from a gateway address shows the real user's host."""
        server = await start_irc(self, self._config())
        client = await server.client(self)
        client.send("WEBIRC gw-secret kiwiirc user.example.org 203.0.113.7")
        welcome = await client.register("webuser")
        del welcome
        self.assertIn("webuser!user@user.example.org", client.since("001")[0].params[1])
        proto = next(iter(server.factory.connections))
        self.assertEqual(proto.ip, "203.0.113.7")

    async def test_webirc_with_wrong_password_closes(self) -> None:
        """A wrong WEBIRC password closes the connection."""
        server = await start_irc(self, self._config())
        client = await server.client(self)
        client.send("WEBIRC wrong kiwiirc host 203.0.113.7")
        error = await client.wait_for("ERROR")
        self.assertIn("WEBIRC", error.params[0])
        await client.closed

    async def test_webirc_without_gateways_is_refused(self) -> None:
        """With no gateway configured WEBIRC is always refused."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("WEBIRC gw-secret kiwiirc host 203.0.113.7")
        await client.closed


class ServerPasswordTests(TestCase):
    """``password`` in open mode: every connection gives it with PASS before registering."""

    async def test_right_password_registers(self) -> None:
        server = await start_irc(self, make_config(password="let-me-in"))
        client = await server.client(self)
        client.send("PASS let-me-in")
        welcome = await client.register("alice")
        self.assertEqual(welcome.params[0], "alice")

    async def test_missing_or_wrong_password_is_refused_with_464(self) -> None:
        """RFC 2812 3.1.1: 464, then ERROR and the connection closed; never a 001."""
        server = await start_irc(self, make_config(password="let-me-in"))
        for lines in ([], ["PASS let-me-out"], ["PASS let-me-in-too"]):
            client = await server.client(self)
            for line in lines + ["NICK alice", "USER alice 0 * :Alice"]:
                client.send(line)
            refusal = await client.wait_for("464")
            self.assertEqual(refusal.params[0], "alice")
            error = await client.wait_for("ERROR")
            self.assertIn("Bad password", error.params[0])
            await client.closed
            self.assertEqual(client.since("001"), [])

    async def test_without_password_pass_is_ignored(self) -> None:
        """With no server password configured, a PASS is not needed and does no harm."""
        server = await start_irc(self)
        client = await server.client(self)
        client.send("PASS anything")
        welcome = await client.register("bob")
        self.assertEqual(welcome.params[0], "bob")


class ClockTests(SynchronousTestCase):
    """Timers driven by a fake clock on a StringTransport."""

    def _connect(self, **overrides: Any) -> Any:
        clock = task.Clock()
        network = IrcNetwork(make_config(**overrides), clock)
        proto = IRCServerProtocol(network, clock)
        transport = StringTransport()
        proto.makeConnection(transport)
        return clock, proto, transport

    def _lines(self, transport: StringTransport) -> List[Any]:
        return [parse_message(line.decode()) for line in transport.value().split(b"\r\n") if line]

    def test_idle_client_is_pinged_then_dropped(self) -> None:
        """After ping_interval of silence a PING goes out; without answer: Ping timeout."""
        clock, proto, transport = self._connect(ping_interval=60.0, ping_timeout=30.0)
        proto.dataReceived(b"NICK idle\r\nUSER i 0 * :I\r\n")
        transport.clear()
        clock.advance(59)
        self.assertEqual(transport.value(), b"")
        clock.advance(1)
        self.assertEqual(self._lines(transport)[-1].command, "PING")
        clock.advance(30)
        self.assertIn("Ping timeout", self._lines(transport)[-1].params[0])
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_answering_client_stays(self) -> None:
        """A client that answers the PING is pinged again later, not dropped."""
        clock, proto, transport = self._connect(ping_interval=60.0, ping_timeout=30.0)
        proto.dataReceived(b"NICK idle\r\nUSER i 0 * :I\r\n")
        clock.advance(60)
        proto.dataReceived(b"PONG irc.test\r\n")
        clock.advance(59)
        self.assertFalse(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_closing_connection_is_aborted_if_never_flushed(self) -> None:
        """A peer that does not read its ERROR is aborted after 10 s rather than kept forever."""
        clock, proto, transport = self._connect()
        proto.dataReceived(b"QUIT :bye\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(10)
        self.assertTrue(transport.disconnected)
        proto.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_over_long_line_runs_cut_to_510_bytes(self) -> None:
        """The command gets the first 510 bytes of a 600-byte line (tags not counted)."""
        clock, proto, transport = self._connect()
        seen: List[Any] = []
        proto.irc_PING = seen.append  # type: ignore[method-assign]
        proto.dataReceived(b"PING :" + b"p" * 600 + b"\r\n")
        proto.dataReceived(b"@+t=1 PING :a" + "é".encode() * 300 + b"\r\n")
        self.assertEqual(seen[0].params[0], "p" * 504)
        self.assertEqual(seen[1].params[0], "a" + "é" * 251)  # the 252nd would be cut in two
        self.assertEqual(seen[1].tags, {"+t": "1"})
        proto.connectionLost(None)

    def test_non_alphabetic_command_is_unknown(self) -> None:
        """Commands are checked before dispatch: punctuation or non-ASCII is 421, not a lookup."""
        clock, proto, transport = self._connect()
        proto.dataReceived("__CLASS__ x\r\nPRIVMSGé x\r\n".encode())
        self.assertEqual([m.command for m in self._lines(transport)], ["421", "421"])
        proto.connectionLost(None)

    def test_throttled_lines_run_as_tokens_refill(self) -> None:
        """Lines past the burst wait for tokens instead of being dropped."""
        clock, proto, transport = self._connect(flood_rate=1.0, flood_burst=2)
        proto.dataReceived(b"PING 1\r\nPING 2\r\nPING 3\r\nPING 4\r\n")
        self.assertEqual(len([m for m in self._lines(transport) if m.command == "PONG"]), 2)
        clock.advance(1)
        self.assertEqual(len([m for m in self._lines(transport) if m.command == "PONG"]), 3)
        clock.advance(1)
        self.assertEqual(len([m for m in self._lines(transport) if m.command == "PONG"]), 4)
        proto.connectionLost(None)

    def test_send_path_refuses_injected_line_break(self) -> None:
        """A parameter with CR LF is never written: no second command can be smuggled."""
        clock, proto, transport = self._connect()
        from ilchat.irc.message import Message

        transport.clear()
        proto.send_message(Message("PRIVMSG", ("x", "hi\r\nQUIT :owned")))
        self.assertEqual(transport.value(), b"")
        proto.send_text("PRIVMSG", "x", "line one\r\nQUIT :two", "a!b@c")
        self.assertEqual([m.params[1] for m in self._lines(transport)], ["line one", "QUIT :two"])
        proto.connectionLost(None)


class NameTests(SynchronousTestCase):
    def test_rfc8265_casemapping(self) -> None:
        """ASCII letters and every script fold to lower case, full-width forms to plain, in NFC."""
        self.assertEqual(irc_lower("Nick[A]\\~"), "nick[a]\\~")
        self.assertEqual(irc_lower("JÜRGEN"), "jürgen")
        self.assertEqual(irc_lower("ＡＮＮＡ"), "anna")
        self.assertEqual(irc_lower("Ju\u0308rgen"), "jürgen")
        self.assertEqual(irc_lower("ΣΟΦΙΑ"), "σοφια")

    def test_utf8_nicks(self) -> None:
        """Letters of any script are nick characters; spaces, dots, emoji and a leading digit not."""
        for nick in ("Jürgen", "Zoë", "Σοφία", "Łukasz", "山田", "nick[a]", "Anna-Maria"):
            self.assertTrue(valid_nick(nick, 30), nick)
        for nick in ("Anna Maria", "a.b", "😀", "1abc", "-x", "a,b", "a*b", "a!b", "#chan", "x" * 31,
                     "Ju\u0308rgen"):
            self.assertFalse(valid_nick(nick, 30), nick)

    def test_sanitise_nick(self) -> None:
        """Web names become valid nicks, the same nick for the same name, UTF-8 letters kept."""
        for login in ("jörg.müller", "1user", "a b", "-x", "root@example.com", "😀", "Anna Maria",
                      "名前 テスト", "x" * 40):
            self.assertTrue(valid_nick(sanitise_nick(login, 30), 30), login)
        self.assertEqual(sanitise_nick("anna", 30), "anna")
        self.assertEqual(sanitise_nick("jörg.müller", 30), "jörg_müller")
        self.assertEqual(sanitise_nick("Jürgen", 30), "Jürgen")
        self.assertEqual(sanitise_nick("Anna Maria", 30), "Anna_Maria")
        self.assertEqual(sanitise_nick("1user", 30), "_1user")
        self.assertEqual(sanitise_nick("x" * 32, 30), "x" * 30)
        emoji = sanitise_nick("😀", 30)
        self.assertTrue(emoji.startswith("user-"))
        self.assertEqual(emoji, sanitise_nick("😀", 30))
        self.assertNotEqual(emoji, sanitise_nick("🎉", 30))


class NumberParameterTests(TestCase):
    """Numbers from clients: ``²`` is a digit to str.isdigit, not a number; the command is answered."""

    async def test_digits_that_are_no_numbers(self) -> None:
        server = await start_irc(self)
        client = await server.client(self)
        client.send("CAP LS \u00b2")
        ls = await client.wait_for("CAP")
        self.assertEqual(ls.params[1], "LS")
        client.send("CAP END")
        await client.register("alice")
        for count in ("\u00b2", "--1"):
            client.send(f"WHOWAS nobody {count}")
            await client.wait_for("369")
            client.clear()
        client.send("JOIN #n")
        await client.wait_for("366")
        client.send("MODE #n +l \u00b2")
        refused = await client.wait_for("696")
        self.assertEqual(refused.params[2:4], ("l", "\u00b2"))


class SpacedEchoTests(TestCase):
    """
    A client's trailing argument may name a target with spaces; numerics that echo it in a
    middle parameter still go out (the target up to its first space, ``*`` for nothing left).
    Twisted's IRCClient is the client, as a real library sends such lines.
    """

    #: A line that names a spaced target, and the numerics it gets (their parameters after the nick).
    CASES = [
        ("WHOIS :no body", [("401", ("no", "No such nick/channel")), ("318", ("no", "End of /WHOIS list"))]),
        ("WHOWAS :no body", [("406", ("no", "There was no such nickname")), ("369", ("no", "End of WHOWAS"))]),
        ("WHO :no body", [("315", ("no", "End of /WHO list"))]),
        ("NICK :new nick", [("432", ("new", "Erroneous nickname"))]),
        ("JOIN :#a b", [("403", ("#a", "No such channel"))]),
        ("PART :#a b", [("403", ("#a", "No such channel"))]),
        ("NAMES :#a b", [("366", ("#a", "End of /NAMES list"))]),
        ("TOPIC :#a b", [("403", ("#a", "No such channel"))]),
        ("MODE :#a b", [("403", ("#a", "No such channel"))]),
        ("INVITE spaced :#a b", [("403", ("#a", "No such channel"))]),
        ("KICK #here :no body", [("441", ("no", "#here", "They aren't on that channel"))]),
        ("TIME :other server", [("402", ("other", "No such server"))]),
        ("HELP :no such topic", [("524", ("NO", "No help available on this topic"))]),
        ("CAP :bad sub", [("410", ("bad", "Invalid CAP command"))]),
        ("WHOIS ::colon", [("401", ("*", "No such nick/channel")), ("318", ("*", "End of /WHOIS list"))]),
        # Without text after a spaced target there is nothing to echo: PRIVMSG gets 412.
        ("PRIVMSG :no body", [("412", ("No text to send",))]),
    ]

    async def test_numerics_echoing_a_spaced_argument_arrive(self) -> None:
        self.maxDiff = None
        from twisted.logger import LogLevel

        events = capture_log(self)
        server = await start_irc(self)
        received: List[Any] = []
        ready: defer.Deferred = defer.Deferred()
        done: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "spaced"

            def signedOn(self) -> None:
                self.join("#here")

            def irc_RPL_ENDOFNAMES(self, prefix: str, params: List[str]) -> None:
                if not ready.called:
                    ready.callback(None)

            def handleCommand(self, command: str, prefix: str, params: List[str]) -> None:
                # IRCClient names the numerics it knows (ERR_NOSUCHNICK): back to the number.
                received.append((irc.symbolic_to_numeric.get(command, command), tuple(params)))
                if command == "PONG":
                    done.callback(None)
                super().handleCommand(command, prefix, params)

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        proto = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(proto.transport.loseConnection)
        await ready
        del received[:]
        for line, _ in self.CASES:
            proto.sendLine(line)
        proto.sendLine("PING :end")
        await done
        replies = [(command, params) for command, params in received if command.isdigit()]
        self.assertEqual(replies, [(numeric, ("spaced",) + params)
                                   for _, expected in self.CASES for numeric, params in expected])
        self.assertEqual([e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)], [])

    async def test_fail_echoing_a_spaced_argument_arrives(self) -> None:
        """A standard reply (FAIL) echoing a spaced CHATHISTORY limit goes out too."""
        server = await start_irc(self)
        client = await server.registered(self, "failing")
        client.send("CHATHISTORY LATEST #here * :ten or so")
        fail = await client.wait_for("FAIL")
        self.assertEqual(fail.params[:4], ("CHATHISTORY", "INVALID_PARAMS", "LATEST", "ten"))
