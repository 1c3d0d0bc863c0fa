"""
Helpers for the IRC tests: a real IRC listener on a loopback port and a raw line client.

The raw client speaks bytes over a real TCP socket so the tests can send what a well-behaved
client library never would (over-long lines, invalid UTF-8, bare CR, floods) and look at the
parsed replies, as Twisted Words' tests do with C{irc.parsemsg}.
"""

from typing import Any, Callable, List, Optional

import attr
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher

from ilchat.config import IrcConfig
from ilchat.irc.message import Message, parse_message
from ilchat.irc.network import IrcNetwork
from ilchat.irc.protocol import IrcServerFactory

TIMEOUT = 10.0


def capture_log(test: Any) -> List[Any]:
    """Every log event (of every logger) while the test runs."""
    events: List[Any] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def log_lines(events: List[Any], text: str = "") -> List[str]:
    """The formatted log lines that contain C{text}."""
    return [line for line in (formatEvent(e) for e in events) if text in line]


def make_config(**overrides: Any) -> IrcConfig:
    """An IrcConfig for tests: open auth, local channels, generous limits unless overridden."""
    defaults = dict(
        address="127.0.0.1",
        port=0,
        server_name="irc.test",
        network_name="TestNet",
        motd=("Hello", "World"),
        auth="open",
        local_channels=True,
        flood_rate=1000.0,
        flood_burst=1000,
        recvq=65536,
    )
    defaults.update(overrides)
    return IrcConfig(**defaults)


class RawClient(protocol.Protocol):
    """Collects parsed lines from the server; C{wait_for} returns them as they arrive."""

    def __init__(self) -> None:
        self.messages: List[Message] = []
        self.raw = b""
        self._buffer = b""
        self._waiters: List[Any] = []
        self.closed = defer.Deferred()
        self._seen = 0

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\r\n")
        for line in lines:
            self.messages.append(parse_message(line.decode("utf-8", "replace")))
        self._check()

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)
        self._check()

    def _check(self) -> None:
        for waiter in list(self._waiters):
            predicate, d = waiter
            for index in range(self._seen, len(self.messages)):
                if predicate(self.messages[index]):
                    self._waiters.remove(waiter)
                    self._seen = index + 1
                    d.callback(self.messages[index])
                    break

    def send(self, line: str) -> None:
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def send_raw(self, data: bytes) -> None:
        self.transport.write(data)

    def wait_for(self, command: str, predicate: Optional[Callable[[Message], bool]] = None) -> "defer.Deferred[Message]":
        """
        Fire with the next message (after the last one waited for) with that command
        (or one of ``"A|B"``).
        """
        commands = command.split("|")
        check = lambda m: m.command in commands and (predicate is None or predicate(m))  # noqa: E731
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((check, d))
        self._check()
        d.addTimeout(TIMEOUT, reactor)
        return d

    def clear(self) -> None:
        """Forget what was received so far (C{since} and C{wait_for} look at what comes next)."""
        self.messages.clear()
        self._seen = 0

    def since(self, command: str) -> List[Message]:
        """Every message received so far with that command."""
        return [m for m in self.messages if m.command == command]

    async def register(self, nick: str, user: str = "user", caps: tuple = ()) -> Message:
        if caps:
            self.send("CAP LS 302")
            self.send("CAP REQ :" + " ".join(caps))
            await self.wait_for("CAP", lambda m: m.params[1] in ("ACK", "NAK"))
            self.send("CAP END")
        self.send(f"NICK {nick}")
        self.send(f"USER {user} 0 * :Real {nick}")
        return await self.wait_for("376|422")


@attr.s(auto_attribs=True)
class IrcTestServer:
    network: IrcNetwork
    factory: IrcServerFactory
    port: Any

    async def client(self, test: Any) -> RawClient:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = await endpoints.connectProtocol(endpoint, RawClient())
        test.addCleanup(_close_client, client)
        return client

    async def registered(self, test: Any, nick: str, caps: tuple = ()) -> RawClient:
        client = await self.client(test)
        await client.register(nick, caps=caps)
        return client


async def _close_client(client: RawClient) -> None:
    if client.transport is not None and client.transport.connected:
        client.transport.loseConnection()
    await client.closed


async def start_irc(test: Any, config: Optional[IrcConfig] = None, authenticator: Any = None,
                    clock: Any = None) -> IrcTestServer:
    """Listen on a free loopback port; stopped (and every connection closed) by a cleanup."""
    config = config or make_config()
    network = IrcNetwork(config, clock or reactor, authenticator)
    factory = IrcServerFactory(network, clock or reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")

    async def stop() -> None:
        for proto in list(factory.connections):
            proto.transport.abortConnection()
        await port.stopListening()
        await deferLater(reactor, 0.01, lambda: None)

    test.addCleanup(stop)
    return IrcTestServer(network, factory, port)
