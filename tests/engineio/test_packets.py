"""Engine.IO v4 packet codec, without a transport."""

from twisted.trial.unittest import SynchronousTestCase

from ilchat.engineio import packets as P


class EncodeTests(SynchronousTestCase):
    def test_text_packet_is_type_digit_then_data(self):
        """A text packet is its type digit followed by the data, as engine.io-parser writes it."""
        self.assertEqual(P.encode_packet(P.MESSAGE, "hello"), "4hello")
        self.assertEqual(P.encode_packet(P.PING), "2")
        self.assertEqual(P.encode_packet(P.PONG, "probe"), "3probe")

    def test_binary_websocket_packet_is_raw_bytes(self):
        """Over a websocket a binary message is the bytes alone, in a binary frame."""
        self.assertEqual(P.encode_packet(P.MESSAGE, b"\x00\x01"), b"\x00\x01")

    def test_binary_polling_packet_is_b_and_base64(self):
        """In a polling payload a binary message is ``b`` plus base64."""
        self.assertEqual(P.encode_polling_packet(P.MESSAGE, b"\x01\x02\x03\x04"), "bAQIDBA==")

    def test_payload_joins_with_record_separator(self):
        """Polling packets are joined with \\x1e."""
        self.assertEqual(P.encode_payload(["4a", "2", "bAQ=="]), "4a\x1e2\x1ebAQ==")

    def test_only_messages_can_be_binary(self):
        """A binary ping is not a thing in Engine.IO v4."""
        self.assertRaises(P.PacketError, P.encode_packet, P.PING, b"x")


class DecodeTests(SynchronousTestCase):
    def test_decode_text_and_binary_frames(self):
        """Text frames carry a type; binary frames are binary messages."""
        self.assertEqual(P.decode_packet("4hi"), (P.MESSAGE, "hi"))
        self.assertEqual(P.decode_packet("2probe"), (P.PING, "probe"))
        self.assertEqual(P.decode_packet(b"\xff"), (P.MESSAGE, b"\xff"))

    def test_decode_payload_splits_and_decodes_base64(self):
        """A POST body is split on \\x1e, with ``b`` packets base64-decoded."""
        self.assertEqual(
            P.decode_payload(b"4hello\x1ebAQID\x1e3"),
            [(P.MESSAGE, "hello"), (P.MESSAGE, b"\x01\x02\x03"), (P.PONG, "")],
        )

    def test_unicode_survives_round_trip(self):
        """Non-ASCII text (an emoji is 4 bytes of UTF-8) decodes back to the same string."""
        self.assertEqual(P.decode_payload("4🎉 é".encode()), [(P.MESSAGE, "🎉 é")])

    def test_malformed_input_raises_packet_error(self):
        """Unknown types, empty packets, bad base64 and bad UTF-8 raise PacketError only."""
        for bad in (b"", b"9x", b"4a\x1e", b"b!!!", b"\xff\xfe", b"x"):
            self.assertRaises(P.PacketError, P.decode_payload, bad)
        self.assertRaises(P.PacketError, P.decode_packet, "")
        self.assertRaises(P.PacketError, P.decode_packet, "7")
