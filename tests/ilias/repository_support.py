"""
What the repository-chat end-to-end tests share: a browser (python-socketio), PHP's HTTP calls,
and a server started on a fresh ILIAS-shaped database (MariaDB or SQLite).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import socketio
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from ilchat.ilias.repository import RepositoryChat
from tests.support.db import fetch_rows_async, insert_rows_async, make_database
from tests.support.http import Response, http_request
from tests.support.server import RunningServer, start_server

#: The disconnect grace in the end-to-end tests (the 15 s itself is tested on a fake clock).
E2E_GRACE = 0.6


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` on the reactor (never blocking it) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await deferLater(reactor, 0.01, lambda: None)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


class Browser:
    """
    One browser tab running the ILIAS chat JavaScript's socket calls, with python-socketio.

    Every event received on the namespace is recorded in order as ``(event, args)``.
    """

    def __init__(self, server: RunningServer, namespace: str,
                 headers: Optional[Dict[str, str]] = None,
                 transports: Sequence[str] = ("websocket",)) -> None:
        self.server = server
        self.namespace = namespace
        #: Handshake headers, e.g. ``{"Cookie": "PHPSESSID=..."}`` as a browser on ILIAS sends.
        self.headers = dict(headers or {})
        self.transports = list(transports)
        self.events: List[tuple] = []
        self.disconnected = threading.Event()
        self._lock = threading.Lock()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", self._record, namespace=namespace)
        self.sio.on("disconnect", self._on_disconnect, namespace=namespace)

    def _record(self, event: str, *args: Any) -> None:
        with self._lock:
            self.events.append((event, args))

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    async def connect(self) -> "Browser":
        await threads.deferToThread(
            self.sio.connect,
            self.server.base_url,
            namespaces=[self.namespace],
            transports=self.transports,
            headers=self.headers,
            wait_timeout=10,
        )
        return self

    async def emit(self, event: str, *args: Any) -> None:
        """Emit like ``socket.emit(event, ...args)`` in the browser."""
        await threads.deferToThread(self._emit, event, args)

    def _emit(self, event: str, args: Sequence[Any]) -> None:
        # python-socketio sends a tuple as several arguments and anything else as one.
        data: Any = args[0] if len(args) == 1 else tuple(args)
        self.sio.emit(event, data, namespace=self.namespace)

    async def close(self) -> None:
        if self.sio.connected:
            await threads.deferToThread(self.sio.disconnect)

    def received(self, event: Optional[str] = None) -> List[tuple]:
        with self._lock:
            return [e for e in self.events if event is None or e[0] == event]

    def payloads(self, event: str, content: Optional[str] = None) -> List[Any]:
        """The first argument of each ``event`` received (filtered by its ``content``)."""
        out = []
        for name, args in self.received(event):
            payload = args[0] if args else None
            if content is None or (isinstance(payload, dict) and payload.get("content") == content):
                out.append(payload)
        return out

    def names(self) -> List[str]:
        """Event names, notices shown as ``notice:<content>``."""
        out = []
        for name, args in self.received():
            if name == "notice" and args and isinstance(args[0], dict):
                out.append("notice:" + str(args[0].get("content")))
            else:
                out.append(name)
        return out

    async def wait_for(self, event: str, content: Optional[str] = None, count: int = 1,
                       timeout: float = 10.0) -> Any:
        """Wait until ``count`` such events arrived; returns the last payload."""
        await wait_until(lambda: len(self.payloads(event, content)) >= count, timeout,
                         f"{event}/{content} x{count} on {self.namespace}")
        return self.payloads(event, content)[count - 1]

    def clear(self) -> None:
        with self._lock:
            self.events.clear()


class RepositoryServerMixin:
    """
    Starts a server with only the repository chat, on a fresh database of ``database_kind``,
    with rooms 1 and 2 in ``chatroom_settings``.
    """

    database_kind = "mysql"
    client_names: Sequence[str] = ("onscreen",)
    #: Merged into every client.cfg (the default support config believes logins: "trust").
    client_settings: Dict[str, Any] = {}
    grace = E2E_GRACE

    async def start(self) -> RunningServer:
        self.databases = {}
        for name in self.client_names:
            db = make_database(self, self.database_kind)
            await insert_rows_async(db, "chatroom_settings", [{"room_id": 1}, {"room_id": 2}])
            self.databases[name] = db
        self.server = await self.start_on(self.databases)
        self.browsers: List[Browser] = []
        self.addCleanup(self._close_browsers)
        return self.server

    async def start_on(self, databases: Dict[str, Any]) -> RunningServer:
        grace = self.grace
        clients = [{"name": name, "auth": {"key": f"key-{name}", "secret": f"secret-{name}"},
                    "database": database_dict(db), **self.client_settings}
                   for name, db in databases.items()]
        return await start_server(
            self,
            clients=clients,
            client_components=[lambda ctx: RepositoryChat(ctx, grace=grace)],
        )

    async def _close_browsers(self) -> None:
        for browser in self.browsers:
            await browser.close()

    async def php(self, action: str, *segments: Any, client: Optional[str] = None,
                  auth: bool = True) -> Response:
        """``GET /backend/<action>/<client>/<segments...>`` with PHP's Basic auth."""
        name = client or self.client_names[0]
        path = "/".join(["", "backend", action, name, *(str(s) for s in segments)])
        headers = self.server.auth_header(name) if auth else {}
        headers["Content-Type"] = "application/json; charset=utf-8"
        return await http_request(self.server.url(path), headers=headers)

    async def browser(self, client: Optional[str] = None,
                      headers: Optional[Dict[str, str]] = None) -> Browser:
        browser = Browser(self.server, "/" + (client or self.client_names[0]), headers)
        self.browsers.append(browser)
        return await browser.connect()

    async def enter(self, user_id: int, login: str, picture: bool = False, room: int = 1,
                    client: Optional[str] = None) -> Browser:
        """What ILIAS does for a user opening a chat room: PHP calls, DB row, then the socket."""
        response = await self.php("Connect", room, user_id, client=client)
        self.assertEqual(response.json(), {"status": 200})
        await insert_rows_async(self.databases[client or self.client_names[0]], "chatroom_users", [{
            "room_id": room, "user_id": user_id,
            "userdata": json.dumps({"login": login, "id": user_id}, separators=(",", ":")),
            "connected": int(time.time()),
        }])
        response = await self.php("EnterPrivateRoom", room, user_id, client=client)
        self.assertEqual(response.json(), {"success": True})
        browser = await self.browser(client)
        await browser.emit("login", login, user_id, picture)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", room)
        await browser.wait_for("private_room_entered")
        return browser

    async def alice_and_bob_in_room(self) -> Tuple[Browser, Browser]:
        """Start the server, seat alice (6) and bob (7) in room 1, and forget the entry events."""
        await self.start()
        alice = await self.enter(6, "alice")
        bob = await self.enter(7, "bob")
        await sleep(0.2)
        alice.clear()
        bob.clear()
        return alice, bob

    async def rows(self, sql: str, args: Sequence[Any] = (), client: Optional[str] = None
                   ) -> List[Dict[str, Any]]:
        return await fetch_rows_async(self.databases[client or self.client_names[0]], sql, args)

    async def history(self, client: Optional[str] = None) -> List[Dict[str, Any]]:
        return await self.rows(
            "SELECT hist_id, room_id, message, timestamp FROM chatroom_history ORDER BY hist_id",
            client=client)

    def assertTimestampMs(self, value: Any) -> None:  # noqa: N802 (unittest style)
        self.assertIsInstance(value, int)
        self.assertLess(abs(value - time.time() * 1000), 60_000)


def database_dict(db: Any) -> Dict[str, Any]:
    if db.type == "sqlite":
        return {"type": "sqlite", "name": db.name}
    return {"type": "mysql", "host": db.host, "port": db.port, "name": db.name,
            "user": db.user, "pass": db.password}
