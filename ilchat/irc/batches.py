# -*- test-case-name: tests.irc.test_batches -*-
"""
IRCv3 batches: message ids, ``batch``-wrapped replies, ``labeled-response`` and ``draft/multiline``.

Pure helpers (no transport): L{unique_id} names batches and IRC-only messages, L{batched} wraps
messages in a batch (nested batches keep their own tag), L{labeled} turns a command's captured
replies into what ``labeled-response`` asks for (ACK, one labeled line, or a labeled batch), and
L{multiline_lines} cuts a long or multi-line text into the lines of a ``draft/multiline`` batch.
L{MultilineBatch} collects a client's multiline batch until its end.
"""

import itertools
import secrets
from typing import Dict, List, Optional, Sequence, Tuple

import attr

from ilchat.irc.message import Message, echoed, split_line

__all__ = [
    "MULTILINE",
    "MULTILINE_MAX_BYTES",
    "MULTILINE_MAX_LINES",
    "MultilineBatch",
    "batched",
    "labeled",
    "multiline_lines",
    "unique_id",
]

MULTILINE = "draft/multiline"
CONCAT = "draft/multiline-concat"
#: The limits advertised in the ``draft/multiline`` cap value, for client batches.
MULTILINE_MAX_BYTES = 4096
MULTILINE_MAX_LINES = 100

_RUN = secrets.token_hex(4)
_COUNTER = itertools.count(1)


def unique_id() -> str:
    """An id unique in this process and across its restarts (a random run prefix, a counter)."""
    return f"{_RUN}{next(_COUNTER):x}"


def batched(kind: str, params: Sequence[str], messages: Sequence[Message], server: str,
            tags: Optional[Dict[str, str]] = None) -> List[Message]:
    """
    C{messages} between ``BATCH +ref kind params`` and ``BATCH -ref``; a message already in a
    batch (a nested batch's lines) keeps its tag, its BATCH lines get this one's.
    """
    ref = unique_id()
    inner = [message if "batch" in message.tags
             else attr.evolve(message, tags={**message.tags, "batch": ref})
             for message in messages]
    start = Message("BATCH", ("+" + ref, kind, *params), prefix=server, tags=dict(tags or {}))
    return [start, *inner, Message("BATCH", ("-" + ref,), prefix=server)]


def labeled(label: str, replies: Sequence[Message], server: str, batch: bool) -> List[Message]:
    """
    What a command with a ``label`` tag gets (IRCv3 labeled-response): ``ACK`` for no reply,
    the one reply with the label, else the replies in a ``labeled-response`` batch (without
    the ``batch`` cap, the replies as they are).
    """
    if not replies:
        return [Message("ACK", (), prefix=server, tags={"label": label})]
    if len(replies) == 1 or _one_batch(replies):
        # One line, or one batch (a multiline echo): its first line takes the label.
        first = replies[0]
        return [attr.evolve(first, tags={**first.tags, "label": label}), *replies[1:]]
    if not batch:
        return list(replies)
    return batched("labeled-response", (), replies, server, {"label": label})


def _one_batch(messages: Sequence[Message]) -> bool:
    first, last = messages[0], messages[-1]
    if first.command != "BATCH" or last.command != "BATCH" or not first.params[0].startswith("+"):
        return False
    ref = first.params[0][1:]
    return last.params[0] == "-" + ref and all(m.tags.get("batch") == ref for m in messages[1:-1])


def multiline_lines(text: str, max_bytes: int) -> List[Tuple[str, bool]]:
    """
    The lines of a ``draft/multiline`` batch for C{text}: C{(line, concat)}, where C{concat}
    says the line continues the previous one (a line longer than C{max_bytes} cut in pieces,
    on UTF-8 boundaries). Empty lines between others are kept, as multiline allows.
    """
    lines: List[Tuple[str, bool]] = []
    for line in text.replace("\0", "").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        pieces = split_line(line, max_bytes) or [""]
        lines.extend((piece, index > 0) for index, piece in enumerate(pieces))
    while lines and lines[-1][0] == "":
        lines.pop()
    while lines and lines[0][0] == "":
        lines.pop(0)
    return lines


