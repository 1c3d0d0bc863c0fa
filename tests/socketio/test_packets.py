"""Socket.IO v5 packet codec, without a transport."""

from twisted.trial.unittest import SynchronousTestCase

from ilchat.socketio import packets as P


class EncodeTests(SynchronousTestCase):
    def test_main_namespace_has_no_prefix(self):
        """``/`` is not written; other namespaces are written ``/name,``."""
        self.assertEqual(P.encode_packet(P.CONNECT, "/", {"sid": "x"}), ['0{"sid":"x"}'])
        self.assertEqual(
            P.encode_packet(P.CONNECT, "/onscreen", {"sid": "x"}), ['0/onscreen,{"sid":"x"}']
        )
        self.assertEqual(P.encode_packet(P.DISCONNECT, "/onscreen"), ["1/onscreen,"])

    def test_event_with_ack_id_and_compact_json(self):
        """Events are compact JSON arrays after the ack id; non-ASCII is not escaped."""
        self.assertEqual(
            P.encode_packet(P.EVENT, "/a", ["msg", {"x": "é 🎉"}, 1], 12),
            ['2/a,12["msg",{"x":"é 🎉"},1]'],
        )

    def test_connect_error(self):
        """Refusing a namespace is ``4/nsp,{"message":...}``."""
        self.assertEqual(
            P.encode_packet(P.CONNECT_ERROR, "/nope", {"message": "Invalid namespace"}),
            ['4/nope,{"message":"Invalid namespace"}'],
        )

    def test_bytes_become_binary_event_with_placeholders(self):
        """Bytes anywhere in the payload make a BINARY_EVENT with numbered placeholders."""
        self.assertEqual(
            P.encode_packet(P.EVENT, "/", ["up", b"\x01", {"f": [b"\x02"]}]),
            [
                '52-["up",{"_placeholder":true,"num":0},{"f":[{"_placeholder":true,"num":1}]}]',
                b"\x01",
                b"\x02",
            ],
        )
        self.assertEqual(P.encode_packet(P.ACK, "/n", [b"z"], 3),
                         ['61-/n,3[{"_placeholder":true,"num":0}]', b"z"])

    def test_values_json_cannot_write_still_fail(self):
        """Only bytes take the binary path; other unencodable values raise as before."""
        self.assertRaises(TypeError, P.encode_packet, P.EVENT, "/", ["e", object()])
        self.assertRaises(TypeError, P.encode_packet, P.CONNECT, "/", {"sid": b"x"})


class DecodeTests(SynchronousTestCase):
    def test_decode_event_with_namespace_and_id(self):
        """Namespace, ack id and payload are split as socket.io-parser does."""
        p = P.decode_packet('2/chat,7["hi",1]')
        self.assertEqual((p.type, p.namespace, p.id, p.data), (P.EVENT, "/chat", 7, ["hi", 1]))

    def test_decode_connect_with_and_without_auth(self):
        """CONNECT may carry an auth object or nothing; ``/`` is the default namespace."""
        p = P.decode_packet('0{"token":"t"}')
        self.assertEqual((p.namespace, p.data), ("/", {"token": "t"}))
        p = P.decode_packet("0/x,")
        self.assertEqual((p.namespace, p.data), ("/x", None))

    def test_decode_binary_event_and_reconstruct(self):
        """The attachment count is read, and placeholders are replaced by the buffers."""
        p = P.decode_packet('52-/a,["up",{"_placeholder":true,"num":1},{"_placeholder":true,"num":0}]')
        self.assertEqual(p.attachments, 2)
        self.assertEqual(P.reconstruct(p.data, [b"A", b"B"]), ["up", b"B", b"A"])

    def test_malformed_packets_raise_packet_error(self):
        """What socket.io-parser rejects is rejected here too."""
        for bad in (
            "", "7", "x", "2", "2/a,", "2{", '2{"a":1}', "2[]", '2["connect"]', '2["disconnect",1]',
            '0["x"]', '1/a,{"x":1}', '3/a,1{"x":1}', '5-["x"]', '5x-["x"]', "2[NaN]",
            '2["a",Infinity]',
        ):
            self.assertRaises(P.PacketError, P.decode_packet, bad)

    def test_placeholder_out_of_range_raises(self):
        """A placeholder pointing past the attachments is an error, not an IndexError."""
        self.assertRaises(
            P.PacketError, P.reconstruct, [{"_placeholder": True, "num": 3}], [b"x"]
        )
