# -*- test-case-name: tests.test_metrics -*-
"""
Prometheus metrics of one ``IlchatService``, served on their own listener (server.cfg ``metrics``).

Most values are read from the state the parts already keep, when Prometheus scrapes
(``ServiceCollector``): connections per namespace and transport, rooms, members, the history
queue, the per-namespace event counts of the Socket.IO server, IRC's line counts, the network
policy's refusals. Only what is an event and leaves no state is counted as it happens, by
observers added from here: database transactions (``Database.observers``), chat messages and
their recipients (a bus subscriber) and the reactor's lag (a timer measuring its own lateness).
So the hot paths carry at most an integer increment and know nothing of Prometheus.

Every service has its own ``CollectorRegistry``: several servers in one test process never share
or collide on a metric. The scrape runs in the reactor thread (not in a WSGI thread as
``prometheus_client.twisted.MetricsResource`` would), because the collector reads reactor-side
dicts that must not change under it.

Adding a metric: a value the parts already hold goes into ``ServiceCollector.collect`` (a
``GaugeMetricFamily``/``CounterMetricFamily`` filled from that state); an event gets a
``Counter``/``Histogram`` in ``ServiceMetrics.__init__`` on ``self.registry`` and an observer
that updates it. Name it ``ilchat_<what>[_<unit>]`` and list it in README.rst's metrics table.
"""

from __future__ import annotations

from collections import Counter as Tally
from typing import Any, Callable, Dict, Iterator, List, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.internet.interfaces import IDelayedCall
from twisted.web.resource import Resource

import ilchat
from ilchat.chat.conversation_events import MESSAGE_POSTED
from ilchat.chat.cluster_presence import ClusterPresence
from ilchat.chat.rooms import chat_rooms_of

__all__ = ["MetricsResource", "ReactorLag", "ServiceCollector", "ServiceMetrics", "REFUSAL_REASONS"]

#: The reasons ``ilchat_refusals_total`` always reports (0 until one happens).
REFUSAL_REASONS = (
    "address", "origin", "connections_per_ip", "message_rate", "parse_error", "session_limit"
)

#: Seconds between two ticks of the reactor lag timer.
LAG_INTERVAL = 0.5

_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ReactorLag:
    """
    A timer that measures its own lateness: it asks to run every ``interval`` seconds and reports
    how much later than asked it ran. A reactor busy with a long callback (a huge POST, a slow
    fan-out) shows as lag here before users notice it.
    """

    def __init__(self, clock: Any, observe: Callable[[float], None], interval: float = LAG_INTERVAL) -> None:
        self.clock = clock
        self.observe = observe
        self.interval = interval
        self._due = 0.0
        self._call: Optional[IDelayedCall] = None

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self.observe(max(0.0, self.clock.seconds() - self._due))
        self._schedule()


class ServiceCollector:
    """Reads the service's state on each scrape (a prometheus_client custom collector)."""

    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        service = self.service
        info = InfoMetricFamily("ilchat", "ilchat version")
        info.add_metric([], {"version": ilchat.__version__})
        yield info

        connections = GaugeMetricFamily(
            "ilchat_connections",
            "Open connections: Socket.IO sockets per namespace and Engine.IO transport, and IRC",
            labels=["transport", "namespace"],
        )
        received = CounterMetricFamily(
            "ilchat_messages_in",
            "Socket.IO events and IRC lines received from clients",
            labels=["transport", "namespace"],
        )
        sent = CounterMetricFamily(
            "ilchat_messages_out",
            "Socket.IO events and IRC lines sent to clients (one per recipient)",
            labels=["transport", "namespace"],
        )
        context = service.context
        socketio = context.socketio if context is not None else None
        for namespace in socketio.namespaces if socketio is not None else ():
            by_transport = Tally(socket.transport for socket in list(namespace.sockets.values()))
            for transport in ("websocket", "polling"):
                connections.add_metric([transport, namespace.name], by_transport.get(transport, 0))
            received.add_metric(["socketio", namespace.name], namespace.events_received)
            sent.add_metric(["socketio", namespace.name], namespace.events_sent)
        irc = _irc_component(service)
        if irc is not None and irc.network is not None:
            open_irc = len(irc.factory.connections) if irc.factory is not None else 0
            connections.add_metric(["irc", ""], open_irc)
            received.add_metric(["irc", ""], irc.network.lines_received)
            sent.add_metric(["irc", ""], irc.network.lines_sent)
        yield connections
        yield received
        yield sent

        rooms = GaugeMetricFamily("ilchat_rooms", "Chat rooms known to the server", labels=["client"])
        members = GaugeMetricFamily(
            "ilchat_room_members", "Members present in rooms (summed over the rooms)", labels=["client"]
        )
        queue = GaugeMetricFamily(
            "ilchat_history_queue_length",
            "Chat history rows delivered and waiting to be written to the database",
            labels=["client"],
        )
        database_up = GaugeMetricFamily(
            "ilchat_database_up",
            "1 if the client's database answered the last readiness probe, else 0",
            labels=["client"],
        )
        readiness = getattr(service, "readiness", None)
        for name, client in list(service.clients.items()):
            chat = chat_rooms_of(client)
            if chat is not None:
                chat_rooms = chat.rooms()
                rooms.add_metric([name], len(chat_rooms))
                members.add_metric([name], sum(len(room.joined) for room in chat_rooms))
                if chat.history is not None:
                    queue.add_metric([name], len(chat.history))
            probe = readiness.probes.get(name) if readiness is not None else None
            if probe is not None:
                probe.refresh()  # never waits: the next scrape sees the answer
                if probe.up is not None:
                    database_up.add_metric([name], 1 if probe.up else 0)
        yield rooms
        yield members
        yield queue
        yield database_up

        refusals = CounterMetricFamily(
            "ilchat_refusals", "Connections, requests and messages refused, by reason", labels=["reason"]
        )
        counts = Tally(dict.fromkeys(REFUSAL_REASONS, 0))
        if service.policy is not None:
            counts.update(service.policy.refusals)
        socketio = service.context.socketio if service.context is not None else None
        if socketio is not None:
            counts.update(socketio.engineio.refusals)  # sessions closed for bad input or a limit
        for reason, count in sorted(counts.items()):
            refusals.add_metric([reason], count)
        yield refusals


