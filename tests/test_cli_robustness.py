"""The ``llmpool`` command under misuse: foreign URLs, closed pipes, hung providers, odd input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import SCRIPT, Result, run_cli, script_environ
from servers import Hang, OpenAIServer
from test_cli import as_json, ok

from llmpool.cli import main as cli
from llmpool.cli import rows as cli_commands
from llmpool.errors import ConflictError

PASSWORD = "hunter2-not-a-real-password"


@pytest.fixture(autouse=True)
def _restore_llmpool_log_handlers() -> Iterator[None]:
    """main() attaches its one-line warning handler to the "llmpool" logger; take it off after."""
    logger = logging.getLogger("llmpool")
    handlers = list(logger.handlers)
    yield
    logger.handlers[:] = handlers


def assert_one_line_error(result: Result, code: int) -> str:
    """Check a failed command: the exit code, one line on stderr, no traceback, no password."""
    assert result.code == code, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("llmpool: error: ")
    assert "Traceback" not in result.err
    assert PASSWORD not in result.out + result.err
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("--database-url", f"mysql://app:{PASSWORD}@127.0.0.1/app", "list"),
        ("list", "--database-url", f"mysql+pymysql://app:{PASSWORD}@127.0.0.1/app"),
        ("migrate", "--database-url", f"nosuchdb://app:{PASSWORD}@127.0.0.1/app"),
    ],
)
def test_an_unsupported_database_url_is_one_line_without_its_password(
    args: tuple[str, ...],
) -> None:
    """A database llmpool cannot use fails with exit 1 and one line, the password masked."""
    assert_one_line_error(run_cli(*args), 1)


def test_output_into_a_closed_pipe_stops_quietly(sqlite_url: str) -> None:
    """Writing into a pipe whose reader has gone (``| head``) exits 1 without a traceback."""
    as_json(run_cli("migrate", "--seed", "--json", "--database-url", sqlite_url))
    assert SCRIPT
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes anything
    try:
        result = subprocess.run(
            [SCRIPT, "list", "--database-url", sqlite_url],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=script_environ(),
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (1, "")


def test_check_timeout_bounds_each_row_and_goes_on(sqlite_url: str) -> None:
    """A row that hangs is reported as timed out after --timeout seconds; the next is checked."""
    db = ("--database-url", sqlite_url)
    with OpenAIServer() as server:
        server.script(Hang(60))
        rows = [
            {"name": "Sleepy", "provider": "fake", "model_name": "m", "priority": 1,
             "config": {"sleep": 60}},
            {"name": "Hung", "provider": "openai", "model_name": "gpt-4", "priority": 2,
             "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
             "config": {"base_url": server.url + "/v1"}},
            {"name": "Quick", "provider": "fake", "model_name": "m", "priority": 3,
             "config": {"responses": ["OK"]}},
        ]  # fmt: skip
        batch = Path(sqlite_url.removeprefix("sqlite:///")).with_name("rows.json")
        batch.write_text(json.dumps(rows))
        ok(run_cli("add", "--from-json", str(batch), *db))
        started = time.monotonic()
        result = run_cli("check", "--timeout", "1.5", "--json", *db, env={"OPENAI_API_KEY": "sk-x"})
        elapsed = time.monotonic() - started
    assert result.code == 1, result.err
    checks = {c["name"]: c for c in json.loads(result.out)}
    # the fake times out as a client would, at --timeout, as the check stops waiting
    assert checks["Sleepy"]["error"].startswith("timed out after 1.5s")
    assert checks["Hung"]["error"].startswith("timed out after 1.5s")
    assert (checks["Quick"]["ok"], checks["Quick"]["reply"]) == (True, "OK")
    assert elapsed < 30  # each hung row costs its timeout, not its 60 s


def test_check_passes_its_timeout_to_a_client_that_takes_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The probe's client gets --timeout as its request timeout, unless the row's is smaller."""
    from llmpool.cli.runtime import build_bounded
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.memory import InMemoryStore

    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    pool = LLMPool(repository=InMemoryStore(), poll_interval=0)
    auth = {"api_key_env": "OPENAI_API_KEY"}

    def row(**config: Any) -> LLMConfig:
        return LLMConfig(id="1", name="R", provider="openai", model_name="gpt-4",
                         auth_meta=auth, config=config)  # fmt: skip

    def timeout_of(config: LLMConfig) -> Any:
        return getattr(build_bounded(pool, config, 3.0), "request_timeout", None)

    assert [timeout_of(row()), timeout_of(row(timeout=1)), timeout_of(row(timeout=9))] == [
        3.0,
        1.0,
        3.0,
    ]
    faked = LLMConfig(id="2", name="F", provider="fake", model_name="m")
    assert build_bounded(pool, faked, 3.0).invoke("hi").content  # no timeout field: built as is
    pool.close()


