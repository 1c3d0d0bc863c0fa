#!/usr/bin/env python3
"""
What one encrypted websocket write costs in each TLS layer a Twisted server could use (issue 18).

Twisted's TLS is pyOpenSSL over memory BIOs (``TLSMemoryBIOProtocol``): per write an
``SSL_write`` (``Connection.send``) and a ``bio_read`` of the records. The stdlib's ``ssl``
module has the same design (``SSLObject`` over ``MemoryBIO``, asyncio's path; Twisted has no
transport on it). This measures both in one process, with no sockets: a server and a client
handshake through memory, then the server encrypts the same frames again and again, as a
fan-out does: one frame per write (one message to a connection in its turn) and eight joined
(eight messages in one turn). Each suite is timed too: TLS 1.3 AES-128-GCM, the one ilchat
puts first, and AES-256-GCM, OpenSSL's (and so Node's) first.

    .venv/bin/python bench/tls_layers.py [--writes N]

Prints microseconds of CPU per write, best of five rounds.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import tempfile
import time

from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib

#: An ILIAS room message as the fan-out frames it (websocket header + Socket.IO event), ~180 B.
FRAME = b"\x81\x7e\x00\xb0" + b'42/bench,["message",{"type":"message","message":{"content":"' + b"x" * 96 + b'"}}]'
SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384")


def make_certificate(folder: str) -> tuple[str, str]:
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    return cert, key


def _pump(a_out, b_in) -> bool:
    data = a_out()
    if data:
        b_in(data)
    return bool(data)


def pyopenssl_pair(cert: str, key: str, suite: str):
    """A server Connection after its handshake with a client, both on memory BIOs."""
    server_ctx = SSL.Context(SSL.TLS_METHOD)
    server_ctx.use_certificate_file(cert)
    server_ctx.use_privatekey_file(key)
    server_ctx.set_tls13_ciphersuites(suite.encode())
    client_ctx = SSL.Context(SSL.TLS_METHOD)
    client_ctx.set_tls13_ciphersuites(suite.encode())
    server, client = SSL.Connection(server_ctx), SSL.Connection(client_ctx)
    server.set_accept_state()
    client.set_connect_state()

    def out(conn):
        def read():
            try:
                return conn.bio_read(65536)
            except SSL.WantReadError:
                return b""
        return read

    for _ in range(20):
        for conn in (client, server):
            try:
                conn.do_handshake()
            except SSL.WantReadError:
                pass
        moved = _pump(out(client), server.bio_write) | _pump(out(server), client.bio_write)
        if not moved and server.get_cipher_name():
            break
    assert server.get_cipher_name() == suite, server.get_cipher_name()
    return server


def pyopenssl_write(server, data: bytes) -> None:
    server.send(data)
    server.bio_read(len(data) + 256)


_RECORDS_SIZE = 1 << 17
_RECORDS = _ffi.new("char[]", _RECORDS_SIZE)  # one buffer for every read (no allocation per write)


def cffi_write(server, data: bytes) -> None:
    """pyOpenSSL's own cffi bindings called directly: SSL_write, then BIO_read into a buffer."""
    written = _lib.SSL_write(server._ssl, data, len(data))
    assert written == len(data)
    got = _lib.BIO_read(server._from_ssl, _RECORDS, _RECORDS_SIZE)
    _ffi.buffer(_RECORDS, got)[:]


def stdlib_pair(cert: str, key: str, suite: str):
    """A server SSLObject after its handshake, and its outgoing MemoryBIO."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    # The ssl module cannot choose TLS 1.3 suites; OpenSSL's configuration string can.
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    for _ in range(20):
        for obj in (client, server):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                pass
        moved = _pump(bios[3].read, bios[0].write) | _pump(bios[1].read, bios[2].write)
        if not moved:
            break
    return server, bios[1], server.cipher()[0]


def stdlib_write(pair, data: bytes) -> None:
    server, outgoing, _ = pair
    server.write(data)
    outgoing.read()


def cpu_per_write(write, target, data: bytes, writes: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for _ in range(writes):
            write(target, data)
        best = min(best, (time.process_time() - start) / writes)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cert, key = make_certificate(folder)
        print(f"µs of CPU per write, best of 5 x {args.writes} writes; frame {len(FRAME)} B")
        print(f"{'layer':<30} {'suite':<24} {'1 frame':>8} {'8 frames':>9}")
        for suite in SUITES:
            server = pyopenssl_pair(cert, key, suite)
            one = cpu_per_write(pyopenssl_write, server, FRAME, args.writes)
            eight = cpu_per_write(pyopenssl_write, server, FRAME * 8, args.writes // 4)
            print(f"{'pyOpenSSL send + bio_read':<30} {suite:<24} {one:8.2f} {eight:9.2f}")
        server = pyopenssl_pair(cert, key, SUITES[0])
        one = cpu_per_write(cffi_write, server, FRAME, args.writes)
        eight = cpu_per_write(cffi_write, server, FRAME * 8, args.writes // 4)
        print(f"{'the same, its cffi lib direct':<30} {SUITES[0]:<24} {one:8.2f} {eight:9.2f}")
        pair = stdlib_pair(cert, key, "")
        one = cpu_per_write(stdlib_write, pair, FRAME, args.writes)
        eight = cpu_per_write(stdlib_write, pair, FRAME * 8, args.writes // 4)
        print(f"{'ssl SSLObject + MemoryBIO':<30} {pair[2]:<24} {one:8.2f} {eight:9.2f}")


if __name__ == "__main__":
    main()
