"""The CLI and status know routing strategies, weights and rate limits."""

from __future__ import annotations

import json
from typing import Any

from cli_runner import run_cli
from helpers import fake

from llmpool import LLMPool
from llmpool.repository.memory import InMemoryStore


def test_routing_command_shows_and_sets_a_scopes_strategy(migrated_url: str) -> None:
    """``llmpool routing SCOPE [STRATEGY]`` prints the strategy, sets it, and audits it."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    shown = run_cli("routing", "global", *db)
    assert shown.code == 0, shown.err
    assert shown.out.strip() == "scope 'global' routes by priority"
    changed = run_cli("routing", "global", "weighted", "--actor", "ops", *db)
    assert changed.code == 0, changed.err
    assert changed.out.strip() == "scope 'global' routes by weighted (was priority)"
    data = json.loads(run_cli("routing", "global", "--json", *db).out)
    assert data == {"scope": "global", "routing": "weighted"}
    audit = json.loads(run_cli("audit", "--json", *db).out)
    assert any(entry["action"] == "set_routing" and entry["actor"] == "ops" for entry in audit)
    refused = run_cli("routing", "global", "fastest", *db)
    assert refused.code == 2
    assert "least_busy" in refused.err


def test_add_and_edit_take_weight_rpm_and_tpm(migrated_url: str) -> None:
    """add and edit take --weight, --rpm and --tpm; a bad value names the field."""
    db = ("--database-url", migrated_url)
    added = run_cli(
        "add", "--name", "A", "--provider", "fake", "--model", "m",
        "--weight", "3", "--rpm", "60", "--tpm", "1000", "--json", *db,
    )  # fmt: skip
    assert added.code == 0, added.err
    row: dict[str, Any] = json.loads(added.out)
    row = row[0] if isinstance(row, list) else row
    assert (row["weight"], row["rpm"], row["tpm"]) == (3, 60, 1000)
    edited = run_cli("edit", row["id"], "--rpm", "30", "--json", *db)
    assert edited.code == 0, edited.err
    assert json.loads(edited.out)["rpm"] == 30
    bad = run_cli("edit", row["id"], "--weight", "-2", *db)
    assert bad.code == 1
    assert "weight" in bad.err


def test_status_shows_weight_limits_window_use_and_routing() -> None:
    """status() shows each row's weight, its limits and window use, and the scope's routing."""
    store = InMemoryStore([fake("A", 1, "a", rpm=1, weight=2), fake("B", 2, "b")])
    store.set_routing("global", "weighted")
    pool = LLMPool(store, poll_interval=0)
    try:
        pool.get_llm_with_fallback().invoke("hi")
        status = pool.status()
    finally:
        pool.close()
    assert status["routing"] == "weighted"
    first, second = status["rows"]
    assert first["weight"] == 2
    assert first["limits"] == {"rpm": 1, "tpm": None, "requests": 1, "tokens": 0, "share": 1}
    assert first["reason"] == "rate limited: rpm 1/1"
    assert second["limits"] is None
    assert status["answering"]["name"] == "B"  # type: ignore[index]


def test_chain_table_shows_weight_window_use_spend_and_routing(migrated_url: str) -> None:
    """``llmpool chain`` shows weight, limits with the current window and spend against budget
    as columns when the scope uses them, and the scope's routing in its footer."""
    db = ("--database-url", migrated_url)
    budget = '{"responses": ["a"], "max_spend": {"amount": 5, "period": "day"}}'
    for args in (
        ("--name", "A", "--priority", "1", "--weight", "3", "--rpm", "60", "--config", budget),
        ("--name", "B", "--priority", "2"),
    ):
        added = run_cli("add", "--provider", "fake", "--model", "m", *args, *db)
        assert added.code == 0, added.err
    assert run_cli("routing", "global", "weighted", *db).code == 0
    shown = run_cli("chain", *db)
    assert shown.code == 0, shown.err
    header, first = shown.out.splitlines()[:2]
    for column in ("WEIGHT", "LIMITS", "SPEND"):
        assert column in header
    assert "rpm 0/60" in first and "0/5 day" in first
    assert "routing: weighted" in shown.out
    plain = run_cli("chain", "--scope", "other", *db)
    assert "WEIGHT" not in plain.out and "LIMITS" not in plain.out


def test_export_carries_weight_and_limits() -> None:
    """The export/apply document holds weight, rpm and tpm, and applying it changes nothing."""
    from llmpool.repository.declarative import apply, export_rows

    store = InMemoryStore([fake("A", 1, "a", weight=4, rpm=10, tpm=500)])
    document = export_rows(store)
    entry = document["llms"][0]
    assert (entry["weight"], entry["rpm"], entry["tpm"]) == (4, 10, 500)
    assert apply(store, document).empty


def test_migration_0002_reverses_to_0001_and_applies_again(database_url: str) -> None:
    """down/0002_routing drops exactly what 0002 created; 0002 then applies again."""
    import sqlalchemy as sa

    from llmpool.repository.sql.migrate import downgrade_connection, migrate_connection

    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            migrate_connection(conn, to=2)
            conn.execute(
                sa.text("INSERT INTO llm_scopes (scope, routing) VALUES ('s', 'weighted')")
            )
            generation = conn.execute(sa.text("SELECT generation FROM llmpool_state")).scalar()
            assert generation == 2  # the scope's insert bumped the change counter
        with engine.begin() as conn:
            assert downgrade_connection(conn, to=1) == ["0002_routing.sql"]
            inspector = sa.inspect(conn)
            assert not inspector.has_table("llm_scopes")
            columns = {c["name"] for c in inspector.get_columns("llms")}
            assert not columns & {"weight", "rpm", "tpm"}
        with engine.begin() as conn:
            assert migrate_connection(conn, to=2) == ["0002_routing.sql"]
    finally:
        engine.dispose()


def test_a_routing_change_reaches_another_pool_through_notify(pg_url: str) -> None:
    """set_routing in one process's store reaches a pool listening on PostgreSQL at once."""
    from helpers import wait_until

    writer = LLMPool(pg_url, poll_interval=0)
    pool = LLMPool(pg_url, poll_interval=30)
    try:
        writer.store.add(fake("A", 1, "a"))
        pool.get_llm_with_fallback()
        wait_until(
            lambda: pool._snapshots.watcher is not None and pool._snapshots.watcher.listening
        )
        writer.store.set_routing("global", "least_busy")
        wait_until(lambda: pool.routing_of("global") == "least_busy", timeout=3)
    finally:
        pool.close()
        writer.close()


def test_routing_command_refuses_a_scope_without_rows_or_with_control_characters(
    migrated_url: str,
) -> None:
    """``llmpool routing`` refuses, exit 1 in one line, a scope with no rows (a typo) and a scope
    holding control characters; neither is created, and global keeps its routing."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    typo = run_cli("routing", "globl", "weighted", *db)
    assert typo.code == 1
    assert "scope 'globl' by weighted: the scope has no rows" in typo.err
    assert typo.err.count("\n") == 1
    forged = run_cli("routing", "x\x1eglobal\x1flatency", "weighted", *db)
    assert forged.code == 1
    assert "field 'scope' holds the character U+001E" in forged.err
    assert "\x1e" not in forged.err
    assert json.loads(run_cli("routing", "global", "--json", *db).out)["routing"] == "priority"
    assert json.loads(run_cli("routing", "globl", "--json", *db).out)["routing"] == "priority"
    assert not any(
        e["action"] == "set_routing" for e in json.loads(run_cli("audit", "--json", *db).out)
    )
