"""
What one client may send or leave behind, on real sockets: strict JSON, attachment and byte caps,
packets per POST and per reactor turn. Each refusal closes that one session with a reason (the
websocket's close frame, the POST's 400 answer) and one log line; the others go on.
"""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from ilchat.engineio.server import MAX_FRAMES_PER_TURN, MAX_PACKETS_PER_POST
from ilchat.socketio.packets import MAX_ATTACHMENTS
from tests.engineio.support import handshake, http
from tests.ilias.repository_support import wait_until
from tests.socketio.support import serve_app
from tests.support.rawsocket import RawSocketIO, masked_frame


class LogLines:
    """The log events of a test, as text, from the global publisher."""

    def __init__(self, test: TestCase) -> None:
        self.events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        test.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def matching(self, text: str) -> List[Dict[str, Any]]:
        """ilchat's own events whose text holds ``text`` (not the access log)."""
        return [
            e
            for e in self.events
            if str(e.get("log_namespace", "")).startswith("ilchat") and text in formatEvent(e)
        ]


async def echoed(client: RawSocketIO, text: str) -> None:
    """Send ``message`` with ``text`` and wait for the App's ``message-back``."""
    await client.send("42" + json.dumps(["message", text]))
    expected = "42" + json.dumps(["message-back", text], separators=(",", ":"))
    while True:
        packet = await client.recv()
        if packet == expected:
            return


class StrictJSONTests(TestCase):
    #: Each of these closes its connection with close code 1002 and a reason naming the fault.
    REFUSED = {
        '42["message",1e999]': "number out of range",
        '42["message",-1e999]': "number out of range",
        '42["message",NaN]': "NaN is not JSON",
        '42["message",Infinity]': "Infinity is not JSON",
        '42["message","\\ud800"]': "lone surrogate",
        '42["message",{"\\udc00x":1}]': "lone surrogate",
        '42["message",' + "[" * 40 + "]" * 40 + "]": "nested deeper than 32",
        '42["message",' + "7" * 5000 + "]": "integer of more than 32 digits",
        "42" + "1" * 5000 + '["message"]': "ack id of more than 15 digits",
        "45" + "9" * 5000 + '-["message",{"_placeholder":true,"num":0}]': "more than 10 attachments",
    }

    async def test_each_refusal_closes_only_that_connection_with_its_reason(self):
        """Every bad packet closes its own websocket (1002 + reason), logs one line, no traceback."""
        base, app = serve_app(self)
        logs = LogLines(self)
        good = await RawSocketIO(base).open("/")
        self.addCleanup(good.close)
        for packet, reason in self.REFUSED.items():
            bad = await RawSocketIO(base).open("/")
            self.addCleanup(bad.close)
            await bad.send(packet)
            closed = await bad.until_closed()
            self.assertEqual(closed.code, 1002, packet[:60])
            self.assertIn(reason, closed.reason, packet[:60])
            # One line at most: a fault repeated from one address within 10 s is only counted.
            self.assertLessEqual(len(logs.matching(bad.sid)), 1, packet[:60])
            # The other connection is untouched.
            await echoed(good, f"after {packet[:20]}")
        for reason in set(self.REFUSED.values()):
            self.assertEqual(len(logs.matching(reason)), 1, reason)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([e for e in logs.events if e.get("log_failure")], [])

    async def test_the_same_fault_repeated_is_logged_once_with_a_count(self):
        """Twenty connections failing alike from one address: one line, then one with the count."""
        base, app = serve_app(self)
        logs = LogLines(self)
        for _ in range(20):
            bad = await RawSocketIO(base).open("/")
            self.addCleanup(bad.close)
            await bad.send('42["message",NaN]')
            await bad.until_closed()
        self.assertEqual(len(logs.matching("NaN is not JSON")), 1)
        app.server.engineio.repeated_log.flush()
        counted = logs.matching("(repeated 19 times in")
        self.assertEqual(len(counted), 1)
        self.assertIn("NaN is not JSON", formatEvent(counted[0]))

    async def test_polling_post_is_answered_400_with_the_reason(self):
        """Over long-polling the POST that carried the bad packet gets 400 and the reason."""
        base, _ = serve_app(self)
        sid, _ = await handshake(base)
        url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http("POST", url, b"40")
        response = await http("POST", url, b'42["message",1e999]')
        self.assertEqual(response.code, 400)
        self.assertEqual(response.json()["code"], 3)
        self.assertIn("number out of range", response.json()["message"])
        response = await http("GET", url)
        self.assertEqual(response.code, 400)  # the session is gone


