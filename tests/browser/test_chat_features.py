"""
The chat page's features and the defects of issue 17, in a real headless Chromium: leaving at
once (the "Leave" button and a closed page) while a lost connection keeps its grace; renames on
IRC and on the web in every list; refusals that never lose a message; limits shown, not cut;
day separators and the browser's time format; links, ``/me``, whispers, mentions,
notifications, the unread count in the tab title; the dark theme; the operator's branding; the
languages; the phone layout; axe-core's accessibility rules. Two pages, plus an IRC client where
the feature crosses over.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List

from ilchat.jsonutil import dumps
from tests.browser.support import STANDALONE, ChatPageTestCase, save_screenshot
from tests.standalone.test_files import png
from tests.support.db import insert_rows_async

#: Fake notifications and a switchable visibility, installed before the page's script runs.
ATTENTION_SCRIPT = """
window.__notes = [];
window.__hidden = false;
Object.defineProperty(Document.prototype, 'visibilityState', {configurable: true,
    get() { return window.__hidden ? 'hidden' : 'visible'; }});
Object.defineProperty(Document.prototype, 'hidden', {configurable: true,
    get() { return window.__hidden; }});
class FakeNotification {
    constructor(title, options) { window.__notes.push({title, body: options && options.body}); }
}
FakeNotification.permission = 'granted';
FakeNotification.requestPermission = () => Promise.resolve('granted');
window.Notification = FakeNotification;
"""

HIDE = "() => { window.__hidden = true; document.dispatchEvent(new Event('visibilitychange')); }"
SHOW = """() => { window.__hidden = false; document.dispatchEvent(new Event('visibilitychange'));
                  window.dispatchEvent(new Event('focus')); }"""


def _contents(selector: str = "#messages .entry.message .content") -> str:
    return f"() => [...document.querySelectorAll('{selector}')].map(e => e.textContent)"


class LeavingTests(ChatPageTestCase):
    """With a 120 s grace: whoever leaves on purpose is gone for the others at once."""

    grace = 120.0

    async def test_leave_button_is_immediate_for_the_others(self) -> None:
        """Bob presses "Leave": Alice's list loses him and says so, long before any grace."""
        alice, bob = await self.pages_in_the_room("Alice", "Bob")
        await self.driver.call(lambda: bob.click("#logout-button"))
        await self.wait_people(alice, ["Alice"])
        await self.wait_text(alice, "#messages .entry.notice", "Bob left")
        hidden = await self.driver.call(lambda: bob.is_visible("#welcome"))
        self.assertTrue(hidden)

    async def test_closed_page_is_immediate_for_the_others(self) -> None:
        """Bob's tab is closed (``pagehide``): Alice's list loses him at once."""
        alice, bob = await self.pages_in_the_room("Alice", "Bob")
        await self.driver.call(lambda: bob.close())
        await self.wait_people(alice, ["Alice"])
        await self.wait_text(alice, "#messages .entry.notice", "Bob left")

    async def test_a_page_navigated_away_leaves_and_a_reload_comes_back(self) -> None:
        """Away to another page: gone at once. A reload joins again under the same name."""
        alice, bob = await self.pages_in_the_room("Alice", "Bob")
        await self.driver.call(lambda: bob.reload())
        await self.wait_text(bob, "#status", "Connected as Bob")
        await self.wait_people(alice, ["Alice", "Bob"])
        await self.driver.call(lambda: bob.goto("about:blank"))
        await self.wait_people(alice, ["Alice"])


