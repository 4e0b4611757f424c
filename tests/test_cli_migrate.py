"""``llmpool migrate status`` and ``migrate --to N``, up and down, on SQLite and PostgreSQL; and
the destructive commands (delete, apply --prune, migrate going down) asking alike on a
terminal."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from cli_runner import SCRIPT, run_cli, script_environ
from test_cli import as_json, ok, parse_table
from test_cli_reads import tables
from test_migrate import catalog

from llmpool.repository.sql.migrate import load_migrations, migrate

ALL = [m.name for m in load_migrations("sqlite")]
NEWEST = load_migrations("sqlite")[-1].version  # numbers may skip one another branch holds
LAST = str(len(ALL) - 1)  # --to LAST reverts the newest migration only


def test_status_lists_applied_then_pending_migrations(database_url: str) -> None:
    """status shows each migration applied (with when) or pending, as a table and as JSON."""
    db = ("--database-url", database_url)
    assert as_json(run_cli("migrate", "--to", "2", "--json", *db))["applied"] == ALL[:2]
    text = ok(run_cli("migrate", "status", *db))
    listing, summary = text.split("\n\n")[1:]
    headers, rows = parse_table(listing)
    assert headers == ["VERSION", "NAME", "STATE", "APPLIED_AT"]
    assert [(r["NAME"], r["STATE"]) for r in rows] == [
        (name, "applied" if index < 2 else "pending") for index, name in enumerate(ALL)
    ]
    assert all(r["APPLIED_AT"][:2] == "20" for r in rows[:2])
    assert {r["APPLIED_AT"] for r in rows[2:]} == {"-"}
    assert summary.strip() == f"2 applied, {len(ALL) - 2} pending; run `llmpool migrate`"
    data = as_json(run_cli("migrate", "status", "--json", *db))
    assert data["pending"] == ALL[2:]
    assert [(m["version"], m["state"]) for m in data["migrations"]][:3] == [
        (1, "applied"), (2, "applied"), (3, "pending"),
    ]  # fmt: skip


def test_status_changes_nothing(postgres_url: str, tmp_path: Path) -> None:
    """status on an empty PostgreSQL schema lists every migration pending and creates no
    table; on a SQLite file that does not exist it says so and creates none."""
    data = as_json(run_cli("migrate", "status", "--json", "--database-url", postgres_url))
    assert data["pending"] == ALL
    assert tables(postgres_url) == []
    missing = tmp_path / "none.sqlite3"
    result = run_cli("migrate", "status", "--database-url", f"sqlite:///{missing}")
    assert result.code == 1 and "`llmpool migrate`" in result.err
    assert not missing.exists()


def test_migrate_down_and_up_again_keeps_the_rows(database_url: str) -> None:
    """--to N reverts the later migrations newest first (with --yes) and drops what they made;
    migrate applies them again, and the rows of the earlier tables are still there."""
    db = ("--database-url", database_url)
    ok(run_cli("migrate", "--seed", *db))
    full = catalog(database_url)
    down = as_json(run_cli("migrate", "--to", "3", "--yes", "--json", *db))
    assert (down["reverted"], down["applied"]) == (ALL[:2:-1], [])
    migrated_to_3 = catalog(database_url)
    assert migrated_to_3 < full
    states = as_json(run_cli("migrate", "status", "--json", *db))["migrations"]
    assert [m["state"] for m in states] == ["applied"] * 3 + ["pending"] * (len(ALL) - 3)
    assert as_json(run_cli("migrate", "--to", "3", "--json", *db))["applied"] == []
    up = ok(run_cli("migrate", *db)).splitlines()
    assert up[1:] == [f"applied {name}" for name in ALL[3:]]
    assert catalog(database_url) == full
    names = [r["name"] for r in as_json(run_cli("list", "--json", *db))]
    assert names == ["OpenAI GPT-4", "OpenAI GPT-3.5", "Claude 3 Opus", "Ollama Llama2"]


def test_migrate_to_0_removes_every_table(database_url: str) -> None:
    """--to 0 reverts every migration: none of llmpool's tables is left."""
    db = ("--database-url", database_url)
    ok(run_cli("migrate", *db))
    lines = ok(run_cli("migrate", "--to", "0", "--yes", *db)).splitlines()
    assert lines[1:] == [f"reverted {name}" for name in reversed(ALL)]
    assert tables(database_url) == []


