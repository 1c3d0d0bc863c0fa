"""
Verified identity (client.cfg ``identity``), end to end: browsers on real sockets (python-socketio
with a ``Cookie`` header, and the npm socket.io-client with ``extraHeaders``) against a whole
server on the real MariaDB, whose ILIAS-shaped database holds ``usr_session`` rows as ILIAS's
``ilSessionDBHandler`` writes them. Plus the repository chat's admission rules, which hold in
every mode.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Dict, List, Optional

from twisted.internet import reactor, utils
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from ilchat.ilias.identity import NO_COOKIE, BurstLog, parse_cookies
from ilchat.ilias.osc import OnScreenChatComponent
from tests.ilias.repository_support import RepositoryServerMixin, sleep, wait_until
from tests.ilias.test_osc import JS_DIR, NAMESPACE, OscServerMixin, Tab
from tests.support.db import insert_rows_async, make_database
from tests.support.server import DROP, RunningServer, start_server

ALICE_SID = "alicesessionid0123456789abcdef"
BOB_SID = "bobsessionid0123456789abcdef01"


def cookie(session_id: str, client_id: Optional[str] = "onscreen") -> Dict[str, str]:
    """The Cookie header a browser on the ILIAS host sends (ILIAS sets both cookies)."""
    text = f"PHPSESSID={session_id}"
    if client_id is not None:
        text += f"; ilClientId={client_id}"
    return {"Cookie": "lang=de; " + text}


async def ilias_users_and_sessions(database: Any) -> None:
    """usr_data for alice (6), bob (7), carol (8); live sessions of alice and bob, and others."""
    now = int(time.time())
    await insert_rows_async(database, "usr_data", [
        {"usr_id": 6, "login": "alice", "firstname": "Alice", "lastname": "A"},
        {"usr_id": 7, "login": "bob", "firstname": "Bob", "lastname": "B"},
        {"usr_id": 8, "login": "carol", "firstname": "Carol", "lastname": "C"},
    ])
    await insert_rows_async(database, "usr_session", [
        {"session_id": ALICE_SID, "user_id": 6, "expires": now + 3600, "ctime": now},
        {"session_id": BOB_SID, "user_id": 7, "expires": now + 3600, "ctime": now},
        {"session_id": "expiredsession0123456789", "user_id": 6, "expires": now - 1, "ctime": now - 3600},
        {"session_id": "anonymoussession01234567", "user_id": 0, "expires": now + 3600, "ctime": now},
        {"session_id": "guestsession0123456789ab", "user_id": 13, "expires": now + 3600, "ctime": now},
    ])


class OscIdentityMixin(OscServerMixin):
    """The On-Screen Chat with the default identity mode (the key left out of client.cfg)."""

    identity: Any = DROP

    async def start(self) -> RunningServer:
        self.database = make_database(self, "mysql")
        await ilias_users_and_sessions(self.database)
        await insert_rows_async(self.database, "usr_pref", [
            {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"} for u in (6, 7, 8)])
        self.server = await start_server(
            self, database=self.database, clients=[{"identity": self.identity}],
            client_components=[OnScreenChatComponent],
        )
        self.tabs: List[Tab] = []
        self.addCleanup(self._close_tabs)
        return self.server

    async def tab(self, headers: Optional[Dict[str, str]] = None, **kwargs: Any) -> Tab:
        tab = Tab(self.server, NAMESPACE, headers, **kwargs)
        self.tabs.append(tab)
        return await tab.connect()

    async def assertShutDown(self, tab: Tab) -> None:  # noqa: N802
        await tab.wait_for("shutdown")
        await wait_until(tab.disconnected.is_set, what="the server closing the socket")
        self.assertEqual(tab.payloads("login"), [])


class OscSessionTests(OscIdentityMixin, unittest.TestCase):
    """``ilias-session`` (the default): the socket is the user of its ILIAS session."""

    async def test_default_mode_is_logged_at_start(self) -> None:
        """Without the key a client runs ilias-session, and the log says so with the cookie."""
        await self.start()
        self.assertEqual(self.server.client().config.identity, "ilias-session")
        self.assertIn("identity ilias-session", self.server.log_text())
        self.assertIn("cookie PHPSESSID, ilClientId onscreen", self.server.log_text())

    async def test_live_session_binds_and_the_name_comes_from_usr_data(self) -> None:
        """A live session's user logs in (websocket and polling), named as ILIAS names them."""
        await self.start()
        alice = await self.tab(cookie(ALICE_SID))
        await alice.emit("login", 6, "Mallory the Great")
        self.assertEqual(await alice.wait_for("login"), {"id": 6, "name": "alice"})
        bob = await self.tab(cookie(BOB_SID), transports=["polling"])
        await bob.emit("login", "7", "bob")
        self.assertEqual(await bob.wait_for("login"), {"id": 7, "name": "bob"})
        # Names of others come from the database too, not from the requester's list.
        await alice.emit("conversation", [{"id": 6, "name": "x"}, {"id": 7, "name": "Evil Bob"}])
        init = await alice.wait_for("conversation-init")
        self.assertEqual(init["participants"], [{"id": 6, "name": "alice"}, {"id": 7, "name": "bob"}])
        await alice.emit("message", init["id"], 6, "hi")
        self.assertEqual((await bob.wait_for("message"))["userId"], 6)

    async def test_expired_session_is_refused(self) -> None:
        """An expired usr_session row binds nobody: shutdown, and the socket is closed."""
        await self.start()
        tab = await self.tab(cookie("expiredsession0123456789"))
        await tab.emit("login", 6, "alice")
        await self.assertShutDown(tab)
        self.assertIn("unknown, expired or not logged in", self.server.log_text())

    async def test_login_for_another_id_is_refused(self) -> None:
        """Alice's session cannot log in as bob; nothing of bob's reaches that socket."""
        await self.start()
        bob = await self.tab(cookie(BOB_SID))
        await bob.emit("login", 7, "bob")
        await bob.wait_for("login")
        tab = await self.tab(cookie(ALICE_SID))
        await tab.emit("login", 7, "bob")
        await self.assertShutDown(tab)
        self.assertIn("login of user 7", self.server.log_text())
        self.assertIn("bound to user 6", self.server.log_text())

    async def test_no_cookie_is_refused_with_the_operator_hint(self) -> None:
        """No cookie: refused, and the warning tells the operator how to deploy."""
        await self.start()
        tab = await self.tab()
        await tab.emit("login", 6, "alice")
        await self.assertShutDown(tab)
        self.assertIn(NO_COOKIE, self.server.log_text())

    async def test_anonymous_session_and_other_client_are_refused(self) -> None:
        """Sessions without a user (0) or of ILIAS's anonymous user (13), and an ilClientId of another
        client, bind nobody."""
        await self.start()
        anonymous = await self.tab(cookie("anonymoussession01234567"))
        await anonymous.emit("login", 6, "alice")
        await self.assertShutDown(anonymous)
        guest = await self.tab(cookie("guestsession0123456789ab"))
        await guest.emit("login", 13, "anonymous")
        await self.assertShutDown(guest)
        other = await self.tab(cookie(ALICE_SID, client_id="otherclient"))
        await other.emit("login", 6, "alice")
        await self.assertShutDown(other)
        self.assertIn("ilClientId cookie names another ILIAS client", self.server.log_text())

    async def test_second_login_cannot_switch_user(self) -> None:
        """After logging in as alice, the same socket asking to be bob is shut down."""
        await self.start()
        tab = await self.tab(cookie(ALICE_SID))
        await tab.emit("login", 6, "alice")
        await tab.wait_for("login")
        await tab.emit("login", 7, "bob")
        await tab.wait_for("shutdown")
        await wait_until(tab.disconnected.is_set)
        self.assertEqual(tab.payloads("login"), [{"id": 6, "name": "alice"}])
        # Bob never came online through it.
        self.assertNotIn(7, self.server.client().components[0].chat.registry.participants)

    async def test_socket_io_client_with_cookie_header(self) -> None:
        """The npm socket.io-client (extraHeaders, polling then websocket) binds the same way."""
        node = shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
            raise SkipTest("node or socket.io-client (tests/js) missing")
        await self.start()
        script = """
const { io } = require("socket.io-client");
const [url, cookie, id] = process.argv.slice(1);
const socket = io(url + "/onscreen-im", { transports: ["polling", "websocket"],
                                           extraHeaders: { Cookie: cookie }, reconnection: false });
const seen = [];
const done = (code) => { console.log(JSON.stringify(seen)); socket.close(); process.exit(code); };
setTimeout(() => done(2), 10000);
socket.onAny((event, ...args) => {
  seen.push([event, ...args]);
  if (event === "login" || event === "shutdown") setTimeout(() => done(0), 100);
});
socket.on("connect", () => socket.emit("login", Number(id), "whoever"));
"""
        results = {}
        for label, header, user in (("alice", cookie(ALICE_SID)["Cookie"], "6"),
                                    ("forged", cookie(ALICE_SID)["Cookie"], "7")):
            out, err, code = await utils.getProcessOutputAndValue(
                node, ["-e", script, self.server.base_url, header, user],
                env=dict(os.environ), path=str(JS_DIR), reactor=reactor)
            self.assertEqual(code, 0, err)
            results[label] = json.loads(out.decode().strip().splitlines()[-1])
        self.assertEqual(results["alice"][0], ["login", {"id": 6, "name": "alice"}])
        self.assertEqual(results["forged"], [["shutdown"]])


