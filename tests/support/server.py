"""
Run a whole ilchat server in the test process, on the real reactor and a free loopback port.

Usage in a ``twisted.trial.unittest.TestCase``::

    from tests.support.server import start_server

    async def test_heartbeat(self):
        server = await start_server(self)                       # one client "onscreen", SQLite
        ...requests to server.url("/backend/Heartbeat/onscreen")...

    server = await start_server(
        self,
        server={"sub_directory": "/chat", "irc": {...}},        # merged into server.cfg
        clients=[{"name": "a"}, {"name": "b", "auth": {...}}],  # one dict per client.cfg
        database=mariadb_config_dict,                           # e.g. from tests.support.db
        client_components=[...],                                # defaults: service.CLIENT_COMPONENTS
    )

The config files are really written (to a temp folder) and loaded with ``ilchat.config``, so
what a test starts is exactly what ``twistd ilchat`` would start. The server is stopped by a
cleanup of the test case (``stopService``: sockets closed, users moved to sessions, stores closed).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import attrs

from ilchat.config import ClientConfig, ServerConfig, load_configs
from ilchat.bus import LocalBus
from ilchat.service import ClientContext, IlchatService

DEFAULT_SERVER: Dict[str, Any] = {
    "protocol": "http",
    "port": 8888,  # replaced by a free port: the service listens on port 0
    "address": "127.0.0.1",
    "cert": "",
    "key": "",
    "dhparam": "",
    "log": "chat.log",
    "error_log": "chatError.log",
    "log_level": "debug",
    "sub_directory": "",
    "deletion_mode": 0,
    "deletion_unit": "",
    "deletion_value": "",
    "deletion_time": "",
}

DEFAULT_CLIENT: Dict[str, Any] = {
    "name": "onscreen",
    "enable_osd": False,
    "enable_osc": True,
    "enable_browser_notifications": True,
    "conversation_idle_state_in_minutes": 1,
    "osd_intervall": 60,
    "chat_enabled": True,
    "play_invitation_sound": False,
    "auth": {"key": "test-key", "secret": "test-secret"},
    # The tests that are not about identity log in like the Node server's clients (login is
    # believed); tests/ilias/test_identity.py runs the default, "ilias-session", with cookies.
    "identity": "trust",
}


def _merge(base: Dict[str, Any], override: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Shallow merge, except that nested dicts (``auth``, ``database``) merge one level deep."""
    result = dict(base)
    for key, value in (override or {}).items():
        if value is _DROP:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = {**result[key], **value}
        else:
            result[key] = value
    return result


#: Use as a value in an override to remove that key from the written file.
_DROP = object()
DROP = _DROP


