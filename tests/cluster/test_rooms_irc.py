"""
The IRC bridge's presence across processes: the bridge on one process sees the browsers of
every process as channel members, once each, and parts them only when the last process lets
them go.
"""

from __future__ import annotations

import json

from twisted.internet import endpoints, reactor
from twisted.trial.unittest import TestCase

from tests.cluster.test_rooms import GRACE, ClusterRoomsMixin
from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.support.server import free_port

CHANNEL = "#onscreen-1"


class BridgePresenceTests(ClusterRoomsMixin, TestCase):
    timeout = 180

    async def test_browsers_of_both_processes_on_one_bridge(self) -> None:
        self.cluster = cluster = await self.start_nodes(size=2, running=0)
        # Only node 2 has an IRC listener.
        irc_port = free_port()
        config_path = self.node(2).args[1]
        with open(config_path) as f:
            config = json.load(f)
        config["irc"] = {"address": "127.0.0.1", "port": irc_port, "auth": "open",
                         "server_name": "irc.test", "network_name": "ILIAS"}
        with open(config_path, "w") as f:
            json.dump(config, f)
        for node in cluster.nodes:
            await cluster.start(node.name)
        await self.admit(1, 6, "alice", row=False)
        alice = await self.tab(1, 6, "alice")
        alice_again = await self.tab(2, 6, "alice")

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", irc_port)
        irc = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(irc.transport.loseConnection)
        await irc.register("ircer")
        irc.send(f"JOIN {CHANNEL}")
        names = await irc.wait_for("353")
        self.assertEqual(sorted(names.params[3].split()), ["alice", "ircer"])
        # A browser on node 1 entering is a JOIN on node 2's IRC; bob speaks from node 1.
        await self.admit(2, 7, "bob", row=False)
        bob = await self.tab(1, 7, "bob")
        await irc.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))
        await bob.emit("message", {"content": "hi irc", "format": {}}, 1)
        said = await irc.wait_for("PRIVMSG")
        self.assertEqual(said.params, (CHANNEL, "hi irc"))
        irc.send(f"PRIVMSG {CHANNEL} :hi browsers")
        await alice.wait_for("message", "hi browsers")
        await bob.wait_for("message", "hi browsers")

        # alice closes her tab on node 2 (the bridge's own process): node 1 still holds her.
        await alice_again.close()
        await bob.close()
        await sleep(GRACE + 3)
        parts = [m.prefix.split("!")[0] for m in irc.since("PART")]
        self.assertEqual(parts, ["bob"])
        irc.send(f"NAMES {CHANNEL}")
        names = await irc.wait_for("353")
        self.assertEqual(sorted(names.params[3].split()), ["alice", "ircer"])
