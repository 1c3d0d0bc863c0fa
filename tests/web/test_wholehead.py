"""
L{ilchat.web._wholehead}: a request head read in one pass, and the quick GET lane.

The parser is checked against twisted.web's own line parser (every head it takes must give the
request Twisted gives); the lane over real loopback sockets in a whole ilchat server, against
the answers of the regular path (the same request sent in two pieces, which the lane never
takes).
"""

from __future__ import annotations

import json
import socket
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import http
from twisted.web.http_headers import Headers, InvalidHeaderName, _nameEncoder

from ilchat.web import _wholehead
from ilchat.web._wholehead import parse_whole_head, query_args

# -- the parser against Twisted's ---------------------------------------------------------------


class _Recorded(http.Request):
    """Keeps what Twisted's parser made of the request; answers nothing."""

    seen: list = []

    def requestReceived(self, command, path, version):  # noqa: N802 (twisted API)
        _Recorded.seen.append((command, path, version, dict(self.requestHeaders.getAllRawHeaders())))


def twisted_parse(data: bytes):
    """What twisted.web's HTTPChannel makes of C{data}: the request, or None, and what it wrote."""
    _Recorded.seen = []
    channel = http.HTTPChannel()
    channel.requestFactory = _Recorded
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    channel.connectionLost(None)
    return (_Recorded.seen[0] if _Recorded.seen else None), transport.value()


_METHODS = st.sampled_from([b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"POST", b"G T", b"get", b""])
_TARGETS = st.sampled_from(
    [b"/", b"/socket.io/?EIO=4&transport=polling&sid=a%2Fb", b"/a b", b"/\x7f", b"/\xb0", b"", b"*"]
)
_VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2", b"http/1.1"])
_NAMES = st.sampled_from(
    [b"Host", b"host", b"X-Forwarded-For", b"Origin", b"Content-Length", b"Transfer-Encoding",
     b"Upgrade", b"Expect", b"Connection", b"Bad Name", b"Bad\x00", b"", b" Host", b"\tX", b"Cookie"]
)
_VALUES = st.sampled_from(
    [b"x", b" padded \t", b"", b"a\x00b", b"keep-alive", b"close", b"100-continue", b"12", b"1,2",
     b"caf\xc3\xa9", b"a\rb", b"a\nb"]
)
_LINES = st.one_of(
    st.tuples(_NAMES, _VALUES).map(lambda nv: nv[0] + b": " + nv[1]),
    st.sampled_from([b"no colon", b" folded", b"\tfolded", b""]),
)


