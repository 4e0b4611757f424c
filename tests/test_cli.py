"""The ``llmpool`` command, driven as a user would, on SQLite and PostgreSQL.

Every command runs in this process through `cli_runner.run_cli` (``llmpool.cli.main.main`` with
its own stdin, stdout, stderr and environment, as a fresh process would have them), and each is
checked twice: its human table (headers and the row's values) and its ``--json``. A few smoke
tests run the installed console script in a subprocess: a read with ``--json``, a write from a
stdin pipe, a failing command, and ``--help``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cli_runner import Result, run_cli, run_script

SECRET = "sk-cli-test-not-a-real-key-7f3a"
SEED = ["OpenAI GPT-4", "OpenAI GPT-3.5", "Claude 3 Opus", "Ollama Llama2"]
LIST_HEADERS = [
    "ID",
    "NAME",
    "PROVIDER",
    "MODEL_NAME",
    "SCOPE",
    "PRIORITY",
    "ENABLED",
    "IS_DEFAULT",
    "KIND",
]


def ok(result: Result) -> str:
    """Return the output of a command that must have succeeded, without a secret in it."""
    assert result.code == 0, (result.args, result.err)
    assert "Traceback" not in result.err
    assert SECRET not in result.out + result.err
    return result.out


def as_json(result: Result) -> Any:
    """Return the parsed ``--json`` output of a command that must have succeeded."""
    return json.loads(ok(result))


def parse_table(text: str) -> tuple[list[str], list[dict[str, str]]]:
    """Split a table into its headers and rows (cells cut at the headers' columns)."""
    lines = text.rstrip("\n").splitlines()
    headers = lines[0].split()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    ends: list[int | None] = [*starts[1:], None]
    rows = [
        {h: line[a:b].strip() for h, a, b in zip(headers, starts, ends, strict=True)}
        for line in lines[1:]
    ]
    return headers, rows


def parse_fields(text: str) -> dict[str, str]:
    """Parse ``show``'s ``field: value`` lines."""
    return {k.strip(): v for k, _, v in (line.partition(": ") for line in text.splitlines())}


def id_in(text: str) -> str:
    """Return the id in a line like ``added LLM 'X' (id abc)``."""
    match = re.search(r"\(id ([^)]+)\)", text)
    assert match, text
    return match.group(1)


def write_rows(path: Path, rows: Any) -> str:
    """Write rows as a JSON file and return its path."""
    path.write_text(json.dumps(rows))
    return str(path)


def fake(name: str, scope: str, priority: int, **values: Any) -> dict[str, Any]:
    """A row of the ``fake`` provider."""
    return {"name": name, "provider": "fake", "model_name": "m", "scope": scope,
            "priority": priority, **values}  # fmt: skip


def _table_lifecycle(db: Sequence[str], tmp: Path) -> None:
    """add, add --from-json, edit, enable, disable, set-default, check, audit, delete: tables."""
    scope = ("--scope", "cli-table")
    out = ok(run_cli("add", "--name", "Table Fake", "--provider", "fake", "--model", "fake-t",
                     *scope, "--priority", "5", "--disabled",
                     "--config", '{"responses": ["pong-t"]}', "--actor", "alice", *db))  # fmt: skip
    assert out.startswith("added LLM 'Table Fake' (id ")
    llm = id_in(out)
    batch = write_rows(tmp / "t.json", [fake("T1", "cli-table", 30), fake("T2", "cli-table", 31)])
    lines = ok(run_cli("add", "--from-json", batch, *db)).splitlines()
    assert [line.split(" (id")[0] for line in lines] == ["added LLM 'T1'", "added LLM 'T2'"]
    t1, t2 = (id_in(line) for line in lines)
    assert t1 != t2 != llm

    assert ok(run_cli("edit", llm, "--priority", "7", *db)).strip() == (
        f"updated LLM 'Table Fake' (id {llm})"
    )
    assert ok(run_cli("enable", llm, *db)).strip() == f"enabled LLM 'Table Fake' (id {llm})"
    assert ok(run_cli("disable", t2, *db)).strip() == f"disabled LLM 'T2' (id {t2})"
    assert ok(run_cli("set-default", llm, *db)).strip() == (
        f"LLM 'Table Fake' (id {llm}) is now the default of 'cli-table'"
    )
    headers, rows = parse_table(ok(run_cli("check", llm, *db)))
    assert headers == ["NAME", "PROVIDER", "ENABLED", "OK", "LATENCY_MS", "ERROR"]
    (row,) = rows
    assert (row["NAME"], row["PROVIDER"], row["ENABLED"], row["OK"], row["ERROR"]) == (
        "Table Fake", "fake", "yes", "yes", "-",
    )  # fmt: skip
    assert float(row["LATENCY_MS"]) > 0

    headers, rows = parse_table(ok(run_cli("audit", "--llm", llm, *db)))
    assert headers == ["ID", "AT", "ACTOR", "ACTION", "NAME", "LLM_ID", "CHANGES"]
    assert [r["ACTION"] for r in rows] == ["set_default", "enable", "update", "create"]
    assert [r["CHANGES"] for r in rows[:3]] == [
        "is_default: false -> true", "enabled: false -> true", "priority: 5 -> 7"
    ]  # fmt: skip
    assert rows[3]["CHANGES"].startswith('name: "Table Fake"; provider: "fake"')
    assert {r["NAME"] for r in rows} == {"Table Fake"}
    assert {r["LLM_ID"] for r in rows} == {llm}
    assert rows[-1]["ACTOR"] == "alice"

    assert ok(run_cli("delete", t1, "--yes", *db)).strip() == "deleted 1 LLM(s)"


def _json_lifecycle(db: Sequence[str], tmp: Path) -> None:
    """The same commands with --json, the common options given before the command name."""
    scope = ("--scope", "cli-json")
    added = as_json(run_cli(*db, "--json", "add", "--name", "Json Fake", "--provider", "fake",
                            "--model", "fake-j", *scope, "--priority", "6", "--disabled",
                            "--config", '{"responses": ["pong-j"]}', "--actor", "bob"))  # fmt: skip
    assert {k: added[k] for k in ("name", "provider", "model_name", "scope")} == {
        "name": "Json Fake", "provider": "fake", "model_name": "fake-j", "scope": "cli-json",
    }  # fmt: skip
    assert (added["priority"], added["enabled"], added["is_default"]) == (6, False, False)
    assert added["config"] == {"responses": ["pong-j"]}
    llm = added["id"]
    batch = write_rows(tmp / "j.json", [fake("J1", "cli-json", 30), fake("J2", "cli-json", 31)])
    j1, j2 = as_json(run_cli(*db, "--json", "add", "--from-json", batch))
    assert [(j1["name"], j1["priority"]), (j2["name"], j2["priority"])] == [("J1", 30), ("J2", 31)]

    edited = as_json(run_cli(*db, "edit", llm, "--priority", "8", "--json"))
    assert (edited["id"], edited["priority"], edited["version"]) == (llm, 8, 2)
    assert [(r["id"], r["enabled"]) for r in as_json(run_cli(*db, "--json", "enable", llm))] == [
        (llm, True)
    ]
    disabled = as_json(run_cli("disable", j2["id"], "--json", *db))
    assert [(r["id"], r["enabled"]) for r in disabled] == [(j2["id"], False)]
    default = as_json(run_cli("--json", "set-default", llm, *db))
    assert (default["id"], default["is_default"], default["scope"]) == (llm, True, "cli-json")

    (probe,) = as_json(run_cli(*db, "check", "Json Fake", "--json"))
    assert (probe["id"], probe["ok"], probe["reply"], probe["error"]) == (llm, True, "pong-j", None)
    assert probe["latency_ms"] > 0

    log = as_json(run_cli(*db, "--json", "audit", "--llm", llm, "--since", "1h"))
    assert [e["action"] for e in log] == ["set_default", "enable", "update", "create"]
    assert (log[-1]["actor"], log[-1]["before"], log[-1]["after"]["name"]) == (
        "bob", None, "Json Fake",
    )  # fmt: skip
    assert log[0]["after"]["is_default"] is True

    assert as_json(run_cli(*db, "--json", "delete", llm, j1["id"], "--yes")) == {"deleted": 2}


def _seed_reads(db: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Read-only command lines on the seeded rows, by the name their check uses."""
    return {
        "list": ("list", *db),
        "list_json": ("list", "--json", *db),
        "list_disabled": ("list", "--disabled", "--json", *db),
        "list_search": (*db, "list", "--provider", "openai", "--search", "3", "--json"),
        "show": ("show", "Claude 3 Opus", *db),
        "show_json": ("show", "Claude 3 Opus", "--json", *db),
        "chain": ("chain", *db),
        "chain_json": ("chain", "--json", *db),
        "migrate": ("migrate", *db),
        "migrate_json": (*db, "--json", "migrate"),
        "providers": ("providers", *db),
        "providers_json": ("providers", "--json", *db),
    }


def _check_seed_reads(results: dict[str, Result]) -> None:
    """What each read of the seeded rows must print, as a table and as JSON."""
    headers, rows = parse_table(ok(results["list"]))
    assert headers == LIST_HEADERS
    assert [list(r.values())[1:] for r in rows] == [
        ["OpenAI GPT-4", "openai", "gpt-4", "global", "10", "yes", "no", "chat"],
        ["OpenAI GPT-3.5", "openai", "gpt-3.5-turbo", "global", "20", "yes", "no", "chat"],
        [
            *("Claude 3 Opus", "anthropic", "claude-3-opus-20240229", "global", "42", "no"),
            *("no", "chat"),
        ],
        ["Ollama Llama2", "ollama", "llama2", "global", "80", "yes", "yes", "chat"],
    ]
    listed = as_json(results["list_json"])
    assert [r["id"] for r in listed] == [r["ID"] for r in rows]
    assert [(r["name"], r["priority"], r["enabled"], r["is_default"]) for r in listed] == [
        ("OpenAI GPT-4", 10, True, False),
        ("OpenAI GPT-3.5", 20, True, False),
        ("Claude 3 Opus", 42, False, False),
        ("Ollama Llama2", 80, True, True),
    ]
    assert listed[0]["auth_meta"] == {"api_key_env": "OPENAI_API_KEY"}
    assert [r["name"] for r in as_json(results["list_disabled"])] == ["Claude 3 Opus"]
    assert [r["name"] for r in as_json(results["list_search"])] == ["OpenAI GPT-3.5"]

    shown = parse_fields(ok(results["show"]))
    claude = as_json(results["show_json"])
    assert {k: shown[k] for k in ("id", "name", "provider", "priority", "enabled")} == {
        "id": claude["id"], "name": "Claude 3 Opus", "provider": "anthropic", "priority": "42",
        "enabled": "no",
    }  # fmt: skip
    assert shown["auth_meta"] == '{"api_key_env": "ANTHROPIC_API_KEY"}'
    assert (claude["model_name"], claude["auth_meta"]) == (
        "claude-3-opus-20240229", {"api_key_env": "ANTHROPIC_API_KEY"},
    )  # fmt: skip

    expected = [
        ("1", "OpenAI GPT-4", "openai", "10", "would be tried", "-"),
        ("2", "OpenAI GPT-3.5", "openai", "20", "would be tried", "-"),
        ("3", "Claude 3 Opus", "anthropic", "42", "skipped", "disabled"),
        ("4", "Ollama Llama2", "ollama", "80", "skipped",
         "missing environment variable OLLAMA_BASE_URL"),
    ]  # fmt: skip
    chain_table, _, footer = ok(results["chain"]).partition("\n\n")
    headers, rows = parse_table(chain_table)
    assert headers == [
        "POSITION", "NAME", "PROVIDER", "PRIORITY", "STATUS", "REASON", "BREAKER", "LAST_ERROR",
        "LATENCY_MS", "P95_MS", "ERROR_RATE", "IN_FLIGHT",
    ]  # fmt: skip
    assert [tuple(r.values())[:6] for r in rows] == expected
    assert (
        footer.strip()
        == "scope 'global': OpenAI GPT-4 would answer now; routing: priority; breakers: local; "
        "statistics: local"
    )
    chain = as_json(results["chain_json"])["rows"]
    assert [
        (str(c["position"]), c["name"], c["provider"], str(c["priority"]), c["status"],
         c["reason"] or "-")
        for c in chain
    ] == expected  # fmt: skip
    assert [c["id"] for c in chain] == [r["id"] for r in listed]

    assert ok(results["migrate"]).splitlines()[1:] == ["database is up to date"]
    migrated = as_json(results["migrate_json"])
    assert (migrated["applied"], migrated["seeded"]) == ([], [])

    headers, rows = parse_table(ok(results["providers"]))
    assert headers == ["NAME", "EXTRA", "INSTALLED", "DISTRIBUTION", "SECRET_ENV", "PLAIN_ENV"]
    by_name = {r["NAME"]: r for r in rows}
    assert list(by_name["openai"].values()) == [
        "openai",
        "openai",
        "yes",
        "llmpool",
        "OPENAI_API_KEY",
        "OPENAI_API_BASE, OPENAI_BASE_URL, OPENAI_ORGANIZATION",
    ]
    assert (by_name["fake"]["EXTRA"], by_name["fake"]["SECRET_ENV"]) == ("-", "-")
    providers = {p["name"]: p for p in as_json(results["providers_json"])["providers"]}
    assert set(providers) == set(by_name)
    assert (providers["openai"]["extra"], providers["openai"]["installed"]) == ("openai", True)
    assert providers["fake"]["distribution"] == "llmpool"
    assert providers["bedrock"]["secret_env"] == [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ]


def test_every_command_prints_its_table_and_its_json(database_url: str, tmp_path: Path) -> None:
    """Each command, run as the console script runs it, prints the expected table and JSON."""
    db = ("--database-url", database_url)
    seeded = as_json(run_cli("migrate", "--seed", "--json", *db))
    assert seeded["seeded"] == SEED
    assert seeded["applied"]
    env = {"OPENAI_API_KEY": SECRET}
    _table_lifecycle(db, tmp_path)
    _json_lifecycle(db, tmp_path)
    _check_seed_reads({name: run_cli(*args, env=env) for name, args in _seed_reads(db).items()})
    # what the table commands changed, seen in a table; what the JSON commands deleted is gone
    _, rows = parse_table(ok(run_cli("list", "--all-scopes", *db)))
    assert sorted(tuple(r.values())[1:] for r in rows if r["SCOPE"] != "global") == [
        ("J2", "fake", "m", "cli-json", "31", "no", "no", "chat"),
        ("T2", "fake", "m", "cli-table", "31", "no", "no", "chat"),
        ("Table Fake", "fake", "fake-t", "cli-table", "7", "yes", "yes", "chat"),
    ]
    assert [r["NAME"] for r in rows if r["SCOPE"] == "global"] == SEED


def _mistakes(tmp: Path) -> list[tuple[tuple[str, ...], int, str | tuple[str, ...]]]:
    """Command lines a user gets wrong, the exit code and a phrase the one-line error holds."""
    rows = {
        "objects.json": ["a"],
        "string.json": "x",
        "half_bad.json": [fake("Fine", "global", 1), {"name": "Half Bad", "provider": "fake"}],
        "twins.json": [fake("Twin", "global", 1), fake("Twin", "global", 2)],
        "taken.json": [fake("Fresh", "global", 1), fake("OpenAI GPT-4", "global", 2)],
    }
    files = {name: write_rows(tmp / name, value) for name, value in rows.items()}
    flags = ("--name", "x", "--provider", "fake", "--model", "m")
    return [
        (("lisst",), 2, "unknown command 'lisst'; did you mean 'list'?"),
        (("list", "--bogus"), 2, "unrecognized arguments: --bogus"),
        (("--bogus", "list"), 2, "unrecognized arguments: --bogus"),
        (("list", "--enabled", "--disabled"), 2, "not allowed with argument"),
        (("show", "no-such-llm"), 1, "No LLM with id or name 'no-such-llm'"),
        (("show",), 2, "the following arguments are required: ID|NAME"),
        (("enable", "no-such-id"), 1, "No LLM with id"),
        (("delete", "no-such-id", "--yes"), 1, "No LLM with id"),
        (("delete", "no-such-id"), 2, "pass --yes"),
        (("set-default", "no-such-id"), 1, "No LLM with id"),
        (("edit", "no-such-id", "--priority", "3"), 1, "No LLM with id"),
        (("edit", "OpenAI GPT-4"), 2, "at least one field"),
        (("edit", "no-such-id", "--priority", "high"), 2, "invalid int value"),
        (("check", "--timeout", "0"), 2, "--timeout must be a positive"),
        (("audit", "--since", "yesterday-ish"), 2, "--since"),
        (("add", "--name", "x"), 2, "add needs --provider, --model"),
        (("add", *flags, "--config", "{bad"), 2, "not valid JSON"),
        (("add", *flags, "--auth-meta", '{"api_key": "sk-live-123"}'), 1, "api_key"),
        (("add", "--name", "OpenAI GPT-4", "--provider", "fake", "--model", "m"), 1, "unique"),
        (("add", "--from-json", files["objects.json"]), 2, "item 0 of"),
        (("add", "--from-json", files["string.json"]), 2, "is a JSON string, not an object"),
        (("add", "--from-json", files["half_bad.json"]), 1, "item 1: LLM 'Half Bad'"),
        (("add", "--from-json", files["twins.json"]), 1, ("LLM 'Twin' (item 1)", UNIQUE)),
        (("add", "--from-json", files["taken.json"]), 1, ("'OpenAI GPT-4' (item 1)", UNIQUE)),
        (("add", "--from-json", str(tmp / "missing.json")), 2, "cannot read"),
    ]


UNIQUE = "LLM names are unique within a scope, and LLM "


def test_mistakes_give_one_line_and_no_traceback(database_url: str, tmp_path: Path) -> None:
    """A typo, a missing id or a bad flag: one line on stderr, exit 2 or 1, and nothing written."""
    db = ("--database-url", database_url)
    assert as_json(run_cli("migrate", "--seed", "--json", *db))["seeded"] == SEED
    cases = _mistakes(tmp_path)
    for args, code, needle in cases:
        result = run_cli(*args, *db)
        assert (result.code, result.out) == (code, ""), (args, result.err)
        assert result.err.startswith("llmpool: error: "), (args, result.err)
        for text in needle if isinstance(needle, tuple) else (needle,):
            assert text in result.err, (args, result.err)
        assert len(result.err.strip().splitlines()) == 1, (args, result.err)
        assert "Traceback" not in result.err
        assert "sk-live-123" not in result.err
    after = as_json(run_cli("list", "--all-scopes", "--json", *db))
    assert [(r["name"], r["version"]) for r in after] == [(name, 1) for name in SEED]


def test_a_run_in_this_process_leaves_no_state_behind(sqlite_url: str) -> None:
    """After a run, the logger's handlers, the registry, the environment and the remembered
    secrets are as they were, so the next run starts as a new process would."""
    from llmpool.credentials import redaction
    from llmpool.providers import get_registry

    logger = logging.getLogger("llmpool")
    handlers, registry, environ = list(logger.handlers), get_registry(), dict(os.environ)
    db = ("--database-url", sqlite_url)
    ok(run_cli("migrate", "--seed", *db))
    chain = run_cli("chain", "--json", *db, env={"OPENAI_API_KEY": SECRET}, stdin="ignored")
    assert [c["status"] for c in as_json(chain)["rows"]][:2] == ["would be tried"] * 2
    assert (logger.handlers, get_registry(), dict(os.environ)) == (handlers, registry, environ)
    assert redaction.redact(SECRET) == SECRET


def test_the_entry_point_keeps_start_up_from_the_collector_and_main_leaves_it_alone(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run` (the console script) moves what importing the commands made out of the cyclic
    collector's view and runs the command with the collector on; `main` in-process freezes
    nothing of its host's."""
    from llmpool.cli.main import main, run

    ok(run_cli("migrate", "--database-url", sqlite_url))
    gc.unfreeze()
    try:
        assert main(["list", "--database-url", sqlite_url]) == 0
        assert gc.get_freeze_count() == 0
        capsys.readouterr()
        argv = ["llmpool", "list", "--json", "--database-url", sqlite_url]
        monkeypatch.setattr(sys, "argv", argv)
        assert run() == 0
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    assert json.loads(capsys.readouterr().out) == []


# -- the installed console script, in a subprocess ------------------------------------------


def test_the_script_adds_rows_from_a_stdin_pipe_and_lists_them_as_json(sqlite_url: str) -> None:
    """The console script reads --from-json - from a pipe and prints the added rows as JSON; a
    later ``list --json`` finds them stored."""
    db = ("--database-url", sqlite_url)
    rows = [fake("Piped", "global", 5), fake("Piped Too", "global", 6)]
    added = as_json(run_script("add", "--from-json", "-", "--json", *db, stdin=json.dumps(rows)))
    assert [r["name"] for r in added] == ["Piped", "Piped Too"]
    listed = as_json(run_cli("list", "--json", *db, env={"OPENAI_API_KEY": SECRET}))
    assert [(r["id"], r["name"], r["priority"]) for r in listed] == [
        (added[0]["id"], "Piped", 5),
        (added[1]["id"], "Piped Too", 6),
    ]


def test_the_script_fails_with_its_exit_code_and_one_line(sqlite_url: str) -> None:
    """A failing command, run by the console script, exits 1 with one line and no traceback."""
    ok(run_cli("migrate", "--database-url", sqlite_url))
    result = run_script("show", "no-such-llm", "--database-url", sqlite_url)
    assert (result.code, result.out) == (1, ""), result.err
    assert result.err == "llmpool: error: No LLM with id or name 'no-such-llm'\n"


def test_the_script_prints_its_help() -> None:
    """``llmpool --help`` lists the commands on stdout and exits 0."""
    text = " ".join(ok(run_script("--help")).split())
    assert text.startswith("usage: llmpool ")
    for command in ("list", "add", "check", "migrate", "demo"):
        assert f" {command} " in text
    assert "Exit codes: 0 success, 1 the operation failed, 2 a usage error." in text