def _irc_component(service: Any) -> Any:
    from ilchat.irc.service import IrcComponent

    for component in service.components:
        if isinstance(component, IrcComponent):
            return component
    return None


class ServiceMetrics:
    """
    The registry of one service and the observers that feed its event metrics.

    ``attach()`` once the stores and components run (before the listeners), ``detach()`` on stop.
    """

    def __init__(self, service: Any, clock: Any, lag_interval: float = LAG_INTERVAL) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ServiceCollector(service))
        self.db_seconds = Histogram(
            "ilchat_db_transaction_seconds",
            "Duration of database transactions (queueing for a pool thread included); "
            'transaction="add_history" is the history write latency',
            ["client", "transaction"],
            buckets=_DB_BUCKETS,
            registry=self.registry,
        )
        self.db_errors = Counter(
            "ilchat_db_errors",
            "Database transaction attempts that failed",
            ["client", "transaction"],
            registry=self.registry,
        )
        self.chat_messages = Counter(
            "ilchat_chat_messages",
            "Chat messages accepted and delivered (room: repository/standalone chat, web and IRC; "
            "osc: On-Screen Chat)",
            ["client", "kind"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "ilchat_deliveries",
            "Recipients of chat messages (members present in the room; On-Screen Chat: users)",
            ["client", "kind"],
            registry=self.registry,
        )
        self.reactor_lag = Histogram(
            "ilchat_reactor_lag_seconds",
            f"How late a timer asked for every {lag_interval:g} s runs (a busy reactor)",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.lag = ReactorLag(clock, self.reactor_lag.observe, lag_interval)
        self._undo: List[Callable[[], None]] = []

    def attach(self) -> None:
        """Add the observers to every client's store and bus topics, and start the lag timer."""
        for name, client in list(self.service.clients.items()):
            db = getattr(client.store, "db", None)
            if db is not None:
                observer = self._db_observer(name)
                db.observers.append(observer)
                self._undo.append(lambda db=db, observer=observer: db.observers.remove(observer))
            self._undo.append(client.bus.subscribe(f"room:{name}",
                                                   self._room_observer(name, client.bus.instance)))
            self._undo.append(client.bus.subscribe(f"osc:{name}", self._osc_observer(name)))
        self.lag.start()
        self._undo.append(self.lag.stop)

    def detach(self) -> None:
        undo, self._undo = self._undo, []
        for step in reversed(undo):
            step()

    def _db_observer(self, client: str) -> Callable[[str, float, bool], None]:
        def observe(desc: str, seconds: float, failed: bool) -> None:
            self.db_seconds.labels(client, desc).observe(seconds)
            if failed:
                self.db_errors.labels(client, desc).inc()

        return observe

    def _room_observer(self, client: str, instance: str) -> Callable[[Dict[str, Any]], None]:
        messages = self.chat_messages.labels(client, "room")
        deliveries = self.deliveries.labels(client, "room")
        # Who is present in each room on any process, from the room events (never the domain's
        # live state).
        presence = ClusterPresence(instance)

        def observe(envelope: Dict[str, Any]) -> None:
            event = envelope["event"]
            presence.apply(envelope)
            if event.get("type") != "message":
                return
            messages.inc()
            target = event["target"]
            if target is None or target["public"]:
                deliveries.inc(presence.count(event["room"]))
            else:
                deliveries.inc(len({event["sender"]["id"], target["id"]}))

        return observe

    def _osc_observer(self, client: str) -> Callable[[Dict[str, Any]], None]:
        messages = self.chat_messages.labels(client, "osc")
        deliveries = self.deliveries.labels(client, "osc")

        def observe(envelope: Dict[str, Any]) -> None:
            event = envelope["event"]
            if event.get("type") == MESSAGE_POSTED:
                messages.inc()
                deliveries.inc(len(event["recipients"]))

        return observe


class MetricsResource(Resource):
    """``GET /metrics``: the registry in the text format the scraper asks for (or OpenMetrics)."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:  # noqa: N802 (twisted API)
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else None)
        body = encoder(self.registry)
        request.setHeader(b"Content-Type", content_type.encode("latin-1"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body


class MetricsRoot(Resource):
    """The metrics listener's tree: ``/metrics`` and ``/ready``; everything else is a 404."""

    def __init__(self, metrics: ServiceMetrics, readiness_resource: Optional[Resource]) -> None:
        super().__init__()
        self.putChild(b"metrics", MetricsResource(metrics.registry))
        if readiness_resource is not None:
            self.putChild(b"ready", readiness_resource)
