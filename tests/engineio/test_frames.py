"""The websocket fast paths: frames read without Autobahn's machine, frames written once a turn.

Frames are built by websocket-client's ``ABNF`` (code we did not write), sent on real loopback
sockets, and every case the fast path leaves to Autobahn (control frames, fragments, bad UTF-8,
oversized frames) is checked to still be answered as before.
"""

from __future__ import annotations

import json
import os
import random
import socket

import websocket
from OpenSSL import SSL
from websocket import ABNF
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.protocols.tls import BufferingTLSTransport, _AggregateSmallWrites
from twisted.web.resource import Resource
from twisted.web.server import Site

from ilchat.engineio import _internals
from ilchat.engineio._internals import FrameOutbox, direct_socket, read_data_frame
from ilchat.engineio.responses import PollOutbox
from ilchat.engineio.server import EngineIOServer
from ilchat.tls import certificate_options
from tests.engineio.support import serve, wait
from tests.engineio.test_server import Echo, ServerTestCase, ws_url
from tests.test_tls import make_pki


def client_frame(data: bytes | str, opcode: int = ABNF.OPCODE_TEXT, fin: int = 1) -> bytes:
    """A masked client frame as websocket-client writes it."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return ABNF(fin, 0, 0, 0, opcode, 1, data).format()


class ReadDataFrameTests(TestCase):
    def test_text_frames_of_each_length_form_are_unmasked(self):
        """7-bit and 16-bit lengths: the payload comes back unmasked, with the bytes used."""
        for text in ("", "4hi", "4" + "é" * 62, "4" + "x" * 125, "4" + "y" * 126, "4" + "z" * 65534):
            frame = client_frame(text)
            self.assertEqual(
                read_data_frame(frame + b"next", 0),
                (False, text.encode("utf-8"), len(frame)),
                len(text),
            )

    def test_binary_frame(self):
        frame = client_frame(bytes(range(256)) * 3, ABNF.OPCODE_BINARY)
        self.assertEqual(read_data_frame(frame, 0), (True, bytes(range(256)) * 3, len(frame)))

    def test_incomplete_frames_wait_for_more(self):
        frame = client_frame("4" + "a" * 300)
        for cut in (0, 1, 5, 7, 8, len(frame) - 1):
            self.assertIsNone(read_data_frame(frame[:cut], 0), cut)

    def test_everything_else_is_left_to_autobahn(self):
        """Control frames, fragments, RSV bits, unmasked frames, 64-bit lengths, over the limit."""
        cases = {
            "ping": client_frame(b"", ABNF.OPCODE_PING),
            "close": client_frame(b"\x03\xe8", ABNF.OPCODE_CLOSE),
            "first fragment": client_frame("4ab", fin=0),
            "continuation": client_frame("cd", ABNF.OPCODE_CONT),
            "rsv1 (compressed)": ABNF(1, 1, 0, 0, ABNF.OPCODE_TEXT, 1, b"4x").format(),
            "unmasked": ABNF(1, 0, 0, 0, ABNF.OPCODE_TEXT, 0, b"4x").format(),
            "64-bit length": client_frame("4" + "q" * 65536),
            "non-minimal 16-bit length": b"\x81\xfe\x00\x03\x00\x00\x00\x004ab",
        }
        for name, frame in cases.items():
            self.assertIsNone(read_data_frame(frame, 0), name)
        self.assertIsNone(read_data_frame(client_frame("4" + "x" * 100), 100))
        self.assertIsNotNone(read_data_frame(client_frame("4" + "x" * 99), 100))


class _Owner:
    outgoing = None

    def __init__(self, log):
        self.log = log

    def flush_outgoing(self):
        frames, self.outgoing = self.outgoing, None
        self.log.append((self, frames))


class FrameOutboxTests(TestCase):
    def test_one_turn_of_frames_is_flushed_once_per_connection(self):
        """Frames of one turn are kept in order per connection and flushed by one call."""
        clock, log = task.Clock(), []
        outbox = FrameOutbox()
        a, b = _Owner(log), _Owner(log)
        for owner, frame in ((a, b"1"), (b, b"x"), (a, b"2"), (a, b"3")):
            outbox.post(owner, frame, clock)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        self.assertEqual(log, [])
        clock.advance(0)
        self.assertEqual(log, [(a, [b"1", b"2", b"3"]), (b, [b"x"])])
        self.assertEqual(clock.getDelayedCalls(), [])
        outbox.post(a, b"4", clock)
        clock.advance(0)
        self.assertEqual(log[-1], (a, [b"4"]))

    def test_a_failing_connection_does_not_hold_back_the_others(self):
        """An error while flushing one connection is logged; the next ones are still flushed."""
        clock, log = task.Clock(), []
        outbox = FrameOutbox()

        class Broken(_Owner):
            def flush_outgoing(self):
                raise OSError("broken")

        broken, fine = Broken(log), _Owner(log)
        outbox.post(broken, b"1", clock)
        outbox.post(fine, b"2", clock)
        clock.advance(0)
        self.assertEqual(log, [(fine, [b"2"])])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_cancel_forgets_the_flush(self):
        clock, log = task.Clock(), []
        outbox = FrameOutbox()
        outbox.post(_Owner(log), b"1", clock)
        outbox.cancel()
        self.assertEqual(clock.getDelayedCalls(), [])


class PollOutboxTests(TestCase):
    def test_answers_of_one_turn_share_the_bodies_and_a_failure_is_logged(self):
        """Each posted answer runs once at the turn's end with that flush's shared body cache;
        one that raises is logged and the next ones still run; the next turn starts afresh."""
        clock, seen = task.Clock(), []

        def broken(bodies):
            raise OSError("broken")

        outbox = PollOutbox(clock)
        outbox.post(lambda bodies: seen.append(("a", bodies)))
        outbox.post(broken)
        outbox.post(lambda bodies: seen.append(("b", bodies)))
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual([name for name, _ in seen], ["a", "b"])
        self.assertIs(seen[0][1], seen[1][1])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        outbox.post(lambda bodies: seen.append(("c", bodies)))
        outbox.flush()  # early, as at the end of a bus pass: the scheduled call goes
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNot(seen[2][1], seen[0][1])


def open_raw(base: str) -> tuple[websocket.WebSocket, str]:
    ws = websocket.create_connection(ws_url(base), timeout=5)
    return ws, json.loads(ws.recv()[1:])["sid"]


class WireTests(ServerTestCase):
    """Real websockets on loopback against the echoing Engine.IO server."""

    @defer.inlineCallbacks
    def run_client(self, scenario):
        result = yield deferToThread(scenario)
        yield self.assert_still_serving()
        return result

    @defer.inlineCallbacks
    def test_many_frames_in_one_segment_are_echoed_in_order(self):
        """200 messages written with one sendall come back in order."""

        def scenario():
            ws, _ = open_raw(self.base)
            try:
                texts = [f"4message {i} " + "é" * (i % 150) for i in range(200)]
                ws.sock.sendall(b"".join(client_frame(t) for t in texts))
                return texts, [ws.recv() for _ in texts]
            finally:
                ws.close()

        sent, received = yield self.run_client(scenario)
        self.assertEqual(received, sent)

    @defer.inlineCallbacks
    def test_frame_dribbled_byte_by_byte(self):
        """A frame arriving one byte per segment is assembled (the fast path waits for it)."""

        def scenario():
            ws, _ = open_raw(self.base)
            try:
                ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for byte in client_frame("4" + "d" * 300):
                    ws.sock.sendall(bytes([byte]))
                return ws.recv()
            finally:
                ws.close()

        self.assertEqual((yield self.run_client(scenario)), "4" + "d" * 300)

    @defer.inlineCallbacks
    def test_ping_and_fragments_between_fast_frames(self):
        """A ping gets its pong and a fragmented message is joined, in the middle of fast frames."""

        def scenario():
            ws, _ = open_raw(self.base)
            try:
                ws.sock.sendall(
                    client_frame("4one")
                    + client_frame(b"are you there", ABNF.OPCODE_PING)
                    + client_frame("4tw", fin=0)
                    + client_frame("o", ABNF.OPCODE_CONT)
                    + client_frame(b"\x00\x01", ABNF.OPCODE_BINARY)
                    + client_frame("4three")
                )
                got = []
                for _ in range(5):
                    opcode, data = ws.recv_data(control_frame=True)
                    got.append((opcode, data))
                return got
            finally:
                ws.close()

        got = yield self.run_client(scenario)
        self.assertEqual(
            got,
            [
                (ABNF.OPCODE_TEXT, b"4one"),
                (ABNF.OPCODE_PONG, b"are you there"),
                (ABNF.OPCODE_TEXT, b"4two"),
                (ABNF.OPCODE_BINARY, b"\x00\x01"),
                (ABNF.OPCODE_TEXT, b"4three"),
            ],
        )

    @defer.inlineCallbacks
    def test_invalid_utf8_fails_the_connection_with_1007(self):
        """A text frame that is not UTF-8 gets a 1007 close frame; what came before is echoed."""

        def scenario():
            ws, _ = open_raw(self.base)
            try:
                ws.sock.sendall(client_frame("4fine") + client_frame(b"4\xff\xfe", ABNF.OPCODE_TEXT))
                first = ws.recv()
                opcode, data = ws.recv_data(control_frame=True)
                return first, opcode, data[:2]
            finally:
                ws.close()

        first, opcode, code = yield self.run_client(scenario)
        self.assertEqual(first, "4fine")
        self.assertEqual((opcode, code), (ABNF.OPCODE_CLOSE, (1007).to_bytes(2, "big")))
        self.assertEqual([reason for _, reason in Echo.closed], ["transport close"])

    @defer.inlineCallbacks
    def test_frames_before_a_server_close_arrive_before_the_close_frame(self):
        """Frames queued for the end of the turn go out ahead of a close sent in the same turn."""

        def opened():
            return open_raw(self.base)

        ws, sid = yield deferToThread(opened)
        try:
            session = self.server.sessions[sid]
            for i in range(10):
                session.send_message(f"last words {i}")
            session.close("forced close")

            def read_all():
                got = []
                while True:
                    opcode, data = ws.recv_data(control_frame=True)
                    got.append((opcode, data))
                    if opcode == ABNF.OPCODE_CLOSE:
                        return got

            got = yield deferToThread(read_all)
        finally:
            yield deferToThread(ws.close)
        self.assertEqual(
            [data for opcode, data in got if opcode == ABNF.OPCODE_TEXT],
            [f"4last words {i}".encode() for i in range(10)],
        )
        self.assertEqual(got[-1][0], ABNF.OPCODE_CLOSE)

    @defer.inlineCallbacks
    def test_reader_that_pauses_gets_every_byte_in_order(self):
        """
        More than the kernel takes at once (8 MB while the client sleeps): the direct write
        leaves the rest to the transport's buffer, and the client then reads it all, in order.
        """
        server = self.make_server(max_backlog=64_000_000)
        base = serve(self, server.resource)
        self.addCleanup(server.close)
        ws, sid = yield deferToThread(open_raw, base)
        got = yield _flood_then_read(server, ws, sid)
        self.assertEqual(got, [f"4{i:04d}" for i in range(_FLOOD)])



_FLOOD = 80


@defer.inlineCallbacks
def _flood_then_read(server, ws, sid):
    """
    Send C{_FLOOD} messages of 100 kB on the session while its client reads nothing, then let the
    client read them all: the first five characters of each. The session must still exist.
    """
    try:
        session = server.sessions[sid]
        for i in range(_FLOOD):
            session.send_message(f"{i:04d}" + "p" * 100_000)
            if i % 8 == 0:
                yield wait(0)
        yield wait(0.3)
        got = yield deferToThread(lambda: [ws.recv()[:5] for _ in range(_FLOOD)])
        if sid not in server.sessions:
            raise AssertionError("the session was closed while its client read slowly")
    finally:
        yield deferToThread(ws.close)
    return got


def _random_stream(rng: random.Random) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """Frames of every kind and size, and what the echo server must send back for them."""
    frames, expected = [], []
    for i in range(300):
        kind = rng.choice(["text", "text", "binary", "ping", "fragmented", "big"])
        if kind == "text":
            text = f"4{i}:" + "ü" * rng.choice([0, 10, 60, 130, 3000])
            frames.append(client_frame(text))
            expected.append((ABNF.OPCODE_TEXT, text.encode("utf-8")))
        elif kind == "binary":
            data = rng.randbytes(rng.choice([1, 125, 126, 4000]))
            frames.append(client_frame(data, ABNF.OPCODE_BINARY))
            expected.append((ABNF.OPCODE_BINARY, data))
        elif kind == "ping":
            data = rng.randbytes(rng.randrange(0, 125))
            frames.append(client_frame(data, ABNF.OPCODE_PING))
            expected.append((ABNF.OPCODE_PONG, data))
        elif kind == "fragmented":
            frames.append(client_frame(f"4{i}:first,", fin=0))
            frames.append(client_frame("second", ABNF.OPCODE_CONT))
            expected.append((ABNF.OPCODE_TEXT, f"4{i}:first,second".encode()))
        else:  # a 64-bit length: Autobahn's path between fast frames
            text = f"4{i}:" + "b" * 70_000
            frames.append(client_frame(text))
            expected.append((ABNF.OPCODE_TEXT, text.encode()))
    return frames, expected


class MixedStreamTests(ServerTestCase):
    # The client writes everything before it reads: let the echoes pile up without a drop.
    server_options = {"max_backlog": 64_000_000}

    @defer.inlineCallbacks
    def test_random_frames_in_random_segments(self):
        """
        300 frames of every kind (fast text and binary, pings, fragments, 64-bit lengths) cut at
        random points into segments: every echo and pong comes back, in order.
        """
        rng = random.Random(2026)
        frames, expected = _random_stream(rng)
        stream = b"".join(frames)

        def scenario():
            ws, _ = open_raw(self.base)
            try:
                ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ws.settimeout(10)
                position = 0
                while position < len(stream):
                    step = rng.choice([1, 3, 7, 100, 1000, 20_000])
                    ws.sock.sendall(stream[position : position + step])
                    position += step
                return [ws.recv_data(control_frame=True) for _ in expected]
            finally:
                ws.close()

        got = yield deferToThread(scenario)
        self.assertEqual(len(got), len(expected))
        for index, (have, want) in enumerate(zip(got, expected)):
            self.assertEqual(have, want, index)
        yield self.assert_still_serving()


class TLSWireTests(TestCase):
    """Over TLS each turn's frames are one TLS write, encrypted at once and sent directly while
    nothing is queued, through Twisted's TLS and TCP buffers otherwise: in order either way."""

    def listen(self, **options):
        """An echoing Engine.IO server behind ``listenSSL``; returns (server, url, pki)."""
        folder = self.mktemp()
        os.makedirs(folder)
        pki = make_pki(folder)
        server = EngineIOServer(reactor, Echo, **options)
        self.addCleanup(server.close)
        root = Resource()
        root.putChild(b"socket.io", server.resource)
        port = reactor.listenSSL(
            0, Site(root), certificate_options(pki["chain"], pki["key"]), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return server, f"wss://127.0.0.1:{port.getHost().port}/socket.io/?EIO=4&transport=websocket", pki

    def connect(self, url, pki):
        ws = websocket.create_connection(
            url, timeout=10, sslopt={"ca_certs": pki["root"], "server_hostname": "127.0.0.1"}
        )
        return ws, json.loads(ws.recv()[1:])["sid"]

    @defer.inlineCallbacks
    def test_wss_echo_in_order_and_joined(self):
        server, url, pki = self.listen()
        ws, sid = yield deferToThread(self.connect, url, pki)
        protocol = server.sessions[sid]._ws
        self.assertIsNone(protocol._direct)
        writes = []
        encrypt = _internals._encrypt
        self.patch(_internals, "_encrypt", lambda conn, data: (writes.append(len(data)), encrypt(conn, data))[1])
        aggregated = []
        aggregator_write = protocol.transport.write
        protocol.transport.write = lambda data: (aggregated.append(len(data)), aggregator_write(data))

        def exchange():
            texts = [f"4over tls {i} " + "ö" * (i * 7) for i in range(100)]
            ws.sock.sendall(b"".join(client_frame(t) for t in texts))
            return texts, [ws.recv() for _ in texts]

        try:
            sent, received = yield deferToThread(exchange)
            through_twisted = list(aggregated)  # before the close frame, which goes that way
        finally:
            yield deferToThread(ws.close)
        self.assertEqual(received, sent)
        # 100 echoes, fewer TLS writes: each reactor turn's frames went to OpenSSL joined, and
        # none took Twisted's aggregating write (a second buffer and turn per connection).
        self.assertGreater(len(writes), 0)
        self.assertLess(len(writes), 100)
        self.assertEqual(through_twisted, [])

    @defer.inlineCallbacks
    def test_open_tls_connection_has_the_attributes_write_tls_reads(self):
        """The private names of Twisted's TLS transport that ``_write_tls`` relies on."""
        server, url, pki = self.listen()
        ws, sid = yield deferToThread(self.connect, url, pki)
        self.addCleanup(deferToThread, ws.close)
        tls = server.sessions[sid]._ws.transport
        self.assertIs(type(tls), BufferingTLSTransport)
        self.assertIs(type(tls._aggregator), _AggregateSmallWrites)
        self.assertEqual(tls._aggregator._buffer, [])
        self.assertIsInstance(tls._tlsConnection, SSL.Connection)
        # What _encrypt calls instead of Connection.send and bio_read (pyOpenSSL's bindings).
        self.assertTrue(callable(tls._tlsConnection._raise_ssl_error))
        typeof = _internals._ssl_ffi.typeof
        self.assertEqual(typeof(tls._tlsConnection._ssl).cname, "SSL *")
        self.assertEqual(typeof(tls._tlsConnection._from_ssl).cname, "BIO *")
        self.assertTrue(callable(_internals._ssl_lib.SSL_write))
        self.assertTrue(callable(_internals._ssl_lib.BIO_read))
        self.assertTrue(tls._handshakeDone)
        self.assertEqual(tls._appSendBuffer, [])
        self.assertFalse(tls._lostTLSConnection)
        self.assertFalse(tls.disconnecting)
        self.assertIs(direct_socket(tls.transport), tls.transport.socket)

    @defer.inlineCallbacks
    def test_wss_reader_that_pauses_gets_every_byte_in_order(self):
        """
        8 MB while the client sleeps: the records the kernel does not take wait in the TCP
        buffer, later frames queue behind them through Twisted's path, and the client then
        reads it all, in order.
        """
        server, url, pki = self.listen(max_backlog=64_000_000)
        ws, sid = yield deferToThread(self.connect, url, pki)
        got = yield _flood_then_read(server, ws, sid)
        self.assertEqual(got, [f"4{i:04d}" for i in range(_FLOOD)])


class EncryptTests(SynchronousTestCase):
    """``_internals._encrypt``: SSL_write and the BIO's records through pyOpenSSL's bindings."""

    def setUp(self):
        folder = self.mktemp()
        os.makedirs(folder)
        pki = make_pki(folder)
        server_context = SSL.Context(SSL.TLS_METHOD)
        server_context.use_certificate_file(pki["leaf"])
        server_context.use_privatekey_file(pki["key"])
        self.server = SSL.Connection(server_context)
        self.server.set_accept_state()
        self.client = SSL.Connection(SSL.Context(SSL.TLS_METHOD))
        self.client.set_connect_state()
        for _ in range(10):
            for connection in (self.client, self.server):
                try:
                    connection.do_handshake()
                except SSL.WantReadError:
                    pass
            self._move(self.client, self.server)
            self._move(self.server, self.client)

    @staticmethod
    def _move(source, target):
        try:
            target.bio_write(source.bio_read(1 << 20))
        except SSL.WantReadError:
            pass

    def _decrypted(self, records):
        for record in records:
            self.client.bio_write(record)
        received = b""
        while True:
            try:
                received += self.client.recv(1 << 20)
            except SSL.WantReadError:
                return received

    def test_records_decrypt_to_the_data_small_and_over_the_buffer(self):
        """A frame, and 300 kB (three reads of the 128 KiB buffer): the client reads them back."""
        for data in (b"\x81\x05hello", bytes(range(256)) * 1200):
            records = _internals._encrypt(self.server, data)
            self.assertEqual(self._decrypted(records), data)
        self.assertGreater(len(records), 1)

    def test_failed_write_stops_with_what_was_taken_and_clears_openssl_errors(self):
        """After the TLS session is shut down SSL_write fails: nothing taken, no error left."""
        self.server.shutdown()
        with self.assertRaises(_internals._EncryptStopped) as stopped:
            _internals._encrypt(self.server, b"late")
        self.assertEqual(stopped.exception.taken, 0)
        self.assertEqual(_internals._ssl_lib.ERR_peek_error(), 0)
