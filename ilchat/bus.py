# -*- test-case-name: tests.test_bus -*-
"""
The one fan-out path between the chat domain and the transports.

Everything that must reach the users of a room (a message, a join, a kick) is published here,
and every adapter (Socket.IO handlers, the IRC bridge) subscribes to the topics it serves. With one
process the bus calls subscribers directly; a Redis bus (several processes) will implement the
same ``IBus`` interface so that no handler changes when ilchat scales out.
"""

from typing import Any, Callable, Dict, List

from twisted.logger import Logger
from zope.interface import Interface, implementer

Message = Dict[str, Any]
Subscriber = Callable[[Message], None]


class IBus(Interface):
    """Publish/subscribe between the producers of chat events and the adapters that deliver them."""

    def subscribe(topic: str, callback: Subscriber) -> Callable[[], None]:
        """
        Call C{callback(message)} for every message published on C{topic}.

        Returns a callable that removes the subscription.
        """

    def publish(topic: str, message: Message) -> None:
        """Deliver a JSON-serialisable C{message} to every subscriber of C{topic}."""


@implementer(IBus)
class LocalBus:
    """
    In-process bus: subscribers run synchronously, in the order they subscribed.

    A failing subscriber is logged and does not keep the message from the others, so one broken
    adapter cannot silence a room.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._subscribers: Dict[str, List[Subscriber]] = {}

    def subscribe(self, topic: str, callback: Subscriber) -> Callable[[], None]:
        self._subscribers.setdefault(topic, []).append(callback)

        def unsubscribe() -> None:
            callbacks = self._subscribers.get(topic, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self._subscribers.pop(topic, None)

        return unsubscribe

    def publish(self, topic: str, message: Message) -> None:
        # Copy: a subscriber may unsubscribe (or subscribe another) while we deliver.
        for callback in list(self._subscribers.get(topic, ())):
            try:
                callback(message)
            except Exception:
                self._log.failure(
                    "Bus subscriber {callback!r} failed on topic {topic}",
                    callback=callback,
                    topic=topic,
                )