@attr.s(auto_attribs=True)
class MultilineBatch:
    """A client's open ``draft/multiline`` batch: its target, lines and size so far, its label."""

    target: str
    command: Optional[str] = None
    lines: List[Tuple[str, bool]] = attr.ib(factory=list)
    size: int = 0
    tags: Dict[str, str] = attr.ib(factory=dict)
    label: Optional[str] = None

    @property
    def text(self) -> str:
        """The message as one text: lines joined by line breaks, concatenated ones without."""
        return "".join(("" if concat or index == 0 else "\n") + line
                       for index, (line, concat) in enumerate(self.lines))

    def add(self, command: str, text: str, concat: bool) -> Optional[Tuple[str, ...]]:
        """Add one line; the FAIL code (and limit) when it breaks the batch's rules, else None."""
        if (self.command is not None and command != self.command) or (concat and not text):
            return ("MULTILINE_INVALID",)
        self.command = command
        self.lines.append((text, concat))
        self.size += len(text.encode("utf-8"))
        if len(self.lines) > MULTILINE_MAX_LINES:
            return ("MULTILINE_MAX_LINES", str(MULTILINE_MAX_LINES))
        if self.size > MULTILINE_MAX_BYTES:
            return ("MULTILINE_MAX_BYTES", str(MULTILINE_MAX_BYTES))
        return None


class MultilineCommands:
    """
    A client's ``BATCH +ref draft/multiline <target>`` ... ``BATCH -ref``: the PRIVMSG/NOTICE
    lines tagged with the batch are collected and sent on as one message when it ends (to a
    bridged room: one room message; to IRC users: a batch or several lines, as their caps allow).

    A mixin of L{ilchat.irc.protocol.IRCServerProtocol} (C{send_chat}, C{send_message}).
    """

    def _init_multiline(self) -> None:
        self._batches: Dict[str, MultilineBatch] = {}
        #: The reference of the batch refused last: its other lines and its end are dropped.
        self._broken: Optional[str] = None

    def _fail(self, *params: str, label: Optional[str] = None) -> None:
        if label:
            self.start_label(label)  # the batch's label: its FAIL is the labeled reply
        try:
            self.send_message(Message("FAIL", echoed(("BATCH", *params, "Invalid multiline batch")),
                                      prefix=self.config.server_name))
        finally:
            if label:
                self.end_label()

    def _refuse(self, reference: str, *params: str) -> None:
        """An open batch broke its rules: FAIL (with its label), and the rest of it is dropped."""
        batch = self._batches.pop(reference)
        self._batches.clear()
        self._broken = reference
        self._fail(*params, label=batch.label)

    def opens_batch(self, message: Message) -> bool:
        """``BATCH +ref draft/multiline``: its label belongs to the message sent at its end."""
        return (message.command == "BATCH" and len(message.params) >= 2
                and message.params[0].startswith("+") and message.params[1] == MULTILINE)

    def irc_BATCH(self, message: Message) -> None:
        reference = message.params[0]
        if reference.startswith("+"):
            if (len(message.params) < 3 or message.params[1] != MULTILINE
                    or MULTILINE not in self.caps or self._batches):
                self._fail("MULTILINE_INVALID")
                return
            label = message.tags.get("label") if "labeled-response" in self.caps else None
            self._broken = None
            self._batches[reference[1:]] = MultilineBatch(
                target=message.params[2], label=label,
                tags={key: value for key, value in message.tags.items() if key.startswith("+")})
            return
        batch = self._batches.pop(reference[1:], None) if reference.startswith("-") else None
        if batch is None:
            if reference.startswith("-") and reference[1:] == self._broken:
                self._broken = None  # the end of a batch refused already
                return
            self._fail("MULTILINE_INVALID")
            return
        if batch.label:
            self.start_label(batch.label)
        try:
            if batch.command is not None and batch.text.strip():
                self.send_chat(batch.command, batch.target, batch.text, batch.tags, batch.lines)
        finally:
            self.end_label()

    def in_multiline(self, command: str, message: Message) -> bool:
        """Whether this PRIVMSG/NOTICE is a line of an open batch (taken, or refused with FAIL)."""
        reference = message.tags.get("batch")
        if reference is None:
            return False
        batch = self._batches.get(reference)
        if batch is None:
            if reference == self._broken:
                return True  # a line of a batch refused already: dropped with it
            if self._batches:
                # Another batch's tag while one is open: the open one is broken.
                self._refuse(next(iter(self._batches)), "MULTILINE_INVALID")
                return True
            return False
        text = message.params[1] if len(message.params) > 1 else ""
        error = ("MULTILINE_INVALID_TARGET",) if message.params[0] != batch.target else None
        error = error or batch.add(command, text, CONCAT in message.tags)
        if error is not None:
            self._refuse(reference, *error)
        return True
