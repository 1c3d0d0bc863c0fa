"""
``ilias`` auth mode against the real MariaDB: SASL PLAIN and ``PASS login:password`` checked
against ``usr_data`` rows with real ``$2y$`` bcrypt hashes, bans from ``chatroom_bans``, and
kicks/bans from ILIAS removing the IRC user.
"""

from __future__ import annotations

import base64
from typing import Any, List, Tuple

import bcrypt
from twisted.internet import defer, endpoints, reactor, task
from twisted.trial import unittest
from twisted.words.protocols import irc

from ilchat.config import IrcLoginLimits
from ilchat.irc.auth import IliasAuthenticator, check_bcryptphp
from ilchat.irc.message import Message
from tests.irc.support import RawClient, capture_log, log_lines, make_config, start_irc
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, userlist_with
from tests.support.db import StoreTestMixin, insert_rows_async


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


async def insert_ilias_users(db: Any) -> None:
    """ILIAS accounts with bcryptphp hashes: jdoe and other (active), gone (inactive), banned."""
    await insert_rows_async(db, "usr_data", [
        {"usr_id": 42, "login": "jdoe", "passwd": php_hash("secret"),
         "passwd_enc_type": "bcryptphp", "firstname": "J", "lastname": "Doe", "active": 1},
        {"usr_id": 43, "login": "gone", "passwd": php_hash("secret"),
         "passwd_enc_type": "bcryptphp", "firstname": "G", "lastname": "One", "active": 0},
        {"usr_id": 44, "login": "banned", "passwd": php_hash("secret"),
         "passwd_enc_type": "bcryptphp", "firstname": "B", "lastname": "Anned", "active": 1},
        {"usr_id": 45, "login": "other", "passwd": php_hash("secret"),
         "passwd_enc_type": "bcryptphp", "firstname": "O", "lastname": "Ther", "active": 1},
    ])
    await insert_rows_async(db, "chatroom_bans", [{"room_id": 1, "user_id": 44, "timestamp": 1}])


class IliasUsersMixin(IrcBridgeMixin):
    """A bridged server on MariaDB whose IRC users log in against usr_data (the users above)."""

    database_kind = "mysql"
    irc_auth = "ilias"

    async def start(self):  # type: ignore[override]
        server = await super().start()
        await insert_ilias_users(self.databases["onscreen"])
        return server


class IliasAuthTests(IliasUsersMixin, unittest.TestCase):
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
        """PASS login:password registers as that ILIAS user; the log line names the account."""
        events = capture_log(self)
        await self.start()
        client = await self.irc()
        client.send("PASS jdoe:secret")
        await client.register("johnny")
        proto = next(iter(self.irc_components[0].factory.connections))
        self.assertEqual((proto.user_id, proto.account), (42, "jdoe"))
        self.assertEqual(log_lines(events, "logged in to IRC"),
                         ["johnny (jdoe, 42, onscreen) logged in to IRC from 127.0.0.1 over plain TCP"])

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
        """Kick from ILIAS is a KICK; after rejoining, a Ban is a KICK with the ban reason (both logged)."""
        events = capture_log(self)
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
        self.assertEqual(log_lines(events, f"removed from {CHANNEL}"), [
            f"IRC user johnny (jdoe) removed from {CHANNEL} (127.0.0.1): Kicked from the chat room",
            f"IRC user johnny (jdoe) removed from {CHANNEL} (127.0.0.1): Banned from the chat room",
        ])
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


class PassClient(irc.IRCClient):
    """Twisted's IRC client logging in with ``PASS login:password``; C{result} fires with the outcome."""

    def __init__(self, nickname: str, password: str) -> None:
        self.nickname = nickname
        self.password = password
        self.result: defer.Deferred = defer.Deferred()

    def signedOn(self) -> None:
        if not self.result.called:
            self.result.callback(("welcome", ""))

    def irc_ERR_PASSWDMISMATCH(self, prefix: str, params: List[str]) -> None:
        if not self.result.called:
            self.result.callback(("464", params[-1]))


