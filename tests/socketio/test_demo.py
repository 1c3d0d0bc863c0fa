"""The conformance reference app, ``python -m ilchat.socketio.demo``."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time

import requests
import socketio
import websocket
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ilchat.socketio.demo import build_site
from tests.engineio.support import handshake, http


class DemoTests(TestCase):
    def setUp(self):
        self.base = self.serve()

    def serve(self, **options) -> str:
        """Serve the demo (with ``--engineio-echo``) on a free port; its base URL."""
        site, self.server, self.echo = build_site(reactor, engineio_echo=True, **options)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        server, echo = self.server, self.echo

        async def close():
            await server.close()
            echo.close()

        self.addCleanup(lambda: defer.ensureDeferred(close()))
        return f"http://127.0.0.1:{port.getHost().port}"

    @defer.inlineCallbacks
    def test_handshake_has_the_test_suite_timings(self):
        """pingInterval 300, pingTimeout 200 and maxPayload 1000000, as the suites expect."""
        _, info = yield handshake(self.base)
        self.assertEqual(
            (info["pingInterval"], info["pingTimeout"], info["maxPayload"]), (300, 200, 1000000)
        )

    @defer.inlineCallbacks
    def test_demo_behaviour_with_python_socketio(self):
        """auth on connect, message-back, acks, /custom, other namespaces refused; pings kept."""

        def scenario():
            got = {}
            sio = socketio.Client(reconnection=False)
            sio.on("auth", lambda a: got.setdefault("auth", a))
            sio.on("auth", lambda a: got.setdefault("custom_auth", a), namespace="/custom")
            sio.on("message-back", lambda *a: got.setdefault("back", a))
            sio.connect(self.base, namespaces=["/", "/custom"], auth={"k": 1},
                        transports=["websocket"], wait_timeout=5)
            sio.emit("message", (1, b"\x02", "3"))
            got["ack"] = sio.call("message-with-ack", ("x", b"\x00"), timeout=5)
            sio.sleep(1.0)  # several 300 ms ping periods: the python client pongs in time
            got["still_connected"] = sio.connected
            sio.disconnect()
            other = socketio.Client(reconnection=False)
            other.on("connect_error", lambda d: got.setdefault("refused", d), namespace="/other")
            try:
                other.connect(self.base, namespaces=["/other"], transports=["websocket"],
                              wait_timeout=5)
            except socketio.exceptions.ConnectionError:
                pass
            other.disconnect()
            return got

        got = yield deferToThread(scenario)
        self.assertEqual(got["auth"], {"k": 1})
        self.assertEqual(got["custom_auth"], {"k": 1})
        self.assertEqual(got["back"], (1, b"\x02", "3"))
        self.assertEqual(got["ack"], ("x", b"\x00"))
        self.assertTrue(got["still_connected"])
        self.assertEqual(got["refused"], {"message": "Invalid namespace"})

    @defer.inlineCallbacks
    def test_auth_is_emitted_a_while_after_the_connect_answer(self):
        """The ``auth`` emit comes ``auth_delay`` after the CONNECT answer, not in the kernel
        with it (the Socket.IO suite's client loses a frame that shares a TCP read with the one
        before); a namespace left before then gets none (the emit is cancelled)."""
        url = self.serve(auth_delay=0.2).replace("http", "ws", 1)
        url += "/socket.io/?EIO=4&transport=websocket"

        def frames(ws, until):
            """Text frames until ``until`` (pings answered, so the session stays)."""
            got = []
            while (left := until - time.monotonic()) > 0:
                if not select.select([ws.sock], [], [], left)[0]:
                    break
                frame = ws.recv()
                if frame == "2":
                    ws.send("3")
                else:
                    got.append(frame)
            return got

        def scenario():
            ws = websocket.create_connection(url, timeout=5)
            try:
                ws.recv()  # Engine.IO open
                ws.send("40")
                connected = ws.recv()
                start = time.monotonic()
                auth_in_kernel = bool(select.select([ws.sock], [], [], 0)[0])
                auth = ws.recv()
                waited = time.monotonic() - start
                ws.send("40/custom,")
                custom = ws.recv()
                ws.send("41/custom,")
                later = frames(ws, time.monotonic() + 0.4)
                return connected, auth_in_kernel, auth, waited, custom, later
            finally:
                ws.close()

        connected, auth_in_kernel, auth, waited, custom, later = yield deferToThread(scenario)
        self.assertTrue(connected.startswith('40{"sid":'), connected)
        self.assertFalse(auth_in_kernel)
        self.assertEqual(auth, '42["auth",{}]')
        self.assertGreater(waited, 0.1)
        self.assertTrue(custom.startswith('40/custom,{"sid":'), custom)
        self.assertEqual(later, [])

    @defer.inlineCallbacks
    def test_engineio_echo_endpoint(self):
        """``--engineio-echo`` echoes every Engine.IO message at /engine.io/, text and binary."""
        sid, _ = yield handshake(self.base, "/engine.io/")
        url = f"{self.base}/engine.io/?EIO=4&transport=polling&sid={sid}"
        yield http("POST", url, b"4hello\x1ebAQI=")
        response = yield http("GET", url)
        self.assertEqual(response.text, "4hello\x1ebAQI=")

        def over_websocket():
            ws = websocket.create_connection(
                self.base.replace("http", "ws") + "/engine.io/?EIO=4&transport=websocket", timeout=5
            )
            ws.recv()
            ws.send_binary(b"\x09")
            echoed = ws.recv()
            ws.close()
            return echoed

        self.assertEqual((yield deferToThread(over_websocket)), b"\x09")


class ConformanceTests(TestCase):
    """Exchanges of the official Socket.IO protocol test suite, frame by frame, on the demo."""

    def setUp(self):
        site, self.server, _ = build_site(reactor)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.url = f"ws://127.0.0.1:{port.getHost().port}/socket.io/?EIO=4&transport=websocket"

        async def close():
            await self.server.close()

        self.addCleanup(lambda: defer.ensureDeferred(close()))

    def exchange(self, connect: str | None, *frames, expect: int = 1):
        """Open a websocket, optionally connect a namespace, send frames, collect replies."""

        def run():
            ws = websocket.create_connection(self.url, timeout=5)
            try:
                ws.recv()  # Engine.IO open
                if connect is not None:
                    ws.send(connect)
                    ws.recv()  # CONNECT answer
                    ws.recv()  # "auth" event
                for frame in frames:
                    (ws.send_binary if isinstance(frame, bytes) else ws.send)(frame)
                replies = []
                while len(replies) < expect:
                    try:
                        reply = ws.recv()
                    except (websocket.WebSocketConnectionClosedException, ConnectionError):
                        replies.append("<closed>")
                        break
                    if reply == "":
                        replies.append("<closed>")
                        break
                    if reply != "2":  # pings
                        replies.append(reply)
                return replies
            finally:
                ws.close()

        return deferToThread(run)

    @defer.inlineCallbacks
    def test_binary_event_comes_back_with_its_attachments(self):
        """``452-["message",ph0,ph1]`` + 2 buffers -> ``452-["message-back",ph0,ph1]`` + buffers."""
        replies = yield self.exchange(
            "40",
            '452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            b"\x01\x02\x03",
            b"\x04\x05\x06",
            expect=3,
        )
        self.assertEqual(
            replies,
            [
                '452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
                b"\x01\x02\x03",
                b"\x04\x05\x06",
            ],
        )

    @defer.inlineCallbacks
    def test_acks_keep_their_ids(self):
        """``42456[...]`` is acked ``43456[...]``; a binary one ``462-789[...]``."""
        replies = yield self.exchange("40", '42456["message-with-ack",1,"2",{"3":[false]}]')
        self.assertEqual(replies, ['43456[1,"2",{"3":[false]}]'])
        replies = yield self.exchange(
            "40",
            '452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
            b"\x01",
            b"\x02",
            expect=3,
        )
        self.assertEqual(
            replies,
            ['462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]', b"\x01", b"\x02"],
        )

    @defer.inlineCallbacks
    def test_namespaces(self):
        """Unknown namespace refused; disconnecting /custom leaves the main namespace working."""
        replies = yield self.exchange(None, "40/random")
        self.assertEqual(replies, ['44/random,{"message":"Invalid namespace"}'])
        replies = yield self.exchange(None, '40/custom,{"token":"abc"}', expect=2)
        self.assertTrue(replies[0].startswith('40/custom,{"sid":"'), replies)
        self.assertEqual(replies[1], '42/custom,["auth",{"token":"abc"}]')
        # /custom is left before its "auth" emit is due (AUTH_DELAY): none comes.
        replies = yield self.exchange(
            "40", "40/custom", "41/custom", '42["message","message to main namespace"]', expect=2
        )
        self.assertEqual(replies[1], '42["message-back","message to main namespace"]')

    @defer.inlineCallbacks
    def test_invalid_packets_close_the_connection(self):
        """Unknown type, bad payload, bad ack id, bad handshake: the websocket is closed."""
        for frame in ("4abc", "42{}", '42abc["message-with-ack",1]'):
            replies = yield self.exchange("40", frame)
            self.assertEqual(replies, ["<closed>"], frame)
        replies = yield self.exchange(None, "4abc")
        self.assertEqual(replies, ["<closed>"])


class DemoProcessTests(TestCase):
    def test_module_runs_and_serves(self):
        """``python -m ilchat.socketio.demo --port 0`` starts and answers a handshake."""

        def run():
            proc = subprocess.Popen(
                [sys.executable, "-m", "ilchat.socketio.demo", "--port", "0"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            try:
                line = proc.stdout.readline()
                port = int(line.rsplit(":", 1)[1])
                body = requests.get(
                    f"http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling", timeout=5
                ).text
                return json.loads(body[1:])
            finally:
                proc.terminate()
                proc.wait(5)

        d = deferToThread(run)
        d.addCallback(lambda info: self.assertEqual(info["pingInterval"], 300))
        return d
