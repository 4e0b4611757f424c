"""The ``llmpool`` read commands: they never create or migrate a database, and they show every
row, invalid ones too (marked, with the reason, never a secret)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from test_cli import ok, parse_table

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
    ("history",),
    ("rollback", "--to", "1", "--dry-run"),
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


SECRET = "sk-live-never-print-me-5e1f"


@pytest.fixture
def invalid_rows(migrated_url: str) -> dict[str, str]:
    """Two valid rows and two invalid ones written by raw SQL (a literal secret, a reference that
    is no variable name); their ids by name."""
    from admin_rows import insert_raw

    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    try:
        first = store.add({"name": "First", "provider": "fake", "model_name": "m", "priority": 1})
        last = store.add({"name": "Last", "provider": "fake", "model_name": "m", "priority": 90})
        return {
            "First": first.id,
            "Leaky": insert_raw(store, "Leaky", priority=20, auth_meta={"api_key": SECRET}),
            "Misnamed": insert_raw(
                store, "Misnamed", priority=30, auth_meta={"api_key_env": "a b"}
            ),
            "Last": last.id,
        }
    finally:
        store.close()


def test_list_shows_invalid_rows_marked_with_the_field_at_fault(
    migrated_url: str, invalid_rows: dict[str, str]
) -> None:
    """``list`` lists an invalid row in its place, marked, with the reason naming the field."""
    result = run_cli("list", "--database-url", migrated_url)
    headers, rows = parse_table(ok(result))
    assert headers[-2:] == ["INVALID", "REASON"]
    assert [(r["NAME"], r["ID"], r["INVALID"]) for r in rows] == [
        (name, llm_id, "yes" if name in ("Leaky", "Misnamed") else "-")
        for name, llm_id in invalid_rows.items()
    ]
    leaky, misnamed = rows[1], rows[2]
    assert leaky["REASON"].startswith("auth_meta.api_key holds a literal secret")
    assert misnamed["REASON"].startswith("auth_meta.api_key_env must name an environment variable")
    assert (leaky["PRIORITY"], leaky["ENABLED"], leaky["PROVIDER"]) == ("20", "yes", "fake")
    assert SECRET not in result.out + result.err


def test_list_json_adds_invalid_rows_as_objects_saying_invalid_and_why(
    migrated_url: str, invalid_rows: dict[str, str]
) -> None:
    """``list --json`` keeps valid rows as they were and adds each invalid one with
    ``"invalid": true``, the reason, and its readable fields, the secret hidden."""
    result = run_cli("list", "--json", "--database-url", migrated_url)
    listed = json.loads(ok(result))
    assert [r["name"] for r in listed] == list(invalid_rows)
    first, leaky, misnamed, _ = listed
    assert "invalid" not in first and "reason" not in first
    assert first["id"] == invalid_rows["First"]
    assert (leaky["id"], leaky["invalid"], leaky["enabled"], leaky["priority"]) == (
        invalid_rows["Leaky"], True, True, 20,
    )  # fmt: skip
    assert leaky["auth_meta"] == {"api_key": "<hidden>"}
    assert "auth_meta.api_key" in leaky["reason"] and "Leaky" not in leaky["reason"]
    assert misnamed["reason"].startswith("auth_meta.api_key_env must name an environment")
    assert SECRET not in result.out + result.err
    filtered = json.loads(ok(run_cli("list", "--json", "--search", "LEAK", "--database-url",
                                     migrated_url)))  # fmt: skip
    assert [r["name"] for r in filtered] == ["Leaky"]


def test_chain_lists_invalid_rows_as_never_tried_with_the_reason(
    migrated_url: str, invalid_rows: dict[str, str]
) -> None:
    """``chain`` lists invalid rows in its table with status "invalid" and the reason, and in
    its JSON under ``invalid_rows``; the call order is unchanged."""
    db = ("--database-url", migrated_url)
    text = run_cli("chain", *db)
    table_text, _, _ = ok(text).partition("\n\n")
    _, rows = parse_table(table_text)
    assert [(r["POSITION"], r["NAME"], r["STATUS"]) for r in rows] == [
        ("1", "First", "would be tried"),
        ("2", "Last", "would be tried"),
        ("-", "Leaky", "invalid"),
        ("-", "Misnamed", "invalid"),
    ]
    assert rows[3]["REASON"].startswith("auth_meta.api_key_env must name an environment variable")
    data = json.loads(ok(run_cli("chain", "--json", *db)))
    assert [r["name"] for r in data["rows"]] == ["First", "Last"]
    assert [(r["id"], r["status"]) for r in data["invalid_rows"]] == [
        (invalid_rows["Leaky"], "invalid"),
        (invalid_rows["Misnamed"], "invalid"),
    ]
    assert data["invalid_rows"][0]["reason"].startswith("auth_meta.api_key holds a literal")
    assert SECRET not in text.out + text.err


def test_chain_reasons_do_not_repeat_the_row_the_name_column_names(migrated_url: str) -> None:
    """A reason that starts with the row's own ``LLM 'X' (id ...)`` is shown without it, in the
    table and in the JSON."""
    from admin_rows import insert_raw

    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    llm_id = insert_raw(store, "Odd Knob", config={"no_such_knob": 1})
    store.close()
    db = ("--database-url", migrated_url)
    table_text, _, _ = run_cli("chain", *db).out.partition("\n\n")
    _, (row,) = parse_table(table_text)
    (data,) = json.loads(run_cli("chain", "--json", *db).out)["rows"]
    for reason in (row["REASON"], data["reason"]):
        assert reason.startswith("config.no_such_knob is not a parameter of"), reason
        assert "Odd Knob" not in reason and llm_id not in reason


def test_show_and_disable_reach_a_row_whose_config_nests_too_deep(migrated_url: str) -> None:
    """A row whose config (raw SQL) nests 600 levels deep is shown and disabled, its config
    cut at the nesting limit, instead of the command dying of a RecursionError."""
    from admin_rows import insert_raw

    from llmpool.repository.sql.store import SQLStore

    deep: dict[str, Any] = {}
    for _ in range(600):
        deep = {"a": deep}
    store = SQLStore(migrated_url)
    llm_id = insert_raw(store, "Deep", config=deep)
    store.close()
    db = ("--database-url", migrated_url)
    shown = json.loads(ok(run_cli("show", "Deep", "--json", *db)))
    assert (shown["id"], "nested too deep" in json.dumps(shown["config"])) == (llm_id, True)
    assert "Deep" in ok(run_cli("disable", "Deep", *db))


#: Run in a fresh interpreter: after the import and after each command of the JSON list in
#: argv[1], in turn, its exit code and the LangChain and terminal-drawing (rich) modules
#: loaded so far (modules stay loaded, so a command that loads one shows it on its own
#: line).
LOADED = """
import json, sys
from llmpool.cli.main import main
def loaded(code):
    modules = sorted(m for m in sys.modules if m.startswith(("langchain", "rich")))
    print("loaded", json.dumps([code, modules]), flush=True)
