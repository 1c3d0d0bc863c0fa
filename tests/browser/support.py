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
from typing import Any, Callable

from twisted.internet import defer, reactor

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
    test run never changes files of the checkout (such as ``docs/screenshot.png``).
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
