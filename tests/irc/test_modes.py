"""
Channel modes of IRC channels (i, k, l, m, n, s, t, b, e, I, o, v), INVITE with invite-notify,
and the modes of bridged rooms, on a real listener with raw clients and Twisted's IRCClient.
"""

from typing import Any

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase
from twisted.words.protocols import irc

from tests.irc.support import RawClient, start_irc


async def channel_with_op(test: Any, name: str = "#modes") -> Any:
    server = await start_irc(test)
    op = await server.registered(test, "chanop")
    op.send(f"JOIN {name}")
    await op.wait_for("366")
    return server, op


async def mode(client: RawClient, line: str) -> Any:
    client.send(line)
    return await client.wait_for("MODE")


class AdvertisedModesTests(TestCase):
    async def test_isupport_and_myinfo_name_the_implemented_modes(self) -> None:
        """005 CHANMODES=beI,k,l,imnst with EXCEPTS and INVEX; 004 user and channel modes."""
        server = await start_irc(self)
        client = await server.registered(self, "asker")
        isupport = " ".join(" ".join(m.params) for m in client.since("005"))
        for token in ("CHANMODES=beI,k,l,imnst", "EXCEPTS=e", "INVEX=I", "PREFIX=(ov)@+"):
            self.assertIn(token, isupport)
        myinfo = client.since("004")[0]
        self.assertEqual(myinfo.params[3:], ("iow", "Ibeiklmnostv", "Ibeklov"))


