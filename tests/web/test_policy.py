"""
Tests for L{ilchat.web.policy}: the pure parts first (addresses, proxies, origins, counters,
token bucket), then the policy as seen by a real HTTP client through a real C{Site} on loopback.
"""

import json

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from ilchat.web.policy import (
    AddressList,
    ConnectionCounter,
    NetworkPolicy,
    OriginMatcher,
    PolicyGuardResource,
    parse_address,
    parse_network,
    resolve_client_address,
)


class AddressListTests(SynchronousTestCase):
    """CIDR matching for the allow-list and the trusted proxies."""

    def test_ipv4_cidr_contains_addresses_inside_only(self):
        """A /24 contains its own addresses and nothing next to it."""
        networks = AddressList(["192.168.10.0/24"])
        self.assertTrue(networks.contains("192.168.10.1"))
        self.assertTrue(networks.contains("192.168.10.255"))
        self.assertFalse(networks.contains("192.168.11.1"))

    def test_ipv6_cidr(self):
        """IPv6 networks work, and an IPv4 address is never inside an IPv6 network."""
        networks = AddressList(["2001:db8::/32"])
        self.assertTrue(networks.contains("2001:db8:1::5"))
        self.assertFalse(networks.contains("2001:db9::1"))
        self.assertFalse(networks.contains("10.0.0.1"))

    def test_single_address_is_a_host_network(self):
        """A bare address in the config means exactly that host."""
        networks = AddressList(["127.0.0.1", "::1"])
        self.assertTrue(networks.contains("127.0.0.1"))
        self.assertFalse(networks.contains("127.0.0.2"))
        self.assertTrue(networks.contains("::1"))

    def test_ipv4_mapped_ipv6_matches_ipv4_cidr(self):
        """A dual-stack listener reports ::ffff:a.b.c.d; it must match the IPv4 CIDR."""
        self.assertTrue(AddressList(["10.0.0.0/8"]).contains("::ffff:10.1.2.3"))

    def test_garbage_address_is_never_contained(self):
        """Text that is not an address (a forged header, "unknown") matches nothing."""
        networks = AddressList(["0.0.0.0/0", "::/0"])
        self.assertFalse(networks.contains("unknown"))
        self.assertFalse(networks.contains(""))
        self.assertFalse(networks.contains(None))

    def test_host_bits_are_ignored_as_firewalls_do(self):
        """10.1.2.3/8 is read as 10.0.0.0/8 instead of being refused."""
        self.assertEqual(str(parse_network("10.1.2.3/8")), "10.0.0.0/8")

    def test_bad_cidr_raises_value_error_naming_it(self):
        """A typo in a CIDR is reported with the offending text."""
        error = self.assertRaises(ValueError, parse_network, "10.0.0.300/8")
        self.assertIn("10.0.0.300/8", str(error))

    def test_parse_address_accepts_port_and_brackets(self):
        """Proxies write 1.2.3.4:5678 or [2001:db8::1]:443; the address is what counts."""
        self.assertEqual(str(parse_address("1.2.3.4:5678")), "1.2.3.4")
        self.assertEqual(str(parse_address("[2001:db8::1]:443")), "2001:db8::1")
        self.assertEqual(str(parse_address(" 2001:db8::1 ")), "2001:db8::1")


class ResolveClientAddressTests(SynchronousTestCase):
    """X-Forwarded-For is believed only from trusted proxies, right-most untrusted hop first."""

    proxies = AddressList(["10.0.0.0/24", "fd00::/8"])

    def test_header_from_untrusted_peer_is_ignored(self):
        """Anyone can send X-Forwarded-For; from an untrusted peer the peer itself is the client."""
        self.assertEqual(
            resolve_client_address("203.0.113.9", ["127.0.0.1"], self.proxies), "203.0.113.9"
        )

    def test_header_from_trusted_proxy_gives_client(self):
        """A trusted proxy's header names the client."""
        self.assertEqual(
            resolve_client_address("10.0.0.5", ["198.51.100.7"], self.proxies), "198.51.100.7"
        )

    def test_right_most_untrusted_entry_wins_over_forged_left_entries(self):
        """
        The client may prepend anything; only the entry our proxy appended (the right-most one
        that is not a proxy of ours) is the real address.
        """
        self.assertEqual(
            resolve_client_address(
                "10.0.0.5", ["127.0.0.1, 198.51.100.7, 10.0.0.6"], self.proxies
            ),
            "198.51.100.7",
        )

    def test_several_header_lines_are_one_list(self):
        """Two X-Forwarded-For header lines are read as one comma-separated list, in order."""
        self.assertEqual(
            resolve_client_address("10.0.0.5", ["1.1.1.1", "198.51.100.7"], self.proxies),
            "198.51.100.7",
        )

    def test_chain_of_only_proxies_gives_left_most(self):
        """If every hop is a trusted proxy, the left-most one is the best we know."""
        self.assertEqual(
            resolve_client_address("10.0.0.5", ["10.0.0.7, 10.0.0.6"], self.proxies), "10.0.0.7"
        )

    def test_garbled_entry_stops_the_walk(self):
        """A garbled hop cannot be used: the last good hop the proxy wrote stands."""
        self.assertEqual(
            resolve_client_address("10.0.0.5", ["1.2.3.4, garbage"], self.proxies), "10.0.0.5"
        )

    def test_ipv6_proxy_and_client(self):
        """IPv6 proxies and clients resolve like IPv4 ones."""
        self.assertEqual(
            resolve_client_address("fd00::1", ["2001:db8::42"], self.proxies), "2001:db8::42"
        )

    def test_no_header_from_proxy_gives_proxy(self):
        """A trusted proxy that sends no header is itself the client (a health check)."""
        self.assertEqual(resolve_client_address("10.0.0.5", [], self.proxies), "10.0.0.5")


