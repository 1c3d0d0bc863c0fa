"""
What the private database servers of the tests (L{tests.support.private_mariadb},
L{tests.support.private_redis}) share: a server process that a test can freeze, thaw and stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional

from twisted.internet import threads


class PrivateServerProcess:
    """A server started by a test (``self.process``), never one of the machine's own."""

    #: Seconds ``stop`` waits after SIGTERM before it kills.
    stop_timeout = 30

    process: Optional[subprocess.Popen] = None

    def freeze(self) -> None:
        """
        SIGSTOP: the server keeps its connections (the kernel even accepts new ones) and answers
        nothing, a hung server.

        Returns once every thread of the server is stopped: on a loaded machine a thread already
        running could otherwise still answer a request sent right after the signal.
        """
        self.process.send_signal(signal.SIGSTOP)
        tasks = f"/proc/{self.process.pid}/task"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = []
            for task in os.listdir(tasks):
                try:
                    with open(f"{tasks}/{task}/stat") as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    continue  # a thread that ended meanwhile
            if all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)
        raise RuntimeError(f"server process {self.process.pid} did not stop within 5 s")

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        """SIGTERM (after SIGCONT, should it be frozen) and wait for the exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            await threads.deferToThread(process.wait, self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            await threads.deferToThread(process.wait)
