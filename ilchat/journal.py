# -*- test-case-name: tests.test_journal -*-
"""
A local, append-only journal of records waiting for the database, so a crash loses none of them.

The history writer appends a record for every row it queues and empties the journal once the
database has every row (``truncate``). A record is one line: the CRC-32 of its JSON (eight hex
digits), a space, the JSON (ASCII only, so a lone surrogate survives), a newline. Appends are
plain ``write`` calls of a few hundred bytes in the reactor; the ``fsync`` runs in a thread, at
most one at a time and once per reactor turn for everything appended meanwhile, so delivery is
never slowed by the disk. ``sync()`` fires when everything appended so far is on disk.

At start, ``replay()`` reads the records back. A crash in the middle of a write leaves a last
line without its newline, or whose checksum does not match: it is skipped with one log line and
every record before it is kept (a damaged line elsewhere is skipped the same way).
"""

from __future__ import annotations

import fcntl
import json
import os
import zlib
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

__all__ = ["Journal", "JournalError", "client_journal", "encode_record", "decode_line"]


class JournalError(Exception):
    """The journal cannot be used (not writable, or locked by another process)."""


def encode_record(record: Dict[str, Any]) -> bytes:
    """One journal line for ``record`` (a JSON object)."""
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(payload), payload)


def decode_line(line: bytes) -> Optional[Dict[str, Any]]:
    """The record of one complete line (without its newline), or None when it is damaged."""
    crc, _, payload = line.partition(b" ")
    try:
        if len(crc) != 8 or int(crc, 16) != zlib.crc32(payload):
            return None
        record = json.loads(payload.decode("ascii"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def client_journal(client: Any, kind: str) -> "Journal":
    """
    The journal ``<journal_dir>/ilchat-<client>-<kind>.journal`` of a client (server.cfg
    ``journal_dir``); ``kind`` is ``"history"`` or ``"osc"``.
    """
    folder = getattr(client.server_config, "journal_dir", None) or "."
    path = os.path.join(folder, "ilchat-{}-{}.journal".format(client.config.name, kind))
    return Journal(path, client.reactor)


class Journal:
    """
    One journal file (one per client and kind of row).

    Args:
        path: the file; its folder is created if needed.
        reactor: runs the ``fsync`` calls in its thread pool.
    """

    _log = Logger()

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor
        self._fd: Optional[int] = None
        self._written = 0  # generation: bumped by every append or truncate
        self._synced = 0
        self._syncing = False
        self._sync_call: Any = None
        self._waiters: List[Tuple[int, Deferred[None]]] = []
        self._write_failed = False

    def open(self) -> None:
        """Create the folder and open the file for appending (at start, before the reactor runs)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise JournalError("cannot open the journal {} (server.cfg journal_dir): {}".format(
                self.path, e.strerror or e)) from e
        try:
            # Two processes appending to one journal would replay each other's rows.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                "the journal {} is in use by another process (two servers with one journal_dir "
                "and client?)".format(self.path)
            ) from None
        self._fd = fd

    def replay(self) -> List[Dict[str, Any]]:
        """Every intact record in the file, in order (damaged lines are skipped and logged)."""
        with open(self.path, "rb") as f:
            data = f.read()
        lines = data.split(b"\n")
        records = []
        for number, line in enumerate(lines[:-1], start=1):
            record = decode_line(line)
            if record is None:
                self._log.error("Journal {path}: damaged record on line {line} skipped",
                                path=self.path, line=number)
            else:
                records.append(record)
        if lines[-1]:
            self._log.warn(
                "Journal {path}: the last record was cut off by a crash mid-write ({size} bytes); "
                "skipped, the {count} records before it are kept",
                path=self.path, size=len(lines[-1]), count=len(records),
            )
            # Later appends must start on a line of their own.
            self._write(b"\n")
        return records

    def append(self, record: Dict[str, Any]) -> None:
        """Write ``record`` now; it is on disk after the next ``fsync`` (see :meth:`sync`)."""
        self._write(encode_record(record))

    def truncate(self) -> None:
        """Empty the file: everything in it is in the database."""
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        self._changed()

    def sync(self) -> "Deferred[None]":
        """Fire when everything appended (or truncated) so far is on disk."""
        if self._synced >= self._written:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append((self._written, d))
        return d

    def close(self) -> "Deferred[None]":
        """Sync, then close the file."""
        d = self.sync()

        def close(_: Any) -> None:
            if self._sync_call is not None and self._sync_call.active():
                self._sync_call.cancel()
            fd, self._fd = self._fd, None
            if fd is not None:
                os.close(fd)

        return d.addCallback(close)

    def size(self) -> int:
        """Bytes in the file now."""
        return 0 if self._fd is None else os.fstat(self._fd).st_size

    # -- internals ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("journal {} is not open".format(self.path))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            # The row is still queued in memory; only a crash now could lose it.
            if not self._write_failed:
                self._log.error("Journal {path}: write failed ({error}); rows are kept in memory only",
                                path=self.path, error=e)
            self._write_failed = True
            return
        if self._write_failed:
            self._log.info("Journal {path}: writes work again", path=self.path)
            self._write_failed = False
        self._changed()

    def _changed(self) -> None:
        self._written += 1
        if self._sync_call is None and not self._syncing:
            self._sync_call = self._reactor.callLater(0, self._start_sync)

    def _start_sync(self) -> None:
        self._sync_call = None
        if self._fd is None:
            return
        target = self._written
        self._syncing = True
        d = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), os.fsync, self._fd)
        d.addCallbacks(self._synced_to, self._sync_failed, callbackArgs=(target,))

    def _synced_to(self, _: Any, target: int) -> None:
        self._syncing = False
        self._synced = target
        waiting, self._waiters = self._waiters, []
        for generation, d in waiting:
            if generation <= target:
                d.callback(None)
            else:
                self._waiters.append((generation, d))
        if self._written > self._synced and self._sync_call is None:
            self._sync_call = self._reactor.callLater(0, self._start_sync)

    def _sync_failed(self, failure: Any) -> None:
        self._syncing = False
        self._log.failure("Journal {path}: fsync failed; trying again", failure, path=self.path)
        self._sync_call = self._reactor.callLater(1.0, self._start_sync)