class OriginMatcherTests(SynchronousTestCase):
    """Allowed origins, with wildcards as in Kiwi IRC's gateway."""

    def test_empty_list_allows_no_origin(self):
        """No patterns match no origin (the policy adds the request's own host on top)."""
        self.assertFalse(OriginMatcher([]).allows("https://evil.example"))
        self.assertTrue(OriginMatcher([]).allows(None))

    def test_star_allows_everything(self):
        """The single pattern "*" allows every origin, even "null"."""
        self.assertTrue(OriginMatcher(["*"]).allows("null"))

    def test_host_wildcard_matches_any_scheme_and_port(self):
        """*.example.org matches subdomains on http and https and any port, not the apex."""
        matcher = OriginMatcher(["*.example.org"])
        self.assertTrue(matcher.allows("https://chat.example.org"))
        self.assertTrue(matcher.allows("http://a.b.example.org:8080"))
        self.assertFalse(matcher.allows("https://example.org"))
        self.assertFalse(matcher.allows("https://example.org.evil.net"))

    def test_full_origin_pattern_matches_scheme_too(self):
        """https://chat.example.org does not let http://chat.example.org in."""
        matcher = OriginMatcher(["https://chat.example.org"])
        self.assertTrue(matcher.allows("https://chat.example.org"))
        self.assertTrue(matcher.allows("HTTPS://Chat.Example.org"))
        self.assertFalse(matcher.allows("http://chat.example.org"))
        self.assertFalse(matcher.allows("https://chat.example.org.evil.net"))

    def test_full_origin_pattern_with_port_wildcard(self):
        """http://localhost:* matches every port of localhost."""
        matcher = OriginMatcher(["http://localhost:*"])
        self.assertTrue(matcher.allows("http://localhost:5173"))
        self.assertFalse(matcher.allows("http://localhost.evil.net"))

    def test_dots_are_literal(self):
        """A dot in a pattern is a dot, not a regular-expression wildcard."""
        self.assertFalse(OriginMatcher(["chat.example.org"]).allows("https://chatXexample.org"))

    def test_missing_origin_is_allowed(self):
        """Non-browser clients send no Origin; the allow-list, not the origin, keeps them out."""
        self.assertTrue(OriginMatcher(["https://chat.example.org"]).allows(None))

    def test_null_origin_refused_unless_star(self):
        """Sandboxed frames send "null", which only "*" allows."""
        self.assertFalse(OriginMatcher(["*.example.org"]).allows("null"))


