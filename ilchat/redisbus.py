# -*- test-case-name: tests.test_redisbus -*-
"""
The bus of several ilchat processes: L{IBus} over Redis pub/sub (server.cfg ``redis``).

Every event is delivered to this process's subscribers first, exactly as L{LocalBus} does (a
later reactor turn, publish order), and then published on the Redis channel
``<prefix>bus:<topic>`` as the JSON envelope. Envelopes that come back from Redis with this
process's ``origin`` are its own echoes and are dropped; the others join the same local queue,
so the order of one publisher's events holds on every process. A message that is not a bus
envelope of this version is logged (rate-limited) and dropped: one bad publisher cannot stop a
process.

Two connections (Redis cannot publish on a connection that subscribes), each kept open by a
C{ClientService} with the backoff of L{ilchat.retry.exponential}. While either is down the
bus is *degraded*: local delivery goes on, publishing to Redis is skipped; one line says so,
one line says when it is back (and the channels are subscribed again).

L{RedisLink} is how every Redis connection of ilchat is made and kept (AUTH, SELECT, PING,
TLS, backoff); L{ilchat.cluster.RedisCluster} uses it too. This module and ``ilchat.cluster``
are the only ones that import txredisapi. Only its protocol classes are used
(``SubscriberProtocol``, ``RedisProtocol``): connecting, reconnecting and the backoff are
Twisted's and ours, so the factory classes that changed between txredisapi 1.5 and 1.6 play
no part.
"""

from itertools import islice
from typing import Any, Callable, Dict, List, Optional, Sequence

from twisted.application.internet import ClientService
from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import txredisapi

from ilchat.bus import BUS_VERSION, Envelope, Event, IBus, LocalBus, Subscriber
from ilchat.jsonutil import JSONError, dumps, loads
from ilchat.logs import RepeatedLog
from ilchat.retry import exponential

__all__ = ["CommandProtocol", "RedisBus", "RedisLink", "RedisUnavailable", "redis_endpoint", "start_links"]

#: Seconds before the first reconnection attempt, and the most between two attempts.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 10.0
#: Seconds a connection attempt, or an answer to a command, may take: a Redis that accepts
#: connections and answers nothing (hung, stopped) counts as down.
TIMEOUT = 10.0


class RedisUnavailable(Exception):
    """Redis could not be reached (or refused the password or database) at start."""


def _reconnect_delay(attempt: int) -> float:
    """ClientService's retry policy: the ``attempt``-th wait of the one backoff schedule."""
    return next(islice(exponential(RECONNECT_FIRST, RECONNECT_MAX), max(attempt - 1, 0), None))


class _RemembersWhy:
    """Keeps the reason the connection was lost (a TLS handshake failure, a reset)."""

    lost_reason: Optional[Failure] = None

    def connectionLost(self, why: Failure) -> None:  # noqa: N802 (twisted API)
        self.lost_reason = why
        super().connectionLost(why)  # type: ignore[misc]


class _WholeReads:
    """
    Parses everything one read brought before returning, as Twisted's own line receivers do.

    txredisapi's parser hands what follows each bulk string to a C{callLater(0)} of its own
    (C{LineReceiver.setLineMode}): a pub/sub message is three bulk strings, so each message of a
    read cost three reactor turns, and every bus message from Redis was delivered (and fanned
    out, and written to each connection) in a turn of its own, however many came together. Here
    the rest is parsed in a loop, in the same turn (no recursion).
    """

    _rest: Any = b""

    def setLineMode(self, extra: Any = b"") -> None:  # noqa: N802 (txredisapi API)
        self.line_mode = 1
        self._rest = extra

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:  # noqa: N802
        while data:
            self._rest = b""
            super().dataReceived(data)  # type: ignore[misc]
            transport = self.transport  # type: ignore[attr-defined]
            if transport is None or transport.disconnecting:
                return
            data = self._rest


class CommandProtocol(_RemembersWhy, _WholeReads, txredisapi.RedisProtocol):
    """A connection for commands (PUBLISH, SET, INCR, EVAL...)."""


class _Subscriber(_RemembersWhy, _WholeReads, txredisapi.SubscriberProtocol):
    owner: "RedisBus"

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:  # noqa: N802
        self.owner._received(channel, message)


class _ProtocolFactory(protocol.Factory):
    """Builds one txredisapi protocol: text replies, no number conversion (a message is text)."""

    noisy = False

    def __init__(self, protocol_class: type, owner: Any, timeout: float) -> None:
        self.protocol_class = protocol_class
        self.owner = owner
        self.timeout = timeout

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (twisted API)
        p = self.protocol_class(charset="utf-8", convertNumbers=False, replyTimeout=self.timeout)
        p.factory = self
        p.owner = self.owner
        return p


