"""
server.cfg (spec §1.3): the listener, TLS files, logs, the daily purge, and ilchat's own keys
(``database_timeout``, ``journal_dir``) and sections (``irc``, ``network``, ``redis``,
``metrics``, each in its own module).
"""

from __future__ import annotations

import os
import re
from typing import Optional, Tuple

import attrs

from ilchat.config.irc import IrcConfig, parse_irc
from ilchat.config.metrics import MetricsConfig, parse_metrics
from ilchat.config.network import NetworkConfig, parse_network
from ilchat.config.reader import Reader, default_of
from ilchat.config.redis import RedisConfig, parse_redis

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

_TIME_RE = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")


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
    #: ilchat's own: seconds a database query may wait; where rows waiting for it are journaled
    #: (``parse_server``'s default: the error log's folder).
    database_timeout: float = 30.0
    journal_dir: str = "."
    #: ilchat's own: a Twisted endpoint description to listen on instead of address/port.
    listen: Optional[str] = None
    # ilchat's own optional sections (None when absent).
    irc: Optional[IrcConfig] = None
    network: Optional[NetworkConfig] = None
    redis: Optional[RedisConfig] = None
    metrics: Optional[MetricsConfig] = None

    @property
    def is_https(self) -> bool:
        return self.protocol == "https"

    @property
    def purge_enabled(self) -> bool:
        return self.deletion_mode == 1


def _normalise_sub_directory(value: str) -> str:
    value = value.strip().strip("/")
    return "/" + value if value else ""


def _parse_tls_files(reader: Reader) -> Tuple[str, str, Optional[str]]:
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
    return cert, key, dhparam


def parse_server(reader: Reader) -> ServerConfig:
    protocol = reader.get_str("protocol", choices=("http", "https"))
    port = reader.get_int("port", minimum=1, maximum=65535, allow_str=True)
    address = reader.get_str("address", allow_empty=False)

    cert = key = dhparam = None
    if protocol == "https":
        cert, key, dhparam = _parse_tls_files(reader)

    # ILIAS writes "" for the defaults.
    log = reader.get_path("log", None) or default_of(ServerConfig, "log")
    error_log = reader.get_path("error_log", None) or default_of(ServerConfig, "error_log")
    log_level = reader.get_str("log_level", "") or default_of(ServerConfig, "log_level")
    if log_level not in LOG_LEVELS:
        raise reader.error("log_level", log_level, "one of " + ", ".join(LOG_LEVELS))

    sub_directory = _normalise_sub_directory(reader.get_str("sub_directory", ""))
    database_timeout = float(
        reader.get_float("database_timeout", default_of(ServerConfig, "database_timeout"), minimum=1.0)
    )
    # The journal lives next to the error log unless the operator names a folder.
    journal_dir = reader.get_path("journal_dir", None) or os.path.dirname(os.path.abspath(error_log))

    # PHP and the Node server treat deletion_mode with parseInt: "1" is on.
    deletion_mode = reader.get_int("deletion_mode", default_of(ServerConfig, "deletion_mode"),
                                   allow_str=True)
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
        listen=reader.get_str("listen", default_of(ServerConfig, "listen"), allow_empty=False),
        irc=parse_irc(reader, cert, key, dhparam),
        network=parse_network(reader),
        metrics=parse_metrics(reader),
        redis=parse_redis(reader, port),
    )


__all__ = ["ServerConfig", "LOG_LEVELS", "DELETION_UNITS", "parse_server"]