class RenameTests(ChatPageTestCase):
    """Renames, on IRC or on the web, reach every people list and are told in the room."""

    async def test_irc_nick_and_web_renames_update_every_list(self) -> None:
        dan = await self.irc_user("ircdan")
        dan.send("JOIN #team-1")
        await dan.wait_for_line(lambda line: line.endswith("JOIN #team-1") and "ircdan" in line)
        alice = await self.open_page()
        bob = await self.open_page()
        await self.join(alice, "Alice")
        await self.join(bob, "Bob")
        await self.wait_people(alice, ["Alice", "Bob", "ircdan"])

        dan.send("NICK danny")
        await self.wait_people(alice, ["Alice", "Bob", "danny"])
        await self.wait_people(bob, ["Alice", "Bob", "danny"])
        await self.wait_text(alice, "#messages .entry.notice", "ircdan is now known as danny")
        dan.send("PRIVMSG #team-1 :same person")
        await self.wait_text(alice, "#messages .entry.message", "same person")
        sender = await self.driver.call(lambda: alice.locator(
            "#messages .entry.message", has_text="same person").locator(".from").inner_text())
        self.assertEqual(sender, "danny")

        def rename_with_the_button() -> None:
            bob.click("#rename-button")
            bob.fill("#rename-input", "Robert")
            bob.press("#rename-input", "Enter")

        await self.driver.call(rename_with_the_button)
        await self.wait_people(alice, ["Alice", "danny", "Robert"])
        await self.wait_text(alice, "#messages .entry.notice", "Bob is now known as Robert")
        await self.wait_text(bob, "#status", "Connected as Robert")
        hidden = await self.driver.call(lambda: bob.is_hidden("#rename-form"))
        self.assertTrue(hidden)

        await self.send(alice, "/nick Alicia")
        await self.wait_people(bob, ["Alicia", "danny", "Robert"])
        await self.send(alice, "/nick DANNY")
        await self.wait_text(alice, "#rename-error", "already in use")
        await self.wait_people(bob, ["Alicia", "danny", "Robert"])


class LimitTests(ChatPageTestCase):
    """Small limits, so that the page's handling of them shows."""

    network = {"message_rate": 1, "message_burst": 3, "max_message_length": 100,
               "max_name_length": 12}

    async def test_a_burst_loses_no_message_and_says_why(self) -> None:
        """
        Eight messages at once with a burst of three: the refused ones are back in Alice's box
        in their order, the refusal is the message one (never a typing notice), nothing is lost.
        """
        alice, bob = await self.pages_in_the_room("Alice", "Bob")
        await self.evaluate(alice, """() => {
            const box = document.getElementById('message-input');
            const form = document.getElementById('message-form');
            for (let i = 0; i < 8; i++) {
                box.value = 'burst ' + i;
                box.dispatchEvent(new Event('input'));
                form.requestSubmit();
            }
        }""")
        await self.wait_text(alice, "#message-error", "too fast")
        sent = [f"burst {i}" for i in range(8)]
        await self.wait_for(alice, """() => document.getElementById('message-input').value
            .split('\\n').length === 5""")
        box = await self.evaluate(alice, "() => document.getElementById('message-input').value")
        error = await self.evaluate(alice, "() => document.getElementById('message-error').textContent")
        self.assertNotIn("typing", error.lower())
        delivered = await self.evaluate(bob, _contents())
        self.assertEqual(delivered + box.split("\n"), sent)

    async def test_limits_are_shown_as_they_come_near_and_nothing_is_cut(self) -> None:
        """A long name or message is kept whole and refused visibly; a counter comes near 100."""
        page = await self.open_page()
        other = await self.open_page()

        def long_name() -> Dict[str, Any]:
            page.fill("#name-input", "N" * 20)
            page.press("#name-input", "Enter")
            page.locator("#login-error", has_text="at most 12").wait_for()
            return {"value": page.input_value("#name-input"),
                    "welcome": page.is_visible("#welcome")}

        result = await self.driver.call(long_name)
        self.assertEqual(result, {"value": "N" * 20, "welcome": True})
        await self.join(page, "Lim")
        await self.join(other, "Other")

        await self.driver.call(lambda: page.fill("#message-input", "x" * 70))
        self.assertEqual(await self.evaluate(page, "() => document.getElementById("
                                                   "'message-counter').textContent"), "")
        await self.driver.call(lambda: page.fill("#message-input", "x" * 85))
        await self.wait_text(page, "#message-counter", "85 / 100")
        await self.send(page, "y" * 130)
        await self.wait_text(page, "#message-error", "too long")
        state = await self.evaluate(page, """() => ({
            value: document.getElementById('message-input').value.length,
            counter: document.getElementById('message-counter').className,
            error: document.getElementById('message-error').textContent})""")
        self.assertEqual(state["value"], 130)
        self.assertIn("over", state["counter"])
        self.assertIn("130", state["error"])

        def two_lines() -> None:
            page.fill("#message-input", "")
            page.type("#message-input", "line one")
            page.keyboard.press("Shift+Enter")
            page.keyboard.type("line two")
            page.keyboard.press("Enter")

        await self.driver.call(two_lines)
        await self.wait_text(other, "#messages .entry.message", "line two")
        shown = await self.evaluate(other, """() => {
            const items = [...document.querySelectorAll('#messages .entry.message .content')];
            const item = items.find(e => e.textContent.includes('line two'));
            return {text: item.textContent, lines: item.innerText.split('\\n').length};
        }""")
        self.assertEqual(shown, {"text": "line one\nline two", "lines": 2})


