"""The /backend resource over real HTTP on loopback: auth, errors, route table, headers."""

from __future__ import annotations

import base64
from typing import Any, Dict, Optional

import attrs
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from ilchat.web.backend import BackendResource, RouteTable, check_basic_auth
from ilchat.web.errors import BadRequest, NotFound
from ilchat.web.site import ChatSite, WebRoot
from tests.support.http import http_request


@attrs.frozen
class _Config:
    name: str
    auth_key: str
    auth_secret: str


@attrs.define
class _Client:
    config: _Config
    routes: RouteTable = attrs.Factory(RouteTable)


def basic(key: str, secret: str) -> Dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


class BackendTests(TestCase):
    """Drives the real Site with Twisted's HTTP client."""

    def setUp(self) -> None:
        self.client = _Client(_Config("onscreen", "the-key", "the:secret"))
        self.clients = {"onscreen": self.client}
        self.web_root = WebRoot("/chat")
        self.web_root.put("backend", BackendResource(self.clients))
        port = reactor.listenTCP(0, ChatSite(self.web_root.root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        self.calls = []

        def connect(ctx: Any, request: Any, args: list) -> dict:
            self.calls.append((ctx, args))
            return {"status": 200}

        self.client.routes.register("Connect", connect, segments=(2,))

    async def get(self, path: str, method: str = "GET", headers: Optional[dict] = None):
        return await http_request(self.base + path, method, headers)

    def assert_json(self, response, code: int, body: Any) -> None:
        self.assertEqual(response.code, code)
        self.assertEqual(response.header("Content-Type"), "application/json; charset=utf-8")
        self.assertEqual(response.header("Cache-Control"), "no-store")
        self.assertEqual(response.json(), body)

    async def test_heartbeat_answers_without_credentials(self) -> None:
        """ILIAS checks the Heartbeat with plain curl: no auth, {"status":200}."""
        self.assert_json(await self.get("/backend/Heartbeat/onscreen"), 200, {"status": 200})

    async def test_heartbeat_answers_head(self) -> None:
        """HEAD gets the headers and no body."""
        response = await self.get("/backend/Heartbeat/onscreen", "HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b"")
        self.assertEqual(response.header("Content-Type"), "application/json; charset=utf-8")

    async def test_heartbeat_with_trailing_slash(self) -> None:
        """Express ignores one trailing slash; so does ilchat."""
        self.assert_json(await self.get("/backend/Heartbeat/onscreen/"), 200, {"status": 200})

    async def test_backend_is_served_under_sub_directory_too(self) -> None:
        """A proxy that keeps the sub_directory prefix reaches the same backend."""
        self.assert_json(await self.get("/chat/backend/Heartbeat/onscreen"), 200, {"status": 200})

    async def test_unknown_client_is_404_json(self) -> None:
        """Node crashed with a 500 HTML page here; ilchat answers 404 JSON."""
        response = await self.get("/backend/Connect/nosuchns/1/6", headers=basic("the-key", "the:secret"))
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json()["status"], 404)

    async def test_missing_credentials_are_http_403(self) -> None:
        """No Authorization header: a real 403 with the Node server's body."""
        response = await self.get("/backend/Connect/onscreen/1/6")
        self.assert_json(response, 403, {"status": 403, "message": "Access denied"})
        self.assertEqual(self.calls, [])

    async def test_malformed_authorization_header_is_403(self) -> None:
        """Garbage, a wrong scheme or base64 without a colon are refused."""
        for value in ("Basic", "Basic !!!notbase64", "Bearer " + base64.b64encode(b"the-key:the:secret").decode(),
                      "Basic " + base64.b64encode(b"no-colon").decode()):
            response = await self.get("/backend/Connect/onscreen/1/6", headers={"Authorization": value})
            self.assert_json(response, 403, {"status": 403, "message": "Access denied"})
        self.assertEqual(self.calls, [])

    async def test_wrong_key_is_403(self) -> None:
        """A wrong key with the right secret is refused."""
        response = await self.get("/backend/Connect/onscreen/1/6", headers=basic("other", "the:secret"))
        self.assert_json(response, 403, {"status": 403, "message": "Access denied"})

    async def test_wrong_secret_is_403(self) -> None:
        """The right key with a wrong secret (or only the part before a colon) is refused."""
        for secret in ("wrong", "the"):
            response = await self.get("/backend/Connect/onscreen/1/6", headers=basic("the-key", secret))
            self.assert_json(response, 403, {"status": 403, "message": "Access denied"})
        self.assertEqual(self.calls, [])

    async def test_right_credentials_reach_the_handler_with_the_path_arguments(self) -> None:
        """The handler gets the client context and the segments after the client name."""
        response = await self.get("/backend/Connect/onscreen/1/6", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 200, {"status": 200})
        self.assertEqual(self.calls, [(self.client, ["1", "6"])])

    async def test_unknown_action_is_404_json(self) -> None:
        """An action nobody registered is a 404 JSON answer (after auth)."""
        response = await self.get("/backend/Nope/onscreen/1", headers=basic("the-key", "the:secret"))
        self.assertEqual(response.code, 404)
        self.assertEqual(response.json()["status"], 404)

    async def test_unknown_action_without_credentials_is_403(self) -> None:
        """Routes are not revealed to callers without credentials."""
        response = await self.get("/backend/Nope/onscreen/1")
        self.assertEqual(response.code, 403)

    async def test_wrong_number_of_segments_is_404(self) -> None:
        """Connect takes exactly room and user; more or fewer segments are unknown routes."""
        for path in ("/backend/Connect/onscreen/1", "/backend/Connect/onscreen/1/2/3"):
            response = await self.get(path, headers=basic("the-key", "the:secret"))
            self.assertEqual(response.code, 404)
        self.assertEqual(self.calls, [])

    async def test_other_methods_are_405_json(self) -> None:
        """POST/PUT/DELETE are not part of the API."""
        for method in ("POST", "PUT", "DELETE"):
            response = await self.get("/backend/Heartbeat/onscreen", method)
            self.assertEqual(response.code, 405)
            self.assertEqual(response.json(), {"status": 405, "message": "Method not allowed"})
            self.assertEqual(response.header("Allow"), "GET, HEAD")

    async def test_too_short_path_is_404(self) -> None:
        """/backend and /backend/Heartbeat alone are not routes."""
        for path in ("/backend", "/backend/", "/backend/Heartbeat"):
            self.assertEqual((await self.get(path)).code, 404)

    async def test_not_found_and_bad_request_from_handlers(self) -> None:
        """Handlers raise NotFound / BadRequest for 404 / 400 JSON answers."""

        def kick(ctx: Any, request: Any, args: list) -> dict:
            if not args[1].isdigit():
                raise BadRequest("user id must be a number")
            raise NotFound("no such room")

        self.client.routes.register("Kick", kick, segments=(2, 3))
        response = await self.get("/backend/Kick/onscreen/1/x", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 400, {"status": 400, "message": "user id must be a number"})
        response = await self.get("/backend/Kick/onscreen/1/2/3", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 404, {"status": 404, "message": "no such room"})

    async def test_async_handlers_are_awaited(self) -> None:
        """A coroutine handler or a Deferred result is awaited before answering."""

        async def rooms(ctx: Any, request: Any, args: list) -> dict:
            await defer.succeed(None)
            return {"rooms": {"1_0": {}}}

        self.client.routes.register("GetRooms", rooms, segments=0)
        self.client.routes.register("Later", lambda c, r, a: defer.succeed({"ok": "é"}), segments=0)
        response = await self.get("/backend/GetRooms/onscreen", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 200, {"rooms": {"1_0": {}}})
        response = await self.get("/backend/Later/onscreen", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 200, {"ok": "é"})
        self.assertIn("é".encode(), response.body)

    async def test_handler_exception_is_generic_500_and_logged(self) -> None:
        """An unexpected exception gives a generic 500 JSON body; the traceback goes to the log only."""

        def broken(ctx: Any, request: Any, args: list) -> dict:
            raise ZeroDivisionError("secret detail")

        self.client.routes.register("Broken", broken, segments=0)
        response = await self.get("/backend/Broken/onscreen", headers=basic("the-key", "the:secret"))
        self.assert_json(response, 500, {"status": 500, "message": "Internal server error"})
        self.assertNotIn(b"secret detail", response.body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_unknown_paths_outside_backend_are_404(self) -> None:
        """Anything else on the site is a plain 404, not a traceback."""
        self.assertEqual((await self.get("/nothing/here")).code, 404)

    def test_registering_an_action_twice_is_refused(self) -> None:
        """Two components cannot both own an action."""
        self.assertRaises(ValueError, self.client.routes.register, "Connect", lambda *a: {}, 2)


class CheckBasicAuthTests(TestCase):
    def test_non_ascii_credentials_are_compared_as_utf8(self) -> None:
        """Non-ASCII keys work (compare_digest on bytes, not str)."""
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"authorization", [basic("schlüssel", "gëheim")["Authorization"].encode()])
        self.assertTrue(check_basic_auth(request, "schlüssel", "gëheim"))
        self.assertFalse(check_basic_auth(request, "schlüssel", "geheim"))
