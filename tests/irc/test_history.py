"""
The IRC side of a bridged room's messages (issue 16): msgid = the history row's id,
draft/chathistory and the JOIN playback from the history the web wrote, typing notices both ways
and draft/multiline. python-socketio browsers and raw IRC line clients against a whole server, on
the real MariaDB and on SQLite.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet import defer, threads
from twisted.trial import unittest

from ilchat.irc.history import HistoryLine, parse_timestamp
from ilchat.irc.network import ChannelLink
from tests.irc.support import RawClient, make_config, start_irc
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin
from tests.ilias.repository_support import sleep, wait_until
from tests.support.db import insert_rows_async, make_database, mariadb_admin_connection

HISTORY_CAPS = ("draft/chathistory", "batch", "message-tags", "server-time")
MULTILINE_CAPS = ("draft/multiline", "batch", "message-tags")


async def rows_count(test: Any, count: int) -> List[Dict[str, Any]]:
    """The history rows once there are C{count} of them."""
    rows: List[Dict[str, Any]] = []

    async def enough() -> bool:
        rows[:] = await test.history()
        return len(rows) >= count

    for _ in range(200):
        if await enough():
            return rows
        await sleep(0.05)
    raise AssertionError(f"fewer than {count} chatroom_history rows")


async def batch_of(client: RawClient) -> List[Any]:
    """The PRIVMSG lines of the next batch the client gets (after waiting for its end)."""
    start = await client.wait_for("BATCH", lambda m: m.params[0].startswith("+"))
    ref = start.params[0][1:]
    await client.wait_for("BATCH", lambda m: m.params[0] == "-" + ref)
    return [m for m in client.messages if m.tags.get("batch") == ref and m.command == "PRIVMSG"]


class HistoryMixin(IrcBridgeMixin):
    irc_settings = {"history_on_join": 3}

    async def six_messages(self) -> Any:
        """Bob (a browser) writes m0..m5; returns bob and the rows' ids by text."""
        await self.start()
        bob = await self.enter(7, "bob")
        for n in range(6):
            await bob.emit("message", {"content": f"m{n}", "format": {}}, 1)
        rows = await rows_count(self, 6)
        self.ids = {json.loads(r["message"])["content"]: r["hist_id"] for r in rows}
        return bob

    def chathistory(self, client: RawClient, *params: str) -> Any:
        client.clear()
        client.send("CHATHISTORY " + " ".join(params))
        return batch_of(client)

    async def test_web_message_msgid_is_its_history_id(self) -> None:
        """A browser's message reaches IRC with msgid = its chatroom_history hist_id, and its time."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("tagged", caps=("message-tags", "server-time"))
        plain = await self.irc_in_room("plain")
        await bob.emit("message", {"content": "hello irc", "format": {}}, 1)
        got = await irc.wait_for("PRIVMSG")
        (row,) = await rows_count(self, 1)
        self.assertEqual(got.tags["msgid"], str(row["hist_id"]))
        self.assertLess(abs(parse_timestamp(got.tags["time"]) - row["timestamp"]), 1.5)
        self.assertEqual((await plain.wait_for("PRIVMSG")).tags, {})
        irc.send(f"PRIVMSG {CHANNEL} :from irc")
        await bob.wait_for("message", "from irc")
        rows = await rows_count(self, 2)
        plain_got = await plain.wait_for("PRIVMSG", lambda m: m.params[1] == "from irc")
        self.assertEqual(plain_got.tags, {})
        irc.send("PING sync")
        await irc.wait_for("PONG")
        self.assertEqual(rows[1]["hist_id"], rows[0]["hist_id"] + 1)

    async def test_chathistory_answers_from_what_the_web_sent(self) -> None:
        """LATEST, BEFORE, AFTER, AROUND, BETWEEN with msgid= and timestamp=, and TARGETS."""
        await self.six_messages()
        irc = await self.irc_in_room("reader", caps=HISTORY_CAPS)
        ids = self.ids

        def texts(lines: List[Any]) -> List[str]:
            return [line.params[1] for line in lines]

        latest = await self.chathistory(irc, "LATEST", CHANNEL, "*", "3")
        self.assertEqual(texts(latest), ["m3", "m4", "m5"])
        self.assertEqual([line.tags["msgid"] for line in latest], [str(ids[f"m{n}"]) for n in (3, 4, 5)])
        self.assertTrue(all(line.prefix.startswith("bob!") and "time" in line.tags for line in latest))
        before = await self.chathistory(irc, "BEFORE", CHANNEL, f"msgid={ids['m3']}", "2")
        self.assertEqual(texts(before), ["m1", "m2"])
        after = await self.chathistory(irc, "AFTER", CHANNEL, f"msgid={ids['m1']}", "2")
        self.assertEqual(texts(after), ["m2", "m3"])
        around = await self.chathistory(irc, "AROUND", CHANNEL, f"msgid={ids['m2']}", "3")
        self.assertEqual(texts(around), ["m1", "m2", "m3"])
        between = await self.chathistory(irc, "BETWEEN", CHANNEL, f"msgid={ids['m0']}", f"msgid={ids['m5']}", "10")
        self.assertEqual(texts(between), ["m1", "m2", "m3", "m4"])
        backwards = await self.chathistory(irc, "BETWEEN", CHANNEL, f"msgid={ids['m5']}", f"msgid={ids['m0']}", "2")
        self.assertEqual(texts(backwards), ["m3", "m4"])
        since_epoch = await self.chathistory(irc, "AFTER", CHANNEL, "timestamp=2000-01-01T00:00:00.000Z", "2")
        self.assertEqual(texts(since_epoch), ["m0", "m1"])
        future = await self.chathistory(irc, "LATEST", CHANNEL, "timestamp=2999-01-01T00:00:00.000Z", "5")
        self.assertEqual(texts(future), [])
        unknown = await self.chathistory(irc, "BEFORE", CHANNEL, "msgid=abc-1", "5")
        self.assertEqual(texts(unknown), [])

        irc.clear()
        irc.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 10")
        start = await irc.wait_for("BATCH")
        self.assertEqual(start.params[1], "draft/chathistory-targets")
        target = await irc.wait_for("CHATHISTORY")
        self.assertEqual(target.params[:2], ("TARGETS", CHANNEL))
        self.assertIsNotNone(parse_timestamp(target.params[2]))

        irc.send("CHATHISTORY LATEST #onscreen-2 * 10")
        fail = await irc.wait_for("FAIL")
        self.assertEqual(fail.params[:2], ("CHATHISTORY", "INVALID_TARGET"))
        irc.send(f"CHATHISTORY LATEST {CHANNEL} bogus 10")
        fail = await irc.wait_for("FAIL")
        self.assertEqual(fail.params[:2], ("CHATHISTORY", "INVALID_PARAMS"))

        irc.send("VERSION")
        isupport = await irc.wait_for("005", lambda m: any(p.startswith("CHATHISTORY=") for p in m.params))
        self.assertIn("CHATHISTORY=100", isupport.params)

    async def test_newcomers_get_the_latest_lines_on_join(self) -> None:
        """history_on_join lines after NAMES: plain, with server-time in a batch, none with the cap."""
        await self.six_messages()
        plain = await self.irc_in_room("plain")
        timed = await self.irc_in_room("timed", caps=("server-time", "batch"))
        fetcher = await self.irc_in_room("fetcher", caps=HISTORY_CAPS)
        lines = await batch_of(timed)
        self.assertEqual([line.params[1] for line in lines], ["m3", "m4", "m5"])
        self.assertTrue(all("time" in line.tags for line in lines))
        await plain.wait_for("PRIVMSG", lambda m: m.params[1] == "m5")
        self.assertEqual([m.params[1] for m in plain.since("PRIVMSG")], ["m3", "m4", "m5"])
        self.assertEqual(plain.since("BATCH"), [])
        fetcher.send("PING sync")
        await fetcher.wait_for("PONG")
        self.assertEqual(fetcher.since("PRIVMSG"), [])


class MariaDBHistoryTests(HistoryMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_first_message_waits_for_the_id_reserve(self) -> None:
        """
        The room namespace is served only once the history id reserve is filled: with the
        sequence table locked at start, the start waits, and the first message afterwards carries
        its row's id as msgid (no stand-in id).
        """
        db = make_database(self, "mysql")
        await insert_rows_async(db, "chatroom_settings", [{"room_id": 1}, {"room_id": 2}])
        locker = mariadb_admin_connection(db.name, host=db.host, port=db.port)
        self.addCleanup(locker.close)
        await threads.deferToThread(locker.cursor().execute, "LOCK TABLES chatroom_history_seq WRITE")
        self.databases = {"onscreen": db}
        starting = defer.ensureDeferred(self.start_on(self.databases))
        self.browsers = []
        self.addCleanup(self._close_browsers)
        await sleep(1.0)
        self.assertFalse(starting.called, "the start did not wait for the id reserve")
        await threads.deferToThread(locker.cursor().execute, "UNLOCK TABLES")
        self.server = await starting
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("tagged", caps=("message-tags",))
        await bob.emit("message", {"content": "first", "format": {}}, 1)
        got = await irc.wait_for("PRIVMSG")
        (row,) = await rows_count(self, 1)
        self.assertEqual(got.tags["msgid"], str(row["hist_id"]))

    async def test_typing_both_ways(self) -> None:
        """Web typing is TAGMSG +typing for message-tags clients; IRC +typing is the room's typing."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("typist", caps=("message-tags",))
        plain = await self.irc_in_room("plain")
        await bob.emit("userStartedTyping", 1)
        active = await irc.wait_for("TAGMSG")
        self.assertEqual((active.params, active.tags["+typing"]), ((CHANNEL,), "active"))
        self.assertTrue(active.prefix.startswith("bob!"))
        await bob.emit("userStoppedTyping", 1)
        done = await irc.wait_for("TAGMSG")
        self.assertEqual(done.tags["+typing"], "done")
        irc.send(f"@+typing=active TAGMSG {CHANNEL}")
        started = await bob.wait_for("userStartedTyping")
        self.assertEqual(json.loads(started["subscriber"])["username"], "typist")
        irc.send(f"@+typing=paused TAGMSG {CHANNEL}")
        await bob.wait_for("userStoppedTyping")
        plain.send("PING sync")
        await plain.wait_for("PONG")
        self.assertEqual(plain.since("TAGMSG"), [])

    async def test_multiline_web_messages_and_irc_batches(self) -> None:
        """
        A multi-line or long web message is a draft/multiline batch for clients with the cap and
        lines of at most 512 bytes for the others; an IRC multiline batch is one web message.
        """
        await self.start()
        bob = await self.enter(7, "bob")
        capable = await self.irc_in_room("capable", caps=MULTILINE_CAPS)
        plain = await self.irc_in_room("plain")
        await bob.emit("message", {"content": "line one\nline two", "format": {}}, 1)
        lines = await batch_of(capable)
        self.assertEqual([line.params[1] for line in lines], ["line one", "line two"])
        await plain.wait_for("PRIVMSG", lambda m: m.params[1] == "line two")
        self.assertEqual([m.params[1] for m in plain.since("PRIVMSG")], ["line one", "line two"])
        long_text = "Grüße " * 300
        capable.clear()
        plain.clear()
        await bob.emit("message", {"content": long_text, "format": {}}, 1)
        pieces = await batch_of(capable)
        self.assertEqual("".join(p.params[1] for p in pieces), long_text)
        self.assertTrue(all("draft/multiline-concat" in p.tags for p in pieces[1:]))
        await wait_until(lambda: sum(len(m.params[1]) for m in plain.since("PRIVMSG")) > 1700, 10, "the lines")
        wire = [line for line in plain.raw.split(b"\r\n") if b"PRIVMSG" in line]
        self.assertGreater(len(wire), 3)
        self.assertTrue(all(len(line) + 2 <= 512 for line in wire))
        wire[-1].decode("utf-8")  # never cut inside a character
        capable.send("BATCH +x draft/multiline " + CHANNEL)
        capable.send(f"@batch=x PRIVMSG {CHANNEL} :first")
        capable.send(f"@batch=x PRIVMSG {CHANNEL} :second")
        capable.send("BATCH -x")
        message = await bob.wait_for("message", "first\nsecond")
        self.assertEqual(message["from"]["username"], "capable")


