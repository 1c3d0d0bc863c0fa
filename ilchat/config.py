# -*- test-case-name: tests.test_config -*-
"""
The only reader of ``server.cfg`` and ``client.cfg``.

ILIAS writes both files (spec §1.3, §1.4) and the Node server trusts them blindly: a typo in a
value crashes it at some later point. ilchat reads every key once, at start-up, into frozen typed
objects, and refuses a bad file with one line that names the file, the key, the value and what is
allowed, so that an operator can fix it without reading a traceback.

Relative paths inside a config file (TLS files, log files, an SQLite database) are relative to the
folder of that config file, so that a configuration directory can be moved as a whole. The log files
default to ``chat.log`` and ``chatError.log`` in the working directory, as with the Node server.

Adding a section (``irc``, ``network``, ``redis``, ...) takes a few lines: write a frozen attrs
class and a ``_parse_<section>(reader)`` function that uses the typed getters of ``_Reader`` on
``reader.section("<section>")``, and set the field in ``_parse_server`` / ``_parse_client``.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs

__all__ = [
    "ConfigError",
    "ServerConfig",
    "ClientConfig",
    "DatabaseConfig",
    "NetworkConfig",
    "StandaloneConfig",
    "StandaloneRoom",
    "load_configs",
    "load_server_config",
    "load_client_config",
    "LOG_LEVELS",
    "DELETION_UNITS",
    "IrcConfig",
    "WebircGateway",
    "MetricsConfig",
    "IDENTITY_MODES",
]

#: The ``log_level`` names ILIAS offers (syslog names plus winston's ``silly``), most severe first.
LOG_LEVELS: Tuple[str, ...] = (
    "emerg",
    "alert",
    "crit",
    "error",
    "warning",
    "notice",
    "info",
    "debug",
    "silly",
)

#: ``deletion_unit`` values the Node server understands (it also accepts ``month``).
DELETION_UNITS: Tuple[str, ...] = ("days", "weeks", "months", "month", "years")

_MYSQL_TYPES = ("mysql", "mariadb", "innodb", "")
_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MISSING = object()


class ConfigError(Exception):
    """
    A configuration file cannot be used.

    ``str()`` is a single line meant for stderr: the plugin prints it and exits with status 1.
    """

    def __init__(self, message: str) -> None:
        # One line whatever the cause: a stray newline in a value must not split the message.
        super().__init__(" ".join(str(message).split()))

    def __str__(self) -> str:
        return str(self.args[0])


def _show(value: Any, limit: int = 80) -> str:
    """Render a config value the way it appears in the JSON file (cut short after C{limit})."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = object.__repr__(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Reader:
    """
    Typed access to one JSON object of a config file, with errors that name the file and key path.

    ``get_*`` return ``default`` when the key is absent (or ``null``); when no default is given
    the key is required.
    """

    def __init__(self, path: str, data: Dict[str, Any], prefix: str = "") -> None:
        self.path = path
        self.data = data
        self.prefix = prefix

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def key_path(self, key: str) -> str:
        return self.prefix + key

    def error(self, key: str, value: Any, allowed: str) -> ConfigError:
        """Build the one-line error for a bad value."""
        return ConfigError(
            f"{self.path}: {self.key_path(key)} = {_show(value)} is not allowed; {allowed}"
        )

    def missing(self, key: str, allowed: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.key_path(key)} is required; {allowed}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _raw(self, key: str, default: Any, allowed: str) -> Any:
        value = self.data.get(key)
        if value is None:
            if default is _MISSING:
                raise self.missing(key, allowed)
            return _MISSING
        return value

    def section(self, key: str, required: bool = False) -> "_Reader":
        """A reader for a nested object; an absent or ``null`` section reads as empty."""
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.missing(key, "expected a JSON object")
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, value, "expected a JSON object")
        return _Reader(self.path, value, self.key_path(key) + ".")

    def get_str(
        self,
        key: str,
        default: Any = _MISSING,
        choices: Optional[Sequence[str]] = None,
        allow_empty: bool = True,
    ) -> Any:
        if choices is not None:
            allowed = "one of " + ", ".join(c if c else '""' for c in choices)
        else:
            allowed = "expected a non-empty string" if not allow_empty else "expected a string"
        value = self._raw(key, default, allowed)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self.error(key, value, allowed)
        if choices is not None and value not in choices:
            raise self.error(key, value, allowed)
        if not allow_empty and not value:
            raise self.error(key, value, allowed)
        return value

    def get_int(
        self,
        key: str,
        default: Any = _MISSING,
        minimum: Optional[int] = None,
        maximum: Optional[int] = None,
        allow_str: bool = False,
    ) -> Any:
        """
        An integer; ``allow_str`` also takes a string of digits, as PHP sometimes writes numbers
        from form fields as strings. A JSON ``true`` is never read as 1.
        """
        if minimum is not None and maximum is not None:
            allowed = f"expected an integer from {minimum} to {maximum}"
        elif minimum is not None:
            allowed = f"expected an integer of at least {minimum}"
        else:
            allowed = "expected an integer"
        value = self._raw(key, default, allowed)
        if allow_str and value == "":
            # PHP writes "" for a number the admin left empty.
            if default is _MISSING:
                raise self.missing(key, allowed)
            return default
        if value is _MISSING:
            return default
        number: Optional[int] = None
        if type(value) is int:
            number = value
        elif type(value) is float and value.is_integer():
            number = int(value)
        elif allow_str and isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,18}\s*", value):
            number = int(value)
        if number is None:
            raise self.error(key, value, allowed)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            raise self.error(key, value, allowed)
        return number

    def get_float(self, key: str, default: Any = _MISSING, minimum: Optional[float] = None) -> Any:
        allowed = "expected a number" + (f" of at least {minimum}" if minimum is not None else "")
        value = self._raw(key, default, allowed)
        if value is _MISSING:
            return default
        if type(value) not in (int, float):
            raise self.error(key, value, allowed)
        try:
            number = float(value)
        except OverflowError:  # an integer with hundreds of digits
            raise self.error(key, value, allowed + " (this one is too large)")
        if not math.isfinite(number) or (minimum is not None and number < minimum):
            raise self.error(key, value, allowed)
        return number

    def get_bool(self, key: str, default: Any = _MISSING, lenient: bool = False) -> Any:
        """
        A boolean; ``lenient`` also takes 0/1 and "0"/"1", which PHP writes for some flags.
        """
        allowed = "expected true or false"
        value = self._raw(key, default, allowed)
        if value is _MISSING:
            return default
        if type(value) is bool:
            return value
        if lenient and (type(value) is int or isinstance(value, str)) and str(value) in ("0", "1"):
            return str(value) == "1"
        raise self.error(key, value, allowed)

    def get_list(self, key: str, default: Any = _MISSING, item_type: type = str) -> Any:
        allowed = f"expected a list of {item_type.__name__}"
        value = self._raw(key, default, allowed)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(type(v) is item_type for v in value):
            raise self.error(key, value, allowed)
        return tuple(value)

    def get_path(self, key: str, default: Any = _MISSING) -> Any:
        """A file path; relative paths are taken from the config file's folder. ``""`` is absent."""
        value = self.get_str(key, default)
        if value is default or value == "":
            return default
        self.check_no_nul(key, value)
        return self.resolve(value)

    def check_no_nul(self, key: str, path: str) -> None:
        """No system call takes a path with a NUL: refuse it here rather than with a traceback."""
        if "\0" in path:
            raise self.error(key, path, "expected a file path without NUL characters")

    def resolve(self, value: str) -> str:
        return os.path.normpath(os.path.join(self.folder, os.path.expanduser(value)))

    def check_readable(self, key: str, path: str) -> None:
        """Refuse a file that is missing or unreadable now, not at the first TLS handshake."""
        if not os.path.isfile(path):
            raise ConfigError(f"{self.path}: {self.key_path(key)}: File does not exist: {path}")
        if not os.access(path, os.R_OK):
            raise ConfigError(f"{self.path}: {self.key_path(key)}: File is not readable: {path}")


