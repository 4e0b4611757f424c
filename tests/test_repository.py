"""The admin API and reads, on the in-memory store, SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import row

from llmpool.errors import (
    ConflictError,
    DatabaseError,
    InvalidConfigError,
    LiteralSecretError,
    LLMNotFoundError,
    NoDefaultLLMError,
)
from llmpool.migrate import seed_starter_rows
from llmpool.repository import LLMStore


def test_store_satisfies_the_protocol(store: Any) -> None:
    """Every store implements the write protocol, and so the read protocol."""
    assert isinstance(store, LLMStore)


def test_list_is_ordered_by_priority_then_name_then_id(store: Any) -> None:
    """Fallback order is priority, ties broken by name, then id."""
    store.add(row("b", priority=20))
    store.add(row("a", priority=20))
    store.add(row("z", priority=5))
    store.add(row("same", priority=30, id="00000000-0000-0000-0000-000000000002"))
    store.add(row("same", priority=30, id="00000000-0000-0000-0000-000000000001", scope="other"))
    assert [c.name for c in store.list_llms()] == ["z", "a", "b", "same"]
    assert [c.name for c in store.list_llms(scope=None)][-2:] == ["same", "same"]


def test_list_filters_by_enabled_scope_provider_and_search(store: Any) -> None:
    """The seed's admin filters: enabled status, scope, provider and a name search."""
    store.add(row("OpenAI GPT-4"))
    store.add(row("Claude 3 Opus", provider="anthropic", model_name="claude-3", enabled=False))
    store.add(row("Team GPT", scope="team-a"))
    assert [c.name for c in store.list_llms(enabled_only=True)] == ["OpenAI GPT-4"]
    assert [c.name for c in store.list_llms(provider="anthropic")] == ["Claude 3 Opus"]
    assert [c.name for c in store.list_llms(scope="team-a")] == ["Team GPT"]
    assert [c.name for c in store.list_llms(search="opus")] == ["Claude 3 Opus"]
    assert [c.name for c in store.list_llms(search="CLAUDE-3")] == ["Claude 3 Opus"]
    assert store.list_llms(search="100%_") == []


def test_add_returns_the_stored_row_with_id_and_timestamps(store: Any) -> None:
    """A new row gets an id, version 1 and timestamps, and reads back equal."""
    added = store.add(row(config='{"temperature": 0.5}'))
    assert added.id and added.version == 1 and added.created_at is not None
    assert added.config == {"temperature": 0.5}
    assert store.get(added.id) == added


def test_get_unknown_id_is_a_typed_not_found(store: Any) -> None:
    """An unknown id raises LLMNotFoundError, a LookupError, naming the id."""
    with pytest.raises(LLMNotFoundError, match="no-such-id") as info:
        store.get("no-such-id")
    assert isinstance(info.value, LookupError)
    assert not isinstance(info.value, KeyError)


def test_no_default_says_no_default_llm_configured(store: Any) -> None:
    """A scope without a default raises the seed's "No default LLM configured"."""
    store.add(row())
    with pytest.raises(NoDefaultLLMError, match=r"^No default LLM configured"):
        store.get_default()


def test_update_is_partial_and_bumps_version(store: Any) -> None:
    """An update changes only the given fields and bumps the version."""
    added = store.add(row())
    after = store.update(added.id, {"priority": 3})
    assert after.priority == 3 and after.name == added.name
    assert after.version == added.version + 1
    assert store.get(added.id).version == after.version


def test_set_default_clears_the_others_in_the_scope(store: Any) -> None:
    """set_default leaves exactly one default per scope, and other scopes untouched."""
    a = store.add(row("a", is_default=True))
    b = store.add(row("b"))
    other = store.add(row("c", scope="other", is_default=True))
    store.set_default(b.id)
    assert store.get_default().id == b.id
    assert not store.get(a.id).is_default
    assert store.get(other.id).is_default
    store.update(a.id, {"is_default": True})
    assert [c.name for c in store.list_llms() if c.is_default] == ["a"]


def test_duplicate_name_in_a_scope_is_a_conflict(store: Any) -> None:
    """Names are unique within a scope: a duplicate is a ConflictError, not IntegrityError."""
    store.add(row("GPT-4"))
    store.add(row("GPT-4", scope="other"))
    with pytest.raises(ConflictError, match="unique within a scope"):
        store.add(row("GPT-4"))


