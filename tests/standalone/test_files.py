"""
File sharing in the standalone chat (L{ilchat.standalone.files}) over real HTTP and Socket.IO
connections: uploads by a logged-in member, the message that announces them, the headers they
are served with, every refusal, an interrupted upload, and their removal with the history.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from typing import Any, List
from urllib.parse import quote

from twisted.internet import threads
from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from tests.ilias.repository_support import Browser, sleep, wait_until
from tests.support.http import http_request
from tests.support.server import RunningServer, start_server


def png(width: int = 8, height: int = 6) -> bytes:
    """A real PNG image: a small colour gradient."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(
        b"\x00" + b"".join(bytes((40 + 180 * x // width, 90 + 120 * y // height, 200))
                           for x in range(width))
        for y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


class SharedFileTests(unittest.TestCase):
    """Uploads and downloads against a whole server."""

    async def setUp(self) -> None:
        self.files = os.path.abspath(self.mktemp())
        self.server: RunningServer = await start_server(
            self,
            clients=[{"name": "chat", "standalone": {
                "rooms": [{"id": 1, "title": "Lobby"}, {"id": 2, "title": "Other"}],
                "files_folder": self.files, "files_max_bytes": 5000,
                "files_types": ["image/png", "text/plain", "text/html"]}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=0.5)],
        )
        self.browsers: List[Browser] = []
        self.addCleanup(self._close)

    async def _close(self) -> None:
        for browser in self.browsers:
            await browser.close()

    async def login(self, name: str) -> Browser:
        browser = Browser(self.server, "/chat")
        self.browsers.append(browser)
        await browser.connect()
        await browser.emit("login", name)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 1)
        await browser.wait_for("notice", "welcome_to_chat")
        return browser

    async def upload(self, browser: Any, data: bytes, name: str = "picture.png",
                     kind: str = "image/png", room: int = 1, token: Any = None) -> Any:
        if token is None:
            token = browser.payloads("loggedIn")[0]["token"]
        return await http_request(
            self.server.url(f"/files/?room={room}"), method="POST", body=data,
            headers={"Content-Type": kind, "X-Filename": quote(name), "X-Ilchat-Token": token},
        )

    def stored(self) -> List[str]:
        return sorted(os.listdir(self.files))

    async def test_an_image_is_stored_announced_and_served_inline(self) -> None:
        """
        The upload answers its id; the room gets a message of the uploader with the file in
        ``format`` and an absolute link in the text (for IRC); the image comes back inline.
        """
        alice = await self.login("alice")
        bob = await self.login("bob")
        image = png()
        response = await self.upload(alice, image, name="Büro plan.png")
        self.assertEqual(response.code, 200, response.body)
        answer = response.json()
        message = await bob.wait_for("message")
        self.assertEqual(message["from"]["username"], "alice")
        self.assertEqual(message["format"]["file"], {"id": answer["id"], "name": "Büro plan.png",
                                                     "type": "image/png", "size": len(image)})
        self.assertTrue(message["content"].startswith(f"Büro plan.png ({len(image)} B) http://"),
                        message["content"])
        self.assertTrue(message["content"].endswith("/files/" + answer["path"][6:]))
        self.assertEqual(len(answer["id"]), 24)
        self.assertEqual(self.stored(), sorted([answer["id"], answer["id"] + ".json"]))

        served = await http_request(self.server.url("/" + answer["path"]))
        self.assertEqual(served.code, 200)
        self.assertEqual(served.body, image)
        self.assertEqual(served.header("content-type"), "image/png")
        self.assertEqual(served.header("content-disposition"),
                         "inline; filename=\"B_ro plan.png\"; filename*=UTF-8''B%C3%BCro%20plan.png")
        self.assertEqual(served.header("x-content-type-options"), "nosniff")
        self.assertIn("sandbox", served.header("content-security-policy"))
        self.assertIn("default-src 'none'", served.header("content-security-policy"))

    async def test_other_files_are_attachments_never_pages(self) -> None:
        """An allowed text/html file is served as an octet-stream attachment, never as HTML."""
        alice = await self.login("alice")
        page = b"<script>alert(1)</script>"
        response = await self.upload(alice, page, name="../../evil.html", kind="text/html")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.json()["path"].endswith("/evil.html"))
        served = await http_request(self.server.url("/" + response.json()["path"]))
        self.assertEqual(served.body, page)
        self.assertEqual(served.header("content-type"), "application/octet-stream")
        self.assertTrue(served.header("content-disposition").startswith("attachment;"))
        self.assertEqual(served.header("x-content-type-options"), "nosniff")

    async def test_refusals_are_clear_and_store_nothing(self) -> None:
        """Too large, a refused type, a fake image, no login, another room: a JSON refusal."""
        alice = await self.login("alice")
        cases = [
            (dict(data=b"x" * 5001, kind="text/plain"), 413, "file_too_large", "at most 5 kB"),
            (dict(data=b"%PDF-1.4", name="a.pdf", kind="application/pdf"), 415, "type_refused",
             "application/pdf"),
            (dict(data=b"<svg/>", kind="image/png"), 415, "not_an_image", "not a valid"),
            (dict(data=png(), token="forged"), 401, "not_logged_in", "join"),
            (dict(data=png(), room=2), 404, "unknown_room", "not in that room"),
            (dict(data=b"", kind="text/plain"), 400, "empty_file", "empty"),
        ]
        for kwargs, code, error, words in cases:
            response = await self.upload(alice, **kwargs)
            self.assertEqual((response.code, response.json()["error"]), (code, error), kwargs)
            self.assertIn(words, response.json()["message"])
        too_big_for_http = await self.upload(alice, b"x" * 2_100_000, kind="text/plain")
        self.assertEqual(too_big_for_http.code, 413)
        self.assertEqual(self.stored(), [])
        await sleep(0.2)
        self.assertEqual(alice.received("message"), [])

    async def test_unknown_files_are_404(self) -> None:
        for path in ("/files/AAAAAAAAAAAAAAAAAAAAAAAA/x.png", "/files/..%2f..%2fetc/passwd",
                     "/files/short/x"):
            self.assertEqual((await http_request(self.server.url(path))).code, 404, path)

    async def test_an_interrupted_upload_leaves_nothing(self) -> None:
        """A body cut off halfway never reaches the chat: no file, no message."""
        alice = await self.login("alice")
        token = alice.payloads("loggedIn")[0]["token"]
        port = self.server.port

        def cut_off() -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(
                    b"POST /files/?room=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                    b"X-Ilchat-Token: " + token.encode("ascii") + b"\r\nContent-Length: 4000\r\n\r\n"
                    + png()[:100])
                time.sleep(0.2)

        await threads.deferToThread(cut_off)
        await self.upload(alice, b"afterwards", name="after.txt", kind="text/plain")
        await alice.wait_for("message")
        self.assertEqual([p["format"]["file"]["name"] for p in alice.payloads("message")],
                         ["after.txt"])
        self.assertEqual(len(self.stored()), 2)

    async def test_files_go_with_the_history(self) -> None:
        """ClearMessages removes the room's files; the daily purge removes older ones."""
        alice = await self.login("alice")
        first = (await self.upload(alice, png())).json()
        response = await http_request(self.server.url("/backend/ClearMessages/chat/1/0"),
                                      headers=self.server.auth_header())
        self.assertEqual(response.json(), {"success": True})
        await wait_until(lambda: self.stored() == [])
        self.assertEqual((await http_request(self.server.url("/" + first["path"]))).code, 404)

        second = (await self.upload(alice, png())).json()
        store = self.server.client("chat").components[0].store
        await store.purge_old_messages(int(time.time() * 1000) - 3_600_000)
        self.assertEqual(len(self.stored()), 2)
        await store.purge_old_messages(int(time.time() * 1000) + 1000)
        self.assertEqual(self.stored(), [])
        self.assertEqual((await http_request(self.server.url("/" + second["path"]))).code, 404)


class NoFileSharingTests(unittest.TestCase):
    async def test_without_a_folder_there_is_no_upload(self) -> None:
        """Without ``files_folder`` the page offers nothing and ``files/`` does not exist."""
        server = await start_server(
            self, clients=[{"name": "chat", "standalone": {}}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy)],
        )
        response = await http_request(server.url("/files/?room=1"), method="POST", body=b"x")
        self.assertEqual(response.code, 404)

