"""
Drive a real headless Chromium (Debian's ``chromium`` package) from trial tests with Playwright.

Playwright's sync API must be used from the one thread that started it, and the reactor must keep
serving the chat while the browser waits, so every browser call runs in a dedicated driver thread:
``await driver.call(fn, *args)`` runs ``fn(*args)`` there and fires on the reactor with its result
(or its exception). We never run ``playwright install``: the system Chromium is used.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable, Dict, List, Optional

from twisted.internet import defer, reactor
from twisted.trial import unittest

from ilchat.standalone import StandaloneChat
from tests.support.server import RunningServer, start_server

CHROMIUM = "/usr/bin/chromium"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; see setup.cfg [test])"
    if not os.access(CHROMIUM, os.X_OK):
        return "Debian's chromium is not installed (apt-get install chromium)"
    return None


class BrowserDriver:
    """A thread that owns Playwright and one Chromium; see the module docstring."""

    def __init__(self) -> None:
        self._calls: "queue.Queue[Any]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="playwright", daemon=True)
        self.browser: Any = None
        self._playwright: Any = None

    def _run(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            fn, args, d = item
            try:
                result = fn(*args)
            except BaseException as e:  # noqa: B902 - handed to the reactor as a failure
                reactor.callFromThread(d.errback, e)
            else:
                reactor.callFromThread(d.callback, result)

    def call(self, fn: Callable[..., Any], *args: Any) -> "defer.Deferred[Any]":
        """Run ``fn(*args)`` in the driver thread."""
        d: defer.Deferred[Any] = defer.Deferred()
        self._calls.put((fn, args, d))
        return d

    async def start(self) -> "BrowserDriver":
        self._thread.start()

        def launch() -> None:
            from playwright.sync_api import sync_playwright

            self._playwright = sync_playwright().start()
            self.browser = self._playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )

        await self.call(launch)
        return self

    async def stop(self) -> None:
        def close() -> None:
            try:
                if self.browser is not None:
                    self.browser.close()
            finally:
                if self._playwright is not None:
                    self._playwright.stop()

        try:
            await self.call(close)
        finally:
            self._calls.put(None)


def save_screenshot(page: Any, folder: str, name: str) -> str:
    """
    Take a screenshot into ``folder``, the test's temp folder: a test artifact only, so that a
    test run never changes files of the checkout (such as the screenshots in ``docs/``).
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    page.screenshot(path=path, full_page=False)
    return path


class IrcLineClient:
    """
    A minimal IRC client on a plain socket, for checking what an IRC user sees.

    A reader thread collects the lines; tests wait for them on the reactor with
    :meth:`wait_for_line`, so nothing blocks the server.
    """

    def __init__(self, port: int, nick: str) -> None:
        import socket

        self.nick = nick
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._socket.settimeout(None)
        self._reader = threading.Thread(target=self._read, name=f"irc-{nick}", daemon=True)
        self._reader.start()
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :{nick} on IRC")

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                data = self._socket.recv(65536)
            except OSError:
                return
            if not data:
                return
            buffer += data
            while b"\r\n" in buffer:
                line, buffer = buffer.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                if text.startswith("PING "):
                    self.send("PONG " + text[5:])
                with self._lock:
                    self.lines.append(text)

    def send(self, line: str) -> None:
        self._socket.sendall(line.encode("utf-8") + b"\r\n")

    def close(self) -> None:
        try:
            self.send("QUIT :bye")
        except OSError:
            pass
        self._socket.close()

    async def wait_for_line(self, predicate: Callable[[str], bool], timeout: float = 15.0) -> str:
        import time

        from twisted.internet.task import deferLater

        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for line in self.lines:
                    if predicate(line):
                        return line
            if time.monotonic() > deadline:
                with self._lock:
                    seen = list(self.lines[-20:])
                raise AssertionError(f"IRC {self.nick}: no matching line; last lines: {seen}")
            await deferLater(reactor, 0.05, lambda: None)


# -- the chat page in a whole server ---------------------------------------------------------------

TIMEOUT_MS = 15000

STANDALONE = {
    "title": "Team chat",
    "welcome": "Welcome to the internal chat.\nPick a name to join.",
    "rooms": [{"id": 1, "title": "Lobby"}, {"id": 2, "title": "Random"}],
    "history": 50,
}

AXE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js", "node_modules",
                   "axe-core", "axe.min.js")


