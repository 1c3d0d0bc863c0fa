# -*- test-case-name: tests.engineio.test_packets -*-
"""Engine.IO protocol v4 packet codec: pure functions, no transport.

A packet is a ``(type, data)`` pair where ``type`` is one of the ``OPEN`` … ``NOOP`` constants and
``data`` is ``str`` (text) or ``bytes`` (binary, only for ``MESSAGE``).

Wire forms:

* websocket: one packet per frame.  A text frame carries ``"<type digit><data>"``; a binary frame
  carries the raw bytes of a binary ``MESSAGE`` (no type prefix).
* HTTP long-polling: packets joined with the record separator ``"\\x1e"``; a binary message is
  written as ``"b" + base64(data)``.

Every decoder raises :class:`PacketError` on malformed input, so the caller can close that one
session and carry on.
"""

from __future__ import annotations

import base64
import binascii

__all__ = [
    "OPEN",
    "CLOSE",
    "PING",
    "PONG",
    "MESSAGE",
    "UPGRADE",
    "NOOP",
    "SEPARATOR",
    "PacketError",
    "encode_packet",
    "decode_packet",
    "encode_polling_packet",
    "encode_payload",
    "decode_payload",
]

OPEN = 0
CLOSE = 1
PING = 2
PONG = 3
MESSAGE = 4
UPGRADE = 5
NOOP = 6

SEPARATOR = "\x1e"

_TYPE_DIGITS = "0123456"


class PacketError(ValueError):
    """Raised for input that is not a valid Engine.IO v4 packet or payload."""


def encode_packet(packet_type: int, data: str | bytes = "") -> str | bytes:
    """Encode one packet for a websocket frame.

    Args:
        packet_type: one of the packet type constants.
        data: text, or bytes for a binary message.

    Returns:
        ``str`` for a text frame, ``bytes`` (the data itself) for a binary frame.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        if packet_type != MESSAGE:
            raise PacketError("only message packets can be binary")
        return bytes(data)
    return _TYPE_DIGITS[packet_type] + data


def encode_polling_packet(packet_type: int, data: str | bytes = "") -> str:
    """Encode one packet for an HTTP long-polling payload (binary as ``b`` + base64)."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if packet_type != MESSAGE:
            raise PacketError("only message packets can be binary")
        return "b" + base64.b64encode(bytes(data)).decode("ascii")
    return _TYPE_DIGITS[packet_type] + data


def decode_packet(frame: str | bytes) -> tuple[int, str | bytes]:
    """Decode one websocket frame (text: typed packet; bytes: binary message).

    Raises:
        PacketError: empty text or an unknown packet type.
    """
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return MESSAGE, bytes(frame)
    if not frame:
        raise PacketError("empty packet")
    digit = frame[0]
    if digit not in _TYPE_DIGITS:
        raise PacketError("unknown packet type")
    return int(digit), frame[1:]


def _decode_polling_packet(text: str) -> tuple[int, str | bytes]:
    if text[:1] == "b":
        try:
            return MESSAGE, base64.b64decode(text[1:], validate=True)
        except (binascii.Error, ValueError) as e:
            raise PacketError("bad base64 in binary packet") from e
    return decode_packet(text)


def encode_payload(encoded_packets: list[str]) -> str:
    """Join already polling-encoded packets into one long-polling payload."""
    return SEPARATOR.join(encoded_packets)


def decode_payload(payload: str | bytes) -> list[tuple[int, str | bytes]]:
    """Decode an HTTP long-polling payload (the body of a POST) into packets.

    Raises:
        PacketError: invalid UTF-8, an empty packet, an unknown type or bad base64.
    """
    if isinstance(payload, (bytes, bytearray)):
        try:
            payload = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as e:
            raise PacketError("payload is not UTF-8") from e
    if not payload:
        raise PacketError("empty payload")
    return [_decode_polling_packet(part) for part in payload.split(SEPARATOR)]
