# -*- test-case-name: tests.test_service -*-
"""
Builds the whole server from the loaded configuration, and takes it down again in reverse.

``makeService`` is synchronous (twistd calls it before the reactor runs); the real start-up is
asynchronous and happens in ``IlchatService.startService``:

1. the log files (``LogService``, first in, last out);
2. the bus (with Redis: connected first) and the cluster state (``ilchat.cluster``:
   ``RedisCluster`` with a ``redis`` section, else ``LocalCluster``), both for the process;
3. per client config, in order: the store (``create_store``, ``open``, and the move of every
   ``chatroom_users`` row to ``chatroom_sessions``, spec §1.5 step 6, only when no other
   instance is live: theirs are users online elsewhere); one Socket.IO server for the process,
   a ``ClientContext`` per client;
4. the components (repository chat, On-Screen Chat, IRC bridge...), each a ``ComponentService``
   child added once the one before has started, then the daily purge (``DailyPurge``);
5. the readiness check (``/ready``, ``ilchat.readiness``) and the metrics (``ilchat.metrics``);
6. the listening port (``ilchat.listeners``: server.cfg ``listen``, or the address resolved
   without blocking; TLS when ``protocol`` is https), then the metrics listener when server.cfg
   has a ``metrics`` section.

``stopService`` undoes it in reverse: stop listening, disconnect every socket, stop the children
one after the other from the last (the purge, then the components), move the users to sessions
again (again only when no other instance is live), leave the cluster (its heartbeat deleted),
close the stores, and the log files last.

Components
----------
A component is any object with ``async start()`` and ``async stop()`` (run by its
``ComponentService``). It is made by a factory:

* client components: ``factory(ctx: ClientContext) -> component``, once per client config;
* server components: ``factory(ctx: ServerContext) -> component``, once per process, started
  after every client component (the IRC listener spans all clients).

The defaults are the dotted names in ``CLIENT_COMPONENTS`` and ``SERVER_COMPONENTS``
(``"package.module:function"``); add yours there. Tests may pass their own lists.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import socket
import sys
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Union

import attrs
from twisted.application import service
from twisted.internet import abstract, defer, threads
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from ilchat.eventloop import use_lean_dispatch
from ilchat.gcpolicy import settle_collector
from ilchat.bus import IBus, LocalBus
from ilchat.cluster import LocalCluster
from ilchat.config import ClientConfig, NetworkConfig, ServerConfig
from ilchat.descriptors import raise_open_file_limit, watch_accept_errors
from ilchat.ilias.identity import log_identity_mode
from ilchat.listeners import listen, reads_proxy_header, tcp_description
from ilchat.logs import LogService
from ilchat.web.backend import BackendResource, RouteTable
from ilchat.web.policy import NetworkPolicy, PolicyGuardResource
from ilchat.web.site import ChatSite, WebRoot

__all__ = [
    "ClientContext",
    "ServerContext",
    "Component",
    "IlchatService",
    "makeService",
    "CLIENT_COMPONENTS",
    "SERVER_COMPONENTS",
    "StartupError",
    "ComponentService",
]

#: Listen queue of the web listener: a crowd of browsers reconnecting after a restart connects at
#: once, and Twisted's default of 50 drops some of 1,000 simultaneous connects.
LISTEN_BACKLOG = 1024

#: Per-client components, started in this order (``"module:factory"``; factory(ClientContext)).
CLIENT_COMPONENTS: List[str] = [
    # The ILIAS repository chat, or its name-only variant for a client.cfg with "standalone".
    "ilchat.components:room_chat",
    "ilchat.ilias.osc:OnScreenChatComponent",
]

#: Process-wide components, started after the client ones (factory(ServerContext)).
SERVER_COMPONENTS: List[str] = [
    # The IRC listener and bridge (does nothing unless server.cfg has an "irc" section).
    "ilchat.irc.service:IrcComponent",
]


class Component(Protocol):
    """A part of the server with a lifetime: started in order, stopped in reverse."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


ComponentFactory = Callable[[Any], Component]


class StartupError(Exception):
    """Start-up cannot go on; ``str()`` is the one line for stderr and the error log."""