class AttachmentAndBufferTests(TestCase):
    async def test_a_billion_attachments_are_refused_at_once(self):
        """The announcement itself closes the connection; 1 MB of frames right behind it is dropped."""
        base, app = serve_app(self)
        engine = app.server.engineio
        client = await RawSocketIO(base).open("/")
        self.addCleanup(client.close)
        session = engine.sessions[client.sid]
        announcement = masked_frame(b'45999999999-["message",{"_placeholder":true,"num":0}]')
        stream = b"".join(masked_frame(b"\0" * 50_000, binary=True) for _ in range(20))
        try:
            await client.send_raw(announcement + stream)
        except OSError:
            pass  # the server may have dropped the TCP connection before taking it all
        closed = await client.until_closed()
        self.assertEqual(closed.code, 1002)
        self.assertIn(f"more than {MAX_ATTACHMENTS} attachments", closed.reason)
        self.assertEqual(engine.sessions, {})
        self.assertEqual((session.buffered, session.held, session.handler), (0, 0, None))

    async def test_attachments_over_the_byte_cap_close_the_session(self):
        """Pending attachments count against the session's bytes: over the cap, it is closed."""
        base, app = serve_app(self, max_payload=100_000, max_backlog=300_000)
        engine = app.server.engineio
        client = await RawSocketIO(base).open("/")
        self.addCleanup(client.close)
        placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(10))
        await client.send(f'4510-["message",{placeholders}]')
        for _ in range(3):
            await client.send(b"\1" * 90_000)
        session = await wait_until(lambda: engine.sessions.get(client.sid), what="session")
        await wait_until(lambda: session.buffered == 270_000, what="270,000 bytes held")
        self.assertEqual(session.held, 270_000)
        await client.send(b"\1" * 90_000)
        closed = await client.until_closed()
        self.assertEqual(closed.code, 1008)
        self.assertIn("more than 300000 bytes buffered", closed.reason)
        self.assertNotIn(client.sid, engine.sessions)
        self.assertEqual(session.buffered, 0)

    async def test_ten_attachments_within_the_cap_arrive(self):
        """What a real client may send (a few attachments, inside the byte cap) still works."""
        base, app = serve_app(self)
        client = await RawSocketIO(base).open("/")
        self.addCleanup(client.close)
        placeholders = ",".join(f'{{"_placeholder":true,"num":{i}}}' for i in range(10))
        await client.send(f'4510-["message",{placeholders}]')
        for i in range(10):
            await client.send(bytes([i]) * 10)
        header = await client.recv()
        while not (isinstance(header, str) and header.startswith("4510-")):
            header = await client.recv()
        echoed_buffers = [await client.recv() for _ in range(10)]
        self.assertEqual(echoed_buffers, [bytes([i]) * 10 for i in range(10)])

    async def test_polling_client_that_never_polls_is_closed_at_the_cap(self):
        """Messages for a polling client that stopped polling pile up to the byte cap, no further."""
        base, app = serve_app(self, max_payload=20_000, max_backlog=50_000)
        engine = app.server.engineio
        logs = LogLines(self)
        sid, _ = await handshake(base)
        url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http("POST", url, b"40")
        await http("GET", url)  # the CONNECT answer; from now on the client never polls
        session = engine.sessions[sid]
        namespace = app.server.namespace("/")
        sizes = []
        for _ in range(100):
            namespace.emit("news", "x" * 1000)
            if session.closed:
                break
            sizes.append(session.buffered)
        self.assertTrue(session.closed)
        self.assertLessEqual(max(sizes), 50_000)
        self.assertGreater(max(sizes), 45_000)
        self.assertNotIn(sid, engine.sessions)
        self.assertEqual(len(logs.matching(f"{sid}: client does not poll")), 1)


class PacketsPerPostAndTurnTests(TestCase):
    async def test_a_post_of_thousands_of_packets_is_refused_quickly(self):
        """27,777 packets in one POST: 400 with the reason at once, the session closed."""
        base, app = serve_app(self)
        logs = LogLines(self)
        sid, _ = await handshake(base)
        url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http("POST", url, b"40")
        body = "\x1e".join(['42["unknown-event",1]'] * 27_777).encode()
        started = time.monotonic()
        response = await http("POST", url, body)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertEqual(response.code, 400)
        self.assertIn(f"more than {MAX_PACKETS_PER_POST} packets", response.json()["message"])
        self.assertNotIn(sid, app.server.engineio.sessions)
        self.assertEqual(len(logs.matching(sid)), 1, [e["log_format"] for e in logs.matching(sid)])

    async def test_a_post_within_the_cap_is_handled_whole(self):
        """Up to the cap, every packet of a POST reaches the application, in order."""
        base, app = serve_app(self)
        seen = []
        app.server.namespace("/").on("count", lambda socket, n: seen.append(n))
        sid, _ = await handshake(base)
        url = f"{base}/socket.io/?EIO=4&transport=polling&sid={sid}"
        await http("POST", url, b"40")
        body = "\x1e".join(f'42["count",{i}]' for i in range(MAX_PACKETS_PER_POST)).encode()
        response = await http("POST", url, body)
        self.assertEqual((response.code, response.body), (200, b"ok"))
        self.assertEqual(seen, list(range(MAX_PACKETS_PER_POST)))

    async def test_websocket_messages_are_handled_in_slices_per_turn(self):
        """1,000 frames in one write: at most MAX_FRAMES_PER_TURN per turn, all of them in order."""
        base, app = serve_app(self)
        seen: List[int] = []
        per_turn: List[int] = []

        def count(socket, n):
            if not per_turn or per_turn[-1] != -1:
                per_turn.append(-1)
                at_start = len(seen)

                def turn_over():
                    per_turn[-1] = len(seen) - at_start

                reactor.callLater(0, turn_over)
            seen.append(n)

        app.server.namespace("/").on("count", count)
        client = await RawSocketIO(base).open("/")
        self.addCleanup(client.close)
        frames = b"".join(masked_frame(f'42["count",{i}]'.encode()) for i in range(1000))
        await client.send_raw(frames)
        await wait_until(lambda: len(seen) == 1000, what="1000 messages")
        await wait_until(lambda: per_turn[-1] != -1, what="last turn")
        self.assertEqual(seen, list(range(1000)))
        self.assertLessEqual(max(per_turn), MAX_FRAMES_PER_TURN)
        self.assertGreaterEqual(len(per_turn), 1000 // MAX_FRAMES_PER_TURN)
