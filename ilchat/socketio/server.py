# -*- test-case-name: tests.socketio.test_server -*-
"""Socket.IO v5 server (namespaces, events, acks, rooms) on the Engine.IO v4 server.

This is the whole application API; the ILIAS handlers and the web chat use nothing lower::

    server = SocketIOServer(reactor, ping_interval=25.0, ping_timeout=20.0,
                            max_payload=1_000_000, connect_timeout=45.0, allowed_origins=None)
    site_root.putChild(b"socket.io", server.resource)

    ns = server.namespace("/onscreen")

    def on_connect(socket, auth):           # auth: the CONNECT payload, {} if none
        if not allowed(auth):
            raise ConnectionRefused("Not authorized", {"why": "..."})   # -> CONNECT_ERROR
        socket.data["user"] = None          # socket.data is the application's dict
    ns.on_connect = on_connect

    @ns.on("login")                         # or ns.on("login", handler)
    def login(socket, name, user_id):
        socket.join("room-1")
        return "ok"                         # the ack, if the client asked for one;
                                            # a Deferred or coroutine result is awaited first
    ns.on_disconnect = lambda socket, reason: ...

    ns.emit("message", {"text": "hi"}, room="room-1", skip={socket.sid})
    socket.emit("private", 1, 2, callback=lambda *ack_args: ...)
    socket.leave("room-1"); socket.rooms; socket.disconnect()
    await server.close()                    # transports closed, no DISCONNECT: clients reconnect

Details worth knowing:

* ``bytes`` anywhere in emitted arguments are sent as binary attachments; received binary
  attachments arrive as ``bytes``.
* ``ns.emit`` encodes the packet once and writes the same frames to every recipient; on websockets
  they go out at the end of the reactor turn, one write per connection for all of the turn's
  broadcasts. A socket's own packets (CONNECT answer, ``socket.emit``, acks, DISCONNECT) are
  written at once, each frame in its own write, after what the turn queued for that connection.
* An ack value ``None`` acks with no arguments, a ``tuple`` with several, anything else with one.
* A handler's exception is logged with its traceback; the socket stays connected.  Events without a
  handler are ignored, and so are acks nobody waits for.  A malformed packet (JSON that
  :mod:`ilchat.jsonutil` refuses included), more than ``packets.MAX_ATTACHMENTS`` attachments,
  attachments over the session's byte cap, or (as in socket.io) a packet for a namespace the client
  has not joined, closes that client's Engine.IO session only: one log line, and the reason in the
  websocket's close frame or the polling POST's 400 answer.
* A client that joins no namespace within ``connect_timeout`` is disconnected.
* ``socket.rooms`` holds the rooms joined with ``join``; emitting to ``room=<sid>`` also reaches
  the socket with that sid, as in socket.io.
* ``socket.namespace`` is the :class:`Namespace` (``.name`` is its path, ``.emit`` broadcasts).
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Iterable

from twisted.internet.defer import maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from ilchat.engineio.server import EngineIOServer, EngineIOSession, OutgoingPacket
from ilchat.socketio import packets as P

__all__ = ["SocketIOServer", "Namespace", "Socket", "ConnectionRefused"]

_log = Logger(namespace="ilchat.socketio")


class ConnectionRefused(Exception):
    """Raised by ``on_connect`` to refuse a namespace connection with CONNECT_ERROR.

    Args:
        message: the ``message`` the client sees (``connect_error`` in socket.io-client).
        data: optional JSON value sent as ``data`` alongside.
    """

    def __init__(self, message: Any = "Not authorized", data: Any = None) -> None:
        if not isinstance(message, str):
            message, data = "Not authorized", message
        super().__init__(message)
        self.message = message
        self.data = data


def _encode(packet_type: int, namespace: str, data: Any, ack_id: int | None = None):
    return [
        OutgoingPacket.message(part) for part in P.encode_packet(packet_type, namespace, data, ack_id)
    ]


def _ack_args(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, tuple):
        return list(value)
    return [value]


class Socket:
    """One client connected to one namespace."""

    __slots__ = (
        "sid",
        "namespace",
        "data",
        "connected",
        "_client",
        "_rooms",
        "_acks",
        "_next_ack",
        "_pending",
    )

    def __init__(self, namespace: "Namespace", client: "_Client") -> None:
        self.sid: str = secrets.token_urlsafe(15)
        self.namespace = namespace
        self.data: dict = {}
        self.connected = False
        self._client = client
        self._rooms: set[str] = set()
        self._acks: dict[int, Callable[..., Any]] = {}
        self._next_ack = 0
        self._pending: list[list[OutgoingPacket]] | None = []

    def __repr__(self) -> str:
        return f"<Socket {self.sid} {self.namespace.name}>"

    @property
    def address(self) -> str:
        """The client's address (the TCP peer unless the server was given a resolver)."""
        return self._client.session.address

    @property
    def headers(self) -> dict[str, str]:
        """Request headers of the Engine.IO handshake, lower-case names."""
        return self._client.session.headers

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this socket has joined."""
        return frozenset(self._rooms)

    @property
    def transport(self) -> str:
        """``"polling"`` or ``"websocket"``: the Engine.IO transport the socket uses now."""
        return self._client.session.transport

    def _send(self, packets: list[OutgoingPacket], now: bool = False) -> None:
        """Broadcasts share the turn's one write per connection; ``now``: this socket alone."""
        if self._pending is not None:
            # Still in on_connect: what it emits follows the CONNECT answer.
            self._pending.append(packets)
        elif self.connected:
            self._client.session.send_packets(packets, now)

    def emit(self, event: str, *args: Any, callback: Callable[..., Any] | None = None) -> None:
        """Send an event to this socket; ``callback(*ack_args)`` runs when the client acks."""
        ack_id = None
        if callback is not None:
            ack_id = self._next_ack
            self._next_ack += 1
            self._acks[ack_id] = callback
        self.namespace.events_sent += 1
        self._send(_encode(P.EVENT, self.namespace.name, [event, *args], ack_id), True)

    def join(self, room: str) -> None:
        """Add this socket to a room of its namespace."""
        if room not in self._rooms and (self.connected or self._pending is not None):
            self._rooms.add(room)
            self.namespace._rooms.setdefault(room, {})[self.sid] = self

    def leave(self, room: str) -> None:
        """Remove this socket from a room (no-op if not in it)."""
        if room in self._rooms:
            self._rooms.discard(room)
            members = self.namespace._rooms.get(room)
            if members is not None:
                members.pop(self.sid, None)
                if not members:
                    del self.namespace._rooms[room]

    def disconnect(self) -> None:
        """Disconnect this socket from its namespace (the Engine.IO session stays)."""
        if self.connected:
            self._client.session.send_packets(
                _encode(P.DISCONNECT, self.namespace.name, None), True
            )
            self._client.sockets.pop(self.namespace.name, None)
            self._closed("server namespace disconnect")

    def _closed(self, reason: str) -> None:
        if not self.connected:
            return
        self.connected = False
        for room in list(self._rooms):
            self.leave(room)
        self.namespace._sockets.pop(self.sid, None)
        self._acks.clear()
        handler = self.namespace.on_disconnect
        if handler is not None:
            try:
                handler(self, reason)
            except Exception:
                _log.failure(
                    "Socket.IO disconnect handler of {namespace} failed",
                    namespace=self.namespace.name,
                )

    def _send_ack(self, ack_id: int, value: Any) -> None:
        if self.connected:
            self._client.session.send_packets(
                _encode(P.ACK, self.namespace.name, _ack_args(value), ack_id), True
            )

    def _on_event(self, packet: P.Packet) -> None:
        event, *args = packet.data
        handler = self.namespace._handlers.get(event)
        if handler is None:
            _log.debug(
                "Socket.IO: no handler for {event!r} in {namespace}",
                event=event,
                namespace=self.namespace.name,
            )
            return
        ack_id = packet.id
        d = maybeDeferred(handler, self, *args)
        if ack_id is None:
            d.addErrback(self._handler_failed, event)
        else:
            d.addCallbacks(self._send_ack_of, self._handler_failed, (ack_id, event), None, (event,))

    def _handler_failed(self, failure: Failure, event: str) -> None:
        _log.failure(
            "Socket.IO handler for {event!r} in {namespace} failed",
            failure,
            event=event,
            namespace=self.namespace.name,
        )

    def _send_ack_of(self, value: Any, ack_id: int, event: str) -> None:
        try:
            self._send_ack(ack_id, value)
        except Exception:
            _log.failure("Socket.IO ack for {event!r} could not be encoded", event=event)

    def _on_ack(self, packet: P.Packet) -> None:
        callback = self._acks.pop(packet.id, None) if packet.id is not None else None
        if callback is None:
            _log.debug("Socket.IO: unknown ack id {id!r}", id=packet.id)
            return
        maybeDeferred(callback, *packet.data).addErrback(
            lambda f: _log.failure("Socket.IO ack callback failed", f)
        )


