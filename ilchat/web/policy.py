# -*- test-case-name: tests.web.test_policy -*-
"""
The network policy: who may connect, from where, how often and how much.

A standalone internal chat has no accounts, so the network is its only gate: an IP allow-list,
reverse proxies whose ``X-Forwarded-For`` we believe, allowed browser origins, a per-IP connection
limit and a per-connection message throttle. The pieces here are pure (no transport, the clock is
injected) so that they can be tested on their own; the transports plug them in:

* HTTP: :class:`PolicyGuardResource` wraps the root of the ``Site`` and answers ``403`` JSON.
* HTTP connections: the ``ChatSite`` counts each open connection per peer address with
  :meth:`NetworkPolicy.add_http_connection` (``429`` beyond ``max_http_connections_per_ip``).
* Engine.IO websocket and polling: :meth:`NetworkPolicy.install` makes
  :meth:`NetworkPolicy.client_address`, :meth:`NetworkPolicy.origin_check` and
  :meth:`NetworkPolicy.connection_filter` the ``address_resolver``, ``origin_check`` and
  ``connection_filter`` hooks of the ``SocketIOServer`` (allow-list, origins, per-IP sessions).
* IRC: the listener asks :meth:`NetworkPolicy.allows` for each peer address and counts the
  connection with :meth:`NetworkPolicy.acquire_connection` / ``release_connection``, then sends
  ``ERROR`` and closes when refused. The per-IP limit counts web sessions and these connections
  together.
* The standalone chat takes a :meth:`NetworkPolicy.message_bucket` per connection and the name and
  message length limits; the ILIAS chats take a :meth:`NetworkPolicy.ilias_message_bucket`.

Behind a UNIX-socket proxy the peer has no address: it counts as ``"unix"``, which no CIDR
contains, so such a setup needs no allow-list (the proxy does the filtering).
"""

from __future__ import annotations

import functools
import ipaddress
import weakref
from collections import Counter
from typing import Any, Iterable, Optional, Sequence, Tuple, Union

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from ilchat.config import NetworkConfig
from ilchat.origins import OriginMatcher, strip_port
from ilchat.ratelimit import TokenBucket
from ilchat.web.responses import encode_json

