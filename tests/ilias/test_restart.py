"""
ILIAS pages across a real restart of ``twistd ilchat`` (``tests/ilias/js/restart.js``: the npm
socket.io-client 4.8, doing on each reconnect what ILIAS's scripts do).

A stopping server closes the transports without a Socket.IO DISCONNECT, so every page reconnects
by itself ("transport close"/"transport error", never "io server disconnect"), and the restarted
server gives back the rooms PHP had admitted the users to: the page's own login and enterRoom get
it back in, and its On-Screen Chat goes on, without a reload. A user banned while the server was
down gets ``shutdown``; one kicked before the page came back gets ``userjustkicked``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from typing import Any, Callable, Dict, List

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial import unittest

from ilchat.ilias.repository import RepositoryChat
from tests.ilias.repository_support import RepositoryServerMixin, database_dict
from tests.support.db import fetch_rows_async, insert_rows_async, make_mariadb_database_async
from tests.support.http import http_request
from tests.support.server import free_port, start_server, write_configs
from tests.test_plugin import TWISTD, spawn_serving, wait_exit

JS = os.path.join(os.path.dirname(__file__), "js", "restart.js")
CLIENT_MODULES = os.path.join(os.path.dirname(__file__), "..", "js", "node_modules",
                              "socket.io-client")
AUTH = {"Authorization": "Basic dGVzdC1rZXk6dGVzdC1zZWNyZXQ="}  # test-key:test-secret


class Pages(protocol.ProcessProtocol):
    """restart.js as a child process: its event lines as they come, commands on its stdin."""

    def __init__(self) -> None:
        self.events: List[Dict[str, Any]] = []
        self.errors = b""
        self._buffer = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        self.events.extend(json.loads(line) for line in lines if line.strip())

    def errReceived(self, data: bytes) -> None:  # noqa: N802 (twisted API)
        self.errors += data

    def processEnded(self, reason: Any) -> None:  # noqa: N802 (twisted API)
        self.ended.callback(None)

    def send(self, **command: Any) -> None:
        self.transport.write(json.dumps(command).encode() + b"\n")

    def seen(self, who: str, ns: str, event: str, since: int = 0,
             where: Callable[[Dict[str, Any]], bool] = lambda e: True) -> List[Dict[str, Any]]:
        return [e for e in self.events[since:]
                if e["who"] == who and e["ns"] == ns and e["event"] == event and where(e)]

    async def wait(self, who: str, ns: str, event: str, since: int = 0,
                   where: Callable[[Dict[str, Any]], bool] = lambda e: True,
                   timeout: float = 60.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = self.seen(who, ns, event, since, where)
            if hits:
                return hits[0]
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"{who} {ns} never got {event} after #{since}: "
                             f"{self.events[since:]!r} {self.errors.decode()}")


def notice(content: str) -> Callable[[Dict[str, Any]], bool]:
    return lambda e: e["args"][0].get("content") == content


class RestartTests(unittest.TestCase):
    """One MariaDB database, one config folder, two ``twistd ilchat`` runs one after the other."""

    timeout = 180

    async def serve(self) -> Any:
        return await spawn_serving(
            self, [TWISTD, "-n", "--pidfile=", "ilchat", "--server-cfg", self.server_cfg,
                   "--client-cfg", self.client_cfg], self.folder, self.url)

    async def php(self, action: str, *segments: Any) -> Any:
        path = "/".join(["", "backend", action, "onscreen", *(str(s) for s in segments)])
        response = await http_request(self.url + path, headers=AUTH)
        self.assertEqual(response.code, 200, response.body)
        return response.json()

    async def rows_when(self, database: Any, sql: str) -> List[Dict[str, Any]]:
        """The rows of ``sql`` once there are any (the server writes in the background)."""
        rows: List[Dict[str, Any]] = []
        for _ in range(400):
            rows = await fetch_rows_async(database, sql)
            if rows:
                break
            await deferLater(reactor, 0.05, lambda: None)
        return rows

    async def stop(self, process: Any) -> None:
        process.send_signal(signal.SIGTERM)
        self.assertEqual(await wait_exit(self, process, 30.0), 0)

    async def test_pages_come_back_into_their_rooms_and_conversations(self) -> None:
        if shutil.which("node") is None or not os.path.isdir(CLIENT_MODULES):
            raise unittest.SkipTest("node and tests/js/node_modules/socket.io-client are needed (apt-get install nodejs npm; scripts/test then runs npm ci in tests/js)")
        database = await make_mariadb_database_async(self)
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server_cfg, (self.client_cfg,) = write_configs(
            self.folder, server={"port": port, "log_level": "debug"}, database=database)
        await insert_rows_async(database, "chatroom_settings", [{"room_id": 1, "object_id": 100}])
        await insert_rows_async(database, "usr_pref", [
            {"usr_id": uid, "keyword": "chat_osc_accept_msg", "value": "y"} for uid in (6, 9)])
        first = await self.serve()
        now = int(time.time())
        # alice has a chat name of her own (PHP's custom user names): PHP writes it in userdata.
        for uid, login in ((6, "Alice Liddell"), (7, "bob"), (8, "carol")):
            self.assertEqual(await self.php("Connect", 1, uid), {"status": 200})
            await insert_rows_async(database, "chatroom_users", [{
                "room_id": 1, "user_id": uid, "connected": now,
                "userdata": json.dumps({"login": login, "id": uid})}])
            self.assertEqual(await self.php("EnterPrivateRoom", 1, uid), {"success": True})

        pages = Pages()
        node = reactor.spawnProcess(pages, shutil.which("node"), ["node", JS, self.url, "onscreen", "1"],
                                    env=dict(os.environ))
        self.addCleanup(lambda: pages.ended)
        self.addCleanup(lambda: node.signalProcess("KILL") if pages.ended.called is False else None)
        for who in ("alice", "bob", "carol"):
            await pages.wait(who, "room", "notice", where=notice("welcome_to_chat"))
        await pages.wait("alice", "osc", "login")
        await pages.wait("dave", "osc", "login")
        pages.send(cmd="emit", who="alice", ns="osc",
                   args=["conversation", [{"id": 6, "name": "alice"}, {"id": 9, "name": "dave"}]])
        conversation = (await pages.wait("alice", "osc", "conversation-init"))["args"][0]["id"]

        # bob's page stays away until told: he is kicked after the restart, before he is back.
        pages.send(cmd="hold", who="bob")
        mark = len(pages.events)
        await self.stop(first)
        reasons = {}
        for who, ns in (("alice", "room"), ("alice", "osc"), ("bob", "room"), ("carol", "room"),
                        ("dave", "osc")):
            reasons[who, ns] = (await pages.wait(who, ns, "disconnect", mark))["args"][0]
        self.assertLessEqual(set(reasons.values()), {"transport close", "transport error"}, reasons)
        self.assertTrue(os.path.exists(os.path.join(self.folder, "ilchat-onscreen-admissions.json")))

        # carol is banned while the server is down (the ban table is what a restart re-checks).
        await insert_rows_async(database, "chatroom_bans",
                                [{"room_id": 1, "user_id": 8, "timestamp": now, "actor_id": 6}])
        second = await self.serve()
        self.assertEqual(await self.php("Kick", 1, 7), {"success": True})

        # alice's page is back in room 1, with the usual welcome, under PHP's name for her, and in
        # her conversation.
        await pages.wait("alice", "room", "loggedIn", mark)
        welcome = await pages.wait("alice", "room", "notice", mark, notice("welcome_to_chat"))
        self.assertEqual(welcome["args"][0]["data"]["username"], "Alice Liddell")
        await pages.wait("alice", "osc", "login", mark)
        await pages.wait("dave", "osc", "login", mark)
        # carol, banned meanwhile: shutdown at her login (the page leaves for PHP), never back in.
        await pages.wait("carol", "room", "shutdown", mark)
        # bob, kicked meanwhile: logged in, but his enterRoom gets userjustkicked.
        pages.send(cmd="release", who="bob")
        await pages.wait("bob", "room", "loggedIn", mark)
        kicked = await pages.wait("bob", "room", "userjustkicked", mark)
        self.assertEqual(kicked["args"][0]["roomId"], 1)

        pages.send(cmd="emit", who="alice", ns="room",
                   args=["message", {"content": "after the restart", "format": {}}, 1])
        await pages.wait("alice", "room", "message", mark,
                         lambda e: e["args"][0]["content"] == "after the restart")
        pages.send(cmd="emit", who="dave", ns="osc",
                   args=["message", conversation, 9, "still there?"])
        got = await pages.wait("alice", "osc", "message", mark,
                               lambda e: e["args"][0]["message"] == "still there?")
        self.assertEqual(got["args"][0]["conversationId"], conversation)
        for who in ("bob", "carol"):
            self.assertEqual(pages.seen(who, "room", "message", mark), [])
            self.assertEqual(pages.seen(who, "room", "notice", mark, notice("welcome_to_chat")), [])
        self.assertEqual(pages.seen("carol", "room", "loggedIn", mark), [])

        # The message is stored as any other; GetRooms lists alice alone in room 1.
        rows = await self.rows_when(database, "SELECT message FROM chatroom_history")
        self.assertEqual([json.loads(r["message"])["content"] for r in rows], ["after the restart"])
        users = (await self.php("GetRooms"))["rooms"]["1_0"]["users"]
        self.assertEqual([u["id"] for u in users], [6])
        # PHP's table lists alice in the room again, with the row PHP wrote; the stop closed the
        # three sessions of the first run.
        self.assertEqual(
            [(r["room_id"], r["user_id"], json.loads(r["userdata"])) for r in await self.rows_when(
                database, "SELECT room_id, user_id, userdata FROM chatroom_users")],
            [(1, 6, {"login": "Alice Liddell", "id": 6})])
        sessions = await fetch_rows_async(database, "SELECT user_id FROM chatroom_sessions")
        self.assertEqual(sorted(s["user_id"] for s in sessions), [6, 7, 8])
        pages.send(cmd="exit")
        await pages.ended
        await self.stop(second)


class AdmissionsFileMixin(RepositoryServerMixin):
    """The admissions file between two in-process runs sharing one ``journal_dir``."""

    async def start_on(self, databases: Dict[str, Any]) -> Any:
        if not hasattr(self, "folder"):
            self.folder = os.path.abspath(self.mktemp())
        grace = self.grace
        clients = [{"name": name, "auth": {"key": f"key-{name}", "secret": f"secret-{name}"},
                    "database": database_dict(db)} for name, db in databases.items()]
        return await start_server(self, clients=clients, folder=self.folder,
                                  client_components=[lambda ctx: RepositoryChat(ctx, grace=grace)])

    @property
    def path(self) -> str:
        return os.path.join(self.folder, "ilchat-onscreen-admissions.json")

    async def restart(self) -> None:
        await self.server.stop()
        self.server = await self.start_on(self.databases)

    async def test_file_is_written_at_stop_and_taken_by_the_next_start(self) -> None:
        """Who PHP admitted where, with PHP's rows; the next start takes it and lets them in."""
        await self.start()
        await self.enter(6, "alice")
        await self.php("Connect", 1, 7)  # connected, admitted nowhere
        await self.server.stop()
        with open(self.path) as f:
            state = json.load(f)
        self.assertEqual(state["version"], 1)
        self.assertLess(abs(state["stopped"] - time.time()), 60)
        self.assertEqual(state["admissions"], [[6, [[1, '{"login":"alice","id":6}']]], [7, []]])
        self.server = await self.start_on(self.databases)
        self.assertFalse(os.path.exists(self.path))
        self.assertIn("2 users of onscreen may come back into their rooms within 120 s of the"
                      " restart (0 admissions dropped: banned meanwhile)", self.server.log_text())
        alice = await self.browser()
        await alice.emit("login", "alice", 6, False)
        await alice.wait_for("loggedIn")
        await alice.emit("enterRoom", 1)
        welcome = await alice.wait_for("notice", "welcome_to_chat")
        self.assertEqual(welcome["data"]["username"], "alice")
        for _ in range(400):
            if await self.rows("SELECT user_id FROM chatroom_users"):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([r["user_id"] for r in await self.rows("SELECT user_id FROM chatroom_users")],
                         [6])
        # PHP connects a user again when it renders a page: nothing changes for a restored one.
        self.assertEqual((await self.php("Connect", 1, 6)).json(), {"status": 200})

    async def test_stale_or_broken_file_is_not_used(self) -> None:
        """A file from a stop over an hour ago, or one that is not ours, admits nobody."""
        await self.start()
        await self.enter(6, "alice")
        await self.server.stop()
        with open(self.path) as f:
            state = json.load(f)
        state["stopped"] -= 7200
        for text, logged in ((json.dumps(state), "not restored: the last run stopped 72"),
                             ("{not json", "Room admissions of the last run not restored: "),
                             (json.dumps({"version": 99}), "is not an admissions file")):
            with open(self.path, "w") as f:
                f.write(text)
            self.server = await self.start_on(self.databases)
            self.assertFalse(os.path.exists(self.path))
            self.assertIn(logged, self.server.log_text())
            alice = await self.browser()
            await alice.emit("login", "alice", 6, False)
            await alice.wait_for("shutdown")
            await self.server.stop()


class AdmissionsFileMariaDBTests(AdmissionsFileMixin, unittest.TestCase):
    database_kind = "mysql"


class AdmissionsFileSQLiteTests(AdmissionsFileMixin, unittest.TestCase):
    database_kind = "sqlite"