class ComponentService(service.Service):
    """
    A component as a child service of the ``IlchatService``: ``startService`` runs its
    ``start()`` (``started`` fires when it is done), ``stopService`` its ``stop()``.
    """

    def __init__(self, component: Component) -> None:
        self.component = component
        self.started: Optional[defer.Deferred[None]] = None
        #: Set when ``start()`` failed: there is nothing to stop then.
        self.start_failed = False

    def startService(self) -> None:  # noqa: N802 (twisted API)
        super().startService()
        self.started = defer.maybeDeferred(self.component.start)

    def stopService(self) -> "Optional[defer.Deferred[None]]":  # noqa: N802 (twisted API)
        super().stopService()
        if self.start_failed:
            return None
        return defer.maybeDeferred(self.component.stop)

    def __repr__(self) -> str:
        return f"<ComponentService {self.component!r}>"


@attrs.define(eq=False)
class ServerContext:
    """What is shared by every client of the process."""

    config: ServerConfig
    reactor: Any
    bus: IBus
    socketio: Any
    web_root: WebRoot
    clients: Dict[str, "ClientContext"] = attrs.Factory(dict)
    policy: Any = None
    #: The process's ``ilchat.cluster`` object (live instances, locks, claims, ids).
    cluster: Any = attrs.Factory(LocalCluster)


@attrs.define(eq=False)
class ClientContext:
    """Everything a component needs to serve one ILIAS client (one ``client.cfg``).

    Attributes:
        config: the client's configuration (``name``, ``auth_key``, ``database`` ...).
        server_config: ``server.cfg``, shared.
        store: the client's ``ilchat.store`` Store (opened).
        bus: the process bus, shared by all clients; use topics that contain the client name.
        reactor: the reactor, to be passed down (tests may use a fake clock in components).
        socketio: the process's ``SocketIOServer``; the namespaces are ``/<name>``, ``/<name>-im``.
        routes: this client's backend ``RouteTable``: ``routes.register("Connect", handler, (2,))``.
        web_root: the resource tree, to mount extra resources (``web_root.put("chat", r)``).
        policy: the process's ``NetworkPolicy`` (addresses behind proxies, limits).
        server: the ``ServerContext`` (every client, shared parts).
        cluster: the process's ``ilchat.cluster`` object, shared by all clients: live
            instances, ``lock``, ``claim``/``release`` (names unique across the cluster),
            ``next_id``; a ``LocalCluster`` without Redis, so callers never ask.
    """

    config: ClientConfig
    server_config: ServerConfig
    store: Any
    bus: IBus
    reactor: Any
    socketio: Any
    routes: RouteTable
    web_root: WebRoot
    policy: Any = None
    server: Optional[ServerContext] = None
    components: List[Any] = attrs.Factory(list)
    cluster: Any = attrs.Factory(LocalCluster)

    @property
    def name(self) -> str:
        return self.config.name


def _load_factory(spec: Union[str, ComponentFactory]) -> ComponentFactory:
    if not isinstance(spec, str):
        return spec
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _default_store_factory(database_config: Any, reactor: Any, timeout: float) -> Any:
    from ilchat.store import create_store

    return create_store(database_config, reactor, timeout=timeout)


def _default_socketio_factory(reactor: Any, server_config: ServerConfig) -> Any:
    from ilchat.socketio import SocketIOServer

    network = server_config.network
    origins = getattr(network, "allowed_origins", None) or None
    route = server_config.redis.route if server_config.redis is not None else None
    return SocketIOServer(reactor, allowed_origins=origins, sid_prefix=f"{route}." if route else "")


def bus_instance(server_config: ServerConfig) -> str:
    """This process's bus id: ``redis.instance`` if configured, else host name and port."""
    if server_config.redis is not None:
        return server_config.redis.instance
    return f"{socket.gethostname()}:{server_config.port}"