class TimeTests(ChatPageTestCase):
    """History from other days gets day separators; times follow the browser's locale."""

    async def test_day_separators_and_locale_times_that_do_not_wrap(self) -> None:
        now = int(time.time())
        database = self.server.client_configs[0].database
        rows = []
        for number, (age, text) in enumerate([(3 * 86400, "three days ago"), (86400, "yesterday")]):
            rows.append({
                "hist_id": 9000 + number, "room_id": 1, "timestamp": now - age, "sub_room": 0,
                "message": dumps({"type": "message", "timestamp": now - age, "content": text,
                                  "roomId": 1, "from": {"id": 77, "username": "Old",
                                                        "profile_picture_visible": False},
                                  "format": {}}),
            })
        await insert_rows_async(database, "chatroom_history", rows)
        await self.server.stop()
        self.server = await self.start_server()

        us = await self.open_page(width=390, height=844, locale="en-US")
        de = await self.open_page(locale="de-DE")
        await self.join(us, "Una")
        await self.join(de, "Dora")
        await self.wait_text(us, "#messages .entry.message", "yesterday")
        days = await self.evaluate(us, _contents("#messages .day-separator"))
        self.assertEqual(len(days), 3)
        self.assertEqual(days[1:], ["Yesterday", "Today"])
        self.assertRegex(days[0], r"\d{4}")
        de_days = await self.evaluate(de, _contents("#messages .day-separator"))
        self.assertEqual(de_days[1:], ["Gestern", "Heute"])

        times = await self.evaluate(us, """() => [...document.querySelectorAll(
            '#messages .entry time')].map(e => ({text: e.textContent,
                rects: e.getClientRects().length, wrap: getComputedStyle(e).whiteSpace}))""")
        for shown in times:
            self.assertRegex(shown["text"], r"^\d{1,2}:\d{2}\s?[AP]M$")
            self.assertEqual((shown["rects"], shown["wrap"]), (1, "nowrap"))
        de_times = await self.evaluate(de, _contents("#messages .entry time"))
        for text in de_times:
            self.assertRegex(text, r"^\d{1,2}:\d{2}$")


