"""
Property tests of the Socket.IO packet codec: any text decodes or raises PacketError (never
ValueError, OverflowError or RecursionError), and encoded packets decode back to themselves.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ilchat.socketio import packets as P
from tests.support.properties import given, json_values, strategies

_digits = strategies.text("0123456789", min_size=1, max_size=6000)
_namespaces = strategies.one_of(
    strategies.just("/"),
    strategies.text(strategies.characters(blacklist_categories=("Cs",), blacklist_characters=","), max_size=10).map(lambda s: "/" + s),
)
_events = strategies.text(max_size=10).filter(lambda s: s not in P.RESERVED_EVENTS)
_clean_events = _events.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))


class SocketIOCodecProperties(SynchronousTestCase):
    @given(strategies.text(max_size=200))
    def test_any_text_decodes_or_raises_packet_error(self, text):
        try:
            packet = P.decode_packet(text)
        except P.PacketError:
            return
        self.assertIn(packet.type, range(7))
        self.assertLessEqual(packet.attachments, P.MAX_ATTACHMENTS)

    @given(strategies.sampled_from("0123456"), _digits, strategies.sampled_from(["", "-", "-[1]", '["e"]', "/a,"]))
    def test_long_digit_runs_raise_packet_error(self, kind, digits, tail):
        """Ack ids and attachment counts of thousands of digits are PacketErrors, not ValueErrors."""
        try:
            packet = P.decode_packet(kind + digits + tail)
        except P.PacketError:
            return
        self.assertTrue(packet.id is None or packet.id < 10**P.MAX_ACK_ID_DIGITS)

    @given(
        strategies.sampled_from([P.EVENT, P.ACK]),
        _namespaces,
        _clean_events,
        strategies.lists(strategies.one_of(json_values, strategies.binary(max_size=8)), max_size=4),
        strategies.one_of(strategies.none(), strategies.integers(min_value=0, max_value=10**15 - 1)),
    )
    def test_round_trip(self, kind, namespace, event, args, ack_id):
        """encode_packet then decode_packet (and reconstruct) gives the packet back."""
        data = [event, *args] if kind == P.EVENT else args
        text, *buffers = P.encode_packet(kind, namespace, data, ack_id)
        packet = P.decode_packet(text)
        self.assertEqual(packet.namespace, namespace)
        self.assertEqual(packet.id, ack_id)
        self.assertEqual(packet.attachments, len(buffers))
        self.assertEqual(P.reconstruct(packet.data, buffers), data)
