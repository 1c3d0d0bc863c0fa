"""Socket.IO v5 at the packet level, over real long-polling requests.

Malformed packets close that one Engine.IO session; the server goes on serving others.
"""

from __future__ import annotations

import base64

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from ilchat.socketio import ConnectionRefused, SocketIOServer
from tests.engineio.support import handshake, http, serve, wait
from tests.socketio.support import serve_app


class PollingClient:
    """A hand-driven polling client speaking raw packets."""

    def __init__(self, base: str, sid: str) -> None:
        self.url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"

    def post(self, *packets: str):
        return http("POST", self.url, "\x1e".join(packets).encode())

    @defer.inlineCallbacks
    def get(self) -> list[str]:
        response = yield http("GET", self.url)
        if response.code != 200:
            return response
        return response.text.split("\x1e")


@defer.inlineCallbacks
def connected_client(base: str, namespace_packet: str = "40"):
    sid, _ = yield handshake(base)
    client = PollingClient(base, sid)
    yield client.post(namespace_packet)
    packets = yield client.get()
    return client, sid, packets


class NamespaceTests(TestCase):
    @defer.inlineCallbacks
    def test_connect_answers_sid_then_app_events(self):
        """``40`` gets ``40{"sid":...}`` (no namespace prefix for ``/``), then ``auth``."""
        base, _ = serve_app(self)
        client, _, packets = yield connected_client(base)
        self.assertTrue(packets[0].startswith('40{"sid":"'), packets)
        if len(packets) == 1:
            packets += yield client.get()
        self.assertEqual(packets[1], '42["auth",{}]')

    @defer.inlineCallbacks
    def test_connect_to_other_namespace_with_auth(self):
        """``40/custom,{auth}`` gets ``40/custom,{"sid":...}`` and the auth echoed."""
        base, _ = serve_app(self)
        client, _, packets = yield connected_client(base, '40/custom,{"token":"t"}')
        self.assertTrue(packets[0].startswith('40/custom,{"sid":"'), packets)
        if len(packets) == 1:
            packets += yield client.get()
        self.assertEqual(packets[1], '42/custom,["auth",{"token":"t"}]')

    @defer.inlineCallbacks
    def test_unknown_namespace_gets_connect_error(self):
        """A namespace nobody defined gets ``44/nope,{"message":"Invalid namespace"}``."""
        base, _ = serve_app(self)
        _, _, packets = yield connected_client(base, "40/nope,")
        self.assertEqual(packets, ['44/nope,{"message":"Invalid namespace"}'])

    @defer.inlineCallbacks
    def test_refused_connection_carries_message_and_data(self):
        """``ConnectionRefused(message, data)`` becomes CONNECT_ERROR with both."""
        base, _ = serve_app(self)
        _, _, packets = yield connected_client(base, "40/private,")
        self.assertEqual(
            packets, ['44/private,{"message":"Not allowed here","data":{"reason":"test"}}']
        )

    @defer.inlineCallbacks
    def test_client_disconnect_packet_ends_the_socket(self):
        """``41`` ends the namespace socket with "client namespace disconnect"."""
        base, app = serve_app(self)
        client, _, _ = yield connected_client(base)
        yield client.post("41")
        self.assertEqual([r for _, _, r in app.disconnected], ["client namespace disconnect"])

    @defer.inlineCallbacks
    def test_ack_ids_and_binary_over_polling(self):
        """An event with an ack id is acked with that id; binary goes as ``b`` + base64."""
        base, _ = serve_app(self)
        client, _, _ = yield connected_client(base)
        blob = base64.b64encode(b"\x00\x01").decode()
        yield client.post('451-17["message-with-ack",{"_placeholder":true,"num":0}]', "b" + blob)
        packets = []
        for _ in range(3):
            packets += yield client.get()
            if any(p.startswith("46") for p in packets):
                break
        self.assertIn('461-17[{"_placeholder":true,"num":0}]', packets)
        self.assertEqual(packets[packets.index('461-17[{"_placeholder":true,"num":0}]') + 1],
                         "b" + blob)


