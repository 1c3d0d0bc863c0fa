# -*- test-case-name: tests.web.test_backend -*-
"""
The ``/backend`` HTTP API that ILIAS PHP calls: ``GET /backend/<Action>/<name>/<args...>``.

This module owns authentication, the error answers and the JSON encoding; the actions themselves
come from the components (repository chat, On-Screen Chat), which register them in the
``RouteTable`` of their client at start-up::

    ctx.routes.register("Connect", handler, segments=(2,))      # /backend/Connect/<name>/<room>/<id>

    def handler(ctx, request, args: list[str]) -> dict | Deferred[dict]: ...

Unlike the Node server (docs/design.rst), every route except ``Heartbeat`` needs the client's
credentials, a refusal is a real HTTP 403, and unknown clients and actions are 404 JSON answers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Protocol, Tuple, Union

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ilchat.logs import debug_wanted
from ilchat.web.errors import Forbidden, HttpError, MethodNotAllowed, NotFound
from ilchat.web.responses import respond_with_json

Handler = Callable[[Any, Request, list], Union[Dict[str, Any], "defer.Deferred[Dict[str, Any]]"]]


@attrs.frozen
class Route:
    """One backend action: its handler and how many path segments may follow ``/<name>``."""

    action: str
    handler: Handler
    segments: Tuple[int, ...]
    auth: bool = True


class RouteTable:
    """The actions of one client. Components register theirs; the resource looks them up."""

    def __init__(self) -> None:
        self._routes: Dict[str, Route] = {}

    def register(
        self,
        action: str,
        handler: Handler,
        segments: Union[int, Iterable[int]] = (0,),
        auth: bool = True,
    ) -> None:
        """
        Serve ``/backend/<action>/<name>/<args...>`` with ``handler(ctx, request, args)``.

        Args:
            action: the exact action name ILIAS uses, e.g. ``"Connect"``.
            handler: returns a JSON-serialisable dict (or a Deferred/coroutine of one) for a 200
                answer, or raises ``ilchat.web.errors.NotFound``/``BadRequest``.
            segments: the accepted numbers of segments after the client name (``(2, 3)`` for
                ILIAS 9+ and ILIAS 8 URLs of the same action); any other count is a 404.
            auth: only ``Heartbeat`` goes without credentials; keep the default.

        Raises:
            ValueError: the action is already registered (two components would fight over it).
        """
        if action in self._routes:
            raise ValueError(f"backend action {action!r} is already registered")
        counts = (segments,) if isinstance(segments, int) else tuple(segments)
        self._routes[action] = Route(action, handler, counts, auth)

    def unregister(self, action: str) -> None:
        self._routes.pop(action, None)

    def get(self, action: str) -> Optional[Route]:
        return self._routes.get(action)

    def __contains__(self, action: str) -> bool:
        return action in self._routes


class BackendClient(Protocol):
    """What the backend needs of a client context: its config (for the credentials) and routes."""

    config: Any
    routes: RouteTable


def heartbeat(ctx: Any, request: Request, args: list) -> Dict[str, Any]:
    """ILIAS asks this (with a 2 s timeout, no credentials) to decide whether to offer chat."""
    return {"status": 200}


def check_basic_auth(request: Request, key: str, secret: str) -> bool:
    """
    True when the request carries HTTP Basic credentials equal to ``key`` and ``secret``.

    Both parts are compared in constant time, and both comparisons always run, so the answer
    time says nothing about which part was wrong.
    """
    header = request.getHeader(b"authorization")
    if not header:
        return False
    parts = header.split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"basic":
        return False
    try:
        decoded = base64.b64decode(parts[1].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_key, sep, given_secret = decoded.partition(b":")
    if not sep:
        return False
    key_ok = hmac.compare_digest(given_key, key.encode("utf-8"))
    secret_ok = hmac.compare_digest(given_secret, secret.encode("utf-8"))
    return key_ok and secret_ok


class BackendResource(Resource):
    """``/backend``: the whole subtree is dispatched here from ``request.postpath``."""

    isLeaf = True
    _log = Logger()

    def __init__(self, clients: Mapping[str, BackendClient]) -> None:
        """
        Args:
            clients: client name → context, usually the service's live dict, so that clients
                added later are served too.
        """
        super().__init__()
        self._clients = clients

    def render(self, request: Request) -> Any:
        segments = [s.decode("utf-8", "replace") for s in request.postpath]
        # Express routes ignore one trailing slash; so do we.
        if segments and segments[-1] == "":
            segments.pop()
        deferred = defer.maybeDeferred(self._dispatch, request, segments)
        deferred = deferred.addCallback(lambda result: respond_with_json(request, 200, result))
        deferred.addErrback(self._on_error, request, segments)
        if not deferred.called:
            request.notifyFinish().addErrback(lambda _: deferred.cancel())
        return NOT_DONE_YET

    def _dispatch(self, request: Request, segments: list) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            raise MethodNotAllowed()
        if len(segments) < 2:
            raise NotFound("Unknown backend route")
        action, name, args = segments[0], segments[1], segments[2:]
        ctx = self._clients.get(name)
        if ctx is None:
            raise NotFound(f"Unknown client: {name}")
        if action == "Heartbeat" and not args:
            return heartbeat(ctx, request, args)
        config = ctx.config
        if not check_basic_auth(request, config.auth_key, config.auth_secret):
            self._log.warn(
                "Access denied for {action} on {name} from {peer}",
                action=action,
                name=name,
                peer=_peer(request),
            )
            raise Forbidden()
        route = ctx.routes.get(action)
        if route is None or len(args) not in route.segments:
            raise NotFound(f"Unknown action: {action}")
        if debug_wanted():
            self._log.debug("Backend {action} for {name}: {args}", action=action, name=name, args=args)
        # A coroutine result is run by the maybeDeferred in render.
        return route.handler(ctx, request, args)

    def _on_error(self, failure: Failure, request: Request, segments: list) -> None:
        if failure.check(defer.CancelledError):
            return
        if failure.check(HttpError):
            error = failure.value
            if error.code == 405:
                request.setHeader(b"Allow", b"GET, HEAD")
            respond_with_json(request, error.code, error.body())
            return
        self._log.failure(
            "Backend request {path} failed", failure, path="/".join(["", "backend", *segments])
        )
        respond_with_json(request, 500, {"status": 500, "message": "Internal server error"})


def _peer(request: Request) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", str(peer))