def test_common_options_go_before_or_after_the_command() -> None:
    """--database-url and --json are read on either side of the command name; after wins."""
    parse = cli.build_parser().parse_args
    before = parse(["--database-url", "sqlite:///a", "--json", "list"])
    after = parse(["list", "--database-url", "sqlite:///b", "--json"])
    both = parse(["--database-url", "sqlite:///a", "list", "--database-url", "sqlite:///b"])
    neither = parse(["list"])
    assert (before.database_url, before.json) == ("sqlite:///a", True)
    assert (after.database_url, after.json) == ("sqlite:///b", True)
    assert (both.database_url, both.json) == ("sqlite:///b", False)
    assert (neither.database_url, neither.json, neither.actor) == (None, False, None)


def test_a_multi_line_error_prints_as_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A library error spanning lines, or quoting a URL with a password, prints one safe line."""

    def conflict(_args: Any) -> int:
        msg = f"Could not add:\n  LLM names are unique\n  at postgresql://app:{PASSWORD}@db/app"
        raise ConflictError(msg)

    monkeypatch.setattr(cli_commands, "cmd_list", conflict)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "llmpool: error: Could not add: LLM names are unique; at postgresql://app:***@db/app\n"
    )


def test_a_value_error_is_one_line_but_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ValueError and ImportError from a command are user-facing; a TypeError is a bug."""

    def bad_value(_args: Any) -> int:
        raise ValueError("scope must not be empty")

    def bug(_args: Any) -> int:
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli_commands, "cmd_list", bad_value)
    assert cli.main(["list"]) == 1
    assert capsys.readouterr().err == "llmpool: error: ValueError: scope must not be empty\n"
    monkeypatch.setattr(cli_commands, "cmd_list", bug)
    with pytest.raises(TypeError):
        cli.main(["list"])


def test_add_help_says_a_batch_is_one_transaction() -> None:
    """add --help documents that --from-json adds a list in one transaction, all or none."""
    text = " ".join(ok(run_cli("add", "--help")).split())
    assert "in a single transaction" in text
    assert "nothing is written" in text


def test_add_help_lists_every_field_a_row_accepts() -> None:
    """add --help names every field --from-json accepts, kind, space, weight, rpm and tpm too."""
    from llmpool.models import LLMConfig

    text = " ".join(ok(run_cli("add", "--help")).split())
    fields = text.partition("with the row's fields: ")[2].partition(";")[0].split(", ")
    assert {"kind", "space", "weight", "rpm", "tpm"} <= set(fields)
    assert set(fields) | {"id", "created_at", "updated_at", "version"} == set(LLMConfig.FIELDS)


def test_add_from_json_answers_an_object_with_an_object_and_a_list_with_a_list(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json mirrors the file: one object added prints an object, a list prints a list."""
    single, listed = tmp_path / "one.json", tmp_path / "many.json"
    single.write_text(json.dumps({"name": "One", "provider": "fake", "model_name": "m"}))
    listed.write_text(json.dumps([{"name": "Two", "provider": "fake", "model_name": "m"}]))
    db = ["--database-url", sqlite_url, "--json"]
    assert cli.main(["add", "--from-json", str(single), *db]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "One"
    assert cli.main(["add", "--from-json", str(listed), *db]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["Two"]