@st.composite
def heads(draw):
    line = draw(_METHODS) + b" " + draw(_TARGETS) + b" " + draw(_VERSIONS)
    lines = [line] + draw(st.lists(_LINES, max_size=6))
    ending = draw(st.sampled_from([b"\r\n\r\n", b"\r\n", b"\n\n", b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"]))
    return b"\r\n".join(lines) + ending


class ParseAgreementTests(SynchronousTestCase):
    @settings(max_examples=800, deadline=None)
    @given(heads())
    def test_every_head_taken_is_the_request_twisted_makes(self, data):
        """Where parse_whole_head takes a head, Twisted takes it too, with the same parts."""
        parsed = parse_whole_head(data, 500, 16384)
        if parsed is None:
            return
        method, target, version, headers = parsed
        request, written = twisted_parse(data)
        self.assertIsNotNone(request, data)
        self.assertEqual(written, b"", data)  # no 400 from Twisted
        expected = Headers()
        for name, value in headers:
            expected.addRawHeader(name, value)
        self.assertEqual(request, (method, target, version, dict(expected.getAllRawHeaders())))

    def test_plain_heads_are_taken(self):
        """What browsers and engine.io-client send for a poll is taken, not left to the lines."""
        data = (
            b"GET /socket.io/?EIO=4&transport=polling&t=P1&sid=abc HTTP/1.1\r\nHost: chat:8080\r\n"
            b"Connection: keep-alive\r\nOrigin: https://ilias.example.org\r\nAccept: */*\r\n\r\n"
        )
        method, target, version, headers = parse_whole_head(data, 500, 16384)
        self.assertEqual((method, version), (b"GET", b"HTTP/1.1"))
        self.assertEqual(headers[0], (b"Host", b"chat:8080"))
        self.assertEqual(len(headers), 4)

    def test_limits_and_bodies_are_left_to_the_line_parser(self):
        """Over the header limits, with a body, or with more than the head: not taken."""
        plain = b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n"
        self.assertIsNotNone(parse_whole_head(plain, 2, len(plain)))
        self.assertIsNone(parse_whole_head(plain, 1, len(plain)))  # one header too many
        self.assertIsNone(parse_whole_head(plain, 2, len(plain) - 1))  # one byte too many
        self.assertIsNone(parse_whole_head(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 9, 999))
        self.assertIsNone(parse_whole_head(plain + plain, 9, 999))

    def test_query_args_are_parse_qs(self):
        """The plain split gives what Twisted's parse_qs gives, and escapes go to parse_qs."""
        for query in (b"EIO=4&transport=polling&sid=x", b"a=&b=1&b=2&=3&c", b"a=%2F&b=+x", b"a=1;b=2"):
            self.assertEqual(query_args(query), http.parse_qs(query, 1), query)


class InternalsTests(SynchronousTestCase):
    def test_private_names_used_exist(self):
        """The HTTPChannel, LineReceiver and Headers state the module reads and sets."""
        channel = http.HTTPChannel()
        channel.makeConnection(StringTransport())
        self.assertEqual(channel._HTTPChannel__first_line, 1)
        self.assertEqual(channel._HTTPChannel__header, b"")
        self.assertEqual((channel._buffer, channel._busyReceiving, channel.line_mode), (b"", False, 1))
        self.assertEqual((channel._handlingRequest, channel.requests), (False, []))
        self.assertIsInstance(Headers()._rawHeaders, dict)
        # The name cache parse_whole_head reads: raw name -> canonical, valid tokens only.
        self.assertIs(_wholehead._CANONICAL_NAMES, _nameEncoder._canonicalHeaderCache)
        self.assertEqual(_nameEncoder.encode(b"x-probe-NAME"), b"X-Probe-Name")
        self.assertEqual(_wholehead._CANONICAL_NAMES[b"x-probe-NAME"], b"X-Probe-Name")
        self.assertRaises(InvalidHeaderName, _nameEncoder.encode, b" folded")
        self.assertNotIn(b" folded", _wholehead._CANONICAL_NAMES)
        self.assertTrue(issubclass(http.HTTPChannel, LineReceiver))
        channel.connectionLost(None)


# -- the lane in a whole server ---------------------------------------------------------------

POLL = "/socket.io/?EIO=4&transport=polling"


class _Raw:
    """A blocking HTTP/1.1 connection from a chosen loopback address; use it in a thread."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.buffer = b""

    def send(self, target: str, headers: str = "", split: bool = False) -> None:
        data = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
        if split:  # the head in two reads: the regular line parser's case
            self.sock.sendall(data[:10])
            time.sleep(0.05)
            data = data[10:]
        self.sock.sendall(data)

    def answer(self):
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        size = int(headers[b"Content-Length"])
        while len(rest) < size:
            self._read()
            rest = self.buffer.partition(b"\r\n\r\n")[2]
        self.buffer = rest[size:]
        return lines[0], headers, rest[:size]

    def closed(self) -> bool:
        self.sock.settimeout(2)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _undated(answer):
    status, headers, body = answer
    return status, {k: v for k, v in headers.items() if k != b"Date"}, body


class QuickGetTests(TestCase):
    """Long-polling GETs of a whole ilchat server (standalone, SQLite) on the lane and off it."""

    async def asyncSetUp(self, network=None):
        from ilchat.standalone import StandaloneChat
        from tests.support.server import start_server

        self.server = await start_server(
            self,
            server={"network": network or {}},
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        self.lane: list = []
        render = _wholehead.QuickGet.render

        def counted(request, resource):
            self.lane.append(request.uri)
            return render(request, resource)

        self.patch(_wholehead.QuickGet, "render", counted)

    async def connect(self, source="127.0.0.1"):
        raw = await deferToThread(_Raw, self.server.port, source)
        self.addCleanup(raw.close)
        return raw

    async def exchange(self, raw, target, headers="", split=False):
        await deferToThread(raw.send, target, headers, split)
        return await deferToThread(raw.answer)

    async def open_session(self, raw):
        """A polling handshake on C{raw}: the sid."""
        status, _, body = await self.exchange(raw, POLL)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        return json.loads(body[1:])["sid"]

    async def connect_namespace(self, sid):
        """Connect session C{sid} to ``/team`` with a POST on a connection of its own."""
        from tests.web.test_policy import _raw_request

        return await deferToThread(
            _raw_request, self.server.port, f"{POLL}&sid={sid}", method="POST", body=b"40/team,"
        )

    async def test_lane_answers_as_the_regular_path_does(self):
        """
        The same GETs sent whole (the lane) and in two pieces (the line parser): the same status,
        headers and body, but the Date; only the whole ones took the lane.
        """
        await self.asyncSetUp()
        raw = await self.connect()
        origin = "Origin: http://127.0.0.1\r\n"
        for target, headers in (
            (f"{POLL}&sid=nosuchsession", ""),  # 400 JSON
            (f"{POLL}&sid=nosuchsession", origin),  # with its CORS headers
            ("/socket.io/?EIO=4&transport=unknown&sid=x", ""),
        ):
            self.lane.clear()
            whole = await self.exchange(raw, target, headers)
            self.assertEqual(self.lane, [target.encode()])
            pieces = await self.exchange(raw, target, headers, split=True)
            self.assertEqual(self.lane, [target.encode()])
            self.assertEqual(_undated(whole), _undated(pieces))
            self.assertEqual(whole[0], b"HTTP/1.1 400 Bad Request")
        self.assertEqual(whole[1][b"Server"], pieces[1][b"Server"])
        self.assertIn(b"Date", whole[1])

    async def test_parked_poll_on_the_lane_is_answered_and_the_connection_reused(self):
        """
        A GET parked on the lane gets the namespace's answer once the client connects it (a
        POST on another connection); then the same connection serves a request the lane does
        not take, and another poll.
        """
        await self.asyncSetUp()
        raw = await self.connect()
        sid = await self.open_session(raw)
        await deferToThread(raw.send, f"{POLL}&sid={sid}")
        await deferLater(reactor, 0.2, lambda: None)
        status, _, body = await self.connect_namespace(sid)
        self.assertEqual((status, body), (200, b"ok"))
        status, headers, body = await deferToThread(raw.answer)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"Content-Type"], b"text/plain; charset=UTF-8")
        self.assertTrue(body.startswith(b"40/team,{"), body)
        self.assertIn(f"{POLL}&sid={sid}".encode(), self.lane)
        self.lane.clear()
        status, _, body = await self.exchange(raw, "/backend/Heartbeat/team")
        self.assertEqual((status, json.loads(body)), (b"HTTP/1.1 200 OK", {"status": 200}))
        self.assertEqual(self.lane, [])  # the backend does not take the lane
        await deferToThread(raw.send, f"{POLL}&sid={sid}")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(len(self.lane), 1)  # parked again, on the lane

    async def test_parked_answer_on_the_lane_is_the_regular_paths(self):
        """
        Two sessions park a GET with an ``Origin``, one sent whole (the lane, answered by
        ``write_whole``), one in two pieces (a twisted.web ``Request``); both are answered by a
        connect: the same status, headers and body, but the Date and the socket id.
        """
        await self.asyncSetUp()
        origin = "Origin: http://127.0.0.1\r\n"
        answers = []
        for split in (False, True):
            raw = await self.connect()
            sid = await self.open_session(raw)
            self.lane.clear()
            await deferToThread(raw.send, f"{POLL}&sid={sid}", origin, split)
            await deferLater(reactor, 0.2, lambda: None)
            self.assertEqual(len(self.lane), 0 if split else 1)
            await self.connect_namespace(sid)
            status, headers, body = _undated(await deferToThread(raw.answer))
            socket_id = json.loads(body[len(b"40/team,"):])["sid"]
            answers.append((status, headers, body.replace(socket_id.encode(), b"<sid>")))
        self.assertEqual(answers[0], answers[1])
        status, headers, body = answers[0]
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(headers[b"Access-Control-Allow-Origin"], b"http://127.0.0.1")
        self.assertEqual(body, b'40/team,{"sid":"<sid>"}')

    async def test_a_parked_lane_poll_outlives_the_idle_timeout(self):
        """
        The lane keeps the idle timer running while a GET waits: the connection is not cut then,
        and once the GET is answered it is closed after the idle time counted from the answer.
        """
        await self.asyncSetUp()
        self.server.service.site.timeOut = 0.4  # a channel takes it when it is made
        raw = await self.connect()
        sid = await self.open_session(raw)
        await deferToThread(raw.send, f"{POLL}&sid={sid}")
        await deferLater(reactor, 1.2, lambda: None)  # three idle times while parked
        self.assertEqual(len(self.lane), 2)  # the handshake and the parked GET
        await self.connect_namespace(sid)
        status, _, body = await deferToThread(raw.answer)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertTrue(body.startswith(b"40/team,"))
        answered = reactor.seconds()
        self.assertTrue(await deferToThread(raw.closed))  # idle after the answer: closed
        self.assertGreater(reactor.seconds() - answered, 0.2)

    async def test_request_sent_behind_a_parked_poll_waits_for_its_answer(self):
        """Pipelined behind a parked lane GET, a request is read once the GET is answered."""
        await self.asyncSetUp()
        raw = await self.connect()
        sid = await self.open_session(raw)
        await deferToThread(raw.send, f"{POLL}&sid={sid}")
        await deferLater(reactor, 0.1, lambda: None)
        await deferToThread(raw.send, f"{POLL}&sid=other")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(raw.buffer, b"")
        await self.connect_namespace(sid)
        first = await deferToThread(raw.answer)
        second = await deferToThread(raw.answer)
        self.assertTrue(first[2].startswith(b"40/team,"))
        self.assertEqual(json.loads(second[2]), {"code": 1, "message": "Session ID unknown"})

    async def test_lost_connection_of_a_parked_lane_poll_closes_the_session(self):
        """The client going away while its GET waits ends the session, as on the regular path."""
        await self.asyncSetUp()
        raw = await self.connect()
        sid = await self.open_session(raw)
        await deferToThread(raw.send, f"{POLL}&sid={sid}")
        await deferLater(reactor, 0.2, lambda: None)
        self.assertTrue(self.lane)
        raw.close()
        await deferLater(reactor, 0.3, lambda: None)
        other = await self.connect()
        _, _, body = await self.exchange(other, f"{POLL}&sid={sid}")
        self.assertEqual(json.loads(body), {"code": 1, "message": "Session ID unknown"})

    async def test_refused_address_gets_the_policy_answer_on_the_lane(self):
        """Outside the allow-list a whole polling GET gets the guard's 403, as in two pieces."""
        await self.asyncSetUp({"allow": ["127.0.0.1/32"]})
        raw = await self.connect("127.0.0.2")
        whole = await self.exchange(raw, f"{POLL}&sid=x")
        raw = await self.connect("127.0.0.2")  # (a refusal closes its connection)
        pieces = await self.exchange(raw, f"{POLL}&sid=x", split=True)
        self.assertEqual(whole[0], b"HTTP/1.1 403 Forbidden")
        self.assertEqual(_undated(whole), _undated(pieces))
        self.assertEqual(len(self.lane), 1)

    async def test_connection_close_stays_off_the_lane(self):
        """``Connection: close`` is honoured by the regular path: answered, then closed."""
        await self.asyncSetUp()
        raw = await self.connect()
        status, headers, _ = await self.exchange(raw, f"{POLL}&sid=x", "Connection: close\r\n")
        self.assertEqual((status, headers[b"Connection"]), (b"HTTP/1.1 400 Bad Request", b"close"))
        self.assertTrue(await deferToThread(raw.closed))
        self.assertEqual(self.lane, [])
