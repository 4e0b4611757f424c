"""Rows written by raw SQL, however malformed, never stop the pool serving the other rows."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool.cli.main import main
from llmpool.errors import InvalidConfigError, InvalidDefaultLLMError, shorten
from llmpool.models import MAX_JSON_DEPTH, LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.engine import create_engine
from llmpool.repository.sql.migrate import migrate
from llmpool.repository.sql.schema import RowParser
from llmpool.repository.sql.store import SQLStore

DEEP_CONFIG = '{"a":' * 600 + "{}" + "}" * 600
ABSURD_AUTH_META = '{"a":' * 100_000 + "{}" + "}" * 100_000
HUGE_CONFIG = json.dumps({"responses": ["poison"], "pad": "x" * 100_000})
LONG_NAME = "n" * 100_000

# kind -> (columns written by raw SQL, dialects whose column types admit the value)
POISON: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "deep-config": ({"config": DEEP_CONFIG}, ("sqlite", "postgresql")),
    "absurdly-deep-auth-meta": ({"auth_meta": ABSURD_AUTH_META}, ("sqlite",)),
    "huge-config": ({"config": HUGE_CONFIG}, ("sqlite", "postgresql")),
    "bad-timestamp": ({"created_at": "yesterday"}, ("sqlite",)),
    "text-false-enabled": ({"enabled": "false"}, ("sqlite",)),
    "text-false-is-default": ({"is_default": "false"}, ("sqlite",)),
    "priority-beyond-sqlite": ({"priority": 10**12}, ("sqlite",)),
    "priority-beyond-range": ({"priority": 2_000_000_000}, ("sqlite", "postgresql")),
    "100-kb-name": ({"name": LONG_NAME}, ("sqlite",)),
    "separators-in-name": ({"name": "Poison\x1fglobal\x1eweighted"}, ("sqlite", "postgresql")),
    "newline-in-model-name": ({"model_name": "m\nx"}, ("sqlite", "postgresql")),
    "bidi-override-in-provider": ({"provider": "fa\u202eke"}, ("sqlite", "postgresql")),
}

CASES = [
    pytest.param(
        (dialect, kind),
        id=f"{dialect}-{kind}",
        marks=[pytest.mark.postgres] if dialect == "postgresql" else [],
    )
    for kind, (_, dialects) in POISON.items()
    for dialect in dialects
]


@pytest.fixture(params=CASES)
def poisoned(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A migrated database (SQLite or PostgreSQL) and the kind of poison it will get."""
    dialect, kind = request.param
    url: str = request.getfixturevalue("migrated_sqlite_url" if dialect == "sqlite" else "pg_url")
    return url, kind


def insert_raw(url: str, name: str = "Poison", **columns: Any) -> str:
    """Insert a row by raw SQL, bypassing every check llmpool makes; return its id."""
    llm_id = str(uuid.uuid4())
    values: dict[str, Any] = {
        "id": llm_id,
        "name": name,
        "provider": "fake",
        "model_name": "m",
        "scope": "global",
        "priority": 5,
        "enabled": True,
        "is_default": False,
        "auth_meta": "{}",
        "config": '{"responses": ["poison"]}',
        **columns,
    }
    stamps = {
        field: f":{field}" if field in values else "CURRENT_TIMESTAMP"
        for field in ("created_at", "updated_at")
    }
    names = [*(n for n in values if n not in stamps), *stamps]
    places = [f":{n}" for n in values if n not in stamps] + list(stamps.values())
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO llms ({', '.join(names)}, version) "
                    f"VALUES ({', '.join(places)}, 1)"
                ),
                values,
            )
    finally:
        engine.dispose()
    return llm_id


def update_raw(url: str, llm_id: str, **columns: Any) -> None:
    """Change a row by raw SQL (the triggers bump its version)."""
    sets = ", ".join(f"{name} = :{name}" for name in columns)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE llms SET {sets} WHERE id = :id"), {**columns, "id": llm_id}
            )
    finally:
        engine.dispose()


def poison_name(kind: str) -> str:
    """The name of the poisoned row of ``kind``, as written."""
    return str(POISON[kind][0].get("name", f"Poison {kind}"))


def poison(url: str, kind: str) -> str:
    """Write the poison of ``kind`` next to the healthy rows; return its id."""
    return insert_raw(url, **{**POISON[kind][0], "name": poison_name(kind)})


def add_healthy(url: str) -> str:
    """Add the healthy row through the admin API; return its id."""
    with LLMPool(url, poll_interval=0, listen=False) as pool:
        return pool.store.add(fake("Healthy", 10, "healthy")).id


