"""
Hypothesis against the real /backend routes of a whole server (repository chat and On-Screen
Chat on SQLite) over loopback: whatever the method, path, query and credentials, the answer is
JSON with 200, 400, 403, 404 or 405, never a 500, never a traceback.
"""

from __future__ import annotations

import base64
import http.client
import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from tests.support.server import start_server

ACTIONS = ["Heartbeat", "Connect", "EnterPrivateRoom", "CreatePrivateRoom", "LeavePrivateRoom",
           "InvitePrivateRoom", "ClearMessages", "Kick", "Ban", "UserConfigChange", "GetRooms",
           "Post", "DeletePrivateRoom"]
ALLOWED = {200, 400, 403, 404, 405}

_segment = st.one_of(
    st.integers(-3, 2**70).map(str),
    st.sampled_from(["0", "1", "2", "-1", "1.5", "1e999", "", "..", ".", "%", "%zz", "%00", "onscreen"]),
    st.text(max_size=12),
)


def _encode(segment: str) -> str:
    # Keep a few raw oddities ("%zz", "..") as they are; quote everything else.
    if segment in ("%", "%zz", "%00", "..", "."):
        return segment
    return quote(segment, safe="")


_path = st.tuples(
    st.sampled_from(["/backend", "/backend/", "/chat/backend", "/backend//"]),
    st.one_of(st.sampled_from(ACTIONS), st.text(max_size=10)),
    st.one_of(st.just("onscreen"), st.text(max_size=8)),
    st.lists(_segment, max_size=5),
).map(lambda p: "/".join([p[0].rstrip("/"), _encode(p[1]), _encode(p[2]), *map(_encode, p[3])]))

_query = st.one_of(
    st.just(""),
    st.dictionaries(st.sampled_from(["message", "id", "q", "x"]), st.text(max_size=40), max_size=3)
    .map(lambda q: "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in q.items())),
    st.sampled_from(["?message=" + quote(json.dumps({"osc": {"6": True}})),
                     "?message=" + quote('{"a":' * 50), "?message=%ff%fe", "?&&=&"]),
)


class BackendRouteProperties(TestCase):
    timeout = 300

    async def test_any_request_gets_a_json_answer_without_a_server_error(self) -> None:
        server = await start_server(self, server={"sub_directory": "/chat"})
        key, secret = server.auth()
        good = "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()
        port = server.port

        @settings(max_examples=400, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
        @given(
            st.sampled_from(["GET", "GET", "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS"]),
            _path,
            _query,
            st.sampled_from([good, None, "Basic !!!", "Basic " + base64.b64encode(b"x:y").decode(),
                             "Bearer abc", good + "x"]),
        )
        def request(method: str, path: str, query: str, authorization) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            headers = {"Connection": "close"}
            if authorization is not None:
                headers["Authorization"] = authorization
            try:
                connection.request(method, path + query, headers=headers)
                response = connection.getresponse()
                body = response.read()
            finally:
                connection.close()
            where = f"{method} {path}{query}"
            assert response.status in ALLOWED, (where, response.status, body[:200])
            assert b"Traceback" not in body, where
            if method != "HEAD":
                assert response.getheader("Content-Type", "").startswith("application/json"), (
                    where, response.getheader("Content-Type"))
                json.loads(body)

        await threads.deferToThread(request)
        self.assertNotIn("Traceback", server.error_log_text())
