"""
One IRC network over two real ``twistd ilchat`` processes sharing Redis and MariaDB: WHO,
WHOIS and NAMES list the users of both, IRC-only channels and private messages cross, a
process started later learns who is there, a killed process's users QUIT, and in a bridged
room NOTICE and CTCP reach the IRC users of the other process while browser nicks give way to
IRC nicks held elsewhere.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase
from twisted.words.protocols import irc

from tests.cluster.test_rooms import ClusterRoomsMixin
from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.support.cluster import start_cluster
from tests.support.private_redis import PrivateRedis
from tests.support.server import free_port

ROOM = "#onscreen-1"


def _irc(port: int) -> Dict[str, Any]:
    return {"irc": {"address": "127.0.0.1", "port": port, "auth": "open", "local_channels": True,
                    "server_name": "irc.test", "network_name": "ILIAS"}}


class _NoChannels:
    params = ("",)


_NO_CHANNELS = _NoChannels()


def _names(message: Any) -> List[str]:
    return sorted(message.params[3].split())


class _Clients:
    ports: Dict[str, int]

    async def start(self, running: int = 2, **options: Any) -> Any:
        """Two processes with IRC listeners (open auth, IRC-only channels); C{running} started."""
        self.ports = {"node-1": free_port(), "node-2": free_port()}
        self.cluster = await start_cluster(
            self, size=2, start=False,
            node_server={name: _irc(port) for name, port in self.ports.items()}, **options)
        for node in self.cluster.nodes[:running]:
            await self.cluster.start(node.name)
        return self.cluster

    async def eventually(self, check: Any, what: str, timeout: float = 40.0) -> Any:
        """Poll C{check()} until it is true (what crosses processes arrives a moment later)."""
        deadline = reactor.seconds() + timeout
        while not (result := check()):
            self.assertLess(reactor.seconds(), deadline, f"never: {what}")  # type: ignore[attr-defined]
            await sleep(0.1)
        return result

    async def knows_channel(self, client: RawClient, nick: str, channel: str) -> None:
        """Wait until C{client}'s process shows C{nick} in C{channel} (WHOIS)."""
        deadline = reactor.seconds() + 20
        while channel not in (await self.whois(client, nick)).get("319", _NO_CHANNELS).params[-1]:
            self.assertLess(reactor.seconds(), deadline, f"{nick} never seen in {channel}")  # type: ignore[attr-defined]
            await sleep(0.1)

    async def irc(self, node: str, nick: str, caps: tuple = ()) -> RawClient:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports[node])
        client = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(lambda: client.transport.connected and client.transport.loseConnection())  # type: ignore[attr-defined]
        await client.register(nick, caps=caps)
        return client

    async def whois(self, client: RawClient, nick: str) -> Dict[str, Any]:
        """The WHOIS reply lines by numeric."""
        client.send(f"WHOIS {nick}")
        end = await client.wait_for("318")
        index = next(i for i, m in enumerate(client.messages) if m is end)
        lines: Dict[str, Any] = {}
        for message in reversed(client.messages[:index]):
            if message.command == "318":
                break
            lines.setdefault(message.command, message)
        return lines


