"""
Tests for the schema files: the SQLite tables are the MySQL (ILIAS) tables, column for column,
and the MySQL schema covers the tables docs/ilias-protocol.rst lists.
"""

import os
import re
import sqlite3

from twisted.trial import unittest

from ilchat.store import ILIAS_TABLES
from ilchat.store.database import read_schema
from tests.support.db import fetch_rows, make_mariadb_database, make_sqlite_database


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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

    def test_mysql_schema_has_every_documented_table(self) -> None:
        """
        The tables docs/ilias-protocol.rst lists are ILIAS_TABLES, and mysql_schema.sql creates
        each. When the shared spec's ilias-tables.sql is beside the checkout, every table it names
        is in that list too.
        """
        documented = documented_tables()
        self.assertEqual(sorted(documented), sorted(ILIAS_TABLES))
        self.assertEqual(set(documented) - created_tables(read_schema("mysql_schema.sql")), set())
        spec = os.path.join(ROOT, "..", "shared", "spec", "ilias-tables.sql")
        if os.path.exists(spec):
            with open(spec) as f:
                self.assertEqual(created_tables(f.read()) - set(documented), set())


def documented_tables() -> list:
    """The first column of the table in the "Tables" section of docs/ilias-protocol.rst."""
    with open(os.path.join(ROOT, "docs", "ilias-protocol.rst"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = lines.index("Tables")
    tables = []
    for line in lines[start + 2:]:
        if line.startswith("Timers"):
            break
        match = re.match(r"``(\w+)``", line)
        if match:
            tables.append(match.group(1))
    return tables


def created_tables(sql: str) -> set:
    return set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?`?(\w+)`?", sql, flags=re.IGNORECASE))
