# -*- test-case-name: tests.web.test_client_page -*-
"""
The built-in chat page of the standalone chat, served at ``<sub_directory>/``.

Three files from ``ilchat/web/static`` (``index.html``, ``chat.js``, ``chat.css``), read once and
served from memory: no directory listing, no other file reachable, nothing from another server
(the page must work on a closed network). The page's settings (title, window title, welcome and
info texts, namespace, limits, rooms) and its strings (``static/strings/<language>.json``, one
file per language, the same keys in each; the page picks one from the browser's languages) are
embedded in ``index.html`` as a JSON data block, escaped so that no config text can close the
``<script>`` element, and the title and welcome text are HTML-escaped where they appear in the
markup.

Every response carries a strict Content-Security-Policy: scripts, styles and connections only
from our own origin (``connect-src 'self'`` covers ``ws:``/``wss:`` to the same host), no inline
script, no framing. Even if some user text slipped past the page's ``textContent`` rule, the
browser would not run it.
"""

from __future__ import annotations

import hashlib
import html
import os
from typing import Any, Dict, Optional, Sequence

from twisted.web.resource import IResource, Resource
from twisted.web import pages

from ilchat.jsonutil import dumps, loads

__all__ = ["ChatPageResource", "PageSettings", "mount_chat_page", "CONTENT_SECURITY_POLICY",
           "load_strings"]

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STRINGS_DIR = os.path.join(STATIC_DIR, "strings")

#: The policy of every page response (see the module docstring).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)

_ASSETS = {
    b"chat.js": "application/javascript; charset=utf-8",
    b"chat.css": "text/css; charset=utf-8",
}


class PageSettings:
    """
    What the page needs to know, taken from the standalone client config and server.cfg.

    Args:
        title: shown in the header and the browser tab.
        welcome: the text of the welcome screen.
        namespace: the Socket.IO namespace of the standalone client (``"/<name>"``).
        socketio_path: the Socket.IO path (``"<sub_directory>/socket.io/"``).
        rooms: ``[{"id": 1, "title": "Lobby"}, ...]``.
        max_name_length, max_message_length: the limits the server enforces, so that the page
            can say so before sending.
        window_title: the browser tab's title (``title`` when empty).
        info: a longer text for the welcome screen (plain text; the page keeps its line breaks
            and makes http(s) links clickable).
        strings: ``{language: {key: text}}``; L{load_strings} when None.
        files: ``{"maxBytes", "types"}`` when files can be shared, else None.
    """

    def __init__(
        self,
        title: str,
        welcome: str,
        namespace: str,
        socketio_path: str,
        rooms: Sequence[Dict[str, Any]],
        max_name_length: int,
        max_message_length: int,
        window_title: str = "",
        info: str = "",
        strings: Optional[Dict[str, Dict[str, str]]] = None,
        files: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.title = title
        self.welcome = welcome
        self.namespace = namespace
        self.socketio_path = socketio_path
        self.rooms = [dict(room) for room in rooms]
        self.max_name_length = max_name_length
        self.max_message_length = max_message_length
        self.window_title = window_title or title
        self.info = info
        self.strings = load_strings() if strings is None else strings
        self.files = files

    def as_json(self) -> Dict[str, Any]:
        return {
            "title": self.title,
            "windowTitle": self.window_title,
            "info": self.info,
            "welcome": self.welcome,
            "namespace": self.namespace,
            "path": self.socketio_path,
            "rooms": self.rooms,
            "maxNameLength": self.max_name_length,
            "maxMessageLength": self.max_message_length,
            "strings": self.strings,
            "files": self.files,
        }


def load_strings(folder: str = STRINGS_DIR) -> Dict[str, Dict[str, str]]:
    """Every ``<language>.json`` of the page's strings folder, by language code."""
    strings = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            with open(os.path.join(folder, name), "rb") as handle:
                strings[name[:-5]] = loads(handle.read().decode("utf-8"))
    return strings


def script_safe_json(value: Any) -> str:
    """
    JSON that can sit inside a ``<script type="application/json">`` element.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes (still the same JSON), so a config text
    such as ``</script><script>alert(1)`` cannot end the element; U+2028/U+2029 are escaped for
    old parsers.
    """
    text = dumps(value)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def render_index(template: str, settings: PageSettings) -> bytes:
    """Fill the ``{{title}}``, ``{{window_title}}``, ``{{welcome}}`` and ``{{config}}`` slots."""
    filled = (
        template.replace("{{window_title}}", html.escape(settings.window_title, quote=True))
        .replace("{{title}}", html.escape(settings.title, quote=True))
        .replace("{{welcome}}", html.escape(settings.welcome, quote=True))
        .replace("{{config}}", script_safe_json(settings.as_json()))
    )
    return filled.encode("utf-8")


def _read(name: str) -> bytes:
    with open(os.path.join(STATIC_DIR, name), "rb") as handle:
        return handle.read()


def _set_common_headers(request, content_type: str) -> None:
    request.setHeader(b"content-type", content_type.encode("ascii"))
    for name, value in _SECURITY_HEADERS:
        request.setHeader(name, value)


class _Asset(Resource):
    """One static file from memory, with an ETag so that reloads cost a 304."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self._body = body
        self._content_type = content_type
        self._etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode("ascii") + b'"'

    def render_GET(self, request) -> bytes:  # noqa: N802 (twisted API)
        _set_common_headers(request, self._content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"etag", self._etag)
        if request.getHeader(b"if-none-match") == self._etag:
            request.setResponseCode(304)
            return b""
        return self._body


class _StaticFolder(Resource):
    """``static/``: exactly the page's assets; anything else is an escaped 404 page."""

    def __init__(self, assets: Dict[bytes, _Asset]) -> None:
        super().__init__()
        for name, asset in assets.items():
            self.putChild(name, asset)

    def getChild(self, path: bytes, request) -> IResource:  # noqa: N802 (twisted API)
        return pages.notFound()

    def render(self, request) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Not found\n"


class ChatPageResource(Resource):
    """
    ``index.html`` of the chat page (at ``<sub_directory>/``); its ``static`` child holds the
    script and the style sheet.

    The HTML is built once from the settings; it carries no per-request data, so it can be
    cached by the browser (``no-cache``: revalidated, as a restarted server may have a new script).
    """

    isLeaf = True

    def __init__(self, settings: PageSettings) -> None:
        super().__init__()
        self.settings = settings
        self._body = render_index(_read("index.html").decode("utf-8"), settings)
        self.static = _StaticFolder(
            {name: _Asset(_read(name.decode("ascii")), kind) for name, kind in _ASSETS.items()}
        )

    def render_GET(self, request) -> bytes:  # noqa: N802 (twisted API)
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        _set_common_headers(request, "text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self._body


def mount_chat_page(web_root: Any, page: ChatPageResource) -> None:
    """
    Serve the page at ``<sub_directory>/`` (at ``/`` when there is no sub directory).

    ``web_root`` is the ``ilchat.web.site.WebRoot``: the page becomes its folder's ``""`` child
    (a request for ``/`` has the one empty path segment) and the assets its ``static`` child.
    """
    at_root = web_root.sub is None
    web_root.put("", page, root=at_root, sub=not at_root)
    web_root.put("static", page.static, root=at_root, sub=not at_root)
