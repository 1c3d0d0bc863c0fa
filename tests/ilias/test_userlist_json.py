"""The spliced userlist JSON is byte for byte what json.dumps gives for the same payload."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ilchat.ilias.rendering import RoomRenderer, UserList, envelope, userlist_json


def _plain(payload: dict) -> str:
    return json.dumps(["userlist", payload], separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class UserlistJsonTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.renderer = RoomRenderer(Clock())
        self.view = self.renderer._view(3)
        names = [("a", True), ('Zoë "q"', False), ("x</script>\u2028", True), (None, False)]
        for user_id, (name, picture) in zip((12, 5, 7, 100), names):
            self.renderer._present(self.view, {"id": user_id, "name": name, "picture": picture})

    def test_same_bytes_as_json_dumps(self) -> None:
        """Ids sorted numerically, escapes, non-ASCII and null names as json.dumps writes them."""
        payload = envelope("userlist", 1234, "userlist", "3_0", users=self.view.userlist())
        self.assertIsInstance(payload["users"], UserList)
        self.assertEqual(userlist_json("userlist", payload), _plain(payload))

    def test_renamed_member_is_encoded_again(self) -> None:
        """The cached entry follows a new name or picture setting (a login again)."""
        self.view.userlist()
        self.renderer._on_renamed({"ts": 0, "member": {"id": 5, "name": "renamed", "picture": False}})
        self.renderer._on_renamed({"ts": 0, "member": {"id": 12, "name": "a", "picture": False}})
        payload = envelope("userlist", 1, "userlist", 3, users=self.view.userlist())
        text = userlist_json("userlist", payload)
        self.assertEqual(text, _plain(payload))
        self.assertIn('"username":"renamed"', text)
        self.assertIn('"12":{"id":12,"username":"a","profile_picture_visible":false}', text)

    def test_other_payloads_take_the_usual_way(self) -> None:
        """A plain dict (a bus that serialised the payload) or another event: None."""
        payload = envelope("userlist", 1, "userlist", 3, users=dict(self.view.userlist()))
        self.assertIsNone(userlist_json("userlist", payload))
        self.assertIsNone(userlist_json("notice", {"users": self.view.userlist()}))
