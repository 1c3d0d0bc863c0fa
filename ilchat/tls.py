# -*- test-case-name: tests.test_tls -*-
"""
TLS for ``protocol: https``: the ``cert`` file (the certificate, optionally followed by its chain),
the ``key`` file and an optional ``dhparam`` file, TLS 1.2 and newer only.

The Node server pins a cipher list with DHE and CBC suites; ilchat offers only forward-secret AEAD
suites (:data:`TLS12_CIPHERS`): with a ``dhparam`` file DHE as well as ECDHE, without one only
ECDHE, which every current client prefers anyway.
"""

from __future__ import annotations

from typing import List, Optional

from OpenSSL import crypto
from twisted.internet import ssl
from twisted.python.filepath import FilePath

__all__ = ["TLS12_CIPHERS", "TLS13_CIPHERS", "TLSConfigError", "certificate_options", "read_certificate_chain"]

#: TLS 1.2 suites: Mozilla's "intermediate" profile (v5.7), forward-secret AEAD only: ECDHE (and
#: DHE, used only with a dhparam file) with AES-GCM or ChaCha20-Poly1305; no CBC, no SHA-1 MAC, no
#: RSA key exchange. TLS 1.3 has its own list (:data:`TLS13_CIPHERS`).
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)

#: TLS 1.3 suites in the order of the same profile: AES-128-GCM (the suite every TLS 1.3 peer must
#: have, and the one browsers offer first) before AES-256-GCM and ChaCha20-Poly1305. The server's
#: order decides (Twisted sets OpenSSL's server preference); OpenSSL's own puts AES-256 first.
#: With AES-NI the two cost the same for a chat's frames (``bench/tls_layers.py``).
TLS13_CIPHERS = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


class TLSConfigError(Exception):
    """The certificate, key or dhparam file cannot be used; ``str()`` names the file."""


def _pem_blocks(data: bytes, kind: bytes) -> List[bytes]:
    begin = b"-----BEGIN " + kind + b"-----"
    end = b"-----END " + kind + b"-----"
    blocks = []
    start = data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        start = data.find(begin, stop)
    return blocks


def read_certificate_chain(path: str) -> List[crypto.X509]:
    """The certificates of a PEM file: the server's first, then its chain."""
    try:
        data = FilePath(path).getContent()
    except OSError as e:
        raise TLSConfigError(f"Cannot read certificate {path}: {e.strerror}")
    blocks = _pem_blocks(data, b"CERTIFICATE")
    if not blocks:
        raise TLSConfigError(f"No PEM certificate in {path}")
    try:
        return [crypto.load_certificate(crypto.FILETYPE_PEM, block) for block in blocks]
    except crypto.Error as e:
        raise TLSConfigError(f"Invalid certificate in {path}: {e}")


def certificate_options(
    cert_path: str, key_path: str, dhparam_path: Optional[str] = None
) -> ssl.CertificateOptions:
    """
    Server-side ``CertificateOptions`` for ``listenSSL``.

    Raises:
        TLSConfigError: a file is unreadable or invalid, or the key does not match the certificate.
    """
    chain = read_certificate_chain(cert_path)
    try:
        key_data = FilePath(key_path).getContent()
    except OSError as e:
        raise TLSConfigError(f"Cannot read key {key_path}: {e.strerror}")
    try:
        key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_data)
    except crypto.Error as e:
        raise TLSConfigError(f"Invalid private key in {key_path}: {e}")
    dh_parameters = None
    if dhparam_path:
        if not FilePath(dhparam_path).isfile():
            raise TLSConfigError(f"File does not exist: {dhparam_path}")
        if b"DH PARAMETERS-----" not in FilePath(dhparam_path).getContent():
            raise TLSConfigError(f"No PEM DH PARAMETERS in {dhparam_path}")
        dh_parameters = ssl.DiffieHellmanParameters.fromFile(FilePath(dhparam_path))
    try:
        options = ssl.CertificateOptions(
            privateKey=key,
            certificate=chain[0],
            extraCertChain=chain[1:],
            dhParameters=dh_parameters,
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            acceptableCiphers=ssl.AcceptableCiphers.fromOpenSSLCipherString(TLS12_CIPHERS),
        )
        # The context every connection is made from (CertificateOptions caches it); making it now
        # checks the key against the certificate before the first client, not at it.
        options.getContext().set_tls13_ciphersuites(TLS13_CIPHERS.encode("ascii"))
    except Exception as e:
        raise TLSConfigError(f"Cannot use {cert_path} with {key_path}: {e}")
    return options