# --- server.cfg ---------------------------------------------------------------------------------


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

    allow: Tuple[str, ...] = ()
    trusted_proxies: Tuple[str, ...] = ()
    allowed_origins: Tuple[str, ...] = ()
    max_connections_per_ip: int = 2000
    message_rate: float = 5.0
    message_burst: float = 10.0
    max_name_length: int = 32
    max_message_length: int = 2000
    max_http_connections_per_ip: int = 4000
    ilias_message_rate: float = 10.0
    ilias_message_burst: float = 30.0
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    max_headers: int = 100
    max_header_bytes: int = 16384


def _get_cidrs(reader: _Reader, key: str) -> Tuple[str, ...]:
    cidrs = reader.get_list(key, ())
    for cidr in cidrs:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise reader.error(
                key, cidr, "expected CIDRs such as 10.0.0.0/8, 127.0.0.1 or 2001:db8::/32"
            )
    return cidrs


def _parse_network(reader: _Reader) -> Optional[NetworkConfig]:
    if not reader.has("network"):
        return None
    net = reader.section("network")
    return NetworkConfig(
        allow=_get_cidrs(net, "allow"),
        trusted_proxies=_get_cidrs(net, "trusted_proxies"),
        allowed_origins=net.get_list("allowed_origins", ()),
        max_connections_per_ip=net.get_int("max_connections_per_ip", 2000, minimum=0),
        message_rate=net.get_float("message_rate", 5.0, minimum=0),
        message_burst=net.get_float("message_burst", 10.0, minimum=1),
        max_name_length=net.get_int("max_name_length", 32, minimum=1, maximum=255),
        max_message_length=net.get_int("max_message_length", 2000, minimum=1, maximum=3000),
        max_http_connections_per_ip=net.get_int("max_http_connections_per_ip", 4000, minimum=0),
        ilias_message_rate=net.get_float("ilias_message_rate", 10.0, minimum=0),
        ilias_message_burst=net.get_float("ilias_message_burst", 30.0, minimum=1),
        header_timeout=net.get_float("header_timeout", 30.0, minimum=1),
        body_timeout=net.get_float("body_timeout", 60.0, minimum=1),
        max_headers=net.get_int("max_headers", 100, minimum=10, maximum=10000),
        max_header_bytes=net.get_int("max_header_bytes", 16384, minimum=1024, maximum=1048576),
    )


