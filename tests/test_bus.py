"""Tests for L{ilchat.bus}."""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from zope.interface.verify import verifyObject

from ilchat.bus import IBus, LocalBus
from ilchat.jsonutil import JSONError


class LocalBusTestsMixin:
    strict = False

    def bus(self) -> LocalBus:
        self.clock = Clock()
        return LocalBus("proc-1", self.clock, strict=self.strict)

    def test_provides_interface(self) -> None:
        """LocalBus provides IBus (with ``instance``), so a Redis bus can replace it."""
        bus = self.bus()
        self.assertTrue(verifyObject(IBus, bus))
        self.assertEqual(bus.instance, "proc-1")

    def test_envelope_on_a_later_turn_in_subscription_order(self) -> None:
        """Subscribers get the versioned envelope on a later reactor turn; other topics nothing."""
        bus = self.bus()
        seen = []
        bus.subscribe("room:a", lambda m: seen.append(("first", m)))
        bus.subscribe("room:a", lambda m: seen.append(("second", m)))
        bus.subscribe("room:b", lambda m: seen.append(("other", m)))
        bus.publish("room:a", {"type": "x", "n": 1})
        self.assertEqual(seen, [])
        self.clock.advance(0)
        envelope = {"v": 1, "origin": "proc-1", "topic": "room:a", "event": {"type": "x", "n": 1}}
        self.assertEqual(seen, [("first", envelope), ("second", envelope)])

    def test_publish_order_also_for_events_published_by_subscribers(self) -> None:
        """An event published while delivering comes after everything published before it."""
        bus = self.bus()
        seen = []

        def chain(envelope):
            seen.append(envelope["event"]["n"])
            if envelope["event"]["n"] == 1:
                bus.publish("t", {"type": "x", "n": 3})

        bus.subscribe("t", chain)
        bus.publish("t", {"type": "x", "n": 1})
        bus.publish("t", {"type": "x", "n": 2})
        self.assertEqual(seen, [])
        self.clock.advance(0)  # a Clock also runs the calls that fall due while it advances
        self.assertEqual(seen, [1, 2, 3])

    def test_failing_subscriber_does_not_stop_others(self) -> None:
        """An exception in one subscriber is logged and the next subscriber still runs."""
        bus = self.bus()
        seen = []

        def broken(message):
            raise ValueError("boom")

        bus.subscribe("t", broken)
        bus.subscribe("t", seen.append)
        bus.publish("t", {"type": "x", "n": 2})
        self.clock.advance(0)
        self.assertEqual([m["event"] for m in seen], [{"type": "x", "n": 2}])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_unsubscribe(self) -> None:
        """After unsubscribing, a callback receives no more messages."""
        bus = self.bus()
        seen = []
        unsubscribe = bus.subscribe("t", seen.append)
        bus.publish("t", {"type": "x", "n": 1})
        self.clock.advance(0)
        unsubscribe()
        bus.publish("t", {"type": "x", "n": 2})
        self.clock.advance(0)
        self.assertEqual([m["event"]["n"] for m in seen], [1])
        self.assertEqual(bus.pending(), 0)

    def test_close_delivers_what_is_queued_and_leaves_no_call(self) -> None:
        """At service stop the queue is delivered at once and no delayed call stays behind."""
        bus = self.bus()
        seen = []
        bus.subscribe("t", seen.append)
        bus.publish("t", {"type": "x", "n": 1})
        bus.close()
        self.assertEqual([m["event"]["n"] for m in seen], [1])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(bus.pending(), 0)


    def test_after_delivery_runs_once_per_pass_after_every_subscriber(self) -> None:
        """The hook runs at the end of each delivery pass (after all its subscribers), once a pass
        however many events it delivered; an event a subscriber published is a pass of its own."""
        bus = self.bus()
        seen = []

        def subscriber(envelope):
            seen.append(envelope["event"]["n"])
            if envelope["event"]["n"] == 1:
                bus.publish("t", {"type": "x", "n": 3})

        bus.subscribe("t", subscriber)
        bus.after_delivery(lambda: seen.append("end"))
        bus.publish("t", {"type": "x", "n": 1})
        bus.publish("t", {"type": "x", "n": 2})
        self.assertEqual(seen, [])
        self.clock.advance(0)
        self.assertEqual(seen, [1, 2, "end", 3, "end"])

    def test_after_delivery_removed_and_failing(self) -> None:
        """A failing hook is logged and the next still runs; a removed hook runs no more."""
        bus = self.bus()
        seen = []

        def broken():
            raise ValueError("boom")

        bus.subscribe("t", lambda envelope: None)
        bus.after_delivery(broken)
        remove = bus.after_delivery(lambda: seen.append("end"))
        bus.publish("t", {"type": "x"})
        self.clock.advance(0)
        self.assertEqual(seen, ["end"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        remove()
        bus.publish("t", {"type": "x"})
        self.clock.advance(0)
        self.assertEqual(seen, ["end"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LocalBusTests(LocalBusTestsMixin, SynchronousTestCase):
    pass


class StrictLocalBusTests(LocalBusTestsMixin, SynchronousTestCase):
    strict = True

    def test_rejects_a_payload_that_is_not_json_at_publish(self) -> None:
        """A Python object, a set, NaN: refused in the publisher's frame, nothing delivered."""
        bus = self.bus()
        seen = []
        bus.subscribe("t", seen.append)
        with self.assertRaises(TypeError):
            bus.publish("t", {"type": "x", "member": object()})
        with self.assertRaises(TypeError):
            bus.publish("t", {"type": "x", "ids": {1, 2}})
        with self.assertRaises(JSONError):
            bus.publish("t", {"type": "x", "n": float("nan")})
        self.clock.advance(0)
        self.assertEqual(seen, [])
        self.assertEqual(bus.pending(), 0)

    def test_rejects_even_without_subscribers(self) -> None:
        """The check does not depend on who listens: a test without subscribers still fails."""
        bus = self.bus()
        with self.assertRaises(TypeError):
            bus.publish("nobody", {"type": "x", "member": object()})

    def test_every_subscriber_gets_its_own_decoded_copy(self) -> None:
        """Nothing is shared: a subscriber that edits its copy changes nothing for the next."""
        bus = self.bus()
        seen = []

        def vandal(envelope):
            envelope["event"]["ids"].append(99)

        bus.subscribe("t", vandal)
        bus.subscribe("t", seen.append)
        event = {"type": "x", "ids": [1, 2]}
        bus.publish("t", event)
        event["ids"].append(3)  # the publisher's later edits do not travel either
        self.clock.advance(0)
        self.assertEqual(seen[0]["event"], {"type": "x", "ids": [1, 2]})