class SQLiteHistoryTests(HistoryMixin, unittest.TestCase):
    database_kind = "sqlite"


class _SlowHistory(ChannelLink):
    """A channel link whose stored history arrives when the test says (a slow database)."""

    def __init__(self) -> None:
        self.pending: List[defer.Deferred] = []

    def history(self, user: Any, limit: int, after: Any = None, before: Any = None,
                latest: bool = True) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


class PlaybackRaceTests(unittest.TestCase):
    async def test_a_message_seen_live_during_the_read_is_not_played_back(self) -> None:
        server = await start_irc(self, make_config(history_on_join=3))
        link = _SlowHistory()
        channel = server.network.add_channel("#slow", link)
        client = await server.registered(self, "joiner")
        client.send("JOIN #slow")
        await client.wait_for("366")
        await wait_until(lambda: link.pending, 5, "the history read")
        # Live, while the history is being read: the message with id 42.
        for member in channel.local_members():
            member.relay_text("PRIVMSG", "#slow", "live", "web!u@h", None, "42")
        link.pending[0].callback([HistoryLine("41", 1.0, "web!u@h", "older"),
                                  HistoryLine("42", 2.0, "web!u@h", "live")])
        client.send("PING sync")
        await client.wait_for("PONG")
        self.assertEqual([m.params[1] for m in client.since("PRIVMSG")], ["live", "older"])


