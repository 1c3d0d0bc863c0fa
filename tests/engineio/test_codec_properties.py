"""
Property tests of the Engine.IO codec and the websocket frame reader: every input decodes or
raises the module's own error (never anything else), and what is encoded decodes back.
"""

from __future__ import annotations

import struct

from twisted.trial.unittest import SynchronousTestCase

from ilchat.engineio import packets as P
from ilchat.engineio._internals import read_data_frame
from tests.support.properties import given, strategies

_text = strategies.text(strategies.characters(blacklist_categories=("Cs",), blacklist_characters="\x1e"), max_size=40)
_packets = strategies.lists(
    strategies.one_of(
        strategies.tuples(strategies.integers(min_value=0, max_value=6), _text),
        strategies.tuples(strategies.just(P.MESSAGE), strategies.binary(max_size=40)),
    ),
    min_size=1,
    max_size=8,
)


class EngineIOCodecProperties(SynchronousTestCase):
    @given(strategies.one_of(strategies.binary(max_size=200), strategies.text(max_size=200)))
    def test_any_payload_decodes_or_raises_packet_error(self, payload):
        """A polling body: a list of packets, or PacketError."""
        try:
            packets = P.decode_payload(payload)
        except P.PacketError:
            return
        for packet_type, data in packets:
            self.assertIn(packet_type, range(7))
            self.assertIsInstance(data, (str, bytes))

    @given(strategies.one_of(strategies.binary(max_size=100), strategies.text(max_size=100)))
    def test_any_frame_decodes_or_raises_packet_error(self, frame):
        try:
            packet_type, data = P.decode_packet(frame)
        except P.PacketError:
            return
        self.assertIn(packet_type, range(7))

    @given(_packets)
    def test_polling_round_trip(self, packets):
        """Packets joined into one polling body come back the same, binary ones included."""
        body = P.encode_payload([P.encode_polling_packet(t, d) for t, d in packets])
        self.assertEqual(P.decode_payload(body.encode("utf-8")), packets)

    @given(strategies.tuples(strategies.integers(min_value=0, max_value=6), _text))
    def test_websocket_round_trip(self, packet):
        self.assertEqual(P.decode_packet(P.encode_packet(*packet)), packet)


def _frame(payload: bytes, binary: bool, mask: bytes) -> bytes:
    head = bytes([0x82 if binary else 0x81])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class FrameReaderProperties(SynchronousTestCase):
    @given(strategies.binary(max_size=300), strategies.integers(min_value=0, max_value=400))
    def test_any_bytes_give_a_frame_or_none(self, data, limit):
        """Never an exception: a whole frame within the buffer, or None for Autobahn to handle."""
        result = read_data_frame(data, limit)
        if result is not None:
            is_binary, payload, used = result
            self.assertLessEqual(used, len(data))
            self.assertIsInstance(payload, bytes)
            self.assertTrue(limit == 0 or len(payload) <= limit)

    @given(strategies.binary(max_size=1000), strategies.booleans(), strategies.binary(min_size=4, max_size=4), strategies.binary(max_size=20))
    def test_masked_frames_are_unmasked(self, payload, binary, mask, rest):
        """A client frame comes back as its payload; what follows it is left in the buffer."""
        frame = _frame(payload, binary, mask)
        self.assertEqual(read_data_frame(frame + rest, 0), (binary, payload, len(frame)))
        if len(payload) > 10:
            self.assertIsNone(read_data_frame(frame, 10))  # too big: Autobahn refuses it
        self.assertIsNone(read_data_frame(frame[:-1], 0) if payload else None)
