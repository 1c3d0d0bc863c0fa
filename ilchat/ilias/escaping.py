# -*- test-case-name: tests.ilias.test_escaping -*-
"""
Message texts HTML-escaped for the ILIAS pages that insert them as HTML (spec §3.2, §3.4).

Up to ILIAS 9 the Node server escaped what users wrote before it sent and stored it (repository
chat: ``data.content``, ``Helper/HTMLEscape.js``; On-Screen Chat: ``message``), and the pages
insert those texts as HTML: ILIAS 8's ``.html(smileys.replace(…))``; ILIAS 9's
``messageSpan.html(content)`` since the fix for Mantis 40650 (PRs #7167/#7179, March 2024; the
first ILIAS 9 releases wrote the text with ``.text()``, where an escaped text merely shows
``&lt;``); the On-Screen Chat until PR #7963. ILIAS 10 escapes in the page (``textContent``; the
update step of #7963 un-escapes the stored ``osc_messages``), so there a server that escapes
shows ``&amp;lt;``. ilchat therefore escapes for ILIAS 8 and 9 and not for ILIAS 10, on the way in
(the On-Screen Chat) or where it renders and stores (the repository chat), so that a
``<script>`` from a browser, an IRC user or the cluster never reaches an ILIAS 9 page as markup,
and the rows look as that version's Node server wrote them.

client.cfg ``escape_messages`` decides: ``on``, ``off``, or ``auto`` (the default): escape
unless the database shows ILIAS 10 or later, i.e. ILIAS's setup log ``il_db_steps`` has the
finished step 1 of ``ILIAS\\OnScreenChat\\Setup\\UpdateSteps`` (the un-escaping step that
exists only from ILIAS 10 on). A database that cannot tell gets the safe choice: escaped.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger

from ilchat.store import StoreError

__all__ = ["ILIAS10_STEP", "escape_messages", "html_escaped", "html_unescaped"]

#: The ``il_db_steps`` row (class, step) ILIAS 10's setup writes when it un-escapes the stored
#: On-Screen Chat messages (``components/ILIAS/OnScreenChat/classes/Setup/UpdateSteps.php``).
ILIAS10_STEP = ("ILIAS\\OnScreenChat\\Setup\\UpdateSteps", 1)

#: What the ILIAS ≤ 9 server escaped (``Helper/HTMLEscape.js``): an ``&`` that starts no entity,
#: and ``<``, ``>``, ``"``. An already escaped text stays as it is.
_ESCAPES = ((re.compile(r"&(?!\w+;)", re.ASCII), "&amp;"), (re.compile("<"), "&lt;"),
            (re.compile(">"), "&gt;"), (re.compile('"'), "&quot;"))

_log = Logger()


def html_escaped(text: str) -> str:
    """
    A message's text as the ILIAS ≤ 9 server sent and stored it. Astral characters stay (ILIAS
    made them ``?`` for its 3-byte utf8 columns; ilchat's columns are utf8mb4).
    """
    for pattern, replacement in _ESCAPES:
        text = pattern.sub(replacement, text)
    return text


#: The four escapes undone, ``&amp;`` last so that ``&amp;lt;`` becomes ``&lt;``, not ``<``.
_UNESCAPES = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&"))


def html_unescaped(text: str) -> str:
    """
    A stored, escaped text as its writer wrote it (for readers that are not ILIAS pages: IRC's
    history). A writer's own ``&lt;`` was stored as it was, so it comes back as ``<``.
    """
    for entity, character in _UNESCAPES:
        text = text.replace(entity, character)
    return text


async def escape_messages(config: Any, store: Any, what: str) -> bool:
    """
    Whether C{what} (a component of the client C{config}) escapes message texts: client.cfg
    ``escape_messages``, or for ``auto`` whether the database lacks ILIAS 10's step. Logged.
    """
    mode = getattr(config, "escape_messages", "auto")
    if mode == "auto":
        try:
            ilias10 = await store.update_step_finished(*ILIAS10_STEP)
        except StoreError as e:  # a database that cannot tell: the safe choice
            _log.warn("{what}: could not read il_db_steps ({error}); message texts HTML-escaped",
                      what=what, error=e)
            return True
        escape = not ilias10
        why = ("ILIAS 10 or later: il_db_steps has {} step {}".format(*ILIAS10_STEP) if ilias10
               else "no ILIAS 10 update step in il_db_steps: ILIAS 8 or 9")
    else:
        escape = mode == "on"
        why = "client.cfg escape_messages = " + mode
    _log.info("{what}: message texts {how} ({why})", what=what,
              how="HTML-escaped" if escape else "sent as written", why=why)
    return escape
