# -*- test-case-name: tests.standalone.test_files -*-
"""
Files shared in the standalone chat (client.cfg ``standalone`` ``files_folder``).

A logged-in page uploads a file with ``POST <sub_directory>/files/?room=<id>``: the body is the
file itself (no multipart), ``Content-Type`` its type, ``X-Filename`` its name (percent-encoded
UTF-8) and ``X-Ilchat-Token`` the token of the page's login, which names the member. The file
must be at most ``files_max_bytes`` (and within the HTTP body limit of the site) and of one of
the ``files_types``; an image type must also look like that image. It is written to
``<files_folder>/<id>`` under a random id (first as ``<id>.part``, renamed once complete; its
description beside it as ``<id>.json``), and announced in the room as a message of the
uploader whose ``format`` is ``{"file": {id, name, type, size}}`` and whose text is the name,
the size and the file's absolute address, which is what IRC users get.

twisted.web reads a whole request body before a resource sees it, so an upload that is cut off
never reaches us and leaves nothing behind; ``.part`` files of a process that died while
writing are removed at start.

``GET <sub_directory>/files/<id>/<name>`` serves the file to whoever passes the site's address
allow-list: ``Content-Disposition: attachment`` except for PNG, JPEG, GIF and WebP images
(``inline``, shown as thumbnails), ``nosniff``, and a Content-Security-Policy that allows
nothing (``sandbox``), so that no uploaded file can run as a page of ours. A room's files go with
its history: ``ClearMessages`` and the daily purge remove them (L{SharedFiles.remove_room},
L{SharedFiles.remove_older}). Disk work runs in threads, never in the reactor.
"""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from typing import Any, Callable, Dict, Optional, Sequence
from urllib.parse import quote, unquote

from twisted.internet import threads
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

from ilchat.jsonutil import dumps, loads

__all__ = ["SharedFiles", "FilesResource", "UploadRefused", "INLINE_TYPES", "human_size",
           "clean_name", "content_disposition", "file_payload", "file_path", "upload_name",
           "upload_type"]

#: Image types shown inline (as thumbnails), with the bytes each must start with.
INLINE_TYPES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}

_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_FILE_CSP = b"default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox"
_MAX_NAME = 200