class ConnectionCounterTests(SynchronousTestCase):
    """Per-IP connection counting, released explicitly or noticed closed."""

    class Connection:
        """Something counted: the counter holds it weakly (the owner holds it here)."""

        disconnected = 0
        alive: list = []

        def __init__(self):
            self.alive.append(self)

    def test_limit_refuses_one_more(self):
        """Once an address holds the limit, the next add fails; other addresses are free."""
        counter = ConnectionCounter(2)
        self.assertTrue(counter.add("10.0.0.1", self.Connection()))
        self.assertTrue(counter.add("10.0.0.1", self.Connection()))
        self.assertFalse(counter.add("10.0.0.1", self.Connection()))
        self.assertTrue(counter.add("10.0.0.2", self.Connection()))

    def test_release_frees_a_slot_and_forgets_idle_addresses(self):
        """A release makes room again; with none left the address is forgotten (no leak)."""
        counter = ConnectionCounter(1)
        connection = self.Connection()
        counter.add("10.0.0.1", connection)
        counter.release("10.0.0.1", connection)
        self.assertEqual(counter._open, {})
        self.assertTrue(counter.add("10.0.0.1", self.Connection()))

    def test_no_limit(self):
        """A limit of 0 or None counts but never refuses."""
        counter = ConnectionCounter(0)
        for _ in range(100):
            self.assertTrue(counter.add("10.0.0.1", self.Connection()))
        self.assertEqual(counter.count("10.0.0.1"), 100)

    def test_extra_release_does_not_go_negative(self):
        """A stray release (or a second one) cannot give an address extra slots."""
        counter = ConnectionCounter(1)
        connection = self.Connection()
        counter.release("10.0.0.1", connection)
        self.assertTrue(counter.add("10.0.0.1", connection))
        counter.release("10.0.0.1", self.Connection())
        self.assertFalse(counter.add("10.0.0.1", self.Connection()))

    def test_track_counts_beyond_the_limit(self):
        """What the caller lets in anyway (the grace sessions) is counted all the same."""
        counter = ConnectionCounter(1)
        counter.track("10.0.0.1", self.Connection())
        counter.track("10.0.0.1", self.Connection())
        self.assertEqual(counter.count("10.0.0.1"), 2)
        self.assertFalse(counter.add("10.0.0.1", self.Connection()))

    def test_holds_more_than_prunes_only_near_the_count(self):
        """Below the asked count nothing is scanned; at it, closed connections are pruned first."""
        counter = ConnectionCounter(None)
        first, second = self.Connection(), self.Connection()
        counter.add("10.0.0.1", first)
        counter.add("10.0.0.1", second)
        self.assertFalse(counter.holds_more_than("10.0.0.1", 2))
        self.assertTrue(counter.holds_more_than("10.0.0.1", 1))
        second.disconnected = 1
        self.assertEqual(len(counter._open["10.0.0.1"]), 2)  # not scanned yet
        self.assertFalse(counter.holds_more_than("10.0.0.1", 1))
        self.assertEqual(len(counter._open["10.0.0.1"]), 1)
        self.assertFalse(counter.holds_more_than("10.0.0.9", 0))

    def test_ended_sessions_and_collected_connections_stop_counting(self):
        """An object with ``ended`` set, or one nobody holds any more, no longer counts."""
        counter = ConnectionCounter(2)
        session = self.Connection()
        counter.add("10.0.0.1", session)
        counter.add("10.0.0.1", object.__new__(self.Connection))  # held by nobody
        self.assertEqual(counter.count("10.0.0.1"), 1)
        session.ended = True
        self.assertEqual(counter.count("10.0.0.1"), 0)


class _FakeAddress:
    def __init__(self, host):
        self.host = host


class _FakeRequest:
    """The few request attributes the policy reads; the real thing is tested on loopback below."""

    method = b"GET"
    uri = b"/"

    def __init__(self, peer, headers=None, secure=False):
        from twisted.web.http_headers import Headers

        self._peer = peer
        self._secure = secure
        self.requestHeaders = Headers({k: [v] for k, v in (headers or {}).items()})

    def getClientAddress(self):
        return _FakeAddress(self._peer)

    def isSecure(self):
        return self._secure


