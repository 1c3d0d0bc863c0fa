"""client.cfg (spec §1.4): one ILIAS client, its database, and how its users are identified."""

from __future__ import annotations

import re
from typing import Optional, Tuple

import attrs

from ilchat.config.reader import JSONValue, Reader, default_of
from ilchat.config.standalone import StandaloneConfig, parse_standalone

_MYSQL_TYPES = ("mysql", "mariadb", "innodb", "")

#: The values of client.cfg ``identity``.
IDENTITY_MODES: Tuple[str, ...] = ("ilias-session", "trust")

#: The values of client.cfg ``private_rooms``: ILIAS 8 private rooms (``subRoomId``) detected from
#: the database schema, always on (the start fails without the ILIAS 8 tables), or off.
PRIVATE_ROOM_MODES: Tuple[str, ...] = ("auto", "on", "off")

#: The values of client.cfg ``escape_messages``: message texts HTML-escaped unless the database
#: shows ILIAS 10 or later (``ilchat.ilias.escaping``), always, or never.
ESCAPE_MODES: Tuple[str, ...] = ("auto", "on", "off")

#: What a cookie name may be (RFC 6265 token characters).
_COOKIE_NAME_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@attrs.frozen
class DatabaseConfig:
    """The ``database`` block of a ``client.cfg``.

    ``type`` is ``"mysql"`` (ILIAS writes ``mysql``; ``mariadb``, ``innodb`` and ``""`` mean the
    same) or ``"sqlite"``, whose ``name`` is the database file path (absolute after loading).
    """

    type: str
    name: str
    host: str = "localhost"
    port: int = 3306
    user: str = ""
    password: str = attrs.field(default="", repr=False)


@attrs.frozen
class ClientConfig:
    """One ``client.cfg`` (spec §1.4): one ILIAS client, i.e. namespaces ``/<name>`` and ``/<name>-im``.

    The keys only PHP and the browser use are kept for completeness (as written, unchecked); the
    server ignores them.
    """

    path: str
    name: str
    auth_key: str = attrs.field(repr=False)
    auth_secret: str = attrs.field(repr=False)
    database: DatabaseConfig
    enable_osd: JSONValue = None
    enable_osc: JSONValue = None
    enable_browser_notifications: JSONValue = None
    conversation_idle_state_in_minutes: JSONValue = None
    osd_intervall: JSONValue = None
    chat_enabled: JSONValue = None
    play_invitation_sound: JSONValue = None
    standalone: Optional[StandaloneConfig] = None
    #: ``"ilias-session"`` (the socket's user comes from the ILIAS session cookie of its
    #: handshake) or ``"trust"`` (the browser's ``login`` is believed, as with the Node server).
    #: Standalone clients have their own login scheme and ignore it.
    identity: str = "ilias-session"
    #: The ILIAS session cookie's name (PHP's ``session.name``).
    session_cookie: str = "PHPSESSID"
    #: The ILIAS client id the ``ilClientId`` cookie must name; ILIAS's default chat instance
    #: name is the client id, so it defaults to ``name``.
    ilias_client_id: str = ""
    #: ILIAS's ``ANONYMOUS_USER_ID`` (client.ini.php ``[system]``, 13 on every installation): a
    #: session of the anonymous user is nobody's.
    anonymous_user_id: int = 13
    #: ILIAS 8 private rooms (``subRoomId`` > 0): one of L{PRIVATE_ROOM_MODES}. ``"auto"`` turns
    #: them on when the database has the ILIAS 8 tables (``chatroom_prooms``,
    #: ``chatroom_psessions``, ``chatroom_history.sub_room``).
    private_rooms: str = "auto"
    #: Message texts HTML-escaped for the ILIAS 8/9 pages, which insert them as HTML: one of
    #: L{ESCAPE_MODES}. ``"auto"`` escapes unless ``il_db_steps`` shows ILIAS 10 or later.
    escape_messages: str = "auto"


# Keys PHP writes for the browser; the server only keeps them.
_CLIENT_UI_KEYS = (
    "enable_osd",
    "enable_osc",
    "enable_browser_notifications",
    "conversation_idle_state_in_minutes",
    "osd_intervall",
    "chat_enabled",
    "play_invitation_sound",
)


def parse_database(reader: Reader) -> DatabaseConfig:
    db = reader.section("database", required=True)
    db_type = db.get_str("type", "")
    if db_type.lower() in _MYSQL_TYPES:
        return DatabaseConfig(
            type="mysql",
            name=db.get_str("name", allow_empty=False),
            host=db.get_str("host", "") or default_of(DatabaseConfig, "host"),
            port=db.get_int(
                "port", default_of(DatabaseConfig, "port"), minimum=1, maximum=65535,
                allow_str=True,
            ),
            user=db.get_str("user", default_of(DatabaseConfig, "user")),
            password=db.get_str("pass", default_of(DatabaseConfig, "password")),
        )
    if db_type.lower() == "sqlite":
        name = db.get_str("name", allow_empty=False)
        db.check_no_nul("name", name)
        return DatabaseConfig(type="sqlite", name=db.resolve(name))
    raise db.error("type", db_type, "one of mysql, mariadb, innodb, sqlite")


def parse_client(reader: Reader) -> ClientConfig:
    name = reader.get_str("name", allow_empty=False)
    if "/" in name or name != name.strip():
        raise reader.error("name", name, "expected a name without slashes or surrounding spaces")
    auth = reader.section("auth", required=True)
    cookie = reader.get_str(
        "session_cookie", default_of(ClientConfig, "session_cookie"), allow_empty=False
    )
    if not _COOKIE_NAME_RE.match(cookie):
        raise reader.error("session_cookie", cookie, "expected a cookie name such as PHPSESSID")
    return ClientConfig(
        path=reader.path,
        name=name,
        auth_key=auth.get_str("key", allow_empty=False),
        auth_secret=auth.get_str("secret", allow_empty=False),
        database=parse_database(reader),
        standalone=parse_standalone(reader),
        identity=reader.get_str(
            "identity", default_of(ClientConfig, "identity"), choices=IDENTITY_MODES
        ),
        session_cookie=cookie,
        ilias_client_id=reader.get_str("ilias_client_id", name, allow_empty=False),
        anonymous_user_id=reader.get_int(
            "anonymous_user_id", default_of(ClientConfig, "anonymous_user_id"), minimum=0,
            allow_str=True,
        ),
        private_rooms=reader.get_str(
            "private_rooms", default_of(ClientConfig, "private_rooms"), choices=PRIVATE_ROOM_MODES
        ),
        escape_messages=reader.get_str(
            "escape_messages", default_of(ClientConfig, "escape_messages"), choices=ESCAPE_MODES
        ),
        **{key: reader.data.get(key) for key in _CLIENT_UI_KEYS},
    )


__all__ = ["ClientConfig", "DatabaseConfig", "ESCAPE_MODES", "IDENTITY_MODES", "PRIVATE_ROOM_MODES",
           "parse_client", "parse_database"]
