"""client.cfg ``standalone``: an internal chat with no ILIAS behind it."""

from __future__ import annotations

from typing import Optional, Tuple

import attrs

from ilchat.config.reader import Reader, default_of, integer, read_settings, text


@attrs.frozen
class StandaloneRoom:
    """One room of a standalone chat: created in the client's SQLite store at start."""

    id: int
    title: str


@attrs.frozen
class StandaloneConfig:
    """The optional ``standalone`` block of a ``client.cfg``: an internal chat with no ILIAS.

    Users log in with a name only on the built-in web page (or IRC), the operator's branding as
    Kiwi IRC's ``startupOptions``: ``title`` is the page's header, ``window_title`` the browser
    tab's title (the ``title`` when empty), ``welcome`` the greeting of the welcome screen and
    ``info`` a longer text under it (plain text: line breaks kept, http(s) links made clickable,
    everything else escaped). ``history`` is how many of a room's latest messages a newcomer
    sees.
    """

    title: str = text("ilchat")
    window_title: str = text("")
    welcome: str = text("Pick a name to join the chat.")
    info: str = text("")
    rooms: Tuple[StandaloneRoom, ...] = (StandaloneRoom(1, "Lobby"),)
    history: int = integer(50, minimum=0, maximum=1000)


def _parse_rooms(sa: Reader) -> Tuple[StandaloneRoom, ...]:
    raw_rooms = sa.get_list("rooms", None, dict)
    if raw_rooms is None:
        return default_of(StandaloneConfig, "rooms")
    rooms = []
    seen = set()
    for index, raw in enumerate(raw_rooms):
        room = sa.item(raw, f"rooms[{index}].")
        room_id = room.get_int("id", minimum=1)
        if room_id in seen:
            raise room.error("id", room_id, "expected a room id not used by another room")
        seen.add(room_id)
        rooms.append(StandaloneRoom(room_id, room.get_str("title", allow_empty=False)))
    if not rooms:
        raise sa.error("rooms", [], "expected at least one room")
    return tuple(rooms)


def parse_standalone(client: Reader) -> Optional[StandaloneConfig]:
    """The ``standalone`` block, or ``None`` for an ILIAS client."""
    if not client.has("standalone"):
        return None
    sa = client.section("standalone")
    return read_settings(StandaloneConfig, sa, rooms=_parse_rooms(sa))


__all__ = ["StandaloneConfig", "StandaloneRoom", "parse_standalone"]
