"""History and rollback from the audit log (`llmpool.repository.history`, ``llmpool history``
and ``llmpool rollback``), on the in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from admin_rows import insert_raw
from cli_runner import run_cli
from helpers import row

from llmpool.errors import ConflictError, InvalidConfigError, LLMNotFoundError, RollbackError
from llmpool.repository.history import changed_fields, history, rollback, rollback_plan

RAW_SECRET = "sk-rawsecret0123456789abcdefghijklmnop"


def _row(name: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "provider": "fake", "model_name": "m", **values}


def _table(store: Any, scope: str | None = None) -> list[tuple[Any, ...]]:
    configs = store.list_llms(scope=scope)
    return sorted((c.id, c.name, c.scope, c.priority, c.is_default, c.auth_meta) for c in configs)


def test_rollback_restores_changed_deleted_and_created_rows_and_routing(store: Any) -> None:
    """Rolling back to an entry puts back a renamed row, re-adds a deleted one with its id and
    references, removes one created since and restores routing, one audit entry per row."""
    keep = store.add(_row("Keep", priority=1, is_default=True))
    gone = store.add(row("Gone"))
    point = store.audit_log()[0].id
    then, routing = _table(store), store.get_routing()

    store.update(keep.id, {"name": "Kept", "priority": 7, "is_default": False})
    store.delete(gone.id)
    store.add(_row("New", is_default=True))
    store.set_routing("global", "weighted")
    planned = rollback_plan(store, point)
    assert [s.action for s in planned.steps] == ["remove", "change", "add", "routing"]
    assert planned.steps[1].changes == {
        "name": ("Kept", "Keep"), "priority": (7, 1), "is_default": (False, True),
    }  # fmt: skip
    assert planned.steps[2].llm_id == gone.id
    assert rollback(store, point, dry_run=True) == planned
    assert _table(store) != then

    count = len(store.audit_log())
    rollback(store, point, actor="ops")
    assert (_table(store), store.get_routing()) == (then, routing)
    assert store.get(gone.id).config == {"temperature": 0.2}
    written = store.audit_log()[: len(store.audit_log()) - count]
    assert sorted(e.action for e in written) == ["create", "delete", "set_routing", "update"]
    assert {e.actor for e in written} == {"ops"}
    assert rollback_plan(store, point).empty


def test_rollback_to_a_time_keeps_what_was_written_by_then(store: Any) -> None:
    """A time point keeps every entry written at or before it and undoes the later ones."""
    llm = store.add(_row("A"))
    store.update(llm.id, {"priority": 3})
    at = store.audit_log()[0].at
    store.update(llm.id, {"priority": 4})
    assert [s.changes for s in rollback(store, at).steps] == [{"priority": (4, 3)}]
    assert store.get(llm.id).priority == 3
    assert rollback(store, at + timedelta(days=1)).empty
    assert rollback_plan(store, at.astimezone(timezone.utc).replace(tzinfo=None)).empty


def test_rollback_of_a_scope_leaves_other_scopes_alone(store: Any) -> None:
    """``scope`` restores only that scope's rows and routing."""
    a = store.add(_row("A", scope="one"))
    b = store.add(_row("B", scope="two"))
    point = store.audit_log()[0].id
    store.update(a.id, {"priority": 5})
    store.update(b.id, {"priority": 6})
    store.set_routing("two", "latency")
    rollback(store, point, scope="one")
    assert (store.get(a.id).priority, store.get(b.id).priority) == (100, 6)
    assert store.get_routing("two") == "latency"


def test_rollback_refuses_a_point_the_log_cannot_tell(store: Any) -> None:
    """An unknown entry id, a time before the first entry or an empty log: `RollbackError`."""
    with pytest.raises(RollbackError, match="audit log is empty"):
        rollback_plan(store, datetime.now(timezone.utc))
    store.add(_row("A"))
    first = store.audit_log()[0]
    with pytest.raises(RollbackError, match=f"No audit entry has id {first.id + 100}"):
        rollback_plan(store, first.id + 100)
    with pytest.raises(RollbackError, match=f"before the first audit entry \\(id {first.id}"):
        rollback_plan(store, first.at - timedelta(seconds=1))


def test_a_refused_rollback_writes_nothing(store: Any) -> None:
    """Two rows that swapped names cannot be renamed back one at a time: refused, nothing
    written, no audit entry."""
    a = store.add(_row("A"))
    b = store.add(_row("B"))
    point = store.audit_log()[0].id
    store.update(a.id, {"name": "C", "priority": 1})
    store.update(b.id, {"name": "A"})
    store.update(a.id, {"name": "B"})
    count, before = len(store.audit_log()), _table(store)
    with pytest.raises(ConflictError):
        rollback(store, point)
    assert (len(store.audit_log()), _table(store)) == (count, before)


def test_rollback_never_restores_a_secret_that_was_hidden(sql_store: Any) -> None:
    """A row stored with a literal secret (raw SQL) and repaired since: its entries hide the
    secret, so rolling back past the repair is refused naming the entry, never writing it."""
    bad = insert_raw(sql_store, "Raw", provider="openai", auth_meta={"api_key": RAW_SECRET})
    sql_store.disable(bad)
    point = sql_store.audit_log()[0].id
    sql_store.update(bad, {"auth_meta": {"api_key_env": "OPENAI_API_KEY"}})
    with pytest.raises(InvalidConfigError, match=r"audit entry \d+, LLM 'Raw'.*as it was") as no:
        rollback(sql_store, point)
    assert "api_key holds a literal secret" in str(no.value) and RAW_SECRET not in str(no.value)
    assert sql_store.get(bad).auth_meta == {"api_key_env": "OPENAI_API_KEY"}


