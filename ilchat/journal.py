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

from ilchat.jsonutil import dumps_ascii

__all__ = ["Journal", "JournalError", "client_journal", "encode_record", "decode_line"]


class JournalError(Exception):
    """The journal cannot be used (not writable, or locked by another process)."""


def encode_record(record: Dict[str, Any]) -> bytes:
    """One journal line for ``record`` (a JSON object)."""
    payload = dumps_ascii(record).encode("ascii")
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


def _sync_file_and_folder(fd: int, folder: Optional[str], closing: List[int]) -> None:
    """fsync the journal, and its folder so that a rotation or a new file survives a crash."""
    os.fsync(fd)
    for old in closing:
        os.close(old)
    if folder is None:
        return
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)


def client_journal(client: Any, kind: str) -> "Journal":
    """
    The journal ``<journal_dir>/ilchat-<client>-<kind>.journal`` of a client (server.cfg
    ``journal_dir``); ``kind`` is ``"history"`` or ``"osc"``.
    """
    folder = client.server_config.journal_dir
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
        #: Descriptors of rotated-away files, closed by the next fsync (in its thread).
        self._closing: List[int] = []
        #: The folder changed (a file was made, renamed or removed): fsync it with the file.
        self._sync_folder = True

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

    @property
    def old_path(self) -> str:
        """The previous segment, kept after :meth:`rotate` until :meth:`drop_old`."""
        return self.path + ".old"

    def has_old(self) -> bool:
        return os.path.exists(self.old_path)

    def replay(self) -> List[Dict[str, Any]]:
        """
        Every intact record, in order: the previous segment's, then the file's (damaged lines
        are skipped and logged).
        """
        records: List[Dict[str, Any]] = []
        if self.has_old():
            self._read(self.old_path, records)
        if self._read(self.path, records):
            # Later appends must start on a line of their own.
            self._write(b"\n")
        return records

    def _read(self, path: str, records: List[Dict[str, Any]]) -> bool:
        """Add the records of ``path``; True when its last line was cut off."""
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return False
        lines = data.split(b"\n")
        for number, line in enumerate(lines[:-1], start=1):
            record = decode_line(line)
            if record is None:
                self._log.error("Journal {path}: damaged record on line {line} skipped",
                                path=path, line=number)
            else:
                records.append(record)
        if lines[-1]:
            self._log.warn(
                "Journal {path}: the last record was cut off by a crash mid-write ({size} bytes); "
                "skipped, the {count} records before it are kept",
                path=path, size=len(lines[-1]), count=len(records),
            )
            return True
        return False

    def rotate(self) -> None:
        """
        Go on in a fresh file and keep this one as :attr:`old_path`, for a journal that grows
        because the queue never empties under a steady load. Its owner calls :meth:`drop_old`
        once every row in it is in the database; :meth:`replay` reads both.
        """
        if self._fd is None or self.has_old():
            return
        os.rename(self.path, self.old_path)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        old, self._fd = self._fd, fd
        # The old file keeps its lock until it is closed; its data was written, so only the new
        # file and the folder need the next fsync.
        self._closing.append(old)
        self._sync_folder = True
        self._changed()

    def drop_old(self) -> None:
        """Remove the previous segment: the database has every row in it."""
        try:
            os.unlink(self.old_path)
        except FileNotFoundError:
            pass
        self._sync_folder = True
        self._changed()

    def append(self, record: Dict[str, Any]) -> None:
        """Write ``record`` now; it is on disk after the next ``fsync`` (see :meth:`sync`)."""
        self._write(encode_record(record))

    def truncate(self) -> None:
        """
        Empty the journal: everything in it is in the database.

        No ``fsync`` of its own (the history writer empties the journal after every batch, and a
        second ``fsync`` per batch was most of the journal's cost): the next append's ``fsync``
        makes the new length durable with it. Until then a crash leaves rows in the file that
        the database already has, and the replay skips them by their id; nothing is lost.
        """
        if self._fd is None:
            return
        if self.has_old():
            os.unlink(self.old_path)
            self._sync_folder = True
            os.ftruncate(self._fd, 0)
            self._changed()
            return
        os.ftruncate(self._fd, 0)

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
            for old in [fd, *self._closing]:
                if old is not None:
                    os.close(old)
            self._closing = []

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
        closing, self._closing = self._closing, []
        folder = os.path.dirname(os.path.abspath(self.path)) if self._sync_folder else None
        self._sync_folder = False
        d = threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _sync_file_and_folder, self._fd,
            folder, closing,
        )
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