def test_going_down_off_a_terminal_needs_yes(migrated_url: str) -> None:
    """Without --yes, and no terminal to ask on, migrate --to refuses (exit 2), like delete,
    and nothing is reverted; going up needs no --yes."""
    db = ("--database-url", migrated_url)
    refused = run_cli("migrate", "--to", "1", *db)
    assert refused.code == 2
    assert refused.err == (
        "llmpool: error: migrate --to asks for confirmation; pass --yes when not on a terminal\n"
    )
    states = as_json(run_cli("migrate", "status", "--json", *db))["migrations"]
    assert {m["state"] for m in states} == {"applied"}


def test_migrate_mistakes_are_usage_errors(migrated_url: str) -> None:
    """A number that is no migration, --seed with --to, and status with a write's option are
    refused with exit code 2, each saying why."""
    db = ("--database-url", migrated_url)
    cases = [
        (("migrate", "--to", "99"), f"there is no migration 99 (migrations: 1 to {NEWEST}"),
        (("migrate", "--to", "-1"), "there is no migration -1"),
        (("migrate", "--to", "2", "--seed"), "--seed needs every migration: leave out --to"),
        (("migrate", "status", "--to", "2"), "migrate status changes nothing"),
        (("migrate", "stats"), "invalid choice: 'stats'"),
    ]
    for args, needle in cases:
        result = run_cli(*args, *db)
        assert (result.code, result.out) == (2, ""), args
        assert needle in result.err, (args, result.err)
    states = as_json(run_cli("migrate", "status", "--json", *db))["migrations"]
    assert {m["state"] for m in states} == {"applied"}


def _on_a_terminal(argv: list[str], answer: str) -> subprocess.CompletedProcess[str]:
    """Run the console script with a terminal as its standard input, typing ``answer``."""
    assert SCRIPT
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode() + b"\n")
        return subprocess.run(
            [SCRIPT, *argv],
            stdin=follower,
            capture_output=True,
            text=True,
            env=script_environ(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)


def test_destructive_commands_ask_alike_on_a_terminal(sqlite_url: str, tmp_path: Path) -> None:
    """delete, apply --prune and migrate --to (down) each ask a [y/N] question on a terminal:
    "n" changes nothing (exit 1), "y" goes on."""
    db = ["--database-url", sqlite_url]
    ok(run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db))
    empty = tmp_path / "empty.json"
    empty.write_text('{"llms": []}')
    commands = {
        "delete": (["delete", "A"], "Delete 1 LLM(s) A? [y/N] nothing deleted"),
        "apply": (["apply", str(empty), "--prune", "--scope", "global"], "Remove 1 LLM(s): "),
        "migrate": (["migrate", "--to", LAST], f"Revert 1 migration(s) of {sqlite_url}: "),
    }
    for argv, shown in commands.values():
        declined = _on_a_terminal([*argv, *db], "n")
        assert declined.returncode == 1, declined.stderr
        assert shown in declined.stdout
        assert "[y/N] nothing " in declined.stdout
    assert [r["name"] for r in as_json(run_cli("list", "--json", *db))] == ["A"]
    assert catalog(sqlite_url) == _full_catalog(tmp_path)
    accepted = _on_a_terminal(["migrate", "--to", LAST, *db], "y")
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.endswith(f"reverted {ALL[-1]}\n")


def _full_catalog(tmp_path: Path) -> set[tuple[str, str]]:
    """The catalog of a freshly migrated SQLite database."""
    url = f"sqlite:///{tmp_path / 'full.sqlite3'}"
    migrate(url)
    return catalog(url)