loaded(0)
for argv in json.loads(sys.argv[1]):
    loaded(main(argv))
"""

#: The read commands that work on the store alone.
STORE_READS = [
    ("list",),
    ("list", "--json", "--all-scopes"),
    ("show", "GPT-4"),
    ("audit",),
    ("export",),
    ("usage",),
    ("routing", "global"),
    ("history",),
    ("rollback", "--to", "1", "--dry-run"),
]


def loaded_by(*commands: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """Run ``main(argv)`` for each command in turn in one new process, with plugins loading as
    they would for a user; return the exit code and the ``langchain*`` modules imported so
    far, after the import and after each command."""
    import subprocess
    import sys

    from cli_runner import script_environ

    env = script_environ({"LLMPOOL_DISABLE_PLUGIN_AUTOLOAD": "0"})
    done = subprocess.run(
        [sys.executable, "-c", LOADED, json.dumps(commands)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [
        line.split(" ", 1)[1] for line in done.stdout.splitlines() if line.startswith("loaded ")
    ]
    return [(code, modules) for code, modules in map(json.loads, lines)]


def test_importing_the_command_loads_no_langchain() -> None:
    """``import llmpool.cli.main`` loads no LangChain module, nor rich."""
    assert loaded_by() == [(0, [])]


def test_the_store_reads_load_no_langchain(migrated_url: str) -> None:
    """Each read command works on the store alone: it imports no LangChain module (only the
    commands that call models, check, demo and chain, load it), nor rich."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    try:
        store.add({"name": "GPT-4", "provider": "openai", "model_name": "gpt-4"})
    finally:
        store.close()
    commands = [(*args, "--database-url", migrated_url) for args in STORE_READS]
    after = dict(
        zip([" ".join(args) for args in STORE_READS], loaded_by(*commands)[1:], strict=True)
    )
    assert after == {" ".join(args): (0, []) for args in STORE_READS}