class LabeledWaitTests(unittest.TestCase):
    """While a labeled command waits, what others send the client is no part of its reply."""

    async def test_lines_of_others_go_out_outside_the_labeled_batch(self) -> None:
        server = await start_irc(self, make_config(history_on_join=3))
        link = _SlowHistory()
        server.network.add_channel("#slow", link)
        labeler = await server.registered(self, "labeler", caps=("labeled-response", "batch", "message-tags"))
        talker = await server.registered(self, "talker")
        older = HistoryLine("41", 1.0, "web!u@h", "older")

        async def answer_while_waiting(command: str, label: str, said: str) -> List[Any]:
            labeler.clear()
            labeler.send(f"@label={label} {command}")
            await wait_until(lambda: len(link.pending) == 1, 5, f"the history read of {command}")
            talker.send(f"PRIVMSG labeler :{said}")
            meanwhile = await labeler.wait_for("PRIVMSG", lambda m: m.params[1] == said)
            self.assertNotIn("batch", meanwhile.tags)
            self.assertEqual(labeler.since("BATCH"), [])  # the reply is still held
            link.pending.pop().callback([older])
            start = await labeler.wait_for("BATCH", lambda m: m.tags.get("label") == label)
            ref = start.params[0][1:]
            end = await labeler.wait_for("BATCH", lambda m: m.params[0] == "-" + ref)
            inside = labeler.messages[labeler.messages.index(start) + 1:labeler.messages.index(end)]
            self.assertNotIn(said, [m.params[-1] for m in inside])
            self.assertLess(labeler.messages.index(meanwhile), labeler.messages.index(start))
            return inside

        joined = await answer_while_waiting("JOIN #slow", "j1", "during the join")
        self.assertEqual([m.command for m in joined if m.command != "BATCH"],
                         ["JOIN", "353", "366", "PRIVMSG"])
        self.assertEqual([m.params[1] for m in joined if m.command == "PRIVMSG"], ["older"])
        history = await answer_while_waiting("CHATHISTORY LATEST #slow * 5", "h1", "during the read")
        self.assertEqual([m.params[1] for m in history if m.command == "PRIVMSG"], ["older"])