@attrs.frozen
class ServerConfig:
    """``server.cfg`` (spec §1.3), validated.

    ``sub_directory`` is normalised to ``""`` or ``"/prefix"`` (leading slash, no trailing one).
    ``deletion_time`` is ``(hour, minute)`` local time, or ``None`` when the purge is off and no
    time is given. ``log_level`` is one of ``LOG_LEVELS``.
    """

    path: str
    protocol: str
    port: int
    address: str
    cert: Optional[str] = None
    key: Optional[str] = None
    dhparam: Optional[str] = None
    log: str = "chat.log"
    error_log: str = "chatError.log"
    log_level: str = "info"
    sub_directory: str = ""
    deletion_mode: int = 0
    deletion_unit: Optional[str] = None
    deletion_value: Optional[int] = None
    deletion_time: Optional[Tuple[int, int]] = None
    #: ilchat's own: seconds a database query may wait; where rows waiting for it are journaled.
    database_timeout: float = 30.0
    journal_dir: str = "."
    #: ilchat's own: a Twisted endpoint description to listen on instead of address/port.
    listen: Optional[str] = None
    # ilchat's own optional sections; later issues give them typed classes.
    irc: Any = None
    network: Any = None
    redis: Any = None
    metrics: Any = None

    @property
    def is_https(self) -> bool:
        return self.protocol == "https"

    @property
    def purge_enabled(self) -> bool:
        return self.deletion_mode == 1


