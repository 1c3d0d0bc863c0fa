"""
Tests for L{ilchat.cluster}: L{LocalCluster} on a clock, L{RedisCluster} on the real Redis (the
shared server with a unique prefix; a private ``redis-server`` for the restart). Heartbeat
timing runs on a ``task.Clock`` where the test drives the beats itself.
"""

from typing import Any, List, Tuple

from twisted.internet import defer, reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ilchat.cluster import ClusterUnavailable, DuplicateInstance, LocalCluster, RedisCluster
from ilchat.config import RedisConfig
from ilchat.redisbus import RedisUnavailable
from tests.support.private_redis import SHARED_REDIS_PORT, PrivateRedis, redis_command, shared_redis_prefix
from tests.support.server import free_port
from tests.test_redisbus import eventually


def capture_cluster_log(test: TestCase) -> List[str]:
    lines: List[str] = []

    def observer(event: Any) -> None:
        if event.get("log_namespace", "").startswith("ilchat.cluster"):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    test.addCleanup(globalLogPublisher.removeObserver, observer)
    return lines


async def started_cluster(test: TestCase, instance: str, prefix: str, port: int = SHARED_REDIS_PORT,
                          **options: Any) -> RedisCluster:
    """A started RedisCluster, stopped by a cleanup."""
    cluster = RedisCluster(RedisConfig(host="127.0.0.1", port=port, prefix=prefix, instance=instance),
                           reactor, **options)
    await cluster.start()
    test.addCleanup(cluster.stop)
    return cluster


class Events:
    """What the callbacks of one cluster object were called with, in order."""

    def __init__(self, cluster: Any) -> None:
        self.calls: List[Tuple[str, str]] = []
        cluster.on_instance_gone(lambda name: self.calls.append(("gone", name)))
        cluster.on_instance_seen(lambda name: self.calls.append(("seen", name)))
        cluster.on_departure(lambda name: self.calls.append(("departure", name)))


class LocalClusterTests(TestCase):
    async def test_one_process_holds_everything(self) -> None:
        clock = task.Clock()
        cluster = LocalCluster("solo", clock)
        await cluster.start()
        self.assertEqual(cluster.live_instances(), frozenset(["solo"]))
        self.assertTrue(await cluster.lock("purge", 60))
        self.assertFalse(await cluster.lock("purge", 60))
        clock.advance(60)
        self.assertTrue(await cluster.lock("purge", 60))
        await cluster.unlock("purge")
        self.assertTrue(await cluster.lock("purge", 60))
        self.assertTrue(await cluster.claim("nick", "bob"))
        await cluster.release("nick", "bob")
        self.assertEqual([await cluster.next_id("user") for _ in range(3)], [1, 2, 3])
        self.assertEqual(await cluster.next_id("other"), 1)
        await cluster.stop()

    def test_calls_complete_at_once(self) -> None:
        """No Redis, no waiting: a caller's coroutine runs through without a reactor turn."""
        cluster = LocalCluster("solo", task.Clock())
        d = defer.ensureDeferred(cluster.next_id("user"))
        self.assertEqual(self.successResultOf(d), 1)


