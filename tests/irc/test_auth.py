"""
``ilias`` auth mode against the real MariaDB: SASL PLAIN and ``PASS login:password`` checked
against ``usr_data`` rows with real ``$2y$`` bcrypt hashes, bans from ``chatroom_bans``, and
kicks/bans from ILIAS removing the IRC user.
"""

from __future__ import annotations

import base64

import bcrypt
from twisted.trial import unittest

from ilchat.irc.auth import check_bcryptphp
from tests.irc.support import RawClient
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, userlist_with
from tests.support.db import insert_rows_async


def php_hash(password: str) -> str:
    """What PHP's password_hash(PASSWORD_BCRYPT) stores: a $2y$ hash (cost 4 keeps tests fast)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$", 1)


class CheckBcryptPhpTests(unittest.SynchronousTestCase):
    def test_matches_php_2y_hash(self) -> None:
        """A $2y$ hash verifies the right password only."""
        stored = php_hash("s3cret")
        self.assertTrue(check_bcryptphp("s3cret", stored))
        self.assertFalse(check_bcryptphp("wrong", stored))

    def test_password_longer_than_72_bytes_uses_first_72_like_php(self) -> None:
        """PHP's password_verify only looks at 72 bytes; so do we (bcrypt 5 would raise)."""
        stored = php_hash("x" * 72)
        self.assertTrue(check_bcryptphp("x" * 100, stored))

    def test_missing_or_foreign_hash_never_matches(self) -> None:
        """No hash, or an md5 hash, never authenticates."""
        self.assertFalse(check_bcryptphp("x", None))
        self.assertFalse(check_bcryptphp("x", "5f4dcc3b5aa765d61d8327deb882cf99"))


class IliasAuthTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_auth = "ilias"

    async def start(self):  # type: ignore[override]
        server = await super().start()
        db = self.databases["onscreen"]
        await insert_rows_async(db, "usr_data", [
            {"usr_id": 42, "login": "jdoe", "passwd": php_hash("secret"),
             "passwd_enc_type": "bcryptphp", "firstname": "J", "lastname": "Doe", "active": 1},
            {"usr_id": 43, "login": "gone", "passwd": php_hash("secret"),
             "passwd_enc_type": "bcryptphp", "firstname": "G", "lastname": "One", "active": 0},
            {"usr_id": 44, "login": "banned", "passwd": php_hash("secret"),
             "passwd_enc_type": "bcryptphp", "firstname": "B", "lastname": "Anned", "active": 1},
        ])
        await insert_rows_async(db, "chatroom_bans", [{"room_id": 1, "user_id": 44, "timestamp": 1}])
        return server

    async def sasl(self, client: RawClient, login: str, password: str) -> str:
        client.send("CAP LS 302")
        ls = await client.wait_for("CAP")
        self.assertIn("sasl=PLAIN", ls.params[2].split())
        client.send("CAP REQ :sasl")
        await client.wait_for("CAP", lambda m: m.params[1] == "ACK")
        client.send("NICK " + login)
        client.send("USER u 0 * :U")
        client.send("AUTHENTICATE PLAIN")
        await client.wait_for("AUTHENTICATE")
        payload = base64.b64encode(f"\0{login}\0{password}".encode()).decode()
        client.send("AUTHENTICATE " + payload)
        result = await client.wait_for("903|904")
        return result.command

    async def test_sasl_plain_success_uses_ilias_id_and_login(self) -> None:
        """SASL PLAIN with the right password: 900/903, registration, and usr_id 42 in the room."""
        await self.start()
        bob = await self.enter(7, "bob")
        client = await self.irc()
        self.assertEqual(await self.sasl(client, "jdoe", "secret"), "903")
        logged_in = client.since("900")[0]
        self.assertEqual(logged_in.params[2], "jdoe")
        client.send("CAP END")
        await client.wait_for("001")
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        users = await userlist_with(bob, lambda users: 42 in users)
        self.assertEqual(users[42]["username"], "jdoe")
        client.send(f"PRIVMSG {CHANNEL} :from irc")
        message = await bob.wait_for("message")
        self.assertEqual(message["from"], {"id": 42, "username": "jdoe", "profile_picture_visible": False})

    async def test_sasl_wrong_password_904_and_no_registration(self) -> None:
        """A wrong password is 904; ending CAP without any password is 464 and a close."""
        await self.start()
        client = await self.irc()
        self.assertEqual(await self.sasl(client, "jdoe", "nope"), "904")
        client.send("CAP END")
        await client.wait_for("464")
        await client.closed
        self.assertEqual(client.since("001"), [])

    async def test_three_sasl_failures_close_the_connection(self) -> None:
        """Guessing passwords costs the connection after three failures."""
        await self.start()
        client = await self.irc()
        self.assertEqual(await self.sasl(client, "jdoe", "one"), "904")
        for guess in ("two", "three"):
            client.send("AUTHENTICATE PLAIN")
            await client.wait_for("AUTHENTICATE")
            client.send("AUTHENTICATE " + base64.b64encode(f"\0jdoe\0{guess}".encode()).decode())
            await client.wait_for("904")
        error = await client.wait_for("ERROR")
        self.assertIn("Too many failed authentication attempts", error.params[0])
        await client.closed

    async def test_sasl_inactive_account_fails(self) -> None:
        """An inactive ILIAS account cannot log in."""
        await self.start()
        client = await self.irc()
        self.assertEqual(await self.sasl(client, "gone", "secret"), "904")

    async def test_pass_login_password_success(self) -> None:
        """PASS login:password registers as that ILIAS user."""
        await self.start()
        client = await self.irc()
        client.send("PASS jdoe:secret")
        await client.register("johnny")
        proto = next(iter(self.irc_components[0].factory.connections))
        self.assertEqual((proto.user_id, proto.account), (42, "jdoe"))

    async def test_pass_wrong_password_464_and_close(self) -> None:
        """A wrong PASS is ERR_PASSWDMISMATCH, then ERROR and the connection closes."""
        await self.start()
        client = await self.irc()
        client.send("PASS jdoe:wrong")
        client.send("NICK johnny")
        client.send("USER u 0 * :U")
        await client.wait_for("464")
        await client.wait_for("ERROR")
        await client.closed
        self.assertEqual(client.since("001"), [])

    async def test_unknown_login_fails(self) -> None:
        """A login that does not exist fails like a wrong password."""
        await self.start()
        client = await self.irc()
        client.send("PASS nobody:secret")
        client.send("NICK nobody")
        client.send("USER u 0 * :U")
        await client.wait_for("464")

    async def test_banned_user_cannot_join_474(self) -> None:
        """A chatroom_bans row keeps the user out of that room's channel."""
        await self.start()
        client = await self.irc()
        client.send("PASS banned:secret")
        await client.register("banned")
        client.send(f"JOIN {CHANNEL}")
        reply = await client.wait_for("474")
        self.assertEqual(reply.params[1], CHANNEL)
        client.send(f"PRIVMSG {CHANNEL} :let me in")
        await client.wait_for("404")

    async def test_ilias_kick_and_ban_remove_irc_user(self) -> None:
        """Kick from ILIAS is a KICK; after rejoining, a Ban is a KICK with the ban reason."""
        await self.start()
        client = await self.irc()
        client.send("PASS jdoe:secret")
        await client.register("johnny")
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        await self.php("Kick", 1, 42)
        kick = await client.wait_for("KICK")
        self.assertEqual(kick.params, (CHANNEL, "johnny", "Kicked from the chat room"))
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        await self.php("Ban", 1, 42)
        kick = await client.wait_for("KICK")
        self.assertEqual(kick.params, (CHANNEL, "johnny", "Banned from the chat room"))
        await insert_rows_async(self.databases["onscreen"], "chatroom_bans",
                                [{"room_id": 1, "user_id": 42, "timestamp": 2}])
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("474")

    async def test_irc_part_tells_nothing_to_browser_tab_of_same_account(self) -> None:
        """
        An IRC PART takes the IRC connection out of the room, not the account: jdoe's browser tab
        in another room gets no ``left`` notice or userlist of the parted room (PHP's
        LeavePrivateRoom would send them), and bob there sees jdoe leave.
        """
        await self.start()
        tab = await self.enter(42, "jdoe", room=2)
        bob = await self.enter(7, "bob")
        other = await self.enter(8, "other", room=2)
        client = await self.irc()
        client.send("PASS jdoe:secret")
        await client.register("johnny")
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        await userlist_with(bob, lambda users: 42 in users)
        client.send(f"PART {CHANNEL}")
        await client.wait_for("PART")
        left = await bob.wait_for("notice", "disconnected")
        self.assertEqual(left["data"]["username"], "jdoe")
        await other.emit("message", {"content": "still here?", "format": {}}, 2)
        message = await tab.wait_for("message")
        self.assertEqual(message["content"], "still here?")
        self.assertEqual(tab.payloads("notice", "left"), [])
        self.assertEqual([p["roomId"] for p in tab.payloads("userlist")
                          if str(p["roomId"]) == "1"], [])

    async def test_password_check_does_not_block_the_reactor(self) -> None:
        """While bcrypt runs (in a thread), other clients are served."""
        await self.start()
        slow = await self.irc()
        other = await self.irc()
        slow.send("PASS jdoe:secret")
        slow.send("NICK johnny")
        slow.send("USER u 0 * :U")
        other.send("PING quick")
        await other.wait_for("PONG")
        await slow.wait_for("001")
