"""The application API: rooms, skip, broadcast encoded once, socket attributes, shutdown.

Clients are python-socketio over websocket and polling, in threads.
"""

from __future__ import annotations

import queue
import threading

import socketio
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

import ilchat.engineio._internals as eio_internals
from ilchat.socketio import SocketIOServer
from tests.engineio.support import serve, wait


class Clients:
    """A few python-socketio clients recording every ``news`` event they get."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.clients: list[socketio.Client] = []
        self.news: "queue.Queue[tuple[int, tuple]]" = queue.Queue()
        self.disconnects: "queue.Queue[int]" = queue.Queue()

    def connect(self, transports: list[str], headers: dict | None = None) -> int:
        index = len(self.clients)
        client = socketio.Client(reconnection=False)
        client.on("news", lambda *args: self.news.put((index, args)), namespace="/chat")
        client.on("disconnect", lambda *a: self.disconnects.put(index), namespace="/chat")
        client.connect(self.base, namespaces=["/chat"], transports=transports,
                       headers=headers or {}, wait_timeout=5)
        self.clients.append(client)
        return index

    def collect(self, count: int, timeout: float = 5.0) -> list[tuple[int, tuple]]:
        got = [self.news.get(timeout=timeout) for _ in range(count)]
        try:
            got.append(self.news.get(timeout=0.3))
        except queue.Empty:
            pass
        return sorted(got)

    def close(self) -> None:
        for client in self.clients:
            client.disconnect()
            # The polling transport's requests.Session keeps idle keep-alive connections open.
            http = getattr(client.eio, "http", None)
            if http is not None:
                http.close()


class APITests(TestCase):
    def setUp(self):
        self.server = SocketIOServer(reactor)
        self.ns = self.server.namespace("chat")  # a missing slash is added
        self.sockets: dict[str, object] = {}
        self.ns.on_connect = lambda socket, auth: self.sockets.__setitem__(socket.sid, socket)
        self.base = serve(self, self.server.resource)
        self.clients = Clients(self.base)
        self.addCleanup(self._cleanup)

    @defer.inlineCallbacks
    def _cleanup(self):
        yield deferToThread(self.clients.close)
        yield self.server.close()

    @defer.inlineCallbacks
    def connect_all(self):
        """Three websocket clients and one polling client, in that order."""
        for transports in (["websocket"], ["websocket"], ["websocket"], ["polling"]):
            yield deferToThread(self.clients.connect, transports)
        for _ in range(50):
            if len(self.ns.sockets) == 4:
                break
            yield wait(0.02)
        return list(self.ns.sockets.values())

    @defer.inlineCallbacks
    def test_room_emit_reaches_members_once_and_honours_skip(self):
        """A socket in two named rooms gets one copy; ``skip`` leaves the given sids out."""
        a, b, c, d = yield self.connect_all()
        a.join("x"), b.join("x"), b.join("y"), d.join("y")
        self.assertEqual(b.rooms, {"x", "y"})
        self.assertEqual(self.ns.room_sids("y"), {b.sid, d.sid})
        self.ns.emit("news", "to x and y", room=["x", "y"], skip=[a.sid])
        got = yield deferToThread(self.clients.collect, 2)
        self.assertEqual(got, [(1, ("to x and y",)), (3, ("to x and y",))])
        c.join("x")
        b.leave("x")
        self.ns.emit("news", "x again", room="x", skip=c.sid)
        got = yield deferToThread(self.clients.collect, 1)
        self.assertEqual(got, [(0, ("x again",))])

    @defer.inlineCallbacks
    def test_emit_to_a_sid_reaches_that_socket(self):
        """As in socket.io, a socket's sid works as a room of its own."""
        a, b, c, d = yield self.connect_all()
        self.ns.emit("news", "just you", room=[c.sid, d.sid])
        got = yield deferToThread(self.clients.collect, 2)
        self.assertEqual(got, [(2, ("just you",)), (3, ("just you",))])

    @defer.inlineCallbacks
    def test_broadcast_is_encoded_once_for_all_websockets(self):
        """One namespace-wide emit builds one websocket frame however many sockets get it."""
        yield self.connect_all()
        built = []
        real = eio_internals.PreparedMessage

        def counting(*args):
            built.append(threading.get_ident())
            return real(*args)

        self.patch(eio_internals, "PreparedMessage", counting)
        self.ns.emit("news", {"big": "x" * 1000}, b"\x01")
        got = yield deferToThread(self.clients.collect, 4)
        self.assertEqual([i for i, _ in got], [0, 1, 2, 3])
        self.assertEqual([args for _, args in got], [({"big": "x" * 1000}, b"\x01")] * 4)
        # One frame for the text part and one for the binary attachment.
        self.assertEqual(len(built), 2)

    @defer.inlineCallbacks
    def test_socket_exposes_address_and_headers(self):
        """``socket.address`` is the TCP peer; ``socket.headers`` are the handshake headers."""
        yield deferToThread(self.clients.connect, ["websocket"], {"X-Test": "yes"})
        (socket,) = self.ns.sockets.values()
        self.assertEqual(socket.address, "127.0.0.1")
        self.assertEqual(socket.headers["x-test"], "yes")
        self.assertIs(socket.namespace, self.ns)
        self.assertEqual(socket.data, {})

    @defer.inlineCallbacks
    def test_close_disconnects_every_client(self):
        """``await server.close()`` disconnects every socket of every transport."""
        yield self.connect_all()
        yield self.server.close()
        got = yield deferToThread(lambda: sorted(self.clients.disconnects.get(timeout=5)
                                                 for _ in range(4)))
        self.assertEqual(got, [0, 1, 2, 3])
        self.assertEqual(self.ns.sockets, {})
        self.assertEqual(self.server.engineio.sessions, {})
