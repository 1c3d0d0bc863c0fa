"""The project's own documents are valid reStructuredText (a broken table renders as an error)."""

from __future__ import annotations

import glob
import io
import os

import docutils.core
import docutils.utils
from twisted.trial.unittest import TestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = ["README.rst", "HACKING.rst", "bench/README.rst"] + sorted(
    os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "docs", "*.rst"))
)


class DocumentTests(TestCase):
    def test_documents_parse_without_warnings(self) -> None:
        """Every document parses with no docutils warning or error."""
        self.assertIn("docs/design.rst", DOCUMENTS)
        for name in DOCUMENTS:
            with open(os.path.join(ROOT, name), encoding="utf-8") as f:
                text = f.read()
            messages = io.StringIO()
            docutils.core.publish_doctree(
                text,
                source_path=name,
                settings_overrides={"report_level": docutils.utils.Reporter.WARNING_LEVEL,
                                    "halt_level": docutils.utils.Reporter.SEVERE_LEVEL + 1,
                                    "warning_stream": messages},
            )
            self.assertEqual(messages.getvalue(), "", name)

    def test_documents_refer_only_to_files_in_the_repository(self) -> None:
        """A clone on its own explains itself: no document points outside the repository."""
        for name in DOCUMENTS:
            with open(os.path.join(ROOT, name), encoding="utf-8") as f:
                self.assertNotIn("../shared", f.read(), name)
