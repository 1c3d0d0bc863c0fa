"""
Issue 16 audit: 001-005 say what ilchat does. Every ISUPPORT token is one the server keeps (a
test for each), the server name, the network name and the MOTD come from server.cfg and its
file, and the README's IRC section names the commands, modes and capabilities the server has.

Raw line clients on a real listener for the exact replies; the ``irc`` package (jaraco) against a
whole server started from its server.cfg.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Tuple

from twisted.internet import reactor, threads
from twisted.trial.unittest import TestCase

from ilchat.irc.auth import IliasAuthenticator
from ilchat.irc.protocol import IRCServerProtocol
from tests.irc.support import RawClient, start_irc
from tests.standalone.test_chat import standalone_client
from tests.support.server import start_server

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.rst")

#: Every token 005 may carry; a new one needs a test here of what it promises.
ADVERTISED = {"CHANTYPES", "PREFIX", "CASEMAPPING", "UTF8ONLY", "NICKLEN", "CHANNELLEN", "TOPICLEN",
              "NETWORK", "CHANMODES", "EXCEPTS", "INVEX", "CHANLIMIT", "MODES", "TARGMAX", "AWAYLEN",
              "KICKLEN", "CHATHISTORY", "MSGREFTYPES", "NAMELEN"}


def isupport(client: RawClient) -> Dict[str, str]:
    """The 005 tokens the client got, as name → value ("" for a token without one)."""
    tokens: Dict[str, str] = {}
    for line in client.since("005"):
        for token in line.params[1:-1]:
            name, _, value = token.partition("=")
            tokens[name] = value
    return tokens


async def joined(client: RawClient, channel: str) -> None:
    client.send(f"JOIN {channel}")
    await client.wait_for("366", lambda m: m.params[1] == channel)


async def synced(client: RawClient) -> None:
    """Everything the server had to say to what the client sent so far has arrived."""
    client.send("PING audit")
    await client.wait_for("PONG")


class IsupportTokenTests(TestCase):
    """005 advertises exactly the tokens above, each with the value the server keeps."""

    async def test_the_tokens_are_exactly_the_known_ones(self) -> None:
        server = await start_irc(self)
        client = await server.registered(self, "asker")
        tokens = isupport(client)
        self.assertEqual(set(tokens), ADVERTISED)
        self.assertEqual(tokens["CHANMODES"], "beI,k,l,imnst")
        self.assertEqual((tokens["PREFIX"], tokens["CASEMAPPING"], tokens["UTF8ONLY"]),
                         ("(ov)@+", "rfc8265", ""))
        self.assertEqual(tokens["NETWORK"], "TestNet")
        self.assertEqual(client.since("004")[0].params[1], "irc.test")

    async def test_chantypes_nicklen_and_channellen(self) -> None:
        """Only ``#`` channels; a nick of NICKLEN characters is taken, one more is 432; same for CHANNELLEN."""
        server = await start_irc(self)
        client = await server.registered(self, "lengths")
        tokens = isupport(client)
        client.send("JOIN &local")
        self.assertEqual((await client.wait_for("403")).params[1], "&local")
        longest = "#" + "c" * (int(tokens["CHANNELLEN"]) - 1)
        await joined(client, longest)
        client.send("JOIN " + longest + "c")
        self.assertEqual((await client.wait_for("403")).params[1], longest + "c")
        nick_length = int(tokens["NICKLEN"])
        client.send("NICK " + "n" * nick_length)
        self.assertEqual((await client.wait_for("NICK")).params[0], "n" * nick_length)
        client.send("NICK " + "m" * (nick_length + 1))
        await client.wait_for("432")

    async def test_topiclen_awaylen_kicklen_and_namelen_cut_or_refuse(self) -> None:
        """What is longer than TOPICLEN, AWAYLEN or KICKLEN arrives cut to it; NAMELEN bounds SETNAME."""
        server = await start_irc(self)
        op = await server.registered(self, "op", caps=("setname",))
        tokens = isupport(op)
        peer = await server.registered(self, "peer")
        await joined(op, "#long")
        await joined(peer, "#long")
        op.send("TOPIC #long :" + "t" * 450)
        topic = await peer.wait_for("TOPIC")
        self.assertEqual(topic.params[1], "t" * int(tokens["TOPICLEN"]))
        peer.send("AWAY :" + "a" * 300)
        await peer.wait_for("306")
        op.send("WHOIS peer")
        self.assertEqual((await op.wait_for("301")).params[2], "a" * int(tokens["AWAYLEN"]))
        op.send("SETNAME :" + "r" * (int(tokens["NAMELEN"]) + 1))
        self.assertEqual((await op.wait_for("FAIL")).params[:2], ("SETNAME", "INVALID_REALNAME"))
        op.send("SETNAME :" + "r" * int(tokens["NAMELEN"]))
        self.assertEqual((await op.wait_for("SETNAME")).params[0], "r" * int(tokens["NAMELEN"]))
        op.send("KICK #long peer :" + "k" * 400)
        kick = await peer.wait_for("KICK")
        self.assertEqual(kick.params[:2], ("#long", "peer"))
        self.assertEqual(kick.params[2], "k" * int(tokens["KICKLEN"]))

    async def test_chanlimit_is_the_most_channels_a_user_joins(self) -> None:
        """CHANLIMIT=#:50: fifty channels are joined, the next JOIN is 405 and joins nothing."""
        server = await start_irc(self)
        client = await server.registered(self, "collector")
        prefix, _, limit = isupport(client)["CHANLIMIT"].partition(":")
        self.assertEqual(prefix, "#")
        names = [f"#c{n}" for n in range(int(limit) + 1)]
        client.send("JOIN " + ",".join(names[:-1]))
        await client.wait_for("366", lambda m: m.params[1] == names[-2])
        client.send("JOIN " + names[-1])
        refused = await client.wait_for("405")
        self.assertEqual(refused.params[1], names[-1])
        client.send("WHOIS collector")
        await client.wait_for("318")
        channels = " ".join(m.params[2] for m in client.since("319")).split()
        self.assertEqual(len(channels), int(limit))
        self.assertNotIn("@" + names[-1], channels)
        client.send("PART " + names[0])
        await client.wait_for("PART")
        await joined(client, names[-1])

    async def test_modes_is_the_most_parameter_modes_of_one_mode_line(self) -> None:
        """MODES=4: of five ``+v`` in one MODE line the first four are made, the fifth not."""
        server = await start_irc(self)
        op = await server.registered(self, "op")
        most = int(isupport(op)["MODES"])
        await joined(op, "#modes")
        voices = [f"voice{n}" for n in range(most + 1)]
        for nick in voices:
            member = await server.registered(self, nick)
            await joined(member, "#modes")
        op.send("MODE #modes +" + "v" * len(voices) + " " + " ".join(voices))
        change = await op.wait_for("MODE")
        self.assertEqual(change.params[1:], ("+" + "v" * most, *voices[:most]))
        op.send("NAMES #modes")
        names = (await op.wait_for("353")).params[3].split()
        self.assertIn(voices[-1], names)
        self.assertEqual(sorted(n for n in names if n.startswith("+")), ["+" + v for v in voices[:most]])

    async def test_targmax_privmsg_four_targets_and_407_for_more(self) -> None:
        """TARGMAX PRIVMSG:4: four targets get the message; a fifth is 407, not silently dropped."""
        server = await start_irc(self)
        sender = await server.registered(self, "sender")
        targmax = dict(item.partition(":")[::2] for item in isupport(sender)["TARGMAX"].split(","))
        most = int(targmax["PRIVMSG"])
        self.assertEqual((targmax["JOIN"], targmax["PART"]), ("", ""))
        receivers = [await server.registered(self, f"r{n}") for n in range(most + 1)]
        sender.send("PRIVMSG " + ",".join(f"r{n}" for n in range(most + 1)) + " :to all")
        refused = await sender.wait_for("407")
        self.assertEqual(refused.params[1], f"r{most}")
        for receiver in receivers[:most]:
            self.assertEqual((await receiver.wait_for("PRIVMSG")).params, (receiver_nick(receiver), "to all"))
        await synced(receivers[most])
        self.assertEqual(receivers[most].since("PRIVMSG"), [])

    async def test_utf8only_warns_of_other_bytes(self) -> None:
        """UTF8ONLY: a line that is not UTF-8 is answered with WARN ... INVALID_UTF8."""
        server = await start_irc(self)
        client = await server.registered(self, "latin")
        self.assertIn("UTF8ONLY", isupport(client))
        client.send_raw(b"PRIVMSG latin :caf\xe9\r\n")
        warning = await client.wait_for("WARN")
        self.assertEqual(warning.params[:2], ("PRIVMSG", "INVALID_UTF8"))


