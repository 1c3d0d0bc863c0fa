# -*- test-case-name: tests.test_statefile -*-
"""
A small JSON file that one run leaves for the next (``journal_dir``), written whole or not at all.

``write(value)`` replaces the file atomically (a temporary file beside it, ``fsync``, ``rename``,
``fsync`` of the folder) in a thread, so a crash leaves the old file or the new one, never half of
one. ``take()`` reads it back and removes it at once: what it held is used by one start only, and
a later crash cannot make a run pick up an older run's state.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.internet import threads
from twisted.internet.defer import Deferred

from ilchat.jsonutil import JSONError, dumps_ascii, loads

__all__ = ["StateFile", "StateFileError"]

#: Largest state file read back; anything bigger is not one we wrote.
MAX_SIZE = 16 * 1024 * 1024


class StateFileError(Exception):
    """The file exists but cannot be read or is not JSON; ``str()`` says why."""


def _write_atomically(path: str, data: bytes) -> None:
    folder = os.path.dirname(path) or "."
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


class StateFile:
    """The state file at ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, value: Any) -> "Deferred[None]":
        """Replace the file with ``value`` as JSON (in a thread); fires once it is on disk."""
        data = dumps_ascii(value).encode("ascii")
        return threads.deferToThread(_write_atomically, self.path, data)

    def take(self) -> Optional[Any]:
        """
        The value the file holds, or None without a file; the file is removed either way.

        A few kilobytes read once at start, before anything is served (as the journals' replay).

        Raises:
            StateFileError: the file could not be read or is not strict JSON (it is removed too).
        """
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_SIZE + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateFileError(f"{self.path}: {e.strerror or e}") from None
        finally:
            self._remove()
        if len(data) > MAX_SIZE:
            raise StateFileError(f"{self.path}: larger than {MAX_SIZE} bytes")
        try:
            return loads(data.decode("utf-8"))
        except (UnicodeDecodeError, JSONError, ValueError) as e:
            raise StateFileError(f"{self.path}: not JSON ({e})") from None

    def _remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