def _normalise_sub_directory(value: str) -> str:
    value = value.strip().strip("/")
    return "/" + value if value else ""


def _parse_server(reader: _Reader) -> ServerConfig:
    protocol = reader.get_str("protocol", choices=("http", "https"))
    port = reader.get_int("port", minimum=1, maximum=65535, allow_str=True)
    address = reader.get_str("address", allow_empty=False)

    cert = key = dhparam = None
    if protocol == "https":
        cert = reader.get_path("cert", None)
        if cert is None:
            raise reader.missing("cert", "https needs a readable certificate file")
        reader.check_readable("cert", cert)
        key = reader.get_path("key", None)
        if key is None:
            raise reader.missing("key", "https needs a readable private key file")
        reader.check_readable("key", key)
        dhparam = reader.get_path("dhparam", None)
        if dhparam is not None:
            reader.check_readable("dhparam", dhparam)

    log = reader.get_path("log", None) or "chat.log"
    error_log = reader.get_path("error_log", None) or "chatError.log"
    log_level = reader.get_str("log_level", "") or "info"
    if log_level not in LOG_LEVELS:
        raise reader.error("log_level", log_level, "one of " + ", ".join(LOG_LEVELS))

    sub_directory = _normalise_sub_directory(reader.get_str("sub_directory", ""))
    database_timeout = float(reader.get_float("database_timeout", 30.0, minimum=1.0))
    # The journal lives next to the error log unless the operator names a folder.
    journal_dir = reader.get_path("journal_dir", None) or os.path.dirname(os.path.abspath(error_log))

    # PHP and the Node server treat deletion_mode with parseInt: "1" is on.
    deletion_mode = reader.get_int("deletion_mode", 0, allow_str=True)
    purge = deletion_mode == 1
    unit = reader.get_str("deletion_unit", "")
    if unit or purge:
        if unit not in DELETION_UNITS:
            raise reader.error("deletion_unit", unit, "one of " + ", ".join(DELETION_UNITS))
    value = reader.get_int("deletion_value", None, minimum=0, allow_str=True)
    if purge and value is None:
        raise reader.missing("deletion_value", "expected a number of deletion_unit")
    time_text = reader.get_str("deletion_time", "")
    deletion_time = None
    if time_text or purge:
        match = _TIME_RE.match(time_text)
        if not match:
            raise reader.error("deletion_time", time_text, 'expected "HH:MM" (00:00 to 23:59)')
        deletion_time = (int(match.group(1)), int(match.group(2)))

    return ServerConfig(
        path=reader.path,
        protocol=protocol,
        port=port,
        address=address,
        cert=cert,
        key=key,
        dhparam=dhparam,
        log=log,
        error_log=error_log,
        log_level=log_level,
        sub_directory=sub_directory,
        deletion_mode=deletion_mode,
        deletion_unit=unit or None,
        deletion_value=value,
        deletion_time=deletion_time,
        database_timeout=database_timeout,
        journal_dir=journal_dir,
        listen=reader.get_str("listen", None, allow_empty=False),
        irc=_parse_irc(reader, cert, key, dhparam),
        network=_parse_network(reader),
        metrics=_parse_metrics(reader),
    )


@attrs.frozen
class MetricsConfig:
    """The optional ``metrics`` section: where Prometheus scrapes ``/metrics`` (off when absent)."""

    address: str = "127.0.0.1"
    port: int = 9464
    listen: Optional[str] = None


def _parse_metrics(server: _Reader) -> Optional[MetricsConfig]:
    if not server.has("metrics"):
        return None
    reader = server.section("metrics")
    return MetricsConfig(
        address=reader.get_str("address", "127.0.0.1", allow_empty=False),
        # Port 0 takes any free port (tests).
        port=reader.get_int("port", 9464, minimum=0, maximum=65535),
        listen=reader.get_str("listen", None, allow_empty=False),
    )