class MessageFeatureTests(ChatPageTestCase):
    """Links, actions, whispers, mentions, notifications and the unread count."""

    async def test_links_are_clickable_and_safe(self) -> None:
        """http(s) links become <a rel="noopener noreferrer">; nothing else becomes markup."""
        alice, bob = await self.pages_in_the_room("Alice", "Bob")
        await self.send(bob, "docs at https://example.org/a?b=1&c=2, not javascript:alert(1) "
                             "nor <a href=x>this</a> <b>bold</b>")
        await self.wait_text(alice, "#messages .entry.message", "docs at")
        found = await self.evaluate(alice, """() => {
            const item = [...document.querySelectorAll('#messages .entry.message .content')]
                .find(e => e.textContent.startsWith('docs at'));
            return {links: [...item.querySelectorAll('a')].map(a => ({href: a.href,
                        rel: a.rel, target: a.target, text: a.textContent})),
                    elements: item.querySelectorAll('*').length, text: item.textContent};
        }""")
        self.assertEqual(found["links"], [{"href": "https://example.org/a?b=1&c=2",
                                           "rel": "noopener noreferrer", "target": "_blank",
                                           "text": "https://example.org/a?b=1&c=2"}])
        self.assertEqual(found["elements"], 1)
        self.assertIn("<b>bold</b>", found["text"])
        self.assertEqual(self.dialogs, [])

    async def test_me_is_an_action_both_ways_with_irc(self) -> None:
        """``/me waves`` shows as an action and reaches IRC as CTCP ACTION; IRC's comes back."""
        dan = await self.irc_user("ircdan")
        dan.send("JOIN #team-1")
        await dan.wait_for_line(lambda line: line.endswith("JOIN #team-1") and "ircdan" in line)
        alice = await self.open_page()
        await self.join(alice, "Alice")
        await self.send(alice, "/me waves at everyone")
        await dan.wait_for_line(
            lambda line: line.endswith("PRIVMSG #team-1 :\x01ACTION waves at everyone\x01"))
        await self.wait_text(alice, "#messages .entry.action", "waves at everyone")
        dan.send("PRIVMSG #team-1 :\x01ACTION nods\x01")
        await self.wait_text(alice, "#messages .entry.action", "nods")
        actions = await self.evaluate(alice, """() => [...document.querySelectorAll(
            '#messages .entry.action')].map(e => [e.querySelector('.from').textContent,
                                                  e.querySelector('.content').textContent])""")
        self.assertEqual(actions, [["* Alice", "waves at everyone"], ["* ircdan", "nods"]])

    async def test_whispers_from_the_people_list_replies_and_irc(self) -> None:
        """
        Alice whispers to Bob from the people list; Carol sees nothing of it; Bob replies with
        the reply button; an IRC user's private message reaches Alice and her reply reaches him.
        """
        dan = await self.irc_user("ircdan")
        dan.send("JOIN #team-1")
        alice = await self.open_page()
        bob = await self.open_page()
        carol = await self.open_page()
        for page, name in ((alice, "Alice"), (bob, "Bob"), (carol, "Carol")):
            await self.join(page, name)
        await self.wait_people(alice, ["Alice", "Bob", "Carol", "ircdan"])

        def whisper_to_bob() -> str:
            alice.locator("#user-list .user-name", has_text="Bob").click()
            alice.locator("#whisper-bar").wait_for(state="visible")
            label = alice.inner_text("#whisper-label")
            alice.keyboard.type("just for you")
            alice.keyboard.press("Enter")
            return label

        self.assertEqual(await self.driver.call(whisper_to_bob), "Private message to Bob")
        await self.wait_text(bob, "#messages .entry.whisper", "just for you")
        mine = await self.driver.call(lambda: alice.locator(
            "#messages .entry.whisper", has_text="just for you").locator(".to").inner_text())
        self.assertEqual(mine, "→ Bob (private)")
        await self.driver.call(lambda: alice.click("#whisper-cancel"))
        await self.send(alice, "public again")
        await self.wait_text(carol, "#messages .entry.message", "public again")
        self.assertNotIn("just for you", await self.evaluate(carol, _contents()))

        def reply() -> None:
            bob.locator("#messages .entry.whisper", has_text="just for you").locator(
                "button.reply").click()
            bob.keyboard.type("got it")
            bob.keyboard.press("Enter")

        await self.driver.call(reply)
        await self.wait_text(alice, "#messages .entry.whisper", "got it")

        dan.send("PRIVMSG Alice :hello privately")
        await self.wait_text(alice, "#messages .entry.whisper", "hello privately")

        def reply_to_dan() -> None:
            alice.locator("#messages .entry.whisper", has_text="hello privately").locator(
                "button.reply").click()
            alice.keyboard.type("hi dan, privately")
            alice.keyboard.press("Enter")

        await self.driver.call(reply_to_dan)
        await dan.wait_for_line(lambda line: line.endswith("PRIVMSG ircdan :hi dan, privately"))
        await self.send(alice, "/msg carol psst")
        await self.wait_text(carol, "#messages .entry.whisper", "psst")
        self.assertNotIn("psst", await self.evaluate(bob, _contents()))

    async def test_mentions_notifications_and_the_unread_count(self) -> None:
        """
        With notifications on and the tab hidden, a mention of Alice is highlighted, notified,
        and counted in the tab title; other messages are counted only; coming back clears it.
        """
        alice = await self.open_page(init_script=ATTENTION_SCRIPT)
        bob = await self.open_page()
        await self.join(alice, "Alice")
        await self.join(bob, "Bob")
        await self.driver.call(lambda: alice.click("#notify-button"))
        await self.wait_for(alice, "() => document.getElementById('notify-button')"
                                   ".getAttribute('aria-pressed') === 'true'")
        await self.evaluate(alice, SHOW)
        await self.evaluate(alice, HIDE)
        await self.send(bob, "lunch at noon?")
        await self.send(bob, "what do you think, alice?")
        await self.wait_text(alice, "#messages .entry.mention", "what do you think")
        await self.wait_for(alice, "() => document.title === '(2) Team chat'")
        notes = await self.evaluate(alice, "() => window.__notes")
        self.assertEqual(notes, [{"title": "Bob in Lobby", "body": "what do you think, alice?"}])
        plain = await self.evaluate(alice, """() => [...document.querySelectorAll(
            '#messages .entry.message')].filter(e => e.textContent.includes('lunch'))
            .map(e => e.classList.contains('mention'))""")
        self.assertEqual(plain, [False])
        await self.evaluate(alice, SHOW)
        await self.wait_for(alice, "() => document.title === 'Team chat'")


