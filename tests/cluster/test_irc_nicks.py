"""
IRC nicks are unique across the cluster: a nick held by a user of one process is refused (433)
on another, and is free again there once that user has quit.
"""

from __future__ import annotations

from twisted.internet import endpoints, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.irc.support import RawClient
from tests.support.cluster import start_cluster
from tests.support.server import free_port


def _irc(port: int) -> dict:
    return {"irc": {"address": "127.0.0.1", "port": port, "auth": "open",
                    "server_name": "irc.test", "network_name": "ILIAS"}}


class ClusterNickTests(TestCase):
    timeout = 180

    async def connect(self, port: int) -> RawClient:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(lambda: client.transport.connected and client.transport.loseConnection())
        return client

    async def take_eventually(self, client: RawClient, nick: str, accepted: str = "NICK",
                              timeout: float = 30.0) -> None:
        """
        NICK until it is C{accepted} (NICK, or 001 for a registration): the other process
        releases the nick when its user has gone, a moment after that user's connection closed.
        """
        deadline = reactor.seconds() + timeout
        while True:
            client.send(f"NICK {nick}")
            answer = await client.wait_for(f"433|{accepted}",
                                           lambda m: m.command == accepted or m.params[1] == nick)
            if answer.command == accepted:
                return
            self.assertLess(reactor.seconds(), deadline, f"{nick} was never released")
            await deferLater(reactor, 0.1, lambda: None)

    async def test_nick_held_on_one_process_is_refused_on_the_other(self) -> None:
        ports = {"node-1": free_port(), "node-2": free_port()}
        await start_cluster(self, size=2, node_server={name: _irc(port) for name, port in ports.items()})
        first = await self.connect(ports["node-1"])
        await first.register("Alice")

        second = await self.connect(ports["node-2"])
        second.send("NICK alice")  # the same nick in another case
        refused = await second.wait_for("433")
        self.assertEqual(refused.params[1], "alice")
        second.send("NICK bob")
        second.send("USER bob 0 * :Bob")
        await second.wait_for("376|422")
        # A rename on node 2 to the held nick is refused as well; node 1's rename frees it.
        second.send("NICK ALICE")
        await second.wait_for("433", lambda m: m.params[1] == "ALICE")
        first.send("NICK carol")
        await first.wait_for("NICK", lambda m: m.params[0] == "carol")
        second.send("NICK Alice")
        await second.wait_for("NICK", lambda m: m.params[0] == "Alice")
        # carol is node 1's; once she quits, node 2 may have it.
        second.send("NICK carol")
        await second.wait_for("433", lambda m: m.params[1] == "carol")
        first.send("QUIT :bye")
        await first.closed
        await self.take_eventually(second, "carol")
        # A connection that is simply lost releases its nick too.
        third = await self.connect(ports["node-1"])
        third.send("NICK carol")
        await third.wait_for("433", lambda m: m.params[1] == "carol")
        second.transport.loseConnection()
        await second.closed
        third.send("USER carol 0 * :Carol")
        await self.take_eventually(third, "carol", accepted="001")
