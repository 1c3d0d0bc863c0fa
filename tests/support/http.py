"""A tiny HTTP client for tests on the real reactor (Twisted's Agent; no connection left open)."""

from __future__ import annotations

import io
import json
import socket
from typing import Any, Dict, Optional

import attrs
from twisted.internet import reactor as default_reactor
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers


@attrs.frozen
class Response:
    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


async def http_request(
    url: str,
    method: str = "GET",
    headers: Optional[Dict[str, str]] = None,
    reactor: Any = None,
    context_factory: Any = None,
    body: Optional[bytes] = None,
) -> Response:
    """Send one request (with C{body}, if given) and read the whole answer; the connection is
    closed afterwards."""
    reactor = reactor or default_reactor
    pool = HTTPConnectionPool(reactor, persistent=False)
    if context_factory is not None:
        agent = Agent(reactor, contextFactory=context_factory, pool=pool)
    else:
        agent = Agent(reactor, pool=pool)
    raw_headers = Headers({k: [v] for k, v in (headers or {}).items()})
    producer = None if body is None else FileBodyProducer(io.BytesIO(body))
    response = await agent.request(method.encode("ascii"), url.encode("utf-8"), raw_headers,
                                   producer)
    body = await readBody(response)
    await pool.closeCachedConnections()
    return Response(response.code, response.headers, body)


def read_to_close(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset counts as the close)."""
    chunks = []
    while True:
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, data: bytes, bind: str = "127.0.0.1") -> bytes:
    """Send C{data}, then read until the server closes (run in a thread, not the reactor)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(bind, 0)) as conn:
        try:
            conn.sendall(data)
        except OSError:
            pass  # the server may close before it has read everything: that is the point
        return read_to_close(conn)
