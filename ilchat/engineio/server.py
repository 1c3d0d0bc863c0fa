# -*- test-case-name: tests.engineio.test_server -*-
"""Engine.IO protocol v4 server on twisted.web (long-polling) and Autobahn (websocket).

Usage::

    class Echo:
        __slots__ = ("session",)
        def __init__(self, session):
            self.session = session
        def message_received(self, data):          # str, or bytes for binary
            self.session.send_message(data)
        def session_closed(self, reason):          # "transport close", "ping timeout", ...
            pass

    server = EngineIOServer(reactor, Echo)
    root.putChild(b"engine.io", server.resource)

The resource serves both transports on one path: ``?EIO=4&transport=polling`` (GET receives,
POST sends) and ``?EIO=4&transport=websocket`` (with ``sid`` for an upgrade from polling).  Errors
are answered the way the socket.io v4 server (engine.io 6) does: HTTP 400 with
``{"code": N, "message": "..."}``, 403 for a refused origin.

The application object returned by ``handler_factory(session)`` gets each message with
``message_received(data)`` and the end of the session with ``session_closed(reason)``; it sends
with ``session.send_message(data)`` or, to share one encoding between many sessions,
``session.send_packets([OutgoingPacket(...)])``.

The parts: :mod:`~ilchat.engineio.session` (one session: polling, websocket, heartbeat,
upgrade), :mod:`~ilchat.engineio.resource` (the HTTP path: CORS, checks, routing),
:mod:`~ilchat.engineio.responses` (engine.io's error answers), :mod:`~ilchat.engineio.websocket`
(the Autobahn protocol and factory), :mod:`~ilchat.engineio.outgoing` (packets encoded once),
:mod:`~ilchat.engineio.packets` (the codec) and :mod:`~ilchat.engineio._internals` (everything
that relies on Autobahn's or Twisted's internals). This module holds the server and re-exports
the names the layers above use.
"""


from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from ilchat.engineio._internals import MAX_FRAMES_PER_TURN
from ilchat.engineio.outgoing import OutgoingPacket
from ilchat.engineio.resource import EngineIOResource, default_address
from ilchat.engineio.responses import (
    PollOutbox,
    ERROR_BAD_HANDSHAKE_METHOD,
    ERROR_BAD_REQUEST,
    ERROR_FORBIDDEN,
    ERROR_UNKNOWN_SID,
    ERROR_UNKNOWN_TRANSPORT,
    ERROR_UNSUPPORTED_PROTOCOL_VERSION,
)
from ilchat.engineio.session import (
    CLOSE_POLICY_VIOLATION,
    CLOSE_PROTOCOL_ERROR,
    MAX_PACKETS_PER_POST,
    MAX_POLLING_QUEUE,
    UPGRADE_TIMEOUT,
    EngineIOSession,
    SessionHandler,
)
from ilchat.engineio.websocket import EngineIOWebSocketFactory
from ilchat.logs import RepeatedLog
from ilchat.origins import OriginMatcher

__all__ = [
    "EngineIOServer",
    "EngineIOSession",
    "OutgoingPacket",
    "SessionHandler",
    "ERROR_UNKNOWN_TRANSPORT",
    "ERROR_UNKNOWN_SID",
    "ERROR_BAD_HANDSHAKE_METHOD",
    "ERROR_BAD_REQUEST",
    "ERROR_FORBIDDEN",
    "ERROR_UNSUPPORTED_PROTOCOL_VERSION",
    "CLOSE_POLICY_VIOLATION",
    "CLOSE_PROTOCOL_ERROR",
    "MAX_FRAMES_PER_TURN",
    "MAX_PACKETS_PER_POST",
    "MAX_POLLING_QUEUE",
    "UPGRADE_TIMEOUT",
    "default_address",
]

_log = Logger(namespace="ilchat.engineio")


def _origin_matcher(allowed: Any) -> Callable[[str], bool] | None:
    if allowed is None:
        return None
    if callable(allowed):
        return allowed
    if isinstance(allowed, str):
        allowed = [allowed]
    return OriginMatcher(allowed).allows