class OscTrustTests(OscIdentityMixin, unittest.TestCase):
    """``trust``: the login is believed, with a warning at start; it still cannot switch."""

    identity = "trust"

    async def test_trust_warns_and_believes_the_login(self) -> None:
        await self.start()
        log = self.server.log_text()
        self.assertIn("identity trust: any browser can act as any user", log)
        self.assertRegex(log, r"WARN\w* - onscreen: identity trust")
        tab = await self.tab()
        await tab.emit("login", 7, "Not Bob")
        # Believed without a cookie; the name is still what the database knows.
        self.assertEqual(await tab.wait_for("login"), {"id": 7, "name": "bob"})
        await tab.emit("login", 6, "alice")
        await tab.wait_for("shutdown")
        await wait_until(tab.disconnected.is_set)


class RepositoryIdentityMixin(RepositoryServerMixin):
    """The repository chat on MariaDB with the default identity mode and cookies."""

    client_settings = {"identity": DROP}

    async def start(self) -> RunningServer:
        server = await super().start()
        await ilias_users_and_sessions(self.databases["onscreen"])
        return server

    async def admit(self, user_id: int, login: str, room: int = 1) -> None:
        """PHP's part of opening a room: Connect, the chatroom_users row, EnterPrivateRoom."""
        self.assertEqual((await self.php("Connect", room, user_id)).json(), {"status": 200})
        await insert_rows_async(self.databases["onscreen"], "chatroom_users", [{
            "room_id": room, "user_id": user_id, "connected": int(time.time()),
            "userdata": json.dumps({"login": login, "id": user_id}, separators=(",", ":")),
        }])
        self.assertEqual((await self.php("EnterPrivateRoom", room, user_id)).json(), {"success": True})

    async def login(self, session_id: str, name: str, user_id: int) -> Any:
        browser = await self.browser(headers=cookie(session_id))
        await browser.emit("login", name, user_id, False)
        await browser.wait_for("loggedIn")
        return browser

    async def seated(self, browser: Any, room: int = 1) -> Any:
        await browser.emit("enterRoom", room)
        return await browser.wait_for("private_room_entered")


