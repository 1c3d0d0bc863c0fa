"""
IRC operators' bans in bridged rooms: ``+b <mask>`` bans the room's matching ILIAS users as an
ILIAS moderator's ban does (the ``chatroom_bans`` row PHP writes, ``userjustbanned`` in the
browsers, out of every room, ``chatroom_users`` ended), ``-b <mask>`` lifts matching bans as
ILIAS's ban list does (the rows are deleted); non-operators, and operators where
``irc.oper_ban``/``irc.oper_kick`` is false, get 482 saying why. RawClient IRC clients and
python-socketio browsers against a whole server on the real MariaDB.
"""

from __future__ import annotations

import time
from typing import Any, List

from twisted.internet import endpoints, reactor
from twisted.trial import unittest

from tests.ilias.repository_support import sleep
from tests.irc.support import RawClient
from tests.irc.test_auth import IliasUsersMixin
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, userlist_with
from tests.irc.test_operators import HASH
from tests.standalone.test_chat import lobby_browser, standalone_client
from tests.support.db import insert_rows_async
from tests.support.server import start_server

OPERATORS = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}]}


async def oper(client: Any) -> None:
    client.send("OPER admin opersecret")
    await client.wait_for("381")


class OperatorBanTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = OPERATORS

    async def bans(self) -> Any:
        return await self.rows("SELECT room_id, user_id, actor_id, timestamp, remark FROM chatroom_bans"
                               " ORDER BY room_id, user_id")

    async def test_operator_ban_is_an_ilias_ban_everywhere(self) -> None:
        """
        A non-operator's +b is 482 saying only operators ban; an operator's ``+b B?B`` (IRC
        case-mapping) bans bob as PHP's Ban does: the row PHP writes, MODE +b and KICK on IRC,
        userjustbanned for bob, user_kicked and the userlist for alice, bob's chatroom_users row
        a session, and the ban in ``MODE #room b``.
        """
        await self.start()
        await insert_rows_async(self.databases["onscreen"], "usr_data", [{"usr_id": 7, "login": "bob"}])
        alice = await self.enter(6, "alice")
        bob = await self.enter(7, "bob")
        boss = await self.irc_in_room("boss")
        watcher = await self.irc_in_room("watcher")
        boss.send(f"MODE {CHANNEL} +b B?B")
        refused = await boss.wait_for("482")
        self.assertIn("Only IRC operators may ban", refused.params[2])
        await oper(boss)
        before = int(time.time())
        boss.send(f"MODE {CHANNEL} +b B?B")
        # The KICK comes from the room's banned event, then the MODE shows the stored ban.
        mode = await watcher.wait_for("MODE")
        self.assertEqual(mode.params, (CHANNEL, "+b", "bob!*@onscreen.ilias"))
        self.assertTrue(mode.prefix.startswith("boss!"))
        self.assertEqual([m.params[:2] for m in watcher.since("KICK")], [(CHANNEL, "bob")])
        await bob.wait_for("userjustbanned")
        notice = await alice.wait_for("notice", "user_kicked")
        self.assertEqual(notice["data"], {"user": "bob"})
        await userlist_with(alice, lambda users: 7 not in users and 6 in users)
        (ban,) = await self.bans()
        self.assertEqual((ban["room_id"], ban["user_id"], ban["actor_id"], ban["remark"]), (1, 7, 0, ""))
        self.assertTrue(before <= ban["timestamp"] <= int(time.time()))
        self.assertEqual(await self.rows("SELECT user_id FROM chatroom_users WHERE user_id = 7"), [])
        self.assertEqual([r["room_id"] for r in await self.rows(
            "SELECT room_id FROM chatroom_sessions WHERE user_id = 7")], [1])
        watcher.send(f"MODE {CHANNEL} b")
        await watcher.wait_for("368")
        self.assertEqual([m.params[2] for m in watcher.since("367")], ["bob!*@onscreen.ilias"])
        self.assertEqual(alice.payloads("userjustbanned"), [])

    async def test_a_mask_matching_nobody_stores_nothing(self) -> None:
        """+b of a mask that matches nobody in the room (only someone elsewhere): a NOTICE, no row."""
        await self.start()
        await self.enter(7, "bob", room=2)
        boss = await self.irc_in_room("boss")
        await oper(boss)
        boss.send(f"MODE {CHANNEL} +b bob")
        notice = await boss.wait_for("NOTICE", lambda m: "nobody banned" in m.params[1])
        self.assertEqual(notice.params[1], f"Nobody in {CHANNEL} matches bob!*@*: nobody banned")
        boss.send(f"MODE {CHANNEL} -b bob")
        notice = await boss.wait_for("NOTICE", lambda m: "nothing lifted" in m.params[1])
        self.assertEqual(notice.params[1], f"No ban of {CHANNEL} matches bob!*@*: nothing lifted")
        self.assertEqual(await self.bans(), [])
        self.assertEqual(boss.since("MODE")[-1].params, ("boss", "+o"))

    async def test_operator_unban_deletes_the_row_and_the_user_enters_again(self) -> None:
        """
        ``-b`` with a mask that matches a ban mask deletes that row only (as ILIAS's unban);
        the user then enters the room again; other modes stay 482.
        """
        await self.start()
        await insert_rows_async(self.databases["onscreen"], "usr_data", [
            {"usr_id": 7, "login": "bob"}, {"usr_id": 9, "login": "mallory"}])
        await insert_rows_async(self.databases["onscreen"], "chatroom_bans", [
            {"room_id": 1, "user_id": 9, "timestamp": 1700000000},
            {"room_id": 2, "user_id": 7, "timestamp": 1700000000}])
        await self.enter(7, "bob")
        boss = await self.irc_in_room("boss")
        await oper(boss)
        boss.send(f"MODE {CHANNEL} +b bob")
        await boss.wait_for("KICK")
        boss.send(f"MODE {CHANNEL} -b BOB!*@onscreen.ilias")
        mode = await boss.wait_for("MODE", lambda m: m.params[1] == "-b")
        self.assertEqual(mode.params, (CHANNEL, "-b", "bob!*@onscreen.ilias"))
        self.assertEqual([(r["room_id"], r["user_id"]) for r in await self.bans()], [(1, 9), (2, 7)])
        await self.enter(7, "bob")
        names = await self.irc_names(boss)
        self.assertIn("bob", names)
        boss.send(f"MODE {CHANNEL} +m")
        self.assertIn("set in ILIAS", (await boss.wait_for("482")).params[2])

    async def irc_names(self, client: Any) -> Any:
        client.send(f"NAMES {CHANNEL}")
        return (await client.wait_for("353")).params[3].split()


class OperatorRightsOffTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "mysql"
    irc_settings = {**OPERATORS, "oper_kick": False, "oper_ban": False}

    async def test_operators_are_told_they_may_not_kick_or_ban_here(self) -> None:
        """With oper_kick and oper_ban false an operator's KICK and +b are 482 saying so; nothing changes."""
        await self.start()
        bob = await self.enter(7, "bob")
        boss = await self.irc_in_room("boss")
        await oper(boss)
        boss.send(f"KICK {CHANNEL} bob")
        refused = await boss.wait_for("482")
        self.assertIn("IRC operators may not kick in chat rooms on this server", refused.params[2])
        boss.send(f"MODE {CHANNEL} +b bob")
        refused = await boss.wait_for("482")
        self.assertIn("IRC operators may not ban in chat rooms on this server", refused.params[2])
        await sleep(0.2)
        self.assertEqual(await self.rows("SELECT * FROM chatroom_bans"), [])
        self.assertEqual(bob.payloads("userjustbanned") + bob.payloads("userjustkicked"), [])


class IliasOperatorBanTests(IliasUsersMixin, unittest.TestCase):
    irc_settings = OPERATORS

    async def ilias_irc(self, login: str) -> Any:
        client = await self.irc()
        client.send(f"PASS {login}:secret")
        await client.register(login)
        client.send(f"JOIN {CHANNEL}")
        await client.wait_for("366")
        return client

    async def test_banned_irc_user_cannot_join_until_unbanned(self) -> None:
        """
        In ``ilias`` mode an operator (jdoe, 42) bans the IRC user ``other`` (45): the row's
        actor is 42, other is out of every channel and gets 474 at JOIN until ``-b`` lifts it;
        the operator's own account is never banned by a mask that matches it.
        """
        await self.start()
        boss = await self.ilias_irc("jdoe")
        other = await self.ilias_irc("other")
        other.send("JOIN #onscreen-2")
        await other.wait_for("366")
        await oper(boss)
        boss.send(f"MODE {CHANNEL} +b *!*@127.0.0.1")
        kick = await other.wait_for("KICK")
        self.assertEqual(kick.params[:2], (CHANNEL, "other"))
        await other.wait_for("KICK", lambda m: m.params[0] == "#onscreen-2")
        rows = await self.rows("SELECT room_id, user_id, actor_id FROM chatroom_bans WHERE user_id <> 44")
        self.assertEqual(rows, [{"room_id": 1, "user_id": 45, "actor_id": 42}])
        other.send(f"JOIN {CHANNEL}")
        self.assertIn("banned", (await other.wait_for("474")).params[2])
        boss.send(f"MODE {CHANNEL} -b other")
        await boss.wait_for("MODE", lambda m: m.params[1] == "-b")
        other.send(f"JOIN {CHANNEL}")
        await other.wait_for("366")


class StandaloneBanTests(unittest.TestCase):
    timeout = 60

    async def test_the_standalone_chat_keeps_no_bans(self) -> None:
        """
        The standalone chat's users are new ids at each login: an operator's +b there is 482
        saying so (KICK instead), and nobody is banned or stored.
        """
        from ilchat.irc.service import IrcComponent
        from ilchat.standalone import StandaloneChat

        components: List[Any] = []

        def make_irc(context: Any) -> Any:
            components.append(IrcComponent(context))
            return components[0]

        server = await start_server(
            self,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open", **OPERATORS}},
            clients=[standalone_client()],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=0.6)],
            server_components=[make_irc],
        )
        browser = await lobby_browser(self, server, "Anna")
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", components[0].ports[0].getHost().port)
        boss = await endpoints.connectProtocol(endpoint, RawClient())
        self.addCleanup(boss.transport.loseConnection)
        await boss.register("boss")
        boss.send("JOIN #chat-1")
        await boss.wait_for("366")
        await oper(boss)
        boss.send("MODE #chat-1 +b Anna")
        refused = await boss.wait_for("482")
        self.assertIn("keeps no bans", refused.params[2])
        boss.send("NAMES #chat-1")
        self.assertIn("Anna", (await boss.wait_for("353")).params[3].split())
        self.assertEqual(browser.payloads("userjustbanned"), [])
