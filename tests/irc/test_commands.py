"""
Tests for L{ilchat.irc.commands}: the command table the protocol checks before dispatch.

Every command with a minimum is sent one parameter short (461 naming the command) and with exactly
its minimum (no 461); every command that needs registration is sent before it (451); the
registration commands are sent again (462). Driven through the protocol on a StringTransport with
a fake clock, and once over a real socket.
"""

from typing import Any, List, Tuple

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ilchat.irc import numerics
from ilchat.irc.commands import COMMANDS, SUMMARIES
from ilchat.irc.message import Message, parse_message
from ilchat.irc.network import IrcNetwork
from ilchat.irc.protocol import IRCServerProtocol
from tests.irc.support import capture_log, log_lines, make_config, start_irc

#: What RFC 2812 and the modern ircdocs ask of each command, written down independently of the
#: table so that a change to the table has to change this too.
MIN_PARAMS = {
    "CAP": 1,
    "BATCH": 1,  # IRCv3 batch: the reference
    "CHATHISTORY": 3,  # draft/chathistory: subcommand, target or times, and more
    "PASS": 1,
    "USER": 4,
    "AUTHENTICATE": 1,
    "WEBIRC": 4,
    "JOIN": 1,
    "PART": 1,
    "TOPIC": 1,
    "MODE": 1,
    "KICK": 2,
    "INVITE": 2,
    "SETNAME": 1,
    "OPER": 2,
    "KILL": 2,
    "WALLOPS": 1,
}
BEFORE_REGISTRATION = {"CAP", "PASS", "NICK", "USER", "AUTHENTICATE", "WEBIRC", "PING", "PONG", "QUIT"}

#: Parameters each command may be sent with: enough for the table, harmless for the handler.
SAMPLE_PARAMS = {
    "CAP": ("LIST",),
    "BATCH": ("+ref", "draft/multiline", "#room"),
    "CHATHISTORY": ("LATEST", "#room", "*", "10"),
    "PASS": ("secret",),
    "USER": ("u", "0", "*", "Real"),
    "AUTHENTICATE": ("PLAIN",),
    "WEBIRC": ("pw", "gateway", "host.example", "203.0.113.9"),
    "JOIN": ("#room",),
    "PART": ("#room",),
    "TOPIC": ("#room",),
    "MODE": ("#room",),
    "KICK": ("#room", "nobody"),
    "INVITE": ("nobody", "#room"),
    "SETNAME": ("New Name",),
    "OPER": ("admin", "wrong"),
    "KILL": ("nobody", "reason"),
    "WALLOPS": ("hello",),
}


def _line(command: str, params: Tuple[str, ...]) -> bytes:
    """The command with its parameters, the last one as a trailing parameter."""
    parts = [command, *params[:-1]]
    if params:
        parts.append(":" + params[-1])
    return " ".join(parts).encode() + b"\r\n"


