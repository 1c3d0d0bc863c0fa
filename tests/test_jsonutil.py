"""The strict JSON codec every boundary uses: what it refuses, and that it never fails otherwise."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from ilchat.jsonutil import MAX_DEPTH, MAX_INT_DIGITS, JSONError, dumps, has_lone_surrogate, loads
from tests.support.properties import given, json_values, strategies


class LoadsTests(SynchronousTestCase):
    REFUSED = {
        "NaN": "NaN is not JSON",
        "[Infinity]": "Infinity is not JSON",
        '{"a":-Infinity}': "-Infinity is not JSON",
        "1e999": "number out of range",
        "[-1e400]": "number out of range",
        "1" * 400 + ".5": "number out of range",
        '"\\ud800"': "lone surrogate",
        '["ok","\\udfff"]': "lone surrogate",
        '{"\\udc00":1}': "lone surrogate",
        '"\\ude00\\ud83d"': "lone surrogate",  # a pair in the wrong order is two lone halves
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1): f"nested deeper than {MAX_DEPTH}",
        "[" * 100_000: "nested too deeply",
        "9" * (MAX_INT_DIGITS + 1): f"more than {MAX_INT_DIGITS} digits",
        "-" + "9" * 5000: f"more than {MAX_INT_DIGITS} digits",
        "[1,": "invalid JSON",
        "": "invalid JSON",
        '{"a":1} x': "invalid JSON",
    }

    def test_each_refusal_names_its_reason(self):
        """Every refused text raises JSONError (a ValueError) whose text says why."""
        for text, reason in self.REFUSED.items():
            with self.assertRaises(JSONError, msg=text[:40]) as caught:
                loads(text)
            self.assertIn(reason, str(caught.exception), text[:40])
            self.assertIsInstance(caught.exception, ValueError)

    def test_raw_surrogates_and_bad_utf8_are_refused(self):
        """A surrogate in the text itself, or bytes that are not UTF-8, are refused too."""
        for text in ('"\ud800"', '{"a\udfff":1}'):
            with self.assertRaises(JSONError):
                loads(text)
        for data in (b'"\xed\xa0\x80"', b'"\xff"'):
            with self.assertRaises(JSONError):
                loads(data)

    def test_what_ilias_sends_is_accepted(self):
        """Pairs of surrogate escapes (an emoji), the limits themselves, and ILIAS payloads pass."""
        self.assertEqual(loads('"\\ud83d\\ude00"'), "\U0001f600")
        self.assertEqual(loads("9" * MAX_INT_DIGITS), int("9" * MAX_INT_DIGITS))
        deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
        self.assertEqual(json.dumps(loads(deep)), json.dumps(json.loads(deep)))
        message = {"content": "hi", "format": {"style": "", "color": "#000", "family": "", "size": 12}}
        self.assertEqual(loads(json.dumps(["message", message, 1])), ["message", message, 1])
        self.assertEqual(loads(b'{"a":"\xc3\xa9"}'), {"a": "\u00e9"})

    def test_tighter_limits_can_be_asked_for(self):
        """A caller reading ids can ask for fewer digits and less depth."""
        with self.assertRaises(JSONError):
            loads("12345678901234567890", max_int_digits=19)
        with self.assertRaises(JSONError):
            loads("[[1]]", max_depth=1)
        self.assertEqual(loads("[1]", max_depth=1), [1])

    @given(strategies.text(max_size=60))
    def test_any_text_decodes_or_raises_json_error(self, text):
        """Whatever the text, the outcome is a value or JSONError, never another exception."""
        try:
            value = loads(text)
        except JSONError:
            return
        # Whatever was decoded can be written again: a refusal echoing it always encodes.
        self.assertEqual(loads(dumps(value)), value)

    @given(strategies.binary(max_size=60))
    def test_any_bytes_decode_or_raise_json_error(self, data):
        try:
            loads(data)
        except JSONError:
            pass

    @given(strategies.from_regex(r"-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,5})?", fullmatch=True))
    def test_numbers_are_finite_and_short_or_refused(self, text):
        """Any number: json's own value when finite and short enough, else JSONError saying why."""
        try:
            expected = json.loads(text)
        except ValueError:
            with self.assertRaises(JSONError):
                loads(text)
            return
        try:
            value = loads(text)
        except JSONError as e:
            if isinstance(expected, int):
                self.assertGreater(len(text.lstrip("-")), MAX_INT_DIGITS)
                self.assertIn("digits", str(e))
            else:
                self.assertIn(expected, (float("inf"), float("-inf")))
                self.assertIn("out of range", str(e))
            return
        self.assertEqual(value, expected)
        self.assertEqual(type(value), type(expected))

    @given(json_values)
    def test_round_trip(self, value):
        """What strict JSON accepts, it writes and reads back unchanged."""
        self.assertEqual(loads(dumps(value)), value)
        self.assertEqual(loads(dumps(value).encode("utf-8")), value)

    @given(json_values, strategies.sampled_from(["[", "{", "\\ud800", "1e999", "NaN", ",", '"']))
    def test_mangled_json_decodes_or_raises_json_error(self, value, junk):
        """Valid JSON with something spliced in: a value that encodes again, or JSONError."""
        text = dumps(value)
        for position in {0, len(text) // 2, len(text)}:
            try:
                decoded = loads(text[:position] + junk + text[position:])
            except JSONError:
                continue
            dumps(decoded)


class DumpsTests(SynchronousTestCase):
    def test_compact_like_json_stringify(self):
        """No spaces, non-ASCII kept as characters (the bytes ILIAS's own server writes)."""
        self.assertEqual(dumps({"a": [1, "é"], "b": None}), '{"a":[1,"é"],"b":null}')

    def test_nan_infinity_and_lone_surrogates_are_refused(self):
        """Nothing a UTF-8 encoder, PHP or JSON.parse would choke on is ever written."""
        for value in (float("nan"), [float("inf")], {"x": -float("inf")}, "\ud800", {"\udc00": 1}):
            with self.assertRaises(JSONError):
                dumps(value)

    def test_non_json_values_still_raise_type_error(self):
        """bytes and objects keep json's TypeError (the Socket.IO encoder relies on it)."""
        with self.assertRaises(TypeError):
            dumps({"a": b"x"})

    @given(strategies.text(max_size=20), json_values)
    def test_text_with_a_surrogate_is_never_written(self, text, value):
        """Either the text is clean and written, or dumps refuses: never a surrogate out."""
        try:
            out = dumps([text, value])
        except JSONError:
            self.assertTrue(has_lone_surrogate(text))
            return
        self.assertFalse(has_lone_surrogate(out))