class RepositoryIdentityTests(RepositoryIdentityMixin, unittest.TestCase):

    async def test_name_is_the_one_php_wrote_not_the_clients(self) -> None:
        """A forged login name is ignored: everyone sees the chatroom_users login."""
        await self.start()
        await self.admit(6, "alice")
        await self.admit(7, "bob")
        bob = await self.login(BOB_SID, "bob", 7)
        await self.seated(bob)
        alice = await self.login(ALICE_SID, "The Administrator", 6)
        entered = await self.seated(alice)
        self.assertEqual(entered["subscriber"], {"id": 6, "username": "alice"})
        users = (await bob.wait_for("userlist", count=2))["users"]
        self.assertEqual(users["6"]["username"], "alice")
        await alice.emit("message", {"content": "hi", "format": {}}, 1)
        self.assertEqual((await bob.wait_for("message", "hi"))["from"]["username"], "alice")

    async def test_login_with_a_session_of_someone_else_is_shut_down(self) -> None:
        """Bob's cookie cannot log in as alice, though PHP connected alice."""
        await self.start()
        await self.admit(6, "alice")
        browser = await self.browser(headers=cookie(BOB_SID))
        await browser.emit("login", "alice", 6, False)
        await browser.wait_for("shutdown")
        await wait_until(browser.disconnected.is_set)
        self.assertEqual(browser.payloads("loggedIn"), [])

    async def test_room_never_admitted_is_refused(self) -> None:
        """Connect alone (or admission to room 1) does not open room 2."""
        await self.start()
        await self.admit(6, "alice", room=1)
        alice = await self.login(ALICE_SID, "alice", 6)
        await alice.emit("enterRoom", 2)
        await sleep(0.3)
        self.assertEqual(alice.payloads("private_room_entered"), [])
        await self.seated(alice, 1)

    async def test_kick_holds_until_php_admits_again(self) -> None:
        """A kicked user's enterRoom, or a fresh socket's, stays out; EnterPrivateRoom lets in."""
        await self.start()
        await self.admit(6, "alice")
        await self.admit(7, "bob")
        alice = await self.login(ALICE_SID, "alice", 6)
        await self.seated(alice)
        bob = await self.login(BOB_SID, "bob", 7)
        await self.seated(bob)
        self.assertEqual((await self.php("Kick", 1, 7)).json(), {"success": True})
        await bob.wait_for("userjustkicked")
        await bob.emit("enterRoom", 1)
        again = await self.login(BOB_SID, "bob", 7)
        await again.emit("enterRoom", 1)
        await sleep(0.3)
        self.assertEqual(len(bob.payloads("private_room_entered")), 1)
        self.assertEqual(again.payloads("private_room_entered"), [])
        await again.emit("message", {"content": "still here", "format": {}}, 1)
        await sleep(0.2)
        self.assertEqual(alice.payloads("message", "still here"), [])
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 7)).json(), {"success": True})
        await self.seated(again)
        await again.emit("message", {"content": "back", "format": {}}, 1)
        await alice.wait_for("message", "back")

    async def test_ban_holds_until_php_admits_again(self) -> None:
        """A banned user cannot log in or enter; PHP's Connect + EnterPrivateRoom lift it."""
        await self.start()
        await self.admit(6, "alice")
        await self.admit(7, "bob")
        bob = await self.login(BOB_SID, "bob", 7)
        await self.seated(bob)
        self.assertEqual((await self.php("Ban", 1, 7)).json(), {"success": True})
        await bob.wait_for("userjustbanned")
        retry = await self.browser(headers=cookie(BOB_SID))
        await retry.emit("login", "bob", 7, False)
        await retry.wait_for("shutdown")
        self.assertEqual((await self.php("Connect", 1, 7)).json(), {"status": 200})
        after_connect = await self.login(BOB_SID, "bob", 7)
        await after_connect.emit("enterRoom", 1)
        await sleep(0.3)
        self.assertEqual(after_connect.payloads("private_room_entered"), [])
        self.assertEqual((await self.php("EnterPrivateRoom", 1, 7)).json(), {"success": True})
        await self.seated(after_connect)

    async def test_whisper_goes_to_the_target_id_with_its_real_name(self) -> None:
        """A whisper naming "carol" but addressed to bob's id reaches bob, labelled bob."""
        await self.start()
        for user_id, login in ((6, "alice"), (7, "bob"), (8, "carol")):
            await self.admit(user_id, login)
        now = int(time.time())
        await insert_rows_async(self.databases["onscreen"], "usr_session", [
            {"session_id": "carolsession0123456789", "user_id": 8, "expires": now + 600}])
        alice = await self.login(ALICE_SID, "alice", 6)
        bob = await self.login(BOB_SID, "bob", 7)
        carol = await self.login("carolsession0123456789", "carol", 8)
        for browser in (alice, bob, carol):
            await self.seated(browser)
        target = {"username": "carol", "id": 7, "public": 0}
        await alice.emit("message", {"content": "psst", "format": {}, "target": target}, 1)
        whisper = await bob.wait_for("message", "psst")
        self.assertEqual(whisper["target"], {"username": "bob", "id": 7, "public": 0})
        await alice.wait_for("message", "psst")
        await sleep(0.2)
        self.assertEqual(carol.payloads("message", "psst"), [])


