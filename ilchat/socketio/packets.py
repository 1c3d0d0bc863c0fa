# -*- test-case-name: tests.socketio.test_packets -*-
"""Socket.IO protocol v5 packet codec: pure functions, no transport.

Text form (inside an Engine.IO message packet), as socket.io-parser 4 writes it::

    <type>[<attachments>-][/<namespace>,][<ack id>][<JSON payload>]

The main namespace ``/`` is written without prefix.  A payload holding ``bytes`` becomes a
BINARY_EVENT / BINARY_ACK whose JSON has ``{"_placeholder":true,"num":i}`` in place of each
buffer, followed by one binary Engine.IO message per buffer.

:func:`decode_packet` raises :class:`PacketError` on anything socket.io-parser would reject, and on
what ilchat refuses on top (strict JSON, see :mod:`ilchat.jsonutil`; ack ids of more than
:data:`MAX_ACK_ID_DIGITS` digits; more than :data:`MAX_ATTACHMENTS` binary attachments), so the
caller can close that one connection. Its ``str()`` is the reason.
"""

from __future__ import annotations

from typing import Any

from ilchat.jsonutil import JSONError, dumps as _dumps, loads as _loads

__all__ = [
    "CONNECT",
    "DISCONNECT",
    "EVENT",
    "ACK",
    "CONNECT_ERROR",
    "BINARY_EVENT",
    "BINARY_ACK",
    "RESERVED_EVENTS",
    "MAX_ACK_ID_DIGITS",
    "MAX_ATTACHMENTS",
    "Packet",
    "PacketError",
    "encode_event_json",
    "encode_packet",
    "decode_packet",
    "reconstruct",
]

CONNECT = 0
DISCONNECT = 1
EVENT = 2
ACK = 3
CONNECT_ERROR = 4
BINARY_EVENT = 5
BINARY_ACK = 6

RESERVED_EVENTS = frozenset(
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]
)

#: Most binary attachments one packet may announce (ILIAS sends none; each is a whole message).
MAX_ATTACHMENTS = 10

#: Most digits of an ack id: socket.io-client counts up from 0, and JavaScript numbers are exact
#: only below 2**53 (16 digits).
MAX_ACK_ID_DIGITS = 15


class PacketError(ValueError):
    """Raised for text that is not a valid Socket.IO v5 packet."""


class Packet:
    """A decoded packet.  ``data`` is ``None`` when the packet had no payload."""

    __slots__ = ("type", "namespace", "id", "data", "attachments")

    def __init__(
        self,
        packet_type: int,
        namespace: str = "/",
        data: Any = None,
        id: int | None = None,
        attachments: int = 0,
    ) -> None:
        self.type = packet_type
        self.namespace = namespace
        self.data = data
        self.id = id
        self.attachments = attachments

    def __repr__(self) -> str:
        return (
            f"Packet(type={self.type}, namespace={self.namespace!r}, id={self.id!r}, "
            f"data={self.data!r}, attachments={self.attachments})"
        )


def _deconstruct(value: Any, buffers: list[bytes]) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        buffers.append(bytes(value))
        return {"_placeholder": True, "num": len(buffers) - 1}
    if isinstance(value, (list, tuple)):
        return [_deconstruct(v, buffers) for v in value]
    if isinstance(value, dict):
        return {k: _deconstruct(v, buffers) for k, v in value.items()}
    return value


def _has_binary(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_has_binary(v) for v in value)
    if isinstance(value, dict):
        return any(_has_binary(v) for v in value.values())
    return False


def encode_packet(
    packet_type: int, namespace: str = "/", data: Any = None, id: int | None = None
) -> list[str | bytes]:
    """Encode a packet into the Engine.IO messages that carry it.

    EVENT and ACK payloads holding ``bytes`` are turned into BINARY_EVENT / BINARY_ACK.

    Returns:
        The text message first, then one ``bytes`` message per binary attachment.
    """
    buffers: list[bytes] = []
    payload = None
    if data is not None:
        try:
            payload = _dumps(data)
        except TypeError:
            # JSON has no bytes. Trying the C encoder first and walking the payload only when it
            # fails keeps the common case (a 1,000-entry userlist on every broadcast) at one pass.
            if packet_type not in (EVENT, ACK) or not _has_binary(data):
                raise
            packet_type = BINARY_EVENT if packet_type == EVENT else BINARY_ACK
            payload = _dumps(_deconstruct(data, buffers))
    return [_text_packet(packet_type, namespace, payload, id, buffers), *buffers]


