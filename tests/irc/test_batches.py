"""
IRCv3 message ids, batch, labeled-response and draft/multiline (issue 16): the pure helpers on
plain values, then raw line clients and Twisted's IRCClient over real loopback sockets.
"""

from typing import Any, List

from twisted.internet import defer, endpoints, reactor
from twisted.trial.unittest import TestCase
from twisted.words.protocols import irc

from ilchat.irc.batches import batched, labeled, multiline_lines
from ilchat.irc.message import Message
from tests.irc.support import start_irc

MULTILINE_CAPS = ("batch", "message-tags", "draft/multiline", "server-time")


class HelperTests(TestCase):
    def test_batched_wraps_and_keeps_nested_batch_tags(self) -> None:
        inner = Message("PRIVMSG", ("#c", "in"), tags={"batch": "nested"})
        lines = batched("labeled-response", (), [Message("PONG", ("s", "x")), inner], "srv", {"label": "L"})
        start, pong, kept, end = lines
        ref = start.params[0][1:]
        self.assertEqual((start.command, start.params[1], start.tags), ("BATCH", "labeled-response", {"label": "L"}))
        self.assertEqual(pong.tags, {"batch": ref})
        self.assertEqual(kept.tags, {"batch": "nested"})
        self.assertEqual(end.params, ("-" + ref,))

    def test_labeled_ack_one_line_or_batch(self) -> None:
        (ack,) = labeled("a1", [], "srv", batch=True)
        self.assertEqual((ack.command, ack.tags), ("ACK", {"label": "a1"}))
        (one,) = labeled("a2", [Message("PONG", ("srv", "t"))], "srv", batch=True)
        self.assertEqual(one.tags, {"label": "a2"})
        many = labeled("a3", [Message("001", ("x",)), Message("002", ("y",))], "srv", batch=True)
        self.assertEqual([m.command for m in many], ["BATCH", "001", "002", "BATCH"])
        self.assertEqual(len(labeled("a4", [Message("001", ()), Message("002", ())], "srv", batch=False)), 2)

    def test_multiline_lines_cut_on_utf8_boundaries_and_keep_spaces(self) -> None:
        text = "first line\n" + "ü" * 300 + "\n\nlast words here"
        lines = multiline_lines(text, 100)
        self.assertEqual(lines[0], ("first line", False))
        pieces = [line for line, _ in lines[1:-2]]
        self.assertEqual("".join(pieces), "ü" * 300)
        self.assertTrue(all(len(p.encode("utf-8")) <= 100 for p in pieces))
        self.assertEqual([concat for _, concat in lines[1:-2]], [False] + [True] * (len(pieces) - 1))
        self.assertEqual(lines[-2:], [("", False), ("last words here", False)])
        long_words = multiline_lines("word " * 50, 64)
        self.assertEqual("".join(line for line, _ in long_words), "word " * 50)
        self.assertTrue(all(line.endswith(" ") for line, _ in long_words))


class LabeledResponseTests(TestCase):
    async def test_labels_one_reply_many_replies_and_none(self) -> None:
        """PING: one labeled PONG; JOIN: a labeled batch; PONG (no reply): ACK."""
        server = await start_irc(self)
        client = await server.registered(self, "labeler", caps=("labeled-response", "batch"))
        client.send("@label=p1 PING tok")
        pong = await client.wait_for("PONG")
        self.assertEqual((pong.tags.get("label"), pong.params[1]), ("p1", "tok"))
        client.send("@label=j1 JOIN #lab")
        start = await client.wait_for("BATCH")
        self.assertEqual((start.params[1], start.tags), ("labeled-response", {"label": "j1"}))
        ref = start.params[0][1:]
        end = await client.wait_for("BATCH")
        self.assertEqual(end.params, ("-" + ref,))
        inside = client.messages[client.messages.index(start) + 1:client.messages.index(end)]
        self.assertEqual([m.command for m in inside], ["JOIN", "353", "366"])
        self.assertTrue(all(m.tags.get("batch") == ref for m in inside))
        client.send("@label=n1 PONG :irc.test")
        ack = await client.wait_for("ACK")
        self.assertEqual(ack.tags, {"label": "n1"})

    async def test_echoes_are_the_labeled_replies(self) -> None:
        """
        With echo-message the echo is the reply: labeled, never the recipient's copy (to oneself
        the received copy is unlabeled); TAGMSG is echoed too; an unknown command's 421 labeled.
        """
        caps = ("labeled-response", "batch", "echo-message", "message-tags")
        server = await start_irc(self)
        foo = await server.registered(self, "foo", caps=caps)
        bar = await server.registered(self, "bar", caps=caps)
        foo.send("@label=l1 PRIVMSG bar :hi")
        echo = await foo.wait_for("PRIVMSG")
        self.assertEqual(echo.tags["label"], "l1")
        self.assertNotIn("label", (await bar.wait_for("PRIVMSG")).tags)
        foo.clear()
        foo.send("@label=l2 PRIVMSG foo :me")
        foo.send("PING sync")
        await foo.wait_for("PONG")
        copies = foo.since("PRIVMSG")
        self.assertEqual(len(copies), 2)
        self.assertEqual(sorted(m.tags.get("label", "") for m in copies), ["", "l2"])
        self.assertEqual(foo.since("BATCH"), [])
        foo.send("@label=l3;+draft/react=ok TAGMSG bar")
        tagged = await foo.wait_for("TAGMSG")
        self.assertEqual((tagged.tags["label"], tagged.tags["+draft/react"]), ("l3", "ok"))
        self.assertNotIn("label", (await bar.wait_for("TAGMSG")).tags)
        foo.send("@label=l4 NONEXISTENT_COMMAND")
        unknown = await foo.wait_for("421")
        self.assertEqual(unknown.tags["label"], "l4")

    async def test_no_label_without_the_cap(self) -> None:
        server = await start_irc(self)
        client = await server.registered(self, "plain")
        client.send("@label=p1 PING tok")
        pong = await client.wait_for("PONG")
        self.assertEqual(pong.tags, {})


