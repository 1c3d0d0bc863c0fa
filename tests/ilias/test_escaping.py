"""
End-to-end tests of message-text HTML escaping per ILIAS version (``ilchat.ilias.escaping``):
browsers on real sockets (python-socketio), an IRC client, a whole server on MariaDB and SQLite
databases of ILIAS 9 (no ILIAS 10 step in ``il_db_steps``) and ILIAS 10, and client.cfg
``escape_messages`` overriding what the database says.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

from twisted.internet import threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from ilchat.ilias.escaping import html_escaped, html_unescaped
from ilchat.ilias.osc import OnScreenChatComponent
from tests.ilias.repository_support import RepositoryServerMixin, sleep
from tests.ilias.test_osc import ALICE, BOB, OscServerMixin, _is_message, wait_until_rows
from tests.irc.test_bridge import CHANNEL, IrcBridgeMixin
from tests.irc.test_history import batch_of
from tests.support.db import insert_rows_async, make_database, mark_ilias9
from tests.support.server import start_server

#: What a user writes, and what ILIAS 9's Node server made of it (``Helper/HTMLEscape.js``).
SCRIPT = '<script>alert("x")</script> & &amp; 1 < 2'
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &amp; 1 &lt; 2"


class EscapingFunctionTests(unittest.SynchronousTestCase):
    def test_escapes_as_ilias_9_did_and_leaves_entities(self) -> None:
        """``&`` only where it starts no entity, so an escaped text stays as it is."""
        self.assertEqual(html_escaped(SCRIPT), ESCAPED)
        self.assertEqual(html_escaped(ESCAPED), ESCAPED)
        self.assertEqual(html_escaped("party 🎉 'quoted'"), "party 🎉 'quoted'")


class LogCapture:
    """The formatted log lines emitted while it is attached (removed by the test's cleanup)."""

    def __init__(self, test: unittest.TestCase) -> None:
        self.lines: List[str] = []
        globalLogPublisher.addObserver(self._observe)
        test.addCleanup(globalLogPublisher.removeObserver, self._observe)

    def _observe(self, event: Dict[str, Any]) -> None:
        self.lines.append(formatEvent(event) or "")

    def matching(self, text: str) -> List[str]:
        return [line for line in self.lines if text in line]


class VersionedDatabaseMixin:
    """A fresh database of C{database_kind}: ILIAS 10's, or ILIAS 9's with C{ilias9}."""

    ilias9 = True

    async def versioned_database(self) -> Any:
        db = make_database(self, self.database_kind)
        if self.ilias9:
            await threads.deferToThread(mark_ilias9, db)
        return db


class RepositoryStartMixin(VersionedDatabaseMixin):
    async def start(self) -> Any:
        self.databases = {}
        db = await self.versioned_database()
        await insert_rows_async(db, "chatroom_settings", [{"room_id": 1}, {"room_id": 2}])
        self.databases[self.client_names[0]] = db
        self.server = await self.start_on(self.databases)
        self.browsers = []
        self.addCleanup(self._close_browsers)
        return self.server


async def stored_contents(test: Any, count: int) -> List[str]:
    """The ``content`` of the first C{count} ``chatroom_history`` rows, once they are written."""
    rows = await test.history()
    for _ in range(200):
        if len(rows) >= count:
            break
        await sleep(0.05)
        rows = await test.history()
    return [json.loads(row["message"])["content"] for row in rows]


class RepositoryEscapingMixin(RepositoryStartMixin, RepositoryServerMixin):
    """A ``<script>`` message in room 1: what the other browser gets and what is stored."""

    #: Whether this version's page gets (and the table holds) the escaped text.
    expect_escaped = True

    async def test_message_text_per_ilias_version(self) -> None:
        logs = LogCapture(self)
        alice, bob = await self.alice_and_bob_in_room()
        expected = ESCAPED if self.expect_escaped else SCRIPT
        await alice.emit("message", {"content": SCRIPT, "format": {}}, 1)
        message = await bob.wait_for("message", expected)
        self.assertEqual(message["from"], {"id": 6, "username": "alice",
                                           "profile_picture_visible": False})
        self.assertNotIn("subRoomId", message)  # ILIAS 9/10 frames, not ILIAS 8's
        self.assertEqual((await alice.wait_for("message", expected))["content"], expected)
        # A whisper is the same text in the same form, for its two parties.
        await bob.emit("message", {"content": SCRIPT, "format": {},
                                   "target": {"username": "alice", "id": 6, "public": 0}}, 1)
        whisper = await alice.wait_for("message", expected, count=2)
        self.assertEqual(whisper["target"]["id"], 6)
        self.assertEqual(await stored_contents(self, 2), [expected, expected])
        # ILIAS 9/10 store no connect or disconnected notices (ILIAS 8 did).
        await alice.close()
        await bob.wait_for("notice", "disconnected")
        await sleep(0.2)
        self.assertEqual([json.loads(r["message"])["type"] for r in await self.history()],
                         ["message", "message"])
        how = "HTML-escaped" if self.expect_escaped else "sent as written"
        self.assertEqual(len(logs.matching("onscreen repository chat: message texts " + how)), 1,
                         logs.lines)


class Ilias9RepositoryMariaDBTests(RepositoryEscapingMixin, unittest.TestCase):
    database_kind = "mysql"


class Ilias9RepositorySQLiteTests(RepositoryEscapingMixin, unittest.TestCase):
    database_kind = "sqlite"


class Ilias10RepositoryMariaDBTests(RepositoryEscapingMixin, unittest.TestCase):
    database_kind = "mysql"
    ilias9 = False
    expect_escaped = False


class Ilias10RepositorySQLiteTests(RepositoryEscapingMixin, unittest.TestCase):
    database_kind = "sqlite"
    ilias9 = False
    expect_escaped = False


class OffOverridesIlias9MariaDBTests(RepositoryEscapingMixin, unittest.TestCase):
    """``escape_messages: off`` on an ILIAS 9 database: as written."""

    database_kind = "mysql"
    client_settings = {"escape_messages": "off"}
    expect_escaped = False


class OnOverridesIlias10SQLiteTests(RepositoryEscapingMixin, unittest.TestCase):
    """``escape_messages: on`` on an ILIAS 10 database: escaped."""

    database_kind = "sqlite"
    ilias9 = False
    client_settings = {"escape_messages": "on"}


class IrcIntoIlias9Mixin(RepositoryStartMixin, IrcBridgeMixin):
    """An IRC user's ``<script>`` reaches an ILIAS 9 page escaped; IRC keeps it as written."""

    async def test_irc_message_is_escaped_for_the_ilias_9_page(self) -> None:
        await self.start()
        bob = await self.enter(7, "bob")
        irc = await self.irc_in_room("ircer")
        watcher = await self.irc_in_room("watcher")
        irc.send(f"PRIVMSG {CHANNEL} :{SCRIPT}")
        message = await bob.wait_for("message", ESCAPED)
        self.assertEqual(message["from"]["username"], "ircer")
        self.assertEqual(await stored_contents(self, 1), [ESCAPED])
        seen = await watcher.wait_for("PRIVMSG")
        self.assertEqual(seen.params, (CHANNEL, SCRIPT))
        # And the other way: a browser's text goes to IRC as written, to the page escaped.
        await bob.emit("message", {"content": "a <b> & c", "format": {}}, 1)
        seen = await irc.wait_for("PRIVMSG", lambda m: m.params[1] == "a <b> & c")
        self.assertEqual(seen.params, (CHANNEL, "a <b> & c"))
        await bob.wait_for("message", "a &lt;b&gt; &amp; c")

    async def test_irc_history_shows_the_texts_as_written(self) -> None:
        """The rows are stored escaped for the ILIAS 9 page; CHATHISTORY and JOIN show them unescaped."""
        await self.start()
        bob = await self.enter(7, "bob")
        await bob.emit("message", {"content": "a <b> & c", "format": {}}, 1)
        await bob.wait_for("message", "a &lt;b&gt; &amp; c")
        await bob.emit("message", {"content": 'x "&amp;" y', "format": {}}, 1)
        await bob.wait_for("message", 'x &quot;&amp;&quot; y')
        self.assertEqual(await stored_contents(self, 2), ["a &lt;b&gt; &amp; c", "x &quot;&amp;&quot; y"])
        irc = await self.irc_in_room("reader", caps=("batch", "draft/chathistory"))
        irc.clear()
        irc.send(f"CHATHISTORY LATEST {CHANNEL} * 10")
        lines = await batch_of(irc)
        # An entity the writer typed was stored as typed, so it reads back as its character.
        self.assertEqual([m.params[1] for m in lines], ["a <b> & c", 'x "&" y'])
        self.assertEqual(html_unescaped(html_escaped("1 < 2 & \"3\" > 0")), '1 < 2 & "3" > 0')


class IrcIntoIlias9MariaDBTests(IrcIntoIlias9Mixin, unittest.TestCase):
    database_kind = "mysql"


class IrcIntoIlias9SQLiteTests(IrcIntoIlias9Mixin, unittest.TestCase):
    database_kind = "sqlite"


class OscEscapingMixin(VersionedDatabaseMixin, OscServerMixin):
    """The On-Screen Chat: message, ``latestMessage``, stored row and history in one form."""

    expect_escaped = True
    client_settings: Dict[str, Any] = {}

    async def start(self, database: Any = None) -> Any:
        if database is None:
            database = await self.versioned_database()
            await insert_rows_async(database, "usr_pref", [
                {"usr_id": u, "keyword": "chat_osc_accept_msg", "value": "y"}
                for u in self.accepting])
        self.database = database
        self.server = await start_server(self, database=database, clients=[self.client_settings],
                                         client_components=[OnScreenChatComponent])
        if not hasattr(self, "tabs"):
            self.tabs = []
            self.addCleanup(self._close_tabs)
        return self.server

    async def test_message_text_per_ilias_version(self) -> None:
        logs = LogCapture(self)
        await self.start()
        expected = ESCAPED if self.expect_escaped else SCRIPT
        alice, bob = await self.tab(ALICE), await self.tab(BOB)
        conv = (await self.open(alice, ALICE, BOB))["id"]
        await alice.emit("message", conv, 6, SCRIPT)
        message = await bob.wait_for("message", _is_message(expected))
        self.assertEqual(message["userId"], 6)
        conversation = await bob.wait_for("conversation")
        self.assertEqual(conversation["latestMessage"]["message"], expected)
        stored = await wait_until_rows(self, "SELECT message FROM osc_messages")
        self.assertEqual(stored, [{"message": expected}])
        await bob.emit("history", conv, None, False)
        history = await bob.wait_for("history")
        self.assertEqual([m["message"] for m in history["messages"]], [expected])
        # After a restart the latest message comes from the table: the same form.
        await self.restart()
        bob = await self.tab(BOB)
        again = await self.open(bob, BOB, ALICE)
        self.assertEqual(again["latestMessage"]["message"], expected)
        how = "HTML-escaped" if self.expect_escaped else "sent as written"
        self.assertEqual(len(logs.matching("onscreen On-Screen Chat: message texts " + how)), 2,
                         logs.lines)


class Ilias9OscMariaDBTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "mysql"


class Ilias9OscSQLiteTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "sqlite"


class Ilias10OscMariaDBTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "mysql"
    ilias9 = False
    expect_escaped = False


class Ilias10OscSQLiteTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "sqlite"
    ilias9 = False
    expect_escaped = False


class OscOnOverridesIlias10MariaDBTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "mysql"
    ilias9 = False
    client_settings = {"escape_messages": "on"}


class OscOffOverridesIlias9SQLiteTests(OscEscapingMixin, unittest.TestCase):
    database_kind = "sqlite"
    client_settings = {"escape_messages": "off"}
    expect_escaped = False
