"""The spliced userlist JSON is byte for byte what json.dumps gives for the same payload."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from ilchat.chat.rooms import Member, Room, UserList, _envelope
from ilchat.ilias.repository import _userlist_json


def _plain(payload: dict) -> str:
    return json.dumps(["userlist", payload], separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class UserlistJsonTests(SynchronousTestCase):
    def room(self) -> Room:
        room = Room(3)
        names = [("a", True), ('Zoë "q"', False), ("x</script>\u2028", True), (None, False)]
        for user_id, (name, picture) in zip((12, 5, 7, 100), names):
            room.members[user_id] = Member(user_id, name=name, profile_picture_visible=picture)
            room.mark_present(room.members[user_id])
        return room

    def test_same_bytes_as_json_dumps(self) -> None:
        """Ids sorted numerically, escapes, non-ASCII and null names as json.dumps writes them."""
        payload = _envelope("userlist", 1234, "userlist", "3_0", users=self.room().userlist())
        self.assertIsInstance(payload["users"], UserList)
        self.assertEqual(_userlist_json("userlist", payload), _plain(payload))

    def test_renamed_member_is_encoded_again(self) -> None:
        """The cached entry follows a new name or picture setting (a login again)."""
        room = self.room()
        room.userlist()
        room.members[5].name = "renamed"
        room.members[12].profile_picture_visible = False
        payload = _envelope("userlist", 1, "userlist", 3, users=room.userlist())
        text = _userlist_json("userlist", payload)
        self.assertEqual(text, _plain(payload))
        self.assertIn('"username":"renamed"', text)

    def test_other_payloads_take_the_usual_way(self) -> None:
        """A plain dict (a bus that serialised the payload) or another event: None."""
        payload = _envelope("userlist", 1, "userlist", 3, users=dict(self.room().userlist()))
        self.assertIsNone(_userlist_json("userlist", payload))
        self.assertIsNone(_userlist_json("notice", {"users": self.room().userlist()}))
