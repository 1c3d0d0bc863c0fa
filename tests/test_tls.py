"""TLS over loopback: certificate chains, DHE with a dhparam file, TLS 1.2 as the minimum."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from typing import Optional, Tuple

from OpenSSL import SSL
from twisted.internet import protocol, reactor, threads
from twisted.trial.unittest import TestCase

from ilchat.tls import TLS13_CIPHERS, TLSConfigError, certificate_options, read_certificate_chain
from tests.support.server import start_server

# RFC 7919 ffdhe2048: a published group, so the test needs no slow parameter generation.
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

_CA_EXT = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
_LEAF_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"


def make_pki(folder: str) -> dict:
    """A root CA, an intermediate CA and a leaf for 127.0.0.1, made with the openssl command."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    with open(os.path.join(folder, "ca.ext"), "w") as f:
        f.write(_CA_EXT)
    with open(os.path.join(folder, "leaf.ext"), "w") as f:
        f.write(_LEAF_EXT)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key", "-out", "root.pem",
        "-subj", "/CN=ilchat test root", "-days", "2",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=ilchat test int")
    run("x509", "-req", "-in", "int.csr", "-CA", "root.pem", "-CAkey", "root.key", "-CAcreateserial",
        "-out", "int.pem", "-days", "2", "-extfile", "ca.ext")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "int.pem", "-CAkey", "int.key", "-CAcreateserial",
        "-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext")
    with open(os.path.join(folder, "chain.pem"), "w") as out:
        for name in ("leaf.pem", "int.pem"):
            with open(os.path.join(folder, name)) as f:
                out.write(f.read())
    with open(os.path.join(folder, "dhparam.pem"), "w") as f:
        f.write(FFDHE2048)
    path = lambda name: os.path.join(folder, name)  # noqa: E731
    return {
        "root": path("root.pem"),
        "leaf": path("leaf.pem"),
        "chain": path("chain.pem"),
        "key": path("leaf.key"),
        "dhparam": path("dhparam.pem"),
        "folder": folder,
    }


def handshake(
    port: int,
    cafile: str,
    ciphers: Optional[str] = None,
    max_version: Optional[ssl.TLSVersion] = None,
    min_version: Optional[ssl.TLSVersion] = None,
    request: Optional[bytes] = None,
) -> Tuple[str, str, bytes]:
    """A blocking stdlib TLS client (run it in a thread): (version, cipher, first response bytes)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile)
    if ciphers:
        context.set_ciphers(ciphers)
    if min_version:
        context.minimum_version = min_version
    if max_version:
        context.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            data = b""
            if request:
                tls.sendall(request)
                while True:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            return tls.version(), tls.cipher()[0], data


def tls13_handshake(port: int, suites: str) -> str:
    """A blocking pyOpenSSL TLS 1.3 client offering only C{suites}: the suite negotiated."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_tls13_ciphersuites(suites.encode("ascii"))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.settimeout(None)  # pyOpenSSL wants a blocking socket (trial's timeout bounds the test)
        connection = SSL.Connection(context, raw)
        connection.set_connect_state()
        connection.do_handshake()
        cipher = connection.get_cipher_name()
        connection.shutdown()
        return cipher


class _Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.transport.write(data)


_PKI: dict = {}