class CommandTableTests(SynchronousTestCase):
    def _connect(self, registered: bool, **overrides: Any) -> Tuple[IRCServerProtocol, StringTransport]:
        clock = task.Clock()
        network = IrcNetwork(make_config(**overrides), clock)
        proto = IRCServerProtocol(network, clock)
        transport = StringTransport()
        proto.makeConnection(transport)
        self.addCleanup(proto.connectionLost, None)
        if registered:
            proto.dataReceived(b"NICK tester\r\nUSER t 0 * :Tester\r\n")
            self.assertTrue(proto.registered)
        transport.clear()
        return proto, transport

    def _replies(self, transport: StringTransport) -> List[Message]:
        return [parse_message(line.decode()) for line in transport.value().split(b"\r\n") if line]

    def test_table_matches_what_the_rfcs_ask(self) -> None:
        """The minimums and the pre-registration set are the ones written down above."""
        self.assertEqual({c.name: c.min_params for c in COMMANDS.values() if c.min_params}, MIN_PARAMS)
        self.assertEqual({c.name for c in COMMANDS.values() if c.before_registration}, BEFORE_REGISTRATION)
        self.assertEqual({c.name for c in COMMANDS.values() if c.once}, {"PASS", "USER"})
        self.assertEqual({c.name for c in COMMANDS.values() if c.nonempty}, {"JOIN", "PART", "USER"})

    def test_every_handler_has_a_row_and_every_row_a_handler(self) -> None:
        """No irc_<COMMAND> method is reachable around the table, and no row lacks its method."""
        handlers = {name[4:] for name in dir(IRCServerProtocol) if name.startswith("irc_")}
        self.assertEqual(handlers, set(COMMANDS))
        self.assertTrue(all(name == COMMANDS[name].name for name in COMMANDS))
        self.assertEqual(set(SUMMARIES), set(COMMANDS))  # HELP knows every command

    def test_one_parameter_short_is_461_naming_the_command(self) -> None:
        """Each command with a minimum, sent one parameter short, is answered 461 and nothing else."""
        for name, minimum in MIN_PARAMS.items():
            registered = not COMMANDS[name].before_registration
            proto, transport = self._connect(registered)
            target = "tester" if registered else "*"
            proto.dataReceived(_line(name, SAMPLE_PARAMS[name][: minimum - 1]))
            replies = self._replies(transport)
            self.assertEqual(
                [(m.command, m.params) for m in replies],
                [(numerics.ERR_NEEDMOREPARAMS, (target, name, "Not enough parameters"))],
                name,
            )
            self.assertEqual(replies[0].prefix, "irc.test")

    def test_after_registration_the_minimum_holds_too(self) -> None:
        """CAP, AUTHENTICATE and WEBIRC one parameter short get 461 after registration as well."""
        for name in ("CAP", "AUTHENTICATE", "WEBIRC"):
            proto, transport = self._connect(registered=True)
            proto.dataReceived(_line(name, SAMPLE_PARAMS[name][: MIN_PARAMS[name] - 1]))
            self.assertEqual(
                [(m.command, m.params) for m in self._replies(transport)],
                [(numerics.ERR_NEEDMOREPARAMS, ("tester", name, "Not enough parameters"))],
                name,
            )

    def test_the_minimum_is_enough(self) -> None:
        """With exactly its minimum a command reaches its handler: no 461 (the handler answers)."""
        for name, minimum in MIN_PARAMS.items():
            proto, transport = self._connect(registered=not COMMANDS[name].before_registration)
            proto.dataReceived(_line(name, SAMPLE_PARAMS[name][:minimum]))
            commands = [m.command for m in self._replies(transport)]
            self.assertNotIn(numerics.ERR_NEEDMOREPARAMS, commands, name)
            self.assertNotIn(numerics.ERR_NOTREGISTERED, commands, name)
        # USER with its four parameters (and a nick) registers; PASS is stored without a reply.
        proto, transport = self._connect(registered=False)
        proto.dataReceived(b"PASS :secret\r\nNICK later\r\n" + _line("USER", SAMPLE_PARAMS["USER"]))
        self.assertEqual(self._replies(transport)[0].command, numerics.RPL_WELCOME)

    def test_an_empty_required_parameter_counts_as_missing(self) -> None:
        """``JOIN :``, ``PART :`` and ``USER u 0 * :`` are 461; ``KICK #room :`` reaches KICK."""
        for line, registered, command in (
            (b"JOIN :\r\n", True, "JOIN"),
            (b"PART :\r\n", True, "PART"),
            (b"USER u 0 * :\r\n", False, "USER"),
        ):
            proto, transport = self._connect(registered)
            proto.dataReceived(line)
            self.assertEqual(
                [(m.command, m.params[1:]) for m in self._replies(transport)],
                [(numerics.ERR_NEEDMOREPARAMS, (command, "Not enough parameters"))],
            )
        proto, transport = self._connect(registered=True)
        proto.dataReceived(b"KICK #room :\r\n")
        self.assertEqual(
            [(m.command, m.params[1:]) for m in self._replies(transport)],
            [(numerics.ERR_NOSUCHCHANNEL, ("#room", "No such channel"))],
        )

    def test_commands_that_need_registration_are_451_before_it(self) -> None:
        """Every command not allowed before registration, and an unknown one, is 451 and not run."""
        needs_registration = sorted(set(COMMANDS) - BEFORE_REGISTRATION) + ["FOO"]
        self.assertGreater(len(needs_registration), 10)
        for name in needs_registration:
            proto, transport = self._connect(registered=False)
            proto.dataReceived(_line(name, ("#room", "nick", "x", "text")))
            self.assertEqual(
                [(m.command, m.params) for m in self._replies(transport)],
                [(numerics.ERR_NOTREGISTERED, ("*", "You have not registered"))],
                name,
            )
            self.assertEqual(proto.network.channels, {}, name)

    def test_registration_commands_are_run_before_registration(self) -> None:
        """The pre-registration commands never get 451."""
        for name in sorted(BEFORE_REGISTRATION):
            proto, transport = self._connect(registered=False)
            proto.dataReceived(_line(name, SAMPLE_PARAMS.get(name, ("x",))))
            commands = [m.command for m in self._replies(transport)]
            self.assertNotIn(numerics.ERR_NOTREGISTERED, commands, name)
        proto, transport = self._connect(registered=False)
        proto.dataReceived(b"PING :token\r\n")
        self.assertEqual(self._replies(transport)[0].params, ("irc.test", "token"))

    def test_unknown_command_after_registration_is_421(self) -> None:
        """A command that is not in the table is 421 with its name."""
        proto, transport = self._connect(registered=True)
        proto.dataReceived(b"FOO bar\r\n")
        self.assertEqual(
            [(m.command, m.params) for m in self._replies(transport)],
            [(numerics.ERR_UNKNOWNCOMMAND, ("tester", "FOO", "Unknown command"))],
        )

    def test_pass_and_user_again_are_462(self) -> None:
        """PASS and USER after registration, and USER twice before it, are 462 (even when short)."""
        for line in (b"PASS :again\r\n", b"PASS\r\n", b"USER a b c :d\r\n", b"USER a\r\n"):
            proto, transport = self._connect(registered=True)
            proto.dataReceived(line)
            self.assertEqual(
                [(m.command, m.params) for m in self._replies(transport)],
                [(numerics.ERR_ALREADYREGISTERED, ("tester", "You may not reregister"))],
            )
        proto, transport = self._connect(registered=False)
        proto.dataReceived(b"CAP LS 302\r\nUSER a b c :d\r\nUSER e\r\n")
        self.assertEqual(
            [m.command for m in self._replies(transport)], ["CAP", numerics.ERR_ALREADYREGISTERED]
        )
        self.assertEqual(proto.username, "a")

    def test_a_failing_handler_is_logged_and_the_connection_goes_on(self) -> None:
        """An exception in a handler is one log line; the next line of the client still runs."""
        events = capture_log(self)
        proto, transport = self._connect(registered=True)

        def broken(message: Message) -> None:
            raise RuntimeError("boom")

        proto.irc_AWAY = broken  # type: ignore[method-assign]
        proto.dataReceived(b"AWAY :gone\r\nPING :after\r\n")
        self.assertEqual([m.command for m in self._replies(transport)], ["PONG"])
        self.assertEqual(len(log_lines(events, "Error handling AWAY from 192.168.1.1")), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CommandTableSocketTests(TestCase):
    async def test_461_and_451_over_a_real_socket(self) -> None:
        """The same answers reach a client over TCP, in the order the lines were sent."""
        server = await start_irc(self)
        early = await server.client(self)
        early.send("KICK #room")
        reply = await early.wait_for(numerics.ERR_NOTREGISTERED)
        self.assertEqual(reply.params, ("*", "You have not registered"))
        client = await server.registered(self, "alice")
        for name, minimum in MIN_PARAMS.items():
            if COMMANDS[name].before_registration:
                continue
            client.send_raw(_line(name, SAMPLE_PARAMS[name][: minimum - 1]))
            reply = await client.wait_for(numerics.ERR_NEEDMOREPARAMS)
            self.assertEqual(reply.params, ("alice", name, "Not enough parameters"))
        client.send("USER a b c :d")
        reply = await client.wait_for(numerics.ERR_ALREADYREGISTERED)
        self.assertEqual(reply.params, ("alice", "You may not reregister"))
