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

One module per part (HACKING.rst has the map): ``reader`` (``ConfigError``, the typed getters,
field declarations), ``loading`` (files, ``load_configs``), ``server``, ``client`` and one per
section (``network``, ``irc``, ``redis``, ``metrics``, ``standalone``). Adding a section: a module
with a frozen attrs class whose fields are declared with ``reader.integer``/``number``/``text``/
``flag``/``strings``/``setting`` (default and check, written once) and a ``parse_<section>``
that calls ``read_settings``; then a field and a call in ``server.parse_server`` (or
``client.parse_client``) and a re-export here. Everything importable from ``ilchat.config``
is re-exported here; import from here, not from the modules. Elsewhere, a default that a
module needs too is taken from its class (``default_of(ServerConfig, "database_timeout")``).
"""

from ilchat.config.client import IDENTITY_MODES, PRIVATE_ROOM_MODES, ClientConfig, DatabaseConfig
from ilchat.config.irc import IrcConfig, IrcLoginLimits, IrcOperator, WebircGateway
from ilchat.config.loading import MAX_DEPTH, load_client_config, load_configs, load_server_config
from ilchat.config.metrics import MetricsConfig
from ilchat.config.network import MAX_MESSAGE_LENGTH_LIMIT, NetworkConfig
from ilchat.config.reader import ConfigError, default_of
from ilchat.config.redis import RedisConfig
from ilchat.config.server import DELETION_UNITS, LOG_LEVELS, ServerConfig
from ilchat.config.standalone import StandaloneConfig, StandaloneRoom

__all__ = [
    "ConfigError",
    "default_of",
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
    "IrcLoginLimits",
    "IrcOperator",
    "WebircGateway",
    "MetricsConfig",
    "RedisConfig",
    "IDENTITY_MODES",
    "PRIVATE_ROOM_MODES",
    "MAX_DEPTH",
    "MAX_MESSAGE_LENGTH_LIMIT",
]
