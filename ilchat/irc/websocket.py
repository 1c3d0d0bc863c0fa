# -*- test-case-name: tests.irc.test_websocket -*-
"""
IRC over WebSocket (the IRCv3 WebSocket specification) on the web listener, so that web IRC
clients (Kiwi IRC, gamja) connect without a gateway of their own.

Each WebSocket message is one IRC line without its CR LF, both ways. The client picks the
subprotocol: ``binary.ircv3.net`` (binary messages, bytes as they are) or ``text.ircv3.net``
(text messages; lines that are not UTF-8 are decoded with replacement characters); a client that
asks for neither gets text messages, as other servers do. Behind the WebSocket is an ordinary
L{IRCServerProtocol} built by the process's L{IrcServerFactory}, so the allow-list, the per-IP
limits, flood control, registration and the bridge are exactly those of plain IRC; the HTTP side
adds the web's checks (proxy headers, ``Origin``) before the upgrade.
"""

from typing import Any, List, Optional

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from ilchat.jsonutil import dumps

__all__ = ["BINARY", "TEXT", "IrcWebSocketResource"]

TEXT = "text.ircv3.net"
BINARY = "binary.ircv3.net"


def _address(host: str, port: int) -> Any:
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


class _LineTransport:
    """
    The transport an L{IRCServerProtocol} writes to: cuts what it writes into lines and sends
    each as one WebSocket message. Flow control is the TCP connection's own (the IRC protocol is
    its producer), so a web client that stops reading fills the IRC send queue as on plain IRC.
    """

    def __init__(self, websocket: "IrcWebSocketProtocol", peer: Any) -> None:
        self._websocket = websocket
        self._peer = peer
        self._pending = b""
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        if self.disconnecting:
            return
        self._pending += data
        *lines, self._pending = self._pending.split(b"\r\n")
        for line in lines:
            self._websocket.send_line(line)

    def writeSequence(self, data: List[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            self._websocket.sendClose(1000)

    def abortConnection(self) -> None:
        self.disconnecting = True
        self._websocket.dropConnection(abort=True)

    def getPeer(self) -> Any:
        return self._peer

    def getHost(self) -> Any:
        return self._websocket.transport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        transport = self._websocket.transport
        try:
            transport.registerProducer(producer, streaming)
        except RuntimeError:
            # twisted.web's channel is still registered on the connection it handed over.
            transport.unregisterProducer()
            transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._websocket.transport.unregisterProducer()


class IrcWebSocketProtocol(WebSocketServerProtocol):
    """One web IRC client: WebSocket messages in and out of an IRC protocol."""

    _log = Logger()
    binary = False
    address = ""
    irc: Any = None
    _transport_lines: Optional[_LineTransport] = None

    def onConnect(self, request: Any) -> Optional[str]:
        for offered in request.protocols:
            if offered in (TEXT, BINARY):
                self.binary = offered == BINARY
                return offered
        return None

    def onOpen(self) -> None:
        peer = _address(self.address, getattr(self.transport.getPeer(), "port", 0))
        irc = self.factory.irc_factory.buildProtocol(peer)
        self.irc = irc
        self._transport_lines = _LineTransport(self, peer)
        irc.makeConnection(self._transport_lines)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.irc is not None and not self._transport_lines.disconnecting:
            # One message is one line; a CR or LF inside it ends a line, as on plain IRC.
            self.irc.dataReceived(payload + b"\r\n")

    def send_line(self, line: bytes) -> None:
        if self.state != self.STATE_OPEN:
            return  # closing: what the IRC side still says has nowhere to go
        if self.binary:
            self.sendMessage(line, isBinary=True)
        else:
            self.sendMessage(line.decode("utf-8", "replace").encode("utf-8"), isBinary=False)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        irc, self.irc = self.irc, None
        if irc is not None:
            irc.connectionLost(Failure(ConnectionDone("WebSocket closed")))


class _IrcWebSocketFactory(WebSocketServerFactory):
    protocol = IrcWebSocketProtocol

    def __init__(self, irc_factory: Any, max_line: int) -> None:
        super().__init__()
        self.irc_factory = irc_factory
        #: The client address the resource resolved (proxy headers) for the protocol built next.
        self.next_address = ""
        # A message is one line: the IRC limits (tags included) bound it, not Autobahn's defaults.
        self.setProtocolOptions(maxMessagePayloadSize=max_line + 8192, maxFramePayloadSize=max_line + 8192,
                                autoPingInterval=0, failByDrop=False)

    def buildProtocol(self, addr: Any) -> IrcWebSocketProtocol:
        proto = super().buildProtocol(addr)
        proto.address, self.next_address = self.next_address or getattr(addr, "host", ""), ""
        return proto


class IrcWebSocketResource(Resource):
    """
    The web path of IRC over WebSocket (server.cfg ``irc.websocket``, default ``/irc``).

    Args:
        irc_factory: the process's L{IrcServerFactory}.
        policy: the process's C{NetworkPolicy} (allow-list, proxies, origins, per-IP count), or
            None (every address and origin; tests).
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, irc_factory: Any, policy: Any = None) -> None:
        super().__init__()
        self._factory = _IrcWebSocketFactory(irc_factory, irc_factory.network.config.max_line)
        self._websocket = WebSocketResource(self._factory)
        self._policy = policy

    def render(self, request: Any) -> Any:
        upgrade = (request.getHeader(b"upgrade") or b"").lower() == b"websocket"
        if self._policy is not None:
            refusal = self._policy.connection_filter(request)
            if refusal is not None:
                return self._refuse(request, *refusal)
        if not upgrade:
            return self._refuse(
                request, 400,
                f"IRC over WebSocket: connect with a WebSocket client (subprotocol {TEXT} or {BINARY}).",
            )
        if self._policy is not None:
            self._factory.next_address = self._policy.client_address(request)
        return self._websocket.render(request)

    @staticmethod
    def _refuse(request: Any, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return dumps({"code": code, "message": message}).encode("utf-8")
