"""
IRC operators (OPER with server.cfg operator blocks, KILL, WALLOPS) and operators in bridged
rooms: their KICK is an ILIAS moderator's kick, everywhere; the rooms' bans are the +b list
(their +b/-b: tests.irc.test_operator_bans).
"""

from typing import Any

from twisted.trial.unittest import TestCase

from ilchat.config import IrcLoginLimits, IrcOperator
from tests.irc.support import capture_log, log_lines, make_config, start_irc
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin, irc_id_in
from tests.support.db import insert_rows_async

#: bcrypt of "opersecret" (cost 4: the tests need not be slow).
HASH = "$2b$04$KcltUbH8URhannbriLgTteczCkMI2bvSQkMdIEH/eEkMumMbLrLim"
OPERATORS = (
    IrcOperator(name="admin", password_hash=HASH, hosts=("*@127.0.0.1",)),
    IrcOperator(name="remote", password_hash=HASH, hosts=("*@192.0.2.*",)),
)


async def operator_server(test: Any) -> Any:
    return await start_irc(test, make_config(operators=OPERATORS))


class OperTests(TestCase):
    async def test_oper_with_the_right_password_from_an_allowed_host(self) -> None:
        """381 and MODE +o; WHOIS 313, WHO ``*``; wrong password 464; other host 491."""
        server = await operator_server(self)
        events = capture_log(self)
        client = await server.registered(self, "boss")
        client.send("OPER admin wrong")
        await client.wait_for("464")
        client.send("OPER remote opersecret")
        await client.wait_for("491")
        client.send("OPER nobody opersecret")
        await client.wait_for("491")
        client.send("OPER admin opersecret")
        await client.wait_for("381")
        changed = await client.wait_for("MODE")
        self.assertEqual(changed.params, ("boss", "+o"))
        other = await server.registered(self, "other")
        other.send("WHOIS boss")
        await other.wait_for("313")
        other.send("WHO boss")
        self.assertEqual((await other.wait_for("352")).params[6], "H*")
        self.assertTrue(log_lines(events, "is now IRC operator admin"))
        client.send("MODE boss -o")
        self.assertEqual((await client.wait_for("MODE")).params, ("boss", "-o"))
        client.send("MODE boss +o")
        client.send("WHOIS boss")
        await client.wait_for("318")
        self.assertEqual(client.since("313"), [])

    async def test_failed_opers_are_throttled(self) -> None:
        """OPER goes through the failed-login throttle: past the limit even the right password fails."""
        config = make_config(operators=OPERATORS,
                             login_limits=IrcLoginLimits(delay=0.0, failures_per_account=3))
        server = await start_irc(self, config)
        client = await server.registered(self, "guesser")
        for _ in range(3):
            client.send("OPER admin wrong")
            await client.wait_for("464")
        client.send("OPER admin opersecret")
        refused = await client.wait_for("464")
        self.assertIn("Too many failed logins; try again in", refused.params[1])
        self.assertNotIn("o", server.network.find_user("guesser").user_modes)

    async def test_kill_and_wallops_need_an_operator(self) -> None:
        """
        KILL and WALLOPS are 481 for others; an operator's KILL closes the target (others see
        its QUIT), WALLOPS reaches +w users only.
        """
        server = await operator_server(self)
        boss = await server.registered(self, "boss")
        victim = await server.registered(self, "victim")
        listener = await server.registered(self, "listener")
        for client in (boss, victim, listener):
            client.send("JOIN #all")
            await client.wait_for("366")
        victim.send("KILL boss :no")
        await victim.wait_for("481")
        victim.send("WALLOPS :hi")
        await victim.wait_for("481")
        listener.send("MODE listener +w")
        await listener.wait_for("MODE")
        boss.send("OPER admin opersecret")
        await boss.wait_for("381")
        boss.send("WALLOPS :maintenance at noon")
        wallops = await listener.wait_for("WALLOPS")
        self.assertEqual(wallops.params, ("maintenance at noon",))
        self.assertTrue(wallops.prefix.startswith("boss!"))
        boss.send("KILL nobody :x")
        await boss.wait_for("401")
        boss.send("KILL victim :spamming")
        kill = await victim.wait_for("KILL")
        self.assertEqual(kill.params, ("victim", "spamming"))
        error = await victim.wait_for("ERROR")
        self.assertIn("Killed (boss (spamming))", error.params[0])
        await victim.closed
        quit = await listener.wait_for("QUIT")
        self.assertTrue(quit.prefix.startswith("victim!"))
        self.assertEqual(victim.since("WALLOPS"), [])


class BridgedOperatorTests(IrcBridgeMixin, TestCase):
    database_kind = "mysql"
    irc_settings = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}]}

    async def test_operator_kick_is_a_moderator_kick_everywhere(self) -> None:
        """
        Without OPER a KICK in a chat room is 482; an operator's KICK takes the browser member
        out of the room for everyone (ILIAS's userjustkicked), and an IRC member out too.
        """
        await self.start()
        bob = await self.enter(7, "bob")
        alice = await self.enter(6, "alice")
        boss = await self.irc_in_room("boss")
        other = await self.irc_in_room("other")
        await irc_id_in(bob)
        boss.send(f"KICK {CHANNEL} bob :behave")
        refused = await boss.wait_for("482")
        self.assertIn("Only IRC operators may kick", refused.params[2])
        boss.send("OPER admin opersecret")
        await boss.wait_for("381")
        boss.send(f"KICK {CHANNEL} bob :behave")
        kick = await other.wait_for("KICK")
        self.assertEqual(kick.params[:2], (CHANNEL, "bob"))
        await bob.wait_for("userjustkicked")
        await alice.wait_for("notice", "user_kicked")
        boss.send(f"KICK {CHANNEL} other")
        kicked = await other.wait_for("KICK", lambda m: m.params[1] == "other")
        self.assertEqual(kicked.params[0], CHANNEL)
        other.send(f"PRIVMSG {CHANNEL} :still here?")
        await other.wait_for("404")

    async def test_room_modes_bans_and_invite(self) -> None:
        """MODE #room b lists ILIAS's bans; changing a room's modes or INVITE is 482 with why."""
        await self.start()
        await insert_rows_async(self.databases["onscreen"], "usr_data", [
            {"usr_id": 9, "login": "mallory"}, {"usr_id": 10, "login": "eve smith"}])
        await insert_rows_async(self.databases["onscreen"], "chatroom_bans", [
            {"room_id": 1, "user_id": 9, "timestamp": 1700000000},
            {"room_id": 1, "user_id": 10, "timestamp": 1700000001},
            {"room_id": 2, "user_id": 11, "timestamp": 1700000002}])
        irc = await self.irc_in_room("ircer")
        irc.send(f"MODE {CHANNEL} b")
        await irc.wait_for("368")
        self.assertEqual([m.params[1:] for m in irc.since("367")], [
            (CHANNEL, "mallory!*@onscreen.ilias", "ILIAS", "1700000000"),
            (CHANNEL, "eve_smith!*@onscreen.ilias", "ILIAS", "1700000001")])
        irc.send(f"MODE {CHANNEL} +b someone")
        refused = await irc.wait_for("482")
        self.assertIn("Only IRC operators may ban", refused.params[2])
        irc.send(f"MODE {CHANNEL} +i")
        refused = await irc.wait_for("482")
        self.assertIn("set in ILIAS", refused.params[2])
        await self.enter(7, "bob")
        irc.send("INVITE bob " + CHANNEL)
        self.assertIn("ILIAS", (await irc.wait_for("482")).params[2])
