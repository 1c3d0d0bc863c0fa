"""
Tests for the schema files: the SQLite tables are the MySQL (ILIAS) tables, column for column,
and the MySQL schema covers the tables of the spec's ``ilias-tables.sql``.
"""

import os
import sqlite3

from twisted.trial import unittest

from ilchat.store import ILIAS_TABLES
from tests.support.db import fetch_rows, make_mariadb_database, make_sqlite_database


class SchemaTests(unittest.SynchronousTestCase):
    """The two schema files describe the same tables."""

    def test_sqlite_tables_have_the_mysql_columns(self) -> None:
        """Every table ilchat uses has the same column names, in the same order, on both."""
        mysql = make_mariadb_database(self)
        sqlite = make_sqlite_database(self)
        for table in ILIAS_TABLES:
            mysql_columns = [
                row["c"]
                for row in fetch_rows(
                    mysql,
                    "SELECT column_name AS c FROM information_schema.columns"
                    " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    (mysql.name, table),
                )
            ]
            connection = sqlite3.connect(sqlite.name)
            try:
                sqlite_columns = [row[1] for row in connection.execute("PRAGMA table_info({})".format(table))]
            finally:
                connection.close()
            self.assertTrue(mysql_columns, table)
            self.assertEqual(sqlite_columns, mysql_columns, table)

    def test_mysql_tables_are_utf8mb4(self) -> None:
        """Every text column of the MySQL schema is utf8mb4, so emoji fit (spec 10.6)."""
        mysql = make_mariadb_database(self)
        rows = fetch_rows(
            mysql,
            "SELECT table_name AS t, column_name AS c, character_set_name AS cs FROM information_schema.columns"
            " WHERE table_schema = ? AND character_set_name IS NOT NULL",
            (mysql.name,),
        )
        self.assertTrue(rows)
        self.assertEqual({row["cs"] for row in rows}, {"utf8mb4"})

    def test_mysql_schema_has_every_table_of_the_spec(self) -> None:
        """The tables of ../shared/spec/ilias-tables.sql all exist in mysql_schema.sql."""
        spec = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "spec", "ilias-tables.sql")
        if not os.path.exists(spec):
            raise unittest.SkipTest("the shared spec is not beside the checkout")
        with open(spec) as f:
            spec_tables = {
                line.split()[2] for line in f if line.startswith("CREATE TABLE")
            }
        self.assertEqual(spec_tables - set(ILIAS_TABLES), set())