class NetworkPolicyTests(SynchronousTestCase):
    """The policy object the transports call."""

    def test_empty_allow_list_allows_everyone(self):
        """Without an allow-list every address may connect."""
        self.assertTrue(NetworkPolicy(clock=Clock()).allows("203.0.113.1"))

    def test_allow_list_refuses_others(self):
        """With an allow-list only its networks get in (the IRC listener uses this call)."""
        policy = NetworkPolicy(allow=["127.0.0.1/32"], clock=Clock())
        self.assertTrue(policy.allows("127.0.0.1"))
        self.assertFalse(policy.allows("127.0.0.2"))

    def test_forwarded_proto_only_from_trusted_proxy(self):
        """X-Forwarded-Proto is believed from a trusted proxy and ignored from anyone else."""
        policy = NetworkPolicy(trusted_proxies=["10.0.0.1"], clock=Clock())
        headers = {b"X-Forwarded-Proto": b"https"}
        self.assertEqual(policy.client_scheme(_FakeRequest("10.0.0.1", headers)), "https")
        self.assertEqual(policy.client_scheme(_FakeRequest("10.0.0.2", headers)), "http")
        self.assertEqual(policy.client_scheme(_FakeRequest("10.0.0.2", secure=True)), "https")

    def test_connection_filter_refuses_outside_address(self):
        """The Engine.IO hook refuses an address outside the allow-list with 403."""
        policy = NetworkPolicy(allow=["127.0.0.1/32"], clock=Clock())
        code, message = policy.connection_filter(_FakeRequest("127.0.0.2"))
        self.assertEqual(code, 403)
        self.assertIn("not allowed", message)
        self.assertIsNone(policy.connection_filter(_FakeRequest("127.0.0.1")))

    def test_connection_filter_refuses_origin(self):
        """The Engine.IO hook refuses a browser origin that is not in the list."""
        policy = NetworkPolicy(allowed_origins=["https://chat.example.org"], clock=Clock())
        refused = _FakeRequest("127.0.0.1", {b"Origin": b"https://evil.example"})
        allowed = _FakeRequest("127.0.0.1", {b"Origin": b"https://chat.example.org"})
        self.assertEqual(policy.connection_filter(refused)[0], 403)
        self.assertIsNone(policy.connection_filter(allowed))

    def test_connection_filter_uses_forwarded_address_from_trusted_proxy(self):
        """The allow-list is applied to the client behind a trusted proxy, not to the proxy."""
        policy = NetworkPolicy(
            allow=["192.168.0.0/16"], trusted_proxies=["127.0.0.1"], clock=Clock()
        )
        inside = _FakeRequest("127.0.0.1", {b"X-Forwarded-For": b"192.168.1.20"})
        outside = _FakeRequest("127.0.0.1", {b"X-Forwarded-For": b"203.0.113.5"})
        self.assertIsNone(policy.connection_filter(inside))
        self.assertEqual(policy.connection_filter(outside)[0], 403)

    def test_from_config_none_has_the_defaults(self):
        """
        No network section: no allow-list, but the generous defaults: same-host origins only,
        2000 sessions and 4000 HTTP connections per address, 10 messages/s (bursts of 30) per
        ILIAS socket, 5/s (bursts of 10) in the standalone chat.
        """
        policy = NetworkPolicy.from_config(None, clock=Clock())
        self.assertTrue(policy.allows("203.0.113.1"))
        self.assertEqual(policy.connections.limit, 2000)
        self.assertEqual(policy.http_connections.limit, 4000)
        request = _FakeRequest("127.0.0.1", {b"Host": b"chat.example.org:8443"})
        self.assertEqual(policy.origin_check(request, "https://chat.example.org"),
                         "https://chat.example.org")
        self.assertIsNone(policy.origin_check(request, "https://evil.example"))
        for bucket, burst in ((policy.ilias_message_bucket(), 30), (policy.message_bucket(), 10)):
            self.assertEqual(sum(bucket.consume()[0] for _ in range(100)), burst)

    def test_message_buckets_are_per_connection(self):
        """Each connection gets its own bucket: one flooder does not throttle the others."""
        clock = Clock()
        policy = NetworkPolicy(message_rate=1, message_burst=1, clock=clock)
        first, second = policy.message_bucket(), policy.message_bucket()
        self.assertTrue(first.consume()[0])
        self.assertFalse(first.consume()[0])
        self.assertTrue(second.consume()[0])


class _Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello"


def _http_get(host, port, path, bind_address=None, headers=None):
    """A blocking GET run in a thread, so that the client can bind a chosen source address."""
    import http.client

    connection = http.client.HTTPConnection(
        host, port, timeout=10, source_address=(bind_address, 0) if bind_address else None
    )
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("content-type"), response.read()
    finally:
        connection.close()


class PolicyGuardResourceTests(TestCase):
    """The HTTP guard in front of a real Site on 127.0.0.1, with clients from two loopbacks."""

    def setUp(self):
        root = Resource()
        root.putChild(b"hello", _Hello())
        self.policy = NetworkPolicy(allow=["127.0.0.1/32"], trusted_proxies=[], clock=reactor)
        site = Site(PolicyGuardResource(root, self.policy))
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.port_number = self.port.getHost().port

    def _get(self, path, bind_address=None, headers=None):
        from twisted.internet.threads import deferToThread

        return deferToThread(
            _http_get, "127.0.0.1", self.port_number, path, bind_address, headers
        )

    @defer.inlineCallbacks
    def test_allowed_address_reaches_the_resource(self):
        """A client from 127.0.0.1 gets the page."""
        status, _, body = yield self._get("/hello", "127.0.0.1")
        self.assertEqual((status, body), (200, b"hello"))

    @defer.inlineCallbacks
    def test_other_loopback_address_gets_403_json(self):
        """A client bound to 127.0.0.2 is outside 127.0.0.1/32: 403 with a JSON body."""
        status, content_type, body = yield self._get("/hello", "127.0.0.2")
        self.assertEqual(status, 403)
        self.assertTrue(content_type.startswith("application/json"))
        self.assertEqual(json.loads(body)["status"], 403)

    @defer.inlineCallbacks
    def test_root_is_guarded_too(self):
        """A request for / (rendered by the root itself) is refused as well."""
        status, _, _ = yield self._get("/", "127.0.0.2")
        self.assertEqual(status, 403)

    @defer.inlineCallbacks
    def test_forged_forwarded_for_from_untrusted_peer_does_not_help(self):
        """127.0.0.2 claiming to forward for 127.0.0.1 is still refused: it is no proxy of ours."""
        status, _, _ = yield self._get(
            "/hello", "127.0.0.2", {"X-Forwarded-For": "127.0.0.1"}
        )
        self.assertEqual(status, 403)

    @defer.inlineCallbacks
    def test_trusted_proxy_forwarding_outside_client_is_refused(self):
        """Behind a trusted proxy the allow-list applies to the forwarded client address."""
        self.policy.allow = AddressList(["192.168.0.0/16"])
        self.policy.trusted_proxies = AddressList(["127.0.0.1"])
        refused, _, _ = yield self._get("/hello", "127.0.0.1", {"X-Forwarded-For": "203.0.113.5"})
        allowed, _, _ = yield self._get("/hello", "127.0.0.1", {"X-Forwarded-For": "192.168.3.4"})
        self.assertEqual((refused, allowed), (403, 200))

    def test_refusal_is_logged_with_real_address(self):
        """The log line names the resolved client address."""
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        d = self._get("/hello", "127.0.0.2")

        def check(_):
            addresses = [e.get("address") for e in events if "allow-list" in e.get("log_format", "")]
            self.assertIn("127.0.0.2", addresses)

        return d.addCallback(check)