class MalformedInputTests(TestCase):
    @defer.inlineCallbacks
    def test_malformed_packets_close_only_their_session(self):
        """Bad types, bad JSON, reserved events, stray binary: that session is closed."""
        base, app = serve_app(self)
        stray = "b" + base64.b64encode(b"x").decode()
        cases = [
            ["49"],
            ["4x"],
            ['42["message",'],
            ["42{}"],
            ['42["disconnect"]'],
            ["40[1]"],
            ['451-["message",{"_placeholder":true,"num":0}]', '42["message"]'],
            ['451-["message",{"_placeholder":true,"num":5}]', stray],
            [stray],
            ['42["message",NaN]'],
        ]
        for packets in cases:
            client, sid, _ = yield connected_client(base)
            yield client.post(*packets)
            response = yield client.get()
            # The session is gone: its sid is unknown now.
            self.assertEqual(getattr(response, "code", None), 400, packets)
            self.assertEqual(response.json()["code"], 1, packets)
        # The server still serves a well-behaved client.
        client, _, _ = yield connected_client(base)
        yield client.post('421["message-with-ack","ok"]')
        packets = yield client.get()
        self.assertIn('431["ok"]', packets)

    @defer.inlineCallbacks
    def test_unknown_ack_id_is_ignored(self):
        """An ACK nobody waits for is ignored, as socket.io does; the socket stays up."""
        base, _ = serve_app(self)
        client, sid, _ = yield connected_client(base)
        yield client.post('399["late"]', '3["no id"]', '42["message-with-ack","x"]')
        yield client.post('422["message-with-ack","still"]')
        packets = []
        while '432["still"]' not in packets:
            packets += yield client.get()
        self.assertIn('432["still"]', packets)

    @defer.inlineCallbacks
    def test_invalid_state_closes_the_connection(self):
        """As socket.io's client.ts: a packet for an unjoined namespace, a second CONNECT or a
        CONNECT_ERROR from the client closes that connection (and only that one)."""
        base, app = serve_app(self)
        for packet in ('42/custom,["message","x"]', "40", '44{"message":"x"}'):
            client, sid, _ = yield connected_client(base)
            yield client.post(packet)
            packets = yield client.get()
            if not isinstance(packets, list):
                self.assertEqual(packets.code, 400)
            else:
                self.assertEqual(packets[-1], "1", packet)
        self.assertEqual(
            [r for _, _, r in app.disconnected], ["forced server close"] * 3
        )


class AsyncConnectTests(TestCase):
    def setUp(self):
        self.server = SocketIOServer(reactor)
        self.base = serve(self, self.server.resource)
        self.addCleanup(lambda: defer.ensureDeferred(self.server.close()))

        async def welcome(socket, auth):
            await wait(0.05)
            socket.join("later")
            socket.emit("welcome", auth)

        async def refuse(socket, auth):
            await wait(0.05)
            raise ConnectionRefused("Go away")

        self.server.namespace("/async").on_connect = welcome
        self.server.namespace("/async-refuse").on_connect = refuse

    @defer.inlineCallbacks
    def test_coroutine_on_connect_answers_after_it_finishes(self):
        """CONNECT is answered once an async on_connect returns; its emits follow the answer."""
        client, _, packets = yield connected_client(self.base, '40/async,{"a":1}')
        while len(packets) < 2:
            packets += yield client.get()
        self.assertTrue(packets[0].startswith('40/async,{"sid":"'), packets)
        self.assertEqual(packets[1], '42/async,["welcome",{"a":1}]')
        self.assertEqual(len(self.server.namespace("/async").room_sids("later")), 1)

    @defer.inlineCallbacks
    def test_coroutine_on_connect_can_refuse(self):
        """ConnectionRefused raised after an await becomes CONNECT_ERROR."""
        _, _, packets = yield connected_client(self.base, "40/async-refuse,")
        self.assertEqual(packets, ['44/async-refuse,{"message":"Go away"}'])
        self.assertEqual(self.server.namespace("/async-refuse").sockets, {})


class ConnectTimeoutTests(TestCase):
    @defer.inlineCallbacks
    def test_session_without_namespace_is_closed_after_connect_timeout(self):
        """No CONNECT within connect_timeout closes the Engine.IO session; no timer is left."""
        clock = task.Clock()
        server = SocketIOServer(clock, connect_timeout=45.0, ping_interval=100.0)
        base = serve(self, server.resource)
        idle, _ = yield handshake(base)
        _, active, _ = yield connected_client(base)
        clock.advance(44.9)
        self.assertIn(idle, server.engineio.sessions)
        clock.advance(0.2)
        self.assertNotIn(idle, server.engineio.sessions)
        self.assertIn(active, server.engineio.sessions)
        yield server.close()
        self.assertEqual(clock.getDelayedCalls(), [])
