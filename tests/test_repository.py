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
from llmpool.repository import LLMStore
from llmpool.repository.sql.migrate import seed_starter_rows


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
    store.add(
        row(
            "Claude 3 Opus",
            provider="anthropic",
            model_name="claude-3",
            enabled=False,
            auth_meta={"api_key_env": "ANTHROPIC_API_KEY"},
        )
    )
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


# -- audit fixes: secrets anywhere, defaults moving scope, ids, names in messages --------------

SECRET = "sk-proj-Zq8xT3vK9mW2pL7nR4sJ"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"config": {"model_kwargs": {"api_key": SECRET}}}, "config.model_kwargs.api_key"),
        ({"auth_meta": {"Authorization": f"Bearer {SECRET}"}}, "auth_meta.Authorization"),
        ({"auth_meta": {"base_url": f"https://u:{SECRET}@h.example"}}, "auth_meta.base_url"),
        ({"config": {"base_url": f"https://h.example/v1?key={SECRET}"}}, "config.base_url"),
        ({"auth_meta": {"api_key_env": SECRET}}, "auth_meta.api_key_env"),
    ],
)
def test_hidden_secret_is_refused_on_write_without_echo(
    store: Any, values: dict[str, Any], field: str
) -> None:
    """Nested keys, credential URLs and pasted references are refused by add and update alike."""
    with pytest.raises(LiteralSecretError) as info:
        store.add({**row("Leaky"), **values})
    assert info.value.field == field
    assert SECRET not in str(info.value)
    added = store.add(row("Clean"))
    with pytest.raises(LiteralSecretError) as info:
        store.update(added.id, values)
    assert SECRET not in str(info.value)
    assert [c.name for c in store.list_llms()] == ["Clean"]
    assert SECRET not in repr([e.model_dump() for e in store.audit_log()])


def test_raw_rows_hiding_secrets_are_reported_and_the_others_load(
    sql_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows inserted by raw SQL with a nested key or a credential URL are bad rows, by name/id."""
    good = sql_store.add(row("good"))
    raw = {
        "22222222-2222-2222-2222-222222222222": (
            "Nested Key",
            "{}",
            f'{{"model_kwargs": {{"api_key": "{SECRET}"}}}}',
        ),
        "33333333-3333-3333-3333-333333333333": (
            "Url Password",
            f'{{"base_url": "https://u:{SECRET}@h.example"}}',
            "{}",
        ),
    }
    with sql_store.engine.begin() as conn:
        for llm_id, (name, auth, config) in raw.items():
            conn.execute(
                sa.text(
                    "INSERT INTO llms (id, name, provider, model_name, scope, priority, enabled,"
                    " is_default, auth_meta, config, created_at, updated_at, version) VALUES"
                    " (:id, :name, 'openai', 'gpt-4', 'global', 5, true, false,"
                    " :auth, :config, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
                ),
                {"id": llm_id, "name": name, "auth": auth, "config": config},
            )
    with caplog.at_level("WARNING", logger="llmpool.repository"):
        assert [c.id for c in sql_store.list_llms()] == [good.id]
        snapshot = sql_store.snapshot()
    assert sorted((b.llm_id, b.name) for b in snapshot.bad_rows) == sorted(
        (llm_id, name) for llm_id, (name, _, _) in raw.items()
    )
    assert SECRET not in caplog.text
    assert all(SECRET not in b.error for b in snapshot.bad_rows)


def test_moving_a_default_into_a_scope_with_a_default_is_refused_naming_both(store: Any) -> None:
    """A default row moved to a scope that has a default: ConflictError naming both, no change."""
    mover = store.add(row("Mover", is_default=True))
    holder = store.add(row("Holder", scope="team", is_default=True))
    audited = len(store.audit_log())
    with pytest.raises(ConflictError) as info:
        store.update(mover.id, {"scope": "team"})
    text = str(info.value)
    assert "Mover" in text and mover.id in text
    assert "Holder" in text and holder.id in text
    assert store.get(mover.id) == mover and store.get(holder.id) == holder
    assert len(store.audit_log()) == audited


def test_moving_a_default_into_an_empty_scope_keeps_it_the_default(store: Any) -> None:
    """With no default in the target scope, the moved row becomes its default."""
    mover = store.add(row("Mover", is_default=True))
    moved = store.update(mover.id, {"scope": "team"})
    assert moved.is_default and store.get_default("team").id == mover.id
    with pytest.raises(NoDefaultLLMError):
        store.get_default()


def test_moving_with_is_default_true_takes_over_the_target_scope(store: Any) -> None:
    """Asking for is_default=True explicitly clears the target scope's default at once."""
    mover = store.add(row("Mover", is_default=True))
    holder = store.add(row("Holder", scope="team", is_default=True))
    store.update(mover.id, {"scope": "team", "is_default": True})
    assert store.get_default("team").id == mover.id
    assert not store.get(holder.id).is_default
    plain = store.add(row("Plain", scope="team"))
    store.update(plain.id, {"scope": "global"})
    assert store.get_default("team").id == mover.id


def test_second_default_by_raw_sql_is_a_conflict_on_every_database(sql_store: Any) -> None:
    """The partial unique index's violation reads as ConflictError on SQLite and PostgreSQL."""
    from llmpool.repository.sql.errors import db_errors

    sql_store.add(row("a", is_default=True))
    b = sql_store.add(row("b"))
    with (
        pytest.raises(ConflictError, match="only one default LLM per scope"),
        db_errors(sql_store.engine, "make b a default"),
        sql_store.engine.begin() as conn,
    ):
        conn.execute(sa.text("UPDATE llms SET is_default = true WHERE id = :id"), {"id": b.id})


def _insert_raw_default(sql_store: Any, llm_id: str, name: str) -> None:
    with sql_store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO llms (id, name, provider, model_name, scope, priority, enabled,"
                " is_default, auth_meta, config, created_at, updated_at, version) VALUES"
                " (:id, :name, 'openai', 'gpt-4', 'global', 5, true, true,"
                " :auth, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1)"
            ),
            {"id": llm_id, "name": name, "auth": f'{{"api_key": "{SECRET}"}}'},
        )