class EngineIOServer:
    """Engine.IO v4 server: owns the sessions, the timers' settings and the web resource.

    Args:
        reactor: provides ``callLater`` (a ``task.Clock`` in tests).
        handler_factory: ``handler_factory(session)`` returns the application object of a new
            session (see :class:`SessionHandler`).
        ping_interval: seconds between server pings (engine.io default 25).
        ping_timeout: seconds to wait for the pong (default 20).
        max_payload: largest POST body / websocket message in bytes (default 1e6).
        allowed_origins: ``None`` allows (and echoes) every ``Origin``; otherwise a callable
            ``origin -> bool`` or a list of patterns with ``*`` wildcards
            (:class:`ilchat.origins.OriginMatcher`: the whole origin when a pattern has ``://``,
            else its host).  A refused origin gets
            403 ``{"code":4,"message":"Forbidden"}``.
        address_resolver: ``address_resolver(request) -> str`` for ``session.address``; the TCP
            peer address by default (a network policy can trust proxy headers instead).
        origin_check: ``origin_check(request, origin) -> None | "*" | origin``, asked instead of
            ``allowed_origins`` when set (a network policy that needs the request): ``None``
            refuses, ``"*"`` answers ``Access-Control-Allow-Origin: *`` without credentials,
            the origin is echoed with ``Access-Control-Allow-Credentials: true``.
        connection_filter: ``connection_filter(request) -> None | (http_status, message)``;
            a tuple refuses the request with that status and ``{"code":4,"message":message}``.
        open_handshake_timeout: seconds a websocket may take to complete its opening handshake.
        max_backlog: bytes one session may have buffered (``EngineIOSession.buffered``: what a
            websocket client leaves unread beyond the full socket buffers, what a polling client
            has not fetched, what the application holds for it) before it is closed (default:
            twice ``max_payload``, at least 1 MB). A websocket message being received is bounded
            by ``max_payload`` on its own.
        sid_prefix: the start of every session id (a sticky proxy routes polling requests by it).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        handler_factory: Callable[[EngineIOSession], Any],
        *,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        allowed_origins: Callable[[str], bool] | Iterable[str] | None = None,
        address_resolver: Callable[[Request], str] | None = None,
        connection_filter: Callable[[Request], tuple[int, str] | None] | None = None,
        origin_check: Callable[[Request, str], str | None] | None = None,
        open_handshake_timeout: float = 10.0,
        max_backlog: int | None = None,
        sid_prefix: str = "",
    ) -> None:
        self.reactor = reactor
        #: Starts every session id (a proxy's sticky routing key; see server.cfg ``redis.route``).
        self.sid_prefix = sid_prefix
        self.handler_factory = handler_factory
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_payload = int(max_payload)
        self.max_backlog = max_backlog or max(2 * self.max_payload, 1_000_000)
        self.origin_allowed = _origin_matcher(allowed_origins)
        self.resolve_address = address_resolver or default_address
        self.connection_filter = connection_filter
        self.origin_check = origin_check
        #: ``session_opened(session)``, called for every new session as it enters ``sessions``
        #: (a network policy counts them per address until ``session.ended``).
        self.session_opened: Callable[[EngineIOSession], None] | None = None
        #: One line per kind of refusal and address per 10 s, then one with the count.
        self.repeated_log = RepeatedLog(_log, reactor)
        #: Sessions closed for a malformed packet (``parse_error``) or a limit (``session_limit``).
        self.refusals: Counter[str] = Counter()
        self.sessions: dict[str, EngineIOSession] = {}
        #: The parked polling GETs to answer at the end of the current reactor turn.
        self.poll_outbox = PollOutbox(reactor)
        self.ws_factory = EngineIOWebSocketFactory(self)
        self.ws_factory.setProtocolOptions(
            maxMessagePayloadSize=self.max_payload,
            maxFramePayloadSize=self.max_payload,
            openHandshakeTimeout=open_handshake_timeout,
            closeHandshakeTimeout=1,
            autoPingInterval=0,
            # A client that breaks the protocol (bad UTF-8, oversized or malformed frames) gets a
            # close frame with the code and reason before the connection goes, not a bare drop.
            failByDrop=False,
        )
        self.resource = EngineIOResource(self)

    def _register(self, session: EngineIOSession) -> None:
        self.sessions[session.sid] = session
        if self.session_opened is not None:
            self.session_opened(session)

    def _forget(self, session: EngineIOSession) -> None:
        if self.sessions.get(session.sid) is session:
            del self.sessions[session.sid]

    def flush_turn(self) -> None:
        """
        Write now what this turn's broadcasts queued (websocket frames, answers to parked polling
        GETs) rather than at the turn's end: the service calls it at the end of every bus pass,
        so a message read in one turn is written in the next, not in the one after.
        """
        self.ws_factory.outbox.flush()
        self.poll_outbox.flush()

    def close(self) -> None:
        """Close every session (server shutdown)."""
        for session in list(self.sessions.values()):
            session.close("server shutting down")
            session._finalize()
        self.poll_outbox.cancel()
        self.ws_factory.stop()
        self.repeated_log.flush()