class ChatPageTestCase(unittest.TestCase):
    """
    A whole server (standalone client ``team``, IRC in open mode) and a Chromium, with helpers
    that drive pages the way people do. Subclasses set ``grace``, ``network`` or ``standalone``.
    """

    timeout = 120
    #: The disconnect grace of the server, in seconds.
    grace = 1.0
    #: server.cfg ``network``, or None.
    network: Optional[Dict[str, Any]] = None
    standalone: Dict[str, Any] = STANDALONE

    if skip_reason():
        skip = skip_reason()

    async def setUp(self) -> None:
        self.folder = os.path.abspath(self.mktemp())
        self.server = await self.start_server()
        self.driver = await BrowserDriver().start()
        self.addCleanup(self.driver.stop)
        self.dialogs: List[str] = []
        self.console_errors: List[str] = []

    async def start_server(self, **kwargs: Any) -> RunningServer:
        server: Dict[str, Any] = {"irc": {"address": "127.0.0.1", "port": 0, "auth": "open"}}
        if self.network is not None:
            server["network"] = self.network
        grace = self.grace
        return await start_server(
            self,
            server=server,
            clients=[{"name": "team", "standalone": self.standalone}],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=grace)],
            folder=self.folder,
            **kwargs,
        )

    # -- helpers that run in the driver thread ---------------------------------------------------

    def _open(self, url: str, width: int, height: int, options: Dict[str, Any],
              init_script: Optional[str]) -> Any:
        context = self.driver.browser.new_context(viewport={"width": width, "height": height},
                                                  **options)
        if init_script:
            context.add_init_script(init_script)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        page.goto(url)
        return page

    async def open_page(self, width: int = 1100, height: int = 700,
                        init_script: Optional[str] = None, **options: Any) -> Any:
        """A page in a context of its own (``options``: Playwright's, e.g. ``locale``)."""
        return await self.driver.call(self._open, self.server.url("/"), width, height, options,
                                      init_script)

    async def join(self, page: Any, name: str) -> None:
        """Type a name and press Enter, as a keyboard user does."""

        def join() -> None:
            page.fill("#name-input", name)
            page.press("#name-input", "Enter")
            page.wait_for_selector("#chat:not([hidden])")

        await self.driver.call(join)

    async def pages_in_the_room(self, *names: str) -> List[Any]:
        """A page for each name, joined, once the first page lists them all."""
        pages = [await self.open_page() for _ in names]
        for page, name in zip(pages, names):
            await self.join(page, name)
        await self.wait_people(pages[0], list(names))
        return pages

    async def wait_text(self, page: Any, selector: str, text: str) -> None:
        def wait() -> None:
            page.locator(selector, has_text=text).first.wait_for(state="visible")

        await self.driver.call(wait)

    async def wait_for(self, page: Any, expression: str, arg: Any = None) -> None:
        """Wait until the JavaScript function ``expression`` returns something true."""
        await self.driver.call(lambda: page.wait_for_function(expression, arg=arg))

    async def evaluate(self, page: Any, expression: str, arg: Any = None) -> Any:
        return await self.driver.call(lambda: page.evaluate(expression, arg))

    async def send(self, page: Any, text: str) -> None:
        def send() -> None:
            page.fill("#message-input", text)
            page.press("#message-input", "Enter")

        await self.driver.call(send)

    async def people(self, page: Any) -> List[str]:
        """The names in the people list, in order."""
        return await self.evaluate(page, """() => [...document.querySelectorAll(
            '#user-list .user .user-name')].map(e => e.textContent)""")

    async def wait_people(self, page: Any, names: List[str]) -> None:
        await self.wait_for(page, """(names) => JSON.stringify([...document.querySelectorAll(
            '#user-list .user .user-name')].map(e => e.textContent)) === JSON.stringify(names)""",
                            sorted(names, key=str.lower))

    async def axe_violations(self, page: Any) -> List[Dict[str, Any]]:
        """axe-core (npm) run in the page: its serious and critical violations."""
        with open(AXE, encoding="utf-8") as handle:
            source = handle.read()

        def run() -> Any:
            # Evaluated through the DevTools protocol: the page's CSP does not apply to it.
            page.evaluate(source + "\n;void 0")
            return page.evaluate("""async () => {
                const result = await axe.run(document, {resultTypes: ['violations']});
                return result.violations
                    .filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}));
            }""")

        return await self.driver.call(run)

    def irc_port(self) -> int:
        from ilchat.irc.service import IrcComponent

        for component in self.server.service.components:
            if isinstance(component, IrcComponent):
                return component.ports[0].getHost().port
        raise AssertionError("no IRC listener")

    async def irc_user(self, nick: str) -> IrcLineClient:
        client = IrcLineClient(self.irc_port(), nick)
        self.addCleanup(client.close)
        await client.wait_for_line(lambda line: f" 001 {nick} " in line)
        return client
