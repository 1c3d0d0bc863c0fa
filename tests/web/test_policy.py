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
    TokenBucket,
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

    def test_empty_list_allows_everything(self):
        """No origins configured means no origin check."""
        self.assertTrue(OriginMatcher([]).allows("https://evil.example"))

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
    """Per-IP connection counting with release."""

    def test_limit_refuses_one_more(self):
        """Once an address holds the limit, the next acquire fails; other addresses are free."""
        counter = ConnectionCounter(2)
        self.assertTrue(counter.acquire("10.0.0.1"))
        self.assertTrue(counter.acquire("10.0.0.1"))
        self.assertFalse(counter.acquire("10.0.0.1"))
        self.assertTrue(counter.acquire("10.0.0.2"))

    def test_release_frees_a_slot_and_forgets_idle_addresses(self):
        """A release makes room again; at zero the address is forgotten (no leak)."""
        counter = ConnectionCounter(1)
        counter.acquire("10.0.0.1")
        counter.release("10.0.0.1")
        self.assertEqual(counter._counts, {})
        self.assertTrue(counter.acquire("10.0.0.1"))

    def test_no_limit(self):
        """A limit of 0 or None counts but never refuses."""
        counter = ConnectionCounter(0)
        for _ in range(100):
            self.assertTrue(counter.acquire("10.0.0.1"))
        self.assertEqual(counter.count("10.0.0.1"), 100)

    def test_extra_release_does_not_go_negative(self):
        """A stray release cannot give an address extra slots."""
        counter = ConnectionCounter(1)
        counter.release("10.0.0.1")
        self.assertTrue(counter.acquire("10.0.0.1"))
        self.assertFalse(counter.acquire("10.0.0.1"))


class TokenBucketTests(SynchronousTestCase):
    """The message throttle, on a fake clock."""

    def test_burst_then_refusal_with_retry_after(self):
        """A full bucket allows C{burst} actions at once, then says how long to wait."""
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, clock=clock)
        self.assertEqual([bucket.consume()[0] for _ in range(3)], [True, True, True])
        allowed, retry_after = bucket.consume()
        self.assertFalse(allowed)
        self.assertAlmostEqual(retry_after, 0.5)

    def test_leaks_on_demand_at_rate(self):
        """Tokens come back at C{rate} per second, computed when asked (no timer)."""
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, clock=clock)
        for _ in range(3):
            bucket.consume()
        clock.advance(0.5)
        self.assertTrue(bucket.consume()[0])
        self.assertFalse(bucket.consume()[0])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_refill_never_exceeds_burst(self):
        """A long silence refills the bucket to C{burst}, not more."""
        clock = Clock()
        bucket = TokenBucket(rate=10, burst=2, clock=clock)
        clock.advance(3600)
        self.assertEqual([bucket.consume()[0] for _ in range(3)], [True, True, False])

    def test_rate_zero_is_unlimited(self):
        """A rate of 0 turns the throttle off."""
        bucket = TokenBucket(rate=0, burst=1, clock=Clock())
        self.assertTrue(all(bucket.consume()[0] for _ in range(1000)))


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

    def test_from_config_none_means_open(self):
        """No network section: no allow-list, no origin check, no throttle."""
        policy = NetworkPolicy.from_config(None, clock=Clock())
        self.assertTrue(policy.allows("203.0.113.1"))
        self.assertTrue(all(policy.message_bucket().consume()[0] for _ in range(100)))

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
