"""Declarative config: export, plan, apply (and `llmpool export` / `llmpool apply`), on the
in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli

from llmpool.errors import InvalidConfigError
from llmpool.providers import KnownProviderCheck
from llmpool.repository.declarative import apply, dumps, export_rows, loads, plan
from llmpool.repository.rules import WRITABLE_FIELDS


def _row(name: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "provider": "fake", "model_name": "m", **values}


def test_export_then_apply_is_a_no_op(store: Any) -> None:
    """Applying what was just exported plans nothing and writes nothing (no audit entry)."""
    store.add(_row("A", priority=1, config={"responses": ["a"]}, is_default=True))
    store.add(_row("B", scope="other"))
    before = len(store.audit_log())
    document = export_rows(store, scope=None)
    assert [e["name"] for e in document["llms"]] == ["A", "B"]
    assert set(document["llms"][0]) == set(WRITABLE_FIELDS)
    for fmt in ("json", "yaml"):
        assert apply(store, loads(dumps(document, fmt), fmt)).empty
    assert len(store.audit_log()) == before


def test_apply_adds_changes_and_prunes_with_one_audit_entry_per_row(store: Any) -> None:
    """The plan adds, changes with a field diff, removes only with prune; one entry per row."""
    keep = store.add(_row("Keep", priority=5, is_default=True))
    gone = store.add(_row("Gone"))
    store.add(_row("Elsewhere", scope="untouched"))
    document = {"llms": [_row("Keep", priority=2, is_default=False), _row("New", is_default=True)]}
    planned = plan(store, document)
    assert [(s.action, s.name) for s in planned.steps] == [("change", "Keep"), ("add", "New")]
    assert planned.steps[0].changes == {"priority": (5, 2), "is_default": (True, False)}
    assert "~ change LLM 'Keep'" in planned.render() and "priority: 5 -> 2" in planned.render()
    pruned = plan(store, document, prune=True)
    assert (pruned.steps[0].action, pruned.steps[0].name) == ("remove", "Gone")
    assert apply(store, document, prune=True, dry_run=True).steps == pruned.steps
    assert {r.name for r in store.list_llms()} == {"Keep", "Gone"}

    before = len(store.audit_log())
    apply(store, document, prune=True, actor="ops")
    entries = store.audit_log()[: len(store.audit_log()) - before]
    assert sorted((e.action, e.llm_id) for e in entries) == sorted(
        [("update", keep.id), ("delete", gone.id), ("create", store.get_default().id)]
    )
    assert {e.actor for e in entries} == {"ops"}
    assert [(r.name, r.priority) for r in store.list_llms()] == [("Keep", 2), ("New", 100)]
    assert [r.name for r in store.list_llms(scope="untouched")] == ["Elsewhere"]
    assert plan(store, document, prune=True).empty


def test_a_failing_apply_changes_nothing_and_writes_no_audit_entry(store: Any) -> None:
    """An entry the store refuses fails the whole apply: no row changed, no audit entry."""
    store.add(_row("A", priority=5))
    before = (store.list_llms(), len(store.audit_log()))
    bad = {"llms": [_row("A", priority=1), _row("B", provider="openia")]}
    store.validators = (*store.validators, KnownProviderCheck())
    with pytest.raises(InvalidConfigError, match=r"entry 1: .*did you mean 'openai'"):
        apply(store, bad)
    with pytest.raises(InvalidConfigError, match="priorty"):
        apply(store, {"llms": [_row("A", priorty=1)]})
    with pytest.raises(InvalidConfigError, match="lists this name twice"):
        apply(store, {"llms": [_row("A"), _row("A")]})
    assert (store.list_llms(), len(store.audit_log())) == before


def test_a_database_refusal_rolls_the_whole_apply_back(sql_store: Any) -> None:
    """A write the database refuses mid-apply leaves every row and the audit log as they were."""
    from llmpool.errors import LLMPoolError

    sql_store.add(_row("A", priority=5))
    before = (sql_store.list_llms(), len(sql_store.audit_log()))
    with pytest.raises(LLMPoolError):
        sql_store.apply_changes(
            add=[_row("B"), _row("C")],
            update=[(before[0][0].id, {"priority": 1})],
            delete=["00000000-0000-0000-0000-000000000000"],
        )
    assert (sql_store.list_llms(), len(sql_store.audit_log())) == before


def test_the_commands_export_and_apply_yaml_with_a_plan(migrated_url: str, tmp_path: Path) -> None:
    """export writes YAML; apply --dry-run prints the plan; apply writes it; again: no changes."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    out = tmp_path / "llms.yaml"
    assert run_cli("export", "-o", str(out), *db).code == 0
    text = out.read_text()
    assert "name: A" in text
    out.write_text(text.replace("priority: 100", "priority: 3"))
    dry = run_cli("apply", str(out), "--dry-run", *db)
    assert dry.code == 0, dry.err
    assert dry.out.splitlines()[-2:] == [
        dry.out.splitlines()[-2],
        "dry run: nothing was changed",
    ]
    assert "priority: 100 -> 3" in dry.out
    done = json.loads(run_cli("apply", str(out), "--json", *db).out)
    assert done["applied"] is True
    assert [s["action"] for s in done["steps"]] == ["change"]
    assert run_cli("apply", str(out), *db).out.strip() == "no changes"
    listed = json.loads(run_cli("list", "--json", *db).out)
    assert [(r["name"], r["priority"]) for r in listed] == [("A", 3)]
    empty = tmp_path / "empty.json"
    empty.write_text('{"llms": []}')
    pruned = run_cli("apply", str(empty), "--prune", "--scope", "global", "--yes", *db)
    assert pruned.out.splitlines()[0].startswith("- remove LLM 'A'")
    assert json.loads(run_cli("list", "--json", *db).out) == []


