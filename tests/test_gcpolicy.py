"""L{ilchat.gcpolicy}: what start-up leaves is frozen, out of the collector's walks."""

import gc

from twisted.trial.unittest import SynchronousTestCase, TestCase

from ilchat.gcpolicy import THRESHOLDS, settle_collector


class SettleCollectorTests(SynchronousTestCase):
    def setUp(self):
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)

    def test_objects_alive_at_start_up_are_frozen(self):
        """After the call, what lived before sits in the permanent generation; thresholds set."""
        kept = [object() for _ in range(1000)]
        gc.unfreeze()
        settle_collector()
        self.assertGreaterEqual(gc.get_freeze_count(), len(kept))
        self.assertEqual(gc.get_threshold(), THRESHOLDS)



class ServerSettlesCollectorTests(TestCase):
    def setUp(self):
        before = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *before)
        self.addCleanup(gc.unfreeze)

    async def test_a_started_server_has_frozen_its_start_up(self):
        """With C{settle_collector} (what twistd's makeService passes), once it listens."""
        from tests.support.server import start_server

        gc.unfreeze()
        server = await start_server(self, settle_collector=True)
        self.assertGreater(gc.get_freeze_count(), 10_000)  # modules, classes, the server's objects
        self.assertEqual(gc.get_threshold(), THRESHOLDS)

    async def test_without_it_the_collector_is_left_alone(self):
        """The test suite's servers (and any embedding process) keep the collector unchanged."""
        from tests.support.server import start_server

        gc.unfreeze()
        await start_server(self)
        self.assertEqual(gc.get_freeze_count(), 0)