class Namespace:
    """A namespace: its handlers, connected sockets and rooms."""

    def __init__(self, server: "SocketIOServer", name: str) -> None:
        self.server = server
        self.name = name
        self.on_connect: Callable[[Socket, Any], Any] | None = None
        self.on_disconnect: Callable[[Socket, str], Any] | None = None
        self._handlers: dict[str, Callable[..., Any]] = {}
        self._sockets: dict[str, Socket] = {}
        self._rooms: dict[str, dict[str, Socket]] = {}
        #: Events read from and packets written to this namespace's sockets (one per recipient),
        #: plain counts for ``ilchat.metrics``.
        self.events_received = 0
        self.events_sent = 0

    def __repr__(self) -> str:
        return f"<Namespace {self.name}>"

    def __str__(self) -> str:
        return self.name

    @property
    def sockets(self) -> dict[str, Socket]:
        """Connected sockets by sid (do not modify)."""
        return self._sockets

    def room_sids(self, room: str) -> frozenset[str]:
        """The sids of the sockets in a room."""
        return frozenset(self._rooms.get(room, ()))

    def on(self, event: str, handler: Callable[..., Any] | None = None):
        """Register ``handler(socket, *args)`` for an event; usable as a decorator."""
        if handler is None:
            return lambda fn: self.on(event, fn)
        self._handlers[event] = handler
        return handler

    def emit(
        self,
        event: str,
        *args: Any,
        room: str | Iterable[str] | None = None,
        skip: str | Iterable[str] | None = None,
    ) -> None:
        """Send an event to every socket of the namespace, or of a room or rooms.

        The packet is encoded once; every recipient gets the same frames.

        Args:
            room: a room name or an iterable of names (a socket in several gets it once).
            skip: a sid or sids to leave out.
        """
        self._emit_packets(_encode(P.EVENT, self.name, [event, *args]), room, skip)

    def emit_json(
        self,
        data_json: str,
        room: str | Iterable[str] | None = None,
        skip: str | Iterable[str] | None = None,
    ) -> None:
        """Like ``emit``, with the ``[event, *args]`` array given as compact JSON text.

        For callers that can build the text faster than ``json.dumps`` would (a userlist spliced
        from cached entries); it must be valid JSON without binary data.
        """
        self._emit_packets([OutgoingPacket.message(P.encode_event_json(self.name, data_json))],
                           room, skip)

    def _emit_packets(
        self,
        packets: list[OutgoingPacket],
        room: str | Iterable[str] | None,
        skip: str | Iterable[str] | None,
    ) -> None:
        if room is None:
            targets: Iterable[Socket] = list(self._sockets.values())
        elif isinstance(room, str):
            members = self._rooms.get(room)
            if members is not None:
                targets = list(members.values())
            else:
                single = self._sockets.get(room)
                targets = [single] if single is not None else []
        else:
            merged: dict[str, Socket] = {}
            for name in room:
                members = self._rooms.get(name)
                if members is not None:
                    merged.update(members)
                elif name in self._sockets:
                    merged[name] = self._sockets[name]
            targets = list(merged.values())
        if skip is not None:
            skip_set = {skip} if isinstance(skip, str) else set(skip)
            targets = [s for s in targets if s.sid not in skip_set]
        self.events_sent += len(targets)
        for socket in targets:
            try:
                socket._send(packets)
            except Exception:
                _log.failure("Socket.IO: delivery to {sid} failed", sid=socket.sid)


