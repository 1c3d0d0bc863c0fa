# -*- test-case-name: tests.web.test_policy -*-
"""Which browser origins may use the chat: the one origin matcher of every listener.

The Engine.IO server (its ``allowed_origins`` list) and the network policy (``network.
allowed_origins`` of server.cfg, plus the request's own host) both match with
:class:`OriginMatcher`. It lives here, outside both, because the transports may not import
``ilchat.web``.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional, Tuple

__all__ = ["OriginMatcher", "origin_host", "strip_port"]


def _glob_to_regex(pattern: str) -> "re.Pattern[str]":
    """``*`` matches any run of characters, everything else is literal, case-insensitive."""
    parts = (re.escape(part) for part in pattern.split("*"))
    return re.compile("^" + ".*".join(parts) + "$", re.IGNORECASE)


class OriginMatcher:
    """
    Which browser origins may open a websocket or a polling session.

    Patterns follow Kiwi IRC's webircgateway ``allowed_origins``: ``*`` is a wildcard. A pattern with
    ``://`` is matched against the whole origin (``https://chat.example.org``,
    ``*://*.example.org``, ``http://localhost:*``); a pattern without it against the host only, on
    any scheme and port (``*.example.org``, ``chat.example.org``). ``*`` alone allows every
    origin; an empty list none (:meth:`allows_for` adds the request's own host).

    A request without an ``Origin`` header is allowed: browsers always send it on cross-origin
    and websocket requests, so its absence means a non-browser client (python-socketio, a bot),
    which can forge any header anyway; the allow-list is what keeps those out.
    """

    __slots__ = ("patterns", "_full", "_host", "allow_all")

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns: Tuple[str, ...] = tuple(p.strip() for p in patterns if p.strip())
        self.allow_all = "*" in self.patterns
        self._full = [_glob_to_regex(p.rstrip("/")) for p in self.patterns if "://" in p]
        self._host = [_glob_to_regex(p) for p in self.patterns if "://" not in p]

    def allows(self, origin: Optional[str]) -> bool:
        """Whether a request carrying this ``Origin`` header (or none) may go on."""
        if self.allow_all or origin is None:
            return True
        origin = origin.strip().rstrip("/")
        if origin == "null":
            # Sandboxed frames and file:// pages; only a "*" (handled above) lets those in.
            return False
        if any(regex.match(origin) for regex in self._full):
            return True
        host = origin_host(origin)
        return any(regex.match(host) for regex in self._host)

    def allows_for(self, origin: str, host: str) -> bool:
        """
        Whether a page from C{origin} may use a request sent to C{host} (no port, lower-case;
        empty when unknown): a page of that host itself, on any scheme and port (never
        ``null``), or one that :meth:`allows`.
        """
        if host and origin_host(origin) == host and origin.strip() != "null":
            return True
        return self.allows(origin)


def strip_port(authority: str) -> str:
    """``host[:port]`` or ``[v6][:port]`` without the port, lower-case."""
    authority = authority.strip()
    if authority.startswith("["):
        return authority[: authority.find("]") + 1].lower()
    return authority.rsplit(":", 1)[0].lower() if ":" in authority else authority.lower()


def origin_host(origin: str) -> str:
    """The host of an ``Origin`` value (``https://Chat.Example.org:8443`` -> ``chat.example.org``)."""
    return strip_port(origin.strip().split("://", 1)[-1].split("/", 1)[0])
