"""The whole service in-process: start-up order, listening, stores, components, shutdown."""

from __future__ import annotations

import os
import socket
from typing import Any, List

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from ilchat.service import IlchatService, StartupError, resolve_address
from tests.support.db import (
    fetch_rows_async,
    insert_rows_async,
    make_mariadb_database_async,
    make_sqlite_database,
)
from tests.support.http import http_request
from tests.support.server import start_server, write_configs


class _Recorder:
    """A component that records the order of start() and stop() calls."""

    def __init__(self, events: List[str], label: str, ctx: Any) -> None:
        self.events = events
        self.label = label
        self.ctx = ctx

    async def start(self) -> None:
        self.events.append(f"start {self.label}")

    async def stop(self) -> None:
        self.events.append(f"stop {self.label}")


def _users(room_id: int, user_id: int, connected: int) -> dict:
    return {
        "room_id": room_id,
        "user_id": user_id,
        "userdata": '{"login":"u%d","id":%d}' % (user_id, user_id),
        "connected": connected,
    }


class ServiceTests(TestCase):
    async def test_serves_heartbeat_for_every_client(self) -> None:
        """Two client configs on one port: both names answer the Heartbeat."""
        server = await start_server(self, clients=[{"name": "a"}, {"name": "b"}], client_components=[])
        for name in ("a", "b"):
            response = await http_request(server.url(f"/backend/Heartbeat/{name}"))
            self.assertEqual(response.json(), {"status": 200})
        self.assertEqual(sorted(server.clients), ["a", "b"])

    async def test_startup_lines_are_logged(self) -> None:
        """The log file has the Node server's start-up lines, with the real port."""
        server = await start_server(self, client_components=[])
        text = server.log_text()
        self.assertIn("Starting Server!", text)
        self.assertIn("Log Level: debug", text)
        self.assertIn(f"The Server is Ready to use! Listening on: http://127.0.0.1:{server.port}", text)

    async def test_components_start_in_order_and_stop_in_reverse(self) -> None:
        """Client components per client in order, then server components; stop is the mirror."""
        events: List[str] = []
        server = await start_server(
            self,
            clients=[{"name": "a"}, {"name": "b"}],
            client_components=[
                lambda ctx: _Recorder(events, f"chat {ctx.name}", ctx),
                lambda ctx: _Recorder(events, f"osc {ctx.name}", ctx),
            ],
            server_components=[lambda ctx: _Recorder(events, "irc", ctx)],
        )
        await server.stop()
        self.assertEqual(
            events,
            [
                "start chat a", "start osc a", "start chat b", "start osc b", "start irc",
                "stop irc", "stop osc b", "stop chat b", "stop osc a", "stop chat a",
            ],
        )

    async def test_components_and_purge_are_child_services_of_the_server(self) -> None:
        """
        Each component is an IService child (running, in start order), the daily purge the last
        one; a stop leaves only the log files' service, which stops last.
        """
        from twisted.application.service import IService

        from ilchat.service import ComponentService
        from ilchat.store import DailyPurge

        events: List[str] = []
        server = await start_server(
            self,
            server={"deletion_mode": "1", "deletion_unit": "days", "deletion_value": 3,
                    "deletion_time": "03:00"},
            client_components=[lambda ctx: _Recorder(events, f"chat {ctx.name}", ctx)],
            server_components=[lambda ctx: _Recorder(events, "irc", ctx)],
        )
        service = server.service
        children = list(service)
        self.assertIs(children[0], service.log_service)
        self.assertEqual([type(c) for c in children[1:]], [ComponentService, ComponentService, DailyPurge])
        self.assertTrue(all(IService.providedBy(c) and c.running for c in children))
        self.assertEqual([c.component.label for c in children[1:3]], ["chat onscreen", "irc"])
        self.assertEqual(service.components, [c.component for c in children[1:3]])
        purge = children[3]
        self.assertIsNotNone(purge.next_run)
        await server.stop()
        self.assertEqual(events, ["start chat onscreen", "start irc", "stop irc", "stop chat onscreen"])
        self.assertFalse(purge.running)
        self.assertIsNone(purge.next_run)
        self.assertEqual(list(service), [service.log_service])
        self.assertFalse(service.log_service.running)

    async def test_client_context_carries_the_shared_parts(self) -> None:
        """Components get config, opened store, the shared bus and Socket.IO server, own routes."""
        seen = []
        server = await start_server(
            self,
            clients=[{"name": "a"}, {"name": "b"}],
            client_components=[lambda ctx: seen.append(ctx) or _Recorder([], "x", ctx)],
        )
        a, b = seen
        self.assertEqual((a.name, b.name), ("a", "b"))
        self.assertIs(a.bus, b.bus)
        self.assertIs(a.socketio, b.socketio)
        self.assertIsNot(a.routes, b.routes)
        self.assertIs(server.client("a"), a)
        self.assertEqual(await a.store.get_room_ids(), [])

    async def test_registered_route_is_served_with_credentials(self) -> None:
        """A component's backend action is reachable with the client's credentials only."""

        class Connect:
            def __init__(self, ctx: Any) -> None:
                self.ctx = ctx

            async def start(self) -> None:
                self.ctx.routes.register("Connect", lambda c, r, args: {"status": 200, "args": args}, 2)

            async def stop(self) -> None:
                pass

        server = await start_server(self, client_components=[Connect])
        url = server.url("/backend/Connect/onscreen/1/6")
        self.assertEqual((await http_request(url)).code, 403)
        response = await http_request(url, headers=server.auth_header())
        self.assertEqual(response.json(), {"status": 200, "args": ["1", "6"]})

    async def test_socketio_is_mounted_under_sub_directory(self) -> None:
        """The Engine.IO handshake answers at <sub_directory>/socket.io/."""
        server = await start_server(self, server={"sub_directory": "/chat"}, client_components=[])
        response = await http_request(server.url("/chat/socket.io/?EIO=4&transport=polling"))
        self.assertEqual(response.code, 200)
        self.assertTrue(response.body.startswith(b"0{"), response.body)

    async def test_users_move_to_sessions_at_start_and_stop_on_mariadb(self) -> None:
        """chatroom_users rows left over by a crash become sessions at start; again at stop."""
        await self.check_users_move_to_sessions(await make_mariadb_database_async(self))

    async def test_users_move_to_sessions_at_start_and_stop_on_sqlite(self) -> None:
        """The same on the embedded SQLite database."""
        await self.check_users_move_to_sessions(make_sqlite_database(self))

    async def check_users_move_to_sessions(self, database: Any) -> None:
        await insert_rows_async(database, "chatroom_users", [_users(1, 6, 1000), _users(1, 7, 1001)])
        server = await start_server(self, database=database, client_components=[])
        self.assertEqual(await fetch_rows_async(database, "SELECT * FROM chatroom_users"), [])
        sessions = await fetch_rows_async(
            database, "SELECT user_id, connected, disconnected FROM chatroom_sessions ORDER BY user_id"
        )
        self.assertEqual([(r["user_id"], r["connected"]) for r in sessions], [(6, 1000), (7, 1001)])
        self.assertTrue(all(r["disconnected"] > 1001 for r in sessions))

        # PHP connects another user while we run; the stop moves it too.
        await insert_rows_async(database, "chatroom_users", [_users(2, 8, 2000)])
        await server.stop()
        self.assertEqual(await fetch_rows_async(database, "SELECT * FROM chatroom_users"), [])
        sessions = await fetch_rows_async(database, "SELECT user_id FROM chatroom_sessions")
        self.assertEqual(sorted(r["user_id"] for r in sessions), [6, 7, 8])

    async def test_stop_closes_the_listening_port(self) -> None:
        """After stop, nothing listens on the port any more."""
        server = await start_server(self, client_components=[])
        port = server.port
        await server.stop()
        probe = socket.socket()
        self.addCleanup(probe.close)
        self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0)

    async def test_missing_mariadb_table_fails_start_up(self) -> None:
        """A database without the ILIAS tables is a start-up error naming the table."""
        database = await make_mariadb_database_async(self, skip_tables=["chatroom_sessions"])
        with self.assertRaises(Exception) as caught:
            await start_server(self, database=database, client_components=[])
        self.assertIn("chatroom_sessions", str(caught.exception))

    async def test_failing_component_stops_what_started(self) -> None:
        """A component that fails to start fails the start-up; the others are stopped again."""
        events: List[str] = []

        class Broken:
            def __init__(self, ctx: Any) -> None:
                pass

            async def start(self) -> None:
                raise RuntimeError("broken component")

            async def stop(self) -> None:
                events.append("stop broken")

        with self.assertRaises(RuntimeError):
            await start_server(
                self, client_components=[lambda ctx: _Recorder(events, "ok", ctx), Broken]
            )
        self.flushLoggedErrors(RuntimeError)
        # The cleanup has not run yet; stop explicitly through the harness' registered cleanup.
        self.assertEqual(events, ["start ok"])

    async def test_bind_failure_is_a_clear_startup_error(self) -> None:
        """A port already in use gives a StartupError naming address and port."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with self.assertRaises(StartupError) as caught:
            await start_server(self, client_components=[], listen_port=port)
        self.assertIn(f"127.0.0.1:{port}", str(caught.exception))


class ResolveAddressTests(TestCase):
    async def test_ip_literals_are_used_as_they_are(self) -> None:
        """IPv4 and IPv6 literals need no lookup."""
        from twisted.internet import reactor

        self.assertEqual(await resolve_address(reactor, "127.0.0.1", 80), ("127.0.0.1", "IPv4"))
        self.assertEqual(await resolve_address(reactor, "::1", 80), ("::1", "IPv6"))

    async def test_host_name_is_resolved(self) -> None:
        """localhost resolves (in a thread) to a loopback address."""
        from twisted.internet import reactor

        host, family = await resolve_address(reactor, "localhost", 80)
        self.assertIn(host, ("127.0.0.1", "::1"))

    async def test_unknown_host_is_a_clear_error(self) -> None:
        """A name that does not resolve is a StartupError that names it."""
        from twisted.internet import reactor

        with self.assertRaises(StartupError) as caught:
            await resolve_address(reactor, "no-such-host.invalid", 80)
        self.assertIn("no-such-host.invalid", str(caught.exception))


class NetworkPolicyWiringTests(TestCase):
    async def test_allow_list_refuses_other_addresses_on_every_path(self) -> None:
        """With a network allow-list that excludes loopback, even the Heartbeat is refused."""
        server = await start_server(self, server={"network": {"allow": ["10.0.0.0/8"]}}, client_components=[])
        response = await http_request(server.url("/backend/Heartbeat/onscreen"))
        self.assertEqual(response.code, 403)
        self.assertIsNotNone(server.context.policy)

    async def test_allow_list_lets_listed_addresses_in(self) -> None:
        """Loopback in the allow-list: served as usual."""
        server = await start_server(self, server={"network": {"allow": ["127.0.0.0/8"]}}, client_components=[])
        response = await http_request(server.url("/backend/Heartbeat/onscreen"))
        self.assertEqual(response.json(), {"status": 200})


class StopDuringStartTests(TestCase):
    async def test_stop_while_a_component_is_starting_cancels_the_start(self) -> None:
        """A SIGTERM while start-up waits (e.g. on a database) does not hang the shutdown."""
        from ilchat.config import load_configs

        events: List[str] = []
        hanging: defer.Deferred = defer.Deferred()

        class Hangs:
            def __init__(self, ctx: Any) -> None:
                pass

            async def start(self) -> None:
                events.append("start")
                await hanging

            async def stop(self) -> None:
                events.append("stop")

        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        server_path, client_paths = write_configs(folder)
        server_config, client_configs = load_configs(server_path, client_paths)
        service = IlchatService(server_config, client_configs, listen_port=0, client_components=[Hangs])
        service.startService()
        while not events:
            await deferLater(reactor, 0.01, lambda: None)
        await service.stopService()
        self.assertEqual(events, ["start"])
        self.assertIsNone(service.port)
        with self.assertRaises(defer.CancelledError):
            await service.when_ready()


class AddressTests(TestCase):
    async def test_listens_on_ipv6_loopback(self) -> None:
        """An IPv6 address binds as such, and the ready line shows it in brackets."""
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind(("::1", 0))
        except OSError:
            raise SkipTest("no IPv6 loopback here")
        finally:
            probe.close()
        server = await start_server(self, server={"address": "::1"}, client_components=[])
        response = await http_request(server.url("/backend/Heartbeat/onscreen"))
        self.assertEqual(response.json(), {"status": 200})
        self.assertIn(f"Listening on: http://[::1]:{server.port}", server.log_text())

    async def test_host_name_address_is_resolved_and_logged(self) -> None:
        """address "localhost" is resolved at start and the Node server's DNS line is logged."""
        server = await start_server(self, server={"address": "localhost"}, client_components=[])
        response = await http_request(server.url("/backend/Heartbeat/onscreen"))
        self.assertEqual(response.json(), {"status": 200})
        self.assertIn("DNS Resolve for: localhost => IP: ", server.log_text())

    async def test_unresolvable_address_fails_start_up(self) -> None:
        """A host name that does not resolve is a start-up error naming it."""
        with self.assertRaises(StartupError) as caught:
            await start_server(self, server={"address": "no-such-host.invalid"}, client_components=[])
        self.assertIn("no-such-host.invalid", str(caught.exception))
