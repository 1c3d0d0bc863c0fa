"""Reference app for the official Socket.IO / Engine.IO protocol test suites.

``python -m ilchat.socketio.demo --port 3000`` serves ``/socket.io/`` with pingInterval 300 ms,
pingTimeout 200 ms, maxPayload 1000000 and connectTimeout 1000 ms, every origin allowed:

* on connection to ``/`` or ``/custom``: emit ``auth`` with the handshake auth payload,
  ``--auth-delay`` seconds (default 0.05) after the CONNECT answer (why: ``AUTH_DELAY``);
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

#: How long the ``auth`` emit waits after the CONNECT answer. The Socket.IO suite's client (``ws``
#: in Node) registers its listener for the next message only after handling the previous one, so
#: a frame that reaches it in the same TCP read as the CONNECT answer is lost; written at once,
#: the two are microseconds apart and often share a read on a busy machine (the next reactor turn
#: is not enough either). The pause lets the client read the answer alone. It is for the suites
#: only: ilchat writes a socket's packets as they are produced (TCP has no message boundaries to
#: keep, and a delay would only add latency for real clients). It stays well inside the suites'
#: heartbeat (ping at 300 ms, unanswered in one test, which must be over by 500 ms).
AUTH_DELAY = 0.05


class _Echo:
    __slots__ = ("session",)

    def __init__(self, session):
        self.session = session

    def message_received(self, data):
        self.session.send_message(data)

    def session_closed(self, reason):
        pass


def _emit_auth(socket, auth):
    socket.data.pop("auth_call", None)
    socket.emit("auth", auth)


def _auth_echo(reactor, delay: float):
    """on_connect and on_disconnect of the demo namespaces: ``auth`` echoed after ``delay``."""

    def on_connect(socket, auth):
        if delay <= 0:
            socket.emit("auth", auth)
        else:
            socket.data["auth_call"] = reactor.callLater(delay, _emit_auth, socket, auth)

    def on_disconnect(socket, reason):
        call = socket.data.pop("auth_call", None)
        if call is not None:
            call.cancel()

    return on_connect, on_disconnect


def build_site(
    reactor, engineio_echo: bool = False, auth_delay: float = AUTH_DELAY
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
        ns.on_connect, ns.on_disconnect = _auth_echo(reactor, auth_delay)
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
    parser.add_argument(
        "--auth-delay", type=float, default=AUTH_DELAY,
        help="seconds between the CONNECT answer and the auth emit (0: at once)",
    )
    options = parser.parse_args(argv)
    from twisted.internet import reactor

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    site, _, _ = build_site(reactor, options.engineio_echo, options.auth_delay)
    port = reactor.listenTCP(options.port, site, interface=options.interface)
    print(f"listening on {port.getHost().host}:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