async def test_invalid_default_row_is_named_not_called_missing(sql_store: Any) -> None:
    """A default that fails validation is named by name and id; a scope with none keeps the text."""
    from llmpool.errors import InvalidDefaultLLMError
    from llmpool.repository.sql.async_store import AsyncSQLRepository

    bad_id = "44444444-4444-4444-4444-444444444444"
    _insert_raw_default(sql_store, bad_id, "Broken Default")
    async_repo = AsyncSQLRepository(sql_store.engine.url.render_as_string(hide_password=False))
    try:
        for error in (InvalidDefaultLLMError, NoDefaultLLMError, InvalidConfigError):
            with pytest.raises(error) as info:
                sql_store.get_default()
            text = str(info.value)
            assert "Broken Default" in text and bad_id in text
            assert not text.startswith("No default LLM configured")
            assert "auth_meta.api_key" in text and SECRET not in text
        with pytest.raises(InvalidDefaultLLMError, match="Broken Default"):
            await async_repo.get_default()
        with pytest.raises(NoDefaultLLMError, match=r"^No default LLM configured") as info:
            sql_store.get_default("other")
        assert not isinstance(info.value, InvalidDefaultLLMError)
    finally:
        await async_repo.aclose()
    replacement = sql_store.add(row("Replacement"))
    sql_store.set_default(replacement.id)
    assert sql_store.get_default().id == replacement.id
    assert [e.action for e in sql_store.audit_log(llm_id=bad_id)] == ["update"]
    assert SECRET not in repr([e.model_dump() for e in sql_store.audit_log()])


@pytest.mark.parametrize("bad_id", ["not a uuid", "-leading-dash", "x" * 65, 42, "scope:global"])
def test_an_id_that_is_neither_a_uuid_nor_a_key_is_refused(store: Any, bad_id: Any) -> None:
    """A malformed id is refused on every store, naming the field, before the database sees it."""
    with pytest.raises(InvalidConfigError) as info:
        store.add(row("Odd", id=bad_id))
    assert info.value.field == "id"
    assert "'id'" in str(info.value) and "UUID" in str(info.value) and "Odd" in str(info.value)
    assert store.list_llms() == []


