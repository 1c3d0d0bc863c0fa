"""``ilchat.statefile``: written whole in a thread, read back once."""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from ilchat.statefile import StateFile, StateFileError


class StateFileTests(TestCase):
    def setUp(self) -> None:
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        self.path = os.path.join(folder, "state.json")
        self.state = StateFile(self.path)

    async def test_write_then_take_once(self) -> None:
        """What was written comes back once; the file is gone afterwards, no temporary left."""
        await self.state.write({"a": [1, "\u00e9\U0001f389"]})
        self.assertEqual(os.listdir(os.path.dirname(self.path)), ["state.json"])
        self.assertEqual(self.state.take(), {"a": [1, "\u00e9\U0001f389"]})
        self.assertFalse(os.path.exists(self.path))
        self.assertIsNone(self.state.take())

    async def test_write_replaces_the_whole_file(self) -> None:
        """A second write replaces the first, however much shorter."""
        await self.state.write({"long": "x" * 10_000})
        await self.state.write([])
        self.assertEqual(self.state.take(), [])

    def test_broken_file_is_an_error_and_removed(self) -> None:
        """Text that is not strict JSON: StateFileError naming the file; it is removed too."""
        for text in (b"{broken", b'{"n": NaN}', b"\xff\xfe"):
            with open(self.path, "wb") as f:
                f.write(text)
            error = self.assertRaises(StateFileError, self.state.take)
            self.assertIn(self.path, str(error))
            self.assertFalse(os.path.exists(self.path))