def test_enable_disable_delete_in_bulk(store: Any) -> None:
    """Bulk enable, disable and delete act on every id given."""
    ids = [store.add(row(f"m{i}")).id for i in range(3)]
    assert all(not c.enabled for c in store.disable(ids))
    assert store.list_llms(enabled_only=True) == []
    store.enable(ids[:2])
    assert len(store.list_llms(enabled_only=True)) == 2
    assert store.delete(ids) == 3
    assert store.list_llms() == []


def test_bulk_failing_halfway_rolls_back_everything_and_audits_nothing(store: Any) -> None:
    """A bulk operation with one unknown id changes nothing and writes no audit row."""
    ids = [store.add(row(f"m{i}")).id for i in range(3)]
    audited = len(store.audit_log())
    for operation in (store.disable, store.delete):
        with pytest.raises(LLMNotFoundError):
            operation([ids[0], ids[1], "missing", ids[2]])
        assert [c.enabled for c in store.list_llms()] == [True, True, True]
        assert len(store.audit_log()) == audited


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"config": "{not json"}, "config"),
        ({"auth_meta": "[1, 2]"}, "auth_meta"),
        ({"priority": "high"}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"auth_meta": {"api_key": "sk-live-123"}}, "auth_meta.api_key"),
        ({"config": {"api_key": "sk-live-123"}}, "config.api_key"),
        ({"auth_meta": {"api_key_env": "not a name"}}, "auth_meta.api_key_env"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_write_is_refused_naming_row_and_field(
    store: Any, values: dict[str, Any], field: str
) -> None:
    """Malformed JSON, a non-integer priority, an empty name or a literal secret is refused."""
    with pytest.raises(InvalidConfigError) as info:
        store.add({**row("Bad Row"), **values})
    assert info.value.field == field
    assert field.split(".")[0] in str(info.value)
    assert "sk-live-123" not in str(info.value)
    if values.get("name", "x").strip():
        assert "Bad Row" in str(info.value)
    assert store.list_llms() == []
    assert store.audit_log() == []


def test_bad_update_names_the_existing_row(store: Any) -> None:
    """An invalid update names the row it would have changed and changes nothing."""
    added = store.add(row("Good"))
    with pytest.raises(LiteralSecretError, match="Good") as info:
        store.update(added.id, {"auth_meta": {"token": "abc"}})
    assert info.value.llm_id == added.id
    with pytest.raises(InvalidConfigError, match="version"):
        store.update(added.id, {"version": 9})
    assert store.get(added.id) == added


def test_every_write_is_audited_with_actor_and_before_after(store: Any) -> None:
    """Each write appends one audit row: actor, action, the row before and after."""
    added = store.add(row(), actor="alice")
    store.update(added.id, {"priority": 1}, actor="bob")
    store.disable(added.id, actor="carol")
    store.delete(added.id, actor="dave")
    log = store.audit_log(llm_id=added.id)
    assert [(e.action, e.actor) for e in log] == [
        ("delete", "dave"),
        ("disable", "carol"),
        ("update", "bob"),
        ("create", "alice"),
    ]
    assert log[-1].before is None and log[-1].after is not None
    assert log[-2].before["priority"] == 10 and log[-2].after["priority"] == 1
    assert log[0].after is None


def test_audit_log_filters_by_time(store: Any) -> None:
    """The audit log is filtered by since/until and limited."""
    store.add(row("a"))
    store.add(row("b"))
    now = datetime.now(timezone.utc)
    assert len(store.audit_log(since=now - timedelta(minutes=5))) == 2
    assert store.audit_log(since=now + timedelta(minutes=5)) == []
    assert store.audit_log(until=now - timedelta(minutes=5)) == []
    assert len(store.audit_log(limit=1)) == 1


def test_generation_moves_on_every_write(store: Any) -> None:
    """The change counter moves on insert, update and delete."""
    seen = [store.generation()]
    added = store.add(row())
    seen.append(store.generation())
    store.update(added.id, {"priority": 2})
    seen.append(store.generation())
    store.delete(added.id)
    seen.append(store.generation())
    assert len(set(seen)) == 4
    assert store.snapshot().generation == seen[-1]


def test_seed_starter_rows_is_idempotent(store: Any) -> None:
    """Seeding inserts the four example rows once, with Ollama as the default."""
    assert len(seed_starter_rows(store)) == 4
    assert seed_starter_rows(store) == []
    assert store.get_default().name == "Ollama Llama2"
    assert [c.name for c in store.list_llms(enabled_only=True)] == [
        "OpenAI GPT-4",
        "OpenAI GPT-3.5",
        "Ollama Llama2",
    ]


def test_set_default_under_race_leaves_one_default(store: Any) -> None:
    """50 concurrent set_default calls leave exactly one default; losers get ConflictError."""
    ids = [store.add(row(f"m{i:02d}")).id for i in range(50)]
    barrier = threading.Barrier(50)
    errors: list[BaseException] = []

    def race(llm_id: str) -> None:
        barrier.wait()
        try:
            store.set_default(llm_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race, args=(i,)) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(e) for e in errors if not isinstance(e, ConflictError)] == []
    defaults = [c for c in store.list_llms() if c.is_default]
    assert len(defaults) == 1


