"""
Messages in bridged rooms as IRC users expect them (issue 16): CTCP between IRC users untouched,
ACTION as the web's ``/me`` both ways, a NOTICE kept a NOTICE and out of the history, one line
per relayed PRIVMSG, and nick changes on both sides. python-socketio browsers and raw IRC
clients against a whole server on the real MariaDB.
"""

from __future__ import annotations

import json

from twisted.internet import threads
from twisted.trial import unittest

from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, irc_id_in, userlist_with, wait_until_rows
from tests.support.db import execute


async def log_in_again_as(test: IrcBridgeMixin, user_id: int, name: str) -> None:
    """The browser user C{user_id} logs in again (another tab) under a new name: ``renamed``."""
    await threads.deferToThread(
        execute, test.databases["onscreen"], "UPDATE chatroom_users SET userdata = ? WHERE user_id = ?",
        (json.dumps({"login": name, "id": user_id}), user_id))
    second = await test.browser()
    await second.emit("login", name, user_id, False)
    await second.wait_for("loggedIn")


class BridgedMessageTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"

    async def test_action_is_slash_me_for_browsers_and_untouched_for_irc(self) -> None:
        """
        An IRC ACTION reaches the other IRC user byte for byte (formatting too) and browsers as
        ``/me dances``, which is what the history keeps.
        """
        await self.start()
        bob = await self.enter(7, "bob")
        alpha = await self.irc_in_room("alpha")
        beta = await self.irc_in_room("beta")
        alpha.send(f"PRIVMSG {CHANNEL} :\x01ACTION \x02dances\x02\x01")
        got = await beta.wait_for("PRIVMSG")
        self.assertEqual(got.params, (CHANNEL, "\x01ACTION \x02dances\x02\x01"))
        message = await bob.wait_for("message")
        self.assertEqual(message["content"], "/me dances")
        rows = await wait_until_rows(self)
        self.assertEqual(json.loads(rows[0]["message"])["content"], "/me dances")

    async def test_browser_slash_me_is_an_action_on_irc(self) -> None:
        """A web ``/me`` message is a CTCP ACTION, in the channel and as a whisper."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        irc_id = await irc_id_in(bob)
        await bob.emit("message", {"content": "/me waves", "format": {}}, 1)
        action = await irc.wait_for("PRIVMSG")
        self.assertEqual(action.params, (CHANNEL, "\x01ACTION waves\x01"))
        self.assertTrue(action.prefix.startswith("bob!"))
        await bob.emit("message", {"content": "/me whispers", "format": {},
                                   "target": {"username": "ircer", "id": irc_id, "public": 0}}, 1)
        private = await irc.wait_for("PRIVMSG")
        self.assertEqual(private.params, ("ircer", "\x01ACTION whispers\x01"))
        await bob.emit("message", {"content": "/meh not an action", "format": {}}, 1)
        plain = await irc.wait_for("PRIVMSG")
        self.assertEqual(plain.params, (CHANNEL, "/meh not an action"))

    async def test_private_action_to_a_browser_is_a_slash_me_whisper(self) -> None:
        """A private ACTION to a browser nick is a ``/me`` whisper; a CTCP VERSION is dropped."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        irc.send("PRIVMSG bob :\x01VERSION\x01")
        irc.send("PRIVMSG bob :\x01ACTION nods\x01")
        whisper = await bob.wait_for("message")
        self.assertEqual(whisper["content"], "/me nods")
        self.assertEqual(whisper["target"]["id"], 7)
        self.assertEqual(len(bob.payloads("message")), 1)

    async def test_other_ctcp_reaches_irc_members_only(self) -> None:
        """A CTCP VERSION to the channel is passed to the IRC members and is not chat."""
        await self.start()
        bob = await self.enter(7, "bob")
        alpha = await self.irc_in_room("alpha")
        beta = await self.irc_in_room("beta")
        alpha.send(f"PRIVMSG {CHANNEL} :\x01VERSION\x01")
        got = await beta.wait_for("PRIVMSG")
        self.assertEqual(got.params, (CHANNEL, "\x01VERSION\x01"))
        alpha.send(f"PRIVMSG {CHANNEL} :after")
        await bob.wait_for("message")
        self.assertEqual([m["content"] for m in bob.payloads("message")], ["after"])

    async def test_channel_notice_stays_a_notice_and_is_not_stored(self) -> None:
        """A NOTICE reaches the other IRC users as a NOTICE; browsers and the history never see it."""
        await self.start()
        bob = await self.enter(7, "bob")
        alpha = await self.irc_in_room("alpha", caps=("echo-message",))
        beta = await self.irc_in_room("beta")
        alpha.send(f"NOTICE {CHANNEL} :bot notice")
        notice = await beta.wait_for("NOTICE")
        self.assertEqual(notice.params, (CHANNEL, "bot notice"))
        self.assertTrue(notice.prefix.startswith("alpha!"))
        echo = await alpha.wait_for("NOTICE", lambda m: m.params[0] == CHANNEL)
        self.assertEqual(echo.params[1], "bot notice")
        alpha.send(f"PRIVMSG {CHANNEL} :a message")
        await bob.wait_for("message")
        self.assertEqual([m["content"] for m in bob.payloads("message")], ["a message"])
        rows = await wait_until_rows(self)
        self.assertEqual([json.loads(r["message"])["content"] for r in rows], ["a message"])
        self.assertEqual([m.params[1] for m in beta.since("PRIVMSG")], ["a message"])

    async def test_over_long_privmsg_is_one_line_for_irc_members(self) -> None:
        """A PRIVMSG that filled its 512 bytes is relayed as one (cut) line, not two."""
        await self.start()
        alpha = await self.irc_in_room("alpha")
        beta = await self.irc_in_room("beta")
        alpha.send(f"PRIVMSG {CHANNEL} :" + "x" * 600)
        alpha.send(f"PRIVMSG {CHANNEL} :next")
        await beta.wait_for("PRIVMSG", lambda m: m.params[1] == "next")
        lines = beta.since("PRIVMSG")
        self.assertEqual(len(lines), 2)
        first = lines[0]
        self.assertTrue(first.params[1].startswith("x" * 400))
        wire = [line for line in beta.raw.split(b"\r\n") if b"xxx" in line]
        self.assertEqual(len(wire), 1)
        self.assertLessEqual(len(wire[0]) + 2, 512)

    async def test_irc_nick_change_reaches_the_browser_userlist(self) -> None:
        """In open mode an IRC NICK renames the member: the browsers get a userlist with it."""
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("before")
        irc_id = await irc_id_in(bob)
        irc.send("NICK after")
        await irc.wait_for("NICK")
        users = await userlist_with(bob, lambda users: users.get(irc_id, {}).get("username") == "after")
        self.assertEqual(set(users), {7, irc_id})

    async def test_browser_rename_is_a_nick_change_on_irc(self) -> None:
        """
        A browser member logged in again under a new name (its ``renamed`` event) is a NICK
        on IRC, and WHOIS shows the new web name as realname.
        """
        await self.start()
        await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        await log_in_again_as(self, 7, "Robert Smith")
        nick = await irc.wait_for("NICK")
        self.assertTrue(nick.prefix.startswith("bob!"))
        new = nick.params[0]
        self.assertNotEqual(new, "bob")
        irc.send(f"WHOIS {new}")
        whois = await irc.wait_for("311")
        self.assertEqual(whois.params[5], "Robert Smith")
        irc.send(f"NAMES {CHANNEL}")
        names = await irc.wait_for("353")
        self.assertEqual(set(names.params[3].split()), {new, "ircer"})

    async def test_utf8_names_both_ways(self) -> None:
        """
        A web name with letters of any script keeps them in its nick (a space becomes ``_``),
        with the original name as realname; an IRC user's UTF-8 nick is their name on the web.
        """
        await self.start()
        bob = await self.enter(7, "Jürgen Müller")
        irc = await self.irc_in_room("Zoë")
        names = irc.since("353")[-1]
        self.assertEqual(set(names.params[3].split()), {"Jürgen_Müller", "Zoë"})
        irc.send(f"WHO {CHANNEL}")
        await irc.wait_for("315")
        who = {m.params[5]: m.params[7] for m in irc.since("352")}
        self.assertEqual(who["Jürgen_Müller"], "0 Jürgen Müller")
        users = await userlist_with(bob, lambda users: any(k < 0 for k in users))
        self.assertIn("Zoë", [user["username"] for user in users.values()])
        irc.send("PRIVMSG jürgen_müller :grüß dich")
        whisper = await bob.wait_for("message")
        self.assertEqual((whisper["content"], whisper["target"]["id"]), ("grüß dich", 7))
