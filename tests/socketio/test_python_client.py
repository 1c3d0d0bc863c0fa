"""The python-socketio client (code we did not write) against ilchat's Socket.IO server.

The client is synchronous, so each scenario runs in a thread while the reactor serves it.
"""

from __future__ import annotations

import queue

import socketio
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.socketio.support import serve_app


def run_scenario(base: str, transports: list[str]) -> dict:
    """Events, binary, acks both ways, two namespaces, a refused one, a server disconnect."""
    seen: "queue.Queue[tuple]" = queue.Queue()
    sio = socketio.Client(reconnection=False)
    for ns in ("/", "/custom"):
        for event in ("auth", "message-back", "answer-received", "joined", "shouted"):
            sio.on(event, (lambda e, n: lambda *args: seen.put((n, e, args)))(event, ns), namespace=ns)
        sio.on("disconnect", (lambda n: lambda *a: seen.put((n, "disconnect", a)))(ns), namespace=ns)
    sio.on("question", lambda q: (q + "!", b"\x07"))

    def next_event(name, ns="/"):
        while True:
            got = seen.get(timeout=5)
            if got[0] == ns and got[1] == name:
                return got[2]

    result: dict = {}
    sio.connect(base, namespaces=["/", "/custom"], transports=transports, auth={"token": "abc"},
                wait_timeout=5)
    try:
        result["auth"] = next_event("auth")
        result["custom_auth"] = next_event("auth", "/custom")
        sio.emit("message", (1, "two", {"bin": b"\x01\x02\x03"}))
        result["message_back"] = next_event("message-back")
        result["ack"] = sio.call("message-with-ack", ("a", b"\xff"), timeout=5)
        result["slow_ack"] = sio.call("slow", 5, timeout=5)
        sio.emit("boom")
        result["after_boom"] = sio.call("message-with-ack", "still here", timeout=5)
        sio.emit("ask", "why")
        result["answer"] = next_event("answer-received")
        sio.emit("join", "lobby", namespace="/custom")
        next_event("joined", "/custom")
        sio.emit("shout", ("lobby", "hello room"), namespace="/custom")
        result["room"] = next_event("shouted", "/custom")
        for ns in ("/nope", "/private"):
            other = socketio.Client(reconnection=False)
            other.on("connect_error", (lambda n: lambda data: result.setdefault(n, data))(ns),
                     namespace=ns)
            try:
                other.connect(base, namespaces=[ns], transports=transports, wait_timeout=5)
                result[ns] = "connected"
            except socketio.exceptions.ConnectionError:
                pass
            finally:
                other.disconnect()
                if getattr(other.eio, "http", None) is not None:
                    other.eio.http.close()
        result["transport"] = sio.transport()
        sio.emit("bye")
        result["server_disconnect"] = next_event("disconnect")
    finally:
        sio.disconnect()
        # The polling transport's requests.Session keeps idle keep-alive connections open.
        if getattr(sio.eio, "http", None) is not None:
            sio.eio.http.close()
    return result


class PythonClientTests(TestCase):
    """Same scenario over websocket only, polling only, and polling upgraded to websocket."""

    @defer.inlineCallbacks
    def check(self, transports, expected_transport):
        # A short heartbeat: python-engineio's polling writer may stop before it posts the final
        # DISCONNECT/CLOSE (its loop re-checks its state after each POST), and then only a missed
        # pong tells the server that /custom has gone.
        base, app = serve_app(self, ping_interval=1, ping_timeout=1)
        result = yield deferToThread(run_scenario, base, transports)
        self.assertEqual(result["auth"], ({"token": "abc"},))
        self.assertEqual(result["custom_auth"], ({"token": "abc"},))
        self.assertEqual(result["message_back"], (1, "two", {"bin": b"\x01\x02\x03"}))
        self.assertEqual(result["ack"], ("a", b"\xff"))
        self.assertEqual(result["slow_ack"], ("later", 5))
        self.assertEqual(result["after_boom"], "still here")
        self.assertEqual(result["answer"], ("why!", b"\x07"))
        self.assertEqual(result["room"], ("hello room",))
        self.assertEqual(result["/nope"], {"message": "Invalid namespace"})
        self.assertEqual(
            result["/private"], {"message": "Not allowed here", "data": {"reason": "test"}}
        )
        self.assertEqual(result["transport"], expected_transport)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        disconnected = yield app.wait_disconnects(2)
        reasons = {(ns, reason) for ns, _, reason in disconnected}
        self.assertIn(("/", "server namespace disconnect"), reasons)
        self.assertEqual([ns for ns, _ in app.connected], ["/", "/custom"])

    def test_websocket_only(self):
        """A websocket-only python-socketio client gets every feature."""
        return self.check(["websocket"], "websocket")

    def test_polling_only(self):
        """A polling-only python-socketio client gets every feature."""
        return self.check(["polling"], "polling")

    def test_polling_with_upgrade(self):
        """The default client starts polling and upgrades to websocket."""
        return self.check(["polling", "websocket"], "websocket")
