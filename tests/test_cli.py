"""The ``llmpool`` console script, driven as a user would, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import OpenAIServer, Reply, Status

SCRIPT = shutil.which("llmpool", path=str(Path(sys.executable).parent))


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script."""
    assert SCRIPT, "the llmpool console script is not installed next to this interpreter"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI", "OLLAMA"))}
    environ["LLMPOOL_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    environ.update(env or {})
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, env=environ, input=stdin, timeout=120
    )


def ok_json(*args: str, env: dict[str, str] | None = None) -> Any:
    """Run a command with --json and return its parsed output."""
    result = run(*args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_admin_commands_end_to_end(database_url: str) -> None:
    """migrate --seed, list, show, add, edit, enable, disable, set-default, delete, audit."""
    db = ["--database-url", database_url]
    assert ok_json("migrate", "--seed", *db)["seeded"] == [
        "OpenAI GPT-4",
        "OpenAI GPT-3.5",
        "Claude 3 Opus",
        "Ollama Llama2",
    ]

    table = run("list", *db)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "NAME", "PROVIDER", "MODEL_NAME"]
    assert next(line.split("  ")[1].strip() for line in lines[1:]) == "OpenAI GPT-4"
    rows = ok_json("list", *db)
    assert [r["name"] for r in rows] == [
        "OpenAI GPT-4",
        "OpenAI GPT-3.5",
        "Claude 3 Opus",
        "Ollama Llama2",
    ]
    assert [r["name"] for r in ok_json("list", "--disabled", *db)] == ["Claude 3 Opus"]
    assert [r["name"] for r in ok_json("list", "--provider", "anthropic", *db)] == ["Claude 3 Opus"]
    assert [r["name"] for r in ok_json("list", "--search", "gpt-3", *db)] == ["OpenAI GPT-3.5"]

    claude = ok_json("show", "Claude 3 Opus", *db)
    assert claude["auth_meta"] == {"api_key_env": "ANTHROPIC_API_KEY"}
    assert "ANTHROPIC_API_KEY" in run("show", claude["id"], *db).stdout

    added = ok_json(
        "add",
        "--name",
        "Local Fake",
        "--provider",
        "fake",
        "--model",
        "demo",
        "--priority",
        "5",
        "--disabled",
        "--config",
        '{"responses": ["hi"]}',
        "--actor",
        "alice",
        *db,
    )
    assert (added["enabled"], added["priority"]) == (False, 5)
    assert ok_json("edit", added["id"], "--priority", "7", *db)["priority"] == 7
    assert ok_json("enable", added["id"], claude["id"], *db)[1]["enabled"] is True
    assert ok_json("disable", claude["id"], *db)[0]["enabled"] is False
    assert ok_json("set-default", added["id"], *db)["is_default"] is True
    assert [r["name"] for r in ok_json("list", *db) if r["is_default"]] == ["Local Fake"]

    log = ok_json("audit", "--llm", added["id"], "--since", "1h", *db)
    assert [e["action"] for e in log] == ["set_default", "enable", "update", "create"]
    assert log[-1]["actor"] == "alice"
    assert "set_default" in run("audit", *db).stdout

    refused = run("delete", added["id"], *db)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert ok_json("delete", added["id"], "--yes", *db) == {"deleted": 1}
    assert len(ok_json("list", *db)) == 4


def test_add_from_json_file(tmp_path: Path, sqlite_url: str) -> None:
    """add --from-json takes one object or a list."""
    path = tmp_path / "rows.json"
    path.write_text(
        json.dumps(
            [
                {"name": "A", "provider": "fake", "model_name": "m", "priority": 1},
                {"name": "B", "provider": "fake", "model_name": "m", "priority": 2},
            ]
        )
    )
    added = ok_json("add", "--from-json", str(path), "--database-url", sqlite_url)
    assert [r["name"] for r in added] == ["A", "B"]