class ChannelModeTests(TestCase):
    async def test_key_refuses_a_join_without_it(self) -> None:
        """+k: JOIN without the key or with another is 475; with it the join works; -k lifts it."""
        server, op = await channel_with_op(self)
        changed = await mode(op, "MODE #modes +k sesame")
        self.assertEqual(changed.params, ("#modes", "+k", "sesame"))
        guest = await server.registered(self, "guest")
        guest.send("JOIN #modes")
        self.assertEqual((await guest.wait_for("475")).params[1], "#modes")
        guest.send("JOIN #modes wrong")
        await guest.wait_for("475")
        guest.send("MODE #modes")
        modes = await guest.wait_for("324")
        self.assertEqual(modes.params[2:], ("+ntk", "*"))
        guest.send("JOIN #other,#modes x,sesame")
        await guest.wait_for("366", lambda m: m.params[1] == "#modes")
        op.send("MODE #modes")
        self.assertEqual((await op.wait_for("324")).params[2:], ("+ntk", "sesame"))
        changed = await mode(op, "MODE #modes -k sesame")
        self.assertEqual(changed.params[1], "-k")
        op.send("MODE #modes +k :bad key")
        await op.wait_for("525")

    async def test_limit_refuses_joins_over_it(self) -> None:
        """+l 2: a third JOIN is 471; a limit that is not a number is 696; -l lifts it."""
        server, op = await channel_with_op(self)
        op.send("MODE #modes +l many")
        await op.wait_for("696")
        self.assertEqual((await mode(op, "MODE #modes +l 2")).params, ("#modes", "+l", "2"))
        second = await server.registered(self, "second")
        second.send("JOIN #modes")
        await second.wait_for("366")
        third = await server.registered(self, "third")
        third.send("JOIN #modes")
        await third.wait_for("471")
        await mode(op, "MODE #modes -l")
        third.send("JOIN #modes")
        await third.wait_for("366")

    async def test_invite_lets_in_despite_the_limit(self) -> None:
        """An INVITE lets one user join a full +l channel (Modern IRC); +I masks do not."""
        server, op = await channel_with_op(self)
        await mode(op, "MODE #modes +l 1")
        await mode(op, "MODE #modes +I other!*@*")
        guest = await server.registered(self, "guest")
        guest.send("JOIN #modes")
        await guest.wait_for("471")
        op.send("INVITE guest #modes")
        await op.wait_for("341")
        guest.send("JOIN #modes")
        joined = await guest.wait_for("JOIN")
        self.assertEqual(joined.params[0], "#modes")
        other = await server.registered(self, "other")
        other.send("JOIN #modes")
        await other.wait_for("471")

    async def test_invite_only_and_invite_with_invite_notify(self) -> None:
        """
        +i: JOIN is 473 until a chanop INVITEs (341; the invitee gets INVITE, chanops with
        invite-notify too); the invite is used by the join; +I masks let in without one.
        """
        server, op = await channel_with_op(self)
        watcher = await server.registered(self, "watcher", caps=("invite-notify",))
        watcher.send("JOIN #modes")
        await watcher.wait_for("366")
        await mode(op, "MODE #modes +o watcher")
        await mode(op, "MODE #modes +i")
        guest = await server.registered(self, "guest")
        guest.send("JOIN #modes")
        await guest.wait_for("473")
        outsider = await server.registered(self, "outsider")
        outsider.send("INVITE guest #modes")
        await outsider.wait_for("442")
        op.send("INVITE guest #modes")
        inviting = await op.wait_for("341")
        self.assertEqual(inviting.params[1:], ("guest", "#modes"))
        invite = await guest.wait_for("INVITE")
        self.assertEqual((invite.prefix.split("!")[0], invite.params), ("chanop", ("guest", "#modes")))
        notify = await watcher.wait_for("INVITE")
        self.assertEqual(notify.params, ("guest", "#modes"))
        guest.send("JOIN #modes")
        await guest.wait_for("366")
        op.send("INVITE guest #modes")
        await op.wait_for("443")
        guest.send("PART #modes")
        await guest.wait_for("PART")
        guest.send("JOIN #modes")
        await guest.wait_for("473")
        await mode(op, "MODE #modes +I guest!*@*")
        guest.send("JOIN #modes")
        await guest.wait_for("366")

    async def test_an_invitation_goes_with_the_nick_it_was_for(self) -> None:
        """Invited, then renamed or gone: whoever takes the nick next is not let in by it."""
        server, op = await channel_with_op(self)
        await mode(op, "MODE #modes +i")
        for leaves in ("NICK elsewhere", "QUIT :bye"):
            guest = await server.registered(self, "guest")
            op.send("INVITE guest #modes")
            await op.wait_for("341")
            guest.send(leaves)
            await guest.wait_for("NICK" if leaves.startswith("NICK") else "ERROR")
            taker = await server.registered(self, "guest")
            taker.send("JOIN #modes")
            await taker.wait_for("473")
            taker.send("QUIT")
            await taker.wait_for("ERROR")
            op.clear()

    async def test_ban_list_with_exceptions(self) -> None:
        """+b masks refuse (474) unless an +e mask matches; MODE #c b lists them (367/368)."""
        server, op = await channel_with_op(self)
        changed = await mode(op, "MODE #modes +b bad*")
        self.assertEqual(changed.params, ("#modes", "+b", "bad*!*@*"))
        bad = await server.registered(self, "badger")
        bad.send("JOIN #modes")
        await bad.wait_for("474")
        op.send("MODE #modes b")
        entry = await op.wait_for("367")
        self.assertEqual(entry.params[1:4], ("#modes", "bad*!*@*", "chanop"))
        await op.wait_for("368")
        await mode(op, "MODE #modes +e badger!*@127.0.0.1")
        op.send("MODE #modes e")
        self.assertEqual((await op.wait_for("348")).params[2], "badger!*@127.0.0.1")
        await op.wait_for("349")
        bad.send("JOIN #modes")
        await bad.wait_for("366")
        removed = await mode(op, "MODE #modes -b bad*!*@*")
        self.assertEqual(removed.params, ("#modes", "-b", "bad*!*@*"))

    async def test_moderated_secret_and_non_operators(self) -> None:
        """
        +m: only +v/+o speak (404 otherwise); +s hides the channel from LIST and WHOIS of
        outsiders; a non-operator's change is 482, an unknown letter 472.
        """
        server, op = await channel_with_op(self)
        talker = await server.registered(self, "talker")
        talker.send("JOIN #modes")
        await talker.wait_for("366")
        talker.send("MODE #modes +m")
        await talker.wait_for("482")
        changed = await mode(op, "MODE #modes +ms")
        self.assertEqual(changed.params, ("#modes", "+ms"))
        await talker.wait_for("MODE")
        talker.send("PRIVMSG #modes :can I?")
        await talker.wait_for("404")
        await mode(op, "MODE #modes +v talker")
        talker.send("PRIVMSG #modes :now I can")
        self.assertEqual((await op.wait_for("PRIVMSG")).params[1], "now I can")
        outsider = await server.registered(self, "outsider")
        outsider.send("LIST")
        await outsider.wait_for("323")
        outsider.send("LIST #modes")
        await outsider.wait_for("323")
        self.assertEqual(outsider.since("322"), [])
        op.send("LIST #modes")
        self.assertEqual((await op.wait_for("322")).params[1], "#modes")
        outsider.send("WHOIS chanop")
        await outsider.wait_for("318")
        self.assertEqual(outsider.since("319"), [])
        op.send("MODE #modes +X")
        await op.wait_for("472")

    async def test_twisted_ircclient_sees_mode_changes(self) -> None:
        """Twisted's IRCClient parses the mode changes (with their arguments) it is shown."""
        server, op = await channel_with_op(self)
        seen: defer.Deferred = defer.Deferred()
        joined: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "observer"

            def signedOn(self) -> None:
                self.join("#modes")

            def joined(self, channel: str) -> None:
                joined.callback(None)

            def modeChanged(self, user: str, channel: str, set: bool, modes: str, args: Any) -> None:
                if not seen.called:
                    seen.callback((set, modes, args))

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        proto = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(proto.transport.loseConnection)
        await joined
        op.send("MODE #modes +kl sesame 5")
        self.assertEqual(await seen, (True, "kl", ("sesame", "5")))