async def pass_login(port: int, login: str, password: str, source: str = "127.0.0.1") -> Tuple[str, str]:
    """One connection of Twisted's IRCClient from C{source}: ("welcome", "") or ("464", text)."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    client = await endpoints.connectProtocol(endpoint, PassClient("guesser", f"{login}:{password}"))
    closed: defer.Deferred = defer.Deferred()
    lost = client.connectionLost
    client.connectionLost = lambda reason: (lost(reason), closed.callback(None))  # type: ignore[method-assign]
    try:
        return await client.result.addTimeout(10, reactor)
    finally:
        client.transport.loseConnection()
        await closed


async def sasl_login(port: int, login: str, password: str, source: str = "127.0.0.1") -> Message:
    """One SASL PLAIN attempt on a fresh connection; the 903 or 904 that answers it."""
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    client = await endpoints.connectProtocol(endpoint, RawClient())
    try:
        client.send("CAP REQ :sasl")
        await client.wait_for("CAP")
        client.send("AUTHENTICATE PLAIN")
        await client.wait_for("AUTHENTICATE")
        client.send("AUTHENTICATE " + base64.b64encode(f"\0{login}\0{password}".encode()).decode())
        return await client.wait_for("903|904")
    finally:
        client.transport.loseConnection()
        await client.closed


class LoginThrottleTests(IrcBridgeMixin, unittest.TestCase):
    """The failed-login throttle in front of real bcrypt checks of MariaDB ``usr_data`` rows."""

    database_kind = "mysql"
    irc_auth = "ilias"
    irc_limits = {"login_free_failures": 1, "login_delay": 0.2, "login_max_delay": 5,
                  "login_failures_per_account": 4, "login_failures_per_ip": 8, "login_lockout": 1.5}

    async def start(self):  # type: ignore[override]
        server = await super().start()
        await insert_ilias_users(self.databases["onscreen"])
        self.port = self.irc_components[0].ports[0].getHost().port
        return server

    async def test_guess_after_the_limit_is_refused_even_with_the_right_password(self) -> None:
        """Four wrong PASS guesses; the fifth, right, is refused with "try again"; then it works."""
        await self.start()
        for guess in ("a", "b", "c", "d"):
            self.assertEqual(await pass_login(self.port, "jdoe", guess), ("464", "Password incorrect"))
        outcome, text = await pass_login(self.port, "jdoe", "secret")
        self.assertEqual(outcome, "464")
        self.assertRegex(text, r"^Too many failed logins; try again in [12] seconds?$")
        reply = await sasl_login(self.port, "jdoe", "secret")
        self.assertEqual(reply.command, "904")
        self.assertIn("try again in", reply.params[-1])
        await task.deferLater(reactor, 1.6, lambda: None)  # login_lockout is 1.5 s
        self.assertEqual(await pass_login(self.port, "jdoe", "secret"), ("welcome", ""))

    async def test_delay_grows_with_each_failure(self) -> None:
        """After the free failure every answer waits longer: 0.2 s, 0.4 s, 0.8 s."""
        await self.start()
        times = []
        for _ in range(4):
            started = reactor.seconds()
            reply = await sasl_login(self.port, "jdoe", "wrong")
            self.assertEqual(reply.command, "904")
            times.append(reactor.seconds() - started)
        # Lower bounds are exact (the delays are minimums); the free failure is only compared.
        self.assertLess(times[0], times[1])
        self.assertGreaterEqual(times[1], 0.2)
        self.assertGreaterEqual(times[2], 0.4)
        self.assertGreaterEqual(times[3], 0.8)
        self.assertLess(times[1], times[2])
        self.assertLess(times[2], times[3])

    async def test_other_address_and_other_account_are_unaffected(self) -> None:
        """While jdoe is locked from 127.0.0.1, 127.0.0.2 logs in as jdoe and 127.0.0.1 as other."""
        await self.start()
        for guess in ("a", "b", "c", "d"):
            await pass_login(self.port, "jdoe", guess)
        self.assertEqual((await pass_login(self.port, "jdoe", "secret"))[0], "464")
        self.assertEqual(await pass_login(self.port, "jdoe", "secret", source="127.0.0.2"), ("welcome", ""))
        self.assertEqual(await pass_login(self.port, "other", "secret"), ("welcome", ""))
        self.assertEqual((await sasl_login(self.port, "jdoe", "secret", source="127.0.0.3")).command, "903")

    async def test_success_resets_the_accounts_count_for_that_address(self) -> None:
        """Three failures, a success, three more: never locked, and the delay starts over."""
        await self.start()
        for _ in range(3):
            await sasl_login(self.port, "jdoe", "wrong")
        self.assertEqual((await sasl_login(self.port, "jdoe", "secret")).command, "903")
        started = reactor.seconds()
        self.assertEqual((await sasl_login(self.port, "jdoe", "wrong")).command, "904")
        self.assertLess(reactor.seconds() - started, 0.6)  # without the reset: 0.8 s
        for _ in range(2):
            await sasl_login(self.port, "jdoe", "wrong")
        self.assertEqual((await sasl_login(self.port, "jdoe", "secret")).command, "903")

    async def test_one_log_line_per_burst(self) -> None:
        """Four failures and three refusals log two lines: the first failure and the lock."""
        events = capture_log(self)
        await self.start()
        for _ in range(4):
            await pass_login(self.port, "jdoe", "wrong")
        for _ in range(3):
            await pass_login(self.port, "jdoe", "secret")
        self.assertEqual(len(log_lines(events, "Failed IRC login")), 1)
        locks = log_lines(events, "failed IRC logins")
        self.assertEqual(len(locks), 1)
        self.assertRegex(locks[0], r"^4 failed IRC logins from 127\.0\.0\.1 for 'jdoe' in \d+ s; locked for 1.5 s$")


class LoginThrottleClockTests(StoreTestMixin, unittest.TestCase):
    """The lock of a long lockout ends on the clock: a fake one, with real bcrypt and MariaDB."""

    database_kind = "mysql"

    async def test_lock_ends_after_the_lockout(self) -> None:
        """Refused during the 300 s lockout, even with the right password; accepted after it."""
        await insert_ilias_users(self.database)
        clock = task.Clock()
        authenticator = IliasAuthenticator([("onscreen", self.store)], reactor)
        limits = IrcLoginLimits(delay=0.0, failures_per_account=3, lockout=300.0)
        server = await start_irc(self, make_config(auth="ilias", login_limits=limits), authenticator, clock)
        port = server.port.getHost().port
        for _ in range(3):
            self.assertEqual((await sasl_login(port, "jdoe", "wrong")).command, "904")
        clock.advance(299)
        refused = await sasl_login(port, "jdoe", "secret")
        self.assertEqual(refused.params[-1],
                         "SASL authentication failed: Too many failed logins; try again in 1 second")
        clock.advance(1)
        self.assertEqual((await sasl_login(port, "jdoe", "secret")).command, "903")
