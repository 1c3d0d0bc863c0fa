"""server.cfg ``irc``: the IRC listener, its bridge to the chat rooms, and its limits."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Dict, Optional, Tuple, Union

import attrs

from ilchat.config.reader import (
    Reader,
    default_of,
    flag,
    integer,
    number,
    read_settings,
    text,
)

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


@attrs.frozen
class WebircGateway:
    """A web IRC gateway (Kiwi IRC, The Lounge) allowed to send WEBIRC with the real user address."""

    networks: Tuple[IPNetwork, ...]
    password: str = attrs.field(repr=False)


#: A bcrypt hash as ``htpasswd -B``, Python's bcrypt, PHP's password_hash or ``ergo genpasswd`` write it.
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")


@attrs.frozen
class IrcOperator:
    """An operator block (``irc`` → ``operators``): OPER name, bcrypt hash, allowed host masks."""

    name: str
    password_hash: str = attrs.field(repr=False)
    #: ``user@host`` masks (``*`` and ``?`` wildcards) the OPER must come from.
    hosts: Tuple[str, ...] = ()


@attrs.frozen
class IrcLoginLimits:
    """The failed-login throttle of IRC password checks (``irc`` → ``limits`` → ``login_*``).

    Failures count per address and account, per address and per account; past ``free_failures``
    of an address for an account each answer waits ``delay`` seconds, doubled per further failure
    up to ``max_delay``; at a ``failures_per_*`` limit that key is refused for ``lockout`` seconds. Failures are forgotten
    ``window`` seconds after the last; at most ``max_entries`` keys are remembered.
    """

    free_failures: int = integer(3, minimum=1, key="login_free_failures")
    delay: float = number(1.0, minimum=0, key="login_delay")
    max_delay: float = number(16.0, minimum=0, key="login_max_delay")
    failures_per_account: int = integer(10, minimum=1, key="login_failures_per_account")
    failures_per_ip: int = integer(30, minimum=1, key="login_failures_per_ip")
    failures_per_account_total: int = integer(
        100, minimum=1, key="login_failures_per_account_total")
    window: float = number(600.0, minimum=1.0, key="login_window")
    lockout: float = number(300.0, minimum=1.0, key="login_lockout")
    max_entries: int = integer(10000, minimum=100, key="login_max_entries")


def _limit(default: Union[int, float], **bounds: Any) -> Any:
    """A key of ``irc`` → ``limits``."""
    if isinstance(default, float):
        return number(default, within="limits", **bounds)
    return integer(default, within="limits", **bounds)


@attrs.frozen
class IrcConfig:
    """The optional ``irc`` section of ``server.cfg``: the IRC listener and bridge (off when absent).

    ``rooms`` maps a client name to the repository chat room ids exposed as channels, or to
    ``None`` for every room of that client; ``None`` as a whole exposes every client and room.
    ``auth`` is ``"ilias"`` (SASL PLAIN or ``PASS login:password`` against ``usr_data``) or
    ``"open"`` (any free nick; the standalone chat); ``guests`` lets ``ilias`` mode admit
    clients without a login too, as guests without an account (IRC-only channels, no nick
    that is an ILIAS login). ``port`` None means no plain listener.
    TLS uses ``cert``/``key``/``dhparam``, which default to the server's. ``websocket`` is
    the web listener's path for IRC over WebSocket (``"/irc"``; ``false`` turns it off).
    """

    address: str = text("0.0.0.0", allow_empty=False)
    port: Optional[int] = 6667
    tls_port: Optional[int] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    dhparam: Optional[str] = None
    server_name: str = text("irc.ilchat.local", allow_empty=False)
    network_name: str = text("ilchat", allow_empty=False)
    motd: Tuple[str, ...] = ()
    #: A UTF-8 text file whose lines are the MOTD (read at start; instead of ``motd``).
    motd_file: Optional[str] = None
    #: ADMIN's location and e-mail lines (the server and network names are the other two).
    admin_location: str = text("")
    admin_email: str = text("")
    operators: Tuple[IrcOperator, ...] = ()
    #: Whether an IRC operator's KICK in a bridged room kicks the member as a moderator would.
    oper_kick: bool = flag(True)
    #: Whether an IRC operator's ``+b``/``-b`` in a bridged room bans/unbans as ILIAS's ban does.
    oper_ban: bool = flag(True)
    rooms: Optional[Dict[str, Optional[Tuple[int, ...]]]] = None
    auth: str = "ilias"
    #: In ``ilias`` mode: clients that give no login register as guests instead of being refused.
    guests: bool = False
    #: The server password every connection must give with ``PASS`` in ``open`` mode (a shared
    #: secret for a standalone chat), or None for none; ``ilias`` mode's PASS is a login instead.
    password: Optional[str] = attrs.field(default=None, repr=False)
    #: Default: ``auth == "open"`` or C{guests}.
    local_channels: bool = False
    flood_rate: float = _limit(2.0, minimum=0.1)
    flood_burst: int = _limit(10, minimum=1)
    recvq: int = _limit(8192, minimum=1024)
    max_line: int = _limit(512, minimum=512, maximum=8192)
    sendq: int = _limit(262144, minimum=4096)
    max_connections_per_ip: int = _limit(10, minimum=0)
    ping_interval: float = _limit(90.0, minimum=1.0)
    ping_timeout: float = _limit(60.0, minimum=1.0)
    registration_timeout: float = _limit(30.0, minimum=1.0)
    nick_length: int = _limit(30, minimum=9, maximum=64)
    channel_length: int = _limit(64, minimum=16, maximum=200)
    topic_length: int = _limit(390, minimum=80, maximum=400)
    webirc: Tuple[WebircGateway, ...] = ()
    login_limits: IrcLoginLimits = IrcLoginLimits()
    #: Stored lines of a bridged room played back to a client without draft/chathistory when
    #: it joins (0: none).
    history_on_join: int = integer(0, minimum=0, maximum=100)
    #: The most messages one CHATHISTORY answers with (ISUPPORT ``CHATHISTORY``).
    chathistory_limit: int = integer(100, minimum=1, maximum=1000)
    #: The web listener's path for IRC over WebSocket (one segment), or None for none.
    websocket: Optional[str] = "/irc"


def _parse_webirc(reader: Reader) -> Tuple[WebircGateway, ...]:
    gateways = []
    for index, item in enumerate(reader.get_list("webirc", (), item_type=dict)):
        gateway = reader.item(item, f"webirc[{index}].")
        addresses = gateway.data.get("cidr")
        addresses = [addresses] if isinstance(addresses, str) else gateway.get_list("cidr")
        networks = []
        for address in addresses:
            try:
                networks.append(ipaddress.ip_network(address, strict=False))
            except ValueError:
                raise gateway.error("cidr", address, "expected an IP address or CIDR network")
        gateways.append(
            WebircGateway(
                networks=tuple(networks), password=gateway.get_str("password", allow_empty=False)
            )
        )
    return tuple(gateways)


def _parse_operators(reader: Reader) -> Tuple[IrcOperator, ...]:
    operators = []
    names = set()
    for index, item in enumerate(reader.get_list("operators", (), item_type=dict)):
        block = reader.item(item, f"operators[{index}].")
        name = block.get_str("name", allow_empty=False)
        if " " in name or name in names:
            raise block.error("name", name, "expected a unique name without spaces")
        names.add(name)
        password_hash = block.get_str("hash", allow_empty=False)
        if not _BCRYPT.fullmatch(password_hash):
            raise block.error("hash", "(hidden)", "expected a bcrypt hash ($2b$12$...)")
        hosts = block.get_list("hosts")
        if not hosts or not all(host and " " not in host for host in hosts):
            raise block.error("hosts", list(hosts), "expected a non-empty list of user@host masks")
        operators.append(IrcOperator(name=name, password_hash=password_hash, hosts=hosts))
    return tuple(operators)


def _read_motd(reader: Reader) -> Tuple[Optional[str], Tuple[str, ...]]:
    """``motd_file`` (its lines) or ``motd`` (a string or a list of lines)."""
    path = reader.get_path("motd_file", None)
    if path is not None:
        if reader.has("motd"):
            raise reader.error("motd", reader.data["motd"], "give either motd or motd_file")
        reader.check_readable("motd_file", path)
        try:
            with open(path, encoding="utf-8") as f:
                return path, tuple(line.rstrip() for line in f.read(65536).splitlines())
        except (OSError, UnicodeDecodeError) as e:
            raise reader.error("motd_file", path, f"a readable UTF-8 text file ({e})") from None
    value = reader.data.get("motd")
    if isinstance(value, str):
        return None, tuple(value.splitlines())
    return None, reader.get_list("motd", default_of(IrcConfig, "motd"))


def _parse_rooms(reader: Reader) -> Optional[Dict[str, Optional[Tuple[int, ...]]]]:
    if not reader.has("rooms"):
        return None
    rooms_reader = reader.section("rooms")
    rooms: Dict[str, Optional[Tuple[int, ...]]] = {}
    for client_name, value in rooms_reader.data.items():
        if value == "*":
            rooms[client_name] = None
        else:
            rooms[client_name] = rooms_reader.get_list(client_name, item_type=int)
    return rooms


_WEBSOCKET_PATH = re.compile(r"/[A-Za-z0-9._~-]{1,64}")


def _parse_websocket(reader: Reader) -> Optional[str]:
    value = reader.data.get("websocket", default_of(IrcConfig, "websocket"))
    if value is None or value is False:
        return None
    if not isinstance(value, str) or not _WEBSOCKET_PATH.fullmatch(value):
        raise reader.error("websocket", value, 'expected a path of one segment such as "/irc", or false')
    return value


def parse_irc(
    server: Reader, cert: Optional[str], key: Optional[str], dhparam: Optional[str]
) -> Optional[IrcConfig]:
    """The ``irc`` section (``None`` when absent); TLS files default to the server's."""
    if not server.has("irc"):
        return None
    reader = server.section("irc")
    plain = reader.get_bool("plain", True)
    # Port 0 takes any free port (tests); "plain": false serves IRC over TLS only.
    port = (
        reader.get_int("port", default_of(IrcConfig, "port"), minimum=0, maximum=65535)
        if plain else None
    )
    tls_port = reader.get_int("tls_port", None, minimum=0, maximum=65535)
    if port is None and tls_port is None:
        raise reader.error("plain", plain, "without plain IRC, tls_port is required")
    cert = reader.get_path("cert", cert)
    key = reader.get_path("key", key)
    dhparam = reader.get_path("dhparam", dhparam)
    if tls_port is not None:
        if cert is None or key is None:
            raise reader.missing("cert", "tls_port needs cert and key (here or in the server config)")
        reader.check_readable("cert", cert)
        reader.check_readable("key", key)
        if dhparam is not None:
            reader.check_readable("dhparam", dhparam)
    motd_file, motd = _read_motd(reader)
    rooms = _parse_rooms(reader)
    auth = reader.get_str("auth", default_of(IrcConfig, "auth"), choices=("ilias", "open"))
    password = reader.get_str("password", None, allow_empty=False)
    if password is not None and auth != "open":
        raise reader.error("password", "...", 'a server password needs "auth": "open" (in ilias mode PASS is login:password)')
    guests = reader.get_bool("guests", False)
    if guests and auth != "ilias":
        raise reader.error("guests", guests, 'guests need "auth": "ilias" (open mode admits everyone without a login)')
    limits = reader.section("limits")
    webirc = _parse_webirc(reader)
    return read_settings(
        IrcConfig,
        reader,
        port=port,
        tls_port=tls_port,
        cert=cert,
        key=key,
        dhparam=dhparam,
        motd=motd,
        motd_file=motd_file,
        operators=_parse_operators(reader),
        rooms=rooms,
        auth=auth,
        guests=guests,
        password=password,
        local_channels=reader.get_bool("local_channels", auth == "open" or guests),
        webirc=webirc,
        websocket=_parse_websocket(reader),
        login_limits=read_settings(IrcLoginLimits, limits),
    )


__all__ = ["IrcConfig", "IrcLoginLimits", "IrcOperator", "WebircGateway", "parse_irc"]