class IrcNetworkAcrossProcessesTests(_Clients, TestCase):
    timeout = 180

    async def test_irc_only_channel_queries_and_private_messages(self) -> None:
        await self.start()
        alice = await self.irc("node-1", "alice")
        bob = await self.irc("node-2", "bob")

        # An IRC-only channel: created on node 1 (alice is its operator), joined from node 2.
        alice.send("JOIN #foo")
        await alice.wait_for("366")
        await self.knows_channel(bob, "alice", "#foo")
        bob.send("JOIN #foo")
        self.assertEqual(_names(await bob.wait_for("353")), ["@alice", "bob"])
        await alice.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))
        alice.send("PRIVMSG #foo :hello from node 1")
        said = await bob.wait_for("PRIVMSG")
        self.assertEqual((said.prefix, said.params), ("alice!user@127.0.0.1", ("#foo", "hello from node 1")))
        bob.send("NOTICE #foo :a notice from node 2")
        noticed = await alice.wait_for("NOTICE", lambda m: m.prefix.startswith("bob!"))
        self.assertEqual(noticed.params, ("#foo", "a notice from node 2"))
        bob.send("PRIVMSG #foo :\x01ACTION waves\x01")
        action = await alice.wait_for("PRIVMSG", lambda m: m.prefix.startswith("bob!"))
        self.assertEqual(action.params, ("#foo", "\x01ACTION waves\x01"))

        # TOPIC and MODE of the operator on node 1 reach node 2 and hold there.
        alice.send("TOPIC #foo :the topic")
        topic = await bob.wait_for("TOPIC")
        self.assertEqual(topic.params, ("#foo", "the topic"))
        alice.send("MODE #foo +v bob")
        mode = await bob.wait_for("MODE")
        self.assertEqual(mode.params, ("#foo", "+v", "bob"))
        bob.send("NAMES #foo")
        self.assertEqual(_names(await bob.wait_for("353")), ["+bob", "@alice"])
        bob.send("TOPIC #foo")
        self.assertEqual((await bob.wait_for("332")).params[1:], ("#foo", "the topic"))
        bob.send("TOPIC #foo :not an op")  # +t, and bob is no operator on node 2 either
        await bob.wait_for("482")

        # WHO and WHOIS on each process list the user of the other one.
        bob.send("WHO #foo")
        await bob.wait_for("315")
        self.assertEqual(sorted(m.params[5] for m in bob.since("352")), ["alice", "bob"])
        whois = await self.whois(alice, "bob")
        self.assertEqual(whois["311"].params[1:4], ("bob", "user", "127.0.0.1"))
        self.assertEqual(whois["312"].params[2:], ("irc.test", "IRC on the ilchat process node-2"))
        self.assertIn("+#foo", whois["319"].params[2])
        self.assertIn("317", whois)
        alice.send("ISON bob carol")
        self.assertEqual((await alice.wait_for("303")).params[1], "bob")
        alice.send("LUSERS")
        self.assertEqual((await alice.wait_for("251")).params[1],
                         "There are 2 users and 0 invisible on 2 servers")
        self.assertEqual((await alice.wait_for("255")).params[1], "I have 1 clients and 1 servers")

        # Private PRIVMSG and NOTICE between the processes; AWAY is known on the other one.
        alice.send("PRIVMSG bob :psst")
        private = await bob.wait_for("PRIVMSG", lambda m: m.params[0] == "bob")
        self.assertEqual((private.prefix, private.params[1]), ("alice!user@127.0.0.1", "psst"))
        bob.send("AWAY :lunch")
        await bob.wait_for("306")
        bob.send("NOTICE alice :back later")
        back = await alice.wait_for("NOTICE", lambda m: m.params[0] == "alice")
        self.assertEqual(back.params[1], "back later")
        self.assertEqual((await self.whois(alice, "bob"))["301"].params[2], "lunch")

        # The key and +i set on node 1 keep the kicked bob out on node 2 until alice invites him.
        alice.send("MODE #foo +k sesame")
        await bob.wait_for("MODE", lambda m: m.params[1] == "+k")
        alice.send("KICK #foo bob :out")
        kick = await bob.wait_for("KICK")
        self.assertEqual(kick.params, ("#foo", "bob", "out"))
        alice.send("MODE #foo +i")
        alice.send("PRIVMSG bob :knock")  # after the MODE, from the same process
        await bob.wait_for("PRIVMSG", lambda m: m.params == ("bob", "knock"))
        bob.send("JOIN #foo sesame")
        await bob.wait_for("473")
        alice.send("INVITE bob #foo")
        invite = await bob.wait_for("INVITE")
        self.assertEqual((invite.prefix, invite.params), ("alice!user@127.0.0.1", ("bob", "#foo")))
        bob.send("JOIN #foo")
        await bob.wait_for("475")
        bob.send("JOIN #foo sesame")
        await bob.wait_for("366")
        alice.send("NICK alicia")
        renamed = await bob.wait_for("NICK")
        self.assertEqual((renamed.prefix, renamed.params), ("alice!user@127.0.0.1", ("alicia",)))
        bob.send("QUIT :done")
        quit = await alice.wait_for("QUIT")
        self.assertEqual((quit.prefix, quit.params), ("bob!user@127.0.0.1", ("Quit: done",)))
        alice.send("NAMES #foo")
        self.assertEqual(_names(await alice.wait_for("353")), ["@alicia"])

    async def test_late_process_learns_the_network_and_a_killed_one_quits(self) -> None:
        cluster = await self.start(running=1)
        alice = await self.irc("node-1", "alice")
        alice.send("JOIN #early")
        await alice.wait_for("366")
        alice.send("TOPIC #early :set before node 2 ran")
        await alice.wait_for("TOPIC")

        await cluster.start("node-2")
        bob = await self.irc("node-2", "bob")
        self.assertEqual((await self.whois(bob, "alice"))["311"].params[1], "alice")
        bob.send("JOIN #early")
        self.assertEqual((await bob.wait_for("332")).params[1:], ("#early", "set before node 2 ran"))
        self.assertEqual(_names(await bob.wait_for("353")), ["@alice", "bob"])
        await alice.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))

        # node 2 dies without a word: its user quits on node 1 once the heartbeat is gone.
        await cluster.kill("node-2")
        quit = (await self.eventually(lambda: alice.since("QUIT"), "bob's QUIT on node 1"))[0]
        self.assertEqual((quit.prefix.split("!")[0], quit.params), ("bob", ("Server gone (node-2)",)))
        whois = await self.whois(alice, "bob")
        self.assertIn("401", whois)

        # Started again under its name, node 2's new users are known; a clean stop QUITs them.
        await cluster.start("node-2")
        carol = await self.irc("node-2", "carol")
        await self.knows_channel(carol, "alice", "#early")
        carol.send("JOIN #early")
        await carol.wait_for("366")
        await alice.wait_for("JOIN", lambda m: m.prefix.startswith("carol!"))
        await cluster.stop("node-2")
        quit = (await self.eventually(lambda: alice.since("QUIT")[1:], "carol's QUIT on node 1"))[0]
        self.assertEqual((quit.prefix.split("!")[0], quit.params), ("carol", ("Server shutting down",)))

    async def test_what_happened_while_redis_was_down_is_known_once_it_is_back(self) -> None:
        redis = await PrivateRedis.start_for(self)
        cluster = await self.start(redis_port=redis.port)
        alice = await self.irc("node-1", "alice")
        bob = await self.irc("node-2", "bob")
        await self.whois(alice, "bob")
        await redis.stop()
        for node in cluster.nodes:
            await self.eventually(lambda: "cross-process delivery is degraded" in node.log_text(),
                                  f"{node.name} degraded")
        bob.send("JOIN #down")
        await bob.wait_for("366")
        bob.send("TOPIC #down :made while Redis was away")
        await bob.wait_for("TOPIC")
        carol = await self.irc("node-2", "carol")
        self.assertIn("401", await self.whois(alice, "carol"))

        await redis.start()
        await self.knows_channel(alice, "bob", "#down")
        self.assertEqual((await self.whois(alice, "carol"))["311"].params[1], "carol")
        alice.send("JOIN #down")
        self.assertEqual((await alice.wait_for("332")).params[1:], ("#down", "made while Redis was away"))
        self.assertEqual(_names(await alice.wait_for("353")), ["@bob", "alice"])
        await bob.wait_for("JOIN", lambda m: m.prefix.startswith("alice!"))
        carol.send("PRIVMSG alice :hello again")
        said = await alice.wait_for("PRIVMSG")
        self.assertEqual((said.prefix, said.params), ("carol!user@127.0.0.1", ("alice", "hello again")))