class AppearanceTests(ChatPageTestCase):
    """Theme, branding, languages, the phone, and axe-core; the screenshots for the docs."""

    @property
    def standalone(self) -> Dict[str, Any]:  # type: ignore[override]
        return dict(
            STANDALONE,
            window_title="Acme internal chat",
            info="For Acme staff only.\nHelp: https://intranet.example/help <b>not bold</b>",
            files_folder=os.path.join(self.folder, "files"),
        )

    async def test_branding_from_client_cfg(self) -> None:
        """The window title, the greeting and the info text (line breaks, a link, escaped)."""
        page = await self.open_page()
        shown = await self.evaluate(page, """() => {
            const info = document.getElementById('info-text');
            return {title: document.title,
                    header: document.getElementById('app-title').textContent,
                    greeting: document.getElementById('welcome-text').textContent,
                    lines: info.innerText.split('\\n'),
                    links: [...info.querySelectorAll('a')].map(a => [a.href, a.rel]),
                    elements: info.querySelectorAll('*').length};
        }""")
        self.assertEqual(shown["title"], "Acme internal chat")
        self.assertEqual(shown["header"], "Team chat")
        self.assertEqual(shown["greeting"], STANDALONE["welcome"])
        self.assertEqual(shown["lines"], ["For Acme staff only.",
                                          "Help: https://intranet.example/help <b>not bold</b>"])
        self.assertEqual(shown["links"], [["https://intranet.example/help", "noopener noreferrer"]])
        self.assertEqual(shown["elements"], 1)

    async def test_languages_follow_the_browser(self) -> None:
        """German and Dutch browsers get their strings; another language gets English."""
        expected = {"de-DE": ("de", "Am Chat teilnehmen", "Verbunden als Hans"),
                    "nl-BE": ("nl", "Meedoen", "Verbonden als Hans"),
                    "fr-FR": ("en", "Join the chat", "Connected as Hans")}
        for locale, (lang, button, status) in expected.items():
            page = await self.open_page(locale=locale)
            shown = await self.evaluate(page, """() => [document.documentElement.lang,
                document.getElementById('login-button').textContent]""")
            self.assertEqual(shown, [lang, button], locale)
            await self.join(page, "Hans")
            await self.wait_text(page, "#status", status)
            await self.driver.call(lambda: page.click("#logout-button"))
            await self.wait_text(page, "#welcome", "")

    async def test_dark_theme_follows_the_browser_is_switchable_and_remembered(self) -> None:
        page = await self.open_page(color_scheme="dark")
        background = "() => getComputedStyle(document.documentElement).backgroundColor"
        self.assertEqual(await self.evaluate(page, background), "rgb(20, 23, 28)")
        self.assertEqual(await self.evaluate(
            page, "() => document.documentElement.dataset.theme"), "dark")
        await self.driver.call(lambda: page.click("#theme-button"))
        self.assertEqual(await self.evaluate(page, background), "rgb(246, 247, 249)")
        await self.driver.call(lambda: page.reload())
        self.assertEqual(await self.evaluate(page, background), "rgb(246, 247, 249)")
        pressed = await self.evaluate(
            page, "() => document.getElementById('theme-button').getAttribute('aria-pressed')")
        self.assertEqual(pressed, "false")
        light = await self.open_page(color_scheme="light")
        self.assertEqual(await self.evaluate(light, background), "rgb(246, 247, 249)")

    async def test_phone_header_has_people_and_leave(self) -> None:
        """On a 390 px phone the people list and "Leave" are in the header, above the input."""
        phone = await self.open_page(width=390, height=844)
        other = await self.open_page()
        await self.join(other, "Desk")
        await self.join(phone, "Pat")
        layout = await self.evaluate(phone, """() => {
            const box = id => document.getElementById(id).getBoundingClientRect();
            return {header: document.querySelector('header.top').getBoundingClientRect().bottom,
                    people: box('people-button').bottom, leave: box('logout-button').bottom,
                    input: box('message-input').top,
                    listVisible: document.getElementById('people').offsetParent !== null,
                    scroll: document.documentElement.scrollWidth};
        }""")
        self.assertLessEqual(layout["people"], layout["header"])
        self.assertLessEqual(layout["leave"], layout["header"])
        self.assertLess(layout["header"], layout["input"])
        self.assertFalse(layout["listVisible"])
        self.assertLessEqual(layout["scroll"], 390)
        await self.driver.call(lambda: phone.click("#people-button"))
        await self.wait_text(phone, "#user-list .user", "Desk")
        visible = await self.driver.call(lambda: phone.is_visible("#user-list"))
        self.assertTrue(visible)
        await self.driver.call(lambda: phone.keyboard.press("Escape"))
        await self.driver.call(lambda: phone.click("#logout-button"))
        await self.wait_people(other, ["Desk"])

    async def test_accessibility_and_the_screenshots_for_the_docs(self) -> None:
        """
        axe-core finds no serious or critical violation on the welcome screen, in a busy room
        (light and dark) and on the phone with the people list open. The screenshots
        (welcome, busy room, phone, dark) are kept in the test's folder; docs/ has copies.
        """
        violations: Dict[str, List[Any]] = {}
        welcome = await self.open_page(width=1280, height=800)
        violations["welcome"] = await self.axe_violations(welcome)
        await self.driver.call(save_screenshot, welcome, self.folder, "welcome.png")

        dan = await self.irc_user("dan_irc")
        dan.send("JOIN #team-1")
        alice = await self.open_page(width=1280, height=800)
        bob = await self.open_page()
        await self.join(alice, "Alice")
        await self.join(bob, "Bob")
        await self.wait_people(alice, ["Alice", "Bob", "dan_irc"])
        await self.send(bob, "Morning! The release notes are at https://intranet.example/notes")
        dan.send("PRIVMSG #team-1 :Build 1234 is green.")
        await self.wait_text(alice, "#messages .entry.message", "Build 1234")
        await self.send(bob, "/me brings coffee")
        sketch = {"name": "whiteboard.png", "mimeType": "image/png", "buffer": png(240, 120)}
        await self.driver.call(lambda: bob.set_input_files("#file-input", files=[sketch]))
        await self.wait_for(alice, """() => [...document.querySelectorAll('#messages img.thumb')]
            .some(img => img.complete && img.naturalWidth === 240)""")
        await self.send(bob, "Alice, can you look at the\nstaging server after lunch?")
        await self.wait_text(alice, "#messages .entry.mention", "staging")
        await self.driver.call(lambda: alice.locator("#user-list .user-name", has_text="Bob").click())
        await self.driver.call(lambda: alice.keyboard.type("Sure, after 2 pm."))
        await self.driver.call(lambda: alice.keyboard.press("Enter"))
        await self.wait_text(alice, "#messages .entry.whisper", "after 2 pm")
        await self.driver.call(lambda: alice.type("#message-input", "Thanks", delay=20))
        await self.wait_text(bob, "#typing", "Alice is typing")
        await self.driver.call(lambda: bob.type("#message-input", "On it", delay=20))
        await self.wait_text(alice, "#typing", "Bob is typing")
        violations["busy room"] = await self.axe_violations(alice)
        await self.driver.call(save_screenshot, alice, self.folder, "busy-room.png")
        await self.driver.call(lambda: alice.click("#theme-button"))
        violations["dark"] = await self.axe_violations(alice)
        await self.driver.call(save_screenshot, alice, self.folder, "dark.png")

        phone = await self.open_page(width=390, height=844)
        await self.join(phone, "Pat")
        await self.send(phone, "On my phone, on the way in.")
        await self.wait_text(phone, "#messages .entry.message", "on the way in")
        await self.driver.call(save_screenshot, phone, self.folder, "phone.png")
        await self.driver.call(lambda: phone.click("#people-button"))
        await self.wait_text(phone, "#user-list .user", "Alice")
        violations["phone with people"] = await self.axe_violations(phone)
        await self.driver.call(save_screenshot, phone, self.folder, "phone-people.png")
        self.assertEqual(violations, {key: [] for key in violations})
        for name in ("welcome.png", "busy-room.png", "dark.png", "phone.png"):
            self.assertGreater(os.path.getsize(os.path.join(self.folder, name)), 10_000)
        self.assertEqual([e for e in self.console_errors if "Content Security" in e], [])

    # Four pages, an IRC client and four axe runs: slow on a busy machine.
    test_accessibility_and_the_screenshots_for_the_docs.timeout = 300  # type: ignore[attr-defined]