class MessageIdTests(TestCase):
    async def test_every_message_has_one_msgid_for_all_recipients(self) -> None:
        """A channel PRIVMSG has the same msgid for each member and its echo; TAGMSG one too."""
        server = await start_irc(self)
        sender = await server.registered(self, "sender", caps=("message-tags", "echo-message"))
        other = await server.registered(self, "other", caps=("message-tags",))
        plain = await server.registered(self, "plain")
        for client in (sender, other, plain):
            client.send("JOIN #ids")
            await client.wait_for("366")
        sender.send("PRIVMSG #ids :hello")
        echo = await sender.wait_for("PRIVMSG")
        got = await other.wait_for("PRIVMSG")
        self.assertEqual(echo.tags["msgid"], got.tags["msgid"])
        self.assertEqual((await plain.wait_for("PRIVMSG")).tags, {})
        sender.send("PRIVMSG #ids :again")
        self.assertNotEqual((await other.wait_for("PRIVMSG")).tags["msgid"], got.tags["msgid"])
        sender.send("@+typing=active TAGMSG #ids")
        typing = await other.wait_for("TAGMSG")
        self.assertEqual(typing.tags["+typing"], "active")
        self.assertIn("msgid", typing.tags)


class MultilineTests(TestCase):
    async def test_client_batch_reaches_capable_clients_as_a_batch_and_others_as_lines(self) -> None:
        """
        The same lines (blank and concat ones too) in a batch whose opening line has the msgid,
        time and client tags; the labeled echo is that batch; others get the non-blank lines.
        """
        server = await start_irc(self)
        caps = MULTILINE_CAPS + ("echo-message", "labeled-response")
        sender = await server.registered(self, "writer", caps=caps)
        capable = await server.registered(self, "capable", caps=MULTILINE_CAPS)
        plain = await server.registered(self, "plain", caps=("message-tags", "server-time"))
        for client in (sender, capable, plain):
            client.send("JOIN #ml")
            await client.wait_for("366")
        sender.clear()
        sender.send("@label=x1;+client-tag BATCH +b1 draft/multiline #ml")
        sender.send("@batch=b1 PRIVMSG #ml :first line")
        sender.send("@batch=b1 PRIVMSG #ml :")
        sender.send("@batch=b1 PRIVMSG #ml :second ")
        sender.send("@batch=b1;draft/multiline-concat PRIVMSG #ml :half")
        sender.send("BATCH -b1")
        start = await capable.wait_for("BATCH")
        self.assertEqual(start.params[1:], ("draft/multiline", "#ml"))
        self.assertTrue(start.prefix.startswith("writer!"))
        self.assertIn("+client-tag", start.tags)
        await capable.wait_for("BATCH")
        lines = capable.since("PRIVMSG")
        self.assertEqual([m.params[1] for m in lines], ["first line", "", "second ", "half"])
        self.assertEqual(["draft/multiline-concat" in m.tags for m in lines], [False, False, False, True])
        self.assertTrue(all("msgid" not in m.tags and "time" not in m.tags for m in lines))
        echo_start = await sender.wait_for("BATCH")
        self.assertEqual((echo_start.tags["label"], echo_start.tags["msgid"], echo_start.params[1]),
                         ("x1", start.tags["msgid"], "draft/multiline"))
        self.assertEqual(sender.since("ACK"), [])
        await plain.wait_for("PRIVMSG", lambda m: m.params[1] == "half")
        fallback = plain.since("PRIVMSG")
        self.assertEqual([m.params[1] for m in fallback], ["first line", "second ", "half"])
        self.assertEqual([m.tags.get("msgid") for m in fallback], [start.tags["msgid"], None, None])
        self.assertEqual({m.tags["time"] for m in fallback}, {start.tags["time"]})
        self.assertTrue(all("+client-tag" in m.tags for m in fallback))
        self.assertEqual(plain.since("BATCH"), [])

    async def test_broken_batches_are_fail_multiline_invalid(self) -> None:
        """A concat tag on a blank line, or another batch's tag while one is open."""
        server = await start_irc(self)
        sender = await server.registered(self, "writer", caps=MULTILINE_CAPS)
        sender.send("JOIN #ml")
        await sender.wait_for("366")
        sender.send("BATCH +a draft/multiline #ml")
        sender.send("@batch=a PRIVMSG #ml :hi")
        sender.send("@batch=a;draft/multiline-concat PRIVMSG #ml :")
        self.assertEqual((await sender.wait_for("FAIL")).params[:2], ("BATCH", "MULTILINE_INVALID"))
        sender.send("BATCH +b draft/multiline #ml")
        sender.send("@batch=c PRIVMSG #ml :hi")
        self.assertEqual((await sender.wait_for("FAIL")).params[:2], ("BATCH", "MULTILINE_INVALID"))

    async def test_over_the_limits_is_fail(self) -> None:
        server = await start_irc(self)
        sender = await server.registered(self, "writer", caps=MULTILINE_CAPS)
        sender.send("JOIN #ml")
        await sender.wait_for("366")
        sender.send("BATCH +big draft/multiline #ml")
        for _ in range(101):
            sender.send("@batch=big PRIVMSG #ml :line")
        fail = await sender.wait_for("FAIL")
        self.assertEqual(fail.params[:3], ("BATCH", "MULTILINE_MAX_LINES", "100"))
        sender.send("BATCH +other draft/multiline #elsewhere")
        sender.send("@batch=other PRIVMSG #ml :wrong target")
        fail = await sender.wait_for("FAIL")
        self.assertEqual(fail.params[:2], ("BATCH", "MULTILINE_INVALID_TARGET"))

    async def test_a_refused_batch_is_dropped_whole_and_its_fail_has_its_label(self) -> None:
        """
        Over the line limit: FAIL with the batch's label; the batch's other lines and its end
        are dropped, not sent as lines of their own (a message cut in two), nor a second FAIL.
        """
        server = await start_irc(self)
        caps = MULTILINE_CAPS + ("labeled-response", "echo-message")
        sender = await server.registered(self, "writer", caps=caps)
        reader = await server.registered(self, "reader")
        for client in (sender, reader):
            client.send("JOIN #ml")
            await client.wait_for("366")
        sender.send("@label=L1 BATCH +big draft/multiline #ml")
        for number in range(110):
            sender.send(f"@batch=big PRIVMSG #ml :line {number}")
        sender.send("BATCH -big")
        fail = await sender.wait_for("FAIL")
        self.assertEqual((fail.params[:3], fail.tags.get("label")), (("BATCH", "MULTILINE_MAX_LINES", "100"), "L1"))
        sender.send("PRIVMSG #ml :after")
        await reader.wait_for("PRIVMSG", lambda m: m.params[1] == "after")
        self.assertEqual([m.params[1] for m in reader.since("PRIVMSG")], ["after"])
        self.assertEqual(len(sender.since("FAIL")), 1)

    async def test_twisted_ircclient_gets_several_lines(self) -> None:
        """Twisted's IRCClient (no caps) gets a multiline batch's text as its lines."""
        server = await start_irc(self)
        sender = await server.registered(self, "writer", caps=MULTILINE_CAPS)
        sender.send("JOIN #tw")
        await sender.wait_for("366")
        joined: defer.Deferred = defer.Deferred()
        received: List[str] = []
        done: defer.Deferred = defer.Deferred()

        class Client(irc.IRCClient):
            nickname = "twisty"

            def signedOn(self) -> None:
                self.join("#tw")

            def joined(self, channel: str) -> None:
                joined.callback(channel)

            def privmsg(self, user: str, channel: str, message: str) -> None:
                received.append(message)
                if len(received) == 2:
                    done.callback(None)

        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.port.getHost().port)
        client: Any = await endpoints.connectProtocol(endpoint, Client())
        self.addCleanup(client.transport.loseConnection)
        await joined
        sender.send("BATCH +t draft/multiline #tw")
        sender.send("@batch=t PRIVMSG #tw :one")
        sender.send("@batch=t PRIVMSG #tw :two")
        sender.send("BATCH -t")
        await done.addTimeout(10, reactor)
        self.assertEqual(received, ["one", "two"])
