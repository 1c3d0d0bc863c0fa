"""
Redis for the tests: the shared server on 127.0.0.1:6379 (a unique channel and key prefix per
test, its keys deleted afterwards) or a private ``redis-server`` for tests that stop it.

Usage in a trial ``TestCase``::

    prefix = shared_redis_prefix(self)                  # "ilchat-test-<hex>:", cleaned up
    redis = await PrivateRedis.start_for(self)          # own port and folder, stopped by a cleanup
    await redis.stop(); await redis.start()             # a restart on the same port
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any, Optional

from twisted.internet import threads

from tests.support.private_process import PrivateServerProcess
from tests.support.server import free_port

__all__ = ["PrivateRedis", "SHARED_REDIS_PORT", "redis_command", "shared_redis_prefix"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
SHARED_REDIS_PORT = 6379


def redis_command(port: int, *args: str) -> str:
    """One command through ``redis-cli`` (raw reply text); blocking, for a thread or a cleanup."""
    result = subprocess.run(
        [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), "--raw", *args],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
    )
    return result.stdout.decode("utf-8", "replace")


def _delete_keys(port: int, prefix: str) -> None:
    keys = redis_command(port, "KEYS", prefix + "*").split()
    if keys:
        redis_command(port, "DEL", *keys)


def shared_redis_prefix(test_case: Any) -> str:
    """A prefix nobody else uses on the shared Redis; its keys are deleted after the test."""
    prefix = f"ilchat-test-{uuid.uuid4().hex}:"
    test_case.addCleanup(threads.deferToThread, _delete_keys, SHARED_REDIS_PORT, prefix)
    return prefix


class PrivateRedis(PrivateServerProcess):
    """One ``redis-server`` on a free port and a temporary folder (never the shared one)."""

    stop_timeout = 20

    def __init__(self, folder: str, password: Optional[str] = None, tls: Optional[dict] = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.password = password
        #: ``{"chain", "key"}`` (PEM files, e.g. ``tests.test_tls.make_pki``): TLS only.
        self.tls = tls
        self.process: Optional[subprocess.Popen] = None

    @classmethod
    async def start_for(
        cls, test_case: Any, password: Optional[str] = None, tls: Optional[dict] = None
    ) -> "PrivateRedis":
        server = cls(os.path.abspath(test_case.mktemp()), password, tls)
        os.makedirs(server.folder, exist_ok=True)
        test_case.addCleanup(server.stop)
        await server.start()
        return server

    async def start(self) -> None:
        """Start (again) on the same port; returns once it answers PING."""
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.folder,
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", os.path.join(self.folder, "redis.log")]
        if self.password is not None:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            args[1:3] = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                         self.tls["chain"], "--tls-key-file", self.tls["key"],
                         "--tls-auth-clients", "no", "--tls-protocols", "TLSv1.2 TLSv1.3"]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        await threads.deferToThread(self._wait_until_it_answers)

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}; see {self.folder}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
