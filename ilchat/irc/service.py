# -*- test-case-name: tests.irc.test_bridge -*-
"""
The IRC component: one IRC network and listener for the whole process, bridged to the repository
chat rooms of the exposed clients. Off unless ``server.cfg`` has an ``irc`` section.
"""

import os
from typing import Any, Callable, List, Optional

from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ilchat.chat.rooms import chat_rooms_of
from ilchat.irc.auth import IliasAuthenticator
from ilchat.irc.bridge import RoomBridge
from ilchat.irc.network import IrcNetwork
from ilchat.irc.protocol import IrcServerFactory
from ilchat.irc.replication import IrcReplication
from ilchat.statefile import StateFile

__all__ = ["IrcComponent", "OPEN_IDS_FILE"]

#: The file in ``journal_dir`` that keeps the open-mode id counter for the next run.
OPEN_IDS_FILE = "ilchat-irc-open-ids.json"


class IrcComponent:
    """
    A server component (``factory(ServerContext)``): starts after every client component, so
    each client's room domain exists when the bridges are built.

    Attributes:
        network: the IRC network (None while off).
        ports: the listening ports (plain first, then TLS), for tests and logs.
    """

    _log = Logger()

    def __init__(self, context: Any) -> None:
        self.context = context
        self.config = context.config.irc
        self.network: Optional[IrcNetwork] = None
        self.factory: Optional[IrcServerFactory] = None
        self.bridges: List[RoomBridge] = []
        self.ports: List[IListeningPort] = []
        self.replication: Optional[IrcReplication] = None

    async def start(self) -> None:
        config = self.config
        if config is None:
            return
        reactor = self.context.reactor
        exposed = []
        for name, client in self.context.clients.items():
            if config.rooms is not None and name not in config.rooms:
                continue
            chat = chat_rooms_of(client)
            if chat is None:
                self._log.warn("IRC: client {name} has no repository chat; not bridged", name=name)
                continue
            rooms = None if config.rooms is None else config.rooms[name]
            exposed.append((name, client, chat, rooms))
        authenticator = None
        if config.auth == "ilias":
            authenticator = IliasAuthenticator([(name, client.store) for name, client, _, _ in exposed], reactor)
        self.network = IrcNetwork(config, reactor, authenticator)
        # Nothing stores open-mode ids, so this process's file carries the counter to its next
        # run: after a restart of every process and of Redis no id is handed out again.
        self.network.open_ids = self.context.cluster.ids("irc-open", keep=StateFile(
            os.path.join(self.context.config.journal_dir, OPEN_IDS_FILE)))
        await self.network.open_ids.ready()
        self.network.cluster = self.context.cluster
        for name, client, chat, rooms in exposed:
            # The standalone chat's users are new ids at each login: no ban could hold them.
            bridge = RoomBridge(self.network, chat, client.store, rooms, config.auth,
                                written_text=_written_text_of(client),
                                keeps_bans=getattr(client.config, "standalone", None) is None)
            bridge.start(self.context.bus)
            self.bridges.append(bridge)
        # The IRC users and channels of the other processes (nothing to do for one process).
        self.replication = IrcReplication(self.network, self.context.bus, self.context.cluster)
        await self.replication.start()
        # The process's one NetworkPolicy: the same allow-list and per-IP count as the web.
        self.factory = IrcServerFactory(self.network, reactor, self.context.policy)
        if config.port is not None:
            self.ports.append(reactor.listenTCP(config.port, self.factory, interface=config.address))
        if config.tls_port is not None:
            from ilchat.tls import certificate_options

            options = certificate_options(config.cert, config.key, config.dhparam)
            self.ports.append(
                reactor.listenSSL(config.tls_port, self.factory, options, interface=config.address)
            )
        if config.websocket is not None:
            from ilchat.irc.websocket import IrcWebSocketResource

            self.context.web_root.put(
                config.websocket.lstrip("/"), IrcWebSocketResource(self.factory, self.context.policy)
            )
            self._log.info("IRC over WebSocket at {path} on the web listener", path=config.websocket)
        for port in self.ports:
            self._log.info("IRC listening on {address}:{port} (auth {auth}, {count} clients bridged)",
                           address=config.address, port=port.getHost().port, auth=config.auth,
                           count=len(self.bridges))

    async def stop(self) -> None:
        for port in self.ports:
            await port.stopListening()
        self.ports = []
        if self.factory is not None:
            self.factory.close_all("Server shutting down")
        if self.replication is not None:
            self.replication.stop()
            self.replication = None
        for bridge in self.bridges:
            bridge.stop()
        self.bridges = []


def _written_text_of(client: Any) -> Optional[Callable[[str], str]]:
    """
    The client's reader of stored message texts (C{written_text} of the component that writes
    them, e.g. undoing the HTML escaping of ILIAS 8/9 rows), found like L{chat_rooms_of} by
    what the components hold; None: texts are stored as written.
    """
    for component in getattr(client, "components", ()):
        reader = getattr(component, "written_text", None)
        if callable(reader):
            return reader
    return None