# --- server.cfg: irc ----------------------------------------------------------------------------


@attrs.frozen
class WebircGateway:
    """A web IRC gateway (Kiwi IRC, The Lounge) allowed to send WEBIRC with the real user address."""

    networks: Tuple[Any, ...]
    password: str = attrs.field(repr=False)


@attrs.frozen
class IrcLoginLimits:
    """The failed-login throttle of IRC password checks (``irc`` → ``limits`` → ``login_*``).

    Failures count per address and account, per address and per account; past ``free_failures``
    of an address for an account each answer waits ``delay`` seconds, doubled per further failure
    up to ``max_delay``; at a ``failures_per_*`` limit that key is refused for ``lockout`` seconds. Failures are forgotten
    ``window`` seconds after the last; at most ``max_entries`` keys are remembered.
    """

    free_failures: int = 3
    delay: float = 1.0
    max_delay: float = 16.0
    failures_per_account: int = 10
    failures_per_ip: int = 30
    failures_per_account_total: int = 100
    window: float = 600.0
    lockout: float = 300.0
    max_entries: int = 10000


@attrs.frozen
class IrcConfig:
    """The optional ``irc`` section of ``server.cfg``: the IRC listener and bridge (off when absent).

    ``rooms`` maps a client name to the repository chat room ids exposed as channels, or to
    ``None`` for every room of that client; ``None`` as a whole exposes every client and room.
    ``auth`` is ``"ilias"`` (SASL PLAIN or ``PASS login:password`` against ``usr_data``) or
    ``"open"`` (any free nick; the standalone chat). ``port`` None means no plain listener.
    TLS uses ``cert``/``key``/``dhparam``, which default to the server's.
    """

    address: str = "0.0.0.0"
    port: Optional[int] = 6667
    tls_port: Optional[int] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    dhparam: Optional[str] = None
    server_name: str = "irc.ilchat.local"
    network_name: str = "ilchat"
    motd: Tuple[str, ...] = ()
    rooms: Optional[Dict[str, Optional[Tuple[int, ...]]]] = None
    auth: str = "ilias"
    local_channels: bool = False
    flood_rate: float = 2.0
    flood_burst: int = 10
    recvq: int = 8192
    max_line: int = 512
    sendq: int = 262144
    max_connections_per_ip: int = 10
    ping_interval: float = 90.0
    ping_timeout: float = 60.0
    registration_timeout: float = 30.0
    nick_length: int = 30
    channel_length: int = 64
    topic_length: int = 390
    webirc: Tuple[WebircGateway, ...] = ()
    login_limits: IrcLoginLimits = IrcLoginLimits()


def _parse_login_limits(limits: _Reader) -> IrcLoginLimits:
    defaults = IrcLoginLimits()
    return IrcLoginLimits(
        free_failures=limits.get_int("login_free_failures", defaults.free_failures, minimum=1),
        delay=limits.get_float("login_delay", defaults.delay, minimum=0),
        max_delay=limits.get_float("login_max_delay", defaults.max_delay, minimum=0),
        failures_per_account=limits.get_int(
            "login_failures_per_account", defaults.failures_per_account, minimum=1),
        failures_per_ip=limits.get_int("login_failures_per_ip", defaults.failures_per_ip, minimum=1),
        failures_per_account_total=limits.get_int(
            "login_failures_per_account_total", defaults.failures_per_account_total, minimum=1),
        window=limits.get_float("login_window", defaults.window, minimum=1.0),
        lockout=limits.get_float("login_lockout", defaults.lockout, minimum=1.0),
        max_entries=limits.get_int("login_max_entries", defaults.max_entries, minimum=100),
    )


