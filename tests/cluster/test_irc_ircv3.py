"""
IRCv3 across two real ``twistd ilchat`` processes: one msgid and time for a message on every
process (channel and private), CHATHISTORY of IRC-only channels and private talks the same on
both, and TAGMSG ``+typing`` between the IRC users of the two processes and into a channel.
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial.unittest import TestCase

from tests.cluster.test_irc_network import _Clients
from tests.irc.support import RawClient
from tests.irc.test_history import batch_of

CAPS = ("draft/chathistory", "batch", "message-tags", "server-time", "echo-message")


def _seen(message: Any) -> tuple:
    """A message as a client sees it: id, time, sender, parameters."""
    return (message.tags["msgid"], message.tags["time"], message.prefix.split("!")[0], message.params)


class IrcV3AcrossProcessesTests(_Clients, TestCase):
    timeout = 180

    async def history(self, client: RawClient, *params: str) -> List[tuple]:
        client.clear()
        client.send("CHATHISTORY " + " ".join(params))
        return [_seen(m) for m in await batch_of(client)]

    async def test_msgids_history_and_typing_agree_on_both_processes(self) -> None:
        await self.start()
        alice = await self.irc("node-1", "alice", caps=CAPS)
        bob = await self.irc("node-2", "bob", caps=CAPS)
        alice.send("JOIN #v3")
        await alice.wait_for("366")
        await self.knows_channel(bob, "alice", "#v3")
        bob.send("JOIN #v3")
        await bob.wait_for("366")
        await alice.wait_for("JOIN", lambda m: m.prefix.startswith("bob!"))

        # Channel and private messages: the sender's echo and the other process's copy are one.
        seen = []
        for sender, receiver, target, text in ((alice, bob, "#v3", "one"), (bob, alice, "#v3", "two"),
                                               (alice, bob, "bob", "psst"), (bob, alice, "alice", "back")):
            sender.send(f"PRIVMSG {target} :{text}")
            echo = await sender.wait_for("PRIVMSG", lambda m, t=text: m.params[1] == t)
            copy = await receiver.wait_for("PRIVMSG", lambda m, t=text: m.params[1] == t)
            self.assertEqual(_seen(copy), _seen(echo))
            seen.append(_seen(echo))
        self.assertEqual(len({entry[0] for entry in seen}), 4)

        # CHATHISTORY: the same lines on both processes, channel and private talk.
        for client in (alice, bob):
            self.assertEqual(await self.history(client, "LATEST", "#v3", "*", "10"), seen[:2])
        self.assertEqual(await self.history(alice, "LATEST", "bob", "*", "10"), seen[2:])
        self.assertEqual(await self.history(bob, "LATEST", "alice", "*", "10"), seen[2:])
        self.assertEqual(await self.history(bob, "AFTER", "#v3", f"msgid={seen[0][0]}", "10"), seen[1:2])

        # TAGMSG +typing into the channel and to the user of the other process.
        alice.send("@+typing=active TAGMSG #v3")
        echo = await alice.wait_for("TAGMSG")
        typing = await bob.wait_for("TAGMSG")
        self.assertEqual((typing.prefix.split("!")[0], typing.params), ("alice", ("#v3",)))
        self.assertEqual((typing.tags["+typing"], typing.tags["msgid"]), ("active", echo.tags["msgid"]))
        bob.send("@+typing=paused TAGMSG alice")
        typing = await alice.wait_for("TAGMSG", lambda m: m.params == ("alice",))
        self.assertEqual((typing.prefix.split("!")[0], typing.tags["+typing"]), ("bob", "paused"))