def test_scope_routing_is_exported_and_applied_with_the_rows_in_one_transaction(
    store: Any,
) -> None:
    """A document's ``scopes`` set each scope's strategy with its audit entry; export carries
    them, so a round trip is a no-op; a refused document sets no strategy either."""
    store.add(_row("A", weight=3))
    store.add(_row("B", weight=1))
    store.set_routing("global", "weighted")
    document = export_rows(store)
    assert document["scopes"] == {"global": {"routing": "weighted"}}
    assert apply(store, loads(dumps(document, "yaml"), "yaml")).empty

    document["scopes"]["global"]["routing"] = "latency"
    document["llms"][1]["weight"] = 2
    planned = plan(store, document)
    assert [s.action for s in planned.steps] == ["change", "routing"]
    assert "~ route scope 'global': weighted -> latency" in planned.render()
    before = len(store.audit_log())
    apply(store, document, actor="ops")
    assert store.get_routing("global") == "latency"
    actions = sorted(e.action for e in store.audit_log()[: len(store.audit_log()) - before])
    assert actions == ["set_routing", "update"]

    refused = {"llms": [_row("C", priority="high")], "scopes": {"global": {"routing": "weighted"}}}
    with pytest.raises(InvalidConfigError):
        apply(store, refused)
    assert store.get_routing("global") == "latency"
    with pytest.raises(InvalidConfigError) as info:
        plan(store, {"scopes": {"global": {"routing": "fastest"}}})
    assert info.value.field == "routing"
    with pytest.raises(InvalidConfigError) as info:
        plan(store, {"scopes": {"global": {"strategy": "weighted"}}})
    assert info.value.field == "scopes.global.strategy"


def test_apply_refuses_control_characters_in_a_scope_naming_the_entry(store: Any) -> None:
    """A scope holding control characters, in an entry or under ``scopes``, is refused naming
    the entry and the field; nothing is written."""
    store.add(_row("A"))
    before = (store.list_llms(scope=None), len(store.audit_log()))
    with pytest.raises(InvalidConfigError) as entry:
        apply(store, {"llms": [_row("B", scope="x\x1eglobal\x1flatency")]})
    assert entry.value.field == "scope" and str(entry.value).startswith("entry 0: ")
    with pytest.raises(InvalidConfigError) as scopes:
        apply(store, {"llms": [], "scopes": {"x\x1eglobal\x1flatency": {"routing": "weighted"}}})
    assert scopes.value.field == "scope" and "U+001E" in str(scopes.value)
    assert (store.list_llms(scope=None), len(store.audit_log())) == before
    assert store.get_routing("global") == "priority"


DEEP_DOCUMENTS = {
    "yaml-block-sequences": ("- " * 5000 + "x", "yaml"),
    "yaml-block-mappings": (
        "".join("  " * i + "a:\n" for i in range(1500)) + "  " * 1500 + "x",
        "yaml",
    ),
    "yaml-inside-an-entry": (
        "llms:\n- name: A\n  config:\n" + "".join("    " + "  " * i + "- \n" for i in range(3000)),
        None,
    ),
    "json-brackets": ('{"llms": ' + "[" * 100_000 + "]" * 100_000 + "}", "json"),
}


@pytest.mark.parametrize("case", DEEP_DOCUMENTS, ids=list(DEEP_DOCUMENTS))
def test_a_document_nested_thousands_deep_is_refused_naming_the_limit(case: str) -> None:
    """A document nested thousands of levels deep, in YAML block syntax or in JSON, is refused
    with a typed error naming the depth limit, not a RecursionError."""
    text, fmt = DEEP_DOCUMENTS[case]
    with pytest.raises(InvalidConfigError, match="nests deeper than 35 levels"):
        loads(text, fmt)