def test_rollback_past_an_entry_that_did_not_record_the_row_is_refused(sql_store: Any) -> None:
    """A default stored invalid is cleared without its content in the log: going back past
    that entry is a `RollbackError` naming it, and nothing is written."""
    sql_store.add(_row("First"))
    point = sql_store.audit_log()[0].id
    bad = insert_raw(sql_store, "Bad", is_default=True, auth_meta={"api_key": RAW_SECRET})
    sql_store.add(_row("New", is_default=True))
    hidden = next(e for e in sql_store.audit_log() if e.llm_id == bad)
    count = len(sql_store.audit_log())
    with pytest.raises(RollbackError, match=f"Audit entry {hidden.id} \\(update of {bad}\\)"):
        rollback(sql_store, point)
    assert len(sql_store.audit_log()) == count
    assert rollback(sql_store, hidden.id, dry_run=True).steps[0].action == "remove"


def test_history_follows_a_row_under_every_name_and_says_what_changed(store: Any) -> None:
    """history() finds a row by a former name, filters by scope, and each entry's changes
    are its fields before and after."""
    llm = store.add(_row("Old", scope="s"))
    store.update(llm.id, {"name": "New", "enabled": False})
    store.add(_row("Other"))
    store.set_routing("s", "weighted")
    entries = history(store, ref="Old")
    assert [e.action for e in entries] == ["update", "create"]
    assert changed_fields(entries[0]) == {"name": ("Old", "New"), "enabled": (True, False)}
    assert changed_fields(entries[1])["name"] == (None, "Old")
    assert [e.action for e in history(store, scope="s")] == ["set_routing", "update", "create"]
    assert changed_fields(history(store, scope="s")[0]) == {"routing": ("priority", "weighted")}
    assert len(history(store, limit=2)) == 2
    with pytest.raises(LLMNotFoundError, match="'Nobody'"):
        history(store, ref="Nobody")


def test_the_history_command_shows_who_when_and_each_field(migrated_url: str) -> None:
    """``llmpool history`` prints each entry, newest first, with its fields old -> new;
    ``--json`` gives the same as data; ``audit`` shows the changes too."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    assert run_cli("edit", "A", "--priority", "5", "--name", "B", "--actor", "ann", *db).code == 0
    shown = run_cli("history", "A", *db)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert lines[0].startswith("#2  ") and "  ann  update  LLM 'B' (id " in lines[0]
    assert lines[1:3] == ['    name: "A" -> "B"', "    priority: 100 -> 5"]
    assert lines[3].startswith("#1  ") and lines[4].startswith('    name: "A"; provider: "fake"')
    data = json.loads(run_cli("history", "--json", *db).out)
    assert data[0]["changes"] == {
        "name": {"before": "A", "after": "B"}, "priority": {"before": 100, "after": 5},
    }  # fmt: skip
    assert (data[0]["actor"], data[0]["id"], "before" in data[0]) == ("ann", 2, False)
    assert 'name: "A" -> "B"; priority: 100 -> 5' in run_cli("audit", *db).out
    assert run_cli("history", "--scope", "elsewhere", *db).out.strip() == "no changes recorded"


def test_the_rollback_command_plans_asks_and_applies(migrated_url: str) -> None:
    """``llmpool rollback`` prints the plan with --dry-run, needs --yes off a terminal, then
    applies it; a point the log cannot tell is a one-line typed error."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    assert run_cli("add", "--name", "B", "--provider", "fake", "--model", "m", *db).code == 0
    assert run_cli("delete", "A", "--yes", *db).code == 0
    dry = run_cli("rollback", "--to", "2", "--dry-run", *db)
    assert dry.code == 0, dry.err
    assert dry.out.splitlines()[0].startswith("+ add LLM 'A' (id ")
    assert dry.out.splitlines()[-1] == "dry run: nothing was changed"
    refused = run_cli("rollback", "--to", "2", *db)
    assert (refused.code, refused.out) == (2, "")
    assert "pass --yes when not on a terminal" in refused.err
    assert [r["name"] for r in json.loads(run_cli("list", "--json", *db).out)] == ["B"]

    done = run_cli("rollback", "--to", "1", "--yes", "--json", *db)
    assert done.code == 0, done.err
    steps = json.loads(done.out)["steps"]
    assert [(s["action"], s["name"]) for s in steps] == [("remove", "B"), ("add", "A")]
    assert [r["name"] for r in json.loads(run_cli("list", "--json", *db).out)] == ["A"]

    unknown = run_cli("rollback", "--to", "99", "--json", *db)
    assert unknown.code == 1
    assert json.loads(unknown.err)["type"] == "RollbackError"
    early = run_cli("rollback", "--to", "2000-01-01", "--dry-run", *db)
    assert (early.code, early.err.count("\n")) == (1, 1)
    assert "before the first audit entry (id 1" in early.err
    assert run_cli("rollback", "--to", "yesterday-ish", *db).code == 2
