"""
Property-based tests (Hypothesis) for L{ilchat.irc.message}: whatever a client sends either parses
or raises L{MessageError}; what parses and formats reads back the same; the formatter never emits
CR, LF or NUL. Bounded (C{max_examples}, C{deadline}) so that CI time stays small.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from ilchat.irc.message import Message, MessageError, format_message, parse_message
from ilchat.irc.protocol import IRCServerProtocol

BOUNDED = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

#: Bytes a client may send, biased towards the characters IRC framing cares about.
_WIRE_BYTES = st.binary(max_size=300) | st.lists(
    st.sampled_from([b" ", b":", b"@", b";", b"=", b"\\", b"\0", b"\r", b"\n", b"a", b"#c", b"PRIVMSG",
                     b"\xc3\xa9", b"\xff", b"+t", b"s"]),
    max_size=60,
).map(b"".join)

# Building blocks of valid messages.
_NO_FRAMING = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)), max_size=40)
_WORD = _NO_FRAMING.filter(lambda t: t and " " not in t and not t.startswith(":"))
_COMMAND = st.from_regex(r"\A([A-Z]{1,12}|[0-9]{3})\Z")
_TAG_KEY = st.from_regex(r"\A\+?[A-Za-z0-9.\-/]{1,20}\Z")
_TAG_VALUE = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=30)


@st.composite
def _messages(draw: st.DrawFn) -> Message:
    middles = draw(st.lists(_WORD, max_size=8))
    last = draw(st.none() | _NO_FRAMING)
    params = tuple(middles) + (() if last is None else (last,))
    prefix = draw(st.none() | _WORD.filter(lambda t: not t.startswith("@")))
    tags = draw(st.dictionaries(_TAG_KEY, _TAG_VALUE, max_size=4))
    return Message(draw(_COMMAND), params, prefix=prefix, tags=tags)


class ParserPropertyTests(SynchronousTestCase):
    @BOUNDED
    @given(_WIRE_BYTES)
    def test_every_byte_string_parses_or_raises_message_error(self, data: bytes) -> None:
        """Decoded as the server decodes a line, any bytes give a Message or MessageError."""
        text, utf8 = IRCServerProtocol.decode(data)
        self.assertEqual(utf8, text.encode("utf-8") == data)
        try:
            message = parse_message(text)
        except MessageError:
            return
        self.assertIsInstance(message, Message)
        self.assertTrue(message.command)
        for part in (message.command, message.prefix or "", *message.params, *message.tags.values()):
            self.assertNotIn("\0", part)
        self.assertLessEqual(len(message.params), 15)

    @BOUNDED
    @given(_WIRE_BYTES)
    def test_what_parses_and_formats_reads_back_the_same(self, data: bytes) -> None:
        """parse(format(parse(x))) == parse(x) whenever both steps succeed."""
        try:
            message = parse_message(IRCServerProtocol.decode(data)[0])
            line = format_message(message)
        except MessageError:
            return
        self.assertEqual(parse_message(line), message)

    @BOUNDED
    @given(_messages())
    def test_valid_messages_round_trip(self, message: Message) -> None:
        """A message with valid parts formats (when short enough) and parses back unchanged."""
        try:
            line = format_message(message)
        except MessageError as e:
            # The only refusal a valid message can get is its length.
            self.assertIn("too long", str(e))
            return
        self.assertEqual(parse_message(line), message)

    @BOUNDED
    @given(
        command=st.text(max_size=10),
        params=st.lists(st.text(max_size=20), max_size=5),
        prefix=st.none() | st.text(max_size=10),
        tags=st.dictionaries(st.text(max_size=8), st.text(max_size=10), max_size=3),
    )
    def test_format_never_emits_cr_lf_or_nul(self, command: str, params: list, prefix: object,
                                             tags: dict) -> None:
        """Whatever the parts, the output (if any) is one line without CR, LF or NUL."""
        message = Message(command, tuple(params), prefix=prefix, tags=tags)
        for truncate in (False, True):
            try:
                line = format_message(message, truncate=truncate)
            except MessageError:
                continue
            for char in "\r\n\0":
                self.assertNotIn(char, line)

    @BOUNDED
    @given(_messages(), st.text(max_size=600))
    def test_truncated_lines_fit_and_keep_the_start(self, message: Message, extra: str) -> None:
        """With truncate, a line always fits in 510 bytes after its tags and starts as it would."""
        longer = Message(message.command, message.params + (extra + "x" * 500,), prefix=message.prefix,
                         tags=message.tags)
        try:
            line = format_message(longer, truncate=True)
        except MessageError:
            return  # a part of the generated extra text contains CR, LF or NUL
        body = line.split(" ", 1)[1] if longer.tags else line
        self.assertLessEqual(len(body.encode("utf-8")), 510)
        self.assertEqual(parse_message(line).command, longer.command)