def _raw_request(port, path, bind_address="127.0.0.1", headers=None, method="GET", body=None):
    """
    One HTTP request from a chosen loopback source address (blocking; run it in a thread).

    Returns ``(status, headers, body)``; a ``101 Switching Protocols`` answer is not read further.
    """
    import http.client

    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(bind_address, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        if response.status == 101:
            return 101, dict(response.getheaders()), b""
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


async def _let_websocket_timers_run():
    """
    A websocket we opened and dropped leaves Autobahn's batched close timer (under a second);
    let it run so that the reactor is clean when the test ends.
    """
    from twisted.internet.task import deferLater

    await deferLater(reactor, 1.2, lambda: None)


WEBSOCKET_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
POLLING = "/socket.io/?EIO=4&transport=polling"
WEBSOCKET = "/socket.io/?EIO=4&transport=websocket"


class NetworkPolicyServerTests(TestCase):
    """
    The policy in a whole ilchat server (standalone chat, SQLite) on 127.0.0.1, with clients
    bound to 127.0.0.1 or 127.0.0.2: HTTP, Engine.IO polling and websocket.
    """

    async def start(self, network):
        from ilchat.standalone import StandaloneChat
        from tests.support.server import start_server

        self.server = await start_server(
            self,
            server={"network": network},
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        return self.server

    def request(self, path, bind_address="127.0.0.1", headers=None, method="GET", body=None):
        from twisted.internet.threads import deferToThread

        return deferToThread(
            _raw_request, self.server.port, path, bind_address, headers, method, body
        )

    async def test_second_loopback_address_is_refused_everywhere(self):
        """
        With only 127.0.0.1/32 allowed, 127.0.0.2 gets 403 JSON for the page, the backend,
        polling and the websocket upgrade; 127.0.0.1 gets through; the log names 127.0.0.2.
        """
        await self.start({"allow": ["127.0.0.1/32"]})
        for path, headers in (
            ("/", None),
            ("/backend/Heartbeat/team", None),
            (POLLING, None),
            (WEBSOCKET, WEBSOCKET_HEADERS),
        ):
            status, response_headers, body = await self.request(path, "127.0.0.2", headers)
            self.assertEqual(status, 403, path)
            self.assertTrue(response_headers["Content-Type"].startswith("application/json"), path)
            self.assertEqual(json.loads(body)["status"], 403, path)
        status, _, body = await self.request(POLLING, "127.0.0.1")
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(b"0{"))
        status, _, _ = await self.request(WEBSOCKET, "127.0.0.1", WEBSOCKET_HEADERS)
        self.assertEqual(status, 101)
        self.assertIn("127.0.0.2", self.server.log_text())
        await _let_websocket_timers_run()

    async def test_forwarded_for_believed_only_from_a_trusted_proxy(self):
        """
        127.0.0.1 is a trusted proxy: its X-Forwarded-For decides. 127.0.0.2 is not: its header
        is ignored and it is judged by its own address.
        """
        await self.start({"allow": ["192.168.0.0/16"], "trusted_proxies": ["127.0.0.1/32"]})
        inside = {"X-Forwarded-For": "192.168.7.8"}
        outside = {"X-Forwarded-For": "203.0.113.5"}
        self.assertEqual((await self.request(POLLING, "127.0.0.1", inside))[0], 200)
        self.assertEqual((await self.request(POLLING, "127.0.0.1", outside))[0], 403)
        self.assertEqual((await self.request(POLLING, "127.0.0.2", inside))[0], 403)
        forged = {"X-Forwarded-For": "192.168.7.8, 203.0.113.5"}
        self.assertEqual((await self.request(POLLING, "127.0.0.1", forged))[0], 403)
        self.assertIn("203.0.113.5", self.server.log_text())

    async def test_socket_address_is_the_forwarded_client(self):
        """Behind a trusted proxy, the chat sees and logs the client's address, not the proxy's."""
        from tests.ilias.repository_support import Browser

        await self.start({"trusted_proxies": ["127.0.0.1/32"]})
        browser = Browser(self.server, "/team")
        self.addCleanup(browser.close)
        from twisted.internet.threads import deferToThread

        await deferToThread(
            browser.sio.connect,
            self.server.base_url,
            namespaces=["/team"],
            transports=["polling"],
            headers={"X-Forwarded-For": "10.20.30.40"},
            wait_timeout=10,
        )
        await browser.emit("login", "viaproxy")
        await browser.wait_for("loggedIn")
        self.assertIn("viaproxy (1) logged in to /team from 10.20.30.40", self.server.log_text())

    async def test_refused_origin(self):
        """A browser page from another origin cannot open a websocket or a polling session."""
        await self.start({"allowed_origins": ["https://chat.example.org", "*.intranet.example"]})
        evil = {**WEBSOCKET_HEADERS, "Origin": "https://evil.example"}
        self.assertEqual((await self.request(WEBSOCKET, headers=evil))[0], 403)
        status, _, body = await self.request(POLLING, headers={"Origin": "https://evil.example"})
        self.assertEqual(status, 403)
        self.assertEqual(json.loads(body), {"code": 4, "message": "Forbidden"})  # as engine.io
        good = {**WEBSOCKET_HEADERS, "Origin": "https://chat.example.org"}
        self.assertEqual((await self.request(WEBSOCKET, headers=good))[0], 101)
        await _let_websocket_timers_run()
        wildcard = {"Origin": "http://wiki.intranet.example:8080"}
        self.assertEqual((await self.request(POLLING, headers=wildcard))[0], 200)

    async def test_connections_per_ip_limit(self):
        """
        With max_connections_per_ip 2, the address may open a few grace sessions more (which the
        chat closes with the reason when they log in); past those a new session is refused with
        429 and a message; another address is not affected; closing a session frees a slot.
        """
        await self.start({"max_connections_per_ip": 2, "trusted_proxies": ["127.0.0.1"]})
        grace = self.server.service.policy.session_grace
        self.assertEqual(grace, 5)
        sids = []
        for _ in range(2 + grace):
            status, _, body = await self.request(POLLING)
            self.assertEqual(status, 200)
            sids.append(json.loads(body[1:])["sid"])
        status, _, body = await self.request(POLLING)
        self.assertEqual(status, 429)
        self.assertIn(b"Too many connections", body)
        # Requests of an existing session are not new connections.
        status, _, _ = await self.request(
            f"{POLLING}&sid={sids[0]}", method="POST", body=b"40/team,",
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        self.assertEqual(status, 200)
        # Another client (behind the trusted proxy) has its own count.
        other = {"X-Forwarded-For": "10.9.9.9"}
        self.assertEqual((await self.request(POLLING, headers=other))[0], 200)
        # Close one session (Engine.IO close packet): the address may connect again.
        status, _, _ = await self.request(
            f"{POLLING}&sid={sids[1]}", method="POST", body=b"1",
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        self.assertEqual(status, 200)
        self.assertEqual((await self.request(POLLING))[0], 200)

    async def test_grace_session_is_told_why_at_login(self):
        """
        A session beyond max_connections_per_ip (one of the grace sessions) gets loginFailed
        ``too_many_connections`` with the reason, which the page shows, and is disconnected.
        """
        import socketio
        from twisted.internet.task import deferLater
        from twisted.internet.threads import deferToThread

        await self.start({"max_connections_per_ip": 1})
        url = f"http://127.0.0.1:{self.server.port}"
        first, second = socketio.Client(reconnection=False), socketio.Client(reconnection=False)
        answers = []
        second.on("loginFailed", answers.append, namespace="/team")
        for client in (first, second):
            await deferToThread(client.connect, url, namespaces=["/team"], transports=["websocket"],
                                wait_timeout=10)
            self.addCleanup(lambda c=client: deferToThread(c.disconnect))
        await deferToThread(second.emit, "login", "late", namespace="/team")
        for _ in range(100):
            if answers and not second.connected:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(answers[0]["error"], "too_many_connections")
        self.assertIn("Too many chat connections from your network address (at most 1)",
                      answers[0]["message"])
        self.assertFalse(second.connected)
        self.assertTrue(first.connected)

    async def test_second_loopback_address_is_refused_on_irc(self):
        """With only 127.0.0.1/32 allowed, IRC from 127.0.0.2 gets ERROR and is closed."""
        import socket as socket_module

        from twisted.internet.threads import deferToThread

        from ilchat.standalone import StandaloneChat
        from ilchat.irc.service import IrcComponent
        from tests.support.server import start_server

        self.server = await start_server(
            self,
            server={
                "network": {"allow": ["127.0.0.1/32"]},
                "irc": {"address": "127.0.0.1", "port": 0, "auth": "open"},
            },
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        irc = [c for c in self.server.service.components if isinstance(c, IrcComponent)]
        port = irc[0].ports[0].getHost().port

        def talk(bind_address):
            with socket_module.create_connection(
                ("127.0.0.1", port), timeout=10, source_address=(bind_address, 0)
            ) as connection:
                connection.sendall(b"NICK probe\r\nUSER probe 0 * :probe\r\n")
                received = b""
                while b" 001 " not in received and b"ERROR" not in received:
                    data = connection.recv(4096)
                    if not data:
                        break
                    received += data
                return received.decode("utf-8", "replace")

        refused = await deferToThread(talk, "127.0.0.2")
        self.assertIn("ERROR :Closing Link", refused)
        self.assertNotIn(" 001 ", refused)
        welcomed = await deferToThread(talk, "127.0.0.1")
        self.assertIn(" 001 probe ", welcomed)

    async def test_per_ip_limit_counts_web_sessions_and_irc_together(self):
        """
        max_connections_per_ip is one count for web sessions and IRC connections of an address:
        with one polling session and one IRC connection open (limit 2), another IRC connection
        gets ERROR and another web session 429; when the IRC connection closes, its slot is free.
        """
        from twisted.internet import endpoints
        from twisted.internet.task import deferLater

        from ilchat.irc.service import IrcComponent
        from ilchat.standalone import StandaloneChat
        from tests.irc.support import RawClient
        from tests.support.server import start_server

        self.server = await start_server(
            self,
            server={
                "network": {"max_connections_per_ip": 2},
                "irc": {"address": "127.0.0.1", "port": 0, "auth": "open"},
            },
            clients=[{"name": "team", "standalone": {"rooms": [{"id": 1, "title": "Lobby"}]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        irc = [c for c in self.server.service.components if isinstance(c, IrcComponent)]
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", irc[0].ports[0].getHost().port)

        self.assertEqual((await self.request(POLLING))[0], 200)
        first = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(lambda: first.transport.loseConnection() or first.closed)
        await first.register("first")
        second = await endpoints.connectProtocol(endpoint, RawClient())
        error = await second.wait_for("ERROR")
        self.assertIn("Too many connections", error.params[0])
        await second.closed
        for _ in range(self.server.service.policy.session_grace):  # told when they log in
            self.assertEqual((await self.request(POLLING))[0], 200)
        status, _, body = await self.request(POLLING)
        self.assertEqual(status, 429)
        self.assertIn(b"Too many connections", body)

        first.transport.loseConnection()
        await first.closed
        for _ in range(100):
            status = (await self.request(POLLING))[0]
            if status != 429:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(status, 200)


class OriginServerTests(TestCase):
    """
    Which pages may use Socket.IO, asked of a whole server with real requests: the polling
    handshake, its CORS preflight and the websocket upgrade, from http.client and from the real
    socket.io-client (Node, with an Origin header as a browser page sends it).
    """

    start = NetworkPolicyServerTests.start
    request = NetworkPolicyServerTests.request

    def origin_request(self, path, origin, method="GET", bind_address="127.0.0.1", **headers):
        if origin is not None:
            headers["Origin"] = origin
        return self.request(path, bind_address=bind_address, headers=headers, method=method)

    async def test_default_allows_the_same_host_only(self):
        """
        Without allowed_origins a page served by the host the request went to (any port or
        scheme) gets its origin reflected with credentials; another origin gets 403 on polling,
        preflight and websocket, without CORS headers; no Origin at all (PHP, bots) is fine.
        """
        await self.start({})
        port = self.server.port
        for origin in (f"http://127.0.0.1:{port}", "https://127.0.0.1", "http://127.0.0.1:9999"):
            status, headers, _ = await self.origin_request(POLLING, origin)
            self.assertEqual(status, 200, origin)
            self.assertEqual(headers.get("Access-Control-Allow-Origin"), origin)
            self.assertEqual(headers.get("Access-Control-Allow-Credentials"), "true")
        for origin in ("https://evil.example", "http://127.0.0.1.evil.example", "null"):
            status, headers, body = await self.origin_request(POLLING, origin)
            self.assertEqual(status, 403, origin)
            self.assertEqual(json.loads(body), {"code": 4, "message": "Forbidden"})
            self.assertNotIn("Access-Control-Allow-Origin", headers)
            status, headers, _ = await self.origin_request(
                POLLING, origin, method="OPTIONS", **{"Access-Control-Request-Method": "POST"}
            )
            self.assertEqual(status, 403, origin)
            self.assertNotIn("Access-Control-Allow-Origin", headers)
            status, _, _ = await self.request(
                WEBSOCKET, headers={**WEBSOCKET_HEADERS, "Origin": origin}
            )
            self.assertEqual(status, 403, origin)
        status, _, _ = await self.request(
            WEBSOCKET, headers={**WEBSOCKET_HEADERS, "Origin": f"http://127.0.0.1:{port}"}
        )
        self.assertEqual(status, 101)
        await _let_websocket_timers_run()
        self.assertEqual((await self.origin_request(POLLING, None))[0], 200)
        self.assertIn("origin https://evil.example is not 127.0.0.1", self.server.log_text())

    async def test_forwarded_host_of_a_trusted_proxy_is_the_same_host(self):
        """
        Behind a trusted proxy the host the browser asked for is its X-Forwarded-Host; from
        anyone else the header is ignored.
        """
        await self.start({"trusted_proxies": ["127.0.0.1"]})
        forwarded = {"X-Forwarded-Host": "ilias.example.org", "X-Forwarded-For": "10.1.1.1"}
        status, headers, _ = await self.origin_request(
            POLLING, "https://ilias.example.org", **forwarded
        )
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Access-Control-Allow-Origin"), "https://ilias.example.org")
        status, _, _ = await self.origin_request(
            POLLING, "https://ilias.example.org", bind_address="127.0.0.2", **forwarded
        )
        self.assertEqual(status, 403)

    async def test_configured_origins_are_added_to_the_same_host(self):
        """allowed_origins names the ILIAS site when the chat runs on a host of its own."""
        await self.start({"allowed_origins": ["https://ilias.example.org"]})
        status, headers, _ = await self.origin_request(POLLING, "https://ilias.example.org")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Access-Control-Allow-Credentials"), "true")
        port = self.server.port
        self.assertEqual((await self.origin_request(POLLING, f"http://127.0.0.1:{port}"))[0], 200)
        self.assertEqual((await self.origin_request(POLLING, "https://other.example.org"))[0], 403)

    async def test_star_allows_every_origin_without_credentials(self):
        """An explicit "*" lets every page in, answered "*" without Allow-Credentials."""
        await self.start({"allowed_origins": ["*"]})
        status, headers, _ = await self.origin_request(POLLING, "https://anywhere.example")
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("Access-Control-Allow-Origin"), "*")
        self.assertNotIn("Access-Control-Allow-Credentials", headers)
        status, _, _ = await self.request(
            WEBSOCKET, headers={**WEBSOCKET_HEADERS, "Origin": "https://anywhere.example"}
        )
        self.assertEqual(status, 101)
        await _let_websocket_timers_run()

    async def test_socket_io_client_with_origin_headers(self):
        """The npm socket.io-client connects from the same host, is refused from another origin."""
        from tests.socketio.test_js_client import run_node

        await self.start({"allowed_origins": ["https://ilias.example.org"]})
        url = f"http://127.0.0.1:{self.server.port}/team"
        for transports in ("polling", "websocket"):
            for origin, expected in (
                (f"http://127.0.0.1:{self.server.port}", True),
                ("https://ilias.example.org", True),
                ("https://evil.example", False),
            ):
                result, err, code = await run_node("origin.js", url, transports, origin)
                self.assertEqual(code, 0, err)
                self.assertEqual(result["connected"], expected, (transports, origin, result))
                if expected:
                    self.assertEqual(result["transport"], transports)
        await _let_websocket_timers_run()


class LiveConnectionsTests(SynchronousTestCase):
    """Open HTTP connections counted by asking the transports, including through a TLS wrapper."""

    class Transport:
        disconnected = 0
        alive: list = []  # the reactor holds real transports; the counter holds them weakly

        def __init__(self):
            self.alive.append(self)

    class Wrapper:
        def __init__(self, transport):
            self.transport = transport
            self.wrappedProtocol = object()

    def test_limit_and_closed_transports_free_slots(self):
        live = ConnectionCounter(2)
        first, second = self.Transport(), self.Transport()
        wrapped = self.Wrapper(second)
        self.assertTrue(live.add("10.0.0.1", first))
        self.assertTrue(live.add("10.0.0.1", wrapped))
        self.assertFalse(live.add("10.0.0.1", self.Transport()))
        self.assertTrue(live.add("10.0.0.2", self.Transport()))
        second.disconnected = 1  # under the TLS wrapper
        self.assertEqual(live.count("10.0.0.1"), 1)
        self.assertTrue(live.add("10.0.0.1", self.Transport()))
        self.assertFalse(live.add("10.0.0.1", self.Transport()))
        self.assertTrue(ConnectionCounter(0).add("10.0.0.1", self.Transport()))

    def test_trusted_proxies_are_not_counted(self):
        policy = NetworkPolicy(trusted_proxies=["127.0.0.1"], max_http_connections_per_ip=1,
                               clock=Clock())
        self.assertTrue(all(policy.add_http_connection("127.0.0.1", self.Transport())
                            for _ in range(5)))
        self.assertTrue(policy.add_http_connection("::ffff:10.0.0.1", self.Transport()))
        self.assertFalse(policy.add_http_connection("10.0.0.1", self.Transport()))
