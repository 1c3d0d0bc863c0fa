"""
Issue 16 audit, bridged rooms: what the other bridged tests assert less of. UTF-8 text and CTCP
ACTION both ways with Twisted's IRCClient; the JOIN playback is a ``chathistory`` batch
of ``history_on_join`` lines (none by default); an operator's KICK takes a browser member out
of the room in all its tabs and every userlist; a live ILIAS ban is a KICK and a ``+b`` mask;
web names that are no nicks. python-socketio browsers, the real MariaDB.
"""

from __future__ import annotations

import json
import re
from typing import Any, List, Tuple

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest
from twisted.words.protocols import irc

from ilchat.irc.history import parse_timestamp
from tests.ilias.repository_support import sleep
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, irc_id_in, userlist_with, wait_until_rows
from tests.irc.test_history import rows_count
from tests.irc.test_operators import HASH
from tests.support.db import insert_rows_async


class RecordingClient(irc.IRCClient):
    """Twisted's IRC client in a channel; what it gets is recorded as (kind, user, channel, text)."""

    def __init__(self, nick: str, channel: str) -> None:
        self.nickname = nick
        self.realname = "Twisted " + nick
        self.channel = channel
        self.got: List[Tuple[str, str, str, str]] = []
        self.in_channel: defer.Deferred = defer.Deferred()
        self._waiters: List[Any] = []

    def signedOn(self) -> None:
        self.join(self.channel)

    def joined(self, channel: str) -> None:
        self.in_channel.callback(channel)

    def irc_RPL_ENDOFNAMES(self, prefix: str, params: List[str]) -> None:
        self._record("endofnames", prefix, params[1], "")

    def privmsg(self, user: str, channel: str, message: str) -> None:
        self._record("privmsg", user, channel, message)

    def action(self, user: str, channel: str, data: str) -> None:
        self._record("action", user, channel, data)

    def _record(self, kind: str, user: str, channel: str, text: str) -> None:
        self.got.append((kind, user, channel, text))
        for waiter in list(self._waiters):
            if waiter[0](self.got[-1]):
                self._waiters.remove(waiter)
                waiter[1].callback(self.got[-1])

    def wait_for(self, kind: str, text: str = "") -> "defer.Deferred[Tuple[str, str, str, str]]":
        """The first recorded (or next) event of that kind (and text)."""
        match = lambda event: event[0] == kind and (not text or event[3] == text)  # noqa: E731
        for event in self.got:
            if match(event):
                return defer.succeed(event)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((match, d))
        return d.addTimeout(10, reactor)


async def twisted_member(test: IrcBridgeMixin, nick: str) -> RecordingClient:
    port = test.irc_components[0].ports[0].getHost().port
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client = await endpoints.connectProtocol(endpoint, RecordingClient(nick, CHANNEL))
    test.addCleanup(client.transport.loseConnection)
    await client.in_channel.addTimeout(10, reactor)
    return client


def stored_contents(rows: List[Any]) -> List[str]:
    return [json.loads(row["message"])["content"] for row in rows]


class BridgedTextTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_utf8_text_and_actions_both_ways_with_twisted_ircclient(self) -> None:
        """
        Text of any script and emoji reaches the browser and the history from IRCClient intact,
        and the browser's text reaches IRCClient intact; IRCClient's ``describe`` is the
        browser's ``/me`` and the browser's ``/me`` is IRCClient's ``action``.
        """
        await self.start()
        bob = await self.enter(7, "Zoë")
        member = await twisted_member(self, "Σοφία")
        await irc_id_in(bob)
        member.msg(CHANNEL, "Grüße aus Köln, 你好 🎉")
        message = await bob.wait_for("message")
        self.assertEqual((message["content"], message["from"]["username"]), ("Grüße aus Köln, 你好 🎉", "Σοφία"))
        await bob.emit("message", {"content": "Ça va? Ñandú 🙂", "format": {}}, 1)
        kind, user, channel, text = await member.wait_for("privmsg")
        self.assertEqual((user.split("!")[0], channel, text), ("Zoë", CHANNEL, "Ça va? Ñandú 🙂"))
        member.describe(CHANNEL, "tanzt 💃")
        action = await bob.wait_for("message", "/me tanzt 💃")
        self.assertEqual(action["from"]["username"], "Σοφία")
        await bob.emit("message", {"content": "/me winkt 👋", "format": {}}, 1)
        kind, user, channel, text = await member.wait_for("action")
        self.assertEqual((user.split("!")[0], channel, text), ("Zoë", CHANNEL, "winkt 👋"))
        rows = await rows_count(self, 4)
        self.assertEqual(stored_contents(rows), ["Grüße aus Köln, 你好 🎉", "Ça va? Ñandú 🙂",
                                                 "/me tanzt 💃", "/me winkt 👋"])


class JoinPlaybackTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = {"history_on_join": 2}

    async def test_playback_is_a_chathistory_batch_of_the_configured_count(self) -> None:
        """
        history_on_join 2: a client with batch and server-time gets the last two lines in a
        ``chathistory`` batch of the channel, with the rows' times and ids; IRCClient (no caps)
        gets the same two as plain PRIVMSGs after the end of NAMES.
        """
        await self.start()
        bob = await self.enter(7, "bob")
        for text in ("one", "two", "three"):
            await bob.emit("message", {"content": text, "format": {}}, 1)
        rows = await rows_count(self, 3)
        timed = await self.irc()
        await timed.register("timed", caps=("batch", "server-time", "message-tags"))
        timed.send(f"JOIN {CHANNEL}")
        start = await timed.wait_for("BATCH", lambda m: m.params[0].startswith("+"))
        self.assertEqual(start.params[1:], ("chathistory", CHANNEL))
        ref = start.params[0][1:]
        await timed.wait_for("BATCH", lambda m: m.params[0] == "-" + ref)
        lines = [m for m in timed.messages if m.tags.get("batch") == ref]
        self.assertEqual([(m.command, m.params) for m in lines],
                         [("PRIVMSG", (CHANNEL, "two")), ("PRIVMSG", (CHANNEL, "three"))])
        self.assertEqual([m.tags["msgid"] for m in lines], [str(row["hist_id"]) for row in rows[1:]])
        for line, row in zip(lines, rows[1:]):
            self.assertLess(abs(parse_timestamp(line.tags["time"]) - row["timestamp"]), 1.5)
        commands = [m.command for m in timed.messages]
        self.assertLess(commands.index("366"), commands.index("BATCH"))
        member = await twisted_member(self, "plain")
        await member.wait_for("privmsg", "three")
        kinds = [(event[0], event[3]) for event in member.got]
        self.assertEqual(kinds, [("endofnames", ""), ("privmsg", "two"), ("privmsg", "three")])


class NoPlaybackByDefaultTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_without_history_on_join_a_newcomer_gets_no_lines(self) -> None:
        await self.start()
        bob = await self.enter(7, "bob")
        await bob.emit("message", {"content": "before you came", "format": {}}, 1)
        await wait_until_rows(self)
        newcomer = await self.irc_in_room("newcomer", caps=("batch", "server-time"))
        newcomer.send("PING sync")
        await newcomer.wait_for("PONG")
        self.assertEqual((newcomer.since("PRIVMSG"), newcomer.since("BATCH")), ([], []))


class OperatorKickTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}]}

    async def test_operator_kick_takes_the_member_out_of_every_tab_and_userlist(self) -> None:
        """
        An operator's KICK of a browser member: both of its tabs get ``userjustkicked``, the
        other browser's userlist loses it, IRC's NAMES too, and what it writes then reaches
        nobody; it stays in its other room.
        """
        await self.start()
        bob = await self.enter(7, "bob")
        await self.enter(7, "bob", room=2)
        second_tab = await self.browser()
        await second_tab.emit("login", "bob", 7, False)
        await second_tab.wait_for("loggedIn")
        await second_tab.emit("enterRoom", 1)
        await second_tab.wait_for("private_room_entered")
        alice = await self.enter(6, "alice")
        boss = await self.irc_in_room("boss")
        watcher = await self.irc_in_room("watcher")
        boss.send("OPER admin opersecret")
        await boss.wait_for("381")
        boss.send(f"KICK {CHANNEL} bob :behave")
        kick = await watcher.wait_for("KICK")
        self.assertEqual(kick.params[:2], (CHANNEL, "bob"))
        await bob.wait_for("userjustkicked")
        await second_tab.wait_for("userjustkicked")
        users = await userlist_with(alice, lambda users: 7 not in users and 6 in users)
        self.assertTrue(all(user_id == 6 or user_id < 0 for user_id in users), users)
        watcher.send(f"NAMES {CHANNEL}")
        names = (await watcher.wait_for("353")).params[3].split()
        self.assertEqual(sorted(names), ["alice", "boss", "watcher"])
        await bob.emit("message", {"content": "am I still here?", "format": {}}, 1)
        await alice.emit("message", {"content": "sync", "format": {}}, 1)
        await watcher.wait_for("PRIVMSG", lambda m: m.params[1] == "sync")
        self.assertEqual([m.params[1] for m in watcher.since("PRIVMSG")], ["sync"])
        self.assertEqual(alice.payloads("message", "am I still here?"), [])
        self.assertEqual(stored_contents(await rows_count(self, 1)), ["sync"])
        watcher.send("JOIN #onscreen-2")
        names = await watcher.wait_for("353", lambda m: m.params[2] == "#onscreen-2")
        self.assertIn("bob", names.params[3].split())

    async def test_kill_of_an_irc_member_takes_it_out_of_the_browsers_room(self) -> None:
        """
        An operator's KILL of an IRC member of a chat room: the browsers see them leave (notice
        and userlist); a browser member's nick cannot be killed (481, KICK them instead).
        """
        await self.start()
        bob = await self.enter(7, "bob")
        boss = await self.irc_in_room("boss")
        victim = await self.irc_in_room("victim")
        users = await userlist_with(bob, lambda users: len([k for k in users if k < 0]) == 2)
        victim_id = next(k for k, user in users.items() if user["username"] == "victim")
        boss.send("OPER admin opersecret")
        await boss.wait_for("381")
        boss.send("KILL bob :no")
        self.assertIn("KICK them", (await boss.wait_for("481")).params[1])
        boss.send("KILL victim :spam")
        await victim.wait_for("ERROR")
        await victim.closed
        quit = await boss.wait_for("QUIT")
        self.assertTrue(quit.prefix.startswith("victim!"))
        left = await bob.wait_for("notice", "disconnected")
        self.assertEqual(left["data"]["username"], "victim")
        await userlist_with(bob, lambda users: victim_id not in users and 7 in users)
        self.assertEqual(bob.payloads("userjustkicked"), [])


class NoOperatorKickTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}],
                    "oper_kick": False}

    async def test_oper_kick_false_leaves_kicks_to_ilias(self) -> None:
        await self.start()
        bob = await self.enter(7, "bob")
        boss = await self.irc_in_room("boss")
        boss.send("OPER admin opersecret")
        await boss.wait_for("381")
        boss.send(f"KICK {CHANNEL} bob")
        refused = await boss.wait_for("482")
        self.assertEqual(refused.params[1], CHANNEL)
        self.assertIn("IRC operators may not kick in chat rooms on this server", refused.params[2])
        boss.send(f"NAMES {CHANNEL}")
        self.assertIn("bob", (await boss.wait_for("353")).params[3].split())
        await sleep(0.2)
        self.assertEqual(bob.payloads("userjustkicked"), [])


class LiveBanTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}]}

    async def test_ilias_ban_of_a_browser_member_is_a_kick_and_a_ban_mask(self) -> None:
        """
        PHP's Ban of a browser member is a KICK on IRC and its mask is then in ``MODE #room b``;
        an operator's ``+b`` of someone not in the room bans nobody and says so.
        """
        await self.start()
        await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        irc.send("OPER admin opersecret")
        await irc.wait_for("381")
        await insert_rows_async(self.databases["onscreen"], "usr_data", [{"usr_id": 7, "login": "bob"}])
        await insert_rows_async(self.databases["onscreen"], "chatroom_bans",
                                [{"room_id": 1, "user_id": 7, "timestamp": 1700000000}])
        await self.php("Ban", 1, 7)
        kick = await irc.wait_for("KICK")
        self.assertEqual(kick.params[:2], (CHANNEL, "bob"))
        irc.send(f"MODE {CHANNEL} b")
        await irc.wait_for("368")
        self.assertEqual([m.params[2] for m in irc.since("367")], ["bob!*@onscreen.ilias"])
        irc.send(f"MODE {CHANNEL} +b mallory")
        notice = await irc.wait_for("NOTICE", lambda m: "nobody banned" in m.params[1])
        self.assertIn("mallory!*@*", notice.params[1])


class WebNameTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_names_no_nick_can_hold_and_long_names(self) -> None:
        """
        An all-emoji web name is ``user-<checksum>``, a name longer than NICKLEN is cut to it;
        WHOIS and WHO show both whole as realname.
        """
        await self.start()
        long_name = "Alexandra Katharina Musterfrau-X"
        await self.enter(7, "🎉🎉")
        await self.enter(8, long_name)
        irc = await self.irc_in_room("ircer")
        names = set(irc.since("353")[-1].params[3].split()) - {"ircer"}
        (emoji_nick,) = [n for n in names if n.startswith("user-")]
        self.assertRegex(emoji_nick, re.compile(r"^user-[0-9a-f]{8}$"))
        (long_nick,) = names - {emoji_nick}
        self.assertEqual(long_nick, "Alexandra_Katharina_Musterfrau")
        for nick, name in ((emoji_nick, "🎉🎉"), (long_nick, long_name)):
            irc.send(f"WHOIS {nick}")
            self.assertEqual((await irc.wait_for("311")).params[5], name)
