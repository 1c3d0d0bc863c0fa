# -*- test-case-name: tests.test_jsonutil -*-
"""
Strict JSON, the one codec every boundary of ilchat uses (sockets, backend, store, page).

Python's ``json`` accepts and writes things other JSON readers refuse: ``NaN``/``Infinity``,
numbers that overflow to infinity (``1e999``), lone UTF-16 surrogates (``"\\ud800"``, which no
UTF-8 encoder, MySQL or PHP will take), nesting until a ``RecursionError``, and integers of
thousands of digits (``ValueError`` past 4,300 digits, slow well before). One such value in a
message used to stop history writes and userlist deliveries, so:

* :func:`loads` refuses all of these with :class:`JSONError`, whose ``str()`` is the reason to
  log or answer;
* :func:`dumps` writes compact JSON as ``JSON.stringify`` does (no spaces, non-ASCII kept as
  characters) and refuses NaN, infinity and lone surrogates with :class:`JSONError`. A value that
  is not JSON at all (``bytes``, an object) still raises ``TypeError``, as ``json.dumps`` does.

Limits: :data:`MAX_DEPTH` levels of arrays/objects (the deepest ILIAS payload has 4), and
:data:`MAX_INT_DIGITS` digits per integer (an ILIAS id has at most 19; JavaScript cannot even
represent integers past 16 digits exactly). Callers may pass tighter limits.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict

__all__ = [
    "JSONError", "MAX_DEPTH", "MAX_INT_DIGITS", "dumps", "dumps_ascii", "loads", "has_lone_surrogate"
]

#: Deepest nesting of arrays and objects :func:`loads` accepts.
MAX_DEPTH = 32

#: Most digits of an integer :func:`loads` accepts (the sign not counted).
MAX_INT_DIGITS = 32

_SURROGATE = re.compile("[\ud800-\udfff]")
# A \uD800-\uDFFF escape in the text: only then can decoding produce a lone surrogate.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Only a run of more than MAX_INT_DIGITS digits or an exponent of three characters can make an
# over-long integer or a float that overflows; texts with neither (nearly all) take the decoder
# whose numbers are parsed in C. Two plain patterns scan faster than one with alternatives.
_LONG_DIGITS = re.compile("[0-9][0-9]{%d}" % MAX_INT_DIGITS)
_LONG_EXPONENT = re.compile("[eE][+0-9][0-9][0-9]")
_INFINITY = float("inf")


class JSONError(ValueError):
    """Text that strict JSON refuses, or a value it will not write; ``str()`` is the reason."""


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a UTF-16 surrogate code point (never valid in UTF-8)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def _refuse_constant(name: str) -> Any:
    raise JSONError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value == _INFINITY or value == -_INFINITY:
        raise JSONError("number out of range")
    return value


def _decoder(max_int_digits: int) -> json.JSONDecoder:
    def bounded_int(text: str) -> int:
        if len(text) - (text[0] == "-") > max_int_digits:
            raise JSONError(f"integer of more than {max_int_digits} digits")
        return int(text)

    return json.JSONDecoder(
        parse_float=_finite_float, parse_int=bounded_int, parse_constant=_refuse_constant
    )


_DECODERS: Dict[int, json.JSONDecoder] = {MAX_INT_DIGITS: _decoder(MAX_INT_DIGITS)}
_FAST_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _too_deep(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if type(item) is dict else item
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def loads(
    text: str | bytes, *, max_depth: int = MAX_DEPTH, max_int_digits: int = MAX_INT_DIGITS
) -> Any:
    """
    Decode one JSON text strictly.

    Args:
        text: ``str``, or UTF-8 ``bytes``.
        max_depth: deepest nesting of arrays and objects accepted.
        max_int_digits: most digits of an integer accepted.

    Raises:
        JSONError: not JSON, NaN/Infinity, a number out of float range, a lone surrogate (in a key
            or a value), nesting deeper than ``max_depth``, an integer over ``max_int_digits``, or
            bytes that are not UTF-8.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            # Python's UTF-8 decoder refuses encoded surrogates too.
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise JSONError("not UTF-8") from None
    elif not isinstance(text, str):
        raise JSONError("not a JSON text")
    elif has_lone_surrogate(text):
        raise JSONError("lone surrogate in string")
    if (
        max_int_digits == MAX_INT_DIGITS
        and _LONG_DIGITS.search(text) is None
        and _LONG_EXPONENT.search(text) is None
    ):
        decoder = _FAST_DECODER
    else:
        decoder = _DECODERS.get(max_int_digits) or _decoder(max_int_digits)
    try:
        value = decoder.decode(text)
    except JSONError:
        raise
    except RecursionError:
        raise JSONError("nested too deeply") from None
    except json.JSONDecodeError as e:
        raise JSONError(f"invalid JSON: {e.msg} at {e.pos}") from None
    except ValueError as e:  # pragma: no cover - the hooks above leave no other ValueError
        raise JSONError(f"invalid JSON: {e}") from None
    if type(value) is dict or type(value) is list:
        # Nesting needs at least one bracket per level: most texts are judged by counting.
        if text.count("[") + text.count("{") > max_depth and _too_deep(value, max_depth):
            raise JSONError(f"nested deeper than {max_depth} levels")
        if "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None and has_lone_surrogate(
            json.dumps(value, ensure_ascii=False)
        ):
            raise JSONError("lone surrogate in string")
    elif type(value) is str and "\\u" in text and _SURROGATE_ESCAPE.search(text) and has_lone_surrogate(value):
        raise JSONError("lone surrogate in string")
    return value


def dumps(value: Any) -> str:
    """
    Compact JSON as ``JSON.stringify`` writes it: no spaces, non-ASCII kept as characters.

    Raises:
        JSONError: NaN or infinity, or a lone surrogate in a string or key (the text could not be
            encoded as UTF-8, so no socket, database or PHP could take it).
        TypeError: a value JSON has no form for (``bytes``, an arbitrary object).
    """
    try:
        text = _ENCODER.encode(value)
    except ValueError as e:
        raise JSONError(str(e)) from None
    if has_lone_surrogate(text):
        raise JSONError("lone surrogate in string")
    return text


def dumps_ascii(value: Any) -> str:
    """
    Compact JSON in ASCII only: non-ASCII characters, lone surrogates included, as ``\\u`` escapes.

    For records that must keep whatever text the chat was given until it is refused further on
    (the journal), where :func:`dumps` would raise on a lone surrogate.

    Raises:
        JSONError: NaN or infinity.
        TypeError: a value JSON has no form for.
    """
    try:
        return _ASCII_ENCODER.encode(value)
    except ValueError as e:
        raise JSONError(str(e)) from None
