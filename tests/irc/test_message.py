"""Tests for L{ilchat.irc.message}: pure parsing and serialising, no transport."""

from twisted.trial.unittest import SynchronousTestCase

from ilchat.irc.message import (
    Message,
    MessageError,
    echoed,
    escape_tag_value,
    format_message,
    parse_message,
    split_text,
    truncate_utf8,
    unescape_tag_value,
)


class ParseTests(SynchronousTestCase):
    def test_command_and_trailing_parameter(self) -> None:
        """A trailing parameter keeps its spaces and loses its colon."""
        message = parse_message("privmsg #chan :hello there")
        self.assertEqual(message, Message("PRIVMSG", ("#chan", "hello there")))

    def test_prefix_and_numeric(self) -> None:
        """The prefix is split off and a numeric is a command."""
        message = parse_message(":irc.test 001 nick :Welcome")
        self.assertEqual((message.prefix, message.command, message.params), ("irc.test", "001", ("nick", "Welcome")))

    def test_tags_are_unescaped(self) -> None:
        """IRCv3 tag values are unescaped; a tag without value is the empty string."""
        message = parse_message(r"@time=x;+typing=active;msg=a\sb\:c\\ :n!u@h PRIVMSG #c :hi")
        self.assertEqual(message.tags, {"time": "x", "+typing": "active", "msg": "a b;c\\"})
        self.assertEqual(message.prefix, "n!u@h")

    def test_several_spaces_count_as_one(self) -> None:
        """Clients in the wild put several spaces between parameters."""
        self.assertEqual(parse_message("NICK   bob  ").params, ("bob",))

    def test_empty_trailing_parameter(self) -> None:
        """A lone colon is an empty last parameter."""
        self.assertEqual(parse_message("TOPIC #c :").params, ("#c", ""))

    def test_no_command_is_an_error(self) -> None:
        """A line of only a prefix or tags has no command."""
        self.assertRaises(MessageError, parse_message, ":prefix")
        self.assertRaises(MessageError, parse_message, "")

    def test_refuses_nul_and_line_breaks(self) -> None:
        """NUL is not allowed anywhere in a message (modern ircdocs), nor a raw CR or LF."""
        for line in ("PRIVMSG a\0b :hi", "PRIVMSG #c :a\0b", "@+t=a\0b PING x", "PING a\rb", "PING\nX"):
            with self.assertRaises(MessageError, msg=repr(line)):
                parse_message(line)

    def test_at_most_fifteen_parameters(self) -> None:
        """The fifteenth parameter takes the rest of the line (RFC 1459)."""
        message = parse_message("CMD " + " ".join(str(i) for i in range(20)))
        self.assertEqual(len(message.params), 15)
        self.assertEqual(message.params[-1], "14 15 16 17 18 19")


class FormatTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        """Formatting a parsed line gives an equivalent line back."""
        line = "@a=b\\sc;d :n!u@h PRIVMSG #c :hello there"
        self.assertEqual(parse_message(format_message(parse_message(line))), parse_message(line))

    def test_last_parameter_gets_colon_only_when_needed(self) -> None:
        """A single-word last parameter goes without colon; spaces, colons and empty need one."""
        self.assertEqual(format_message(Message("NICK", ("bob",))), "NICK bob")
        self.assertEqual(format_message(Message("X", ("a", ":b"))), "X a ::b")
        self.assertEqual(format_message(Message("X", ("a", ""))), "X a :")

    def test_refuses_line_breaks_and_nul(self) -> None:
        """CR, LF or NUL in any part would inject a command; the serialiser refuses them."""
        for bad in ("a\rb", "a\nQUIT", "a\0b"):
            self.assertRaises(MessageError, format_message, Message("PRIVMSG", ("#c", bad)))
        self.assertRaises(MessageError, format_message, Message("PRIVMSG", ("#c", "x"), prefix="a\nb"))

    def test_refuses_nul_in_tag_value(self) -> None:
        """A tag value may hold CR and LF (sent escaped) but not NUL, which has no escape."""
        with self.assertRaises(MessageError):
            format_message(Message("TAGMSG", ("#c",), tags={"+typing": "a\0b"}))
        line = format_message(Message("TAGMSG", ("#c",), tags={"+x": "a\r\nb"}))
        self.assertEqual(line, "@+x=a\\r\\nb TAGMSG #c")

    def test_refuses_command_that_reads_as_prefix_or_tags(self) -> None:
        """A command starting with ":" or "@" would be read back as a prefix or tags."""
        for command in (":X", "@X", ""):
            self.assertRaises(MessageError, format_message, Message(command, ("a",)))

    def test_refuses_space_in_middle_parameter(self) -> None:
        """Only the last parameter may contain a space."""
        self.assertRaises(MessageError, format_message, Message("KICK", ("#c x", "nick")))

    def test_refuses_over_long_line(self) -> None:
        """A line over 510 bytes (plus CR LF) is refused rather than truncated mid-character."""
        self.assertRaises(MessageError, format_message, Message("PRIVMSG", ("#c", "é" * 300)))

    def test_truncate_cuts_an_over_long_line_to_510_bytes(self) -> None:
        """With truncate, an over-long line is cut (whole characters), tags kept, not refused."""
        echo = Message("401", ("nick", "é" * 300, "No such nick/channel"), prefix="irc.test",
                       tags={"time": "x"})
        line = format_message(echo, truncate=True)
        tags, _, body = line.partition(" ")
        self.assertEqual(tags, "@time=x")
        self.assertEqual(len(body.encode()), 509)  # 510 would cut an "é" in two
        self.assertEqual(parse_message(body).params, ("nick", "é" * 245))
        self.assertEqual(format_message(Message("PONG", ("x",)), truncate=True), "PONG x")

    def test_truncate_utf8_never_cuts_a_character(self) -> None:
        """A cut inside a UTF-8 character drops that character; Latin-1 bytes are cut as they are."""
        self.assertEqual(truncate_utf8("aé".encode(), 2), b"a")
        self.assertEqual(truncate_utf8("a\U0001F600b".encode(), 4), b"a")
        self.assertEqual(truncate_utf8("a\U0001F600b".encode(), 5), "a\U0001F600".encode())
        self.assertEqual(truncate_utf8(b"caf\xe9\xe9\xe9", 5), b"caf\xe9")
        self.assertEqual(truncate_utf8(b"short", 10), b"short")

    def test_echoed_parameters_are_sendable(self) -> None:
        """
        Echoed middle parameters are cut at their first space, ``*`` when empty or starting
        with ":"; the last stays whole; the result always serialises.
        """
        params = echoed(("me", "a b", "", ":x", "#c", "text with spaces"))
        self.assertEqual(params, ("me", "a", "*", "*", "#c", "text with spaces"))
        self.assertEqual(format_message(Message("401", params)), "401 me a * * #c :text with spaces")
        self.assertEqual(echoed(()), ())
        self.assertEqual(echoed((" lead",)), (" lead",))

    def test_tag_escaping_round_trip(self) -> None:
        """Every special character in a tag value survives escaping."""
        value = "a;b c\\d\re\nf"
        self.assertEqual(unescape_tag_value(escape_tag_value(value)), value)


class SplitTextTests(SynchronousTestCase):
    def test_splits_at_line_breaks(self) -> None:
        """Each line of user text becomes its own piece, empty lines dropped."""
        self.assertEqual(split_text("a\r\nb\n\nc\rd", 100), ["a", "b", "c", "d"])

    def test_pieces_fit_and_keep_characters_whole(self) -> None:
        """Long text is cut to the byte limit, never inside a UTF-8 character."""
        pieces = split_text("ä" * 500, 101)
        self.assertTrue(all(len(p.encode("utf-8")) <= 101 for p in pieces))
        self.assertEqual("".join(pieces), "ä" * 500)

    def test_prefers_spaces(self) -> None:
        """A cut falls on a space when there is one in the second half."""
        pieces = split_text(" ".join(["word"] * 50), 60)
        self.assertTrue(all(not p.startswith(" ") and p.endswith("word") for p in pieces))
