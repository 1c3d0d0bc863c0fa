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

This module is the only one that imports txredisapi. Only its protocol classes are used
(``SubscriberProtocol``, ``RedisProtocol``): connecting, reconnecting and the backoff are
Twisted's and ours, so the factory classes that changed between txredisapi 1.5 and 1.6 play
no part.
"""

from itertools import islice
from typing import Any, Callable, Dict, List, Optional

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

__all__ = ["RedisBus", "RedisUnavailable"]

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


class _Publisher(_RemembersWhy, txredisapi.RedisProtocol):
    pass


class _Subscriber(_RemembersWhy, txredisapi.SubscriberProtocol):
    bus: "RedisBus"

    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:  # noqa: N802
        self.bus._received(channel, message)


class _ProtocolFactory(protocol.Factory):
    """Builds one txredisapi protocol: text replies, no number conversion (a message is text)."""

    noisy = False

    def __init__(self, protocol_class: type, bus: "RedisBus") -> None:
        self.protocol_class = protocol_class
        self.bus = bus

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802 (twisted API)
        p = self.protocol_class(
            charset="utf-8", convertNumbers=False, replyTimeout=self.bus.timeout
        )
        p.factory = self
        p.bus = self.bus
        return p


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
        self._sub: Any = None  # the connected protocols, None while down
        self._pub: Any = None
        self._was_up = False
        self._degraded = False
        self._last_command: "defer.Deferred[Any]" = defer.succeed(None)
        self._resumed: List[Callable[[], None]] = []
        self._start_failure: Optional[Exception] = None
        endpoint = self._endpoint()
        self._services = [
            ClientService(
                endpoint,
                _ProtocolFactory(protocol_class, self),
                retryPolicy=_reconnect_delay,
                clock=reactor,
                prepareConnection=self._prepare(attribute),
            )
            for attribute, protocol_class in (("_sub", _Subscriber), ("_pub", _Publisher))
        ]

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
        waits = []
        for service in self._services:
            service.startService()
            waits.append(service.whenConnected(failAfterFailures=1))
        try:
            await defer.gatherResults(waits, consumeErrors=True)
        except defer.CancelledError:
            await self._stop_services()  # the service stopped while Redis did not answer
            raise
        except defer.FirstError as error:
            if error.subFailure.check(defer.CancelledError):
                await self._stop_services()
                raise defer.CancelledError() from None
            await self._next_turn()
            await self._stop_services()
            self._repeats.flush()
            raise RedisUnavailable(
                f"Redis at {self.address} unreachable: {_reason(error.subFailure)}"
            ) from None
        # whenConnected fires inside ClientService's state change, which must be over before
        # anyone may stop it.
        await self._next_turn()
        if not self.connected:
            await self._stop_services()
            self._repeats.flush()
            reason = self._start_failure or "closed at once"
            raise RedisUnavailable(f"Redis at {self.address} unreachable: {reason}")
        self._log.info(
            "Bus connected to Redis at {address} as instance {instance} (channels {prefix}*)",
            address=self.address,
            instance=self.instance,
            prefix=self._prefix,
        )

    async def close(self) -> None:
        """Deliver what is queued locally, then disconnect (service stop)."""
        self._local.close()
        await self._stop_services()
        self._repeats.flush()

    def on_resumed(self, callback: Callable[[], None]) -> Callable[[], None]:
        """C{callback()} each time both connections are back after an outage (see L{_changed})."""
        self._resumed.append(callback)
        return lambda: self._resumed.remove(callback) if callback in self._resumed else None

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

    def _endpoint(self) -> Any:
        config = self._config
        endpoint = HostnameEndpoint(self._reactor, config.host, config.port, timeout=self.timeout)
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

    def _command(self, method: Callable[[str], Any], channel: str) -> None:
        d = method(channel)
        d.addErrback(lambda _: None)  # lost meanwhile: resubscribed on reconnection
        self._last_command = d

    async def _login(self, proto: Any) -> None:
        """
        AUTH, SELECT and a PING before the connection counts as up: a TLS connection is made
        before its handshake, so only an answer shows that it works.
        """
        config = self._config
        for command, args in (("AUTH", (config.password,)), ("SELECT", (config.db,)), ("PING", ())):
            if command != "PING" and not args[0]:
                continue
            try:
                reply = await proto.execute_command(command, *args)
            except txredisapi.ResponseError as error:
                reply = error
            except txredisapi.TimeoutError:
                raise RedisUnavailable(f"no answer to {command} in {self.timeout:g} s") from None
            except txredisapi.ConnectionError:
                why = proto.lost_reason
                raise RedisUnavailable(
                    "connection lost" + (f": {why.getErrorMessage()}" if why is not None else "")
                ) from None
            if isinstance(reply, Exception):
                raise RedisUnavailable(f"{command} refused: {reply}")

    def _prepare(self, attribute: str) -> Callable[[Any], "defer.Deferred[None]"]:
        """ClientService's prepareConnection for C{_sub} or C{_pub}: log in (and subscribe)."""

        async def prepare(proto: Any) -> None:
            proto.whenDisconnected().addCallback(lambda _: self._lost(attribute, proto))
            try:
                await self._login(proto)
                if attribute == "_sub":
                    for topic in list(self._topics):
                        self._command(proto.subscribe, self._channel(topic))
                    await self._last_command
            except RedisUnavailable as error:
                # Not a failed attempt for ClientService (it would leave the connection open):
                # closed here, it reconnects. At start, the refusal is what start() reports.
                if self._start_failure is None:
                    self._start_failure = error
                self._repeats.warn("Redis at {address}: {error}", address=self.address, error=str(error))
                proto.transport.loseConnection()
                return
            if proto.connected:
                setattr(self, attribute, proto)
                self._changed()

        return lambda proto: defer.ensureDeferred(prepare(proto))

    def _lost(self, attribute: str, proto: Any) -> None:
        if getattr(self, attribute) is proto:
            setattr(self, attribute, None)
            self._changed()

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
        return not all(service.running for service in self._services)

    def _next_turn(self) -> "defer.Deferred[None]":
        return task.deferLater(self._reactor, 0, lambda: None)

    async def _stop_services(self) -> None:
        await defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in self._services if s.running],
            consumeErrors=True,
        )
        self._sub = self._pub = None

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
        return envelope


def _reason(failure: Failure) -> str:
    value = failure.value
    if isinstance(value, RedisUnavailable):
        return str(value)
    return failure.getErrorMessage() or type(value).__name__
