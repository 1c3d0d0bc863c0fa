# -*- test-case-name: tests.ilias.test_identity -*-
"""
Who a browser socket is: the ILIAS user of the session its handshake carries, or (``trust``) the
user its first ``login`` names.

ILIAS's chat JavaScript says who it is in ``login`` and the Node server believes it, so anyone who
can reach the chat can read and write as anyone else. ilchat does not change ILIAS, but the page
that opens the socket carries ILIAS's own session cookie (``PHPSESSID``, or PHP's configured
``session.name``, and ``ilClientId``) whenever the chat is served under the ILIAS host and the
cookie's path. ILIAS keeps its sessions in ``usr_session`` (``ilSessionDBHandler``), with the
cookie value as ``session_id``, the ``user_id`` of the logged-in user (0 before a login, the
anonymous user's id for a guest) and ``expires`` in Unix seconds. With client.cfg ``"identity": "ilias-session"`` (the default) a socket
is bound to the ``user_id`` of a live session and a ``login`` for anyone else is refused; with
``"trust"`` the first ``login`` of a socket binds it (as with Node, but it cannot switch later).

The session is looked up once per socket, at its first ``login``, through the store (adbapi), and
the answer is kept for the socket's life: a browser that reconnects gets a new socket and is
checked again, so a session that expired or was logged out in ILIAS ends at the next reconnect
or page load, not in the middle of an open socket.

A refusal is logged as a warning naming what the operator must fix, once per burst: the first
refusal of a kind at once, the others of the next minute as one line with their count.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

__all__ = ["BurstLog", "Identity", "in_order", "log_identity_mode", "parse_cookies", "shut_down"]

#: What PHP accepts as a session id (``session.sid_bits_per_character`` 4, 5 or 6, plus ``,-``).
_SESSION_ID_RE = re.compile(r"^[A-Za-z0-9,-]{1,250}$")

#: Reasons for a refused login; the text tells an operator what is wrong.
NO_COOKIE = (
    "no ILIAS session cookie on the handshake: serve the chat under the ILIAS host and cookie "
    "path, or set identity: trust"
)
NO_SESSION = (
    "the ILIAS session of the cookie is unknown, expired or not logged in (the user must log in to "
    "ILIAS again; or the chat reads another database than ILIAS)"
)
WRONG_CLIENT = "the ilClientId cookie names another ILIAS client than this client.cfg's ilias_client_id"
OTHER_USER = "login for a user other than the one this socket is bound to"
LOOKUP_FAILED = "the ILIAS session could not be read from the database"


def parse_cookies(header: Optional[str]) -> Dict[str, str]:
    """
    The cookies of a ``Cookie`` header; a name given twice keeps its first value, as PHP does
    (the browser sends the cookie of the most specific path first).
    """
    cookies: Dict[str, str] = {}
    for part in (header or "").split(";"):
        name, sep, value = part.partition("=")
        name = name.strip()
        if sep and name and name not in cookies:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            cookies[name] = value
    return cookies


class BurstLog:
    """
    Warnings that an attacker (or a misconfiguration) could repeat a thousand times a second,
    logged once per burst: the first at once, then one line with the count of the window.
    """

    def __init__(self, reactor: IReactorTime, log: Logger, window: float = 60.0) -> None:
        self._reactor = reactor
        self._log = log
        self._window = window
        self._counts: Dict[str, int] = {}
        self._calls: Dict[str, Any] = {}

    def stop(self) -> None:
        """Log the counts still open and cancel their timers (at shutdown)."""
        for key, call in list(self._calls.items()):
            if call.active():
                call.cancel()
            self._flush(key)

    def warn(self, key: str, text: str, **fields: Any) -> None:
        """Log C{text} (a log format) now, or count it if one of this C{key} was just logged."""
        if key in self._counts:
            self._counts[key] += 1
            return
        self._counts[key] = 0
        self._log.warn(text, **fields)
        self._calls[key] = self._reactor.callLater(self._window, self._flush, key)

    def _flush(self, key: str) -> None:
        self._calls.pop(key, None)
        count = self._counts.pop(key, 0)
        if count:
            self._log.warn(
                "{count} more login refusals like this in the last {window:.0f} s: {reason}",
                count=count,
                window=self._window,
                reason=key,
            )


class Identity:
    """
    The identity rule of one ILIAS client, for one of its two namespaces (each socket is bound on
    its own: ``/<name>`` and ``/<name>-im`` are two sockets of one browser tab).

    Args:
        config: the client's ``ClientConfig`` (``identity``, ``session_cookie``,
            ``ilias_client_id``, ``name``).
        store: the client's store (``get_live_session``).
        reactor: for the clock and the burst log's timer.
    """

    _log = Logger()

    def __init__(self, config: Any, store: Any, reactor: IReactorTime) -> None:
        self.mode: str = config.identity
        self.cookie_name: str = config.session_cookie
        self.client_id: str = config.ilias_client_id or config.name
        self.anonymous_user_id: int = config.anonymous_user_id
        self.name: str = config.name
        self._store = store
        self._reactor = reactor
        self.refusals = BurstLog(reactor, self._log)

    def stop(self) -> None:
        self.refusals.stop()

    @property
    def verifies(self) -> bool:
        """Whether sockets are bound to their ILIAS session (else: to their first login)."""
        return self.mode == "ilias-session"

    async def bind(self, socket: Any, user_id: int) -> Optional[str]:
        """
        Bind C{socket} to C{user_id} for its ``login``, or say why not.

        Returns:
            None when the socket acts as C{user_id} from now on; otherwise the reason, already
            logged (as a rate-limited warning).
        """
        bound = socket.data.get("identity_user")
        if bound is None:
            if self.verifies:
                verdict = socket.data.get("identity_lookup")
                if verdict is None:
                    verdict = socket.data["identity_lookup"] = ensureDeferred(self._session_user(socket))
                session_user, reason = await _shared(verdict)
                if session_user is None:
                    return self._refuse(reason, user_id, socket)
                bound = session_user
            else:
                bound = user_id
            socket.data["identity_user"] = bound
        if bound != user_id:
            return self._refuse(OTHER_USER, user_id, socket, bound=bound)
        return None

    async def _session_user(self, socket: Any) -> tuple:
        """``(user_id, None)`` of the socket's live ILIAS session, or ``(None, reason)``."""
        cookies = parse_cookies(socket.headers.get("cookie"))
        session_id = cookies.get(self.cookie_name)
        if not session_id or not _SESSION_ID_RE.match(session_id):
            return None, NO_COOKIE
        client_id = cookies.get("ilClientId")
        if client_id is not None and client_id != self.client_id:
            return None, WRONG_CLIENT
        try:
            user_id = await self._store.get_live_session(session_id, int(self._reactor.seconds()))
        except Exception:
            self._log.failure("{name}: reading usr_session failed", name=self.name)
            return None, LOOKUP_FAILED
        if user_id is None or user_id == self.anonymous_user_id:
            return None, NO_SESSION
        return user_id, None

    def _refuse(self, reason: str, user_id: int, socket: Any, bound: Optional[int] = None) -> str:
        self.refusals.warn(
            f"{self.name}:{reason}",
            "{name}: login of user {user_id} from {address} refused: {reason}{bound_text}",
            name=self.name,
            user_id=user_id,
            address=getattr(socket, "address", None),
            reason=reason,
            bound_text="" if bound is None else f" (bound to user {bound})",
        )
        return reason