class RedisClusterTests(TestCase):
    def setUp(self) -> None:
        self.prefix = shared_redis_prefix(self)
        self.log = capture_cluster_log(self)

    async def cluster(self, instance: str, port: int = SHARED_REDIS_PORT, clock: Any = None,
                      interval: float = 3.0, ttl: float = 10.0, start: bool = True) -> RedisCluster:
        cluster = RedisCluster(
            RedisConfig(host="127.0.0.1", port=port, prefix=self.prefix, instance=instance),
            reactor, interval=interval, ttl=ttl, clock=clock,
        )
        if start:
            await cluster.start()
            self.addCleanup(cluster.stop)
        return cluster

    async def redis(self, *args: str) -> str:
        return (await threads.deferToThread(redis_command, SHARED_REDIS_PORT, *args)).strip()

    async def tick(self, clock: task.Clock, *clusters: RedisCluster) -> None:
        """One heartbeat period on the clock, and wait until each cluster's beat and look are done."""
        clock.advance(clusters[0].interval)
        for cluster in clusters:
            if cluster._ticking is not None:
                await cluster._ticking

    async def test_live_instances_and_heartbeat_keys(self) -> None:
        a = await self.cluster("a")
        b = await self.cluster("b")
        self.assertEqual(b.live_instances(), frozenset(["a", "b"]))
        self.assertEqual(a.live_instances(), frozenset(["a"]))  # a has not looked since
        ttl = int(await self.redis("TTL", f"{self.prefix}instance:b"))
        self.assertTrue(0 < ttl <= 10, ttl)
        self.assertEqual(sorted((await self.redis("HKEYS", f"{self.prefix}instances")).split()), ["a", "b"])
        self.assertIn("Cluster: instance b announced in Redis at 127.0.0.1:6379 (other live instances: a)",
                      self.log)

    async def test_lock_is_exclusive_renewable_and_expires(self) -> None:
        a, b = await self.cluster("a"), await self.cluster("b")
        self.assertTrue(await a.lock("purge", 0.3))
        self.assertFalse(await b.lock("purge", 60))
        self.assertTrue(await a.lock("purge", 60))  # held: renewed
        await b.unlock("purge")  # not b's: no effect
        self.assertFalse(await b.lock("purge", 60))
        await a.unlock("purge")
        self.assertTrue(await b.lock("purge", 0.2))
        pttl = int(await self.redis("PTTL", f"{self.prefix}lock:purge"))
        self.assertTrue(0 < pttl <= 200, pttl)
        deadline = reactor.seconds() + 10
        while not await a.lock("purge", 60):  # b's lock expires by itself (PX)
            self.assertLess(reactor.seconds(), deadline)
            await task.deferLater(reactor, 0.05, lambda: None)

    async def test_claims_are_unique_with_their_owner(self) -> None:
        a, b = await self.cluster("a"), await self.cluster("b")
        self.assertTrue(await a.claim("nick", "Bob"))
        self.assertTrue(await a.claim("nick", "Bob"))  # already a's
        self.assertFalse(await b.claim("nick", "Bob"))
        self.assertTrue(await b.claim("name", "Bob"))  # another namespace
        owner = await self.redis("HGET", f"{self.prefix}claim:nick", "Bob")
        self.assertEqual(owner.split()[0], "a")
        await b.release("nick", "Bob")  # not b's: no effect
        self.assertFalse(await b.claim("nick", "Bob"))
        await a.release("nick", "Bob")
        self.assertTrue(await b.claim("nick", "Bob"))
        self.assertTrue(await b.claim("nick", "line\nbreak: and spaces"))

    async def test_next_id_unique_across_processes(self) -> None:
        a, b = await self.cluster("a"), await self.cluster("b")
        ids = await defer.gatherResults(
            [defer.ensureDeferred(c.next_id("user")) for _ in range(50) for c in (a, b)]
        )
        self.assertEqual(sorted(ids), list(range(1, 101)))
        self.assertEqual(await a.next_id("irc-open"), 1)

    async def test_a_dead_peer_is_gone_once_handled_once_and_seen_when_back(self) -> None:
        """
        b stops beating without a word (as after SIGKILL; its heartbeat expired): a and c call
        their gone callbacks once, one of them handles the departure (b's claims released, b
        out of the registry); when b beats again it is seen again.
        """
        clock = task.Clock()
        a = await self.cluster("a", clock=clock)
        c = await self.cluster("c", clock=clock)
        b = await self.cluster("b", clock=task.Clock(), start=False)
        await b.start()
        self.addCleanup(b.stop)
        self.assertTrue(await b.claim("nick", "Bob"))
        events_a, events_c = Events(a), Events(c)
        await self.tick(clock, a, c)
        self.assertEqual(events_a.calls, [("seen", "b"), ("seen", "c")])
        self.assertEqual(events_c.calls, [("seen", "b")])
        del events_a.calls[:]

        await self.redis("DEL", f"{self.prefix}instance:b")  # b's TTL ran out
        await self.tick(clock, a, c)
        await self.tick(clock, a, c)
        self.assertEqual(events_a.calls.count(("gone", "b")), 1)
        self.assertEqual(events_c.calls.count(("gone", "b")), 1)
        departures = events_a.calls.count(("departure", "b")) + events_c.calls.count(("departure", "b"))
        self.assertEqual(departures, 1)
        self.assertEqual(a.live_instances(), frozenset(["a", "c"]))
        self.assertEqual(await self.redis("HEXISTS", f"{self.prefix}instances", "b"), "0")
        self.assertTrue(await a.claim("nick", "Bob"))  # released with b's departure
        await a.release("nick", "Bob")

        # b was only frozen: its next beat announces it again, and it claims its names again
        # (here: taken by nobody since, so it gets Bob back).
        await b._beat()
        await self.tick(clock, a, c)
        self.assertEqual(events_a.calls[-1], ("seen", "b"))
        self.assertEqual(events_c.calls[-1], ("seen", "b"))
        self.assertEqual(len(events_a.calls), 2 + events_a.calls.count(("departure", "b")))
        owner = await self.redis("HGET", f"{self.prefix}claim:nick", "Bob")
        self.assertEqual(owner.split()[0], "b")

    async def test_clean_stop_removes_the_heartbeat_and_claims_at_once(self) -> None:
        clock = task.Clock()
        a = await self.cluster("a", clock=clock)
        b = await self.cluster("b", clock=task.Clock(), start=False)
        await b.start()
        self.addCleanup(b.stop)
        await b.claim("name", "Alice")
        events = Events(a)
        await self.tick(clock, a)
        await b.stop()
        self.assertEqual(await self.redis("EXISTS", f"{self.prefix}instance:b"), "0")
        self.assertEqual(await self.redis("HEXISTS", f"{self.prefix}instances", "b"), "0")
        self.assertEqual(await self.redis("HEXISTS", f"{self.prefix}claim:name", "Alice"), "0")
        await self.tick(clock, a)
        self.assertEqual(events.calls, [("seen", "b"), ("gone", "b"), ("departure", "b")])

    async def test_duplicate_instance_name_is_refused_at_start(self) -> None:
        await self.cluster("same", interval=0.2, ttl=2)
        twin = await self.cluster("same", interval=0.2, ttl=2, start=False)
        error = await self.assertFailure(defer.ensureDeferred(twin.start()), DuplicateInstance)
        self.assertIn("Instance name 'same' is in use by another live process", str(error))
        self.assertNotIn("\n", str(error))
        self.assertFalse(twin._link.running)

    async def test_a_dead_predecessor_of_the_same_name_is_taken_over(self) -> None:
        """Restarted at once after SIGKILL: the old heartbeat is stale, its claims are freed."""
        old = await self.cluster("node", clock=task.Clock(), interval=0.2, start=False)
        await old.start()
        self.addCleanup(old._link.stop)
        await old.claim("nick", "Bob")
        await old._link.stop()  # killed: no clean-up of its own
        old._stopping = True
        new = await self.cluster("node", interval=0.2)
        self.assertEqual(new.live_instances(), frozenset(["node"]))
        other = await self.cluster("other")
        self.assertTrue(await other.claim("nick", "Bob"))
        beat = await self.redis("GET", f"{self.prefix}instance:node")
        self.assertTrue(beat.startswith(new._token + "/"), beat)

    async def test_unreachable_at_start(self) -> None:
        port = free_port()
        cluster = await self.cluster("a", port=port, start=False)
        error = await self.assertFailure(defer.ensureDeferred(cluster.start()), RedisUnavailable)
        self.assertIn(f"Redis at 127.0.0.1:{port} unreachable", str(error))