def test_a_new_pool_serves_the_healthy_row_and_names_the_bad_one(
    poisoned: tuple[str, str],
) -> None:
    """A pool created after the poison was written answers from the healthy row."""
    url, kind = poisoned
    add_healthy(url)
    bad_id = poison(url, kind)
    with LLMPool(url, poll_interval=0, listen=False) as pool:
        assert pool.get_llm_with_fallback().invoke("hi").content == "healthy"
        assert [c.name for c in pool.get_llms_from_db()] == ["Healthy"]
        bad = pool.snapshot().bad_rows
    assert [(b.llm_id, b.name) for b in bad] == [(bad_id, shorten(poison_name(kind)))]
    assert bad_id in bad[0].error and len(bad[0].error) <= 1000


def test_a_running_pool_keeps_serving_and_sees_a_later_change(
    poisoned: tuple[str, str],
) -> None:
    """A pool in use when the poison arrives reports it, keeps answering, and follows changes."""
    url, kind = poisoned
    healthy = add_healthy(url)
    with LLMPool(url, poll_interval=0.05) as pool:
        model = pool.get_llm_with_fallback()
        assert model.invoke("hi").content == "healthy"
        bad_id = poison(url, kind)
        wait_until(lambda: [b.llm_id for b in pool.snapshot().bad_rows] == [bad_id])
        assert model.invoke("hi").content == "healthy"
        update_raw(url, healthy, config='{"responses": ["changed"]}')
        wait_until(lambda: model.invoke("hi").content == "changed")


