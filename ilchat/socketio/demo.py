"""Reference app for the official Socket.IO / Engine.IO protocol test suites.

``python -m ilchat.socketio.demo --port 3000`` serves ``/socket.io/`` with pingInterval 300 ms,
pingTimeout 200 ms, maxPayload 1000000 and connectTimeout 1000 ms, every origin allowed:

* on connection to ``/`` or ``/custom``: emit ``auth`` with the handshake auth payload;
* ``message`` -> emit ``message-back`` with the same arguments (binary included);
* ``message-with-ack`` -> ack with the same arguments;
* any other namespace is refused (``Invalid namespace``).

With ``--engineio-echo`` it also serves plain Engine.IO at ``/engine.io/``, echoing every message.
"""

from __future__ import annotations

import argparse
import sys

from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site

from ilchat.engineio.server import EngineIOServer
from ilchat.socketio.server import SocketIOServer

PING_INTERVAL = 0.3
PING_TIMEOUT = 0.2
MAX_PAYLOAD = 1_000_000
CONNECT_TIMEOUT = 1.0


class _Echo:
    __slots__ = ("session",)

    def __init__(self, session):
        self.session = session

    def message_received(self, data):
        self.session.send_message(data)

    def session_closed(self, reason):
        pass


def build_site(
    reactor, engineio_echo: bool = False
) -> tuple[Site, SocketIOServer, EngineIOServer | None]:
    """The demo's Site, its Socket.IO server and the echoing Engine.IO server, if asked for."""
    server = SocketIOServer(
        reactor,
        ping_interval=PING_INTERVAL,
        ping_timeout=PING_TIMEOUT,
        max_payload=MAX_PAYLOAD,
        connect_timeout=CONNECT_TIMEOUT,
    )
    for name in ("/", "/custom"):
        ns = server.namespace(name)
        ns.on_connect = lambda socket, auth: socket.emit("auth", auth)
        ns.on("message", lambda socket, *args: socket.emit("message-back", *args))
        ns.on("message-with-ack", lambda socket, *args: tuple(args))
    root = Resource()
    root.putChild(b"socket.io", server.resource)
    echo = None
    if engineio_echo:
        echo = EngineIOServer(
            reactor,
            _Echo,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_TIMEOUT,
            max_payload=MAX_PAYLOAD,
        )
        root.putChild(b"engine.io", echo.resource)
    site = Site(root)
    site.displayTracebacks = False
    return site, server, echo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--engineio-echo", action="store_true")
    options = parser.parse_args(argv)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    site, _, _ = build_site(reactor, options.engineio_echo)
    port = reactor.listenTCP(options.port, site, interface=options.interface)
    print(f"listening on {port.getHost().host}:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