class RedisRestartTests(TestCase):
    timeout = 120

    async def test_restarted_redis_gets_heartbeats_and_claims_again(self) -> None:
        """
        Redis restarted empty: each process re-announces itself (one line), its claims are
        in Redis again, and nobody declared the other gone.
        """
        log = capture_cluster_log(self)
        redis = await PrivateRedis.start_for(self)
        a, b = [await started_cluster(self, name, "p:", redis.port, interval=0.3, ttl=1.0) for name in ("a", "b")]
        await eventually(lambda: a.live_instances() == frozenset(["a", "b"]))
        events = Events(a)
        self.assertTrue(await b.claim("nick", "Bob"))

        await redis.stop()
        await eventually(lambda: a._link.protocol is None and b._link.protocol is None)
        await task.deferLater(reactor, 1.5, lambda: None)  # several failed attempts
        await redis.start()

        def registered() -> str:
            return redis_command(redis.port, "HGET", "p:claim:nick", "Bob").strip()

        deadline = reactor.seconds() + 30
        while not (await threads.deferToThread(registered)).startswith("b "):
            self.assertLess(reactor.seconds(), deadline, log)
            await task.deferLater(reactor, 0.1, lambda: None)
        await task.deferLater(reactor, 1.5, lambda: None)  # a few looks after the restart
        self.assertEqual(a.live_instances(), frozenset(["a", "b"]))
        self.assertNotIn(("gone", "b"), events.calls)
        self.assertFalse(await a.claim("nick", "Bob"))
        for name in ("a", "b"):
            back = [line for line in log if "is back; instance " + name in line]
            lost = [line for line in log if "lost; heartbeats paused" in line]
            self.assertEqual(len(back), 1, log)
        self.assertEqual(len(lost), 2, log)


