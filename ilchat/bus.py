# -*- test-case-name: tests.test_bus -*-
"""
The one fan-out path between the chat domain and the transports.

Everything that must reach the users of a room (a message, a join, a kick) is published here as
a plain domain event, and every adapter (Socket.IO handlers, the IRC bridge, the standalone page)
subscribes to the topics it serves and renders the events for its own transport. With one
process L{LocalBus} delivers in-process; a Redis bus (several processes) implements the same
L{IBus} interface and carries the same envelopes, so no handler changes when ilchat scales out.

The contract (HACKING.rst, "Bus")::

    bus.instance                          # this process's id
    bus.publish(topic, event)             # event = {"type": name, ...}: plain JSON values only
    bus.subscribe(topic, callback)        # -> unsubscribe(); callback(envelope)
    bus.after_delivery(callback)          # -> remove(); callback() at the end of every pass
    envelope = {"v": 1, "origin": bus.instance, "topic": topic, "event": event}

Delivery is never synchronous: a subscriber runs on a later reactor turn, and must not rely on
sharing objects with the publisher or with other subscribers. L{LocalBus} with C{strict=True}
(the whole test suite) enforces both: the envelope is JSON-encoded at publish (a value that is
not JSON raises there, in the publisher's frame) and every subscriber gets its own decoded copy.
"""

from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from ilchat.jsonutil import dumps, loads

__all__ = ["BUS_VERSION", "IBus", "LocalBus", "Envelope", "Event", "Subscriber"]

#: The envelope version (``"v"``); a bus drops envelopes of another version.
BUS_VERSION = 1

Event = Dict[str, Any]
Envelope = Dict[str, Any]
Subscriber = Callable[[Envelope], None]


class IBus(Interface):
    """Publish/subscribe between the producers of chat events and the adapters that deliver them."""

    instance = Attribute("This process's id (the ``origin`` of what it publishes).")

    def subscribe(topic: str, callback: Subscriber) -> Callable[[], None]:
        """
        Call C{callback(envelope)} for every event published on C{topic}, on a later reactor turn.

        Returns a callable that removes the subscription.
        """

    def publish(topic: str, event: Event) -> None:
        """
        Deliver C{event} (``{"type": name, ...}``, plain JSON values) to every subscriber of
        C{topic}, wrapped in ``{"v", "origin", "topic", "event"}``, in publish order.
        """

    def on_resumed(callback: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{callback()} whenever events cross processes again after an outage (never for an
        in-process bus); returns a callable that removes it.
        """

    def check_events(topic: str, check: Callable[[Event], None]) -> None:
        """
        Vet every event another process publishes on C{topic} with C{check(event)} before any
        subscriber sees it: a C{ValueError} from it drops the envelope with one logged line,
        so a peer's malformed event never reaches (and half-updates) the subscribers. An
        in-process bus has no other publishers and ignores it.
        """

    def subscribed() -> "Deferred[None]":
        """
        Fires once the subscriptions made so far receive what other processes publish (at once
        for an in-process bus), e.g. before asking them for their state.
        """

    def after_delivery(callback: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{callback()} at the end of every delivery pass, after its last subscriber;
        returns a callable that removes it.

        A transport that joins one reactor turn's writes flushes them here, so that what a pass
        delivered is written in that pass: a C{callLater(0)} made during the pass would only
        run after the reactor's next poll of every socket.
        """


@implementer(IBus)
class LocalBus:
    """
    In-process bus: events are queued at publish and delivered on a later reactor turn, in
    publish order; subscribers of a topic run in the order they subscribed.

    Args:
        instance: this process's id (``origin`` of every envelope).
        reactor: C{callLater} for the delivery turn (the global reactor when None; a
            C{task.Clock} in unit tests).
        strict: JSON round trip of every envelope (see the module docstring). Without it the
            subscribers share one envelope object, which they must not modify.

    A failing subscriber is logged and does not keep the event from the others, so one broken
    adapter cannot silence a room.
    """

    _log = Logger()

    def __init__(
        self, instance: str = "local", reactor: Optional[IReactorTime] = None, strict: bool = False
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor  # type: ignore[assignment]
        self.instance = instance
        self.strict = strict
        self._reactor = reactor
        self._subscribers: Dict[str, List[Subscriber]] = {}
        # (topic, envelope or its JSON text) in publish order, delivered by one call per turn.
        self._queue: Deque[Tuple[str, Any]] = deque()
        self._call: Any = None
        self._after: List[Callable[[], None]] = []

    def subscribe(self, topic: str, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(topic, None)

        return unsubscribe

    def subscribed(self) -> "Deferred[None]":
        return succeed(None)

    def on_resumed(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # one process: nothing to resume

    def check_events(self, topic: str, check: Callable[[Event], None]) -> None:
        pass  # one process: every event is its own, built by the domain

    def after_delivery(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._after.append(callback)

        def remove() -> None:
            if callback in self._after:
                self._after.remove(callback)

        return remove

    def publish(self, topic: str, event: Event) -> None:
        self.deliver({"v": BUS_VERSION, "origin": self.instance, "topic": topic, "event": event})

    def deliver(self, envelope: Envelope) -> None:
        """Queue C{envelope} for this process's subscribers of its topic (what C{publish} does
        with its own; a Redis bus with those of other processes)."""
        topic = envelope["topic"]
        # Strict: raises here (TypeError, JSONError) for anything a Redis bus could not carry.
        item = dumps(envelope) if self.strict else envelope
        if topic not in self._subscribers:
            return  # like Redis pub/sub: nobody listens, nothing to deliver
        self._queue.append((topic, item))
        if self._call is None:
            self._call = self._reactor.callLater(0, self._deliver)

    def close(self) -> None:
        """Deliver what is queued now and cancel the delivery turn (at service stop)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for _ in range(100):  # bounded: subscribers publishing while they are closed down
            if not self._queue:
                break
            self._deliver()
        self._queue.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def pending(self) -> int:
        """Events published and not yet delivered (tests, shutdown)."""
        return len(self._queue)

    def _deliver(self) -> None:
        self._call = None
        queue = self._queue
        # Only what was queued before this turn: events published by subscribers wait for the
        # next turn, behind everything already queued, so publish order holds.
        for _ in range(len(queue)):
            topic, item = queue.popleft()
            callbacks = self._subscribers.get(topic)
            if not callbacks:
                continue
            for callback in list(callbacks):
                envelope = loads(item) if self.strict else item
                try:
                    callback(envelope)
                except Exception:
                    self._log.failure(
                        "Bus subscriber {callback!r} failed on topic {topic}",
                        callback=callback,
                        topic=topic,
                    )
        for hook in list(self._after):
            try:
                hook()
            except Exception:
                self._log.failure("Bus after-delivery hook {hook!r} failed", hook=hook)
        if queue and self._call is None:
            self._call = self._reactor.callLater(0, self._deliver)