async def connect_bus(local: IBus, server_config: ServerConfig, reactor: Any) -> IBus:
    """
    The process bus: C{local} alone, or with a ``redis`` section a RedisBus around it, connected
    (Redis unreachable: L{StartupError}, one line).
    """
    if server_config.redis is None:
        return local
    from ilchat.redisbus import RedisBus, RedisUnavailable

    bus = RedisBus(local, server_config.redis, reactor)  # type: ignore[arg-type]
    try:
        await bus.start()
    except RedisUnavailable as error:
        raise StartupError(str(error)) from None
    return bus


async def connect_cluster(server_config: ServerConfig, instance: str, reactor: Any) -> Any:
    """
    The cluster state: a started ``RedisCluster`` with a ``redis`` section (Redis unreachable,
    or this instance name live elsewhere: L{StartupError}, one line), else a ``LocalCluster``.
    """
    if server_config.redis is None:
        return LocalCluster(instance, reactor)
    from ilchat.cluster import DuplicateInstance, RedisCluster
    from ilchat.redisbus import RedisUnavailable

    cluster = RedisCluster(server_config.redis, reactor)
    try:
        await cluster.start()
    except (RedisUnavailable, DuplicateInstance) as error:
        raise StartupError(str(error)) from None
    return cluster


def _default_bus_factory(reactor: Any, instance: str) -> IBus:
    return LocalBus(instance, reactor)


async def resolve_address(reactor: Any, address: str, port: int) -> tuple:
    """
    The IP address to bind for ``address`` (an IP literal or a host name), and its family name.

    Host names are resolved with ``getaddrinfo`` in the reactor's thread pool so the reactor never
    blocks on DNS (IPv4 and IPv6 both work, unlike ``reactor.resolve``).

    Raises:
        StartupError: the name does not resolve.
    """
    if abstract.isIPAddress(address):
        return address, "IPv4"
    if abstract.isIPv6Address(address):
        return address, "IPv6"
    try:
        infos = await threads.deferToThreadPool(
            reactor,
            reactor.getThreadPool(),
            socket.getaddrinfo,
            address,
            port,
            0,
            socket.SOCK_STREAM,
        )
    except OSError as e:
        raise StartupError(f"Cannot resolve address {address!r}: {e.strerror or e}")
    if not infos:
        raise StartupError(f"Cannot resolve address {address!r}: no address found")
    family, _, _, _, sockaddr = infos[0]
    return sockaddr[0], ("IPv6" if family == socket.AF_INET6 else "IPv4")


