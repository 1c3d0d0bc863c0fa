# -*- test-case-name: tests.test_cluster_state -*-
"""
What the processes of one site know of each other: who is live, locks, names unique across the
cluster, ids.

Two classes with the same API; ``ilchat.service`` builds one next to the bus (server.cfg
``redis``: L{RedisCluster}; none: L{LocalCluster}), so callers never ask whether there is Redis::

    cluster.instance                      # this process's name (redis.instance)
    cluster.live_instances()              # frozenset of live names, this one included
    await cluster.live_now()              # the same, read from Redis now (decisions at stop)
    cluster.on_instance_gone(cb)          # cb(name) once per departure of another instance
    cluster.on_instance_seen(cb)          # cb(name) when another instance (re)appears
    cluster.on_departure(cb)              # cb(name) on the ONE process that handles a departure
    await cluster.lock(name, ttl)         # -> bool: this process holds the lock (SET NX PX)
    await cluster.unlock(name)
    await cluster.claim(namespace, key)   # -> bool: the key is this instance's in the cluster
    await cluster.release(namespace, key)
    await cluster.next_id(counter)        # -> int, 1, 2, ... unique across the cluster (INCR)
    ids = cluster.ids(counter, seed=None, keep=None)  # IdBlocks: await ready(), take() -> int
    await cluster.start(); await cluster.stop()

Redis keys (``<prefix>`` is ``redis.prefix``): ``instance:<name>`` the heartbeat (value
``<token>/<beat>``, a random token per process start, set with a TTL every
``interval`` seconds), the hash ``instances`` (name -> token of every announced instance),
``lock:<name>`` (the holder's token), ``claim:<namespace>`` (hash key -> ``"<instance>
<token>"``), ``claims:<instance>:<token>`` (what one process claimed, ``namespace\\nkey``),
``id:<counter>`` (INCR; blocks of ids: see L{IdBlocks}, which survive a Redis that restarts
empty), ``departed:<instance>:<token>`` (who handled a departure). Every
change of more than one key is a Lua script, so each is atomic. Plain Redis, not Redis Cluster
(the scripts compute key names).

Liveness: every process beats and reads the heartbeats of the registry every ``interval``; an
instance whose heartbeat is missing, or whose token changed (it was restarted), has departed:
the gone callbacks run once, and one process (the first to take ``departed:<name>:<token>``)
releases its claims, drops it from the registry and runs the departure callbacks. A peer that
beats again is "seen" again. A clean stop releases this process's claims and deletes its
heartbeat at once. After Redis comes back (restarted, empty), the next beat re-announces the
process and claims its names again; departures are not judged for ``interval * 1.5`` seconds
after a reconnection, so the others have beaten again by then. At start, a heartbeat of this
instance's name that is still being refreshed by someone else is L{DuplicateInstance}.
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.logs import RepeatedLog
from ilchat.redisbus import TIMEOUT, CommandProtocol, RedisLink, RedisUnavailable, start_links
from ilchat.statefile import StateFileError

__all__ = [
    "ClusterUnavailable",
    "IdBlocks",
    "DuplicateInstance",
    "LocalCluster",
    "RedisCluster",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TTL",
]

#: Seconds between two heartbeats (and two looks at the others').
HEARTBEAT_INTERVAL = 3.0
#: Seconds a heartbeat lives: a process that stopped beating is gone after at most this plus
#: one interval.
HEARTBEAT_TTL = 10.0
#: Seconds the record of a handled departure is kept (one handler per departure).
DEPARTED_TTL = 24 * 3600
#: Ids an L{IdBlocks} reserves at once: another block is asked for when half is used.
ID_BLOCK = 1000
#: Blocks skipped when a reservation finds its counter below what this process knew of it
#: (Redis restarted empty): the blocks other processes reserved in the seconds before the loss,
#: not seen here yet, stay behind the new ones.
ID_MARGIN_BLOCKS = 10

Callback = Callable[[str], Any]


class ClusterUnavailable(Exception):
    """Redis is down: a lock or an id cannot be had now (the caller decides what to do)."""


class DuplicateInstance(Exception):
    """Another live process already has this instance name; ``str()`` is the one line."""


class IdBlocks:
    """
    Ids unique across the cluster, and across a restart of a Redis that keeps nothing on disk,
    for callers that cannot wait (a login handled in one turn): blocks of C{block} ids are
    reserved ahead, and C{take()} hands them out in order; another block is reserved in the
    background when half of the current one is used. ``await ready()`` once before the first
    C{take()}. Without a reserved id left (Redis away for a whole half block) C{take()} raises
    L{ClusterUnavailable}. One process alone (L{LocalCluster}) counts 1, 2, 3... as a plain
    counter would.

    Each reservation carries the highest value this process knows of the counter (L{known}:
    its own blocks, the counter as every heartbeat look reads it, C{seed()}, the highest
    id the store holds, and the value C{keep} held, both read at L{ready}); a counter below it
    was lost (Redis restarted empty, or every process and Redis restarted) and starts again
    above it, L{ID_MARGIN_BLOCKS} blocks on, so no id handed out before is handed out again.

    C{keep} (an L{ilchat.statefile.StateFile}) is for ids the store does not hold (open-mode
    IRC ids): L{known} is written to it (in a thread) at L{ready} and whenever it grows, so the
    next run of the process, after a crash too, seeds the counter with it.
    """

    _log = Logger()

    def __init__(self, counter: str, reserve: Callable[[str, int, int], Any],
                 block: int = ID_BLOCK, seed: Optional[Callable[[], Any]] = None,
                 keep: Any = None) -> None:
        self.counter = counter
        self._reserve = reserve  # async (counter, n, known) -> the last of n new ids
        self._block = block
        self._seed = seed  # async () -> the highest id in use (the store's), or None
        self._keep = keep
        self._kept = 0  # the value the keep file holds (or was last given)
        self._writing: Optional[defer.Deferred] = None
        self._ranges: List[List[int]] = []  # [next, last] reserved and not handed out
        self._reserving: Optional[defer.Deferred] = None
        #: The highest value of the counter this process knows of.
        self.known = 0

    def available(self) -> int:
        return sum(last - next_ + 1 for next_, last in self._ranges)

    def note(self, value: int) -> None:
        """The counter was seen at C{value} (a heartbeat look)."""
        if value > self.known:
            self.known = value
            self._write_known()

    async def ready(self) -> None:
        if self._keep is not None:
            self.note(self._kept_value())
        if self._seed is not None:
            seed, self._seed = self._seed, None
            self.note(int(await seed() or 0))
        if not self.available():
            await self._reserve_block()
        while self._writing is not None:  # the file holds this run's first block before any use
            await self._writing

    def _kept_value(self) -> int:
        """What the keep file of the last run holds (0: nothing usable, logged)."""
        try:
            state = self._keep.take()
        except StateFileError as error:
            self._log.warn("Cluster: ids of {counter} not seeded from the last run: {error}",
                           counter=self.counter, error=str(error))
            return 0
        if state is None:
            return 0
        known = state.get("known") if isinstance(state, dict) else None
        if (not isinstance(known, int) or isinstance(known, bool) or known < 0
                or state.get("counter") != self.counter):
            self._log.warn("Cluster: ids of {counter} not seeded from the last run: {path} is not"
                           " its file", counter=self.counter, path=self._keep.path)
            return 0
        return known

    def _write_known(self) -> None:
        """L{known} into the keep file, one write at a time (the last value wins)."""
        if self._keep is None or self._writing is not None or self.known <= self._kept:
            return
        value = self.known
        writing = self._keep.write({"counter": self.counter, "known": value})

        def written(result: Any) -> None:
            self._writing = None
            self._kept = value  # a failed write is not retried before the counter moves on
            if isinstance(result, Failure):
                self._log.warn("Cluster: could not keep the ids of {counter} in {path}: {error}",
                               counter=self.counter, path=self._keep.path,
                               error=result.getErrorMessage())
            self._write_known()

        self._writing = writing
        writing.addBoth(written)

    def take(self) -> int:
        if self.available() <= self._block // 2 and self._reserving is None:
            reserving = defer.ensureDeferred(self._reserve_block())
            reserving.addErrback(lambda failure: self._log.warn(
                "Cluster: could not reserve ids of {counter}: {error}", counter=self.counter,
                error=failure.getErrorMessage()))
            if not reserving.called:  # LocalCluster's reservation is done already
                self._reserving = reserving
                reserving.addBoth(self._reserved)
        if not self._ranges:
            raise ClusterUnavailable(f"no {self.counter} id reserved (Redis away)")
        current = self._ranges[0]
        value = current[0]
        current[0] += 1
        if current[0] > current[1]:
            self._ranges.pop(0)
        return value

    def _reserved(self, result: Any) -> Any:
        self._reserving = None
        return result

    async def _reserve_block(self) -> None:
        last = int(await self._reserve(self.counter, self._block, self.known))
        self.note(last)
        self._ranges.append([last - self._block + 1, last])


def _next_block(current: int, amount: int, known: int, margin: int) -> int:
    """The last id of the next block (what the L{_RESERVE} script computes, for LocalCluster)."""
    if current < known:
        current = known + margin
    return current + amount


class _Callbacks:
    """The registrations of both classes."""

    _log = Logger()

    def _init_callbacks(self) -> None:
        self._callbacks: Dict[str, List[Callback]] = {"gone": [], "seen": [], "departure": []}

    def on_instance_gone(self, callback: Callback) -> Callable[[], None]:
        """C{callback(name)} once each time another instance departs; returns an unregister."""
        return self._register("gone", callback)

    def on_instance_seen(self, callback: Callback) -> Callable[[], None]:
        """C{callback(name)} when another instance appears (or comes back after it was gone)."""
        return self._register("seen", callback)

    def on_departure(self, callback: Callback) -> Callable[[], None]:
        """
        C{callback(name)} on the one process of the cluster that handles a departure (after the
        gone callbacks, the departed instance's claims released): for what must happen once.
        """
        return self._register("departure", callback)

    def _register(self, kind: str, callback: Callback) -> Callable[[], None]:
        callbacks = self._callbacks[kind]
        callbacks.append(callback)
        return lambda: callback in callbacks and callbacks.remove(callback)  # type: ignore[func-returns-value]

    def _fire(self, kind: str, name: str) -> None:
        for callback in list(self._callbacks[kind]):
            try:
                callback(name)
            except Exception:
                self._log.failure("Cluster {kind} callback {callback!r} failed for {name}",
                                  kind=kind, callback=callback, name=name)


class LocalCluster(_Callbacks):
    """
    The cluster of one process (no ``redis`` section): it is the only live instance, every
    lock, claim and id is in memory. Its calls complete at once.
    """

    def __init__(self, instance: str = "local", clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.instance = instance
        self._clock = clock
        self._locks: Dict[str, float] = {}  # name -> expiry
        self._claims: Dict[str, Set[str]] = {}
        self._ids: Dict[str, int] = {}
        self._init_callbacks()

    def live_instances(self) -> FrozenSet[str]:
        return frozenset([self.instance])

    async def live_now(self) -> FrozenSet[str]:
        return self.live_instances()

    async def lock(self, name: str, ttl: float) -> bool:
        now = self._clock.seconds()
        if self._locks.get(name, now) > now:
            return False
        self._locks[name] = now + ttl
        return True

    async def unlock(self, name: str) -> None:
        self._locks.pop(name, None)

    async def claim(self, namespace: str, key: str) -> bool:
        keys = self._claims.setdefault(namespace, set())
        keys.add(key)
        return True

    async def release(self, namespace: str, key: str) -> None:
        self._claims.get(namespace, set()).discard(key)

    async def next_id(self, counter: str) -> int:
        return await self._add(counter, 1)

    def ids(self, counter: str, block: int = ID_BLOCK,
            seed: Optional[Callable[[], Any]] = None, keep: Any = None) -> IdBlocks:
        return IdBlocks(counter, self._add, block, seed, keep)

    async def _add(self, counter: str, amount: int, known: int = 0) -> int:
        # No margin: nothing but this process reserved from this counter.
        self._ids[counter] = _next_block(self._ids.get(counter, 0), amount, known, 0)
        return self._ids[counter]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


# --- the scripts (KEYS and ARGV as documented on each) -------------------------------------------

#: KEYS: heartbeat, registry. ARGV: value, ttl ms, name, token. -> [old heartbeat or "",
#: 1 if the registry did not hold this token (new, or Redis lost it)].
_BEAT = """
local old = redis.call('GET', KEYS[1]) or ''
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local registered = redis.call('HGET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
if registered == ARGV[4] then return {old, 0} end
return {old, 1}
"""

#: KEYS: registry. ARGV: heartbeat key prefix. -> [name, registered token, heartbeat or "", ...]
_VIEW = """
local out = {}
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  out[#out + 1] = entries[i]
  out[#out + 1] = entries[i + 1]
  out[#out + 1] = redis.call('GET', ARGV[1] .. entries[i]) or ''
end
return out
"""

#: KEYS: claim hash, claims set. ARGV: key, owner, entry. -> 1 claimed (or already ours), 0.
_CLAIM = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and owner ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return 1
"""

#: KEYS: claim hash, claims set. ARGV: key, owner, entry.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('SREM', KEYS[2], ARGV[3])
return 1
"""

#: Releases every claim of one process (its claims set, the owner value, the claim hash prefix).
_RELEASE_ALL_FUNCTION = """
local function release_all(claims, owner, prefix)
  local n = 0
  for _, entry in ipairs(redis.call('SMEMBERS', claims)) do
    local i = string.find(entry, '\\n', 1, true)
    local hash = prefix .. string.sub(entry, 1, i - 1)
    local key = string.sub(entry, i + 1)
    if redis.call('HGET', hash, key) == owner then
      redis.call('HDEL', hash, key)
      n = n + 1
    end
  end
  redis.call('DEL', claims)
  return n
end
local function beats_as(beat, token)
  return beat and string.sub(beat, 1, #token + 1) == token .. '/'
end
"""

#: KEYS: claims set. ARGV: owner, claim hash prefix. -> claims released.
_RELEASE_ALL = _RELEASE_ALL_FUNCTION + "return release_all(KEYS[1], ARGV[1], ARGV[2])"

#: A departure, handled once. KEYS: departed marker, registry, heartbeat, claims set.
#: ARGV: name, token, owner, claim hash prefix, marker ttl s. -> 1 if this call handles it.
_DEPART = _RELEASE_ALL_FUNCTION + """
if beats_as(redis.call('GET', KEYS[3]), ARGV[2]) then return 0 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[5]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
release_all(KEYS[4], ARGV[3], ARGV[4])
return 1
"""

#: This process stops. KEYS: heartbeat, registry, claims set. ARGV: name, token, owner, prefix.
_LEAVE = _RELEASE_ALL_FUNCTION + """
if beats_as(redis.call('GET', KEYS[1]), ARGV[2]) then redis.call('DEL', KEYS[1]) end
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[2], ARGV[1]) end
return release_all(KEYS[3], ARGV[3], ARGV[4])
"""

#: KEYS: counter. ARGV: amount, known, margin. -> the last id of the new block (see IdBlocks).
_RESERVE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[2]) then current = tonumber(ARGV[2]) + tonumber(ARGV[3]) end
current = current + tonumber(ARGV[1])
redis.call('SET', KEYS[1], current)
return current
"""

#: KEYS: lock. ARGV: token, ttl ms. -> 1 held by this process (taken or renewed), 0.
_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: KEYS: lock. ARGV: token.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _token_of(heartbeat: str) -> str:
    return heartbeat.partition("/")[0]


class RedisCluster(_Callbacks):
    """
    The cluster state in Redis (one command connection, a L{RedisLink}). C{config} is the
    ``RedisConfig``; C{interval}/C{ttl}: the heartbeat's period and lifetime in seconds;
    C{clock}: what times the heartbeats (the reactor; a ``task.Clock`` in tests).
    ``await start()`` raises L{RedisUnavailable} or L{DuplicateInstance}.
    """

    def __init__(self, config: Any, reactor: Any, timeout: float = TIMEOUT,
                 interval: float = HEARTBEAT_INTERVAL, ttl: float = HEARTBEAT_TTL,
                 clock: Any = None) -> None:
        self.instance: str = config.instance
        self.address = f"{config.host}:{config.port}"
        self.interval = interval
        self.ttl = ttl
        self._reactor = reactor
        self._clock = reactor if clock is None else clock
        self._prefix = config.prefix
        self._token = secrets.token_hex(8)
        self._owner = f"{self.instance} {self._token}"
        self._beats = 0
        self._written = ""  # the heartbeat value this process wrote last
        self._view: Dict[str, str] = {}  # live instance -> token (this one included)
        self._claimed: Set[Tuple[str, str]] = set()  # (namespace, key) held by this process
        self._id_blocks: List[IdBlocks] = []
        self._judge_after = 0.0  # no departures judged before (after a reconnection)
        self._was_up = False
        self._down_logged = False
        self._stopping = False
        self._ticking: Optional[defer.Deferred] = None
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._repeats = RepeatedLog(self._log, reactor)
        self._link = RedisLink(config, reactor, CommandProtocol, self, timeout, self._repeats,
                               self._changed)
        self._init_callbacks()

    # --- the view -------------------------------------------------------------------------------

    def live_instances(self) -> FrozenSet[str]:
        return frozenset(self._view) | {self.instance}

    async def live_now(self) -> FrozenSet[str]:
        """
        The instances whose heartbeat is in Redis now: L{live_instances} is as old as the last
        beat (up to C{interval}), too old to decide at a stop whether this process is the last
        one (a peer started a second ago is not in it yet). Redis away: L{live_instances}.
        """
        try:
            reply = await self._eval(_VIEW, [self._key("instances", "")],
                                     [self._key("instance:", "")])
        except ClusterUnavailable:
            return self.live_instances()
        names = {reply[i] for i in range(0, len(reply), 3) if reply[i + 2]}
        return frozenset(names) | {self.instance}

    # --- locks, claims, ids ---------------------------------------------------------------------

    async def lock(self, name: str, ttl: float) -> bool:
        return bool(await self._eval(_LOCK, [self._key("lock:", name)], [self._token, int(ttl * 1000)]))

    async def unlock(self, name: str) -> None:
        await self._eval(_UNLOCK, [self._key("lock:", name)], [self._token])

    async def claim(self, namespace: str, key: str) -> bool:
        """
        True when C{key} of C{namespace} is now this instance's (or already was). While Redis is
        down the claim is recorded here only (true), and asserted in Redis once it is back.
        """
        try:
            if not await self._claim_in_redis(namespace, key):
                return False
        except ClusterUnavailable:
            pass  # asserted when Redis is back (see _reassert_claims)
        self._claimed.add((namespace, key))
        return True

    async def release(self, namespace: str, key: str) -> None:
        """Give C{key} up (if it is this instance's); while Redis is away, here only."""
        self._claimed.discard((namespace, key))
        try:
            await self._eval(_RELEASE, [self._key("claim:", namespace),
                                        self._claims_key(self.instance, self._token)],
                             [key, self._owner, f"{namespace}\n{key}"])
        except ClusterUnavailable:
            pass  # released with all of this process's claims at its stop or departure

    async def next_id(self, counter: str) -> int:
        return int(await self._command("INCR", self._key("id:", counter)))

    def ids(self, counter: str, block: int = ID_BLOCK,
            seed: Optional[Callable[[], Any]] = None, keep: Any = None) -> IdBlocks:
        """
        Ids of C{counter} (the same counter as C{next_id}'s) reserved C{block} at a time;
        C{seed}: async, the highest id of that counter the store holds; C{keep}: the state
        file of a counter the store does not hold (see L{IdBlocks}).
        """
        blocks = IdBlocks(counter, self._reserve_ids, block, seed, keep)
        self._id_blocks.append(blocks)
        return blocks

    async def _reserve_ids(self, counter: str, amount: int, known: int = 0) -> int:
        return int(await self._eval(_RESERVE, [self._key("id:", counter)],
                                    [amount, known, ID_MARGIN_BLOCKS * amount]))

    async def _note_counters(self) -> None:
        """Every heartbeat look: what the counters of this process's IdBlocks are at now."""
        counters = sorted({blocks.counter for blocks in self._id_blocks})
        if not counters:
            return
        values = await self._command("MGET", *(self._key("id:", name) for name in counters))
        seen = {name: int(value) for name, value in zip(counters, values) if value}
        for blocks in self._id_blocks:
            if blocks.counter in seen:
                blocks.note(seen[blocks.counter])

    # --- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await start_links([self._link], self._reactor, self._repeats)
        try:
            await self._refuse_duplicate()
            await self._beat()
            await self._look(fire=False)
        except ClusterUnavailable as error:
            await self._link.stop()
            raise RedisUnavailable(f"Redis at {self.address} unreachable: {error}") from None
        except BaseException:
            await self._link.stop()
            raise
        self._was_up = True
        self._loop.start(self.interval, now=False)
        others = sorted(self.live_instances() - {self.instance})
        self._log.info(
            "Cluster: instance {instance} announced in Redis at {address} (other live instances:"
            " {others})", instance=self.instance, address=self.address,
            others=", ".join(others) or "none",
        )

    async def stop(self) -> None:
        """Release this process's claims and delete its heartbeat (the others notice at once)."""
        self._stopping = True
        if self._loop.running:
            self._loop.stop()
        if self._ticking is not None:
            await self._ticking
        if self._link.protocol is not None:
            try:
                await self._eval(
                    _LEAVE,
                    [self._key("instance:", self.instance), self._key("instances", ""),
                     self._claims_key(self.instance, self._token)],
                    [self.instance, self._token, self._owner, self._key("claim:", "")],
                )
            except Exception as error:
                self._log.warn("Cluster: could not remove instance {instance} from Redis: {error}",
                               instance=self.instance, error=str(error))
        self._claimed.clear()
        await self._link.stop()
        self._repeats.flush()

    # --- internals ------------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self._prefix}{kind}{name}"

    def _claims_key(self, instance: str, token: str) -> str:
        return self._key("claims:", f"{instance}:{token}")

    async def _command(self, *args: Any) -> Any:
        proto = self._link.protocol
        if proto is None:
            raise ClusterUnavailable(f"Redis at {self.address} is down")
        try:
            return await proto.execute_command(*args)
        except Exception as error:
            if isinstance(error, (defer.CancelledError,)):
                raise
            raise ClusterUnavailable(f"Redis at {self.address}: {error}") from None

    async def _eval(self, script: str, keys: List[str], args: List[Any]) -> Any:
        proto = self._link.protocol
        if proto is None:
            raise ClusterUnavailable(f"Redis at {self.address} is down")
        try:
            return await proto.eval(script, keys, args)
        except Exception as error:
            raise ClusterUnavailable(f"Redis at {self.address}: {error}") from None

    async def _claim_in_redis(self, namespace: str, key: str) -> bool:
        return bool(await self._eval(
            _CLAIM, [self._key("claim:", namespace), self._claims_key(self.instance, self._token)],
            [key, self._owner, f"{namespace}\n{key}"],
        ))

    async def _refuse_duplicate(self) -> None:
        """
        A heartbeat of this name that changes within 1.5 intervals belongs to a live process;
        one that does not is a dead one's (SIGKILL, restarted at once): its claims go.
        """
        key = self._key("instance:", self.instance)
        first = await self._command("GET", key)
        if first:
            await task.deferLater(self._clock, self.interval * 1.5, lambda: None)
            second = await self._command("GET", key)
            if second and second != first:
                raise DuplicateInstance(
                    f"Instance name {self.instance!r} is in use by another live process (its"
                    f" heartbeat {key} in Redis at {self.address} is fresh); give each process"
                    " its own redis.instance"
                )
        previous = {_token_of(first)} if first else set()
        registered = await self._command("HGET", self._key("instances", ""), self.instance)
        if registered:
            previous.add(registered)
        for token in previous - {self._token}:
            # Our own predecessor: nobody else may hold its names any more.
            await self._eval(_RELEASE_ALL, [self._claims_key(self.instance, token)],
                             [f"{self.instance} {token}", self._key("claim:", "")])

    async def _beat(self) -> None:
        self._beats += 1
        value = f"{self._token}/{self._beats}"
        old, unregistered = await self._eval(
            _BEAT, [self._key("instance:", self.instance), self._key("instances", "")],
            [value, int(self.ttl * 1000), self.instance, self._token],
        )
        if old and self._written and old != self._written:
            self._repeats.warn(
                "Cluster: another process beats as instance {instance} (found {found}, wrote"
                " {wrote}); give each process its own redis.instance",
                instance=self.instance, found=old, wrote=self._written,
            )
        self._written = value
        if int(unregistered) and self._claimed:
            await self._reassert_claims()

    async def _reassert_claims(self) -> None:
        """Redis lost our claims (restarted) or a peer released them: claim them again."""
        for namespace, key in sorted(self._claimed):
            if not await self._claim_in_redis(namespace, key):
                self._claimed.discard((namespace, key))
                self._log.warn("Cluster: {namespace} {key!r} was taken by another instance while"
                               " Redis was away; it is no longer this instance's",
                               namespace=namespace, key=key)

    async def _look(self, fire: bool = True) -> None:
        """Read the registry and heartbeats; fire the callbacks for what changed."""
        reply = await self._eval(_VIEW, [self._key("instances", "")], [self._key("instance:", "")])
        current: Dict[str, str] = {}
        dead: List[Tuple[str, str]] = []
        for i in range(0, len(reply), 3):
            name, registered, beat = reply[i], reply[i + 1], reply[i + 2]
            if beat:
                current[name] = _token_of(beat)
            if not beat or _token_of(beat) != registered:
                dead.append((name, registered))
        current[self.instance] = self._token
        if not fire:
            self._view = current
        elif self._clock.seconds() >= self._judge_after:
            previous, self._view = self._view, current
            for name, token in sorted(previous.items()):
                if name != self.instance and current.get(name) != token:
                    self._log.info("Cluster: instance {name} is gone (no heartbeat)", name=name)
                    self._fire("gone", name)
                    dead.append((name, token))
            for name, token in sorted(current.items()):
                if name != self.instance and previous.get(name) != token:
                    self._log.info("Cluster: instance {name} is live", name=name)
                    self._fire("seen", name)
        else:
            # Just reconnected: who beats now is live; who does not may not have beaten yet.
            for name, token in current.items():
                if name not in self._view:
                    self._view[name] = token
                    self._log.info("Cluster: instance {name} is live", name=name)
                    self._fire("seen", name)
            return
        for name, token in dict.fromkeys(dead):
            if name != self.instance:
                await self._depart(name, token)

    async def _depart(self, name: str, token: str) -> None:
        handled = await self._eval(
            _DEPART,
            [self._key("departed:", f"{name}:{token}"), self._key("instances", ""),
             self._key("instance:", name), self._claims_key(name, token)],
            [name, token, f"{name} {token}", self._key("claim:", ""), DEPARTED_TTL],
        )
        if int(handled):
            self._log.info("Cluster: this instance handles the departure of {name}", name=name)
            self._fire("departure", name)

    def _tick(self) -> None:
        if self._ticking is not None or self._link.protocol is None:
            return
        self._ticking = defer.ensureDeferred(self._beat_and_look())

        def done(result: Any) -> None:
            self._ticking = None

        self._ticking.addBoth(done)

    async def _beat_and_look(self) -> None:
        try:
            await self._beat()
            await self._look()
            await self._note_counters()
        except ClusterUnavailable as error:
            self._repeats.warn("Cluster: heartbeat failed: {error}", error=str(error))
        except Exception:
            self._log.failure("Cluster: heartbeat failed")

    def _changed(self) -> None:
        """Redis lost: one line. Back: re-announced at once, one line."""
        if self._stopping or not self._was_up:
            return
        if self._link.protocol is None:
            if not self._down_logged:
                self._down_logged = True
                self._log.warn("Cluster: Redis at {address} lost; heartbeats paused until it is back",
                               address=self.address)
            return
        self._judge_after = self._clock.seconds() + self.interval * 1.5
        self._down_logged = False

        async def announce() -> None:
            while self._ticking is not None:
                await self._ticking
            self._ticking = defer.ensureDeferred(self._beat())
            try:
                await self._ticking
            except ClusterUnavailable:
                return  # lost again: the next connection announces
            finally:
                self._ticking = None
            self._log.info("Cluster: Redis at {address} is back; instance {instance} announced again",
                           address=self.address, instance=self.instance)

        defer.ensureDeferred(announce()).addErrback(
            lambda failure: self._log.failure("Cluster: re-announcing failed", failure))