class RepositoryTrustTests(RepositoryIdentityMixin, unittest.TestCase):
    """In trust mode the admission rules and PHP's names hold all the same."""

    client_settings = {"identity": "trust"}

    async def test_trust_believes_the_login_but_not_the_name_or_the_room(self) -> None:
        await self.start()
        await self.admit(6, "alice")
        browser = await self.browser()
        await browser.emit("login", "Someone Else", 6, True)
        await browser.wait_for("loggedIn")
        await browser.emit("enterRoom", 2)
        entered = await self.seated(browser, 1)
        self.assertEqual(entered["subscriber"], {"id": 6, "username": "alice"})
        self.assertEqual(browser.payloads("private_room_entered"), [entered])


class StandaloneIdentityTests(unittest.TestCase):
    """A standalone client keeps its own name login; the identity key does not apply."""

    async def test_standalone_says_identity_does_not_apply(self) -> None:
        server = await start_server(self, clients=[{
            "name": "lobby", "identity": DROP,
            "standalone": {"title": "t", "welcome": "w", "rooms": [{"id": 1, "title": "Lobby"}]},
        }])
        self.assertIn("lobby: standalone chat, its own name login; client.cfg identity does not apply",
                      server.log_text())
        self.assertNotIn("identity ilias-session", server.log_text())


