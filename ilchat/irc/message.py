# -*- test-case-name: tests.irc.test_message -*-
"""
IRC messages as values: a pure parser and serialiser with IRCv3 message tags.

Nothing here touches a transport, so every rule of the wire format (modern ircdocs and RFC 1459)
is tested on plain strings. The serialiser is the only producer of outgoing lines and refuses
anything that could smuggle a second command into a line (CR, LF, NUL) or break the framing
(a space in a middle parameter, an over-long line). The parser refuses the same three characters
(NUL is not allowed anywhere in a message, modern ircdocs), so a NUL a client sent never reaches a
reply that echoes it; tag values carry CR and LF only in their escaped form (``\\r``, ``\\n``).
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import attr

__all__ = [
    "Message",
    "MessageError",
    "parse_message",
    "format_message",
    "split_text",
    "split_line",
    "MAX_LINE_BYTES",
    "MAX_TAGS_BYTES",
    "MAX_CLIENT_TAG_DATA",
    "truncate_utf8",
    "decimal_number",
    "echoed",
    "MESSAGE_TARGETS",
]

#: The most targets of one PRIVMSG or NOTICE (005 TARGMAX); PRIVMSG answers 407 to the rest.
MESSAGE_TARGETS = 4
#: Bytes of a line without its tags, CR LF included (RFC 1459 §2.3).
MAX_LINE_BYTES = 512
#: Bytes of the tag section, the leading "@" and trailing space included (IRCv3 message-tags).
MAX_TAGS_BYTES = 8191
#: Bytes of tag data a client may send, without the "@" and the space (IRCv3 message-tags).
MAX_CLIENT_TAG_DATA = 4094

_FORBIDDEN = ("\r", "\n", "\0")

_TAG_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


class MessageError(ValueError):
    """A line cannot be parsed, or a message cannot be put on the wire safely."""


@attr.s(slots=True, frozen=True, auto_attribs=True)
class Message:
    """
    One IRC message.

    Attributes:
        command: the command or three-digit numeric, upper case.
        params: the parameters; only the last one may contain spaces or start with ":".
        prefix: the source (``nick!user@host`` or a server name), or None.
        tags: IRCv3 tags, unescaped; a tag without value maps to "".
    """

    command: str
    params: Tuple[str, ...] = attr.ib(default=(), converter=tuple)
    prefix: Optional[str] = None
    tags: Mapping[str, str] = attr.ib(factory=dict)


def escape_tag_value(value: str) -> str:
    """Escape a tag value as IRCv3 message-tags requires."""
    return "".join(_TAG_ESCAPES.get(char, char) for char in value)


def unescape_tag_value(value: str) -> str:
    """
    Undo L{escape_tag_value}.

    Per the spec, an unknown escape drops the backslash and a trailing lone backslash is dropped.
    """
    out: List[str] = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        following = next(chars, None)
        if following is None:
            break
        out.append(_TAG_UNESCAPES.get(following, following))
    return "".join(out)


def _parse_tags(text: str) -> Dict[str, str]:
    tags: Dict[str, str] = {}
    for item in text.split(";"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if key:
            tags[key] = unescape_tag_value(value)
    return tags


def parse_message(line: str) -> Message:
    """
    Parse one line (without CR/LF) into a L{Message}.

    Several spaces between parts count as one, as clients and servers in the wild send them.
    At most 15 parameters are split; anything beyond stays in the 15th, as RFC 1459 says.

    Raises:
        MessageError: the line has no command, or contains CR, LF or NUL.
    """
    _check(line, "line")
    rest = line.lstrip(" ")
    tags: Dict[str, str] = {}
    prefix: Optional[str] = None
    if rest.startswith("@"):
        tag_text, _, rest = rest[1:].partition(" ")
        tags = _parse_tags(tag_text)
        rest = rest.lstrip(" ")
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
        prefix = prefix or None
    command, _, rest = rest.partition(" ")
    if not command:
        raise MessageError("no command")
    params: List[str] = []
    while rest:
        rest = rest.lstrip(" ")
        if not rest:
            break
        if rest.startswith(":") or len(params) == 14:
            params.append(rest[1:] if rest.startswith(":") else rest)
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return Message(command=command.upper(), params=tuple(params), prefix=prefix, tags=tags)


def _check(part: str, what: str) -> None:
    for char in _FORBIDDEN:
        if char in part:
            raise MessageError(f"{what} contains {char!r}")


def format_message(message: Message, truncate: bool = False) -> str:
    """
    Serialise a L{Message} into a line without CR/LF.

    The last parameter gets a ":" when it needs one (empty, has a space, or starts with ":").
    With C{truncate}, a line longer than IRC allows is cut to 510 bytes after the tags (never
    inside a character), as ircds cut a reply that echoes a long argument, instead of refused.

    Raises:
        MessageError: a part contains CR, LF or NUL (a tag value may contain CR and LF, which
            are sent escaped, but not NUL, which has no escape), the command is empty or starts
            with ":" or "@" (it would read as a prefix or tags), a middle parameter has a space
            or starts with ":", or the line would be longer than IRC allows (without C{truncate}).
    """
    parts: List[str] = []
    tag_section = ""
    if message.tags:
        items = []
        for key, value in message.tags.items():
            _check(key, "tag key")
            if not key or " " in key or ";" in key or "=" in key:
                raise MessageError(f"bad tag key {key!r}")
            if "\0" in value:
                raise MessageError(f"tag value of {key!r} contains '\\x00'")
            items.append(f"{key}={escape_tag_value(value)}" if value else key)
        tag_section = "@" + ";".join(items) + " "
    if message.prefix is not None:
        _check(message.prefix, "prefix")
        if " " in message.prefix or not message.prefix:
            raise MessageError("bad prefix")
        parts.append(":" + message.prefix)
    _check(message.command, "command")
    if not message.command or " " in message.command or message.command.startswith((":", "@")):
        raise MessageError("bad command")
    parts.append(message.command)
    params = list(message.params)
    for index, param in enumerate(params):
        _check(param, "parameter")
        last = index == len(params) - 1
        if last and (not param or " " in param or param.startswith(":")):
            parts.append(":" + param)
        elif not param or " " in param or param.startswith(":"):
            raise MessageError(f"middle parameter {param!r} needs to be the last")
        else:
            parts.append(param)
    body = " ".join(parts)
    encoded = body.encode("utf-8")
    if len(encoded) > MAX_LINE_BYTES - 2:
        if not truncate:
            raise MessageError("line too long")
        body = truncate_utf8(encoded, MAX_LINE_BYTES - 2).decode("utf-8")
    if len(tag_section.encode("utf-8")) > MAX_TAGS_BYTES:
        raise MessageError("tags too long")
    return tag_section + body


def echoed(params: Sequence[str]) -> Tuple[str, ...]:
    """
    The parameters of a server reply that echoes client input, made sendable: a client's trailing
    argument may name a target with spaces (C{PRIVMSG :a b}), which a middle parameter cannot carry,
    so every parameter but the last is cut at its first space, and one then empty or starting with
    ":" becomes "*", as ircds echo it. The last one goes out as trailing, whatever it holds.
    """
    *middle, last = params or ("",)
    safe = []
    for param in middle:
        param = param.partition(" ")[0]
        safe.append("*" if not param or param.startswith(":") else param)
    return (*safe, last) if params else ()


def truncate_utf8(data: bytes, max_bytes: int) -> bytes:
    """
    The first C{max_bytes} of C{data}, minus a UTF-8 character cut in two at the end (bytes
    that are not UTF-8 at all, such as Latin-1, are cut at C{max_bytes}).
    """
    if len(data) <= max_bytes:
        return data
    cut = data[:max_bytes]
    start = len(cut) - 1
    while start > 0 and len(cut) - start < 4 and cut[start] & 0xC0 == 0x80:
        start -= 1  # back over continuation bytes to the character's first byte
    lead = cut[start] if cut else 0
    length = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
    return cut[:start] if len(cut) - start < length else cut


def split_text(text: str, max_bytes: int) -> List[str]:
    """
    Split user text into pieces that each fit into one message of at most C{max_bytes} UTF-8
    bytes, first at line breaks (so text never carries CR/LF), then at spaces where possible and
    never inside a UTF-8 character. NUL characters are dropped. Empty lines are left out.
    """
    pieces: List[str] = []
    for line in text.replace("\0", "").splitlines():
        cut = split_line(line, max_bytes)
        # A piece cut at a space ends a line on IRC: the space goes (not the last piece's own).
        pieces.extend([piece.rstrip(" ") or piece for piece in cut[:-1]] + cut[-1:])
    return pieces


def split_line(line: str, max_bytes: int) -> List[str]:
    """
    One line in pieces of at most C{max_bytes} (4 at least) UTF-8 bytes, after a space where one
    is near, never inside a character; spaces kept. No pieces for an empty line.
    """
    max_bytes = max(max_bytes, 4)
    pieces = []
    while line:
        encoded = line.encode("utf-8")
        if len(encoded) <= max_bytes:
            pieces.append(line)
            break
        cut = encoded[:max_bytes].decode("utf-8", "ignore")
        space = cut.rfind(" ")
        if space > len(cut) // 2:
            cut = cut[: space + 1]
        pieces.append(cut)
        line = line[len(cut) :]
    return pieces


def decimal_number(text: str) -> bool:
    """
    Whether a client's C{text} is a number C{int()} takes and a database column holds: ASCII
    digits (``str.isdigit`` also says yes to ``²``, which C{int()} refuses), fewer than 20.
    """
    return text.isascii() and text.isdigit() and len(text) < 20
