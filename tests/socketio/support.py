"""The Socket.IO application the client tests talk to, served on a loopback port."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from ilchat.socketio import ConnectionRefused, SocketIOServer
from tests.engineio.support import serve, wait


class App:
    """A small app exercising the whole API; records connects and disconnects.

    Handlers (``/`` and ``/custom``): on connect emit ``auth`` with the auth payload;
    ``message`` -> ``message-back``; ``message-with-ack`` -> ack with the arguments;
    ``ask`` -> emit ``question`` with a callback, whose ack args come back as
    ``answer-received``; ``join`` -> join the room, emit ``joined``, ack ``True``;
    ``shout`` room text -> ``shouted`` to the room; ``bye`` -> server-side disconnect;
    ``boom`` raises; ``slow`` acks through a Deferred.  ``/private`` refuses every connection.
    """

    def __init__(self, server: SocketIOServer) -> None:
        self.server = server
        self.connected: list[tuple[str, str]] = []
        self.disconnected: list[tuple[str, str, str]] = []
        self._disconnect_waiters: list[defer.Deferred] = []
        for name in ("/", "/custom"):
            ns = server.namespace(name)
            ns.on_connect = self.on_connect
            ns.on_disconnect = self.on_disconnect
            ns.on("message", lambda socket, *args: socket.emit("message-back", *args))
            ns.on("message-with-ack", lambda socket, *args: tuple(args))
            ns.on("ask", self.ask)
            ns.on("join", self.join)
            ns.on("shout", self.shout)
            ns.on("bye", lambda socket: socket.disconnect())
            ns.on("boom", self.boom)
            ns.on("slow", self.slow)

        def refuse(socket, auth):
            raise ConnectionRefused("Not allowed here", {"reason": "test"})

        server.namespace("/private").on_connect = refuse

    def on_connect(self, socket, auth):
        self.connected.append((socket.namespace.name, socket.sid))
        socket.emit("auth", auth)

    def on_disconnect(self, socket, reason):
        self.disconnected.append((socket.namespace.name, socket.sid, reason))
        waiters, self._disconnect_waiters = self._disconnect_waiters, []
        for d in waiters:
            d.callback(None)

    def wait_disconnects(self, count: int, timeout: float = 5.0):
        """Fires once ``count`` disconnects have been seen."""

        @defer.inlineCallbacks
        def waiting():
            for _ in range(int(timeout / 0.02)):
                if len(self.disconnected) >= count:
                    return self.disconnected
                yield wait(0.02)
            raise AssertionError(f"only {self.disconnected} after {timeout}s")

        return waiting()

    def ask(self, socket, question):
        socket.emit(
            "question", question, callback=lambda *answer: socket.emit("answer-received", *answer)
        )

    def join(self, socket, room):
        socket.join(room)
        socket.emit("joined", room)
        return True

    def shout(self, socket, room, text):
        socket.namespace.emit("shouted", text, room=room)

    def boom(self, socket):
        raise ValueError("handler failure on purpose")

    def slow(self, socket, value):
        return deferLater(reactor, 0.05, lambda: ("later", value))


def serve_app(test, **options) -> tuple[str, App]:
    """Serve the :class:`App` on a loopback port; returns ``(base url, app)``."""
    server = SocketIOServer(reactor, **options)
    app = App(server)
    base = serve(test, server.resource)

    def close():
        return defer.ensureDeferred(server.close())

    test.addCleanup(close)
    return base, app
