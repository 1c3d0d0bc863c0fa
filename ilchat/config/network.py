"""server.cfg ``network``: ilchat's network policy for every listener."""

from __future__ import annotations

import ipaddress
from typing import Optional, Tuple

import attrs

from ilchat.config.reader import Reader, integer, number, read_settings, setting, strings

#: The longest chat message ``max_message_length`` may allow: what ``chatroom_history`` can hold
#: once the message is wrapped in its JSON envelope.
MAX_MESSAGE_LENGTH_LIMIT = 3000


def _read_cidrs(reader: Reader, key: str, default: Tuple[str, ...]) -> Tuple[str, ...]:
    cidrs = reader.get_list(key, default)
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise reader.error(
                key, cidr, "expected CIDRs such as 10.0.0.0/8, 127.0.0.1 or 2001:db8::/32"
            )
    return cidrs


@attrs.frozen
class NetworkConfig:
    """The optional ``network`` section of ``server.cfg``: ilchat's network policy (design §6).

    ``allow`` and ``trusted_proxies`` are CIDR strings (IPv4 or IPv6; validated here, matched by
    ``ilchat.web.policy``); an empty ``allow`` lets everyone in. ``allowed_origins`` are origin
    patterns with ``*`` wildcards (``*.example.org``, ``https://chat.example.org``); empty means
    all. ``max_connections_per_ip`` (Socket.IO sessions plus IRC connections) and
    ``max_http_connections_per_ip`` (open HTTP connections) are per client address, 0 means no
    limit; the defaults are generous, for lecture halls behind one NAT address.
    ``message_rate`` (messages per second per connection, 0 for no limit) and ``message_burst``
    make the standalone chat's throttle, ``ilias_message_rate`` / ``ilias_message_burst`` the
    ILIAS chats'. ``header_timeout`` / ``body_timeout`` (seconds), ``max_headers`` and
    ``max_header_bytes`` bound how a request may arrive.
    """

    allow: Tuple[str, ...] = setting((), _read_cidrs)
    trusted_proxies: Tuple[str, ...] = setting((), _read_cidrs)
    allowed_origins: Tuple[str, ...] = strings()
    max_connections_per_ip: int = integer(2000, minimum=0)
    message_rate: float = number(5.0, minimum=0)
    message_burst: float = number(10.0, minimum=1)
    max_name_length: int = integer(32, minimum=1, maximum=255)
    max_message_length: int = integer(2000, minimum=1, maximum=MAX_MESSAGE_LENGTH_LIMIT)
    max_http_connections_per_ip: int = integer(4000, minimum=0)
    ilias_message_rate: float = number(10.0, minimum=0)
    ilias_message_burst: float = number(30.0, minimum=1)
    header_timeout: float = number(30.0, minimum=1)
    body_timeout: float = number(60.0, minimum=1)
    max_headers: int = integer(100, minimum=10, maximum=10000)
    max_header_bytes: int = integer(16384, minimum=1024, maximum=1048576)


def parse_network(server: Reader) -> Optional[NetworkConfig]:
    """The ``network`` section, or ``None`` when server.cfg has none."""
    if not server.has("network"):
        return None
    return read_settings(NetworkConfig, server.section("network"))


__all__ = ["NetworkConfig", "parse_network", "MAX_MESSAGE_LENGTH_LIMIT"]
