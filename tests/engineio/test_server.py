"""Engine.IO v4 server over real loopback HTTP and websockets, driven at the protocol level.

Every error case is checked for its status and ``{"code","message"}`` body, and for the server
carrying on with other sessions afterwards.
"""

from __future__ import annotations

import json

import requests
import websocket
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource

from ilchat.engineio import responses as responses_module
from ilchat.engineio import session as session_module
from ilchat.engineio.outgoing import OutgoingPacket
from ilchat.engineio.server import EngineIOServer
from tests.engineio.support import RawHTTP, handshake, http, serve, wait


class Echo:
    """Echoes every message; records how the session ended."""

    closed: list = []

    def __init__(self, session):
        self.session = session

    def message_received(self, data):
        self.session.send_message(data)

    def session_closed(self, reason):
        Echo.closed.append((self.session.sid, reason))


class ServerTestCase(TestCase):
    """Serves an echoing Engine.IO server at /socket.io on a loopback port."""

    server_options: dict = {}

    def setUp(self):
        Echo.closed = []
        self.server = self.make_server()
        self.base = serve(self, self.server.resource)
        self.url = self.base + "/socket.io/"
        self.addCleanup(self._close_all)

    def make_server(self, **options):
        kwargs = dict(self.server_options)
        kwargs.update(options)
        return EngineIOServer(reactor, Echo, **kwargs)

    def _close_all(self):
        self.server.close()

    @defer.inlineCallbacks
    def assert_still_serving(self):
        """A fresh session can still handshake and echo."""
        sid, _ = yield handshake(self.base)
        response = yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", b"4still")
        self.assertEqual(response.body, b"ok")
        response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        self.assertEqual(response.text, "4still")

    @defer.inlineCallbacks
    def assert_error(self, response, status, code, message):
        self.assertEqual(response.code, status, response.body)
        self.assertEqual(response.json(), {"code": code, "message": message})
        yield self.assert_still_serving()


def ws_url(base: str, sid: str | None = None) -> str:
    url = base.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    return url + (f"&sid={sid}" if sid else "")


class HandshakeTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_polling_handshake_sends_open_packet_with_defaults(self):
        """The first GET answers ``0{...}`` with socket.io v4's defaults and upgrades to websocket."""
        response = yield http(
            "GET", self.url + "?EIO=4&transport=polling", headers={"Origin": "https://ilias.test"}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("content-type"), "text/plain; charset=UTF-8")
        self.assertEqual(response.header("access-control-allow-origin"), "https://ilias.test")
        self.assertEqual(response.header("access-control-allow-credentials"), "true")
        self.assertEqual(response.text[0], "0")
        info = json.loads(response.text[1:])
        self.assertEqual(
            {k: v for k, v in info.items() if k != "sid"},
            {"upgrades": ["websocket"], "pingInterval": 25000, "pingTimeout": 20000,
             "maxPayload": 1000000},
        )
        self.assertGreaterEqual(len(info["sid"]), 20)

    @defer.inlineCallbacks
    def test_sid_prefix_starts_every_session_id(self):
        """``sid_prefix`` (server.cfg ``redis.route``) starts the id; the session works with it."""
        self.server.sid_prefix = "n2."
        sid, _ = yield handshake(self.base)
        self.assertTrue(sid.startswith("n2."), sid)
        self.assertGreaterEqual(len(sid), 23)
        response = yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", b"4routed")
        self.assertEqual(response.body, b"ok")
        response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        self.assertEqual(response.text, "4routed")

    @defer.inlineCallbacks
    def test_resource_answers_without_trailing_slash(self):
        """``/socket.io`` (no slash) is the same resource as ``/socket.io/``."""
        response = yield http("GET", self.base + "/socket.io?EIO=4&transport=polling")
        self.assertEqual(response.text[0], "0")

    @defer.inlineCallbacks
    def test_websocket_handshake_has_no_upgrades_and_echoes(self):
        """A direct websocket gets ``upgrades: []`` and exchanges one packet per frame."""

        def client():
            ws = websocket.create_connection(ws_url(self.base), timeout=5)
            try:
                opened = ws.recv()
                ws.send("4héllo 🎉")
                text = ws.recv()
                ws.send_binary(b"\x00\xff")
                binary = ws.recv()
                return opened, text, binary
            finally:
                ws.close()

        opened, text, binary = yield deferToThread(client)
        self.assertEqual(json.loads(opened[1:])["upgrades"], [])
        self.assertEqual(text, "4héllo 🎉")
        self.assertEqual(binary, b"\x00\xff")

    @defer.inlineCallbacks
    def test_options_preflight_is_answered(self):
        """An OPTIONS preflight gets 204 with the allowed methods and requested headers."""
        response = yield http(
            "OPTIONS",
            self.url + "?EIO=4&transport=polling",
            headers={"Origin": "https://ilias.test", "Access-Control-Request-Headers": "x-a"},
        )
        self.assertEqual(response.code, 204)
        self.assertEqual(response.header("access-control-allow-methods"), "GET,POST,OPTIONS")
        self.assertEqual(response.header("access-control-allow-headers"), "x-a")
        self.assertEqual(response.header("access-control-allow-origin"), "https://ilias.test")