@attrs.define(eq=False)
class RunningServer:
    """A started server: where it listens and its parts."""

    service: IlchatService
    folder: str
    server_config: ServerConfig
    client_configs: List[ClientConfig]
    server_cfg_path: str
    client_cfg_paths: List[str]

    @property
    def port(self) -> int:
        assert self.service.port is not None
        return self.service.port

    @property
    def host(self) -> str:
        return self.service.host or "127.0.0.1"

    @property
    def scheme(self) -> str:
        return self.server_config.protocol

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash, no sub_directory)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def clients(self) -> Dict[str, ClientContext]:
        """Client name → ``ClientContext`` (store, routes, socketio, bus, config)."""
        return self.service.clients

    @property
    def context(self) -> Any:
        """The ``ServerContext`` (shared bus, Socket.IO server, web root)."""
        return self.service.context

    def client(self, name: Optional[str] = None) -> ClientContext:
        """The named client's context, or the first one."""
        if name is None:
            name = self.client_configs[0].name
        return self.service.clients[name]

    def auth(self, name: Optional[str] = None) -> tuple:
        """``(key, secret)`` of a client, for ``requests.get(..., auth=server.auth())``."""
        config = self.client(name).config
        return (config.auth_key, config.auth_secret)

    def auth_header(self, name: Optional[str] = None) -> Dict[str, str]:
        key, secret = self.auth(name)
        token = base64.b64encode(f"{key}:{secret}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def log_text(self) -> str:
        """What the server wrote to its ``log`` file so far."""
        return _read(self.server_config.log)

    def error_log_text(self) -> str:
        return _read(self.server_config.error_log)

    async def stop(self) -> None:
        """Stop now (the cleanup does it otherwise); stopping twice is harmless."""
        if self.service.running:
            await self.service.stopService()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a process that must be told its port in advance."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def database_dict(database: Any) -> Dict[str, Any]:
    """The client.cfg ``database`` block for a dict, or for an object with ``DatabaseConfig``'s
    attributes (``tests.support.db.TestDatabaseConfig``; ``password`` becomes ``pass``)."""
    if isinstance(database, dict):
        return dict(database)
    block = {"type": database.type, "name": database.name}
    if database.type != "sqlite":
        block.update(
            host=database.host or "127.0.0.1",
            port=database.port or 3306,
            user=database.user,
            **{"pass": database.password},
        )
    return block


def write_configs(
    folder: str,
    server: Optional[Dict[str, Any]] = None,
    clients: Optional[Sequence[Dict[str, Any]]] = None,
    database: Any = None,
) -> tuple:
    """
    Write ``server.cfg`` and one ``client<N>.cfg`` per client into ``folder``.

    Each client gets ``database`` if given (a MariaDB config dict from ``tests.support.db``),
    else its own SQLite file in ``folder``; a client dict's own ``database`` wins over both.

    Returns:
        (server_cfg_path, [client_cfg_paths])
    """
    server_data = _merge(DEFAULT_SERVER, server)
    server_path = os.path.join(folder, "server.cfg")
    with open(server_path, "w") as f:
        json.dump(server_data, f, indent=2)
    paths = []
    for index, override in enumerate(clients or [{}]):
        data = _merge(DEFAULT_CLIENT, override)
        if "database" not in (override or {}):
            if database is not None:
                data["database"] = database_dict(database)
            else:
                data["database"] = {"type": "sqlite", "name": f"{data['name']}-{index}.sqlite3"}
        path = os.path.join(folder, f"client{index}.cfg")
        with open(path, "w") as f:
            json.dump(data, f, indent=2)
        paths.append(path)
    return server_path, paths


async def start_server(
    test_case: Any,
    server: Optional[Dict[str, Any]] = None,
    clients: Optional[Sequence[Dict[str, Any]]] = None,
    database: Any = None,
    folder: Optional[str] = None,
    **service_kwargs: Any,
) -> RunningServer:
    """
    Write the configs, build the service, start it on 127.0.0.1 and a free port, wait until it
    listens, and register its stop as a cleanup of ``test_case``.

    ``service_kwargs`` go to ``IlchatService`` (``client_components``, ``server_components``,
    ``store_factory``, ``socketio_factory``, ``reactor``...).
    """
    if folder is None:
        folder = os.path.abspath(test_case.mktemp()) if hasattr(test_case, "mktemp") else tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    server_path, client_paths = write_configs(folder, server, clients, database)
    server_config, client_configs = load_configs(server_path, client_paths)
    service_kwargs.setdefault("listen_port", 0)
    # The whole suite runs on the strict bus: every event JSON round-tripped, delivered later.
    service_kwargs.setdefault(
        "bus_factory", lambda reactor, instance: LocalBus(instance, reactor, strict=True)
    )
    service = IlchatService(server_config, client_configs, **service_kwargs)
    running = RunningServer(
        service=service,
        folder=folder,
        server_config=server_config,
        client_configs=client_configs,
        server_cfg_path=server_path,
        client_cfg_paths=client_paths,
    )
    test_case.addCleanup(running.stop)
    service.startService()
    await service.when_ready()
    return running
