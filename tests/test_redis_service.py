"""
The ``redis`` section of server.cfg through a real ``twistd ilchat``: a RedisBus on the shared
Redis (unique prefix), or one clear line and status 1 when Redis does not answer.
"""

import os
import signal

from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.support.private_redis import SHARED_REDIS_PORT, redis_command, shared_redis_prefix
from tests.support.server import free_port, write_configs
from tests.test_plugin import TWISTD, run_twistd, spawn_serving, wait_exit


class RedisSectionTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.port = free_port()

    def configs(self, **redis: object) -> list:
        server_cfg, clients = write_configs(self.folder, server={"port": self.port, "redis": redis})
        return ["--server-cfg", server_cfg, "--client-cfg", clients[0]]

    async def test_redis_unreachable_stops_the_start_with_one_line(self) -> None:
        """Nobody on the Redis port: exit status 1, one line on stderr naming the address."""
        redis_port = free_port()
        args = self.configs(host="127.0.0.1", port=redis_port)
        result = await threads.deferToThread(
            run_twistd, ["-n", "--pidfile=", "ilchat", *args], self.folder
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertTrue(
            lines[0].startswith(f"Start-up failed: Redis at 127.0.0.1:{redis_port} unreachable: "),
            lines[0],
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    async def test_serves_through_redis_and_stops_cleanly(self) -> None:
        """
        With Redis: the process connects (one log line with its instance), subscribes its
        clients' topics on the prefixed channels, and SIGTERM still exits 0.
        """
        prefix = shared_redis_prefix(self)
        args = self.configs(host="127.0.0.1", port=SHARED_REDIS_PORT, prefix=prefix, instance="node-1")
        url = f"http://127.0.0.1:{self.port}"
        process = await spawn_serving(self, [TWISTD, "-n", "--pidfile=", "ilchat", *args], self.folder, url)
        channels = await threads.deferToThread(
            redis_command, SHARED_REDIS_PORT, "PUBSUB", "CHANNELS", prefix + "bus:*"
        )
        self.assertIn(prefix + "bus:room:", channels)
        process.send_signal(signal.SIGTERM)
        code = await wait_exit(self, process)
        output = process.stdout.read().decode()
        self.assertEqual(code, 0, output)
        self.assertNotIn("Traceback", output)
        with open(os.path.join(self.folder, "chat.log")) as f:
            log = f.read()
        self.assertIn(f"Bus connected to Redis at 127.0.0.1:{SHARED_REDIS_PORT} as instance node-1", log)
        self.assertIn("Server stopped", log)