class _CtcpClient(irc.IRCClient):
    """Twisted's IRC client on node 2: answers CTCP VERSION as a client does, records NOTICEs."""

    nickname = "twisted"
    versionName = "trialclient"
    versionNum = "1.0"
    versionEnv = "trial"

    def __init__(self) -> None:
        self.joined_channel: defer.Deferred = defer.Deferred()
        self.notices: List[Any] = []
        self.noticed_once: defer.Deferred = defer.Deferred()

    def signedOn(self) -> None:  # noqa: N802 (twisted API)
        self.join(ROOM)

    def joined(self, channel: str) -> None:
        self.joined_channel.callback(channel)

    def noticed(self, user: str, channel: str, message: str) -> None:
        self.notices.append((user.split("!")[0], channel, message))
        if not self.noticed_once.called:
            self.noticed_once.callback(None)


class BridgedMixin(_Clients, ClusterRoomsMixin):
    async def start_bridged(self, **options: Any) -> Any:
        """
        Two processes with the rooms of L{ClusterRoomsMixin} and IRC listeners, started
        (C{options} as for L{start_cluster}).
        """
        self.cluster = cluster = await self.start_nodes(size=2, running=0, **options)
        self.ports = {"node-1": free_port(), "node-2": free_port()}
        for node in cluster.nodes:
            with open(node.args[1]) as f:
                config = json.load(f)
            config.update(_irc(self.ports[node.name]))
            with open(node.args[1], "w") as f:
                json.dump(config, f)
            await cluster.start(node.name)
        return cluster