def redis_endpoint(config: Any, reactor: Any, timeout: float) -> Any:
    """The client endpoint of a ``RedisConfig``: TCP, or TLS 1.2+ verified against ``ca_file``."""
    endpoint = HostnameEndpoint(reactor, config.host, config.port, timeout=timeout)
    if not config.tls:
        return endpoint
    from twisted.internet import ssl

    trust = None
    if config.ca_file:
        with open(config.ca_file, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    options = ssl.optionsForClientTLS(
        config.host,
        trustRoot=trust,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )
    return wrapClientTLS(options, endpoint)


class _RetriesAtDebug(Logger):
    """
    ClientService's logger: its line per reconnection attempt ("Scheduling retry ...") at debug
    level. Whoever owns the link says once that Redis is gone and once that it is back; at the
    usual level the log would otherwise get a line per attempt of each connection.
    """

    def info(self, format: Optional[str] = None, **kwargs: Any) -> None:
        self.debug(format, **kwargs)


class _RedisClientService(ClientService):
    _log = _RetriesAtDebug()


class RedisLink:
    """
    One Redis connection kept open, the way every user of Redis in ilchat connects: a
    C{ClientService} (backoff L{ilchat.retry.exponential}), AUTH, SELECT and a PING before the
    connection counts as up (a TLS connection exists before its handshake: only an answer shows
    that it works), then C{after_login(protocol)} (e.g. subscribing). C{protocol} is the
    connected protocol, None while down; C{on_change()} is called whenever that changes. A
    refused login closes the connection (it reconnects) and is logged rate-limited by
    C{repeats}; at start the refusal is C{start_failure}, what L{start_links} reports.
    """

    def __init__(
        self,
        config: Any,
        reactor: Any,
        protocol_class: type,
        owner: Any,
        timeout: float,
        repeats: RepeatedLog,
        on_change: Callable[[], None],
        after_login: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.protocol: Any = None
        self.start_failure: Optional[Exception] = None
        self.address = f"{config.host}:{config.port}"
        self._config = config
        self._timeout = timeout
        self._repeats = repeats
        self._on_change = on_change
        self._after_login = after_login
        self._service = _RedisClientService(
            redis_endpoint(config, reactor, timeout),
            _ProtocolFactory(protocol_class, owner, timeout),
            retryPolicy=_reconnect_delay,
            clock=reactor,
            prepareConnection=lambda proto: defer.ensureDeferred(self._prepare(proto)),
        )

    @property
    def running(self) -> bool:
        return bool(self._service.running)

    def start(self) -> "defer.Deferred[Any]":
        """Start connecting; fires at the first connection, fails at the first failed attempt."""
        self._service.startService()
        return self._service.whenConnected(failAfterFailures=1)

    def stop(self) -> "defer.Deferred[Any]":
        d = defer.maybeDeferred(self._service.stopService) if self.running else defer.succeed(None)
        self.protocol = None
        return d

    async def _login(self, proto: Any) -> None:
        config = self._config
        for command, args in (("AUTH", (config.password,)), ("SELECT", (config.db,)), ("PING", ())):
            if command != "PING" and not args[0]:
                continue
            try:
                reply = await proto.execute_command(command, *args)
            except txredisapi.ResponseError as error:
                reply = error
            except txredisapi.TimeoutError:
                raise RedisUnavailable(f"no answer to {command} in {self._timeout:g} s") from None
            except txredisapi.ConnectionError:
                why = proto.lost_reason
                raise RedisUnavailable(
                    "connection lost" + (f": {why.getErrorMessage()}" if why is not None else "")
                ) from None
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"{command} refused: {reply}")

    async def _prepare(self, proto: Any) -> None:
        """ClientService's prepareConnection: log in (and C{after_login}) before it counts."""
        proto.whenDisconnected().addCallback(lambda _: self._lost(proto))
        try:
            await self._login(proto)
            if self._after_login is not None:
                await defer.maybeDeferred(self._after_login, proto)
        except RedisUnavailable as error:
            # Not a failed attempt for ClientService (it would leave the connection open):
            # closed here, it reconnects. At start, the refusal is what start_links reports.
            if self.start_failure is None:
                self.start_failure = error
            self._repeats.warn("Redis at {address}: {error}", address=self.address, error=str(error))
            proto.transport.loseConnection()
            return
        if proto.connected:
            self.protocol = proto
            self._on_change()

    def _lost(self, proto: Any) -> None:
        if self.protocol is proto:
            self.protocol = None
            self._on_change()


async def start_links(links: Sequence[RedisLink], reactor: Any, repeats: RepeatedLog) -> None:
    """
    Start C{links} and wait until each is up; L{RedisUnavailable} (one line: address and
    reason) if Redis does not answer, after stopping them again. CancelledError passes through.
    """
    address = links[0].address

    async def stop_all() -> None:
        await defer.gatherResults([link.stop() for link in links], consumeErrors=True)

    try:
        await defer.gatherResults([link.start() for link in links], consumeErrors=True)
    except defer.CancelledError:
        await stop_all()  # the service stopped while Redis did not answer
        raise
    except defer.FirstError as error:
        if error.subFailure.check(defer.CancelledError):
            await stop_all()
            raise defer.CancelledError() from None
        await _next_turn(reactor)
        await stop_all()
        repeats.flush()
        raise RedisUnavailable(f"Redis at {address} unreachable: {_reason(error.subFailure)}") from None
    # whenConnected fires inside ClientService's state change, which must be over before
    # anyone may stop it.
    await _next_turn(reactor)
    if not all(link.protocol is not None for link in links):
        await stop_all()
        repeats.flush()
        reason = next((link.start_failure for link in links if link.start_failure), None)
        raise RedisUnavailable(f"Redis at {address} unreachable: {reason or 'closed at once'}")


def _next_turn(reactor: Any) -> "defer.Deferred[None]":
    return task.deferLater(reactor, 0, lambda: None)


@implementer(IBus)
class RedisBus:
    """
    L{IBus} across processes. Local delivery is C{local}'s (a L{LocalBus}, strict in tests);
    C{config} is a ``RedisConfig`` (``host``, ``port``, ``password``, ``db``, ``prefix``,
    ``tls``, ``ca_file``); C{timeout}: seconds for a connection or an answer (a publish
    unanswered that long drops the connection). ``await start()`` before use (raises
    L{RedisUnavailable}), ``await close()`` at stop.
    """

    _log = Logger()

    def __init__(self, local: LocalBus, config: Any, reactor: Any, timeout: float = TIMEOUT) -> None:
        self.instance = local.instance
        self.timeout = timeout
        self._local = local
        self._config = config
        self._reactor = reactor
        self._prefix = f"{config.prefix}bus:"
        self.address = f"{config.host}:{config.port}"
        self._repeats = RepeatedLog(self._log, reactor)
        self._topics: Dict[str, int] = {}  # topic -> local subscriptions
        self._was_up = False
        self._degraded = False
        self._last_command: "defer.Deferred[Any]" = defer.succeed(None)
        self._resumed: List[Callable[[], None]] = []
        self._checks: Dict[str, Callable[[Event], None]] = {}  # topic -> check_events
        self._sub_link, self._pub_link = (
            RedisLink(config, reactor, protocol_class, self, timeout, self._repeats, self._changed,
                      after_login)
            for protocol_class, after_login in ((_Subscriber, self._resubscribe), (CommandProtocol, None))
        )

    @property
    def _sub(self) -> Any:
        return self._sub_link.protocol

    @property
    def _pub(self) -> Any:
        return self._pub_link.protocol

    # --- IBus -----------------------------------------------------------------------------------

    def subscribe(self, topic: str, callback: Subscriber) -> Callable[[], None]:
        unsubscribe_local = self._local.subscribe(topic, callback)
        self._topics[topic] = self._topics.get(topic, 0) + 1
        if self._topics[topic] == 1 and self._sub is not None:
            self._command(self._sub.subscribe, self._channel(topic))
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if done:
                return
            done = True
            unsubscribe_local()
            self._topics[topic] -= 1
            if not self._topics[topic]:
                del self._topics[topic]
                if self._sub is not None:
                    self._command(self._sub.unsubscribe, self._channel(topic))

        return unsubscribe

    def publish(self, topic: str, event: Event) -> None:
        envelope = {"v": BUS_VERSION, "origin": self.instance, "topic": topic, "event": event}
        text = dumps(envelope)  # raises here, in the publisher's frame, for what is not JSON
        self._local.publish(topic, event)
        if self._pub is None:
            return  # degraded (logged when it began): this process's subscribers only
        d = self._pub.publish(self._channel(topic), text)
        d.addErrback(lambda _: None)  # lost meanwhile: the connection's loss is what is logged

    # --- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect both connections and subscribe; L{RedisUnavailable} if Redis does not answer."""
        await start_links([self._sub_link, self._pub_link], self._reactor, self._repeats)
        self._log.info(
            "Bus connected to Redis at {address} as instance {instance} (channels {prefix}*)",
            address=self.address,
            instance=self.instance,
            prefix=self._prefix,
        )

    async def close(self) -> None:
        """Deliver what is queued locally, then disconnect (service stop)."""
        self._local.close()
        await self._stop_links()
        self._repeats.flush()

    def check_events(self, topic: str, check: Callable[[Event], None]) -> None:
        self._checks[topic] = check

    def on_resumed(self, callback: Callable[[], None]) -> Callable[[], None]:
        """C{callback()} each time both connections are back after an outage (see L{_changed})."""
        self._resumed.append(callback)
        return lambda: self._resumed.remove(callback) if callback in self._resumed else None

    def after_delivery(self, callback: Callable[[], None]) -> Callable[[], None]:
        """The local bus's: every delivery, from this process or from Redis, is one of its passes."""
        return self._local.after_delivery(callback)

    def subscribed(self) -> "defer.Deferred[Any]":
        """Fires when every SUBSCRIBE/UNSUBSCRIBE sent so far was acknowledged (tests)."""
        d: "defer.Deferred[Any]" = defer.Deferred()
        self._last_command.addBoth(lambda result: (d.callback(None), result)[1])
        return d

    @property
    def connected(self) -> bool:
        """Both connections are up: events cross processes."""
        return self._sub is not None and self._pub is not None

    # --- internals ------------------------------------------------------------------------------

    def _channel(self, topic: str) -> str:
        return self._prefix + topic

    def _command(self, method: Callable[[str], Any], channel: str) -> None:
        d = method(channel)
        d.addErrback(lambda _: None)  # lost meanwhile: resubscribed on reconnection
        self._last_command = d

    def _resubscribe(self, proto: Any) -> "defer.Deferred[Any]":
        """The subscriber connection is logged in: subscribe every topic again."""
        for topic in list(self._topics):
            self._command(proto.subscribe, self._channel(topic))
        return self._last_command

    def _changed(self) -> None:
        """One line when cross-process delivery stops, one when it is back; not per attempt."""
        if self.connected:
            if self._degraded:
                self._degraded = False
                self._log.info(
                    "Redis at {address} is back: cross-process delivery resumed"
                    " ({topics} topics subscribed again)",
                    address=self.address,
                    topics=len(self._topics),
                )
                for callback in list(self._resumed):
                    try:
                        callback()
                    except Exception:
                        self._log.failure("Bus resume callback {callback!r} failed",
                                          callback=callback)
            self._was_up = True
        elif self._was_up and not self._degraded and not self._stopping():
            self._degraded = True
            self._log.warn(
                "Redis at {address} lost: cross-process delivery is degraded (events reach"
                " this process's users only) until it is back; reconnecting",
                address=self.address,
            )

    def _stopping(self) -> bool:
        return not (self._sub_link.running and self._pub_link.running)

    async def _stop_links(self) -> None:
        await defer.gatherResults([self._sub_link.stop(), self._pub_link.stop()], consumeErrors=True)

    def _received(self, channel: Any, message: Any) -> None:
        try:
            envelope = self._parse(channel, message)
        except ValueError as error:
            self._repeats.warn(
                "Dropped a bus message on {channel} that cannot be read: {reason}",
                channel=str(channel),
                reason=str(error),
            )
            return
        if envelope["origin"] == self.instance:
            return  # our own, delivered locally at publish
        self._local.deliver(envelope)

    def _parse(self, channel: Any, message: Any) -> Envelope:
        """The envelope in ``message``, or ValueError saying why it is not one."""
        if not isinstance(message, str):
            raise ValueError("not UTF-8 text")
        envelope = loads(message)  # JSONError is a ValueError
        if not isinstance(envelope, dict):
            raise JSONError("not a JSON object")
        if envelope.get("v") != BUS_VERSION:
            raise ValueError(f"version {envelope.get('v')!r}, expected {BUS_VERSION}")
        origin, topic, event = envelope.get("origin"), envelope.get("topic"), envelope.get("event")
        if not isinstance(origin, str) or not origin:
            raise ValueError("no origin")
        if not isinstance(topic, str) or self._channel(topic) != channel:
            raise ValueError("topic does not match the channel")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ValueError("event without a type")
        check = self._checks.get(topic)
        if check is not None and origin != self.instance:
            check(event)
        return envelope


def _reason(failure: Failure) -> str:
    value = failure.value
    if isinstance(value, RedisUnavailable):
        return str(value)
    return failure.getErrorMessage() or type(value).__name__