def encode_event_json(namespace: str, data_json: str) -> str:
    """An EVENT whose data (the ``[event, *args]`` array) is already compact JSON text.

    For payloads the caller can build faster than ``json.dumps`` (a userlist spliced from cached
    entries); the text must be a JSON array without binary attachments.
    """
    return _text_packet(EVENT, namespace, data_json, None, [])


def _text_packet(
    packet_type: int, namespace: str, payload: str | None, id: int | None, buffers: list[bytes]
) -> str:
    parts = [str(packet_type)]
    if packet_type in (BINARY_EVENT, BINARY_ACK):
        parts.append(f"{len(buffers)}-")
    if namespace and namespace != "/":
        parts.append(namespace + ",")
    if id is not None:
        parts.append(str(id))
    if payload is not None:
        parts.append(payload)
    return "".join(parts)


def _payload_valid(packet_type: int, payload: Any) -> bool:
    if packet_type == CONNECT:
        return isinstance(payload, dict)
    if packet_type == DISCONNECT:
        return False
    if packet_type == CONNECT_ERROR:
        return isinstance(payload, (str, dict))
    if packet_type in (EVENT, BINARY_EVENT):
        return (
            isinstance(payload, list)
            and len(payload) > 0
            and (
                (isinstance(payload[0], str) and payload[0] not in RESERVED_EVENTS)
                or (type(payload[0]) in (int, float))
            )
        )
    return isinstance(payload, list)  # ACK, BINARY_ACK


def decode_packet(text: str) -> Packet:
    """Decode the text part of a packet (placeholders are left for :func:`reconstruct`).

    Raises:
        PacketError: unknown type, bad or too many attachments, an over-long ack id, JSON that
            strict decoding refuses, or a payload the type forbids.
    """
    if not text or text[0] not in "0123456":
        raise PacketError("unknown packet type")
    packet_type = int(text[0])
    i = 1
    n = len(text)
    attachments = 0
    if packet_type in (BINARY_EVENT, BINARY_ACK):
        dash = text.find("-", 1)
        count = text[1:dash] if dash > 0 else ""
        if not (count.isascii() and count.isdigit()):
            raise PacketError("illegal attachments")
        if len(count) > 3 or int(count) > MAX_ATTACHMENTS:
            raise PacketError(f"more than {MAX_ATTACHMENTS} attachments")
        attachments = int(count)
        i = dash + 1
    namespace = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma < 0:
            namespace, i = text[i:], n
        else:
            namespace, i = text[i:comma], comma + 1
    ack_id = None
    start = i
    while i < n and "0" <= text[i] <= "9":
        i += 1
    if i > start:
        if i - start > MAX_ACK_ID_DIGITS:
            raise PacketError(f"ack id of more than {MAX_ACK_ID_DIGITS} digits")
        ack_id = int(text[start:i])
    data = None
    if i < n:
        try:
            data = _loads(text[i:])
        except JSONError as e:
            raise PacketError(f"invalid JSON payload: {e}") from None
        if not _payload_valid(packet_type, data):
            raise PacketError("invalid payload")
    elif packet_type in (EVENT, BINARY_EVENT, ACK, BINARY_ACK):
        raise PacketError("missing payload")
    return Packet(packet_type, namespace, data, ack_id, attachments)


def reconstruct(data: Any, buffers: list[bytes]) -> Any:
    """Put the binary attachments back where their placeholders are.

    Raises:
        PacketError: a placeholder number out of range.
    """
    if isinstance(data, list):
        return [reconstruct(v, buffers) for v in data]
    if isinstance(data, dict):
        if data.get("_placeholder") is True and "num" in data:
            num = data["num"]
            if type(num) is not int or not 0 <= num < len(buffers):
                raise PacketError("illegal attachment number")
            return buffers[num]
        return {k: reconstruct(v, buffers) for k, v in data.items()}
    return data