def _parse_irc(
    server: _Reader, cert: Optional[str], key: Optional[str], dhparam: Optional[str]
) -> Optional[IrcConfig]:
    if not server.has("irc"):
        return None
    import ipaddress

    reader = server.section("irc")
    plain = reader.get_bool("plain", True)
    # Port 0 takes any free port (tests); "plain": false serves IRC over TLS only.
    port = reader.get_int("port", 6667, minimum=0, maximum=65535) if plain else None
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
    motd_value = reader.data.get("motd")
    if isinstance(motd_value, str):
        motd: Tuple[str, ...] = tuple(motd_value.splitlines())
    else:
        motd = reader.get_list("motd", ())
    rooms = None
    if reader.has("rooms"):
        rooms_reader = reader.section("rooms")
        rooms = {}
        for client_name, value in rooms_reader.data.items():
            if value == "*":
                rooms[client_name] = None
            else:
                rooms[client_name] = rooms_reader.get_list(client_name, item_type=int)
    auth = reader.get_str("auth", "ilias", choices=("ilias", "open"))
    limits = reader.section("limits")
    gateways = []
    for index, item in enumerate(reader.get_list("webirc", (), item_type=dict)):
        gateway = _Reader(reader.path, item, reader.key_path(f"webirc[{index}]."))
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
    return IrcConfig(
        address=reader.get_str("address", "0.0.0.0", allow_empty=False),
        port=port,
        tls_port=tls_port,
        cert=cert,
        key=key,
        dhparam=dhparam,
        server_name=reader.get_str("server_name", "irc.ilchat.local", allow_empty=False),
        network_name=reader.get_str("network_name", "ilchat", allow_empty=False),
        motd=motd,
        rooms=rooms,
        auth=auth,
        local_channels=reader.get_bool("local_channels", auth == "open"),
        flood_rate=limits.get_float("flood_rate", 2.0, minimum=0.1),
        flood_burst=limits.get_int("flood_burst", 10, minimum=1),
        recvq=limits.get_int("recvq", 8192, minimum=1024),
        max_line=limits.get_int("max_line", 512, minimum=512, maximum=8192),
        sendq=limits.get_int("sendq", 262144, minimum=4096),
        max_connections_per_ip=limits.get_int("max_connections_per_ip", 10, minimum=0),
        ping_interval=limits.get_float("ping_interval", 90.0, minimum=1.0),
        ping_timeout=limits.get_float("ping_timeout", 60.0, minimum=1.0),
        registration_timeout=limits.get_float("registration_timeout", 30.0, minimum=1.0),
        nick_length=limits.get_int("nick_length", 30, minimum=9, maximum=64),
        channel_length=limits.get_int("channel_length", 64, minimum=16, maximum=200),
        topic_length=limits.get_int("topic_length", 390, minimum=80, maximum=400),
        webirc=tuple(gateways),
        login_limits=_parse_login_limits(limits),
    )


# --- client.cfg ---------------------------------------------------------------------------------


@attrs.frozen
class DatabaseConfig:
    """The ``database`` block of a ``client.cfg``.

    ``type`` is ``"mysql"`` (ILIAS writes ``mysql``; ``mariadb``, ``innodb`` and ``""`` mean the
    same) or ``"sqlite"``, whose ``name`` is the database file path (absolute after loading).
    """

    type: str
    name: str
    host: str = "localhost"
    port: int = 3306
    user: str = ""
    password: str = attrs.field(default="", repr=False)


@attrs.frozen
class StandaloneRoom:
    """One room of a standalone chat: created in the client's SQLite store at start."""

    id: int
    title: str


@attrs.frozen
class StandaloneConfig:
    """The optional ``standalone`` block of a ``client.cfg``: an internal chat with no ILIAS.

    Users log in with a name only on the built-in web page (or IRC). ``title`` and ``welcome`` are
    shown on the page's welcome screen; ``history`` is how many of a room's latest messages a
    newcomer sees.
    """

    title: str = "ilchat"
    welcome: str = "Pick a name to join the chat."
    rooms: Tuple[StandaloneRoom, ...] = (StandaloneRoom(1, "Lobby"),)
    history: int = 50


