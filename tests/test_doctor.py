"""`llmpool doctor`: one of each kind of bad row is named with its fix (exit 1); a clean table
exits 0, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

from admin_rows import insert_raw, set_routing_raw
from cli_runner import run_cli

from llmpool.pool.doctor import KINDS, SEVERITIES, SEVERITY, diagnose
from llmpool.repository.memory import InMemoryStore

RAW_SECRET = "sk-doctorsecret0123456789abcdefghijklmn"


def _seed_bad_rows(store: Any) -> dict[str, str]:
    """One row of each kind of problem; returns kind -> id (empty for a scope's problem)."""
    set_routing_raw(store, "global", " Weighted ")
    for name, model in (("Vectors M", "m"), ("Vectors N", "n")):
        store.add({"name": name, "provider": "fake", "model_name": model, "kind": "embedding"})
    return {
        "invalid_row": insert_raw(store, "Bad Priority", priority=5_000_000),
        "literal_secret": insert_raw(store, "Pasted Key", auth_meta={"api_key": RAW_SECRET}),
        "unresolvable_reference": store.add(
            {
                "name": "Keyless",
                "provider": "openai",
                "model_name": "gpt-4",
                "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            }
        ).id,
        "unknown_provider": insert_raw(store, "Typo", provider="openia"),
        "unknown_config_key": insert_raw(store, "Old Key", config={"respones": ["x"]}),
        "similar_names": [
            insert_raw(store, "Twin", scope="dup"),
            insert_raw(store, "twin ", scope="dup"),
        ][1],
        "disabled_default": store.add(
            {
                "name": "Off Default",
                "provider": "fake",
                "model_name": "m",
                "scope": "off",
                "enabled": False,
                "is_default": True,
            }
        ).id,
        "invalid_routing": "",
        "invalid_experiment": _renamed_arm_row(store),
        "mixed_spaces": "",
    }


def _renamed_arm_row(store: Any) -> str:
    # Scope "trial" routed as an experiment whose arm's row was renamed since.
    row = store.add({"name": "Arm Row", "provider": "fake", "model_name": "m", "scope": "trial"})
    store.set_experiment("trial", {"arms": {"a": {"rows": ["Arm Row"]}}})
    store.update(row.id, {"name": "Arm Row 2"})
    return ""


def test_doctor_names_each_bad_row_with_its_fix_and_exits_1(
    sql_store: Any, migrated_url: str
) -> None:
    """Every kind of problem is reported for its row, with a command, and the exit code is 1."""
    ids = _seed_bad_rows(sql_store)
    # a namesake in another scope is not a problem
    sql_store.add({"name": "Twin", "provider": "fake", "model_name": "m", "scope": "elsewhere"})
    result = run_cli("doctor", "--json", "--database-url", migrated_url)
    assert result.code == 1, result.err
    report = json.loads(result.out)
    assert report["ok"] is False
    found = {(f["kind"], f["llm_id"]) for f in report["findings"]}
    assert found == {(kind, llm_id) for kind, llm_id in ids.items()}
    assert [f["kind"] for f in report["findings"]] == list(KINDS)
    assert {f["kind"]: f["severity"] for f in report["findings"]} == SEVERITY
    for finding in report["findings"]:
        assert finding["fix"].startswith(("llmpool ", "set ")), finding
        assert finding["llm_id"] in finding["fix"], finding
    assert RAW_SECRET not in result.out + result.err
    text = run_cli("doctor", "--database-url", migrated_url)
    assert text.code == 1
    assert text.out.startswith("10 problem(s) found: 6 error(s), 4 warning(s) (database: ")
    for name in ("Bad Priority", "Pasted Key", "Keyless", "Typo", "Old Key", "twin", "Off Default"):
        assert name in text.out
    assert "scope 'global' has the stored routing ' Weighted '" in text.out
    assert "fix: llmpool routing global priority" in text.out
    assert "The embedding rows of scope 'global' are in 2 vector spaces" in text.out


def test_doctor_fixes_lead_to_a_clean_table_that_exits_0(sql_store: Any, migrated_url: str) -> None:
    """Running the suggested repairs empties the report, and doctor then exits 0."""
    ids = _seed_bad_rows(sql_store)
    db = ("--database-url", migrated_url)
    env = {"OPENAI_API_KEY": "sk-test-doctor"}
    for command in (
        ("edit", ids["invalid_row"], "--set", "priority=5"),
        ("edit", ids["literal_secret"], "--unset", "auth_meta.api_key"),
        ("edit", ids["unknown_provider"], "--set", "provider=fake"),
        ("edit", ids["unknown_config_key"], "--unset", "config.respones"),
        ("edit", ids["similar_names"], "--set", "name=Twin Two"),
        ("enable", ids["disabled_default"]),
        ("routing", "global", "priority"),
        ("experiment", "set", "trial", "--arm", "a=Arm Row 2"),
        ("disable", _id_of(sql_store, "Vectors N")),
    ):
        assert run_cli(*command, *db).code == 0, command
    result = run_cli("doctor", *db, env=env)
    assert (result.code, result.out.split(" (")[0]) == (0, "no problems found"), result.out


def _id_of(store: Any, name: str) -> str:
    return next(row.id for row in store.list_llms() if row.name == name)


def test_diagnose_on_a_clean_store_finds_nothing() -> None:
    """A table with nothing wrong has no findings."""
    store = InMemoryStore(
        [{"name": "A", "provider": "fake", "model_name": "m", "is_default": True}]
    )
    assert diagnose(store) == []


def test_a_pipeline_without_keys_gates_on_errors_only(sql_store: Any, migrated_url: str) -> None:
    """Rows whose variables are unset here are warnings (a disabled one's, info): doctor
    exits 0 by default and 1 with --fail-on warning; --ignore leaves them out entirely; a real
    error still fails whatever is ignored."""
    db = ("--database-url", migrated_url)
    keyed = {
        "provider": "openai",
        "model_name": "gpt-4",
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
    }
    sql_store.add({"name": "On", **keyed})
    sql_store.add({"name": "Off", **keyed, "enabled": False})
    report = json.loads(run_cli("doctor", "--json", *db).out)
    assert (report["ok"], report["fail_on"]) == (True, "error")
    severities = {f["name"]: f["severity"] for f in report["findings"]}
    assert severities == {"On": "warning", "Off": "info"}
    assert run_cli("doctor", *db).code == 0
    strict = run_cli("doctor", "--fail-on", "warning", *db)
    assert strict.code == 1
    assert strict.out.startswith("2 problem(s) found: 1 warning(s), 1 info (database: ")
    assert run_cli("doctor", "--fail-on", "info", "--json", *db).code == 1
    ignored = run_cli("doctor", "--ignore", "unresolvable_reference", "--fail-on", "info", *db)
    assert ignored.code == 0
    assert ignored.out.startswith("no problems found (database: ")
    assert ignored.out.rstrip().endswith("; ignored: unresolvable_reference)")
    insert_raw(sql_store, "Typo", provider="openia")
    failing = run_cli("doctor", "--ignore", "unresolvable_reference", "--json", *db)
    assert failing.code == 1
    data = json.loads(failing.out)
    assert data["ignored"] == ["unresolvable_reference"]
    assert [(f["kind"], f["severity"]) for f in data["findings"]] == [("unknown_provider", "error")]


def test_ignore_names_a_kind_or_is_refused() -> None:
    """--ignore with a word that is no kind exits 2 naming the closest kind."""
    result = run_cli("doctor", "--ignore", "unknown_provder")
    assert result.code == 2
    assert "'unknown_provder' is no kind doctor reports; did you mean 'unknown_provider'?" in (
        result.err
    )


def test_a_disabled_rows_provider_problem_is_one_step_lower() -> None:
    """An unknown provider is an error on an enabled row and a warning on a disabled one."""
    store = InMemoryStore(
        [
            {"name": f"Row {enabled}", "provider": "openia", "model_name": "m", "enabled": enabled}
            for enabled in (True, False)
        ]
    )
    found = diagnose(store)
    assert {f.name: (f.kind, f.severity) for f in found} == {
        "Row True": ("unknown_provider", "error"),
        "Row False": ("unknown_provider", "warning"),
    }


def test_the_cli_offers_the_severities_doctor_uses() -> None:
    """--fail-on takes exactly doctor's severities, from least to most serious."""
    from llmpool.cli.database import _SEVERITIES

    assert _SEVERITIES == SEVERITIES
