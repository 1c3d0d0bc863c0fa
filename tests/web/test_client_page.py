"""
Tests for L{ilchat.web.client}: the built-in page as HTTP serves it, from a whole server on
loopback (the browser tests in C{tests.browser} cover what the page does).
"""

from __future__ import annotations

import json
import re

from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from ilchat.web.client import CONTENT_SECURITY_POLICY, script_safe_json
from tests.support.http import http_request
from tests.support.server import start_server

HOSTILE_TITLE = "</script><script>alert(1)</script> & <b>co</b>"


def _config_block(html: str) -> dict:
    match = re.search(
        r'<script id="ilchat-config" type="application/json">(.*?)</script>', html, re.S
    )
    assert match is not None, "no config block"
    return json.loads(match.group(1))


class ScriptSafeJsonTests(unittest.SynchronousTestCase):
    """The JSON embedded in the page cannot end its <script> element."""

    def test_markup_characters_are_escaped_but_json_is_the_same(self):
        """<, > and & become \\u escapes; parsing gives back the very same text."""
        text = script_safe_json({"title": HOSTILE_TITLE})
        self.assertNotIn("<", text)
        self.assertNotIn(">", text)
        self.assertNotIn("&", text)
        self.assertEqual(json.loads(text), {"title": HOSTILE_TITLE})


class ChatPageTests(unittest.TestCase):
    """The page, its assets and their headers."""

    async def start(self, sub_directory: str = "", standalone: bool = True, **settings):
        client = {"name": "team"}
        if standalone:
            client["standalone"] = {"title": "Team", "welcome": "Hi", **settings}
        self.server = await start_server(
            self,
            server={"sub_directory": sub_directory},
            clients=[client],
            client_components=None if not standalone else [
                lambda ctx: StandaloneChat(ctx, policy=ctx.policy)
            ],
        )
        return self.server

    async def test_page_is_served_at_the_root_with_security_headers(self):
        """GET / is the chat page, with a strict CSP, nosniff and no framing."""
        server = await self.start()
        response = await http_request(server.url("/"))
        self.assertEqual(response.code, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(response.header("content-security-policy"), CONTENT_SECURITY_POLICY)
        self.assertIn("script-src 'self'", CONTENT_SECURITY_POLICY)
        self.assertNotIn("unsafe-inline", CONTENT_SECURITY_POLICY)
        self.assertEqual(response.header("x-content-type-options"), "nosniff")
        self.assertEqual(response.header("x-frame-options"), "DENY")
        html = response.body.decode("utf-8")
        config = _config_block(html)
        self.assertEqual(config["namespace"], "/team")
        self.assertEqual(config["path"], "/socket.io/")
        self.assertEqual(config["rooms"], [{"id": 1, "title": "Lobby"}])

    async def test_page_loads_nothing_from_elsewhere(self):
        """No http(s):// or protocol-relative URL in the page, script or style (closed networks)."""
        server = await self.start()
        for path in ("/", "/static/chat.js", "/static/chat.css"):
            body = (await http_request(server.url(path))).body.decode("utf-8")
            self.assertIsNone(re.search(r"""(src|href)=["']?(https?:)?//""", body), path)
            self.assertIsNone(re.search(r"url\((['\"]?)(https?:)?//", body), path)

    async def test_hostile_title_is_escaped_in_markup_and_json(self):
        """A config title with markup shows as text: escaped in <title>, JSON-escaped in the block."""
        server = await self.start(title=HOSTILE_TITLE)
        html = (await http_request(server.url("/"))).body.decode("utf-8")
        self.assertNotIn("<script>alert(1)", html)
        self.assertIn("&lt;/script&gt;&lt;script&gt;alert(1)", html)
        self.assertEqual(_config_block(html)["title"], HOSTILE_TITLE)

    async def test_branding_and_strings_are_in_the_page(self):
        """
        ``window_title`` is the escaped <title>; ``info`` and the strings of every language are
        in the config block; each language has exactly the keys of English.
        """
        server = await self.start(window_title=HOSTILE_TITLE, info="Line 1\nhttps://x.example/")
        html = (await http_request(server.url("/"))).body.decode("utf-8")
        self.assertIn("<title>&lt;/script&gt;&lt;script&gt;alert(1)", html)
        config = _config_block(html)
        self.assertEqual((config["windowTitle"], config["info"]),
                         (HOSTILE_TITLE, "Line 1\nhttps://x.example/"))
        self.assertEqual(sorted(config["strings"]), ["de", "en", "nl"])
        for language, strings in config["strings"].items():
            self.assertEqual(sorted(strings), sorted(config["strings"]["en"]), language)
            self.assertTrue(all(isinstance(text, str) and text for text in strings.values()))

    async def test_window_title_defaults_to_the_title(self):
        server = await self.start()
        html = (await http_request(server.url("/"))).body.decode("utf-8")
        self.assertIn("<title>Team</title>", html)
        self.assertEqual(_config_block(html)["windowTitle"], "Team")

    async def test_assets_have_their_types_and_an_etag(self):
        """The script and the style sheet come with their content types; a reload gets a 304."""
        server = await self.start()
        script = await http_request(server.url("/static/chat.js"))
        self.assertEqual(script.code, 200)
        self.assertEqual(script.header("content-type"), "application/javascript; charset=utf-8")
        style = await http_request(server.url("/static/chat.css"))
        self.assertEqual(style.header("content-type"), "text/css; charset=utf-8")
        again = await http_request(
            server.url("/static/chat.js"), headers={"If-None-Match": script.header("etag")}
        )
        self.assertEqual(again.code, 304)

    async def test_only_the_page_files_are_reachable(self):
        """Other names under static/ (index.html itself, ../, listings) are 404s."""
        server = await self.start()
        for path in ("/static/", "/static/index.html", "/static/../client.py", "/static/x.js"):
            self.assertEqual((await http_request(server.url(path))).code, 404, path)

    async def test_page_follows_the_sub_directory(self):
        """With sub_directory /chat the page is at /chat/ and talks to /chat/socket.io/."""
        server = await self.start(sub_directory="/chat")
        response = await http_request(server.url("/chat/"))
        self.assertEqual(response.code, 200)
        self.assertEqual(_config_block(response.body.decode("utf-8"))["path"], "/chat/socket.io/")
        self.assertEqual((await http_request(server.url("/chat/static/chat.js"))).code, 200)

    async def test_no_page_without_a_standalone_client(self):
        """An ILIAS-only server serves no chat page."""
        server = await self.start(standalone=False)
        self.assertEqual((await http_request(server.url("/"))).code, 404)

    async def test_sub_directory_without_slash_redirects_to_the_page(self):
        """/chat (no slash) redirects to /chat/, where the page's relative links work."""
        server = await self.start(sub_directory="/chat")
        response = await http_request(server.url("/chat"))
        self.assertEqual(response.code, 302)
        self.assertEqual(response.header("location"), "/chat/")