def test_the_usage_guides_key_id_works_where_the_column_can_hold_it(store: Any) -> None:
    """ "abc-123-def-456" is a valid id on memory and SQLite; PostgreSQL's uuid column refuses it
    with a typed error naming the field, never a raw database error."""
    dialect = getattr(getattr(store, "engine", None), "dialect", None)
    if dialect is not None and dialect.name == "postgresql":
        with pytest.raises(InvalidConfigError, match="stores ids as uuid") as info:
            store.add(row("Guide", id="abc-123-def-456"))
        assert info.value.field == "id"
        return
    added = store.add(row("Guide", id="abc-123-def-456"))
    assert store.get("abc-123-def-456") == added


def test_uuid_ids_are_stored_in_canonical_form_and_found_either_way(store: Any) -> None:
    """An upper-case or unhyphenated UUID is stored lower-case hyphenated on every store."""
    given = "1B4E28BA2FA111D2883F0016D3CCA427"
    added = store.add(row(id=given))
    assert added.id == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert store.get(given) == store.get(added.id) == added


@pytest.mark.parametrize("bad_id", ["abc", "abc-123-def-456", "1b4e28ba-2fa1-11d2-883f"])
def test_lookups_by_a_malformed_id_are_a_typed_not_found(store: Any, bad_id: str) -> None:
    """get, update, set_default and the bulk writes give LLMNotFoundError, never DatabaseError."""
    store.add(row())
    operations = [
        lambda: store.get(bad_id),
        lambda: store.update(bad_id, {"priority": 1}),
        lambda: store.set_default(bad_id),
        lambda: store.enable([bad_id]),
        lambda: store.disable(bad_id),
        lambda: store.delete(bad_id),
    ]
    for operation in operations:
        with pytest.raises(LLMNotFoundError, match=bad_id):
            operation()
    assert store.audit_log(llm_id=bad_id) == []


def test_failed_update_names_the_row_by_its_current_name_and_id(store: Any) -> None:
    """A refused update names the row as it is, never by the refused new value."""
    from llmpool.providers.allowlist import EnvAllowlist

    added = store.add(row("Current"))
    with pytest.raises(InvalidConfigError) as info:
        store.update(added.id, {"name": "x" * 300})
    assert "x" * 200 not in str(info.value)
    assert info.value.field == "name"
    assert "Current" in str(info.value) and added.id in str(info.value)
    store.validators = (EnvAllowlist.from_env({}),)
    with pytest.raises(InvalidConfigError) as info:
        store.update(added.id, {"name": "Renamed", "auth_meta": {"api_key_env": "DATABASE_URL"}})
    assert "Current" in str(info.value) and "Renamed" not in str(info.value)
    assert info.value.llm_id == added.id and info.value.llm_name == "Current"


def test_conflicts_name_the_row_by_name_and_id(store: Any) -> None:
    """A ConflictError names the row being written by its name and id."""
    taken = store.add(row("Taken"))
    other = store.add(row("Other"))
    with pytest.raises(ConflictError) as info:
        store.update(other.id, {"name": "Taken"})
    assert "'Other'" in str(info.value) and other.id in str(info.value)
    given = "55555555-5555-5555-5555-555555555555"
    with pytest.raises(ConflictError) as info:
        store.add(row("Taken", id=given))
    # the refused row has no id anywhere: the message names the row that has the name
    assert f"LLM 'Taken' (id {taken.id}) has that name" in str(info.value)
    assert given not in str(info.value)


def test_both_stores_share_one_implementation_of_the_bulk_writes() -> None:
    """delete, enable and disable are written once, over each store's all-or-nothing _bulk."""
    from llmpool.repository.memory import InMemoryStore
    from llmpool.repository.sql.store import SQLStore
    from llmpool.repository.writes import Writes

    for cls in (InMemoryStore, SQLStore):
        assert issubclass(cls, Writes)
        for name in ("delete", "enable", "disable"):
            assert getattr(cls, name) is getattr(Writes, name)


