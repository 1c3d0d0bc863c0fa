"""The real socket.io-client 4.8 from npm (what browsers run) against ilchat.

The Node scripts live in ``tests/js``; ``npm install`` there provides socket.io-client.  Each test
runs a script as a subprocess and checks the JSON it prints.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from tests.socketio.support import serve_app

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def node_script(name: str) -> tuple[str, str]:
    """The node binary and script path, or skip when Node or socket.io-client is missing."""
    node = shutil.which("node")
    if node is None:
        raise SkipTest("node is not installed (apt-get install nodejs npm; scripts/test then runs npm ci in tests/js)")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        raise SkipTest("socket.io-client missing: run scripts/test (or npm ci in tests/js)")
    return node, str(JS_DIR / name)


@defer.inlineCallbacks
def run_node(name: str, *args: str):
    node, script = node_script(name)
    out, err, code = yield getProcessOutputAndValue(
        node, [script, *args], env=dict(os.environ), path=str(JS_DIR), reactor=reactor
    )
    return json.loads(out.decode().strip().splitlines()[-1] or "{}"), err.decode(), code


class SocketIOClientTests(TestCase):
    """socket.io-client 4.8: events, binary, acks both ways, namespaces, rooms, disconnects."""

    timeout = 60

    @defer.inlineCallbacks
    def check(self, transports: str, expected_transport: str):
        base, app = serve_app(self)
        result, err, code = yield run_node("scenario.js", base, transports)
        self.assertEqual(code, 0, (result, err))
        self.assertEqual(result["auth"], {"token": "abc"})
        self.assertEqual(result["message_back"], [1, "two", {"bin": {"$bin": "010203"}}])
        self.assertEqual(result["ack"], ["a", {"$bin": "ff"}])
        self.assertEqual(result["answer"], ["why!", {"$bin": "07"}])
        self.assertEqual(result["custom_auth"], {})
        self.assertTrue(result["same_engine"])
        self.assertEqual(result["refused"], "Invalid namespace")
        self.assertEqual(result["room"], ["hello room"])
        self.assertEqual(result["disconnect_reason"], "io server disconnect")
        self.assertEqual(result["transport"], expected_transport)
        disconnected = yield app.wait_disconnects(2)
        reasons = {(ns, reason) for ns, _, reason in disconnected}
        self.assertEqual(
            reasons,
            {("/custom", "client namespace disconnect"), ("/", "server namespace disconnect")},
        )

    def test_websocket_only(self):
        """socket.io-client with ``transports: ["websocket"]``."""
        return self.check("websocket", "websocket")

    def test_polling_only(self):
        """socket.io-client with ``transports: ["polling"]``."""
        return self.check("polling", "polling")

    def test_polling_with_upgrade(self):
        """socket.io-client's default: polling, then the upgrade to websocket."""
        return self.check("polling,websocket", "websocket")


class BroadcastTests(TestCase):
    """Fan-out: one room broadcast reaches 1,000 websocket clients."""

    timeout = 90

    @defer.inlineCallbacks
    def test_thousand_websocket_clients_in_one_room_each_receive_a_broadcast(self):
        """1,000 socket.io-client websockets join one room; one broadcast reaches all of them."""
        base, app = serve_app(self)
        started = time.monotonic()
        result, err, code = yield run_node("many.js", base, "1000")
        elapsed = time.monotonic() - started
        self.assertEqual(code, 0, (result, err[-2000:]))
        self.assertEqual(result["received"], 1000)
        self.assertLess(elapsed, 30.0, result)
        # Left in the test log for whoever tunes fan-out.
        print(f"\n1000 clients: connect+join {result['connected_ms']} ms, "
              f"broadcast delivered in {result['delivered_ms']} ms, total {elapsed:.1f} s")