def receiver_nick(client: RawClient) -> str:
    return client.since("001")[0].params[0]


MOTD = "Willkommen, Jürgen!\n\nFragen? #hilfe\n"


def jaraco_session(port: int, nick: str, channel: str) -> List[Tuple[str, str, str, Tuple[str, ...]]]:
    """
    The ``irc`` package's client registers, joins C{channel} and quits once it has the topic's
    setter; every event it got as (type, source, target, arguments). Runs in a thread.
    """
    import irc.client

    events: List[Tuple[str, str, str, Tuple[str, ...]]] = []
    client_reactor = irc.client.Reactor()
    connection = client_reactor.server().connect("127.0.0.1", port, nick, ircname="Audit Client")
    client_reactor.add_global_handler(
        "all_events", lambda c, e: events.append((e.type, str(e.source), str(e.target), tuple(e.arguments))), -20)
    client_reactor.add_global_handler("endofmotd", lambda c, e: c.join(channel))
    deadline = time.monotonic() + 10
    while not any(e[0] == "topicinfo" for e in events) and time.monotonic() < deadline:
        client_reactor.process_once(0.05)
    connection.quit("done")
    client_reactor.process_once(0.05)
    connection.close()
    return events


class ServerConfigTests(TestCase):
    """A whole server from its server.cfg: names and MOTD as the ``irc`` package's client sees them."""

    async def test_server_and_network_name_and_motd_file_from_server_cfg(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "motd.txt"), "w", encoding="utf-8") as f:
            f.write(MOTD)
        captured: List[Any] = []

        def make_irc(context: Any) -> Any:
            from ilchat.irc.service import IrcComponent

            captured.append(IrcComponent(context))
            return captured[0]

        from ilchat.standalone import StandaloneChat

        await start_server(
            self, folder=folder,
            server={"irc": {"address": "127.0.0.1", "port": 0, "auth": "open",
                            "server_name": "chat.example.org", "network_name": "ExampleNet",
                            "motd_file": "motd.txt"}},
            clients=[standalone_client()],
            client_components=[lambda ctx: StandaloneChat(ctx, policy=ctx.policy, grace=0.6)],
            server_components=[make_irc],
        )
        port = captured[0].ports[0].getHost().port
        events = await threads.deferToThread(jaraco_session, port, "jaraco", "#chat-1")

        def of(kind: str) -> List[Tuple[str, str, str, Tuple[str, ...]]]:
            return [e for e in events if e[0] == kind]

        (welcome,) = of("welcome")
        self.assertEqual(welcome[1], "chat.example.org")
        self.assertTrue(welcome[3][0].startswith("Welcome to the ExampleNet Network, jaraco!"), welcome)
        self.assertIn("Your host is chat.example.org", of("yourhost")[0][3][0])
        self.assertEqual(of("myinfo")[0][3][0], "chat.example.org")
        features = [token for e in of("featurelist") for token in e[3]]
        self.assertIn("NETWORK=ExampleNet", features)
        self.assertIn("chat.example.org", of("motdstart")[0][3][0])
        self.assertEqual([e[3][0] for e in of("motd")], ["- Willkommen, Jürgen!", "- ", "- Fragen? #hilfe"])
        self.assertEqual(len(of("endofmotd")), 1)
        (topic_info,) = of("topicinfo")
        self.assertEqual(topic_info[3][:2], ("#chat-1", "chat.example.org"))


