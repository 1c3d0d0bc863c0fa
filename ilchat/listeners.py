# -*- test-case-name: tests.test_listeners -*-
"""
Listening ports from Twisted endpoint descriptions (``serverFromString``).

The web and metrics listeners are made here, so what Twisted's endpoints offer works for them:
``tcp:8080:interface=127.0.0.1``, ``haproxy:tcp:8080`` (the PROXY protocol, v1 or v2, in front of
each connection, so the client's address is the one in the header) and
``systemd:domain=INET:index=0`` (a socket handed over by systemd's socket activation). Without a
description, the ILIAS keys ``address``/``port`` become a ``tcp:`` one. TLS (server.cfg
``protocol: https``) is layered over whatever endpoint it is, with the options of ``ilchat.tls``.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import endpoints
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

__all__ = ["tcp_description", "listen", "reads_proxy_header"]


def tcp_description(host: str, port: int, backlog: Optional[int] = None) -> str:
    """The ``tcp:`` description of ``host`` (an IP address, IPv6 too) and ``port``."""
    description = f"tcp:{port}:interface={endpoints.quoteStringArgument(host)}"
    if backlog is not None:
        description += f":backlog={backlog}"
    return description


async def listen(
    reactor: Any, description: str, factory: IProtocolFactory, tls_options: Any = None
) -> IListeningPort:
    """
    Listen on ``description`` with ``factory``, behind TLS when ``tls_options`` (an
    ``IOpenSSLServerConnectionCreator``) is given, the way ``reactor.listenSSL`` does it.

    Raises:
        ValueError: the description is not one Twisted knows.
        twisted.internet.error.CannotListenError: the port cannot be had.
    """
    endpoint = endpoints.serverFromString(reactor, description)
    if tls_options is not None:
        factory = TLSMemoryBIOFactory(tls_options, False, factory)
    return await endpoint.listen(factory)



def reads_proxy_header(description: str) -> bool:
    """
    Whether connections on ``description`` start with a PROXY header. Until it has arrived,
    ``getPeer()`` is the proxy's address, so per-address counts wait for the first bytes.
    """
    return description.strip().startswith("haproxy:")