# -- only meaningful on a real database -------------------------------------------------------


def test_one_default_per_scope_is_enforced_by_the_database(sql_store: Any) -> None:
    """A raw-SQL second default is refused by the partial unique index, not only by Python."""
    a = sql_store.add(row("a", is_default=True))
    b = sql_store.add(row("b"))
    with pytest.raises(sa.exc.IntegrityError), sql_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE llms SET is_default = true WHERE id = :id"), {"id": b.id})
    assert sql_store.get_default().id == a.id


def test_failed_audit_insert_aborts_its_write(sql_store: Any) -> None:
    """When the audit row cannot be written, the change it records is rolled back."""
    added = sql_store.add(row("a"))
    with sql_store.engine.begin() as conn:
        if sql_store.engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'audit refused'; END; $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON llm_audit "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
        else:
            conn.execute(
                sa.text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON llm_audit "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                )
            )
    with pytest.raises(DatabaseError, match="audit refused"):
        sql_store.update(added.id, {"priority": 99})
    with pytest.raises(DatabaseError):
        sql_store.add(row("b"))
    assert sql_store.get(added.id).priority == 10
    assert [c.name for c in sql_store.list_llms()] == ["a"]


def test_bad_raw_row_is_reported_and_the_others_load(
    sql_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A row inserted by raw SQL with a literal secret is reported by name and id, not loaded."""
    good = sql_store.add(row("good"))
    bad_id = "11111111-1111-1111-1111-111111111111"
    secret = "sk-raw-should-never-print"
    auth = f'{{"api_key": "{secret}"}}'
    with sql_store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llms (id, name, provider, model_name, scope, priority, enabled,"
                " is_default, auth_meta, config, created_at, updated_at, version) VALUES"
                " (:id, 'Raw Bad', 'openai', 'gpt-4', 'global', 5, true, false,"
                " :auth, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
            ),
            {"id": bad_id, "auth": auth},
        )
    with caplog.at_level("WARNING", logger="llmpool.repository"):
        assert [c.id for c in sql_store.list_llms()] == [good.id]
        snapshot = sql_store.snapshot()
    assert [(b.llm_id, b.name) for b in snapshot.bad_rows] == [(bad_id, "Raw Bad")]
    assert "auth_meta.api_key" in snapshot.bad_rows[0].error
    assert "Raw Bad" in caplog.text and bad_id in caplog.text
    assert secret not in caplog.text and secret not in snapshot.bad_rows[0].error
    with pytest.raises(InvalidConfigError, match="Raw Bad"):
        sql_store.get(bad_id)


def test_raw_sql_update_bumps_version_and_generation(sql_store: Any) -> None:
    """A change made by raw SQL is visible to caches: version and generation move."""
    added = sql_store.add(row())
    assert sql_store.list_llms()[0].priority == 10  # validated and cached by row version
    before = sql_store.generation()
    with sql_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE llms SET priority = 7 WHERE id = :id"), {"id": added.id})
    assert sql_store.get(added.id).version == added.version + 1
    assert sql_store.generation() > before
    assert sql_store.list_llms()[0].priority == 7
