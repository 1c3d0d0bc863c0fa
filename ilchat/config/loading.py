"""Reading the files: strict JSON with one-line errors, then the server and client parsers."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ilchat.config.client import ClientConfig, parse_client
from ilchat.config.reader import ConfigError, Reader, show
from ilchat.config.server import ServerConfig, parse_server

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


def read_json(path: str) -> Dict[str, Any]:
    """The top-level object of a config file, or a ConfigError naming the file."""
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
    return parse_server(Reader(path, read_json(path)))


def load_client_config(path: str) -> ClientConfig:
    """Read and validate one ``client.cfg``."""
    return parse_client(Reader(path, read_json(path)))


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
                f"{path}: name = {show(client.name)} is not allowed; "
                f"already used by {seen[client.name]} (each client needs its own name)"
            )
        seen[client.name] = path
        clients.append(client)
    return server, clients


__all__ = ["MAX_DEPTH", "load_configs", "load_server_config", "load_client_config", "read_json"]