class IdBlocksTests(TestCase):
    def setUp(self) -> None:
        self.prefix = shared_redis_prefix(self)

    async def test_local_ids_count_up_across_blocks(self) -> None:
        ids = LocalCluster("solo", task.Clock()).ids("user", block=4)
        await ids.ready()
        self.assertEqual([ids.take() for _ in range(10)], list(range(1, 11)))

    async def test_two_processes_take_distinct_ids_without_waiting(self) -> None:
        made = [(await started_cluster(self, name, self.prefix)).ids("irc-open", block=10) for name in ("a", "b")]
        for ids in made:
            await ids.ready()
        taken: List[int] = []
        for _ in range(4):
            for ids in made:
                for _ in range(4):
                    taken.append(ids.take())  # synchronous: reserved ahead
            for ids in made:
                if ids._reserving is not None:
                    await ids._reserving
        self.assertEqual(len(set(taken)), len(taken))
        self.assertEqual(min(taken), 1)
        # next_id counts on the same counter, after every reserved block.
        self.assertGreater(await made[0]._reserve("irc-open", 1), max(taken))

    async def test_no_reserved_id_left_is_an_error(self) -> None:
        cluster = await started_cluster(self, "a", self.prefix)
        ids = cluster.ids("user", block=2)
        await ids.ready()
        await cluster.stop()  # Redis away for this process
        self.assertEqual([ids.take(), ids.take()], [1, 2])
        self.assertRaises(ClusterUnavailable, ids.take)

    async def test_open_mode_irc_ids_unique_across_networks(self) -> None:
        """Two processes' IRC networks hand out distinct negative ids from one counter."""
        from ilchat.irc.network import IrcNetwork
        from tests.irc.support import make_config

        networks = []
        for name in ("a", "b"):
            cluster = await started_cluster(self, name, self.prefix)
            network = IrcNetwork(make_config(), reactor)
            network.open_ids = cluster.ids("irc-open")
            await network.open_ids.ready()
            networks.append(network)
        ids = [network.allocate_open_id() for _ in range(3) for network in networks]
        self.assertEqual(len(set(ids)), 6)
        self.assertTrue(all(user_id < 0 for user_id in ids), ids)
        self.assertEqual(IrcNetwork(make_config(), reactor).allocate_open_id(), -1)  # alone: -1, -2...