class UploadRefused(Exception):
    """An upload that is not stored: ``code`` is the HTTP status, ``error`` a short key."""

    def __init__(self, code: int, error: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error = error


def human_size(size: int) -> str:
    """``532 B``, ``14 kB``, ``1.4 MB``: for the message text."""
    if size < 1000:
        return f"{size} B"
    if size < 1_000_000:
        return f"{size / 1000:.0f} kB"
    return f"{size / 1_000_000:.1f} MB"


def clean_name(raw: Optional[str]) -> str:
    """A file name fit to show and to send back: no folders, controls or invisible characters."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co", "Cn",
                                                                     "Zl", "Zp")).strip()
    name = name.lstrip(".") or "file"
    return name[:_MAX_NAME]


class SharedFiles:
    """
    The files of one standalone chat, in one folder (see the module docstring).

    Args:
        folder: where the files go (made if missing).
        max_bytes: the largest file.
        types: the allowed MIME types (lower case).
    """

    _log = Logger()

    def __init__(self, folder: str, max_bytes: int, types: Sequence[str]) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.types = {t.lower() for t in types}

    def start(self) -> Any:
        """Make the folder and remove what a process that died while writing left."""
        def prepare() -> int:
            os.makedirs(self.folder, exist_ok=True)
            removed = 0
            for name in os.listdir(self.folder):
                if name.endswith(".part"):
                    os.unlink(os.path.join(self.folder, name))
                    removed += 1
            return removed

        return threads.deferToThread(prepare)

    def check(self, content_type: str, data: bytes) -> None:
        """Raise L{UploadRefused} for a file that may not be stored."""
        if len(data) > self.max_bytes:
            raise UploadRefused(413, "file_too_large",
                                f"The file is too large: {human_size(len(data))}, at most "
                                f"{human_size(self.max_bytes)}.")
        if not data:
            raise UploadRefused(400, "empty_file", "The file is empty.")
        if content_type not in self.types:
            raise UploadRefused(415, "type_refused",
                                f"Files of the type {content_type or 'unknown'} cannot be shared here.")
        starts = INLINE_TYPES.get(content_type)
        if starts is not None and not any(data.startswith(s) for s in starts):
            raise UploadRefused(415, "not_an_image", f"The file is not a valid {content_type} image.")

    async def save(self, room_id: int, name: str, content_type: str, data: bytes,
                   uploader: Dict[str, Any]) -> Dict[str, Any]:
        """Store a checked file; returns its description ``{id, name, type, size, room, ...}``."""
        file_id = secrets.token_urlsafe(18)
        meta = {"id": file_id, "name": name, "type": content_type, "size": len(data),
                "room": room_id, "uploader": uploader}

        def write() -> None:
            path = self.path(file_id)
            with open(path + ".part", "wb") as handle:
                handle.write(data)
            with open(path + ".json", "w", encoding="utf-8") as handle:
                handle.write(dumps(meta))
            os.replace(path + ".part", path)

        await threads.deferToThread(write)
        return meta

    def path(self, file_id: str) -> str:
        return os.path.join(self.folder, file_id)

    async def read(self, file_id: str) -> Optional[tuple]:
        """``(description, bytes)`` of a stored file, or None."""
        if not _ID.match(file_id):
            return None

        def read() -> Optional[tuple]:
            try:
                with open(self.path(file_id) + ".json", encoding="utf-8") as handle:
                    meta = loads(handle.read())
                with open(self.path(file_id), "rb") as handle:
                    return meta, handle.read()
            except (OSError, ValueError):
                return None

        return await threads.deferToThread(read)

    async def remove(self, wanted: Callable[[Dict[str, Any]], bool]) -> int:
        """Remove every file whose description C{wanted} accepts; returns how many."""
        def remove() -> int:
            removed = 0
            for entry in os.listdir(self.folder):
                if not entry.endswith(".json"):
                    continue
                path = os.path.join(self.folder, entry)
                try:
                    with open(path, encoding="utf-8") as handle:
                        meta = loads(handle.read())
                    mtime = os.path.getmtime(path)
                except (OSError, ValueError):
                    continue
                if wanted(dict(meta, mtime=mtime)):
                    for victim in (path[:-5], path):
                        try:
                            os.unlink(victim)
                        except FileNotFoundError:
                            pass
                    removed += 1
            return removed

        count = await threads.deferToThread(remove)
        if count:
            self._log.info("{count} shared files removed from {folder}", count=count,
                           folder=self.folder)
        return count

    def remove_room(self, room_id: int) -> Any:
        """The room's history was cleared: its files go too."""
        return self.remove(lambda meta: meta.get("room") == room_id)

    def remove_older(self, bound_s: float) -> Any:
        """The daily purge: files stored before C{bound_s} (Unix seconds) go, as the history does."""
        return self.remove(lambda meta: meta["mtime"] < bound_s)


class FilesResource(Resource):
    """
    ``files/``: ``POST`` uploads (to C{accept(request, data) -> Deferred[dict]}), ``GET <id>/<name>``
    downloads.
    """

    _log = Logger()

    def __init__(self, files: SharedFiles, accept: Callable[..., Any]) -> None:
        super().__init__()
        self.files = files
        self.accept = accept

    def getChild(self, path: bytes, request: Any) -> IResource:  # noqa: N802 (twisted API)
        if path in (b"",):
            return self
        return _StoredFile(self.files, path.decode("ascii", "replace"))

    def render_POST(self, request: Any) -> Any:  # noqa: N802 (twisted API)
        data = request.content.read()

        def answer(result: Dict[str, Any]) -> None:
            _json(request, 200, result)

        def refused(failure: Any) -> None:
            error = failure.check(UploadRefused)
            if error is None:
                self._log.failure("Upload failed", failure)
                _json(request, 500, {"error": "error", "message": "The upload failed; please try again."})
            else:
                _json(request, failure.value.code,
                      {"error": failure.value.error, "message": str(failure.value)})

        d = self.accept(request, data)
        d.addCallbacks(answer, refused)
        return NOT_DONE_YET

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 (twisted API)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not found\n"


class _StoredFile(Resource):
    isLeaf = True

    def __init__(self, files: SharedFiles, file_id: str) -> None:
        super().__init__()
        self.files = files
        self.file_id = file_id

    def render_GET(self, request: Any) -> Any:  # noqa: N802 (twisted API)
        def send(found: Optional[tuple]) -> None:
            request.setHeader(b"x-content-type-options", b"nosniff")
            request.setHeader(b"content-security-policy", _FILE_CSP)
            request.setHeader(b"referrer-policy", b"no-referrer")
            if found is None:
                request.setResponseCode(404)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                request.write(b"Not found\n")
                request.finish()
                return
            meta, data = found
            kind = meta.get("type") if meta.get("type") in INLINE_TYPES else "application/octet-stream"
            disposition = "inline" if kind in INLINE_TYPES else "attachment"
            name = str(meta.get("name") or "file")
            request.setHeader(b"content-type", kind.encode("ascii"))
            request.setHeader(b"content-disposition", content_disposition(disposition, name))
            request.setHeader(b"cache-control", b"private, max-age=86400")
            request.write(data)
            request.finish()

        ensureDeferred(self.files.read(self.file_id)).addCallback(send)
        return NOT_DONE_YET

    def render_POST(self, request: Any) -> bytes:  # noqa: N802 (twisted API)
        request.setResponseCode(405)
        return b""


def content_disposition(disposition: str, name: str) -> bytes:
    """``attachment; filename="..."; filename*=UTF-8''...`` with an ASCII fallback name."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\;' else "_" for c in name)
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}".encode("ascii")


def _json(request: Any, code: int, body: Dict[str, Any]) -> None:
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"cache-control", b"no-store")
    request.write(dumps(body).encode("utf-8"))
    request.finish()


def upload_name(request: Any) -> str:
    """The ``X-Filename`` header (percent-encoded UTF-8), cleaned."""
    raw = request.getHeader(b"x-filename")
    text = unquote(raw.decode("ascii", "replace"), encoding="utf-8", errors="replace") if raw else ""
    return clean_name(text)


def upload_type(request: Any) -> str:
    raw = request.getHeader(b"content-type") or b""
    return raw.decode("ascii", "replace").split(";", 1)[0].strip().lower()


def file_payload(meta: Dict[str, Any]) -> Dict[str, Any]:
    """What a message's ``format.file`` says of a file (no uploader, no room)."""
    return {key: meta[key] for key in ("id", "name", "type", "size")}


def file_path(meta: Dict[str, Any]) -> str:
    """``files/<id>/<name>``, relative to the page."""
    return f"files/{meta['id']}/{quote(meta['name'], safe='')}"