class _Client:
    """The Socket.IO side of one Engine.IO session (its sockets, one per namespace)."""

    __slots__ = ("server", "session", "sockets", "_binary", "_buffers", "_connect_call")

    def __init__(self, server: "SocketIOServer", session: EngineIOSession) -> None:
        self.server = server
        self.session = session
        self.sockets: dict[str, Socket] = {}
        self._binary: P.Packet | None = None
        self._buffers: list[bytes] = []
        self._connect_call = server.reactor.callLater(server.connect_timeout, self._connect_timeout)

    def _connect_timeout(self) -> None:
        self._connect_call = None
        if not self.sockets:
            _log.info("Socket.IO: no namespace joined on {sid}, closing", sid=self.session.sid)
            self.session.close("forced close")

    def message_received(self, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                packet = self._binary
                if packet is None:
                    raise P.PacketError("binary data without a binary packet")
                if not self.session.hold(len(data)):
                    # Over the session's byte cap: it is closed; what was held goes with it.
                    self._buffers, self._binary = [], None
                    return
                self._buffers.append(data)
                if len(self._buffers) < packet.attachments:
                    return
                buffers, self._buffers, self._binary = self._buffers, [], None
                self.session.hold(-sum(len(b) for b in buffers))
                packet.data = P.reconstruct(packet.data, buffers)
            else:
                if self._binary is not None:
                    raise P.PacketError("text data while waiting for binary attachments")
                packet = P.decode_packet(data)
                if packet.type in (P.BINARY_EVENT, P.BINARY_ACK) and packet.attachments:
                    self._binary = packet
                    return
                if packet.type in (P.BINARY_EVENT, P.BINARY_ACK):
                    packet.data = P.reconstruct(packet.data, [])
        except P.PacketError as e:
            self._buffers, self._binary = [], None
            self.session.protocol_error(f"Socket.IO: {e}")
            return
        self._dispatch(packet)

    def _dispatch(self, packet: P.Packet) -> None:
        packet_type = packet.type
        socket = self.sockets.get(packet.namespace)
        if socket is None and packet_type == P.CONNECT:
            self._connect(packet)
            return
        if socket is None or packet_type in (P.CONNECT, P.CONNECT_ERROR):
            # socket.io's "invalid state": a packet for a namespace the client has not joined,
            # a second CONNECT, or a CONNECT_ERROR from the client.  It closes the connection.
            _log.info(
                "Socket.IO: invalid state (packet type {type} for {ns}) on {sid}, closing",
                type=packet_type,
                ns=packet.namespace,
                sid=self.session.sid,
            )
            self.session.close("forced server close")
            return
        if not socket.connected:
            return  # still in an asynchronous on_connect
        if packet_type in (P.EVENT, P.BINARY_EVENT):
            socket.namespace.events_received += 1
            socket._on_event(packet)
        elif packet_type in (P.ACK, P.BINARY_ACK):
            socket._on_ack(packet)
        elif packet_type == P.DISCONNECT:
            del self.sockets[packet.namespace]
            socket._closed("client namespace disconnect")

    def _connect(self, packet: P.Packet) -> None:
        name = packet.namespace
        namespace = self.server._namespaces.get(name)
        if namespace is None:
            self.session.send_packets(
                _encode(P.CONNECT_ERROR, name, {"message": "Invalid namespace"}), True
            )
            return
        socket = Socket(namespace, self)
        self.sockets[name] = socket
        if self._connect_call is not None:
            self._connect_call.cancel()
            self._connect_call = None
        auth = packet.data if packet.data is not None else {}
        if namespace.on_connect is None:
            self._accept(socket)
            return
        maybeDeferred(namespace.on_connect, socket, auth).addCallbacks(
            lambda _: self._accept(socket), lambda f: self._connect_failed(socket, f)
        )

    def _connect_failed(self, socket: Socket, failure) -> None:
        if failure.check(ConnectionRefused):
            self._refuse(socket, failure.value)
        else:
            _log.failure("Socket.IO connect handler of {ns}", failure, ns=socket.namespace.name)
            self._accept(socket)

    def _refuse(self, socket: Socket, refused: ConnectionRefused) -> None:
        if self.sockets.get(socket.namespace.name) is socket:
            del self.sockets[socket.namespace.name]
        for room in list(socket._rooms):
            socket.leave(room)
        socket._pending = None
        body: dict[str, Any] = {"message": refused.message}
        if refused.data is not None:
            body["data"] = refused.data
        self.session.send_packets(_encode(P.CONNECT_ERROR, socket.namespace.name, body), True)

    def _accept(self, socket: Socket) -> None:
        if self.session.closed or self.sockets.get(socket.namespace.name) is not socket:
            socket._pending = None
            return
        pending, socket._pending = socket._pending, None
        socket.connected = True
        socket.namespace._sockets[socket.sid] = socket
        session = self.session
        # The answer and what on_connect emitted (or broadcast to it) go out at once, each frame
        # in its own write.
        session.send_packets(_encode(P.CONNECT, socket.namespace.name, {"sid": socket.sid}), True)
        for packets in pending or ():
            session.send_packets(packets, True)

    def session_closed(self, reason: str) -> None:
        if self._connect_call is not None:
            self._connect_call.cancel()
            self._connect_call = None
        sockets, self.sockets = self.sockets, {}
        for socket in sockets.values():
            socket._pending = None
            socket._closed(reason)


class SocketIOServer:
    """Socket.IO v5 server: namespaces over one Engine.IO server and its web resource.

    Args:
        reactor: the reactor (or a ``task.Clock`` in tests) for timers.
        ping_interval, ping_timeout: Engine.IO heartbeat, in seconds.
        max_payload: largest HTTP body or websocket message, in bytes.
        connect_timeout: seconds a client may stay connected without joining a namespace.
        allowed_origins: ``None`` (every origin, echoed back with credentials), a list of origin
            patterns with ``*`` wildcards, or a callable ``origin -> bool``.
        address_resolver: ``request -> str`` giving ``socket.address`` (TCP peer by default).
        connection_filter: ``request -> None | (http_status, message)`` to refuse requests.
        max_backlog: bytes one session may have buffered (unread output, unfetched polling
            packets, incomplete binary attachments); see ``EngineIOServer``.
        sid_prefix: the start of every Engine.IO session id (see ``EngineIOServer``).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        ping_interval: float = 25.0,
        ping_timeout: float = 20.0,
        max_payload: int = 1_000_000,
        connect_timeout: float = 45.0,
        allowed_origins: Callable[[str], bool] | Iterable[str] | None = None,
        address_resolver: Callable[[Request], str] | None = None,
        connection_filter: Callable[[Request], tuple[int, str] | None] | None = None,
        max_backlog: int | None = None,
        sid_prefix: str = "",
    ) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.engineio = EngineIOServer(
            reactor,
            lambda session: _Client(self, session),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            max_payload=max_payload,
            allowed_origins=allowed_origins,
            address_resolver=address_resolver,
            connection_filter=connection_filter,
            max_backlog=max_backlog,
            sid_prefix=sid_prefix,
        )
        self.resource = self.engineio.resource
        self._namespaces: dict[str, Namespace] = {"/": Namespace(self, "/")}

    @property
    def namespaces(self) -> list[Namespace]:
        """Every namespace made so far (``"/"`` first)."""
        return list(self._namespaces.values())

    def namespace(self, name: str) -> Namespace:
        """The namespace with this name, created on first use (``"/"`` always exists)."""
        if not name.startswith("/"):
            name = "/" + name
        ns = self._namespaces.get(name)
        if ns is None:
            ns = self._namespaces[name] = Namespace(self, name)
        return ns

    def flush_turn(self) -> None:
        """Write this turn's broadcasts now (``EngineIOServer.flush_turn``; the bus's passes)."""
        self.engineio.flush_turn()

    async def close(self) -> None:
        """
        Close every Engine.IO session (server shutdown); each socket's ``on_disconnect`` gets
        ``"server shutting down"``.

        No Socket.IO DISCONNECT is sent: socket.io-client never reconnects after one ("io server
        disconnect"), whereas a closed transport ("transport close" or "transport error") makes
        it reconnect, so that pages come back by themselves once the server is up again (the
        Node server just exits, with the same effect).
        """
        self.engineio.close()