ALL_CAPS = ("draft/chathistory", "batch", "message-tags", "server-time", "echo-message", "labeled-response")


def _seen(message: Any) -> tuple:
    """What CHATHISTORY must give back of a message as its echo showed it."""
    return (message.tags["msgid"], message.tags["time"], message.prefix.split("!")[0], message.params)


class LocalHistoryTests(unittest.TestCase):
    """IRC-only channels and private messages: the in-memory history, with exclusive bounds."""

    async def ten_messages(self, client: RawClient, target: str, other: Any = None) -> List[tuple]:
        echoes = []
        for n in range(10):
            sender = client if other is None or n % 2 == 0 else other[0]
            to = target if other is None or n % 2 == 0 else other[1]
            sender.send(f"PRIVMSG {to} :message {n}")
            echoes.append(_seen(await sender.wait_for("PRIVMSG", lambda m, n=n: m.params[1] == f"message {n}"
                                                      and m.prefix.startswith(sender.nick + "!"))))
            await sleep(0.01)
        return echoes

    async def history(self, client: RawClient, *params: str) -> List[tuple]:
        client.clear()
        client.send("CHATHISTORY " + " ".join(params))
        return [_seen(m) for m in await batch_of(client)]

    async def test_channel_subcommands(self) -> None:
        server = await start_irc(self)
        bar = await server.registered(self, "bar", caps=ALL_CAPS)
        bar.nick = "bar"
        bar.send("JOIN #chan")
        await bar.wait_for("366")
        echo = await self.ten_messages(bar, "#chan")
        msgid = [e[0] for e in echo]
        time = [e[1] for e in echo]
        h = self.history
        self.assertEqual(await h(bar, "LATEST", "#chan", "*", "20"), echo)
        self.assertEqual(await h(bar, "LATEST", "#chan", "*", "5"), echo[-5:])
        self.assertEqual(await h(bar, "LATEST", "#chan", f"msgid={msgid[4]}", "20"), echo[5:])
        self.assertEqual(await h(bar, "LATEST", "#chan", f"timestamp={time[4]}", "20"), echo[5:])
        self.assertEqual(await h(bar, "BEFORE", "#chan", f"msgid={msgid[6]}", "20"), echo[:6])
        self.assertEqual(await h(bar, "BEFORE", "#chan", f"timestamp={time[6]}", "2"), echo[4:6])
        self.assertEqual(await h(bar, "AFTER", "#chan", f"msgid={msgid[3]}", "20"), echo[4:])
        self.assertEqual(await h(bar, "AFTER", "#chan", f"timestamp={time[3]}", "3"), echo[4:7])
        for first, last in ((0, -1), (-1, 0)):
            self.assertEqual(await h(bar, "BETWEEN", "#chan", f"msgid={msgid[first]}",
                                     f"msgid={msgid[last]}", "20"), echo[1:-1])
            self.assertEqual(await h(bar, "BETWEEN", "#chan", f"timestamp={time[first]}",
                                     f"timestamp={time[last]}", "20"), echo[1:-1])
        self.assertEqual(await h(bar, "BETWEEN", "#chan", f"msgid={msgid[0]}", f"msgid={msgid[-1]}", "3"),
                         echo[1:4])
        self.assertEqual(await h(bar, "BETWEEN", "#chan", f"msgid={msgid[-1]}", f"msgid={msgid[0]}", "3"),
                         echo[-4:-1])
        self.assertEqual(await h(bar, "AROUND", "#chan", f"msgid={msgid[7]}", "1"), [echo[7]])
        self.assertEqual(await h(bar, "AROUND", "#chan", f"msgid={msgid[7]}", "3"), echo[6:9])
        self.assertIn(echo[7], await h(bar, "AROUND", "#chan", f"timestamp={time[7]}", "3"))
        for limit in ("\u00b2",):
            bar.send(f"CHATHISTORY LATEST #chan * {limit}")
            fail = await bar.wait_for("FAIL")
            self.assertEqual(fail.params[:3], ("CHATHISTORY", "INVALID_PARAMS", "LATEST"))
            bar.clear()
        outsider = await server.registered(self, "qux", caps=ALL_CAPS)
        outsider.send("CHATHISTORY LATEST #chan * 10")
        fail = await outsider.wait_for("FAIL")
        self.assertEqual(fail.params[:3], ("CHATHISTORY", "INVALID_TARGET", "LATEST"))

    async def test_private_conversations_and_targets(self) -> None:
        """Each side of a conversation gets it; another conversation stays apart; TARGETS."""
        server = await start_irc(self)
        foo = await server.registered(self, "foo", caps=ALL_CAPS)
        bar = await server.registered(self, "bar", caps=ALL_CAPS)
        foo.nick, bar.nick = "foo", "bar"
        echo = await self.ten_messages(foo, "bar", other=(bar, "foo"))
        baz = await server.registered(self, "baz", caps=ALL_CAPS)
        baz.nick = "baz"
        foo.send("PRIVMSG baz :separate")
        await baz.wait_for("PRIVMSG")
        self.assertEqual(await self.history(foo, "LATEST", "bar", "*", "20"), echo)
        self.assertEqual(await self.history(bar, "LATEST", "FOO", "*", "20"), echo)
        separate = await self.history(baz, "LATEST", "foo", "*", "20")
        self.assertEqual([line[3] for line in separate], [("baz", "separate")])
        foo.clear()
        foo.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 10")
        await foo.wait_for("BATCH", lambda m: m.params[0].startswith("-"))
        self.assertEqual([m.params[1] for m in foo.since("CHATHISTORY")], ["bar", "baz"])

    async def test_a_later_holder_of_a_nick_does_not_read_its_private_messages(self) -> None:
        """foo quits; whoever registers as foo next gets none of what foo and bar said."""
        server = await start_irc(self)
        foo = await server.registered(self, "foo", caps=ALL_CAPS)
        bar = await server.registered(self, "bar", caps=ALL_CAPS)
        foo.nick, bar.nick = "foo", "bar"
        echo = await self.ten_messages(foo, "bar", other=(bar, "foo"))
        foo.send("QUIT :gone")
        await foo.wait_for("ERROR")
        taker = await server.registered(self, "foo", caps=ALL_CAPS)
        taker.nick = "foo"
        self.assertEqual(await self.history(taker, "LATEST", "bar", "*", "20"), [])
        taker.clear()
        taker.send("CHATHISTORY TARGETS timestamp=2000-01-01T00:00:00.000Z timestamp=2999-01-01T00:00:00.000Z 10")
        await taker.wait_for("BATCH", lambda m: m.params[0].startswith("-"))
        self.assertEqual(taker.since("CHATHISTORY"), [])
        # bar still has the conversation, until the new foo writes: then it is a new one.
        self.assertEqual(await self.history(bar, "LATEST", "foo", "*", "20"), echo)
        taker.send("PRIVMSG bar :hello, I am new")
        await bar.wait_for("PRIVMSG", lambda m: m.params[1] == "hello, I am new")
        lines = await self.history(bar, "LATEST", "foo", "*", "20")
        self.assertEqual([line[3] for line in lines], [("bar", "hello, I am new")])


