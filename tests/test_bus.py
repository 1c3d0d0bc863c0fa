"""Tests for L{ilchat.bus}."""

from twisted.trial.unittest import SynchronousTestCase

from zope.interface.verify import verifyObject

from ilchat.bus import IBus, LocalBus


class LocalBusTests(SynchronousTestCase):
    def test_provides_interface(self) -> None:
        """LocalBus provides IBus, so a Redis bus can replace it."""
        self.assertTrue(verifyObject(IBus, LocalBus()))

    def test_publish_reaches_subscribers_of_topic_in_order(self) -> None:
        """Subscribers of a topic get each message in subscription order; others get nothing."""
        bus = LocalBus()
        seen = []
        bus.subscribe("room:a", lambda m: seen.append(("first", m)))
        bus.subscribe("room:a", lambda m: seen.append(("second", m)))
        bus.subscribe("room:b", lambda m: seen.append(("other", m)))
        bus.publish("room:a", {"n": 1})
        self.assertEqual(seen, [("first", {"n": 1}), ("second", {"n": 1})])

    def test_failing_subscriber_does_not_stop_others(self) -> None:
        """An exception in one subscriber is logged and the next subscriber still runs."""
        bus = LocalBus()
        seen = []

        def broken(message):
            raise ValueError("boom")

        bus.subscribe("t", broken)
        bus.subscribe("t", seen.append)
        bus.publish("t", {"n": 2})
        self.assertEqual(seen, [{"n": 2}])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unsubscribe(self) -> None:
        """After unsubscribing, a callback receives no more messages."""
        bus = LocalBus()
        seen = []
        unsubscribe = bus.subscribe("t", seen.append)
        bus.publish("t", {"n": 1})
        unsubscribe()
        bus.publish("t", {"n": 2})
        self.assertEqual(seen, [{"n": 1}])
