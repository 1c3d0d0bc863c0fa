"""
The built-in chat page in a real headless Chromium, against a whole ilchat server on loopback.

Two pages pick names, see each other in the user list, see each other typing and exchange
messages; a message made of HTML stays text; a taken name is explained on the welcome screen; the
page reconnects and logs back in after the server restarts; it works with the keyboard alone and
on a phone-sized screen; an IRC user shares the room. Screenshots are kept in the test's temp
folder only (the pictures of docs/ come from C{tests.browser.test_chat_features}).
"""

from __future__ import annotations

import os

from tests.browser.support import ChatPageTestCase, save_screenshot

XSS = "<img src=x onerror=alert(1)>"


class ChatPageBrowserTests(ChatPageTestCase):
    """The chat page as people use it, in Chromium."""

    # -- tests ------------------------------------------------------------------------------------

    async def test_two_pages_chat_see_users_typing_and_messages(self) -> None:
        """
        Alice and Bob join; each sees the other in the user list; Bob sees Alice typing; they
        exchange messages shown with names and local times. A screenshot is kept.
        """
        alice = await self.open_page()
        bob = await self.open_page()
        title = await self.driver.call(lambda: alice.inner_text("#app-title"))
        self.assertEqual(title, "Team chat")
        await self.join(alice, "Alice")
        await self.join(bob, "Bob")

        await self.wait_text(alice, "#user-list .user", "Bob")
        await self.wait_text(bob, "#user-list .user", "Alice")
        rooms = await self.driver.call(lambda: alice.locator("#room-list button").all_inner_texts())
        self.assertEqual([r.strip() for r in rooms], ["Lobby", "Random"])

        await self.driver.call(lambda: alice.type("#message-input", "Hel", delay=30))
        await self.wait_text(bob, "#typing", "Alice is typing")

        await self.send(alice, "Hello Bob!")
        await self.wait_text(bob, "#messages .entry.message", "Hello Bob!")
        await self.driver.call(lambda: bob.wait_for_function(
            "() => document.getElementById('typing').textContent === ''"))
        await self.send(bob, "Hi Alice, how are you?")
        await self.wait_text(alice, "#messages .entry.message", "Hi Alice, how are you?")

        entry = await self.driver.call(lambda: bob.evaluate(
            """() => {
                const items = [...document.querySelectorAll('#messages .entry.message')];
                const item = items.find(li => li.textContent.includes('Hello Bob!'));
                return {from: item.querySelector('.from').textContent,
                        time: item.querySelector('time').textContent,
                        datetime: item.querySelector('time').getAttribute('datetime')};
            }"""))
        self.assertEqual(entry["from"], "Alice")
        self.assertRegex(entry["time"], r"\d{1,2}[:.]\d{2}")
        self.assertTrue(entry["datetime"].endswith("Z"))

        await self.send(alice, "See you in the stand-up.")
        await self.wait_text(bob, "#messages .entry.message", "stand-up")
        path = await self.driver.call(
            save_screenshot, alice, self.folder, "chat-desktop.png")
        self.assertTrue(os.path.getsize(path) > 10_000)
        phone = await self.driver.call(save_screenshot, bob, self.folder, "chat-bob.png")
        self.assertTrue(os.path.exists(phone))
        self.assertEqual(self.dialogs, [])
        self.assertEqual([e for e in self.console_errors if "Content Security" in e], [])

    async def test_html_in_a_message_stays_text(self) -> None:
        """An <img onerror> message is shown literally; no element is made and nothing runs."""
        alice = await self.open_page()
        bob = await self.open_page()
        await self.join(alice, "Alice")
        await self.join(bob, "<b>Bob</b>")
        await self.send(bob, XSS)
        await self.wait_text(alice, "#messages .entry.message", "onerror")
        found = await self.driver.call(lambda: alice.evaluate(
            """() => ({
                text: [...document.querySelectorAll('#messages .entry.message .content')]
                        .map(e => e.textContent),
                from: [...document.querySelectorAll('#messages .entry.message .from')]
                        .map(e => e.textContent),
                images: document.querySelectorAll('#messages img, #user-list img').length,
                bold: document.querySelectorAll('#messages b, #user-list b').length,
            })"""))
        self.assertIn(XSS, found["text"])
        self.assertIn("<b>Bob</b>", found["from"])
        self.assertEqual((found["images"], found["bold"]), (0, 0))
        await self.wait_text(alice, "#user-list .user", "<b>Bob</b>")
        self.assertEqual(self.dialogs, [])

    async def test_taken_name_is_explained_on_the_welcome_screen(self) -> None:
        """A second "alice" stays on the welcome screen with a message saying the name is used."""
        first = await self.open_page()
        await self.join(first, "alice")
        second = await self.open_page()

        def try_name() -> str:
            second.fill("#name-input", "ALICE")
            second.press("#name-input", "Enter")
            second.locator("#login-error", has_text="already in use").wait_for()
            return second.inner_text("#login-error")

        message = await self.driver.call(try_name)
        self.assertIn("ALICE", message)
        hidden = await self.driver.call(lambda: second.is_hidden("#chat"))
        self.assertTrue(hidden)

    async def test_newcomer_sees_the_room_history(self) -> None:
        """Messages sent before someone joins are shown to them when they arrive."""
        alice = await self.open_page()
        await self.join(alice, "Alice")
        await self.send(alice, "an early message")
        await self.wait_text(alice, "#messages .entry.message", "an early message")
        carol = await self.open_page()
        await self.join(carol, "Carol")
        await self.wait_text(carol, "#messages .entry.message", "an early message")

    async def test_keyboard_only(self) -> None:
        """
        Without a mouse: the name field has the focus, Enter joins, the focus moves to the message
        box, Enter sends, and Tab reaches the room buttons.
        """
        page = await self.open_page()

        def keyboard() -> dict:
            focused = page.evaluate("document.activeElement.id")
            page.keyboard.type("Kim")
            page.keyboard.press("Enter")
            page.wait_for_selector("#chat:not([hidden])")
            page.wait_for_function("() => document.activeElement.id === 'message-input'")
            page.keyboard.type("typed without a mouse")
            page.keyboard.press("Enter")
            page.locator("#messages .entry.message", has_text="without a mouse").wait_for()
            # Shift+Tab from the message box goes back through the page to a room button.
            labels = page.evaluate(
                "[...document.querySelectorAll('label')].map(l => l.htmlFor)")
            for _ in range(20):
                page.keyboard.press("Shift+Tab")
                if page.evaluate("document.activeElement.classList.contains('room-button')"):
                    break
            on_room = page.evaluate("document.activeElement.textContent")
            return {"focused": focused, "labels": labels, "on_room": on_room}

        result = await self.driver.call(keyboard)
        self.assertEqual(result["focused"], "name-input")
        self.assertIn("name-input", result["labels"])
        self.assertIn("message-input", result["labels"])
        self.assertIn(result["on_room"].strip(), ("Lobby", "Random"))

    async def test_phone_sized_screen_has_no_sideways_scrolling(self) -> None:
        """At 375 px wide the chat fits the width and the message box is on screen."""
        page = await self.open_page(width=375, height=700)
        await self.join(page, "Pat")
        await self.send(page, "a rather long message " * 10)
        await self.wait_text(page, "#messages .entry.message", "rather long")
        layout = await self.driver.call(lambda: page.evaluate(
            """() => {
                const box = document.getElementById('message-input').getBoundingClientRect();
                return {scroll: document.documentElement.scrollWidth,
                        boxBottom: box.bottom, boxRight: box.right};
            }"""))
        self.assertLessEqual(layout["scroll"], 375)
        self.assertLessEqual(layout["boxRight"], 375)
        self.assertLessEqual(layout["boxBottom"], 700)
        await self.driver.call(save_screenshot, page, self.folder, "chat-phone.png")

    async def test_reconnects_and_logs_back_in_after_a_server_restart(self) -> None:
        """The server stops and comes back on the same port: the page reconnects and rejoins."""
        page = await self.open_page()
        await self.join(page, "Robin")
        await self.wait_text(page, "#user-list .user", "Robin")
        port = self.server.port
        await self.server.stop()
        await self.wait_text(page, "#status", "Not connected")
        self.server = await self.start_server(listen_port=port)
        await self.driver.call(lambda: page.wait_for_function(
            "() => window.ilchat.state.loggedIn === true", timeout=30000))
        await self.wait_text(page, "#status", "Connected as Robin")
        await self.wait_text(page, "#user-list .user", "Robin")
        await self.send(page, "back again")
        await self.wait_text(page, "#messages .entry.message", "back again")

    async def test_irc_user_in_the_same_room(self) -> None:
        """
        An IRC user in #team-1 is listed on the page (marked IRC), sees the web user join and
        talk, and answers; the page shows the answer. The IRC nick is taken for the web too.
        """
        dan = await self.irc_user("ircdan")
        dan.send("JOIN #team-1")
        await dan.wait_for_line(lambda line: line.endswith("JOIN #team-1") and "ircdan" in line)
        page = await self.open_page()
        await self.join(page, "Alice")
        await self.wait_text(page, "#user-list .user", "ircdan")
        tag = await self.driver.call(lambda: page.locator(
            "#user-list .user", has_text="ircdan").locator(".tag.irc").inner_text())
        self.assertEqual(tag, "IRC")
        await dan.wait_for_line(lambda line: "JOIN #team-1" in line and line.startswith(":Alice!"))

        await self.send(page, "Hello IRC <3")
        await dan.wait_for_line(lambda line: line.endswith("PRIVMSG #team-1 :Hello IRC <3"))
        dan.send("PRIVMSG #team-1 :hello from IRC <script>x</script>")
        await self.wait_text(page, "#messages .entry.message", "hello from IRC")
        sender = await self.driver.call(lambda: page.locator(
            "#messages .entry.message", has_text="hello from IRC").locator(".from").inner_text())
        self.assertEqual(sender, "ircdan")
        scripts = await self.driver.call(
            lambda: page.evaluate("() => document.querySelectorAll('#messages script').length"))
        self.assertEqual(scripts, 0)

        other = await self.open_page()

        def try_irc_nick() -> str:
            other.fill("#name-input", "IRCDAN")
            other.press("#name-input", "Enter")
            other.locator("#login-error", has_text="already in use").wait_for()
            return other.inner_text("#login-error")

        self.assertIn("IRCDAN", await self.driver.call(try_irc_nick))
        await self.join(other, "Bob")
        await self.send(other, "Morning all, the build is green again.")
        await dan.wait_for_line(lambda line: line.endswith(":Morning all, the build is green again."))
        await self.wait_text(page, "#messages .entry.message", "build is green")
        await self.wait_text(page, "#user-list .user", "Bob")
        await self.driver.call(save_screenshot, page, self.folder, "chat-with-irc.png")

    async def test_leave_and_join_again_under_the_same_name(self) -> None:
        """After "Leave", the welcome screen is back and the same name can join again at once."""
        page = await self.open_page()
        await self.join(page, "Sam")

        def leave() -> None:
            page.click("#logout-button")
            page.wait_for_selector("#welcome:not([hidden])")

        await self.driver.call(leave)
        await self.join(page, "Sam")
        await self.wait_text(page, "#status", "Connected as Sam")
