"""Quotas as stored (``llm_quotas``, migration 0008): written, checked and audited by every
store, carried by the snapshot, managed by ``llmpool quota`` and by ``apply`` documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from test_cli import ok

from llmpool.errors import InvalidConfigError
from llmpool.repository.declarative import apply, export_rows
from llmpool.repository.quotas import Quota, check_quota


def test_a_quota_is_set_replaced_and_deleted_audited(store: Any) -> None:
    """set_quota stores the limits whole (a second set replaces them), the snapshot carries it,
    the change counter moves, and each write leaves an audit entry under quota:<kind>:<target>."""
    generation = store.generation()
    quota = store.set_quota("tag", " tenant=acme ", budget=50, period="month", rpm=600)
    assert (quota.kind, quota.target, quota.budget, quota.period, quota.rpm, quota.tpm) == (
        "tag", "tenant=acme", 50.0, "month", 600, None,
    )  # fmt: skip
    assert quota.created_at is not None and quota.updated_at is not None
    assert store.generation() > generation
    assert [q.key for q in store.snapshot().quotas] == ["tag:tenant=acme"]
    replaced = store.set_quota("tag", "tenant=acme", tpm=1000)
    assert (replaced.budget, replaced.period, replaced.rpm, replaced.tpm) == (
        None,
        None,
        None,
        1000,
    )
    assert replaced.created_at == quota.created_at
    assert store.get_quota("tag", "tenant=acme") == replaced
    assert store.delete_quota("tag", "tenant=acme") == replaced
    assert store.delete_quota("tag", "tenant=acme") is None
    assert store.snapshot().quotas == () and store.list_quotas() == []
    entries = [(e.llm_id, e.action, e.before, e.after) for e in store.audit_log()]
    assert entries == [
        ("quota:tag:tenant=acme", "delete_quota", {"kind": "tag", "target": "tenant=acme",
                                                   "tpm": 1000}, None),
        ("quota:tag:tenant=acme", "set_quota",
         {"kind": "tag", "target": "tenant=acme", "budget": 50.0, "period": "month", "rpm": 600},
         {"kind": "tag", "target": "tenant=acme", "tpm": 1000}),
        ("quota:tag:tenant=acme", "set_quota", None,
         {"kind": "tag", "target": "tenant=acme", "budget": 50.0, "period": "month", "rpm": 600}),
    ]  # fmt: skip


def test_a_row_quota_names_its_row_by_id_or_unique_name(store: Any) -> None:
    """A row's quota is stored under the row's id, given as the id or a name only one row has;
    a name no row has, or several have, is refused naming the target."""
    a = store.add({"name": "A", "provider": "fake", "model_name": "m"})
    store.add({"name": "B", "provider": "fake", "model_name": "m"})
    store.add({"name": "B", "provider": "fake", "model_name": "m", "scope": "other"})
    assert store.set_quota("row", "A", rpm=5).target == a.id
    assert store.set_quota("row", a.id, rpm=6).rpm == 6
    assert [q.target for q in store.list_quotas()] == [a.id]
    for name, said in (("Nope", "no row has the id or name"), ("B", "give the id")):
        with pytest.raises(InvalidConfigError, match=said) as caught:
            store.set_quota("row", name, rpm=5)
        assert caught.value.field == "target"


@pytest.mark.parametrize(
    ("kind", "target", "limits", "field"),
    [
        ("tenant", "acme", {"rpm": 1}, "kind"),
        ("tag", "acme", {"rpm": 1}, "target"),
        ("tag", "Tenant=acme", {"rpm": 1}, "target"),
        ("tag", "tenant=a,b", {"rpm": 1}, "target"),
        ("scope", " ", {"rpm": 1}, "target"),
        ("scope", "global", {}, "budget"),
        ("scope", "global", {"budget": 0}, "budget"),
        ("scope", "global", {"budget": float("nan")}, "budget"),
        ("scope", "global", {"budget": True}, "budget"),
        ("scope", "global", {"budget": 5, "period": "week"}, "period"),
        ("scope", "global", {"period": "day", "rpm": 3}, "period"),
        ("scope", "global", {"rpm": 0}, "rpm"),
        ("scope", "global", {"tpm": 2.5}, "tpm"),
        ("provider", "x" * 101, {"rpm": 1}, "target"),
    ],
)
def test_a_bad_quota_is_refused_naming_the_field(
    kind: str, target: str, limits: dict[str, Any], field: str
) -> None:
    """Every field is checked before anything is written, the error naming it."""
    with pytest.raises(InvalidConfigError) as caught:
        check_quota(kind, target, **limits)
    assert caught.value.field == field


def test_a_budget_is_per_day_unless_said() -> None:
    quota = check_quota("scope", "global", budget=5)
    assert (quota.period, quota.limits()) == ("day", "5 a day")


def test_migration_0008_reverses_and_applies_again(database_url: str) -> None:
    """down/0008_quotas drops the table; a raw INSERT, UPDATE and DELETE on it moves the
    change counter, as a change to llms does; its checks refuse a quota with no limit."""
    from llmpool.repository.sql.migrate import downgrade_connection, migrate_connection

    engine = sa.create_engine(database_url)
    gen = sa.text("SELECT generation FROM llmpool_state")
    try:
        with engine.begin() as conn:
            migrate_connection(conn)
        for statement in (
            "INSERT INTO llm_quotas (kind, target, rpm) VALUES ('tag', 'tenant=acme', 5)",
            "UPDATE llm_quotas SET rpm = 6",
            "DELETE FROM llm_quotas",
        ):
            with engine.begin() as conn:
                before = conn.execute(gen).scalar()
                conn.execute(sa.text(statement))
                assert conn.execute(gen).scalar() == before + 1, statement
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO llm_quotas (kind, target) VALUES ('tag', 'a=b')"))
        with engine.begin() as conn:
            assert downgrade_connection(conn, to=7)[-1] == "0008_quotas.sql"  # after later ones
            assert not sa.inspect(conn).has_table("llm_quotas")
        with engine.begin() as conn:
            assert "0008_quotas.sql" in migrate_connection(conn)
    finally:
        engine.dispose()


def test_a_quota_raw_sql_broke_is_left_out_of_the_snapshot(sql_store: Any) -> None:
    """A stored quota that fails the checks (raw SQL, past the table's own) is skipped, the
    others kept."""
    with sql_store.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO llm_quotas (kind, target, rpm) VALUES ('tag', 'x', 5)"))
    sql_store.set_quota("scope", "global", rpm=3)
    assert [q.key for q in sql_store.snapshot().quotas] == ["scope:global"]


def test_the_quota_command_sets_lists_and_deletes(migrated_url: str) -> None:
    """``llmpool quota``: set (audited, with --actor), list (table and --json, filtered by
    target), delete (asks; --yes), and a bad limit refused naming the field, exit code 1."""
    db = ("--database-url", migrated_url)
    said = ok(run_cli("quota", "set", "--tag", "tenant=acme", "--budget", "50", "--per", "month",
                      "--rpm", "600", "--actor", "ops", *db))  # fmt: skip
    assert said == "quota on tag 'tenant=acme': 50 a month, rpm 600\n"
    ok(run_cli("quota", "set", "--provider", "openai", "--tpm", "200000", *db))
    listed = json.loads(ok(run_cli("quota", "list", "--json", *db)))
    assert [(q["kind"], q["target"], q.get("tpm")) for q in listed] == [
        ("provider", "openai", 200000), ("tag", "tenant=acme", None),
    ]  # fmt: skip
    one = json.loads(ok(run_cli("quota", "list", "--json", "--tag", "tenant=acme", *db)))
    assert [(q["budget"], q["period"], q["rpm"]) for q in one] == [(50.0, "month", 600)]
    assert "tenant=acme" in ok(run_cli("quota", "list", *db))
    bad = run_cli("quota", "set", "--scope", "global", "--budget", "-1", *db)
    assert bad.code == 1 and "budget must be a finite number greater than 0" in bad.err
    assert run_cli("quota", "set", "--rpm", "1", *db).code == 2  # no target
    assert run_cli("quota", "delete", "--tag", "tenant=acme", *db).code == 2  # not a terminal
    said = ok(run_cli("quota", "delete", "--tag", "tenant=acme", "--yes", *db))
    assert said == "deleted the quota on tag 'tenant=acme'\n"
    again = run_cli("quota", "delete", "--tag", "tenant=acme", "--yes", *db)
    assert again.code == 1 and "no quota on tag 'tenant=acme'" in again.err
    audit = json.loads(ok(run_cli("audit", "--json", *db)))
    assert [(e["action"], e["actor"]) for e in audit][-1] == ("set_quota", "ops")


def test_apply_plans_sets_and_prunes_quotas_and_export_round_trips(store: Any) -> None:
    """A document's quotas are planned and written with its rows in one transaction; an
    export applies as no change; with prune, a quota the document leaves out is removed; a
    row's quota names the row, stored by id."""
    document = {
        "llms": [{"name": "A", "provider": "fake", "model_name": "m"}],
        "quotas": [
            {"kind": "tag", "target": "tenant=acme", "budget": 50, "period": "month"},
            {"kind": "provider", "target": "fake", "rpm": 6},
        ],
    }
    plan = apply(store, document)
    assert plan.render().splitlines() == [
        "+ add LLM 'A' in scope 'global'",
        "+ add quota on provider 'fake': rpm 6",
        "+ add quota on tag 'tenant=acme': 50 a month",
    ]
    exported = export_rows(store)
    assert exported["quotas"] == [q.as_dict() for q in store.list_quotas()]
    assert apply(store, exported).empty
    row = store.list_llms()[0]
    changed = {
        "llms": document["llms"],
        "quotas": [
            {"kind": "tag", "target": "tenant=acme", "budget": 60, "period": "month"},
            {"kind": "row", "target": "A", "tpm": 100},
        ],
    }
    assert apply(store, changed, prune=True, dry_run=True).render().splitlines() == [
        f"+ add quota on row {row.id!r}: tpm 100",
        "~ set quota on tag 'tenant=acme': 60 a month",
        "- remove quota on provider 'fake'",
    ]
    assert [q.key for q in store.list_quotas()] == ["provider:fake", "tag:tenant=acme"]
    apply(store, changed, prune=True)
    assert store.list_quotas() == [
        Quota("row", row.id, tpm=100, created_at=store.list_quotas()[0].created_at,
              updated_at=store.list_quotas()[0].updated_at),
        store.get_quota("tag", "tenant=acme"),
    ]  # fmt: skip
    assert store.get_quota("tag", "tenant=acme").budget == 60.0
    with pytest.raises(InvalidConfigError) as caught:
        apply(store, {"quotas": [{"kind": "tag", "target": "tenant=acme", "rpm": 1, "x": 2}]})
    assert caught.value.field == "quotas.x"
