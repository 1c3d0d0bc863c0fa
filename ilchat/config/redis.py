"""
server.cfg ``redis``: how this process reaches the Redis that several ilchat processes share.

Validated like any other key; with the section the service's bus is a
L{ilchat.redisbus.RedisBus} (without it: one process, no Redis).
"""

from __future__ import annotations

import re
import socket
from typing import Optional

import attrs

from ilchat.config.reader import Reader, default_of, flag, integer, read_settings, setting

#: What ``prefix`` and ``instance`` may be: they end up in Redis key and channel names and in
#: every bus message's ``origin``, so no spaces or control characters, and not too long.
_NAME_RE = re.compile(r"[^\s\x00-\x1f\x7f]{1,100}")
_NAME_ALLOWED = "expected 1 to 100 characters without spaces or control characters"

#: A ``route`` starts every Engine.IO session id of the process, which a proxy matches.
_ROUTE_RE = re.compile(r"[A-Za-z0-9]{1,16}")


#: A host name, an IPv4 address or an IPv6 address (bare or in brackets).
_HOST_RE = re.compile(r"[A-Za-z0-9._:%\[\]-]{1,253}")


def _read_host(reader: Reader, key: str, default: str) -> str:
    value = reader.get_str(key, default, allow_empty=False)
    if not _HOST_RE.fullmatch(value):
        raise reader.error(key, value, "expected a host name or IP address")
    return value


def _read_name(reader: Reader, key: str, default: Optional[str]) -> Optional[str]:
    value = reader.get_str(key, default)
    if value is not None and not _NAME_RE.fullmatch(value):
        raise reader.error(key, value, _NAME_ALLOWED)
    return value


@attrs.frozen
class RedisConfig:
    """The optional ``redis`` section of ``server.cfg`` (``None`` when absent: one process).

    ``prefix`` starts every key and channel name, so that two sites can share one Redis;
    ``instance`` names this process among the others (default: host name and the server's
    port, ``"chat1.example.org:8080"``); ``route`` tags its Engine.IO session ids for a sticky
    proxy. With ``tls`` the connection is TLS 1.2+, verified
    against ``ca_file`` (absolute after loading) or the system's CAs.
    """

    host: str = setting("127.0.0.1", _read_host)
    port: int = integer(6379, minimum=1, maximum=65535)
    password: Optional[str] = attrs.field(default=None, repr=False)
    #: Redis's SELECT takes a 32-bit index; the server's ``databases`` setting bounds it further.
    db: int = integer(0, minimum=0, maximum=2**31 - 1)
    prefix: str = attrs.field(default="ilchat:")
    #: Set by ``parse_redis``: given, or ``default_instance`` of the server's port.
    instance: str = ""
    tls: bool = flag(False)
    ca_file: Optional[str] = None
    #: Starts every Engine.IO session id of this process (``"<route>.<random>"``), so that a
    #: reverse proxy sends a long-polling session's requests to the process that holds it
    #: (``etc/nginx-cluster.conf`` maps the ``sid`` parameter). None: plain random ids.
    route: Optional[str] = None


def default_instance(server_port: int) -> str:
    """This process's name when ``instance`` is not given: host name and listening port."""
    return f"{socket.gethostname()}:{server_port}"


def parse_redis(server: Reader, server_port: int) -> Optional[RedisConfig]:
    """The ``redis`` section, or ``None`` when server.cfg has none."""
    if not server.has("redis"):
        return None
    reader = server.section("redis")
    tls = reader.get_bool("tls", default_of(RedisConfig, "tls"))
    ca_file = reader.get_path("ca_file", None)
    if ca_file is not None:
        if not tls:
            raise reader.error("ca_file", reader.data["ca_file"], 'only with "tls": true')
        reader.check_readable("ca_file", ca_file)
    route = reader.get_str("route", None)
    if route is not None and not _ROUTE_RE.fullmatch(route):
        raise reader.error("route", route, "expected 1 to 16 letters or digits")
    return read_settings(
        RedisConfig,
        reader,
        password=reader.get_str("password", None, allow_empty=False),
        prefix=_read_name(reader, "prefix", default_of(RedisConfig, "prefix")),
        instance=_read_name(reader, "instance", None) or default_instance(server_port),
        tls=tls,
        ca_file=ca_file,
        route=route,
    )


__all__ = ["RedisConfig", "parse_redis"]
