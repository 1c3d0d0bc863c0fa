"""When the frames of a websocket leave the server: a socket's own packets at once, broadcasts
per reactor turn.

The client is a raw TCP socket (the websocket handshake by ``websocket-client``, then bytes read
straight from the kernel), read from inside the server's handlers: what it can read there was
written before the handler went on, and what it cannot was still queued for the end of the turn.
A frame written at once, on its own, is what clients that handle one message per TCP read (the
official Socket.IO test suite's) need; broadcasts keep sharing one write per connection and turn.
"""

from __future__ import annotations

import json
import select

import websocket
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ilchat.bus import LocalBus
from ilchat.socketio import SocketIOServer
from tests.engineio.support import serve, wait
from tests.support.rawsocket import masked_frame

#: How long a read waits for a frame that should be there; only reached when one is missing.
READ_TIMEOUT = 10.0


class RawFrames:
    """The server frames on one websocket, read from the socket as the kernel has them."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws
        self.sock = ws.sock
        self.buffer = b""

    def read(self, count: int, timeout: float = READ_TIMEOUT) -> list[str]:
        """The next ``count`` text frames (fewer if they do not come within ``timeout``)."""
        frames: list[str] = []
        while True:
            frames += self._take()
            if len(frames) >= count:
                return frames
            readable, _, _ = select.select([self.sock], [], [], timeout)
            if not readable:
                return frames
            data = self.sock.recv(65536)
            if not data:
                return frames
            self.buffer += data

    def available(self) -> list[str]:
        """What the kernel holds for us right now, without waiting."""
        return self.read(1 << 30, timeout=0)

    def _take(self) -> list[str]:
        frames = []
        buf = self.buffer
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            start = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length = int.from_bytes(buf[2:4], "big")
                start = 4
            if len(buf) < start + length:
                break
            assert buf[0] == 0x81, buf[:1]  # final text frames only in these tests
            frames.append(buf[start : start + length].decode("utf-8"))
            buf = buf[start + length :]
        self.buffer = buf
        return frames

    def send(self, *packets: str) -> None:
        """Several Engine.IO packets in one TCP write: the server handles them in one turn."""
        self.sock.sendall(b"".join(masked_frame(p.encode("utf-8")) for p in packets))


class WriteTimingTests(TestCase):
    def setUp(self):
        self.server = SocketIOServer(reactor)
        self.addCleanup(lambda: defer.ensureDeferred(self.server.close()))
        self.ns = self.server.namespace("/")
        self.ns.on_connect = lambda socket, auth: socket.emit("auth", auth)
        self.seen: list = []
        self.url = serve(self, self.server.resource).replace("http", "ws", 1)
        self.url += "/socket.io/?EIO=4&transport=websocket"

    @defer.inlineCallbacks
    def connect(self):
        ws = yield deferToThread(websocket.create_connection, self.url, timeout=READ_TIMEOUT)
        self.addCleanup(deferToThread, ws.close)
        client = RawFrames(ws)
        opened = yield deferToThread(client.read, 1)
        self.assertEqual(opened[0][0], "0")
        return client

    def on(self, event, handler):
        self.ns.on(event, handler)

    @defer.inlineCallbacks
    def test_connect_answer_and_connect_emits_are_written_at_once(self):
        """``40{sid}`` and what on_connect emitted are on the wire before the next packet of the
        same read is handled (no end-of-turn flush)."""
        client = yield self.connect()
        self.on("check", lambda socket: self.seen.append(client.available()))
        client.send("40", '42["check"]')
        yield self.wait_seen(1)
        connected, auth = self.seen[0]
        self.assertEqual(json.loads(connected[2:]).keys(), {"sid"})
        self.assertEqual(auth, '42["auth",{}]')

    @defer.inlineCallbacks
    def test_emits_to_one_socket_each_leave_before_the_next(self):
        """Two ``socket.emit`` in one handler: the first is readable before the second is made,
        and it comes alone (its own write)."""
        client = yield self.connect()

        def handler(socket):
            self.seen.append(client.available())
            socket.emit("a", 1)
            self.seen.append(client.read(1))
            socket.emit("b", 2)
            self.seen.append(client.read(1))

        self.on("two", handler)
        client.send("40", '42["two"]')
        yield self.wait_seen(3)
        self.assertEqual(len(self.seen[0]), 2)  # the connect answer and "auth"
        self.assertEqual(self.seen[1:], [['42["a",1]'], ['42["b",2]']])

    @defer.inlineCallbacks
    def test_ack_is_written_at_once(self):
        """The ack of an event is readable when the next packet of the same read is handled."""
        client = yield self.connect()
        self.on("echo", lambda socket, value: value)
        self.on("check", lambda socket: self.seen.append(client.available()))
        client.send("40", '421["echo","x"]', '42["check"]')
        yield self.wait_seen(1)
        self.assertEqual(self.seen[0][2:], ['431["x"]'])

    @defer.inlineCallbacks
    def test_broadcasts_wait_for_the_end_of_the_turn_and_share_one_write(self):
        """Broadcasts of one turn are not on the wire inside the handler; they come together."""
        client = yield self.connect()
        client.send("40")
        self.assertEqual(len((yield deferToThread(client.read, 2))), 2)

        def handler(socket):
            self.ns.emit("x", 1)
            self.ns.emit("y", 2)
            self.seen.append(client.available())

        self.on("shout", handler)
        client.send('42["shout"]')
        yield self.wait_seen(1)
        self.assertEqual(self.seen[0], [])
        # One write: the first read that returns anything returns both.
        readable, _, _ = yield deferToThread(select.select, [client.sock], [], [], READ_TIMEOUT)
        self.assertTrue(readable)
        client.buffer += client.sock.recv(65536)
        self.assertEqual(client._take(), ['42["x",1]', '42["y",2]'])

    @defer.inlineCallbacks
    def test_own_packet_goes_after_the_broadcasts_queued_before_it(self):
        """A broadcast queued in this turn, then an emit to the socket: both now, in order."""
        client = yield self.connect()
        client.send("40")
        self.assertEqual(len((yield deferToThread(client.read, 2))), 2)

        def handler(socket):
            self.ns.emit("x", 1)
            socket.emit("a", 2)
            self.seen.append(client.read(2))

        self.on("mixed", handler)
        client.send('42["mixed"]')
        yield self.wait_seen(1)
        self.assertEqual(self.seen[0], ['42["x",1]', '42["a",2]'])

    @defer.inlineCallbacks
    def bus_broadcast_seen_next_turn(self, hooked: bool):
        """What the client can read on the reactor turn after a bus pass in which a subscriber
        broadcast (a C{callLater(0)} made before the broadcast runs then, before the outbox's)."""
        bus = LocalBus("writes", reactor)
        self.addCleanup(bus.close)
        if hooked:
            bus.after_delivery(self.server.flush_turn)
        client = yield self.connect()
        client.send("40")
        self.assertEqual(len((yield deferToThread(client.read, 2))), 2)

        def subscriber(envelope):
            reactor.callLater(0, lambda: self.seen.append(client.available()))
            self.ns.emit("x", envelope["event"]["n"])

        bus.subscribe("t", subscriber)
        self.on("say", lambda socket: bus.publish("t", {"type": "x", "n": 1}))
        client.send('42["say"]')
        yield self.wait_seen(1)
        on_next_turn = self.seen[0]
        later = yield deferToThread(client.read, 1 - len(on_next_turn))
        self.assertEqual(on_next_turn + later, ['42["x",1]'])
        return on_next_turn

    @defer.inlineCallbacks
    def test_broadcast_of_a_bus_pass_is_written_in_that_pass(self):
        """With C{flush_turn} hooked to the bus's passes, a subscriber's broadcast is on the wire
        when the pass ends, not one C{callLater(0)} later (after another poll of every socket)."""
        seen = yield self.bus_broadcast_seen_next_turn(hooked=True)
        self.assertEqual(seen, ['42["x",1]'])

    @defer.inlineCallbacks
    def test_broadcast_of_a_bus_pass_without_the_hook_waits_a_turn(self):
        """Without the hook the same broadcast is still queued on the next turn (what the test
        above tells apart)."""
        seen = yield self.bus_broadcast_seen_next_turn(hooked=False)
        self.assertEqual(seen, [])

    @defer.inlineCallbacks
    def wait_seen(self, count: int):
        """Until the handlers recorded ``count`` observations (they run in the reactor)."""
        for _ in range(int(READ_TIMEOUT / 0.01)):
            if len(self.seen) >= count:
                return
            yield wait(0.01)
        self.fail(f"handlers saw only {self.seen}")
