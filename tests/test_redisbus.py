"""
Tests for L{ilchat.redisbus}: real Redis. The shared server (127.0.0.1:6379) with a unique
prefix per test; a private ``redis-server`` for the restart.
"""

import os
import time
from typing import Any, Callable, List, Tuple

import txredisapi
from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from ilchat.bus import IBus, LocalBus
from ilchat.config import RedisConfig
from ilchat.jsonutil import dumps
from ilchat.redisbus import RedisBus, RedisUnavailable
from tests.support.private_redis import SHARED_REDIS_PORT, PrivateRedis, redis_command, shared_redis_prefix
from tests.support.server import free_port
from tests.test_tls import make_pki


async def eventually(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await task.deferLater(reactor, 0.01, lambda: None)


def capture_bus_log(test: TestCase) -> List[Tuple[LogLevel, str]]:
    """The lines RedisBus logs during the test: (level, text)."""
    lines: List[Tuple[LogLevel, str]] = []

    def observer(event: Any) -> None:
        if event.get("log_namespace", "").startswith("ilchat.redisbus"):
            lines.append((event["log_level"], formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


class RedisBusTestsMixin:
    async def bus(
        self, instance: str, port: int = SHARED_REDIS_PORT, timeout: float = 10.0, **config: Any
    ) -> RedisBus:
        config.setdefault("host", "127.0.0.1")
        bus = RedisBus(
            LocalBus(instance, reactor, strict=True),
            RedisConfig(port=port, prefix=self.prefix, instance=instance, **config),
            reactor,
            timeout=timeout,
        )
        await bus.start()
        self.addCleanup(bus.close)
        return bus

    async def raw_publish(self) -> Callable[[str], "defer.Deferred[Any]"]:
        """PUBLISH on the channel of topic ``room:x`` from a plain txredisapi connection."""
        client = await txredisapi.Connection("127.0.0.1", SHARED_REDIS_PORT, reconnect=False)
        self.addCleanup(client.disconnect)
        return lambda message: client.publish(self.prefix + "bus:room:x", message)

    def collect(self, bus: RedisBus, topic: str) -> List[Any]:
        seen: List[Any] = []
        self.addCleanup(bus.subscribe(topic, seen.append))
        return seen


class SharedRedisTests(RedisBusTestsMixin, TestCase):
    def setUp(self) -> None:
        self.prefix = shared_redis_prefix(self)
        self.log = capture_bus_log(self)

    async def test_provides_interface(self) -> None:
        """RedisBus is an IBus whose instance is the local bus's."""
        bus = await self.bus("proc-a")
        self.assertTrue(verifyObject(IBus, bus))
        self.assertEqual(bus.instance, "proc-a")
        self.assertTrue(bus.connected)

    async def test_two_buses_exchange_envelopes_in_order_without_echoes(self) -> None:
        """
        Each bus's subscribers get its own events once (locally, no echo from Redis) and the
        other's as the same envelope, each publisher's events in publish order.
        """
        a, b = await self.bus("proc-a"), await self.bus("proc-b")
        seen_a, seen_b = self.collect(a, "room:x"), self.collect(b, "room:x")
        await a.subscribed()
        await b.subscribed()
        for n in range(50):
            a.publish("room:x", {"type": "message", "n": n, "text": "h\u00e9llo"})
            b.publish("room:x", {"type": "message", "n": n})
        await eventually(lambda: len(seen_a) >= 100 and len(seen_b) >= 100)
        # A marker published after all that: once it arrived, every echo has come back too.
        a.publish("room:x", {"type": "end"})
        b.publish("room:x", {"type": "end"})
        await eventually(lambda: len(seen_a) >= 102 and len(seen_b) >= 102)
        await task.deferLater(reactor, 0.2, lambda: None)
        for seen in (seen_a, seen_b):
            self.assertEqual(len(seen), 102)
            for origin in ("proc-a", "proc-b"):
                mine = [e["event"].get("n") for e in seen if e["origin"] == origin]
                self.assertEqual(mine, list(range(50)) + [None])
        self.assertIn(
            {"v": 1, "origin": "proc-a", "topic": "room:x",
             "event": {"type": "message", "n": 7, "text": "h\u00e9llo"}},
            seen_b,
        )
        # Local events first: a's own events reach a's subscriber in publish order, before any later turn.
        self.assertEqual(seen_a[0]["origin"], "proc-a")

    async def test_local_delivery_on_a_later_turn(self) -> None:
        """Like LocalBus: nothing is delivered inside publish."""
        a = await self.bus("proc-a")
        seen = self.collect(a, "t")
        a.publish("t", {"type": "x"})
        self.assertEqual(seen, [])
        await eventually(lambda: len(seen) == 1)

    async def test_published_without_local_subscribers(self) -> None:
        """An event with no subscriber in this process still reaches the other processes."""
        a, b = await self.bus("proc-a"), await self.bus("proc-b")
        seen_b = self.collect(b, "osc:c")
        await b.subscribed()
        a.publish("osc:c", {"type": "x"})
        await eventually(lambda: len(seen_b) == 1)
        self.assertEqual(seen_b[0]["origin"], "proc-a")

    async def test_redis_channels_follow_local_topics(self) -> None:
        """A topic's channel is subscribed while the topic has a local subscriber, and only then."""
        a = await self.bus("proc-a")
        channel = self.prefix + "bus:room:x"

        def numsub() -> int:
            return int(redis_command(SHARED_REDIS_PORT, "PUBSUB", "NUMSUB", channel).split()[1])

        first = a.subscribe("room:x", lambda e: None)
        second = a.subscribe("room:x", lambda e: None)
        await a.subscribed()
        self.assertEqual(await threads.deferToThread(numsub), 1)
        first()
        first()  # twice: no effect
        await a.subscribed()
        self.assertEqual(await threads.deferToThread(numsub), 1)
        second()
        await a.subscribed()
        self.assertEqual(await threads.deferToThread(numsub), 0)

    async def test_unreadable_messages_are_logged_and_dropped(self) -> None:
        """Bad JSON, another version, a wrong topic, no event: logged (rate-limited), dropped."""
        a = await self.bus("proc-a")
        seen = self.collect(a, "room:x")
        await a.subscribed()
        channel = self.prefix + "bus:room:x"
        good = '{"v":1,"origin":"other","topic":"room:x","event":{"type":"ok"}}'
        bad = [
            "not json",
            "{",
            "[1,2]",
            "42",
            '{"v":2,"origin":"other","topic":"room:x","event":{"type":"x"}}',
            '{"v":1,"origin":"other","topic":"room:y","event":{"type":"x"}}',
            '{"v":1,"origin":"other","topic":"room:x","event":"x"}',
            '{"v":1,"topic":"room:x","event":{"type":"x"}}',
            '{"v":1,"origin":"other","topic":"room:x","event":{"type":NaN}}',
        ]
        publish = await self.raw_publish()
        for message in bad + ["not json"] * 20 + [good]:
            await publish(message)
        await eventually(lambda: len(seen) == 1)
        self.assertEqual(seen[0]["event"], {"type": "ok"})
        self.assertTrue(a.connected)
        warnings = [text for level, text in self.log if level == LogLevel.warn]
        # One line per kind of bad message: the 20 repeats are counted, not written.
        self.assertEqual(len(warnings), len(bad) - 1, warnings)
        self.assertTrue(all(text.startswith(f"Dropped a bus message on {channel}") for text in warnings))
        self.assertTrue(any("version 2, expected 1" in text for text in warnings), warnings)
        self.assertTrue(any("topic does not match the channel" in text for text in warnings), warnings)

    async def test_checked_topics_drop_events_their_check_refuses(self) -> None:
        """check_events vets what other processes send, before any subscriber; a refusal is logged."""
        a = await self.bus("proc-a")

        def check(event: Any) -> None:
            if not isinstance(event.get("n"), int):
                raise ValueError("n is not a number")

        a.check_events("room:x", check)
        seen = self.collect(a, "room:x")
        await a.subscribed()
        publish = await self.raw_publish()
        for n in ('"one"', "1"):
            await publish('{"v":1,"origin":"other","topic":"room:x","event":{"type":"t","n":%s}}' % n)
        await eventually(lambda: len(seen) == 1)
        self.assertEqual(seen[0]["event"], {"type": "t", "n": 1})
        warnings = [text for level, text in self.log if level == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("cannot be read: n is not a number", warnings[0])

    async def test_own_instance_from_redis_is_dropped(self) -> None:
        """An envelope with this process's origin is its echo: never delivered twice."""
        a = await self.bus("proc-a")
        seen = self.collect(a, "room:x")
        await a.subscribed()
        publish = await self.raw_publish()
        await publish('{"v":1,"origin":"proc-a","topic":"room:x","event":{"type":"x"}}')
        await publish('{"v":1,"origin":"proc-b","topic":"room:x","event":{"type":"y"}}')
        await eventually(lambda: len(seen) == 1)
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual([e["event"]["type"] for e in seen], ["y"])

    async def test_messages_of_one_read_are_delivered_in_one_turn(self) -> None:
        """
        Bus messages that arrive together are delivered in one reactor turn (so a room's
        fan-out joins them into one write per connection), not one turn each: txredisapi on
        its own parses what follows each bulk string in a later turn.
        """
        a = await self.bus("proc-a")
        ticks = [0]
        ticker: List[Any] = []

        def tick() -> None:  # counts reactor turns while the test runs
            ticks[0] += 1
            ticker[:] = [reactor.callLater(0, tick)]

        tick()
        self.addCleanup(lambda: ticker[0].cancel())
        turns: List[int] = []
        self.addCleanup(a.subscribe("room:x", lambda envelope: turns.append(ticks[0])))
        await a.subscribed()
        publish = await self.raw_publish()
        # Twenty PUBLISH commands written in one turn: one write, and Redis forwards them together.
        await defer.gatherResults([
            publish('{"v":1,"origin":"other","topic":"room:x","event":{"type":"m","n":%d}}' % n)
            for n in range(20)
        ])
        await eventually(lambda: len(turns) == 20)
        self.assertLessEqual(len(set(turns)), 2, turns)

    async def test_messages_split_across_reads_arrive_whole_and_in_order(self) -> None:
        """Many messages, one of 300 KB: the reads end anywhere inside them, nothing is lost."""
        a = await self.bus("proc-a")
        seen = self.collect(a, "room:x")
        await a.subscribed()
        publish = await self.raw_publish()
        texts = ["\u00e9" * (n * 37 % 1500) for n in range(300)]
        texts[150] = "x" * 300_000
        await defer.gatherResults([
            publish(dumps({"v": 1, "origin": "other", "topic": "room:x",
                           "event": {"type": "m", "n": n, "text": text}}))
            for n, text in enumerate(texts)
        ])
        await eventually(lambda: len(seen) == 300)
        self.assertEqual([e["event"]["n"] for e in seen], list(range(300)))
        self.assertEqual([e["event"]["text"] for e in seen], texts)

    async def test_not_json_raises_in_the_publisher(self) -> None:
        """A value Redis could not carry raises at publish, and nothing is delivered."""
        a = await self.bus("proc-a")
        seen = self.collect(a, "t")
        self.assertRaises(TypeError, a.publish, "t", {"type": "x", "o": object()})
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(seen, [])

    async def test_unreachable_at_start(self) -> None:
        """No Redis on the port: start fails with one line naming the address."""
        port = free_port()
        bus = RedisBus(LocalBus("p", reactor), RedisConfig(host="127.0.0.1", port=port, prefix=self.prefix,
                                                           instance="p"), reactor)
        error = await self.assertFailure(defer.ensureDeferred(bus.start()), RedisUnavailable)
        self.assertIn(f"Redis at 127.0.0.1:{port} unreachable", str(error))
        self.assertNotIn("\n", str(error))


class PrivateRedisTests(RedisBusTestsMixin, TestCase):
    def setUp(self) -> None:
        self.prefix = "ilchat-test:"
        self.log = capture_bus_log(self)

    async def test_restart_reconnects_resubscribes_and_logs_once_each_way(self) -> None:
        """
        Redis restarted: local delivery goes on meanwhile, one "lost" and one "back" line per
        bus, and events cross again once both buses are back.
        """
        redis = await PrivateRedis.start_for(self)
        a, b = await self.bus("proc-a", redis.port), await self.bus("proc-b", redis.port)
        seen_a, seen_b = self.collect(a, "room:x"), self.collect(b, "room:x")
        resumed: list = []
        a.on_resumed(lambda: resumed.append("a"))
        b.on_resumed(lambda: resumed.append("b"))()  # removed again: never called
        await a.subscribed()
        await b.subscribed()
        a.publish("room:x", {"type": "before"})
        await eventually(lambda: len(seen_b) == 1)
        self.assertEqual(resumed, [])  # the first connection is no resumption

        await redis.stop()
        await eventually(lambda: not a.connected and not b.connected)
        a.publish("room:x", {"type": "during"})  # this process's subscribers only
        await eventually(lambda: len(seen_a) == 2)
        await task.deferLater(reactor, 1.5, lambda: None)  # a few failed attempts, no lines

        await redis.start()
        await eventually(lambda: a.connected and b.connected)
        a.publish("room:x", {"type": "after"})
        b.publish("room:x", {"type": "after-b"})
        await eventually(lambda: len(seen_b) == 3 and len(seen_a) == 4)
        # Each process's own event first (local delivery), the other's when Redis brings it.
        self.assertEqual([e["event"]["type"] for e in seen_b], ["before", "after-b", "after"])
        self.assertEqual(sorted(e["event"]["type"] for e in seen_a), ["after", "after-b", "before", "during"])
        self.assertEqual([e["event"]["type"] for e in seen_a][:2], ["before", "during"])

        lost = [text for level, text in self.log if " lost: " in text]
        back = [text for level, text in self.log if " is back: " in text]
        self.assertEqual(len(lost), 2, self.log)  # one per bus
        self.assertEqual(len(back), 2, self.log)
        self.assertIn("cross-process delivery is degraded", lost[0])
        self.assertIn("1 topics subscribed again", back[0])
        self.assertEqual(resumed, ["a"])  # once, when both connections of a were back

    async def test_password_and_database(self) -> None:
        """AUTH and SELECT before the bus counts as connected; a wrong password fails the start."""
        redis = await PrivateRedis.start_for(self, password="s3cret")
        a = await self.bus("proc-a", redis.port, password="s3cret", db=3)
        b = await self.bus("proc-b", redis.port, password="s3cret", db=3)
        seen = self.collect(b, "t")
        await b.subscribed()
        a.publish("t", {"type": "x"})
        await eventually(lambda: len(seen) == 1)
        bus = RedisBus(LocalBus("p", reactor), RedisConfig(host="127.0.0.1", port=redis.port, prefix=self.prefix,
                                                           instance="p", password="wrong"), reactor)
        error = await self.assertFailure(defer.ensureDeferred(bus.start()), RedisUnavailable)
        self.assertIn("AUTH refused", str(error))

    async def test_tls_verified_against_the_ca_file(self) -> None:
        """``tls`` with ``ca_file``: TLS to Redis, verified; without the CA the start fails."""
        pki = make_pki(self._pki_folder())
        redis = await PrivateRedis.start_for(self, tls=pki)
        a = await self.bus("proc-a", redis.port, host="localhost", tls=True, ca_file=pki["root"])
        b = await self.bus("proc-b", redis.port, host="localhost", tls=True, ca_file=pki["root"])
        seen = self.collect(b, "t")
        await b.subscribed()
        a.publish("t", {"type": "x"})
        await eventually(lambda: len(seen) == 1)
        untrusted = RedisBus(LocalBus("p", reactor), RedisConfig(host="localhost", port=redis.port, prefix=self.prefix,
                                                                 instance="p", tls=True), reactor)
        error = await self.assertFailure(defer.ensureDeferred(untrusted.start()), RedisUnavailable)
        self.assertIn(f"Redis at localhost:{redis.port} unreachable: connection lost: ", str(error))
        self.assertIn("certificate verify failed", str(error))

    def _pki_folder(self) -> str:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        return folder

    async def test_hung_redis_counts_as_down(self) -> None:
        """
        A Redis that accepts connections and answers nothing: the start fails after the
        timeout; while running, an unanswered publish drops the connection (degraded), and the
        bus is back once Redis answers again.
        """
        redis = await PrivateRedis.start_for(self)
        redis.freeze()
        hung = RedisBus(LocalBus("p", reactor), RedisConfig(host="127.0.0.1", port=redis.port, prefix=self.prefix,
                                                            instance="p"), reactor, timeout=0.5)
        error = await self.assertFailure(defer.ensureDeferred(hung.start()), RedisUnavailable)
        self.assertIn("no answer to PING in 0.5 s", str(error))
        redis.thaw()

        a = await self.bus("proc-a", redis.port, timeout=0.5)
        seen = self.collect(a, "t")
        redis.freeze()
        a.publish("t", {"type": "x"})
        await eventually(lambda: not a.connected)
        self.assertEqual(len(seen), 1)  # delivered locally all the same
        redis.thaw()
        await eventually(lambda: a.connected)
        self.assertEqual(len([t for _, t in self.log if " lost: " in t]), 1, self.log)
        self.assertEqual(len([t for _, t in self.log if " is back: " in t]), 1, self.log)