class TLSTests(TestCase):
    pki: dict

    async def setUp(self) -> None:
        # Made once per test run, in a thread (the openssl commands take a second).
        if not _PKI:
            folder = os.path.abspath("tls-pki")
            os.makedirs(folder, exist_ok=True)
            _PKI.update(await threads.deferToThread(make_pki, folder))
        self.pki = _PKI

    def listen(self, dhparam: Optional[str] = None) -> int:
        options = certificate_options(self.pki["chain"], self.pki["key"], dhparam)
        factory = protocol.Factory.forProtocol(_Echo)
        port = reactor.listenSSL(0, factory, options, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def test_chain_file_holds_certificate_and_intermediate(self) -> None:
        """The cert file may carry the chain; the server certificate comes first."""
        chain = read_certificate_chain(self.pki["chain"])
        self.assertEqual(len(chain), 2)
        self.assertEqual(chain[0].get_subject().CN, "localhost")

    async def test_handshake_sends_the_chain(self) -> None:
        """A client that only trusts the root verifies the leaf: the intermediate was sent."""
        port = self.listen()
        version, cipher, _ = await threads.deferToThread(handshake, port, self.pki["root"])
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))

    async def test_dhe_cipher_negotiated_with_dhparam(self) -> None:
        """With a dhparam file, a TLS 1.2 client that offers only DHE gets a DHE suite."""
        port = self.listen(self.pki["dhparam"])
        version, cipher, _ = await threads.deferToThread(
            handshake, port, self.pki["root"], "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384",
            ssl.TLSVersion.TLSv1_2,
        )
        self.assertEqual(version, "TLSv1.2")
        self.assertTrue(cipher.startswith("DHE-"), cipher)

    async def test_ecdhe_without_dhparam(self) -> None:
        """Without dhparam a TLS 1.2 client still gets a forward-secret ECDHE suite."""
        port = self.listen()
        version, cipher, _ = await threads.deferToThread(
            handshake, port, self.pki["root"], None, ssl.TLSVersion.TLSv1_2
        )
        self.assertTrue(cipher.startswith("ECDHE-"), cipher)

    async def test_tls_1_1_is_refused(self) -> None:
        """A client limited to TLS 1.1 cannot connect."""
        port = self.listen(self.pki["dhparam"])
        with self.assertRaises((ssl.SSLError, OSError)):
            await threads.deferToThread(
                handshake, port, self.pki["root"], "DEFAULT:@SECLEVEL=0", ssl.TLSVersion.TLSv1_1,
                ssl.TLSVersion.TLSv1,
            )

    def test_key_not_matching_certificate_is_refused(self) -> None:
        """A key of another certificate is a clear error at start, not at the first client."""
        error = self.assertRaises(
            TLSConfigError, certificate_options, self.pki["chain"], os.path.join(self.pki["folder"], "root.key")
        )
        self.assertIn("chain.pem", str(error))

    def test_invalid_files_are_named(self) -> None:
        """A non-PEM certificate or dhparam names the file."""
        bogus = os.path.join(self.pki["folder"], "bogus.pem")
        with open(bogus, "w") as f:
            f.write("not a pem\n")
        self.assertIn(bogus, str(self.assertRaises(TLSConfigError, certificate_options, bogus, self.pki["key"])))
        error = self.assertRaises(TLSConfigError, certificate_options, self.pki["chain"], self.pki["key"], bogus)
        self.assertIn(bogus, str(error))

    async def test_https_server_answers_heartbeat(self) -> None:
        """protocol https: the whole service serves the backend over TLS."""
        server = await start_server(
            self,
            server={"protocol": "https", "cert": self.pki["chain"], "key": self.pki["key"],
                    "dhparam": self.pki["dhparam"]},
            client_components=[],
        )
        request = b"GET /backend/Heartbeat/onscreen HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        _, _, data = await threads.deferToThread(
            handshake, server.port, self.pki["root"], None, None, None, request
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data)
        self.assertTrue(data.endswith(b'{"status":200}'), data)
        self.assertIn(f"Listening on: https://127.0.0.1:{server.port}", server.log_text())


    async def test_quick_get_lane_answers_over_tls(self) -> None:
        """
        A polling GET on an https listener takes the quick GET lane (``ilchat.web._wholehead``),
        its answer encrypted in one write; the kept-alive connection serves the next request.
        """
        from ilchat.web import _wholehead

        lane: list = []
        render = _wholehead.QuickGet.render
        self.patch(_wholehead.QuickGet, "render", lambda r, res: (lane.append(r.uri), render(r, res))[1])
        server = await start_server(
            self,
            server={"protocol": "https", "cert": self.pki["chain"], "key": self.pki["key"]},
            client_components=[],
        )

        def two_polls() -> list:
            context = ssl.create_default_context(cafile=self.pki["root"])
            answers = []
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    buffer = b""
                    for _ in range(2):
                        tls.sendall(b"GET /socket.io/?EIO=4&transport=polling&sid=gone HTTP/1.1\r\n"
                                    b"Host: 127.0.0.1\r\n\r\n")
                        while b"\r\n\r\n" not in buffer:
                            buffer += tls.recv(65536)
                        head, _, buffer = buffer.partition(b"\r\n\r\n")
                        size = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                        while len(buffer) < size:
                            buffer += tls.recv(65536)
                        answers.append((head.split(b"\r\n")[0], buffer[:size]))
                        buffer = buffer[size:]
            return answers

        answers = await threads.deferToThread(two_polls)
        body = b'{"code":1,"message":"Session ID unknown"}'
        self.assertEqual(answers, [(b"HTTP/1.1 400 Bad Request", body)] * 2)
        self.assertEqual(len(lane), 2)


