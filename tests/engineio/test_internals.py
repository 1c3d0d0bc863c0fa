"""The assumptions of ``ilchat.engineio._internals`` about Autobahn and Twisted, checked.

Each test names one thing the module relies on that is not Autobahn's or Twisted's public API (a
private method and its signature, an attribute of a live connection, a module global, the
installed version against ``setup.cfg``'s range) or one behaviour it must share with Autobahn (the
fast frame reader and Autobahn's parser hand on the same messages and close with the same codes).
An upgrade that breaks an assumption fails here, by name, instead of somewhere in the fan-out.
"""

from __future__ import annotations

import configparser
import inspect
import json
import os
import pprint
import socket
import struct

import autobahn
import autobahn.websocket.protocol as autobahn_protocol
import websocket
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol
from packaging.requirements import Requirement
from twisted.internet import defer, reactor, tcp
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websocket import ABNF

from ilchat.engineio import _internals
from ilchat.engineio._internals import (
    FastWebSocketServerFactory,
    FastWebSocketServerProtocol,
    _ConnectionTimers,
    _WriteWatch,
)
from tests.engineio.support import serve, wait
from tests.engineio.test_server import ServerTestCase, ws_url

SETUP_CFG = os.path.join(os.path.dirname(__file__), "..", "..", "setup.cfg")


def _parameters(function) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


class VersionTests(TestCase):
    def test_installed_autobahn_is_in_the_pinned_range(self):
        """``setup.cfg`` pins Autobahn to the versions the internals were written for."""
        config = configparser.ConfigParser()
        config.read(SETUP_CFG)
        requirements = [
            Requirement(line.strip())
            for line in config["options"]["install_requires"].splitlines()
            if line.strip()
        ]
        (pin,) = [r for r in requirements if r.name == "autobahn"]
        # A range with an upper bound: a newer Autobahn is only taken once this file passes with it.
        self.assertTrue(any(spec.operator in ("<", "<=", "~=", "==") for spec in pin.specifier), pin)
        self.assertIn(autobahn.__version__, pin.specifier, f"autobahn {autobahn.__version__} vs {pin}")


class PrivateNamesTests(TestCase):
    """The private methods the fast protocol overrides or calls, with the signatures it uses."""

    def test_overridden_and_called_methods_keep_their_signatures(self):
        expected = {
            "_connectionMade": [("self", inspect.Parameter.empty)],
            "processData": [("self", inspect.Parameter.empty)],
            "consumeData": [("self", inspect.Parameter.empty)],
            "_invalid_payload": [("self", inspect.Parameter.empty), ("reason", inspect.Parameter.empty)],
            "sendData": [("self", inspect.Parameter.empty), ("sync", False), ("chopsize", None)],
            "sendCloseFrame": [("self", inspect.Parameter.empty), ("code", None), ("reasonUtf8", None), ("isReply", False)],
            "dropConnection": [("self", inspect.Parameter.empty), ("abort", False)],
        }
        for name, parameters in expected.items():
            have = _parameters(getattr(WebSocketProtocol, name))
            if name == "sendData":
                have = [have[0]] + have[2:]  # data (no default), then the ones we pass on
            self.assertEqual(have, parameters, name)

    def test_prepared_message_constructor_and_wire_bytes(self):
        self.assertEqual(
            [n for n, _ in _parameters(PreparedMessage.__init__)],
            ["self", "payload", "isBinary", "applyMask", "doNotCompress"],
        )
        frame = _internals.prepare_frame(b"4hello", False)
        self.assertEqual(frame.payloadHybi, b"\x81\x064hello")
        self.assertEqual(_internals.frame_size(frame), 8)
        binary = _internals.prepare_frame(b"\x00" * 200, True)
        self.assertEqual(binary.payloadHybi[:4], b"\x82\x7e\x00\xc8")

    def test_connection_made_formats_its_options_with_the_module_pformat(self):
        """The lazy-pformat swap replaces ``autobahn.websocket.protocol.pformat`` during the call."""
        self.assertIs(autobahn_protocol.pformat, pprint.pformat)
        self.assertIn("pformat(", inspect.getsource(WebSocketProtocol._connectionMade))

    def test_connection_timers_come_from_the_factory_batched_timer(self):
        """Autobahn starts its handshake timers on ``factory._batched_timer.call_later``."""
        source = inspect.getsource(autobahn_protocol)
        self.assertIn("self.factory._batched_timer.call_later(", source)