class BurstLogTests(unittest.SynchronousTestCase):
    """Refusals are logged once per burst with a count, on a fake clock."""

    def test_one_line_then_the_count(self) -> None:
        clock = Clock()
        events: List[Dict[str, Any]] = []
        log = Logger(observer=events.append)
        burst = BurstLog(clock, log, window=60)
        for _ in range(500):
            burst.warn("no-cookie", "refused {n}", n=1)
        burst.warn("other", "other reason")
        self.assertEqual([formatEvent(e) for e in events], ["refused 1", "other reason"])
        clock.advance(60)
        self.assertEqual(len(events), 3)
        self.assertEqual(events[2]["log_level"], LogLevel.warn)
        self.assertIn("499 more login refusals", formatEvent(events[2]))
        burst.warn("no-cookie", "refused {n}", n=2)
        self.assertEqual(formatEvent(events[3]), "refused 2")
        burst.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class CookieTests(unittest.SynchronousTestCase):
    def test_first_value_wins_and_spaces_are_ignored(self) -> None:
        """As PHP reads $_COOKIE: the first cookie of a name (the most specific path) wins."""
        self.assertEqual(
            parse_cookies('a=1; PHPSESSID=abc ;PHPSESSID=def; q="x y"; broken; =v'),
            {"a": "1", "PHPSESSID": "abc", "q": "x y"},
        )
        self.assertEqual(parse_cookies(None), {})