def _parse_standalone(reader: _Reader) -> Optional[StandaloneConfig]:
    if not reader.has("standalone"):
        return None
    sa = reader.section("standalone")
    rooms = []
    seen = set()
    for index, raw in enumerate(sa.get_list("rooms", ({"id": 1, "title": "Lobby"},), dict)):
        room = _Reader(reader.path, raw, f"{sa.prefix}rooms[{index}].")
        room_id = room.get_int("id", minimum=1)
        if room_id in seen:
            raise room.error("id", room_id, "expected a room id not used by another room")
        seen.add(room_id)
        rooms.append(StandaloneRoom(room_id, room.get_str("title", allow_empty=False)))
    if not rooms:
        raise sa.error("rooms", [], "expected at least one room")
    return StandaloneConfig(
        title=sa.get_str("title", "ilchat"),
        welcome=sa.get_str("welcome", "Pick a name to join the chat."),
        rooms=tuple(rooms),
        history=sa.get_int("history", 50, minimum=0, maximum=1000),
    )


@attrs.frozen
class ClientConfig:
    """One ``client.cfg`` (spec §1.4): one ILIAS client, i.e. namespaces ``/<name>`` and ``/<name>-im``.

    The keys only PHP and the browser use are kept for completeness; the server ignores them.
    """

    path: str
    name: str
    auth_key: str = attrs.field(repr=False)
    auth_secret: str = attrs.field(repr=False)
    database: DatabaseConfig
    enable_osd: Any = None
    enable_osc: Any = None
    enable_browser_notifications: Any = None
    conversation_idle_state_in_minutes: Any = None
    osd_intervall: Any = None
    chat_enabled: Any = None
    play_invitation_sound: Any = None
    standalone: Optional[StandaloneConfig] = None
    #: ``"ilias-session"`` (the socket's user comes from the ILIAS session cookie of its
    #: handshake) or ``"trust"`` (the browser's ``login`` is believed, as with the Node server).
    #: Standalone clients have their own login scheme and ignore it.
    identity: str = "ilias-session"
    #: The ILIAS session cookie's name (PHP's ``session.name``).
    session_cookie: str = "PHPSESSID"
    #: The ILIAS client id the ``ilClientId`` cookie must name; ILIAS's default chat instance
    #: name is the client id, so it defaults to ``name``.
    ilias_client_id: str = ""
    #: ILIAS's ``ANONYMOUS_USER_ID`` (client.ini.php ``[system]``, 13 on every installation): a
    #: session of the anonymous user is nobody's.
    anonymous_user_id: int = 13


#: The values of client.cfg ``identity``.
IDENTITY_MODES: Tuple[str, ...] = ("ilias-session", "trust")

#: What a cookie name may be (RFC 6265 token characters).
_COOKIE_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _parse_database(reader: _Reader) -> DatabaseConfig:
    db = reader.section("database", required=True)
    db_type = db.get_str("type", "")
    if db_type.lower() in _MYSQL_TYPES:
        return DatabaseConfig(
            type="mysql",
            name=db.get_str("name", allow_empty=False),
            host=db.get_str("host", "") or "localhost",
            port=db.get_int("port", 3306, minimum=1, maximum=65535, allow_str=True),
            user=db.get_str("user", ""),
            password=db.get_str("pass", ""),
        )
    if db_type.lower() == "sqlite":
        name = db.get_str("name", allow_empty=False)
        db.check_no_nul("name", name)
        return DatabaseConfig(type="sqlite", name=db.resolve(name))
    raise db.error("type", db_type, "one of mysql, mariadb, innodb, sqlite")


