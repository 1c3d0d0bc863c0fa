"""client.cfg ``standalone``: an internal chat with no ILIAS behind it."""

from __future__ import annotations

from typing import Optional, Tuple

import attrs

from ilchat.config.reader import Reader, default_of, integer, read_settings, setting, text

#: The types that may be shared unless ``files_types`` says otherwise.
DEFAULT_FILE_TYPES = (
    "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain",
    "application/zip",
)


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

    File sharing is on when ``files_folder`` names a folder (relative to the config file's; files
    are kept there under random ids): files of at most ``files_max_bytes`` (at most 2,000,000, the HTTP body limit)
    and of one of the MIME types ``files_types``.
    """

    title: str = text("ilchat")
    window_title: str = text("")
    welcome: str = text("Pick a name to join the chat.")
    info: str = text("")
    rooms: Tuple[StandaloneRoom, ...] = (StandaloneRoom(1, "Lobby"),)
    history: int = integer(50, minimum=0, maximum=1000)
    files_folder: str = setting("", lambda r, k, d: r.get_path(k, d))
    files_max_bytes: int = integer(1_000_000, minimum=1, maximum=2_000_000)
    files_types: Tuple[str, ...] = setting(
        DEFAULT_FILE_TYPES, lambda r, k, d: tuple(t.strip().lower() for t in r.get_list(k, d))
    )


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


__all__ = ["DEFAULT_FILE_TYPES", "StandaloneConfig", "StandaloneRoom", "parse_standalone"]