__all__ = [
    "AddressList",
    "ConnectionCounter",
    "NetworkPolicy",
    "OriginMatcher",
    "PolicyGuardResource",
    "TokenBucket",
    "resolve_client_address",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Refusal = Tuple[int, str]


def parse_address(text: str) -> Optional[IPAddress]:
    """
    Parse one IP address as it comes from a socket or a header, or return ``None``.

    IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a dual-stack listener reports) are
    reduced to their IPv4 form so that an IPv4 CIDR in the config matches them. A bracketed IPv6
    address and a trailing ``:port`` (some proxies write ``1.2.3.4:5678``) are accepted too.
    """
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    if "%" in text:
        # A scope id (fe80::1%eth0) names an interface, not a different host.
        text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork:
    """
    Parse a CIDR (``10.0.0.0/8``, ``2001:db8::/32``) or a single address (a /32 or /128).

    Raises:
        ValueError: with a message naming the bad value; config loading turns it into a
            ``ConfigError`` naming the file and key.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a CIDR string: {text!r}")
    try:
        # strict=False: "10.1.2.3/8" means "10.0.0.0/8", as in every firewall config.
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError as e:
        raise ValueError(f"not a valid IP network: {text!r} ({e})") from None


class AddressList:
    """
    A set of CIDRs, IPv4 and IPv6, asked "does this address belong?".

    An empty list contains nothing; whether an empty allow-list means "everyone" is decided by
    :class:`NetworkPolicy`, not here.
    """

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = ()) -> None:
        self.networks: Tuple[IPNetwork, ...] = tuple(parse_network(c) for c in cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"AddressList({[str(n) for n in self.networks]!r})"

    def contains(self, address: Union[str, IPAddress, None]) -> bool:
        """Whether C{address} lies in one of the networks; an unparsable address never does."""
        if address is None or not self.networks:
            return False
        if isinstance(address, str):
            address = _address_and_text(address)[0]
            if address is None:
                return False
        return any(
            address.version == network.version and address in network for network in self.networks
        )


@functools.lru_cache(maxsize=4096)
def _address_and_text(text: str) -> Tuple[Optional[IPAddress], str]:
    """
    :func:`parse_address` and the address's text form (C{text} itself if unparsable), cached:
    every HTTP request resolves its peer (a polling client's every GET and POST, two or three
    times), and ``ipaddress`` parsing and formatting were a fifth of the polling fan-out's CPU.
    """
    address = parse_address(text)
    return address, (str(address) if address is not None else text)


def resolve_client_address(
    peer: str, forwarded_for: Sequence[str], trusted_proxies: AddressList
) -> str:
    """
    The address of the real client behind zero or more trusted reverse proxies.

    ``X-Forwarded-For`` is a list that every proxy appends the address of its own peer to, so only
    the right-most entries were written by proxies we know; anything further left may have been
    made up by the client. We therefore believe the header only when the TCP peer is a trusted
    proxy, and walk it from the right, skipping trusted proxies, and take the first address that
    is not one. A garbled entry stops the walk: the last trustworthy hop that wrote it is then the
    best we know.

    Args:
        peer: the TCP peer address.
        forwarded_for: every ``X-Forwarded-For`` header value, in the order received (each may be a
            comma-separated list).
        trusted_proxies: the proxies whose headers we believe.

    Returns:
        The client address as text (IPv4-mapped IPv6 reduced to IPv4).
    """
    peer_address, best = _address_and_text(peer)
    if not trusted_proxies.contains(peer_address):
        return best
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        address, text = _address_and_text(hop)
        if address is None:
            return best
        best = text
        if not trusted_proxies.contains(address):
            return best
    # Every hop is a trusted proxy (or there is no header): the left-most one is the client.
    return best


class ConnectionCounter:
    """
    Open connections per client address, with an upper bound: the policy's one per-IP count.

    Each connection is an object (an Engine.IO session, an IRC protocol, an HTTP transport), held
    weakly and counted for its address until it is released (:meth:`release`) or found closed:
    a transport that has lost its connection (``disconnected``, also under a TLS wrapper) or a
    session that has ended (``ended``) no longer counts. So a connection whose end nobody reports
    (an HTTP connection Autobahn took over as a websocket) cannot leak, and neither can a missed
    release. Closed connections are pruned when an address reaches its limit and every 4096
    additions; nothing is scanned otherwise, so asking whether an address is over a limit
    (:meth:`holds_more_than`) costs nothing until it nearly is.
    """

    __slots__ = ("limit", "_open", "_added")

    def __init__(self, limit: Optional[int]) -> None:
        """
        Args:
            limit: the most connections one address may hold at once; ``None`` or 0 for no limit.
        """
        self.limit = limit or None
        self._open: dict[str, "weakref.WeakSet[Any]"] = {}
        self._added = 0

    def add(self, address: str, connection: Any) -> bool:
        """Count C{connection} for C{address}, unless the address holds the limit already."""
        if self.limit is not None and self.holds_more_than(address, self.limit - 1):
            return False
        self.track(address, connection)
        return True

    def holds_more_than(self, address: str, count: int) -> bool:
        """Whether C{address} holds more than C{count} open connections (scanned only if it may)."""
        live = self._open.get(address)
        if live is None or len(live) <= count:
            return False
        for gone in [c for c in live if _closed(c)]:
            live.discard(gone)
        return len(live) > count

    def track(self, address: str, connection: Any) -> None:
        """Count C{connection} for C{address} whatever the limit (the caller decided)."""
        self._added += 1
        if self._added % 4096 == 0:
            self._forget_idle()
        live = self._open.get(address)
        if live is None:
            live = self._open[address] = weakref.WeakSet()
        live.add(connection)

    def release(self, address: str, connection: Any) -> None:
        """Stop counting C{connection}; the address is forgotten once it holds none."""
        live = self._open.get(address)
        if live is not None:
            live.discard(connection)
            if not live:
                del self._open[address]

    def count(self, address: str) -> int:
        """The open connections of C{address}."""
        live = self._open.get(address)
        return sum(1 for c in live if not _closed(c)) if live else 0

    def _forget_idle(self) -> None:
        for address in [a for a, live in self._open.items() if not any(not _closed(c) for c in live)]:
            del self._open[address]


def _closed(connection: Any) -> bool:
    # TLS and other wrappers keep the socket's transport as their own ``transport``.
    while getattr(connection, "wrappedProtocol", None) is not None and getattr(
        connection, "transport", None
    ) is not None:
        connection = connection.transport
    return bool(getattr(connection, "disconnected", False) or getattr(connection, "ended", False))


def _header(request, name: bytes) -> list[str]:
    values = request.requestHeaders.getRawHeaders(name) or []
    return [v.decode("latin-1") if isinstance(v, bytes) else v for v in values]


def _peer_host(request) -> str:
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    if host is None:
        # A UNIX socket (a proxy on the same machine): only the header can tell us who it is.
        return "unix"
    return host


class NetworkPolicy:
    """
    The server's network policy (server.cfg ``network`` section), shared by every listener.

    One object per process. It holds the per-IP connection counts, so that a user cannot get
    round the limit by opening half of their connections over IRC and half over the web.
    """

    _log = Logger()

    def __init__(
        self,
        allow: Iterable[str] = (),
        trusted_proxies: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
        max_connections_per_ip: Optional[int] = None,
        message_rate: float = 0.0,
        message_burst: float = 1.0,
        max_name_length: int = NetworkConfig().max_name_length,
        max_message_length: int = NetworkConfig().max_message_length,
        clock=None,
        max_http_connections_per_ip: Optional[int] = None,
        ilias_message_rate: float = 0.0,
        ilias_message_burst: float = 1.0,
    ) -> None:
        """
        Args:
            allow: CIDRs allowed to connect; empty means everyone.
            trusted_proxies: CIDRs of reverse proxies whose ``X-Forwarded-*`` headers we believe.
            allowed_origins: origin patterns (see :class:`OriginMatcher`) allowed besides the
                request's own host; ``["*"]`` allows every origin.
            max_connections_per_ip: simultaneous Socket.IO sessions and IRC connections per
                client address; ``None`` for no limit.
            max_http_connections_per_ip: open HTTP connections per TCP peer (not for trusted
                proxies, whose connections carry many clients); ``None`` for no limit.
            message_rate: standalone chat messages per second per connection; ``0`` for no limit.
            message_burst: how many messages a connection may send at once after a pause.
            ilias_message_rate, ilias_message_burst: the same for the ILIAS chats (repository chat
                and On-Screen Chat).
            max_name_length: the longest user name (characters).
            max_message_length: the longest chat message (characters).
            clock: provides ``seconds()`` for the token buckets; the reactor when ``None``.
        """
        self.allow = AddressList(allow)
        self.trusted_proxies = AddressList(trusted_proxies)
        self.origins = OriginMatcher(allowed_origins)
        self.connections = ConnectionCounter(max_connections_per_ip)
        self.http_connections = ConnectionCounter(max_http_connections_per_ip)
        self.message_rate = float(message_rate)
        self.message_burst = float(message_burst)
        self.ilias_message_rate = float(ilias_message_rate)
        self.ilias_message_burst = float(ilias_message_burst)
        self.max_name_length = max_name_length
        self.max_message_length = max_message_length
        if clock is None:
            from twisted.internet import reactor as clock  # noqa: the global one, resolved once
        self._clock = clock
        #: Whether the Engine.IO sessions are counted (:meth:`install`); until then the per-IP
        #: limit of web sessions is not checked.
        self._installed = False
        self._refused_origins: dict[str, float] = {}
        #: Refusals so far by reason (``address``, ``origin``, ``connections_per_ip``,
        #: ``message_rate``), for ``ilchat.metrics``.
        self.refusals: Counter[str] = Counter()

    def refused(self, reason: str) -> None:
        """Count one refusal (every listener and throttle reports them here)."""
        self.refusals[reason] += 1

    @classmethod
    def from_config(cls, network, clock=None) -> "NetworkPolicy":
        """
        Build the policy from the typed ``network`` section of server.cfg; ``None`` (no section)
        gives the defaults of ``NetworkConfig``: everyone allowed, same-host origins, generous
        per-address and per-connection limits.
        """
        if network is None:
            network = NetworkConfig()
        return cls(
            allow=network.allow,
            trusted_proxies=network.trusted_proxies,
            allowed_origins=network.allowed_origins,
            max_connections_per_ip=network.max_connections_per_ip,
            message_rate=network.message_rate,
            message_burst=network.message_burst,
            max_name_length=network.max_name_length,
            max_message_length=network.max_message_length,
            clock=clock,
            max_http_connections_per_ip=network.max_http_connections_per_ip,
            ilias_message_rate=network.ilias_message_rate,
            ilias_message_burst=network.ilias_message_burst,
        )

    # -- addresses -------------------------------------------------------------------------

    def allows(self, address: str) -> bool:
        """Whether a client at C{address} (already resolved past any proxy) may connect at all."""
        return not self.allow or self.allow.contains(address)

    def client_address(self, request) -> str:
        """The real client address of an HTTP request (the ``address_resolver`` hook)."""
        # Asked up to three times per request (the site's guard, the Engine.IO checks, a new
        # session); its peer and headers do not change, so the answer is kept on the request.
        address = getattr(request, "ilchat_client_address", None)
        if address is None:
            # Without trusted proxies no header is believed, so none is read.
            forwarded = _header(request, b"x-forwarded-for") if self.trusted_proxies else ()
            address = request.ilchat_client_address = resolve_client_address(
                _peer_host(request), forwarded, self.trusted_proxies
            )
        return address

    def client_scheme(self, request) -> str:
        """
        ``"https"`` or ``"http"`` as the client sees it: ``X-Forwarded-Proto`` from a trusted
        proxy (its right-most value, which that proxy wrote), else whether our socket is TLS.
        """
        if self.trusted_proxies.contains(_peer_host(request)):
            values = [
                v.strip().lower() for h in _header(request, b"x-forwarded-proto") for v in h.split(",")
            ]
            values = [v for v in values if v]
            if values and values[-1] in ("http", "https"):
                return values[-1]
        return "https" if request.isSecure() else "http"

    # -- connections -----------------------------------------------------------------------

    def http_refusal(self, request) -> Optional[Refusal]:
        """Why a plain HTTP request must be refused, as ``(code, message)``, or ``None``."""
        address = self.client_address(request)
        if not self.allows(address):
            self._log.warn(
                "Refused HTTP request from {address} (not in the allow-list): {method} {uri}",
                address=address,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1", "replace"),
            )
            self.refused("address")
            return 403, "Your network address is not allowed to use this chat server."
        return None

    def request_host(self, request) -> str:
        """
        The host name the client asked for (no port, lower-case): ``X-Forwarded-Host`` from a
        trusted proxy (its right-most value), else the ``Host`` header.
        """
        if self.trusted_proxies.contains(_peer_host(request)):
            values = [v.strip() for h in _header(request, b"x-forwarded-host") for v in h.split(",")]
            values = [v for v in values if v]
            if values:
                return strip_port(values[-1])
        host = _header(request, b"host")
        return strip_port(host[0]) if host else ""

    def origin_check(self, request, origin: str) -> Optional[str]:
        """
        The Engine.IO ``origin_check`` hook: may a page from C{origin} use this request?

        Returns ``None`` to refuse (logged once a minute per origin), ``"*"`` when every origin
        is configured (answered without credentials: ``Access-Control-Allow-Origin: *``), or
        C{origin} itself to reflect it with ``Access-Control-Allow-Credentials: true``: a page
        served by the host the request was sent to (any scheme and port), or one matching
        ``allowed_origins``.
        """
        if self.origins.allow_all:
            return "*"
        # Engine.IO asks for a request's origin twice (its CORS headers, connection_filter).
        if getattr(request, "ilchat_allowed_origin", None) == origin:
            return origin
        host = self.request_host(request)
        if self.origins.allows_for(origin, host):
            request.ilchat_allowed_origin = origin
            return origin
        self.refused("origin")
        now = self._clock.seconds()
        if now - self._refused_origins.get(origin, -60.0) >= 60.0:
            if len(self._refused_origins) > 1000:
                self._refused_origins.clear()
            self._refused_origins[origin] = now
            self._log.warn(
                "Refused websocket/polling request from {address}: origin {origin} is not {host}"
                " and not in network.allowed_origins (server.cfg)",
                address=self.client_address(request),
                origin=origin,
                host=host or "the requested host",
            )
        return None

    def connection_filter(self, request) -> Optional[Refusal]:
        """
        The ``connection_filter`` hook for Engine.IO (websocket upgrade and polling requests).

        Checks the allow-list, the ``Origin`` header (as :meth:`origin_check`, for servers
        without that hook) and, for a new session (no ``sid``), the per-IP limit; returns
        ``(code, message)`` to refuse.
        """
        refusal = self.http_refusal(request)
        if refusal is not None:
            return refusal
        origin = _header(request, b"origin")
        if origin and self.origin_check(request, origin[0]) is None:
            return 403, "This origin is not allowed to connect to the chat server."
        limit = self.connections.limit
        if limit is not None and self._installed and b"sid" not in request.args:
            address = self.client_address(request)
            if self.connections.holds_more_than(address, limit + self.session_grace - 1):
                count = self.connections.count(address)
                self._log.warn(
                    "Refused new web session from {address}: already {count} (limit {limit})",
                    address=address,
                    count=count,
                    limit=limit,
                )
                self.refused("connections_per_ip")
                return 429, f"Too many connections from your address (at most {limit})."
        return None

    @property
    def session_grace(self) -> int:
        """
        Sessions an address may open beyond ``max_connections_per_ip`` only to be told, by the
        chat, why they are closed (:meth:`connection_limit_refusal`): a refused handshake is
        invisible on an ILIAS page (socket.io-client just retries), a message is not. Beyond
        these few the handshake itself gets 429, so the limit still bounds what an address holds.
        """
        limit = self.connections.limit
        return max(5, limit // 100) if limit is not None else 0

    def connection_limit_refusal(self, address: str) -> Optional[str]:
        """
        What to tell a web session of C{address} that is one of the grace sessions (the address
        holds more than ``max_connections_per_ip``), or ``None`` when it is within the limit.
        The chat adapters ask this when the session logs in, show the text, and disconnect it.
        """
        limit = self.connections.limit
        if limit is None or not self._installed:
            return None
        if not self.connections.holds_more_than(address, limit):
            return None
        count = self.connections.count(address)
        self._log.warn(
            "Closing a web session of {address}: {count} sessions and IRC connections"
            " (limit {limit})",
            address=address,
            count=count,
            limit=limit,
        )
        self.refused("connections_per_ip")
        return (
            f"Too many chat connections from your network address (at most {limit}). "
            "Close other chat windows or tabs, or try again later."
        )

    def install(self, socketio_server) -> None:
        """
        Make a ``SocketIOServer`` (or a bare ``EngineIOServer``) apply this policy.

        Sets its ``address_resolver``, ``origin_check`` and ``connection_filter`` hooks, so the
        origin rules (same host, Kiwi-style patterns, logged with the client address) also
        decide the CORS headers and preflight answers. Every Engine.IO session is counted in
        ``connections`` (its ``session_opened`` hook) until it has ended, with the IRC
        connections of the same address: nothing needs releasing and nothing can leak.
        """
        engineio = getattr(socketio_server, "engineio", socketio_server)
        engineio.resolve_address = self.client_address
        engineio.connection_filter = self.connection_filter
        engineio.origin_allowed = None
        engineio.origin_check = self.origin_check
        connections = self.connections

        def session_opened(session: Any) -> None:
            connections.track(session.address, session)

        engineio.session_opened = session_opened
        self._installed = True

    def acquire_connection(self, address: str, connection: Any) -> bool:
        """
        Count a new long-lived connection that is not an Engine.IO session (an IRC protocol)
        from C{address}.

        The live web sessions of the address count towards the same limit (and these connections
        count when a web session is opened), so the limit holds across listeners. Returns
        ``False`` (and logs) when the address already holds its limit; otherwise the caller
        calls :meth:`release_connection` when the connection ends (a connection that is garbage
        collected stops counting too).
        """
        if self.connections.add(address, connection):
            return True
        self.refused("connections_per_ip")
        self._log.warn(
            "Refused connection from {address}: already {count} connections (limit {limit})",
            address=address,
            count=self.connections.count(address),
            limit=self.connections.limit,
        )
        return False

    def release_connection(self, address: str, connection: Any) -> None:
        """The end of a connection counted by :meth:`acquire_connection`."""
        self.connections.release(address, connection)

    def add_http_connection(self, peer: str, transport: Any) -> bool:
        """
        Count a new HTTP connection from the TCP peer C{peer} (its end is noticed by itself, see
        :class:`ConnectionCounter`); ``False`` when the peer holds ``max_http_connections_per_ip``.
        A trusted proxy's connections are not counted: it carries everyone behind it.
        """
        address = parse_address(peer)
        if address is None or self.trusted_proxies.contains(address):
            return True
        if self.http_connections.add(str(address), transport):
            return True
        self.refused("connections_per_ip")
        return False

    def message_bucket(self) -> TokenBucket:
        """A fresh message throttle for one connection."""
        return TokenBucket(
            self.message_rate, self.message_burst, self._clock, on_refused=lambda: self.refused("message_rate")
        )

    def ilias_message_bucket(self) -> TokenBucket:
        """A fresh message throttle for one ILIAS chat connection (repository chat, OSC)."""
        return TokenBucket(
            self.ilias_message_rate,
            self.ilias_message_burst,
            self._clock,
            on_refused=lambda: self.refused("message_rate"),
        )


def json_error_body(code: int, message: str) -> bytes:
    """The body of every refusal: the same ``{"status", "message"}`` shape as the backend's."""
    return encode_json({"status": code, "message": message})


class _RefusalResource(Resource):
    """Answers any method with a JSON refusal; a leaf, so nothing behind it is reached."""

    isLeaf = True
    answers_quick_gets = True  # its render asks for nothing QuickGet lacks

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self._code = code
        self._message = message

    def render(self, request) -> bytes:
        request.setResponseCode(self._code)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache, no-store, must-revalidate")
        return json_error_body(self._code, self._message)


@implementer(IResource)
class PolicyGuardResource:
    """
    Wraps the root resource of the ``Site`` so that every request passes the policy first.

    Refused requests get ``403`` and a JSON body before any child (backend, page, socket.io) sees
    them. Everything else, including ``putChild``, is delegated to the wrapped resource, so the
    rest of the tree does not know the guard is there.
    """

    isLeaf = False

    def __init__(self, wrapped: IResource, policy: NetworkPolicy) -> None:
        self._wrapped = wrapped
        self._policy = policy

    def _refused(self, request) -> Optional[Resource]:
        refusal = self._policy.http_refusal(request)
        if refusal is None:
            return None
        return _RefusalResource(*refusal)

    def getChildWithDefault(self, path: bytes, request):
        refused = self._refused(request)
        if refused is not None:
            return refused
        return self._wrapped.getChildWithDefault(path, request)

    def putChild(self, path: bytes, child: IResource) -> None:
        self._wrapped.putChild(path, child)

    def render(self, request):
        refused = self._refused(request)
        if refused is not None:
            return refused.render(request)
        return self._wrapped.render(request)

    def __getattr__(self, name: str):
        return getattr(self._wrapped, name)

