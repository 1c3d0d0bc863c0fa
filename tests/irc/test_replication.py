"""
The IRC network's replication (``ilchat.irc.replication``) on one real server: what its IRC
users do is published on the bus topic ``irc``, and what another process publishes (delivered
to the bus as Redis would deliver it, ``LocalBus.deliver``) is shown to them: users, nicks that
change hands before the event that gave them up, a browser nick giving way, a bad event.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.trial import unittest

from ilchat.bus import BUS_VERSION
from ilchat.irc.replication import TOPIC
from tests.irc.support import capture_log, log_lines
from tests.irc.test_operators import HASH
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin

OTHER = "node-x"


def _user(nick: str, user_id: int = -900, **fields: Any) -> Dict[str, Any]:
    return {"nick": nick, "username": "u", "host": "far.example", "realname": f"Real {nick}",
            "away": None, "user_id": user_id, "account": None, "account_client": None,
            "modes": [], "signon": 1_700_000_000, "server": "irc.far", **fields}


class ReplicationTests(IrcBridgeMixin, unittest.TestCase):
    database_kind = "sqlite"
    irc_settings = {"operators": [{"name": "admin", "hash": HASH, "hosts": ["*@127.0.0.1"]}]}

    @property
    def bus(self) -> Any:
        return self.irc_components[0].context.bus

    def from_other(self, event: Dict[str, Any]) -> None:
        """An event of the process ``node-x``, as the Redis bus hands it over."""
        self.bus.deliver({"v": BUS_VERSION, "origin": OTHER, "topic": TOPIC, "event": event})

    def published(self) -> List[Dict[str, Any]]:
        """What this process publishes on the topic from now on."""
        events: List[Dict[str, Any]] = []

        def record(envelope: Dict[str, Any]) -> None:
            if envelope["origin"] == self.bus.instance:
                events.append(envelope["event"])

        self.addCleanup(self.bus.subscribe(TOPIC, record))
        return events

    async def test_local_actions_are_published_and_remote_ones_shown(self) -> None:
        await self.start()
        events = self.published()
        irc = await self.irc()
        await irc.register("local")
        irc.send("JOIN #plain")
        await irc.wait_for("366")
        irc.send("PRIVMSG #plain :hi")
        irc.send("AWAY :out")
        await irc.wait_for("306")
        self.assertEqual([e["type"] for e in events[:2]], ["irc_sync", "irc_state"])  # the start's
        del events[:2]
        self.assertEqual([e["type"] for e in events], ["irc_user", "irc_join", "irc_message", "irc_user"])
        self.assertEqual(events[1]["modes"], ["o"])
        self.assertEqual(events[3]["user"]["away"], "out")

        self.from_other({"type": "irc_user", "user": _user("faraway")})
        self.from_other({"type": "irc_join", "channel": "#plain", "nick": "faraway", "modes": [],
                         "state": None})
        join = await irc.wait_for("JOIN", lambda m: m.prefix.startswith("faraway!"))
        self.assertEqual(join.prefix, "faraway!u@far.example")
        self.from_other({"type": "irc_message", "channel": "#plain", "nick": "faraway",
                         "command": "NOTICE", "text": "from afar", "tags": {}})
        notice = await irc.wait_for("NOTICE")
        self.assertEqual(notice.params, ("#plain", "from afar"))
        irc.send("WHOIS faraway")
        server = await irc.wait_for("312")
        self.assertEqual(server.params[2:], ("irc.far", "IRC on the ilchat process node-x"))
        # What was applied is not published again.
        self.assertEqual([e["type"] for e in events][4:], [])
        self.from_other({"type": "irc_state", "users": [], "reason": "Server shutting down"})
        quit = await irc.wait_for("QUIT")
        self.assertEqual((quit.prefix, quit.params), ("faraway!u@far.example", ("Server shutting down",)))

    async def test_a_nick_given_up_elsewhere_changes_hands_before_the_event(self) -> None:
        """The cluster claim said yes: the local user has it while the peer's NICK is on its way."""
        await self.start()
        self.from_other({"type": "irc_user", "user": _user("erin")})
        irc = await self.irc()
        await irc.register("watcher")
        irc.send("WHOIS erin")
        await irc.wait_for("311")
        irc.send("NICK erin")
        renamed = await irc.wait_for("NICK")
        self.assertEqual(renamed.params, ("erin",))
        self.from_other({"type": "irc_nick", "old": "erin", "new": "erin2"})
        irc.send("WHOIS erin2")
        self.assertEqual((await irc.wait_for("311")).params[1:4], ("erin2", "u", "far.example"))
        irc.send("WHOIS erin")
        self.assertEqual((await irc.wait_for("311", lambda m: m.params[1] == "erin")).params[3],
                         "127.0.0.1")

    async def test_a_browser_nick_gives_way_to_an_irc_user_of_another_process(self) -> None:
        await self.start()
        irc = await self.irc_in_room("ircer")
        await self.enter(7, "dave")
        await irc.wait_for("JOIN", lambda m: m.prefix.startswith("dave!"))
        self.from_other({"type": "irc_user", "user": _user("Dave")})
        renamed = await irc.wait_for("NICK")
        self.assertEqual((renamed.prefix.split("!")[0], renamed.params), ("dave", ("dave_2",)))
        self.from_other({"type": "irc_join", "channel": CHANNEL, "nick": "Dave", "modes": [],
                         "state": None})
        await irc.wait_for("JOIN", lambda m: m.prefix == "Dave!u@far.example")
        irc.send(f"NAMES {CHANNEL}")
        names = await irc.wait_for("353")
        self.assertEqual(sorted(names.params[3].split()), ["Dave", "dave_2", "ircer"])

    async def test_an_event_of_the_wrong_shape_is_logged_and_dropped(self) -> None:
        await self.start()
        events = capture_log(self)
        irc = await self.irc()
        await irc.register("steady")
        self.from_other({"type": "irc_user", "user": {"nick": "half"}})
        self.from_other({"type": "irc_user", "user": _user("whole")})
        irc.send("ISON half whole")
        self.assertEqual((await irc.wait_for("303")).params[1], "whole")
        self.assertEqual(len(log_lines(events, "Dropped an IRC event of node-x")), 1)
        # Fields of another type than text (a process of another version): shown as text.
        self.from_other({"type": "irc_user", "user": _user("odd", away=5, account=7)})
        irc.send("WHOIS odd")
        away = await irc.wait_for("301")
        self.assertEqual(away.params[1:], ("odd", "5"))
        await irc.wait_for("318")

    async def test_kill_across_processes(self) -> None:
        """An operator's KILL of a user of another process is that process's to carry out."""
        await self.start()
        events = self.published()
        oper = await self.irc()
        await oper.register("oper")
        oper.send("OPER admin opersecret")
        await oper.wait_for("381")
        self.from_other({"type": "irc_user", "user": _user("victim")})
        oper.send("WHOIS victim")
        await oper.wait_for("311")
        oper.send("KILL victim :flooding")
        oper.send("PING :after")
        await oper.wait_for("PONG")
        kills = [e for e in events if e["type"] == "irc_kill"]
        self.assertEqual([(e["target"], e["instance"], e["reason"]) for e in kills],
                         [("victim", OTHER, "flooding")])

        target = await self.irc()
        await target.register("target")
        self.from_other({"type": "irc_user", "user": _user("farop", modes=["o"])})
        # A KILL of whoever held the nick before (another id): not this user.
        self.from_other({"type": "irc_kill", "nick": "farop", "prefix": "farop!u@far.example",
                         "target": "target", "user_id": -123456, "instance": self.bus.instance,
                         "reason": "not you"})
        target.send("PING :still")
        await target.wait_for("PONG")
        self.assertEqual(target.since("KILL"), [])
        self.from_other({"type": "irc_kill", "nick": "farop", "prefix": "farop!u@far.example",
                         "target": "target", "instance": self.bus.instance, "reason": "bye"})
        killed = await target.wait_for("KILL")
        self.assertEqual((killed.prefix, killed.params), ("farop!u@far.example", ("target", "bye")))
        await target.closed

    async def test_kick_from_another_process_removes_the_user_the_kicker_saw(self) -> None:
        """
        A peer's KICK names the member by user id: not whoever holds the nick now, but the one
        kicked, under its new nick if it changed it meanwhile. This process's KICKs carry the id.
        """
        await self.start()
        events = self.published()
        kid = await self.irc()
        await kid.register("kid")
        kid.send("JOIN #plain")
        await kid.wait_for("366")
        kid_id = next(e["user"]["user_id"] for e in events if e["type"] == "irc_user")
        self.from_other({"type": "irc_user", "user": _user("farop", user_id=-901)})
        self.from_other({"type": "irc_join", "channel": "#plain", "nick": "farop", "modes": ["o"],
                         "state": None})
        await kid.wait_for("JOIN", lambda m: m.prefix.startswith("farop!"))
        # A KICK of whoever held "kid" before (another id): not this user.
        self.from_other({"type": "irc_leave", "channel": "#plain", "nick": "kid", "user_id": -123456,
                         "command": "KICK", "reason": "not you", "by": "farop"})
        kid.send("PING :still")
        await kid.wait_for("PONG")
        self.assertEqual(kid.since("KICK"), [])
        # The kicker saw this user as "kid", a nick it has given up since: it is still them.
        kid.send("NICK kid2")
        await kid.wait_for("NICK")
        self.from_other({"type": "irc_leave", "channel": "#plain", "nick": "kid", "user_id": kid_id,
                         "command": "KICK", "reason": "you", "by": "farop"})
        kicked = await kid.wait_for("KICK")
        self.assertEqual((kicked.prefix.split("!")[0], kicked.params), ("farop", ("#plain", "kid2", "you")))

        other = await self.irc()
        await other.register("other")
        other.send("JOIN #plain")
        await other.wait_for("366")
        other.send("PART #plain :bye")
        await other.wait_for("PART")
        leave = [e for e in events if e["type"] == "irc_leave"][-1]
        other_id = [e["user"]["user_id"] for e in events if e["type"] == "irc_user"][-1]
        self.assertEqual((leave["nick"], leave["user_id"]), ("other", other_id))