#: What a TLS 1.2 client may offer to test the server's list: CBC suites (with SHA-1 and SHA-2
#: MACs) and the plain-RSA key exchange, which Mozilla's intermediate profile leaves out.
_CBC_SUITES = "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:DHE-RSA-AES128-SHA256:AES128-SHA256"
_SHA1_SUITES = "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA:AES128-SHA"


class CipherSuiteTests(TestCase):
    """
    The TLS 1.2 suites are Mozilla's intermediate profile (forward-secret AEAD only) and TLS 1.3
    takes AES-128-GCM first, on the web listener and on the IRC TLS listener, which use the same
    options.
    """

    async def setUp(self) -> None:
        await TLSTests.setUp(self)  # the shared test PKI

    def listen(self) -> int:
        return TLSTests.listen(self, self.pki["dhparam"])

    async def irc_tls_port(self) -> int:
        from tests.irc.test_service import start_irc_tls  # it imports this module

        return await start_irc_tls(self, self.pki)

    async def assert_profile(self, port: int) -> None:
        for refused in (_CBC_SUITES, _SHA1_SUITES):
            with self.assertRaises(ssl.SSLError, msg=refused):
                await threads.deferToThread(
                    handshake, port, self.pki["root"], refused + ":@SECLEVEL=0", ssl.TLSVersion.TLSv1_2
                )
        # Whatever AEAD suite a TLS 1.2 client prefers among the profile's, it gets that one.
        for wanted in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                       "ECDHE-RSA-CHACHA20-POLY1305", "DHE-RSA-AES256-GCM-SHA384",
                       "DHE-RSA-CHACHA20-POLY1305"):
            version, cipher, _ = await threads.deferToThread(
                handshake, port, self.pki["root"], wanted, ssl.TLSVersion.TLSv1_2
            )
            self.assertEqual((version, cipher), ("TLSv1.2", wanted))
        # A client offering everything OpenSSL has at TLS 1.2 still gets forward-secret AEAD.
        version, cipher, _ = await threads.deferToThread(
            handshake, port, self.pki["root"], "ALL:@SECLEVEL=0", ssl.TLSVersion.TLSv1_2
        )
        self.assertEqual(version, "TLSv1.2")
        self.assertRegex(cipher, r"^(ECDHE|DHE)-RSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")
        # TLS 1.3 as OpenSSL's client offers it (AES-256 first): the server's order decides.
        version, cipher, _ = await threads.deferToThread(handshake, port, self.pki["root"])
        self.assertEqual((version, cipher), ("TLSv1.3", "TLS_AES_128_GCM_SHA256"))
        # A TLS 1.3 client with one suite of the three gets it; one with none of them is refused.
        for wanted in TLS13_CIPHERS.split(":"):
            cipher = await threads.deferToThread(tls13_handshake, port, wanted)
            self.assertEqual(cipher, wanted)
        with self.assertRaises(SSL.Error):
            await threads.deferToThread(tls13_handshake, port, "TLS_AES_128_CCM_SHA256")

    async def test_web_listener_offers_only_aead_suites(self) -> None:
        """CBC and SHA-1 suites are refused at TLS 1.2; each profile suite is negotiated."""
        await self.assert_profile(self.listen())

    async def test_irc_tls_listener_offers_only_aead_suites(self) -> None:
        """The IRC TLS listener has the same profile."""
        await self.assert_profile(await self.irc_tls_port())