class IlchatService(service.MultiService):
    """
    The whole server. ``when_ready()`` fires when it listens, or fails with the start-up error.

    Args:
        server_config, client_configs: from ``ilchat.config.load_configs``.
        reactor: the reactor; defaults to the global one.
        listen_port: overrides ``server_config.port`` (tests use 0 for a free port).
        client_components, server_components: factories or dotted names; defaults to
            ``CLIENT_COMPONENTS`` / ``SERVER_COMPONENTS``.
        store_factory: ``(database_config, reactor) -> Store``; defaults to ``create_store``.
        socketio_factory: ``(reactor, server_config) -> SocketIOServer``.
        bus_factory: ``(reactor, instance) -> IBus``; defaults to a L{LocalBus} (the test suite
            passes a strict one).
        exit_on_failure: under twistd, a failed start-up prints one line to stderr and the
            process exits with status 1 (instead of serving nothing).
        install_signal_handlers: under twistd, SIGTERM/SIGINT stop cleanly with status 0 and
            SIGHUP/SIGUSR1 reopen the log files.
        setup_logs: add the ``log`` / ``error_log`` file observers.
        filter_global_logs: under twistd, filter twistd's own observers (stdout, ``twistd.log``)
            by ``log_level`` too.
        settle_collector: under twistd, freeze what start-up made out of the garbage
            collector's walks once it is done (``ilchat.gcpolicy``); a process that runs other
            things (the test suite) keeps its collector as it is.
        lean_dispatch: under twistd, the epoll reactor dispatches ready descriptors without
            the legacy logging context (``ilchat.eventloop``).
    """

    _log = Logger()

    def __init__(
        self,
        server_config: ServerConfig,
        client_configs: Sequence[ClientConfig],
        reactor: Any = None,
        listen_port: Optional[int] = None,
        client_components: Optional[Sequence[Union[str, ComponentFactory]]] = None,
        server_components: Optional[Sequence[Union[str, ComponentFactory]]] = None,
        store_factory: Optional[Callable[[Any, Any], Any]] = None,
        socketio_factory: Optional[Callable[[Any, ServerConfig], Any]] = None,
        bus_factory: Optional[Callable[[Any, str], IBus]] = None,
        exit_on_failure: bool = False,
        install_signal_handlers: bool = False,
        setup_logs: bool = True,
        filter_global_logs: bool = False,
        settle_collector: bool = False,
        lean_dispatch: bool = False,
    ) -> None:
        super().__init__()
        self._settle_collector = settle_collector
        self._lean_dispatch = lean_dispatch
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.server_config = server_config
        self.client_configs = list(client_configs)
        self.listen_port = server_config.port if listen_port is None else listen_port
        if client_components is None:
            client_components = CLIENT_COMPONENTS
        if server_components is None:
            server_components = SERVER_COMPONENTS
        self._client_factories = [_load_factory(f) for f in client_components]
        self._server_factories = [_load_factory(f) for f in server_components]
        self._store_factory = store_factory or functools.partial(
            _default_store_factory, timeout=server_config.database_timeout
        )
        self._socketio_factory = socketio_factory or _default_socketio_factory
        self._bus_factory = bus_factory or _default_bus_factory
        self._exit_on_failure = exit_on_failure
        self._install_signal_handlers = install_signal_handlers

        self.log_service: Optional[LogService] = None
        if setup_logs:
            self.log_service = LogService(server_config, filter_others=filter_global_logs)
            self.log_service.setServiceParent(self)

        self._ready_result: Any = None  # None while starting, then True or the Failure
        self._ready_waiters: List[defer.Deferred[None]] = []
        self.port: Optional[int] = None
        self.host: Optional[str] = None
        self.context: Optional[ServerContext] = None
        self.clients: Dict[str, ClientContext] = {}
        self.site: Optional[ChatSite] = None
        self._listening: Optional[IListeningPort] = None
        self._stores: List[Any] = []
        self._socketio: Any = None
        self.policy: Optional[NetworkPolicy] = None
        self._starting: Optional[defer.Deferred[None]] = None
        self._bus: Optional[IBus] = None
        #: The cluster state (``ilchat.cluster``), from the start on.
        self.cluster: Any = None
        self._stopping = False
        self.readiness: Any = None
        self.metrics: Any = None
        self.metrics_port: Optional[int] = None
        self._metrics_listening: Optional[IListeningPort] = None

    # --- start ----------------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802 (twisted API)
        super().startService()  # the log files first
        self._log.info("Starting Server!")
        self._log.info("Log Level: {log_level_name}", log_level_name=self.server_config.log_level)
        limits = raise_open_file_limit()
        if limits is not None:
            before, after = limits
            self._log.info(
                "Open file limit: {after}" + (" (raised from {before})" if after != before else ""),
                before=before,
                after=after,
            )
        if self._install_signal_handlers:
            self.reactor.callWhenRunning(self._install_signals)
        self._starting = defer.ensureDeferred(self._start())
        self._starting.addCallbacks(self._started, self._start_failed)

    async def _start(self) -> None:
        server_config = self.server_config
        # First: with Redis unreachable there is nothing to start (and no store to close).
        self._bus = await connect_bus(
            self._bus_factory(self.reactor, bus_instance(server_config)), server_config, self.reactor
        )
        bus = self._bus
        self.cluster = await connect_cluster(server_config, bus.instance, self.reactor)
        for client_config in self.client_configs:
            store = self._store_factory(client_config.database, self.reactor)
            try:
                await store.open()
            except BaseException:
                # Do not leave a half-made pool (and its threads) behind a failed start.
                await self._best_effort("close the store", store.close)
                raise
            self._stores.append(store)
            self._log.info("Database for {name} connected! ({database})", name=client_config.name,
                           database=store.db.description)
            log_identity_mode(client_config)
            await self._move_users_if_alone(client_config.name, store)

        self._socketio = self._socketio_factory(self.reactor, server_config)
        # What a bus pass broadcast is written when the pass ends, not one reactor turn later.
        bus.after_delivery(self._socketio.flush_turn)
        # The network policy (server.cfg "network"): one per process, for every listener.
        self.policy = NetworkPolicy.from_config(server_config.network, clock=self.reactor)
        self.policy.install(self._socketio)
        web_root = WebRoot(server_config.sub_directory)
        web_root.put("backend", BackendResource(self.clients))
        web_root.put("socket.io", self._socketio.resource)
        self.context = ServerContext(
            config=server_config,
            reactor=self.reactor,
            bus=bus,
            socketio=self._socketio,
            web_root=web_root,
            clients=self.clients,
            policy=self.policy,
            cluster=self.cluster,
        )
        contexts = []
        for client_config, store in zip(self.client_configs, self._stores):
            contexts.append(
                ClientContext(
                    config=client_config,
                    server_config=server_config,
                    store=store,
                    bus=bus,
                    reactor=self.reactor,
                    socketio=self._socketio,
                    routes=RouteTable(),
                    web_root=web_root,
                    policy=self.policy,
                    server=self.context,
                    cluster=self.cluster,
                )
            )
        for ctx in contexts:
            for factory in self._client_factories:
                component = factory(ctx)
                ctx.components.append(component)
                await self._start_child(ComponentService(component))
            # Served only once its components are up, so no action answers before it can work.
            self.clients[ctx.name] = ctx
        for factory in self._server_factories:
            await self._start_child(ComponentService(factory(self.context)))

        if server_config.purge_enabled:
            from ilchat.store import DailyPurge

            purge = DailyPurge(self.reactor, {ctx.name: ctx.store for ctx in contexts}, server_config,
                               cluster=self.cluster)
            await self._start_child(purge)

        from ilchat.metrics import ServiceMetrics
        from ilchat.readiness import Readiness, ReadinessResource

        self.readiness = Readiness({ctx.name: ctx.store for ctx in contexts}, self.reactor)
        readiness_resource = ReadinessResource(self.readiness)
        web_root.put("ready", readiness_resource)
        self.metrics = ServiceMetrics(self, self.reactor)
        self.metrics.attach()

        await self._listen(web_root)
        if server_config.metrics is not None:
            await self._listen_metrics(readiness_resource)

    async def _move_users_if_alone(self, name: str, store: Any) -> None:
        """
        Every ``chatroom_users`` row to ``chatroom_sessions`` (as the Node server does at start
        and stop), unless other instances are live: their users are online, and the rows of
        this process's users are moved after the grace by the process that handles its
        departure, unless they reconnected elsewhere. Who is live is read from Redis now, not
        from the last heartbeat: a peer started a moment ago must count.
        """
        others = sorted(await self.cluster.live_now() - {self.cluster.instance})
        if others:
            self._log.info(
                "Users of {name} left in chatroom_users: other live instances ({others}) serve them",
                name=name, others=", ".join(others),
            )
            return
        moved = await store.move_all_users_to_sessions(int(self.reactor.seconds()))
        self._log.info(
            "Successfully disconnected all users from server ({name}: {moved} moved to sessions)",
            name=name,
            moved=moved,
        )

    async def _start_child(self, child: service.IService) -> None:
        """
        Add ``child`` (which starts it, the server running) and wait for its start, so the next
        child starts after it; a child whose start fails is removed again without a stop.
        """
        child.setServiceParent(self)
        started = getattr(child, "started", None)
        try:
            if started is not None:
                await started
        except BaseException:
            if isinstance(child, ComponentService):
                child.start_failed = True
            await defer.maybeDeferred(child.disownServiceParent)
            raise

    @property
    def components(self) -> List[Any]:
        """The started components, client ones first (for the metrics)."""
        return [child.component for child in self if isinstance(child, ComponentService)]

    async def _listen(self, web_root: WebRoot) -> None:
        config = self.server_config
        network = config.network if config.network is not None else NetworkConfig()
        self.site = ChatSite(
            PolicyGuardResource(web_root.root, self.policy),
            policy=self.policy,
            header_timeout=network.header_timeout,
            body_timeout=network.body_timeout,
            max_headers=network.max_headers,
            max_header_bytes=network.max_header_bytes,
            reactor=self.reactor,
        )
        options = None
        if config.is_https:
            from ilchat.tls import TLSConfigError, certificate_options

            try:
                options = certificate_options(config.cert, config.key, config.dhparam)
            except TLSConfigError as e:
                raise StartupError(str(e))
        description, where = await self._description(config.listen, config.address,
                                                     self.listen_port, LISTEN_BACKLOG)
        self.site.proxy_header = reads_proxy_header(description)
        self._listening = await self._listen_on(description, where, self.site, options)
        watch_accept_errors(self._listening, "the web listener", self.reactor)
        bound = self._listening.getHost()
        self.host = getattr(bound, "host", None)
        self.port = getattr(bound, "port", None)
        shown = f"[{self.host}]" if self.host and ":" in self.host else self.host
        self._log.info(
            "The Server is Ready to use! Listening on: {protocol}://{address}:{port}",
            protocol=config.protocol,
            address=shown,
            port=self.port,
        )

    async def _description(
        self, listen: Optional[str], address: str, port: int, backlog: Optional[int] = None
    ) -> tuple:
        """The endpoint description of a listener, and how to name it in an error."""
        if listen is not None:
            return listen, listen
        host, family = await resolve_address(self.reactor, address, port)
        if host != address:
            self._log.info(
                "DNS Resolve for: {address} => IP: {ip} , Family: {family}",
                address=address,
                ip=host,
                family=family,
            )
        return tcp_description(host, port, backlog), f"{host}:{port}"

    async def _listen_on(self, description: str, where: str, factory: Any,
                         options: Any = None) -> IListeningPort:
        try:
            return await listen(self.reactor, description, factory, options)
        except Exception as e:
            raise StartupError(f"Cannot listen on {where}: {e}")

    async def _listen_metrics(self, readiness_resource: Any) -> None:
        """The separate listener of ``/metrics`` (and ``/ready``), behind the same allow-list."""
        from ilchat.metrics import MetricsRoot

        config = self.server_config.metrics
        site = ChatSite(PolicyGuardResource(MetricsRoot(self.metrics, readiness_resource), self.policy))
        description, where = await self._description(config.listen, config.address, config.port)
        site.proxy_header = reads_proxy_header(description)
        self._metrics_listening = await self._listen_on(description, f"{where} (metrics)", site)
        bound = self._metrics_listening.getHost()
        self.metrics_port = getattr(bound, "port", None)
        host = getattr(bound, "host", "")
        self._log.info(
            "Metrics listening on: http://{address}:{port}/metrics",
            address=f"[{host}]" if ":" in host else host,
            port=self.metrics_port,
        )

    def when_ready(self) -> "defer.Deferred[None]":
        """Fires when the server listens, or fails with the start-up error (also if already over)."""
        if self._ready_result is True:
            return defer.succeed(None)
        if isinstance(self._ready_result, Failure):
            return defer.fail(self._ready_result)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(waiter)
        return waiter

    def _started(self, _: Any) -> None:
        if self._settle_collector:
            settle_collector()
        if self._lean_dispatch and use_lean_dispatch(self.reactor):
            self._log.debug("Event dispatch: epoll, without the legacy log context (ilchat.eventloop)")
        self._ready_result = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _start_failed(self, failure: Failure) -> None:
        if self._stopping and failure.check(defer.CancelledError):
            self._log.info("Start-up cancelled by the shutdown")
            self._ready_result = failure
            waiters, self._ready_waiters = self._ready_waiters, []
            for waiter in waiters:
                waiter.errback(failure)
            return
        try:
            from ilchat.journal import JournalError
            from ilchat.store import StoreError

            expected: tuple = (StartupError, StoreError, JournalError)
        except ImportError:
            expected = (StartupError,)
        if failure.check(*expected):
            # An operator's problem (bad address, database without the ILIAS tables...): one
            # clear line, no traceback.
            message = f"Start-up failed: {failure.value}"
            self._log.error("{message}", message=message)
        else:
            message = f"Start-up failed: {failure.getErrorMessage()}"
            self._log.failure("Start-up failed", failure)
        if self._exit_on_failure:
            # The real stderr: twistd has redirected sys.stderr into the log by now.
            stderr = sys.__stderr__ or sys.stderr
            stderr.write(message.replace("\n", " ") + "\n")
            stderr.flush()
            # twistd exits with 0 after a reactor stop; a failed start must not look like success.
            self.reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
            self.reactor.callWhenRunning(self.reactor.stop)
        self._ready_result = failure
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.errback(failure)

    def _install_signals(self) -> None:
        """
        SIGTERM/SIGINT stop the reactor (and so this service) with exit status 0, where twistd
        would re-raise the signal; SIGHUP and SIGUSR1 reopen the log files after logrotate moved
        them.
        """

        def stop(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(self._stop_reactor, signum)

        def reopen(signum: int, frame: Any) -> None:
            if self.log_service is not None:
                self.reactor.callFromThread(self.log_service.reopen)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reopen)
        signal.signal(signal.SIGUSR1, reopen)

    def _stop_reactor(self, signum: int) -> None:
        self._log.info("Received signal {signum}, shutting down", signum=signum)
        if self.reactor.running:
            self.reactor.stop()

    # --- stop -----------------------------------------------------------------------------------

    def stopService(self) -> "defer.Deferred[None]":  # noqa: N802 (twisted API)
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        if self._starting is not None and not self._starting.called:
            # A stop during start-up (SIGTERM while the database does not answer): abandon the
            # start, then tear down what it built so far.
            self._starting.cancel()
        if self._starting is not None:
            try:
                await self._starting
            except Exception:
                pass
        if self._listening is not None:
            await self._best_effort("stop listening", self._listening.stopListening)
            self._listening = None
        if self._metrics_listening is not None:
            await self._best_effort("stop the metrics listener", self._metrics_listening.stopListening)
            self._metrics_listening = None
        if self.metrics is not None:
            self.metrics.detach()
        if self._socketio is not None:
            await self._best_effort("close sockets", self._socketio.close)
        if self.site is not None:
            await self._best_effort("close HTTP connections", self.site.close_connections)
        self.clients.clear()
        # The daily purge, then the components in reverse: each child but the log files, last
        # started first, one after the other (MultiService would stop them all at once).
        for child in reversed(list(self)):
            if child is not self.log_service:
                what = f"stop {child.component!r}" if isinstance(child, ComponentService) else (
                    "stop the daily purge")
                await self._best_effort(what, child.disownServiceParent)
        if self._bus is not None:
            # Events the components published while stopping: delivered now, nothing left over
            # (then, with Redis, its connections are closed).
            close = getattr(self._bus, "close", None)
            if close is not None:
                await self._best_effort("close the bus", close)
            self._bus = None
        for config, store in reversed(list(zip(self.client_configs, self._stores))):
            await self._best_effort("move users to sessions",
                                    lambda: self._move_users_if_alone(config.name, store))
        if self.cluster is not None:
            await self._best_effort("leave the cluster", self.cluster.stop)
        for store in reversed(self._stores):
            await self._best_effort("close the store", store.close)
        self._stores = []
        self._log.info("Server stopped")
        await defer.maybeDeferred(super().stopService)  # the log files last

    async def _best_effort(self, what: str, func: Callable[[], Any]) -> None:
        """Run one shutdown step; a failing step is logged and does not stop the next ones."""
        try:
            await defer.maybeDeferred(func)
        except Exception:
            self._log.failure("Shutdown step failed: {what}", what=what)


def makeService(options: Any) -> IlchatService:  # noqa: N802 (twisted API)
    """
    The twistd entry point. ``options`` carries the loaded ``server_config`` and
    ``client_configs`` (the plugin's Options load and check them before twistd goes on).
    """
    return IlchatService(
        options["server_config"],
        options["client_configs"],
        exit_on_failure=True,
        install_signal_handlers=True,
        filter_global_logs=True,
        settle_collector=True,
        lean_dispatch=True,
    )