class FileSharingTests(ChatPageTestCase):
    """Attaching and pasting files, with the limits from client.cfg, and an IRC user's link."""

    @property
    def standalone(self) -> Dict[str, Any]:  # type: ignore[override]
        return dict(STANDALONE, files_folder=os.path.join(self.folder, "files"),
                    files_max_bytes=20_000, files_types=["image/png", "text/plain"])

    async def test_attach_an_image_paste_a_file_and_the_refusals(self) -> None:
        dan = await self.irc_user("ircdan")
        dan.send("JOIN #team-1")
        await dan.wait_for_line(lambda line: line.endswith("JOIN #team-1") and "ircdan" in line)
        alice = await self.open_page()
        bob = await self.open_page()
        await self.join(alice, "Alice")
        await self.join(bob, "Bob")
        await self.wait_people(alice, ["Alice", "Bob", "ircdan"])
        image = {"name": "plan.png", "mimeType": "image/png", "buffer": png(8, 6)}
        await self.driver.call(lambda: alice.set_input_files("#file-input", files=[image]))
        await self.wait_for(bob, """() => [...document.querySelectorAll('#messages img.thumb')]
            .some(img => img.complete && img.naturalWidth === 8)""")
        link = await self.evaluate(bob, """() => {
            const a = document.querySelector('#messages a.file-link');
            return {href: a.getAttribute('href'), rel: a.rel, text: a.textContent,
                    alt: a.querySelector('img').alt,
                    from: a.closest('.entry').querySelector('.from').textContent};
        }""")
        self.assertRegex(link["href"], r"^files/[A-Za-z0-9_-]{24}/plan\.png$")
        self.assertEqual((link["rel"], link["alt"], link["from"]),
                         ("noopener noreferrer", "plan.png", "Alice"))
        self.assertIn("plan.png (", link["text"])
        line = await dan.wait_for_line(lambda line: "PRIVMSG #team-1 :plan.png (" in line)
        self.assertIn(f"http://127.0.0.1:{self.server.port}/files/", line)

        await self.evaluate(alice, """() => {
            const data = new DataTransfer();
            data.items.add(new File(['hello'], 'note.txt', {type: 'text/plain'}));
            document.getElementById('message-input').dispatchEvent(
                new ClipboardEvent('paste', {clipboardData: data, bubbles: true, cancelable: true}));
        }""")
        await self.wait_text(bob, "#messages a.file-link", "note.txt (5 B)")
        download = await self.evaluate(bob, """() => [...document.querySelectorAll(
            '#messages a.file-link')].map(a => a.getAttribute('download'))""")
        self.assertEqual(download, [None, "note.txt"])

        big = {"name": "big.txt", "mimeType": "text/plain", "buffer": b"x" * 30_000}
        await self.driver.call(lambda: alice.set_input_files("#file-input", files=[big]))
        await self.wait_text(alice, "#message-error", "too large")
        tool = {"name": "tool.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ"}
        await self.driver.call(lambda: alice.set_input_files("#file-input", files=[tool]))
        await self.wait_text(alice, "#message-error", "cannot be shared")
        self.assertEqual(len(os.listdir(os.path.join(self.folder, "files"))), 4)
        self.assertEqual(self.console_errors, [])