def shut_down(socket: Any) -> None:
    """
    Refuse a socket's login: ``shutdown`` (ILIAS's room page closes the socket and leaves) and
    disconnect, as for an id PHP never connected (the Node server leaves such sockets open).
    """
    socket.emit("shutdown")
    socket.disconnect()


def _shared(d: Deferred) -> Deferred:
    """A Deferred with C{d}'s result that leaves C{d}'s own result alone (several waiters)."""
    out: Deferred = Deferred()

    def relay(result: Any) -> Any:
        out.callback(result)
        return result

    d.addCallback(relay)
    return out


def log_identity_mode(config: Any) -> None:
    """Say at start-up how a client's sockets get their user (README "Security")."""
    log = Identity._log
    if getattr(config, "standalone", None) is not None:
        log.info(
            "{name}: standalone chat, its own name login; client.cfg identity does not apply",
            name=config.name,
        )
    elif config.identity == "ilias-session":
        log.info(
            "{name}: identity ilias-session: a socket acts only as the user of the ILIAS session "
            "(cookie {cookie}, ilClientId {client}) its handshake carries; the chat must be served "
            "under the ILIAS host and its cookie path for the cookie to arrive",
            name=config.name,
            cookie=config.session_cookie,
            client=config.ilias_client_id or config.name,
        )
    else:
        log.warn(
            "{name}: identity trust: any browser can act as any user PHP connected (read and "
            "write their On-Screen Chat conversations); use identity ilias-session where the "
            "ILIAS session cookie reaches the chat",
            name=config.name,
        )


_TAIL = "_ilchat_event_tail"


def in_order(socket: Any, handler: Callable[..., Any], *args: Any) -> Deferred:
    """
    Run a socket's event handler after the ones before it have finished.

    ``login`` waits for the database; the events a client sends right after it (ILIAS's
    JavaScript waits for the answer, other clients may not) must not overtake it.
    """
    previous = socket.data.get(_TAIL)
    if previous is None or previous.called:
        result = maybeDeferred(handler, *args)
    else:
        result = Deferred()
        previous.addCallback(lambda _: maybeDeferred(handler, *args).chainDeferred(result))
    if not result.called:
        tail: Deferred = Deferred()

        def done(outcome: Any) -> Any:
            tail.callback(None)
            return outcome

        result.addBoth(done)
        socket.data[_TAIL] = tail
    return result