def test_add_many_is_all_or_none_and_names_the_item_at_fault(store: Any) -> None:
    """A batch whose second row takes a used name adds nothing and audits nothing."""
    store.add(row("Taken"))
    before = len(store.audit_log())
    with pytest.raises(ConflictError, match=r"'Taken' \(item 1\): LLM names are unique"):
        store.add_many([row("Fresh"), row("Taken")])
    with pytest.raises(InvalidConfigError, match=r"^item 1: LLM 'Bad'") as info:
        store.add_many([row("Fresh"), row("Bad", priority="high")])
    assert info.value.field == "priority"
    assert [c.name for c in store.list_llms()] == ["Taken"]
    assert len(store.audit_log()) == before


def test_add_many_adds_every_row_in_one_write_with_an_audit_row_each(store: Any) -> None:
    """Rows come back as stored, in order; a later default of a scope takes over."""
    added = store.add_many(
        [row("A", is_default=True), row("B", priority=5), row("C", is_default=True)],
        actor="alice",
    )
    assert [c.name for c in added] == ["A", "B", "C"]
    assert [c.name for c in store.list_llms()] == ["B", "A", "C"]
    assert store.get_default().name == "C"
    creates = [e for e in store.audit_log() if e.action == "create"]
    assert sorted(e.llm_id for e in creates) == sorted(c.id for c in added)
    assert {e.actor for e in creates} == {"alice"}


#: Characters no name may hold (`llmpool.models.REFUSED_CATEGORIES`), each in one of the
#: fields that name things: the snapshot's old separators, a newline, DEL, a C1 control, a
#: bidirectional override, a zero-width joiner, a line separator, a lone surrogate.
INVISIBLE = [
    ("\x1f", "scope"),
    ("\x1e", "name"),
    ("\n", "provider"),
    ("\x7f", "model_name"),
    ("\x9b", "space"),
    ("\u202e", "name"),
    ("\u200d", "scope"),
    ("\u2028", "model_name"),
    ("\ud800", "name"),
]


@pytest.mark.parametrize(
    ("char", "field"), INVISIBLE, ids=[f"U+{ord(c):04X}" for c, _ in INVISIBLE]
)
def test_a_control_or_invisible_character_in_a_name_is_refused_naming_the_field(
    store: Any, char: str, field: str
) -> None:
    """add and update refuse a name, scope, provider, model name or space holding a control,
    format or line separator character, naming the field and the code point; nothing is
    written."""
    kept = store.add(row("Kept"))
    before = (store.list_llms(scope=None), len(store.audit_log()))
    value = f"a{char}b"
    with pytest.raises(InvalidConfigError) as added:
        store.add({**row("New"), field: value})
    with pytest.raises(InvalidConfigError) as updated:
        store.update(kept.id, {field: value})
    for error in (added.value, updated.value):
        assert error.field == field
        assert f"U+{ord(char):04X}" in str(error) and value not in str(error)
    assert "LLM 'Kept'" in str(updated.value)
    assert (store.list_llms(scope=None), len(store.audit_log())) == before


def test_control_characters_at_the_edges_are_refused_not_stripped(store: Any) -> None:
    """A scope " global\\x1f" is refused, not stripped into "global" as ordinary spaces are."""
    with pytest.raises(InvalidConfigError) as info:
        store.add(row("A", scope="\x1fglobal"))
    assert info.value.field == "scope"
    added = store.add({**row("B\u00a0b "), "scope": " global "})
    assert (added.name, added.scope) == ("B\u00a0b", "global")


def test_set_default_on_a_disabled_row_is_refused_with_the_fix(store: Any) -> None:
    """set_default of a disabled row is refused naming the row and `llmpool enable ID`; the
    scope's default stays as it was."""
    current = store.add(row("Current", is_default=True))
    off = store.add(row("Off", enabled=False))
    before = len(store.audit_log())
    with pytest.raises(InvalidConfigError) as info:
        store.set_default(off.id)
    assert info.value.field == "enabled"
    assert (info.value.llm_name, info.value.llm_id) == ("Off", off.id)
    assert "is disabled" in str(info.value) and f"llmpool enable {off.id}" in str(info.value)
    assert store.get_default().id == current.id
    assert not store.get(off.id).is_default
    assert len(store.audit_log()) == before
    store.enable(off.id)
    assert store.set_default(off.id).is_default