def test_chain_says_why_each_row_would_not_be_tried(database_url: str) -> None:
    """chain lists the order with the reason a row would be skipped."""
    db = ["--database-url", database_url]
    run("migrate", "--seed", *db)
    run(
        "add",
        "--name",
        "Leaky",
        "--provider",
        "openai",
        "--model",
        "gpt-4",
        "--auth-meta",
        '{"api_key_env": "OPENAI_API_KEY"}',
        *db,
    )
    run("add", "--name", "Fake", "--provider", "fake", "--model", "m", "--priority", "99", *db)
    chain = ok_json("chain", *db, env={"OPENAI_API_KEY": "sk-x"})
    reasons = {row["name"]: (row["status"], row["reason"]) for row in chain}
    assert reasons["Claude 3 Opus"] == ("skipped", "disabled")
    assert reasons["Ollama Llama2"] == ("skipped", "missing environment variable OLLAMA_BASE_URL")
    assert reasons["OpenAI GPT-4"] == ("would be tried", None)
    assert reasons["Fake"] == ("would be tried", None)
    table = run("chain", *db)
    assert "missing environment variable OPENAI_API_KEY" in table.stdout


def test_check_probes_each_row_with_latency_or_error(sqlite_url: str) -> None:
    """check builds each row and sends a tiny prompt: disabled rows too, errors reported."""
    db = ["--database-url", sqlite_url]
    with OpenAIServer() as server:
        server.script(Status(401), Reply("OK"))  # rows are checked in order: Bad, Good
        for name in ("Good", "Bad"):
            run(
                "add",
                "--name",
                name,
                "--provider",
                "openai",
                "--model",
                "gpt-4",
                "--disabled",
                "--auth-meta",
                '{"api_key_env": "OPENAI_API_KEY"}',
                "--config",
                json.dumps({"base_url": server.url + "/v1"}),
                *db,
            )
        result = run("check", "--json", *db, env={"OPENAI_API_KEY": "sk-test"})
    assert result.returncode == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["Good"]["ok"] is True
    assert checks["Good"]["reply"] == "OK"
    assert checks["Good"]["latency_ms"] > 0
    assert checks["Bad"]["ok"] is False
    assert "401" in checks["Bad"]["error"]


def test_providers_command_lists_builtins_and_extras() -> None:
    """providers shows every built-in with its extra, in a table and as JSON."""
    data = ok_json("providers")
    names = {p["name"]: p for p in data["providers"]}
    assert names["openai"]["extra"] == "openai"
    assert names["openai"]["installed"] is True
    assert names["fake"]["distribution"] == "llmpool"
    assert "azure_openai" in run("providers").stdout


def test_demo_runs_a_real_fallback_walk_offline() -> None:
    """demo seeds a temporary SQLite database and shows each candidate and the answer."""
    data = ok_json("demo")
    assert data["answered_by"] == "Demo Fake"
    assert [step["outcome"] for step in data["walk"]][-1] == "ok"
    assert any("OPENAI_API_KEY" in (step["detail"] or "") for step in data["walk"])
    text = run("demo").stdout
    assert "answer from Demo Fake" in text


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("lisst",), 2, "invalid choice"),
        (("list", "--bogus"), 2, "unrecognized arguments"),
        (("show", "no-such-llm"), 1, "No LLM with id or name"),
        (("enable", "no-such-id"), 1, "No LLM with id"),
        (("add", "--name", "x"), 2, "--provider"),
        (
            ("add", "--name", "x", "--provider", "fake", "--model", "m", "--config", "{bad"),
            2,
            "not valid JSON",
        ),
        (
            (
                "add",
                "--name",
                "x",
                "--provider",
                "openai",
                "--model",
                "m",
                "--auth-meta",
                '{"api_key": "sk-live"}',
            ),
            1,
            "literal secret",
        ),
        (("edit", "abc"), 2, "at least one field"),
        (("audit", "--since", "yesterday-ish"), 2, "--since"),
    ],
)
def test_mistakes_give_one_line_and_no_traceback(
    sqlite_url: str, args: tuple[str, ...], code: int, needle: str
) -> None:
    """A typo, a missing id or a bad flag: one line on stderr, exit 2 or 1, no traceback."""
    result = run(*args, "--database-url", sqlite_url) if args[0] != "lisst" else run(*args)
    assert result.returncode == code
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "sk-live" not in result.stderr