def readme_irc_section() -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("What IRC users get")
    return text[start:text.index("A web IRC gateway", start)]


def readme_item(section: str, label: str) -> str:
    """The text of one ``* Label: ...`` item of the section, on one line."""
    start = section.index(f"* {label}:")
    end = section.find("\n  * ", start + 1)
    return " ".join(section[start:end if end != -1 else None].split())


def outside_parentheses(text: str) -> str:
    depth, kept = 0, []
    for char in text:
        depth += char == "("
        if not depth:
            kept.append(char)
        depth -= char == ")" and depth > 0
    return "".join(kept)


async def cap_ls(test: TestCase, **kwargs: Any) -> List[str]:
    server = await start_irc(test, **kwargs)
    client = await server.client(test)
    client.send("CAP LS 302")
    return [cap.partition("=")[0] for cap in (await client.wait_for("CAP")).params[2].split()]


class ReadmeTests(TestCase):
    """README "What IRC users get" lists what the server offers, no more and no less."""

    async def test_readme_caps_are_the_caps_cap_ls_offers(self) -> None:
        item = readme_item(readme_irc_section(), "Capabilities").partition("An IRC user's account")[0]
        named = set(re.findall(r"``([a-z][a-z0-9/-]+)``", item))
        open_mode = await cap_ls(self)
        ilias_mode = await cap_ls(self, authenticator=IliasAuthenticator((), reactor))
        self.assertEqual(len(open_mode), len(set(open_mode)))
        self.assertEqual(set(ilias_mode) - set(open_mode), {"sasl"})
        self.assertEqual(named, set(ilias_mode))
        self.assertIn('with ``"auth": "ilias"`` ``sasl``', item)

    def test_readme_commands_are_the_commands_handled(self) -> None:
        item = readme_item(readme_irc_section(), "Commands")
        named = set(re.findall(r"\b[A-Z]{3,}\b", outside_parentheses(item.partition(":")[2])))
        named.add("HELPOP")  # "HELP (HELPOP)"
        handled = {name[len("irc_"):] for name in dir(IRCServerProtocol) if name.startswith("irc_")}
        handled -= {"unknown"}
        self.assertEqual(named, handled)

    async def test_readme_modes_are_the_modes_of_004_and_005(self) -> None:
        section = readme_irc_section()
        user_item = readme_item(section, "User modes")
        user_modes = set(re.findall(r"``([a-z])``", user_item))
        channel_item = readme_item(section, "Channel modes of IRC-only channels (``local_channels``)")
        channel_modes = set(re.findall(r"``([a-zA-Z])``", channel_item.partition("005")[0]))
        channel_modes |= set(re.findall(r"``([a-z])``/``([a-z])``", channel_item)[0])
        server = await start_irc(self)
        client = await server.registered(self, "reader")
        myinfo = client.since("004")[0]
        self.assertEqual(user_modes, set(myinfo.params[3]))
        self.assertEqual(channel_modes, set(myinfo.params[4]))
        self.assertIn("``CHANMODES=%s``" % isupport(client)["CHANMODES"], channel_item)