class ErrorTests(ServerTestCase):
    def test_unknown_transport_is_code_0(self):
        """An unknown transport gets 400 code 0."""
        d = http("GET", self.url + "?EIO=4&transport=carrier-pigeon")
        return d.addCallback(self.assert_error, 400, 0, "Transport unknown")

    def test_unknown_sid_is_code_1(self):
        """An unknown sid gets 400 code 1."""
        d = http("GET", self.url + "?EIO=4&transport=polling&sid=nope")
        return d.addCallback(self.assert_error, 400, 1, "Session ID unknown")

    def test_post_handshake_is_code_2(self):
        """A handshake must be a GET: a POST without sid gets 400 code 2."""
        d = http("POST", self.url + "?EIO=4&transport=polling", b"4x")
        return d.addCallback(self.assert_error, 400, 2, "Bad handshake method")

    def test_websocket_transport_without_upgrade_is_code_3(self):
        """transport=websocket over plain HTTP gets 400 code 3."""
        d = http("GET", self.url + "?EIO=4&transport=websocket")
        return d.addCallback(self.assert_error, 400, 3, "Bad request")

    def test_eio3_is_code_5(self):
        """Engine.IO v3 clients (socket.io 2) are refused with 400 code 5."""
        d = http("GET", self.url + "?EIO=3&transport=polling")
        return d.addCallback(self.assert_error, 400, 5, "Unsupported protocol version")

    def test_missing_eio_is_code_5(self):
        """No EIO parameter means v3 to engine.io, hence code 5."""
        d = http("GET", self.url + "?transport=polling")
        return d.addCallback(self.assert_error, 400, 5, "Unsupported protocol version")

    @defer.inlineCallbacks
    def test_refused_origin_is_403_code_4(self):
        """With an allowed-origins list, another Origin gets 403 code 4; a matching one passes."""
        self.server.origin_allowed = None
        server = self.make_server(allowed_origins=["https://*.ilias.test"])
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        response = yield http(
            "GET", base + "/socket.io/?EIO=4&transport=polling", headers={"Origin": "https://evil.test"}
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(response.json(), {"code": 4, "message": "Forbidden"})
        response = yield http(
            "GET",
            base + "/socket.io/?EIO=4&transport=polling",
            headers={"Origin": "https://www.ilias.test"},
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("access-control-allow-origin"), "https://www.ilias.test")
        server.close()

    @defer.inlineCallbacks
    def test_allowed_origins_match_like_the_network_policy(self):
        """
        The list is matched by the one origin matcher (``ilchat.origins``) that server.cfg's
        ``network.allowed_origins`` uses too: a pattern without ``://`` is a host on any scheme
        and port, case does not matter, and ``null`` is refused.
        """
        server = self.make_server(allowed_origins=["*.ilias.test", "http://localhost:*"])
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        url = base + "/socket.io/?EIO=4&transport=polling"
        for origin, allowed in [
            ("https://WWW.Ilias.test:8443", True),
            ("http://chat.ilias.test", True),
            ("http://localhost:8080", True),
            ("https://localhost:8080", False),
            ("https://ilias.test.evil.example", False),
            ("null", False),
        ]:
            response = yield http("GET", url, headers={"Origin": origin})
            self.assertEqual(response.code, 200 if allowed else 403, origin)
            if allowed:
                self.assertEqual(response.header("access-control-allow-origin"), origin)

    @defer.inlineCallbacks
    def test_polling_sid_used_on_wrong_transport_is_code_3(self):
        """A websocket-only session cannot be polled: 400 code 3."""

        def open_ws():
            ws = websocket.create_connection(ws_url(self.base), timeout=5)
            return ws, json.loads(ws.recv()[1:])["sid"]

        ws, sid = yield deferToThread(open_ws)
        try:
            response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
            yield self.assert_error(response, 400, 3, "Bad request")
        finally:
            yield deferToThread(ws.close)

    @defer.inlineCallbacks
    def test_connection_filter_refuses_and_address_resolver_names_peer(self):
        """The filter hook refuses a request; the resolver hook sets ``session.address``."""
        server = self.make_server(
            connection_filter=lambda request: (
                (403, "Address not allowed") if request.getHeader(b"x-block") else None
            ),
            address_resolver=lambda request: "203.0.113.7",
        )
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        response = yield http(
            "GET", base + "/socket.io/?EIO=4&transport=polling", headers={"X-Block": "1"}
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(response.json(), {"code": 4, "message": "Address not allowed"})
        sid, _ = yield handshake(base)
        self.assertEqual(server.sessions[sid].address, "203.0.113.7")
        server.close()


class PollingTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_post_then_get_echoes_text_and_binary(self):
        """A POSTed payload of text and base64 binary comes back on the next GET, same encoding."""
        sid, _ = yield handshake(self.base)
        response = yield http(
            "POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", "4héllo\x1ebAQID".encode()
        )
        self.assertEqual((response.code, response.body), (200, b"ok"))
        response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        self.assertEqual(response.text, "4héllo\x1ebAQID")

    @defer.inlineCallbacks
    def test_parked_get_is_released_by_a_message(self):
        """A GET with nothing to read waits, and returns as soon as a packet is queued."""
        sid, _ = yield handshake(self.base)
        pending = http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield wait(0.1)
        self.assertFalse(pending.called)
        yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", b"4wake")
        response = yield pending
        self.assertEqual(response.text, "4wake")

    @defer.inlineCallbacks
    def test_parked_get_takes_every_packet_of_the_turn(self):
        """The packets one reactor turn queues for a parked GET go out in one answer, in order."""
        sid, _ = yield handshake(self.base)
        pending = http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield wait(0.1)
        # One POST, three packets: echoed in one turn, so the parked GET gets all three.
        yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", b"4a\x1e4b\x1e4c")
        response = yield pending
        self.assertEqual(response.text, "4a\x1e4b\x1e4c")
        self.assertEqual(response.header("content-type"), "text/plain; charset=UTF-8")
        self.assertEqual(response.header("cache-control"), "no-store")
        self.assertIsNotNone(response.header("date"))
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_broadcast_answers_every_parked_get_with_one_body(self):
        """A broadcast reaches each session's parked GET once; equal queues share one body."""
        server = self.make_server()
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        url = f"{base}/socket.io/?EIO=4&transport=polling&sid="
        sids = []
        for _ in range(3):
            sid, _ = yield handshake(base)
            sids.append(sid)
        pending = [http("GET", url + sid) for sid in sids]
        yield wait(0.1)
        bodies = []
        payload_body = responses_module.payload_body

        def recording(queue, cache=None):
            body = payload_body(queue, cache)
            bodies.append(body)
            return body

        self.patch(session_module, "payload_body", recording)
        packets = [OutgoingPacket.message("one"), OutgoingPacket.message("two")]
        for session in list(server.sessions.values()):
            session.send_packets(packets[:1])
        for session in list(server.sessions.values()):
            session.send_packets(packets[1:])
        self.assertEqual(bodies, [])  # answered at the end of the turn, not during it
        answers = yield defer.gatherResults(pending)
        self.assertEqual([a.text for a in answers], ["4one\x1e4two"] * 3)
        self.assertEqual(len(bodies), 3)
        self.assertEqual(len({id(body) for body in bodies}), 1)
        server.close()

    @defer.inlineCallbacks
    def test_concurrent_get_closes_the_session(self):
        """A second GET while one is parked gets 400; the first gets the close packet."""
        sid, _ = yield handshake(self.base)
        first = http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield wait(0.1)
        second = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        self.assertEqual(second.code, 400)
        first = yield first
        self.assertEqual(first.text, "1")
        self.assertEqual(Echo.closed, [(sid, "transport error")])
        response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield self.assert_error(response, 400, 1, "Session ID unknown")

    @defer.inlineCallbacks
    def test_oversize_post_is_refused_and_closes_the_session(self):
        """A POST over maxPayload gets 413 and ends that session only."""
        server = self.make_server(max_payload=100)
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        sid, info = yield handshake(base)
        self.assertEqual(info["maxPayload"], 100)
        response = yield http("POST", f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}",
                              b"4" + b"x" * 200)
        self.assertEqual(response.code, 413)
        self.assertNotIn(sid, server.sessions)
        yield self.assert_still_serving()
        server.close()

    @defer.inlineCallbacks
    def test_malformed_payloads_close_only_their_session(self):
        """Unknown packet types, bad base64, bad UTF-8 or a client ping close that session."""
        for bad in (b"9nine", b"b***", b"4\xff\xfe", b"", b"2", b"0{}", b"4a\x1e"):
            sid, _ = yield handshake(self.base)
            response = yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", bad)
            self.assertIn(response.code, (200, 400), bad)
            if response.code == 400:
                self.assertEqual(response.json()["code"], 3)
            self.assertNotIn(sid, self.server.sessions, bad)
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_client_close_packet_ends_session(self):
        """A ``1`` from the client closes the session; the parked GET gets a noop, then 400."""
        sid, _ = yield handshake(self.base)
        parked = http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield wait(0.05)
        yield http("POST", f"{self.url}?EIO=4&transport=polling&sid={sid}", b"1")
        self.assertEqual((yield parked).text, "6")
        self.assertEqual(Echo.closed, [(sid, "transport close")])
        response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        self.assertEqual(response.code, 400)


class _InFront(Resource):
    """
    What a resource in front of Engine.IO may do with every request: set a cookie (a sticky
    route), and here also count the server's C{send()} calls on the connection (every answer's
    bytes, in the order sent).
    """

    isLeaf = True

    def __init__(self, inner: Resource) -> None:
        super().__init__()
        self.inner = inner
        self.sends: list[bytes] = []

    def render(self, request):
        request.addCookie(b"route", b"node-1", path=b"/socket.io/", httpOnly=True)
        transport = request.channel.transport
        if not isinstance(transport.socket, _CountingSocket):
            transport.socket = _CountingSocket(transport.socket, self.sends)
        return self.inner.render(request)


class _CountingSocket:
    """A connection's socket that records what each C{send()} sent."""

    def __init__(self, sock, sends: list) -> None:
        self._sock = sock
        self._sends = sends

    def send(self, data, *flags):
        sent = self._sock.send(data, *flags)
        self._sends.append(bytes(data[:sent]))
        return sent

    def __getattr__(self, name):
        return getattr(self._sock, name)


class PollingAnswerTests(ServerTestCase):
    """
    A parked GET's answer is twisted.web's own (its cookies, its persistence handling) and goes
    out as one C{send()} before the answering call returns. Read as raw bytes off the socket.
    """

    def setUp(self):
        super().setUp()
        self.front = _InFront(self.server.resource)
        self.front_base = serve(self, self.front)
        self.answered: list[tuple[bytes, list[bytes]]] = []
        write_response = session_module.write_response

        def watched(request, code, content_type, body):
            before = len(self.front.sends)
            write_response(request, code, content_type, body)
            if body == b"4wake":
                self.answered.append((body, self.front.sends[before:]))

        self.patch(session_module, "write_response", watched)

    @defer.inlineCallbacks
    def parked_exchange(self, version="HTTP/1.1", headers=""):
        """A GET parked, then woken by a message: its answer's raw bytes, headers, body, close."""
        sid, _ = yield handshake(self.front_base)
        client = yield deferToThread(RawHTTP, self.front_base)
        self.addCleanup(client.close)
        target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        yield deferToThread(client.send, "GET", target, version, headers)
        yield wait(0.1)
        self.assertIsNotNone(self.server.sessions[sid]._get_request)  # parked
        yield http("POST", f"{self.front_base}{target}", b"4wake")
        raw, answer_headers, body = yield deferToThread(client.answer)
        self.assertEqual(body, b"4wake")
        closed = yield deferToThread(client.closed)
        return raw, answer_headers, closed

    @defer.inlineCallbacks
    def test_parked_get_answer_carries_the_cookies_set_on_its_request(self):
        """A cookie set with C{addCookie} on the GET's request is in the answer's Set-Cookie."""
        raw, headers, closed = yield self.parked_exchange()
        self.assertEqual(headers[b"set-cookie"], [b"route=node-1; Path=/socket.io/; HttpOnly"])
        self.assertEqual(headers[b"content-length"], [b"5"])
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=UTF-8"])
        self.assertFalse(closed)  # HTTP/1.1: the connection stays open for the next poll

    @defer.inlineCallbacks
    def test_http_1_0_poll_is_closed_after_its_answer(self):
        """An HTTP/1.0 GET (no keep-alive) is answered in HTTP/1.0, then its connection closed."""
        raw, headers, closed = yield self.parked_exchange("HTTP/1.0")
        self.assertTrue(raw.startswith(b"HTTP/1.0 200 OK\r\n"), raw)
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_connection_close_poll_says_so_and_is_closed(self):
        """An HTTP/1.1 GET with C{Connection: close} gets C{Connection: close}, then the close."""
        raw, headers, closed = yield self.parked_exchange(headers="Connection: close\r\n")
        self.assertEqual(headers[b"connection"], [b"close"])
        self.assertTrue(closed)

    @defer.inlineCallbacks
    def test_parked_get_answer_is_twisted_webs_own(self):
        """Byte for byte (but the Date) what C{Request.write} and C{finish} send for it."""
        ours = yield self.parked_exchange()
        # No channel is an HTTPChannel to write_response now: it takes twisted.web's own path.
        self.patch(responses_module, "HTTPChannel", type("NoChannel", (), {}))
        twisted_web = yield self.parked_exchange()

        def undated(raw):
            return [line for line in raw.split(b"\r\n") if not line.startswith(b"Date: ")]

        self.assertEqual(undated(ours[0]), undated(twisted_web[0]))

    @defer.inlineCallbacks
    def test_each_answer_is_one_send_made_at_once(self):
        """Status line, headers and body leave in one C{send()} made before the call returns."""
        for version, headers in (("HTTP/1.1", ""), ("HTTP/1.0", ""), ("HTTP/1.1", "Connection: close\r\n")):
            self.answered.clear()
            raw, _, _ = yield self.parked_exchange(version, headers)
            self.assertEqual(self.answered, [(b"4wake", [raw])], (version, headers))


class WebSocketTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_upgrade_from_polling(self):
        """2probe/3probe, a noop to the parked GET, then ``5``; polling is refused afterwards."""
        sid, _ = yield handshake(self.base)
        parked = http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
        yield wait(0.05)
        ws = yield deferToThread(websocket.create_connection, ws_url(self.base, sid), timeout=5)
        try:
            yield deferToThread(ws.send, "2probe")
            reply = yield deferToThread(ws.recv)
            self.assertEqual(reply, "3probe")
            released = yield parked
            self.assertEqual(released.text, "6")
            # Queued while upgrading: delivered over the websocket after "5".
            self.server.sessions[sid].send_message("queued")
            yield deferToThread(ws.send, "5")
            self.assertEqual((yield deferToThread(ws.recv)), "4queued")
            yield deferToThread(ws.send, "4after")
            self.assertEqual((yield deferToThread(ws.recv)), "4after")
            self.assertEqual(self.server.sessions[sid].transport, "websocket")
            response = yield http("GET", f"{self.url}?EIO=4&transport=polling&sid={sid}")
            self.assertEqual(response.json()["code"], 3)
            second = yield http("GET", ws_url(self.base, sid).replace("ws://", "http://"))
            self.assertEqual(second.code, 400)
        finally:
            yield deferToThread(ws.close)

    @defer.inlineCallbacks
    def test_upgrade_without_parked_get(self):
        """With no GET parked at the probe, none is owed a noop: a GET that comes while upgrading
        gets one, and the websocket gets none (as from engine.io; the newer Engine.IO suite reads
        ``4hello`` as the first frame after ``5``). A second websocket with the same sid
        completes its handshake and is closed at once, as engine.io does (and the Engine.IO
        suite expects); the upgraded one goes on."""
        sid, _ = yield handshake(self.base)

        def client():
            ws = websocket.create_connection(ws_url(self.base, sid), timeout=5)
            ws.send("2probe")
            probe = ws.recv()
            late_get = requests.get(f"{self.url}?EIO=4&transport=polling&sid={sid}", timeout=5)
            ws.send("5")
            second = websocket.create_connection(ws_url(self.base, sid), timeout=5)
            try:
                opcode, _ = second.recv_data(control_frame=True)
            finally:
                second.close()
            ws.send("4hello")
            first_after_upgrade = ws.recv()
            ws.close()
            return probe, late_get.text, opcode, first_after_upgrade

        self.assertEqual(
            (yield deferToThread(client)),
            ("3probe", "6", websocket.ABNF.OPCODE_CLOSE, "4hello"),
        )

    @defer.inlineCallbacks
    def test_malformed_frame_closes_only_that_websocket(self):
        """An unknown packet type on a websocket closes it; the server keeps serving."""

        def client():
            ws = websocket.create_connection(ws_url(self.base), timeout=5)
            ws.recv()
            ws.send("9garbage")
            try:
                while True:
                    frame = ws.recv()
                    if not frame:
                        return "closed"
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                return "closed"

        self.assertEqual((yield deferToThread(client)), "closed")
        self.assertEqual([reason for _, reason in Echo.closed], ["parse error"])
        yield self.assert_still_serving()

    @defer.inlineCallbacks
    def test_oversize_websocket_message_closes_the_connection(self):
        """A websocket message over maxPayload ends that connection with close code 1009."""
        server = self.make_server(max_payload=100)
        base = serve(self, server.resource)
        self.addCleanup(server.close)

        def client():
            ws = websocket.create_connection(ws_url(base), timeout=5)
            try:
                ws.recv()
                ws.send("4" + "x" * 500)
                while True:
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_CLOSE:
                        return int.from_bytes(data[:2], "big")
            finally:
                ws.close()

        self.assertEqual((yield deferToThread(client)), 1009)
        yield wait(0.05)
        self.assertEqual(server.sessions, {})
        yield self.assert_still_serving()


class ShutdownTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_close_leaves_no_timer_behind(self):
        """
        Closing the server with a websocket open cancels every timer it started for that
        connection (Autobahn's close-handshake timeout included) in the same turn, so a service
        that stops leaves nothing scheduled on the reactor.
        """

        def client():
            ws = websocket.create_connection(ws_url(self.base), timeout=5)
            try:
                ws.recv()  # the open packet
                try:
                    while True:
                        ws.recv()
                except (websocket.WebSocketConnectionClosedException, OSError):
                    return "closed"
            finally:
                ws.close()

        before = set(reactor.getDelayedCalls())
        closed = deferToThread(client)
        for _ in range(100):
            if self.server.sessions:
                break
            yield wait(0.02)
        self.assertEqual(len(self.server.sessions), 1)
        self.server.close()
        left = [
            call
            for call in reactor.getDelayedCalls()
            if call not in before
            and call.active()
            and not getattr(call.func, "__qualname__", "").startswith("TestCase._run")  # trial's
        ]
        self.assertEqual(left, [])
        self.assertEqual((yield closed), "closed")


class SlowReaderTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_websocket_client_that_stops_reading_is_dropped(self):
        """Once the buffers are full, more than max_backlog unread bytes drop that client only."""
        server = self.make_server(max_backlog=1_000_000)
        base = serve(self, server.resource)
        self.addCleanup(server.close)

        def open_ws():
            ws = websocket.create_connection(ws_url(base), timeout=5)
            return ws, json.loads(ws.recv()[1:])["sid"]

        ws, sid = yield deferToThread(open_ws)
        try:
            session = server.sessions[sid]
            chunk = "x" * 100_000
            for _ in range(2000):  # up to 200 MB, far beyond any socket buffer
                session.send_message(chunk)
                if sid not in server.sessions:
                    break
                yield wait(0)  # let the reactor write (and pause us)
            self.assertNotIn(sid, server.sessions)
            self.assertEqual(Echo.closed[-1], (sid, "transport error"))
        finally:
            yield deferToThread(ws.close)
        yield self.assert_still_serving()


class HeartbeatTests(TestCase):
    """Ping/pong on a fake clock; HTTP on real loopback."""

    def setUp(self):
        Echo.closed = []
        self.clock = task.Clock()
        self.server = EngineIOServer(self.clock, Echo, ping_interval=25.0, ping_timeout=20.0)
        self.base = serve(self, self.server.resource)
        self.url = self.base + "/socket.io/?EIO=4&transport=polling"

    @defer.inlineCallbacks
    def test_missing_pong_closes_session_after_ping_timeout(self):
        """No pong within pingTimeout of a ping closes the session; no timer is left."""
        sid, _ = yield handshake(self.base)
        self.clock.advance(25.0)
        response = yield http("GET", f"{self.url}&sid={sid}")
        self.assertEqual(response.text, "2")
        self.clock.advance(19.9)
        self.assertIn(sid, self.server.sessions)
        self.clock.advance(0.2)
        self.assertNotIn(sid, self.server.sessions)
        self.assertEqual(Echo.closed, [(sid, "ping timeout")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_pong_deadline_counts_from_when_the_ping_was_due(self):
        """A ping sent late by a busy reactor still gives the client pingInterval + pingTimeout
        from the last pong, not more; a request after that deadline finds the session gone, even
        when the deadline's timer has not run yet."""
        sid, _ = yield handshake(self.base)
        self.clock.rightNow += 25.5  # the reactor was busy: the ping goes 0.5 s late
        self.clock.advance(0)
        response = yield http("GET", f"{self.url}&sid={sid}")
        self.assertEqual(response.text, "2")
        self.clock.advance(19.4)
        self.assertIn(sid, self.server.sessions)
        self.clock.rightNow += 0.2  # past 25 + 20 s, the deadline's timer not run yet
        response = yield http("GET", f"{self.url}&sid={sid}")
        self.assertEqual((response.code, response.json()["code"]), (400, 1))
        self.assertNotIn(sid, self.server.sessions)
        self.assertEqual(Echo.closed, [(sid, "ping timeout")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    @defer.inlineCallbacks
    def test_pong_keeps_session_and_schedules_next_ping(self):
        """A pong cancels the deadline; the next ping comes pingInterval later."""
        sid, _ = yield handshake(self.base)
        self.clock.advance(25.0)
        response = yield http("GET", f"{self.url}&sid={sid}")
        self.assertEqual(response.text, "2")
        yield http("POST", f"{self.url}&sid={sid}", b"3")
        self.clock.advance(24.0)
        self.assertIn(sid, self.server.sessions)
        self.clock.advance(1.0)
        response = yield http("GET", f"{self.url}&sid={sid}")
        self.assertEqual(response.text, "2")
        self.server.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])