class LiveConnectionTests(ServerTestCase):
    """What the fast protocol reads on a real, open connection."""

    @defer.inlineCallbacks
    def test_open_connection_has_the_attributes_the_fast_paths_read(self):
        server = self.make_server()
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        ws = yield deferToThread(websocket.create_connection, ws_url(base), timeout=5)
        self.addCleanup(deferToThread, ws.close)
        sid = json.loads((yield deferToThread(ws.recv))[1:])["sid"]
        proto = server.sessions[sid]._ws
        self.assertIsInstance(proto, FastWebSocketServerProtocol)
        self.assertEqual(proto.state, proto.STATE_OPEN)
        self.assertIsNone(proto._perMessageCompress)
        self.assertFalse(proto.send_queue)
        self.assertFalse(proto.logOctets)
        self.assertIsInstance(proto.trafficStats.outgoingOctetsWireLevel, int)
        self.assertIsNone(proto.current_frame)
        self.assertFalse(proto.inside_message)
        self.assertEqual(proto.data, b"")
        self.assertEqual(proto.maxMessagePayloadSize, server.max_payload)
        self.assertNotEqual(proto.STATE_CLOSING, proto.STATE_OPEN)
        transport = proto.transport
        self.assertIsInstance(transport, tcp.Connection)
        self.assertIs(transport.reactor, reactor)
        self.assertIs(proto._direct, transport.socket)
        self.assertIsInstance(transport.socket, socket.socket)
        # The direct write goes only where these say nothing is queued ahead and no TLS is on.
        self.assertFalse(transport.TLS)
        self.assertTrue(transport.connected)
        self.assertFalse(transport.disconnecting)
        self.assertIsInstance(transport.dataBuffer, bytes)
        self.assertIsInstance(transport._tempDataBuffer, list)
        self.assertIsInstance(transport.producer, _WriteWatch)
        # The handshake timer Autobahn started went to our timers, and is gone once it is done.
        self.assertIsInstance(server.ws_factory._batched_timer, _ConnectionTimers)
        self.assertEqual(server.ws_factory.timers.pending, set())


class _FastRecorder(FastWebSocketServerProtocol):
    def frame_received(self, frame):
        self.frames_left -= 1
        self.factory.received.append(frame)

    def onMessage(self, payload, isBinary):
        self.frame_received(payload if isBinary else payload.decode("utf-8"))


