"""The command line knows a row's kind: add, list, chain, check, export and apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cli_runner import Result, run_cli


def ok(result: Result) -> str:
    """The output of a command that must have succeeded."""
    assert result.code == 0, (result.args, result.err)
    assert "Traceback" not in result.err
    return result.out


def add_rows(db: list[str]) -> tuple[str, str]:
    """A chat row and an embedding row; return their ids."""
    chat = json.loads(
        ok(
            run_cli(
                "add",
                "--name",
                "Chat",
                "--provider",
                "fake",
                "--model",
                "m",
                "--default",
                "--json",
                *db,
            )
        )
    )["id"]
    vectors = json.loads(
        ok(
            run_cli(
                "add",
                "--name",
                "Vectors",
                "--provider",
                "fake",
                "--model",
                "m",
                "--kind",
                "embedding",
                "--space",
                "shared",
                "--config",
                '{"dimensions": 4}',
                "--default",
                "--json",
                *db,
            )
        )
    )["id"]
    return chat, vectors


def test_add_and_list_know_the_kind_and_the_space(sqlite_url: str) -> None:
    """An embedding row is added with its kind and space; list filters and shows the kind."""
    db = ["--database-url", sqlite_url]
    _chat, vectors = add_rows(db)
    rows = json.loads(ok(run_cli("list", "--json", *db)))
    assert {(r["name"], r["kind"], r["is_default"]) for r in rows} == {
        ("Chat", "chat", True),
        ("Vectors", "embedding", True),
    }
    only = json.loads(ok(run_cli("list", "--kind", "embedding", "--json", *db)))
    assert [(r["id"], r["space"]) for r in only] == [(vectors, "shared")]
    assert "KIND" in ok(run_cli("list", *db)).splitlines()[0]
    refused = run_cli(
        "add", "--name", "X", "--provider", "fake", "--model", "m", "--kind", "image", *db
    )
    assert refused.code == 2 and "invalid choice" in refused.err


def test_chain_and_check_of_embedding_rows(sqlite_url: str) -> None:
    """chain --kind embedding shows the embedding chain; check embeds a short text."""
    db = ["--database-url", sqlite_url]
    chat, vectors = add_rows(db)
    status = json.loads(ok(run_cli("chain", "--kind", "embedding", "--json", *db)))
    assert [r["name"] for r in status["rows"]] == ["Vectors"]
    assert [r["name"] for r in json.loads(ok(run_cli("chain", "--json", *db)))["rows"]] == ["Chat"]
    checked = json.loads(ok(run_cli("check", vectors, chat, "--json", *db)))
    assert checked[0]["ok"] and checked[0]["reply"] == "a vector of 4 numbers"
    assert checked[1]["ok"]


def test_export_and_apply_carry_the_kind(sqlite_url: str, tmp_path: Path) -> None:
    """An exported embedding row comes back as an embedding row, with its space."""
    db = ["--database-url", sqlite_url]
    add_rows(db)
    document = tmp_path / "llms.json"
    ok(run_cli("export", "-o", str(document), *db))
    exported: dict[str, Any] = json.loads(document.read_text())
    kinds = {row["name"]: (row["kind"], row.get("space")) for row in exported["llms"]}
    assert kinds == {"Chat": ("chat", None), "Vectors": ("embedding", "shared")}
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    ok(run_cli("migrate", "--database-url", other))
    ok(run_cli("apply", str(document), "--database-url", other))
    rows = json.loads(ok(run_cli("list", "--kind", "embedding", "--json", "--database-url", other)))
    assert [(r["name"], r["space"], r["is_default"]) for r in rows] == [("Vectors", "shared", True)]
