"""
IRCv3 ``draft/event-playback``: the events of IRC-only channels (JOIN, PART, KICK, QUIT, NICK,
TOPIC) and TAGMSGs in CHATHISTORY, with the ids and times they were shown with, for clients
with the cap only; real clients over loopback.
"""

from __future__ import annotations

from typing import Any, List

from twisted.trial import unittest

from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient, start_irc

PLAIN = ("draft/chathistory", "batch", "message-tags", "server-time", "echo-message", "labeled-response")
EVENTS = PLAIN + ("draft/event-playback",)


def _seen(message: Any) -> tuple:
    """What a replayed line must repeat of a line as it was shown live."""
    return (message.command, message.tags["msgid"], message.tags["time"], message.prefix, message.params)


async def history_batch(client: RawClient, *params: str) -> List[Any]:
    """Every line of the batch answering C{CHATHISTORY params}."""
    client.clear()
    client.send("CHATHISTORY " + " ".join(params))
    start = await client.wait_for("BATCH", lambda m: m.params[0].startswith("+"))
    ref = start.params[0][1:]
    await client.wait_for("BATCH", lambda m: m.params[0] == "-" + ref)
    return [m for m in client.messages if m.tags.get("batch") == ref]


class EventPlaybackTests(unittest.TestCase):
    async def test_topics_and_messages_with_the_cap_messages_alone_without(self) -> None:
        """
        Ten TOPIC and PRIVMSG pairs: a client with the cap gets both back as it saw them (the
        TOPIC echo carried its msgid), for every subcommand; one without gets the messages only,
        and its limit counts messages.
        """
        server = await start_irc(self)
        bar = await server.registered(self, "bar", caps=EVENTS)
        plain = await server.registered(self, "plain", caps=PLAIN)
        bar.send("JOIN #chan")
        await bar.wait_for("366")
        plain.send("JOIN #chan")
        await plain.wait_for("366")
        await bar.wait_for("JOIN", lambda m: m.prefix.startswith("plain!"))
        shown = []
        for n in range(10):
            bar.send(f"TOPIC #chan :topic {n}")
            shown.append(await bar.wait_for("TOPIC", lambda m, n=n: m.params[1] == f"topic {n}"))
            await sleep(0.003)
            bar.send(f"PRIVMSG #chan :message {n}")
            shown.append(await bar.wait_for("PRIVMSG", lambda m, n=n: m.params[1] == f"message {n}"))
            await sleep(0.003)
        echo = [_seen(m) for m in shown]
        self.assertEqual(len({e[1] for e in echo}), 20)

        def of(lines: List[Any]) -> List[tuple]:
            return [_seen(m) for m in lines if m.command in ("TOPIC", "PRIVMSG")]

        self.assertEqual(of(await history_batch(bar, "LATEST", "#chan", "*", "40")), echo)
        self.assertEqual(of(await history_batch(bar, "LATEST", "#chan", "*", "5")), echo[-5:])
        self.assertEqual(of(await history_batch(bar, "BEFORE", "#chan", f"msgid={echo[6][1]}", "40")),
                         echo[:6])
        self.assertEqual(of(await history_batch(bar, "AFTER", "#chan", f"timestamp={echo[3][2]}", "3")),
                         echo[4:7])
        self.assertEqual(of(await history_batch(bar, "BETWEEN", "#chan", f"msgid={echo[0][1]}",
                                                f"msgid={echo[-1][1]}", "40")), echo[1:-1])
        self.assertEqual(of(await history_batch(bar, "AROUND", "#chan", f"msgid={echo[7][1]}", "3")),
                         echo[6:9])
        everything = await history_batch(bar, "LATEST", "#chan", "*", "100")
        self.assertEqual([m.command for m in everything[:2]], ["JOIN", "JOIN"])
        plain_lines = await history_batch(plain, "LATEST", "#chan", "*", "5")
        self.assertEqual([m.command for m in plain_lines], ["PRIVMSG"] * 5)
        self.assertEqual([m.params[1] for m in plain_lines], [f"message {n}" for n in range(5, 10)])

    async def test_part_kick_nick_and_quit_are_played_back(self) -> None:
        """The other membership events of a channel, each as its members saw it."""
        server = await start_irc(self)
        op = await server.registered(self, "op", caps=EVENTS)
        op.send("JOIN #chan")
        await op.wait_for("366")
        shown = []
        for nick in ("alice", "bob", "carol"):
            client = await server.registered(self, nick)
            client.send("JOIN #chan")
            shown.append(await op.wait_for("JOIN", lambda m, nick=nick: m.prefix.startswith(nick + "!")))
            setattr(self, nick, client)
        self.alice.send("PART #chan :bye")
        shown.append(await op.wait_for("PART"))
        op.send("KICK #chan bob :out")
        shown.append(await op.wait_for("KICK"))
        self.carol.send("NICK caroline")
        shown.append(await op.wait_for("NICK"))
        self.carol.send("QUIT :gone")
        shown.append(await op.wait_for("QUIT"))
        replayed = [m for m in await history_batch(op, "LATEST", "#chan", "*", "100")]
        self.assertEqual([_seen(m) for m in replayed[1:]], [_seen(m) for m in shown])
        self.assertEqual([m.command for m in replayed],
                         ["JOIN", "JOIN", "JOIN", "JOIN", "PART", "KICK", "NICK", "QUIT"])

    async def test_tagmsg_in_a_channel_and_a_conversation(self) -> None:
        """
        A TAGMSG with client tags is kept and played back with them and its msgid to a client
        with the cap (and message-tags), never to one without; typing notices are not kept.
        """
        server = await start_irc(self)
        foo = await server.registered(self, "foo", caps=EVENTS)
        bar = await server.registered(self, "bar", caps=PLAIN)
        for client in (foo, bar):
            client.send("JOIN #chan")
            await client.wait_for("366")
        for target, peer in (("#chan", bar), ("bar", bar)):
            foo.send(f"@+typing=active TAGMSG {target}")
            await peer.wait_for("TAGMSG", lambda m: "+typing" in m.tags)
            foo.send(f"@+client-only-tag-test=success;+draft/persist TAGMSG {target}")
            echo = await foo.wait_for("TAGMSG", lambda m: "+client-only-tag-test" in m.tags)
            relay = await peer.wait_for("TAGMSG", lambda m: "+client-only-tag-test" in m.tags)
            self.assertEqual(relay.tags["msgid"], echo.tags["msgid"])
            tagmsgs = [m for m in await history_batch(foo, "LATEST", target, "*", "10")
                       if m.command == "TAGMSG"]
            self.assertEqual(len(tagmsgs), 1)
            self.assertEqual((tagmsgs[0].params, tagmsgs[0].tags["msgid"],
                              tagmsgs[0].tags["+client-only-tag-test"]),
                             ((target,), echo.tags["msgid"], "success"))
            other_side = "#chan" if target == "#chan" else "foo"
            lines = await history_batch(bar, "LATEST", other_side, "*", "10")
            self.assertEqual([m for m in lines if m.command == "TAGMSG"], [])

    async def test_the_cap_is_offered(self) -> None:
        server = await start_irc(self)
        client = await server.client(self)
        client.send("CAP LS 302")
        ls = await client.wait_for("CAP")
        self.assertIn("draft/event-playback", ls.params[2].split())
