"""
The cluster harness itself: two ``twistd ilchat`` processes with their own instance names on
one Redis prefix, each subscribed to the client's topics; a SIGKILLed node starts again.
"""

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.support.cluster import start_cluster
from tests.support.private_redis import SHARED_REDIS_PORT, redis_command


class ClusterHarnessTests(TestCase):
    timeout = 120

    async def test_two_nodes_subscribe_and_one_restarts_after_sigkill(self) -> None:
        cluster = await start_cluster(self, size=2)
        channel = f"{cluster.prefix}bus:room:{cluster.client_name}"
        counts = await threads.deferToThread(
            redis_command, SHARED_REDIS_PORT, "PUBSUB", "NUMSUB", channel
        )
        self.assertEqual(counts.split()[-1], "2", counts)
        for node in cluster.nodes:
            self.assertIn(f"instance {node.name}", node.output() + node.log_text())
        self.assertEqual(await cluster.kill("node-1"), -9)
        await cluster.start("node-1")
        self.assertEqual(await cluster.stop("node-2"), 0)