def test_the_apply_command_refuses_a_deep_document_in_one_line(
    migrated_url: str, tmp_path: Path
) -> None:
    """``llmpool apply`` of a YAML document nested 5,000 deep exits 1 with one line, no
    traceback, and writes nothing."""
    path = tmp_path / "deep.yaml"
    path.write_text("- " * 5000 + "x")
    result = run_cli("apply", str(path), "--database-url", migrated_url)
    assert result.code == 1
    assert result.err.count("\n") == 1 and "nests deeper than 35 levels" in result.err
    assert "Traceback" not in result.err


REPEATED_KEYS = {
    "json": ('{"llms": [{"name": "A", "provider": "fake", "model_name": "m", "priority": 1, '
             '"priority": 50}]}', "json", "entry 0 (LLM 'A')", "priority"),
    "yaml": ("llms:\n- name: A\n  provider: fake\n  model_name: m\n  priority: 1\n  priority: 50\n",
             "yaml", "entry 0 (LLM 'A')", "priority"),
    "yaml-config": ("llms:\n- name: A\n  provider: fake\n  model_name: m\n"
                    "  config: {responses: [a], responses: [b]}\n",
                    "yaml", "entry 0 (LLM 'A') at config", "responses"),
    "json-scopes": ('{"llms": [], "scopes": {"global": {"routing": "weighted", '
                    '"routing": "latency"}}}', None, "the document at scopes.global", "routing"),
}  # fmt: skip


@pytest.mark.parametrize("case", REPEATED_KEYS, ids=list(REPEATED_KEYS))
def test_a_key_given_twice_in_one_object_is_refused_naming_the_key_and_entry(
    case: str, store: Any
) -> None:
    """JSON or YAML giving a key twice in one object (an entry, its config, a scope) is
    refused, naming the key and where it is; nothing is written."""
    text, fmt, where, key = REPEATED_KEYS[case]
    with pytest.raises(InvalidConfigError) as caught:
        apply(store, loads(text, fmt))
    assert str(caught.value).startswith(f"{where}: the key {key!r} is given twice")
    assert caught.value.field == key
    assert store.list_llms(scope=None) == [] and store.audit_log() == []


def test_yaml_merge_keys_are_not_repeated_keys() -> None:
    """A YAML merge (``<<: *base``) overridden by an entry's own key is not a repeated key."""
    text = (
        "llms:\n- &base {name: A, provider: fake, model_name: m, priority: 1}\n"
        "- <<: *base\n  name: B\n"
    )
    assert [e["name"] for e in loads(text, "yaml")["llms"]] == ["A", "B"]


def test_apply_prune_asks_for_yes_like_delete(migrated_url: str, tmp_path: Path) -> None:
    """apply --prune that would remove rows refuses without --yes off a terminal (exit 2,
    nothing removed) as delete does; --dry-run, and a prune removing nothing, need no --yes."""
    db = ("--database-url", migrated_url)
    assert run_cli("add", "--name", "A", "--provider", "fake", "--model", "m", *db).code == 0
    empty = tmp_path / "empty.json"
    empty.write_text('{"llms": []}')
    refused = run_cli("apply", str(empty), "--prune", "--scope", "global", *db)
    assert refused.code == 2
    assert "apply --prune asks for confirmation; pass --yes" in refused.err
    deleted = run_cli("delete", "A", *db)
    assert deleted.code == 2 and "delete asks for confirmation; pass --yes" in deleted.err
    assert [r["name"] for r in json.loads(run_cli("list", "--json", *db).out)] == ["A"]
    dry = run_cli("apply", str(empty), "--prune", "--scope", "global", "--dry-run", *db)
    assert dry.code == 0 and dry.out.startswith("- remove LLM 'A'")
    keep = tmp_path / "keep.json"
    keep.write_text('{"llms": [{"name": "A", "provider": "fake", "model_name": "m"}]}')
    assert run_cli("apply", str(keep), "--prune", *db).code == 0
    done = run_cli("apply", str(empty), "--prune", "--scope", "global", "--yes", *db)
    assert done.code == 0, done.err
    assert json.loads(run_cli("list", "--json", *db).out) == []


def test_a_scope_strategy_applies_with_the_rows_the_same_document_adds(store: Any) -> None:
    """A document may set the strategy of a scope whose rows it adds; a strategy for a scope
    left without rows is refused, and nothing of the document is written."""
    document = {"llms": [_row("A", scope="new")], "scopes": {"new": {"routing": "weighted"}}}
    apply(store, document)
    assert store.get_routing("new") == "weighted"
    before = (store.list_llms(scope=None), len(store.audit_log()))
    orphan = {"llms": [_row("B")], "scopes": {"empty": {"routing": "latency"}}}
    with pytest.raises(InvalidConfigError, match="scope 'empty' by latency: the scope has no rows"):
        apply(store, orphan)
    assert (store.list_llms(scope=None), len(store.audit_log())) == before
    assert store.get_routing("empty") == "priority"