def test_the_cli_lists_the_healthy_rows_and_the_bad_one_marked_invalid(
    poisoned: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``llmpool list`` prints the healthy rows, exits 0 and lists the bad row marked invalid."""
    url, kind = poisoned
    add_healthy(url)
    bad_id = poison(url, kind)
    assert main(["--database-url", url, "list"]) == 0
    out, err = capsys.readouterr()
    healthy, bad = sorted(out.splitlines()[1:], key=lambda line: bad_id in line)
    assert "Healthy" in healthy and bad_id in bad and " yes " in bad  # the INVALID column
    assert len(out) < 4000 and err == ""


def test_a_lookup_of_the_bad_row_is_a_typed_error_naming_it(poisoned: tuple[str, str]) -> None:
    """get() of a poisoned row, or a poisoned default, raises InvalidConfigError naming it."""
    url, kind = poisoned
    bad_id = poison(url, kind)
    store = SQLStore(url)
    try:
        with pytest.raises(InvalidConfigError) as info:
            store.get(bad_id)
        assert bad_id in str(info.value) and len(str(info.value)) < 1000
        if kind != "text-false-is-default":
            update_raw(url, bad_id, is_default=True)
            with pytest.raises(InvalidDefaultLLMError, match=bad_id):
                store.get_default()
    finally:
        store.engine.dispose()


def test_a_bad_row_is_logged_once_per_version_by_name_and_error_class(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One WARNING per bad row version, naming the row and the error class, never the value."""
    migrate(sqlite_url)
    bad_id = insert_raw(sqlite_url, name="Stamp", created_at="yesterday")
    store = SQLStore(sqlite_url)
    try:
        with caplog.at_level(logging.WARNING, logger="llmpool.repository"):
            store.snapshot()
            store.snapshot()
            update_raw(sqlite_url, bad_id, priority=7)
            store.snapshot()
    finally:
        store.engine.dispose()
    records = [r for r in caplog.records if getattr(r, "llm_id", None) == bad_id]
    assert len(records) == 2
    for record in records:
        text = record.getMessage()
        assert "Stamp" in text and "created_at" in text and "InvalidConfigError" in text
        assert "yesterday" not in text


class _Exploding:
    """A value whose every rendering raises, quoting what must never be printed."""

    def __str__(self) -> str:
        raise RecursionError("the value sk-never-print-me")

    __repr__ = __str__


def test_any_exception_from_one_row_makes_a_bad_row_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A row raising something other than a validation error is a bad row; the others load."""
    good = LLMConfig(id="1", name="Good", provider="fake", model_name="m").model_dump()
    bad = {**good, "id": "2", "name": "\x1b[31mBroken", "config": _Exploding()}
    with caplog.at_level(logging.WARNING, logger="llmpool.repository"):
        configs, bad_rows = RowParser().parse([good, bad])
    assert [c.id for c in configs] == ["1"]
    assert [(b.llm_id, b.name) for b in bad_rows] == [("2", "\x1b[31mBroken")]
    assert "RecursionError" in bad_rows[0].error and "RecursionError" in caplog.text
    assert "sk-never-print-me" not in bad_rows[0].error + caplog.text
    assert "\x1b" not in caplog.text


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


WRITES = [
    pytest.param({"config": _nested(600)}, "config", id="deep-config"),
    pytest.param({"auth_meta": _nested(MAX_JSON_DEPTH + 1)}, "auth_meta", id="auth-meta-33"),
    pytest.param({"config": DEEP_CONFIG}, "config", id="deep-config-text"),
    pytest.param({"auth_meta": ABSURD_AUTH_META}, "auth_meta", id="absurd-auth-meta-text"),
    pytest.param({"auth_meta": "[" * 100_000}, "auth_meta", id="unclosed-brackets"),
    pytest.param({"config": {"pad": "x" * 100_000}}, "config", id="huge-config"),
    pytest.param({"config": HUGE_CONFIG}, "config", id="huge-config-text"),
    pytest.param({"priority": 10**30}, "priority", id="priority-10e30"),
    pytest.param({"priority": 1_000_001}, "priority", id="priority-above"),
    pytest.param({"priority": -1_000_001}, "priority", id="priority-below"),
    pytest.param({"name": LONG_NAME}, "name", id="100-kb-name"),
    pytest.param({"scope": "s" * 101}, "scope", id="long-scope"),
    pytest.param({"provider": "p" * 101}, "provider", id="long-provider"),
    pytest.param({"model_name": "m" * 201}, "model_name", id="long-model-name"),
    pytest.param({"enabled": "false"}, "enabled", id="text-false-enabled"),
    pytest.param({"is_default": "false"}, "is_default", id="text-false-is-default"),
]


@pytest.mark.parametrize(("values", "field"), WRITES)
def test_poison_written_through_the_api_is_refused_naming_the_field(
    store: Any, values: dict[str, Any], field: str
) -> None:
    """add and update refuse each poison with a short InvalidConfigError; nothing is written."""
    kept = store.add(fake("Healthy", 10, "healthy"))
    audited = len(store.audit_log())
    with pytest.raises(InvalidConfigError) as info:
        store.add({**fake("Poison", 5, "poison"), **values})
    assert info.value.field == field and len(str(info.value)) < 1000
    with pytest.raises(InvalidConfigError) as info:
        store.update(kept.id, values)
    assert info.value.field == field and len(str(info.value)) < 1000
    assert "Healthy" in str(info.value)
    assert store.list_llms(scope=None) == [kept]
    assert len(store.audit_log()) == audited


def test_the_memory_store_validates_configs_it_is_given_again() -> None:
    """A config built with model_copy skips validation; the in-memory store checks it again."""
    valid = LLMConfig(id="1", name="A", provider="fake", model_name="m")
    for update, field in (({"name": LONG_NAME}, "name"), ({"priority": 10**30}, "priority")):
        with pytest.raises(InvalidConfigError) as info:
            InMemoryStore([valid.model_copy(update=update)])
        assert info.value.field == field and len(str(info.value)) < 1000


def test_json_nested_exactly_to_the_limit_is_accepted(store: Any) -> None:
    """The limits refuse what exceeds them, not what reaches them."""
    deepest = {"responses": ["ok"], "metadata": _nested(MAX_JSON_DEPTH - 1)}
    added = store.add(fake("Deep Enough", 1, "ok", config=deepest))
    assert store.get(added.id).config == deepest
    assert store.update(added.id, {"priority": 1_000_000}).priority == 1_000_000
    assert store.update(added.id, {"priority": -1_000_000}).priority == -1_000_000


def test_a_name_with_terminal_escapes_is_an_invalid_row_shown_escaped(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name with ESC and other control characters (raw SQL) is an invalid row: list shows it
    marked invalid with the field at fault, show prints it; both escape it, so the terminal
    never receives the characters."""
    name = "\x1b[2J\x1b[31mEvil\x07\x9b"
    bad_id = insert_raw(migrated_url, name=name, model_name="m\x1b]0;title\x07")
    assert main(["--database-url", migrated_url, "list"]) == 0
    listed = capsys.readouterr()
    assert "\\x1b[2J\\x1b[31mEvil\\x07\\x9b" in listed.out and "field 'name'" in listed.out
    assert main(["--database-url", migrated_url, "show", bad_id]) == 0
    shown = capsys.readouterr()
    assert "\\x1b[2J\\x1b[31mEvil\\x07\\x9b" in shown.out and "\\x1b]0;title\\x07" in shown.out
    for text in (listed.out, listed.err, shown.out, shown.err):
        assert not any(ch in text for ch in "\x1b\x07\x9b")


@pytest.mark.parametrize("scope", ["global\x1f", "\u2028global", "glo\x1ebal"])
def test_a_raw_row_whose_scope_holds_control_characters_is_a_bad_row(
    migrated_url: str, scope: str
) -> None:
    """A row whose scope holds a control or separator character (raw SQL) is skipped and
    reported, never served in the scope it resembles once stripped."""
    add_healthy(migrated_url)
    bad_id = insert_raw(migrated_url, name="Lookalike", scope=scope)
    with LLMPool(migrated_url, poll_interval=0, listen=False) as pool:
        assert pool.get_llm_with_fallback().invoke("hi").content == "healthy"
        bad = pool.snapshot().bad_rows
    assert [(b.llm_id, b.name) for b in bad] == [(bad_id, "Lookalike")]
    assert "field 'scope'" in bad[0].error