class LocalHistoryBoundTests(unittest.TestCase):
    """The in-memory history has a bound for all its targets together, not only for each."""

    def test_the_least_recently_used_targets_go_past_the_memory_bound(self) -> None:
        from ilchat.irc.history_store import LocalHistory

        history = LocalHistory(per_target=100, max_bytes=200_000)
        text = "x" * 1000
        for number in range(1000):  # 1000 conversations of 10 long lines: 13 MB unbounded
            for line in range(10):
                history.add(("a", f"b{number}"), HistoryLine(f"{number}-{line}", 1.0, "a!u@h", text))
        self.assertLessEqual(history.size, 200_000)
        kept = history.keys_with("a")
        self.assertEqual(kept[-1], ("a", "b999"))
        self.assertLess(len(kept), 20)
        self.assertEqual(len(history.page(("a", "b999"), 100)), 10)
        self.assertEqual(history.page(("a", "b0"), 100), [])
        # The weight follows what stays: a full deque that drops its oldest line counts it out.
        for line in range(300):
            history.add("#c", HistoryLine(f"c{line}", 1.0, "a!u@h", "short"))
        expected = sum(len(l.text) + len(l.prefix) + len(l.msgid) + 300
                       for key in list(history._lines) for l in history._lines[key])
        self.assertEqual(history.size, expected)