class BridgedRoomAcrossProcessesTests(BridgedMixin, TestCase):
    timeout = 180

    async def test_irc_users_of_both_processes_in_a_room(self) -> None:
        await self.start_bridged()
        await self.admit(1, 6, "alice", row=False)
        alice = await self.tab(1, 6, "alice")

        ircer = await self.irc("node-2", "ircer")
        ircer.send(f"JOIN {ROOM}")
        await ircer.wait_for("366")
        other = await self.irc("node-1", "other")
        await self.knows_channel(other, "ircer", ROOM)
        other.send(f"JOIN {ROOM}")
        self.assertEqual(_names(await other.wait_for("353")), ["alice", "ircer", "other"])
        await ircer.wait_for("JOIN", lambda m: m.prefix == "other!user@127.0.0.1")
        # The IRC user of node 1 is an IRC user on node 2, not a browser user.
        whois = await self.whois(ircer, "other")
        self.assertEqual(whois["312"].params[2:], ("irc.test", "IRC on the ilchat process node-1"))
        other.send(f"PRIVMSG {ROOM} :hello room")
        said = await ircer.wait_for("PRIVMSG")
        self.assertEqual((said.prefix, said.params), ("other!user@127.0.0.1", (ROOM, "hello room")))
        await alice.wait_for("message", "hello room")

        # NOTICE and CTCP in the room reach the IRC users of the other process as such.
        other.send(f"NOTICE {ROOM} :an IRC notice")
        notice = await ircer.wait_for("NOTICE", lambda m: m.prefix.startswith("other!"))
        self.assertEqual(notice.params, (ROOM, "an IRC notice"))
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.ports["node-2"])
        client = await endpoints.connectProtocol(endpoint, _CtcpClient())
        self.addCleanup(client.transport.loseConnection)
        await client.joined_channel
        await other.wait_for("JOIN", lambda m: m.prefix.startswith("twisted!"))
        other.send(f"PRIVMSG {ROOM} :\x01VERSION\x01")
        # Twisted's client answers the channel CTCP with a private NOTICE, back to node 1.
        reply = await other.wait_for("NOTICE", lambda m: m.prefix.startswith("twisted!"))
        self.assertEqual(reply.params, ("other", "\x01VERSION trialclient:1.0:trial\x01"))
        other.send(f"NOTICE {ROOM} :for the twisted client")
        await client.noticed_once
        self.assertEqual(client.notices[0], ("other", ROOM, "for the twisted client"))

        # A browser nick is not an IRC nick to be had on the other process, and a browser
        # user whose name an IRC user of the other process holds gets another nick.
        ircer.send("NICK alice")
        await ircer.wait_for("433", lambda m: m.params[1] == "alice")
        await self.admit(1, 7, "ircer", row=False)
        await self.tab(1, 7, "ircer")
        joined = await other.wait_for("JOIN", lambda m: m.prefix.startswith("ircer_"))
        nick = joined.prefix.split("!")[0]
        seen = await ircer.wait_for("JOIN", lambda m: m.prefix.startswith("ircer_"))
        self.assertEqual(seen.prefix.split("!")[0], nick)
        other.send(f"NAMES {ROOM}")
        self.assertEqual(_names(await other.wait_for("353")),
                         sorted(["alice", "ircer", nick, "other", "twisted"]))

        # Two browser users whose names make one nick, on different processes: the lower id
        # keeps it on both, whichever came first; the other is renamed.
        await self.admit(2, 10, "jörg müller", row=False)
        await self.tab(2, 10, "jörg müller")
        await other.wait_for("JOIN", lambda m: m.prefix.startswith("jörg_müller!"))
        await self.admit(1, 9, "jörg.müller", row=False)
        await self.tab(1, 9, "jörg.müller")
        for client in (other, ircer):
            renamed = await client.wait_for("NICK", lambda m: m.prefix.startswith("jörg_müller!"))
            self.assertEqual(renamed.params, ("jörg_müller_2",))
            await client.wait_for("JOIN", lambda m: m.prefix.startswith("jörg_müller!"))
            client.send(f"NAMES {ROOM}")
            self.assertEqual(_names(await client.wait_for("353")),
                             sorted(["alice", "ircer", nick, "other", "twisted", "jörg_müller",
                                     "jörg_müller_2"]))
        whois = await self.whois(ircer, "jörg_müller")
        self.assertEqual(whois["311"].params[5], "jörg.müller")