# Keys PHP writes for the browser; the server only keeps them.
_CLIENT_UI_KEYS = (
    "enable_osd",
    "enable_osc",
    "enable_browser_notifications",
    "conversation_idle_state_in_minutes",
    "osd_intervall",
    "chat_enabled",
    "play_invitation_sound",
)


def _parse_client(reader: _Reader) -> ClientConfig:
    name = reader.get_str("name", allow_empty=False)
    if "/" in name or name != name.strip():
        raise reader.error("name", name, "expected a name without slashes or surrounding spaces")
    auth = reader.section("auth", required=True)
    cookie = reader.get_str("session_cookie", "PHPSESSID", allow_empty=False)
    if not _COOKIE_NAME_RE.match(cookie):
        raise reader.error("session_cookie", cookie, "expected a cookie name such as PHPSESSID")
    return ClientConfig(
        path=reader.path,
        name=name,
        auth_key=auth.get_str("key", allow_empty=False),
        auth_secret=auth.get_str("secret", allow_empty=False),
        database=_parse_database(reader),
        standalone=_parse_standalone(reader),
        identity=reader.get_str("identity", "ilias-session", choices=IDENTITY_MODES),
        session_cookie=cookie,
        ilias_client_id=reader.get_str("ilias_client_id", name, allow_empty=False),
        anonymous_user_id=reader.get_int("anonymous_user_id", 13, minimum=0, allow_str=True),
        **{key: reader.data.get(key) for key in _CLIENT_UI_KEYS},
    )


# --- loading ------------------------------------------------------------------------------------


#: Deepest nesting of objects and lists accepted in a config file (the deepest ilchat reads is 4).
MAX_DEPTH = 32


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _depth(value: Any) -> int:
    """How deeply objects and lists nest in C{value} (a scalar is 0; counted up to MAX_DEPTH + 1)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if level <= MAX_DEPTH:
            stack.extend((child, level + 1) for child in children)
    return deepest


def _read_json(path: str) -> Dict[str, Any]:
    if "\0" in path:
        raise ConfigError(f"File does not exist: {path!r} (a path cannot contain NUL characters)")
    if not os.path.exists(path):
        # The exact text of the Node server (Handler/FileHandler.js).
        raise ConfigError(f"File does not exist: {path}")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})")
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}")
    except RecursionError:
        raise ConfigError(f"{path}: invalid JSON: nested too deeply")
    except ValueError as e:
        # Python refuses integers of more than 4,300 digits (and we refuse NaN and Infinity).
        raise ConfigError(f"{path}: invalid JSON: {e}")
    if _depth(data) > MAX_DEPTH:
        raise ConfigError(f"{path}: invalid JSON: nested more than {MAX_DEPTH} levels deep")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object at the top level")
    return data


def load_server_config(path: str) -> ServerConfig:
    """Read and validate one ``server.cfg``."""
    return _parse_server(_Reader(path, _read_json(path)))


def load_client_config(path: str) -> ClientConfig:
    """Read and validate one ``client.cfg``."""
    return _parse_client(_Reader(path, _read_json(path)))


def load_configs(
    server_path: Optional[str], client_paths: Sequence[str]
) -> Tuple[ServerConfig, List[ClientConfig]]:
    """
    Read ``server.cfg`` and every ``client.cfg``, in order, as the Node server does at boot.

    Raises:
        ConfigError: the first problem found, as one line for stderr.
    """
    if not server_path:
        raise ConfigError("Required: Server-Config file")
    if not client_paths:
        raise ConfigError("Required: Client-Config file")
    server = load_server_config(server_path)
    clients: List[ClientConfig] = []
    seen: Dict[str, str] = {}
    for path in client_paths:
        client = load_client_config(path)
        if client.name in seen:
            raise ConfigError(
                f"{path}: name = {_show(client.name)} is not allowed; "
                f"already used by {seen[client.name]} (each client needs its own name)"
            )
        seen[client.name] = path
        clients.append(client)
    return server, clients