class IdsAcrossRedisRestartTests(TestCase):
    """A Redis that keeps nothing on disk restarts: no id handed out before is handed out again."""

    timeout = 120

    async def take_all(self, ids: Any, count: int) -> List[int]:
        """C{count} ids, waiting for each background reservation (as time passing would)."""
        taken: List[int] = []
        while len(taken) < count:
            taken.append(ids.take())
            if ids._reserving is not None:
                await ids._reserving
        return taken

    async def test_ids_stay_unique_when_redis_restarts_empty(self) -> None:
        redis = await PrivateRedis.start_for(self)
        a, b = [await started_cluster(self, name, "p:", redis.port, interval=0.3, ttl=1.0)
                for name in ("a", "b")]
        ids_a, ids_b = a.ids("user", block=10), b.ids("user", block=10)
        await ids_a.ready()
        await ids_b.ready()
        before = await self.take_all(ids_a, 3) + await self.take_all(ids_b, 3)
        # b reserves blocks a never sees (no look in between): only the margin keeps them apart.
        await a._note_counters()
        before += await self.take_all(ids_b, 30)
        await redis.stop()
        await eventually(lambda: a._link.protocol is None and b._link.protocol is None)
        await redis.start()
        await eventually(lambda: a._link.protocol is not None and b._link.protocol is not None)
        after = await self.take_all(ids_a, 25) + await self.take_all(ids_b, 25)
        taken = before + after
        self.assertEqual(len(set(taken)), len(taken), sorted(taken))
        self.assertGreater(min(await self.take_all(ids_a, 10)), max(before))

    async def test_every_process_and_redis_restarted_start_above_the_store(self) -> None:
        """Nobody remembers the counter: the seed (the store's highest id) does."""
        redis = await PrivateRedis.start_for(self)
        cluster = await started_cluster(self, "a", "p:", redis.port)

        async def seed() -> int:
            return 1234

        ids = cluster.ids("standalone-user:x", block=10, seed=seed)
        await ids.ready()
        self.assertGreater(ids.take(), 1234)
        local = LocalCluster("solo", task.Clock()).ids("user", block=4, seed=seed)
        await local.ready()
        self.assertEqual([local.take() for _ in range(3)], [1235, 1236, 1237])


class KeptIdsTests(TestCase):
    """Ids the store does not hold (open-mode IRC ids): the process's state file carries them."""

    timeout = 120

    def keep(self) -> Any:
        from ilchat.statefile import StateFile

        return StateFile(self.mktemp())

    async def test_every_process_and_redis_restarted_start_above_the_kept_counter(self) -> None:
        redis = await PrivateRedis.start_for(self)
        keep = self.keep()
        cluster = await started_cluster(self, "a", "p:", redis.port)
        ids = cluster.ids("irc-open", block=10, keep=keep)
        await ids.ready()
        # Kept before the first id is handed out: a crash from now on loses nothing.
        self.assertEqual(keep.take(), {"counter": "irc-open", "known": 10})
        before = [ids.take() for _ in range(8)]
        if ids._reserving is not None:
            await ids._reserving
        await ids._writing
        await cluster.stop()
        await redis.stop()
        await redis.start()
        again = await started_cluster(self, "a", "p:", redis.port)
        after = again.ids("irc-open", block=10, keep=keep)
        await after.ready()
        self.assertGreater(after.take(), max(before))

    async def test_one_process_alone_goes_on_above_its_last_run(self) -> None:
        keep = self.keep()
        first = LocalCluster("solo", task.Clock()).ids("irc-open", block=4, keep=keep)
        await first.ready()
        self.assertEqual([first.take() for _ in range(3)], [1, 2, 3])
        second = LocalCluster("solo", task.Clock()).ids("irc-open", block=4, keep=keep)
        await second.ready()
        self.assertGreater(second.take(), 3)

    async def test_a_file_of_another_counter_or_not_json_is_not_a_seed(self) -> None:
        lines = capture_cluster_log(self)
        keep = self.keep()
        await keep.write({"counter": "other", "known": 500})
        ids = LocalCluster("solo", task.Clock()).ids("irc-open", block=4, keep=keep)
        await ids.ready()
        self.assertEqual(ids.take(), 1)
        with open(keep.path, "w") as f:
            f.write("{not json")
        ids = LocalCluster("solo", task.Clock()).ids("irc-open", block=4, keep=keep)
        await ids.ready()
        self.assertEqual(ids.take(), 1)
        self.assertEqual(len([line for line in lines if "not seeded from the last run" in line]), 2, lines)