class _PlainRecorder(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.factory.received.append(payload if isBinary else payload.decode("utf-8"))


def _client_frame(data: bytes | str, opcode: int = ABNF.OPCODE_TEXT, fin: int = 1) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return ABNF(fin, 0, 0, 0, opcode, 1, data).format()


def _frames() -> list[bytes]:
    """Text and binary frames of every length form, with a ping and a fragment between."""
    frames = []
    for size in (0, 1, 2, 3, 4, 5, 124, 125, 126, 127, 200, 65535, 65536, 70_000):
        frames.append(_client_frame("4" + "é" * (size // 2) + "x" * (size % 2)))
        frames.append(_client_frame(bytes(range(256)) * (size // 256) + bytes(size % 256), ABNF.OPCODE_BINARY))
    frames.insert(5, _client_frame(b"ping", ABNF.OPCODE_PING))
    frames.insert(9, _client_frame("4first,", fin=0) + _client_frame("second", ABNF.OPCODE_CONT))
    return frames


class AgreementTests(TestCase):
    """The fast reader and Autobahn's own parser, fed the same bytes on real connections."""

    max_payload = 100_000

    def _serve(self, factory_class, protocol):
        if factory_class is FastWebSocketServerFactory:
            factory = FastWebSocketServerFactory(reactor)
        else:
            factory = WebSocketServerFactory(reactor=reactor)
            # Cancellable handshake timers (txaio's would outlive the test); the parser is Autobahn's.
            factory._batched_timer = factory.timers = _ConnectionTimers(reactor)
        factory.protocol = protocol
        factory.received = []
        factory.setProtocolOptions(
            maxMessagePayloadSize=self.max_payload,
            maxFramePayloadSize=self.max_payload,
            autoPingInterval=0,
            closeHandshakeTimeout=1,
            failByDrop=False,
        )
        self.addCleanup(factory.timers.cancel_all)
        base = serve(self, WebSocketResource(factory), b"ws")
        return factory, base.replace("http://", "ws://") + "/ws"

    def _exchange(self, url: str, stream: bytes) -> list[tuple[int, bytes]]:
        """Send C{stream} in odd-sized pieces; everything the server sends back until its close."""
        ws = websocket.create_connection(url, timeout=10)
        try:
            ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for start in range(0, len(stream), 7001):
                ws.sock.sendall(stream[start : start + 7001])
            got = []
            while True:
                opcode, data = ws.recv_data(control_frame=True)
                got.append((opcode, data[:2] if opcode == ABNF.OPCODE_CLOSE else data))
                if opcode == ABNF.OPCODE_CLOSE:
                    return got
        finally:
            ws.close()

    @defer.inlineCallbacks
    def _compare(self, stream: bytes) -> tuple[list, list]:
        fast_calls = []
        real_reader = _internals.read_data_frame

        def counting(buf, max_payload):
            frame = real_reader(buf, max_payload)
            if frame is not None:
                fast_calls.append(frame[2])
            return frame

        self.patch(_internals, "read_data_frame", counting)
        fast, fast_url = self._serve(FastWebSocketServerFactory, _FastRecorder)
        plain, plain_url = self._serve(WebSocketServerFactory, _PlainRecorder)
        fast_wire = yield deferToThread(self._exchange, fast_url, stream)
        plain_wire = yield deferToThread(self._exchange, plain_url, stream)
        yield wait(0.05)
        self.assertTrue(fast_calls, "the fast path never took a frame")
        self.assertEqual(fast.received, plain.received)
        self.assertEqual(fast_wire, plain_wire)
        return fast.received, fast_wire

    @defer.inlineCallbacks
    def test_valid_frames_then_an_oversized_one(self):
        """The same messages in the same order, the same pong, then the same 1009 close."""
        stream = b"".join(_frames()) + _client_frame("4" + "o" * self.max_payload)
        received, wire = yield self._compare(stream)
        self.assertEqual(len(received), 29)
        self.assertIn("4first,second", received)
        self.assertEqual(wire[0], (ABNF.OPCODE_PONG, b"ping"))
        self.assertEqual(wire[-1], (ABNF.OPCODE_CLOSE, struct.pack("!H", 1009)))

    @defer.inlineCallbacks
    def test_invalid_utf8_closes_with_1007(self):
        stream = _client_frame("4before") + _client_frame(b"4\xff\xfe") + _client_frame("4after")
        received, wire = yield self._compare(stream)
        self.assertEqual(received, ["4before"])
        self.assertEqual(wire, [(ABNF.OPCODE_CLOSE, struct.pack("!H", 1007))])

    @defer.inlineCallbacks
    def test_unmasked_frame_is_a_protocol_error(self):
        unmasked = ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, b"4plain").format()
        received, wire = yield self._compare(_client_frame("4ok") + unmasked)
        self.assertEqual(received, ["4ok"])
        self.assertEqual(wire, [(ABNF.OPCODE_CLOSE, struct.pack("!H", 1002))])
