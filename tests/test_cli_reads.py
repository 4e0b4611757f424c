"""The ``llmpool`` read commands: they never create or migrate a database, and they show every
row, invalid ones too (marked, with the reason, never a secret)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from test_cli import ok

#: Every command line that only reads the table.
READS = [
    ("list",),
    ("list", "--json"),
    ("show", "GPT-4"),
    ("audit",),
    ("chain",),
    ("doctor",),
    ("export",),
    ("usage",),
    ("check",),
    ("routing", "global"),
    ("apply", "-", "--dry-run"),
]


def tables(url: str) -> list[str]:
    """The tables of the database (of the schema on the URL's search_path)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        return sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_a_read_on_an_unmigrated_database_creates_nothing_and_names_migrate(
    database_url: str, args: tuple[str, ...]
) -> None:
    """A read command on a database without llmpool's tables fails with one line naming
    ``llmpool migrate``: no SQLite file is created, no table on PostgreSQL."""
    result = run_cli(*args, "--database-url", database_url, stdin='{"llms": []}')
    assert (result.code, result.out) == (1, ""), result.err
    (line,) = result.err.strip().splitlines()
    assert line.startswith('{"error": ' if "--json" in args else "llmpool: error: ")
    assert "tables are missing" in line and "`llmpool migrate`" in line
    if database_url.startswith("sqlite:///"):
        assert not Path(database_url.removeprefix("sqlite:///")).exists()
    else:
        assert tables(database_url) == []


def test_a_write_on_a_new_sqlite_file_still_creates_and_migrates_it(sqlite_url: str) -> None:
    """A write command keeps the embedded database's auto-migration: the file is made for it."""
    db = ("--database-url", sqlite_url)
    ok(run_cli("add", "--name", "GPT-4", "--provider", "fake", "--model", "m", *db))
    assert "llms" in tables(sqlite_url)
    assert "GPT-4" in ok(run_cli("list", *db))
