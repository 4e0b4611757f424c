"""Usage and spend: prices and budgets in a row's config, the meter, the llm_usage table."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool.errors import InvalidConfigError
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers import ConfigKeysCheck, get_registry
from llmpool.providers.prices import Budget, client_config, usage_terms
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.store import SQLStore
from llmpool.usage import UsageRow
from llmpool.usage.flusher import Flusher
from llmpool.usage.meter import UsageMeter
from llmpool.usage.report import parse_since
from llmpool.usage.sql import SQLUsageTable
from llmpool.usage.table import MemoryUsageTable, UsageBucket

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config_row(**config: Any) -> LLMConfig:
    """A fake row with ``config``."""
    return LLMConfig(id="r1", name="Priced", provider="fake", model_name="m", config=config)


# -- prices and budgets ----------------------------------------------------------------------


def test_prices_and_budget_are_read_from_config() -> None:
    """Per-million prices give each call's cost; max_spend gives the budget."""
    row = config_row(
        input_cost_per_million_tokens=3,
        output_cost_per_million_tokens=15,
        max_spend={"amount": 2.5, "period": "month"},
    )
    terms = usage_terms(row)
    assert terms.prices is not None
    assert terms.prices.cost(1_000_000, 100_000) == pytest.approx(4.5)
    assert terms.budget == Budget(2.5, "month")
    assert usage_terms(config_row(max_spend={"amount": 1})).budget == Budget(1.0, "day")
    assert usage_terms(config_row(temperature=0.2)).prices is None


def test_litellm_per_token_prices_are_accepted_as_written() -> None:
    """LiteLLM's per-token price keys are read as they are, stripped, and not taken for secrets."""
    row = config_row(responses=["hi"], input_cost_per_token=3e-06, output_cost_per_token=1.5e-05)
    terms = usage_terms(row)
    assert terms.prices is not None
    assert terms.prices.cost(1_000_000, 100_000) == pytest.approx(4.5)
    assert client_config(row).config == {"responses": ["hi"]}
    priced = LLMConfig(
        id="1",
        name="GPT",
        provider="openai",
        model_name="gpt-4o",
        config={"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
    )
    ConfigKeysCheck()(priced)
    both = config_row(input_cost_per_token=1e-06, input_cost_per_million_tokens=1)
    with pytest.raises(InvalidConfigError) as info:
        usage_terms(both)
    assert info.value.field == "config.input_cost_per_token"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"input_cost_per_million_tokens": -1}, "config.input_cost_per_million_tokens"),
        ({"output_cost_per_token": -1e-06}, "config.output_cost_per_token"),
        ({"output_cost_per_million_tokens": "2"}, "config.output_cost_per_million_tokens"),
        ({"input_cost_per_million_tokens": True}, "config.input_cost_per_million_tokens"),
        ({"input_cost_per_million_tokens": float("inf")}, "config.input_cost_per_million_tokens"),
        ({"max_spend": 5}, "config.max_spend"),
        ({"max_spend": {"amount": 0}}, "config.max_spend.amount"),
        ({"max_spend": {"amount": 5, "period": "week"}}, "config.max_spend.period"),
        ({"max_spend": {"amount": 5, "per": "day"}}, "config.max_spend"),
        ({"max_spend": {"period": "day"}}, "config.max_spend"),
    ],
)
def test_invalid_price_or_budget_is_refused_naming_the_row_and_key(
    config: dict[str, Any], field: str
) -> None:
    """A bad price or budget is an InvalidConfigError naming the row and the key."""
    with pytest.raises(InvalidConfigError) as info:
        usage_terms(config_row(**config))
    assert info.value.field == field
    assert "LLM 'Priced' (id r1)" in str(info.value)


def test_usage_keys_are_removed_before_the_client_is_built() -> None:
    """The client never sees prices or budget: a fake row with them builds and answers."""
    row = config_row(
        responses=["hi"], input_cost_per_million_tokens=1, max_spend={"amount": 1, "period": "day"}
    )
    assert client_config(row).config == {"responses": ["hi"]}
    assert client_config(config_row(responses=["x"])) is not None
    assert get_registry().build(row).invoke("hello").content == "hi"


def test_config_key_check_accepts_usage_keys_and_checks_their_values() -> None:
    """The write-time key check takes the usage keys for any provider, and refuses bad ones."""
    good = LLMConfig(
        id="1",
        name="GPT",
        provider="openai",
        model_name="gpt-4o",
        config={
            "temperature": 0.1,
            "output_cost_per_million_tokens": 10,
            "max_spend": {"amount": 9},
        },
    )
    ConfigKeysCheck()(good)
    bad = good.model_copy(update={"config": {"max_spend": {"amount": -1}}})
    with pytest.raises(InvalidConfigError, match=r"config\.max_spend\.amount"):
        ConfigKeysCheck()(bad)


def test_store_write_with_bad_budget_writes_nothing(sql_store: SQLStore) -> None:
    """A row with a bad budget is refused by the store's default checks; nothing is written."""
    with pytest.raises(InvalidConfigError, match="max_spend"):
        sql_store.add(fake("A", 1, "a", config={"responses": ["a"], "max_spend": {"amount": "x"}}))
    assert sql_store.list_llms(scope=None) == []
    added = sql_store.add(
        fake("B", 1, "b", config={"responses": ["b"], "input_cost_per_million_tokens": 2})
    )
    assert added.config["input_cost_per_million_tokens"] == 2


def test_budget_periods_are_utc_days_and_months() -> None:
    """A day runs midnight to midnight UTC; a month to the first of the next."""
    moment = datetime(2024, 2, 29, 23, 59, tzinfo=timezone.utc).timestamp()
    day, month = Budget(1, "day"), Budget(1, "month")
    assert day.end(moment) - moment == 60
    assert datetime.fromtimestamp(month.start(moment), timezone.utc) == datetime(
        2024, 2, 1, tzinfo=timezone.utc
    )
    assert datetime.fromtimestamp(month.end(moment), timezone.utc) == datetime(
        2024, 3, 1, tzinfo=timezone.utc
    )


def test_since_reads_durations_and_iso_times_and_refuses_others() -> None:
    """``--since`` takes 30m, 12h, 1d, 2w or an ISO date or time; anything else is refused."""
    assert parse_since("1d", NOW).timestamp() == NOW - 86400
    assert parse_since("2w", NOW).timestamp() == NOW - 14 * 86400
    assert parse_since("2025-05-01T06:00", NOW).timestamp() == NOW - 6 * 3600
    with pytest.raises(ValueError, match="not a duration or a date"):
        parse_since("yesterday", NOW)


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("1d", "2d", r"until \(2025-04-29T12:00:00Z\) is not after since \(2025-04-30T12:00:00Z\)"),
        ("1h", "1h", "is not after since"),
        ("99999999999d", None, "out of range"),
        (datetime(1, 1, 1), None, "out of range"),
        (float("nan"), None, "out of range"),
        (None, "3000000000000w", "out of range"),
        ("yesterday", None, "not a duration or a date"),
    ],
)
def test_report_refuses_an_empty_window_and_absurd_times(
    since: Any, until: Any, message: str
) -> None:
    """``until`` not after ``since``, a time before 1970 or past 9999, or text that is no time
    is a ValueError naming what is wrong (and both ends of an empty window)."""
    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0, clock=Clock())
    with pytest.raises(ValueError, match=message):
        meter.report(since=since, until=until)
    meter.close()


# -- the meter ---------------------------------------------------------------------------------


def test_meter_counts_calls_errors_tokens_and_cost_per_minute() -> None:
    """Answered and failed calls land in their minute's bucket; failures carry no tokens."""
    clock = Clock()
    table = MemoryUsageTable()
    meter = UsageMeter(table, flush_interval=0, budget_refresh=0, clock=clock)
    row = config_row(input_cost_per_million_tokens=1_000_000, output_cost_per_million_tokens=0)
    meter.record(row, ok=True, usage={"input_tokens": 3, "output_tokens": 5})
    meter.record(row, ok=False, usage={"input_tokens": 100})
    clock.now += 60
    meter.record(row, ok=True, usage={"input_tokens": -4, "output_tokens": "x"})
    assert meter.flush()
    parts = sorted(table.parts(None, None, None, None), key=lambda p: p.minute)
    assert [(p.calls, p.errors, p.input_tokens, p.output_tokens, p.cost) for p in parts] == [
        (2, 1, 3, 5, 3.0),
        (1, 0, 0, 0, 0.0),
    ]
    assert meter.close()


def test_report_groups_by_row_scope_and_day() -> None:
    """The same buckets report per row, per scope and per UTC day, newest labels first."""
    clock = Clock(datetime(2025, 5, 1, 23, 59, tzinfo=timezone.utc).timestamp())
    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0, clock=clock)
    a = LLMConfig(id="a", name="A", provider="fake", model_name="m", scope="s1")
    b = LLMConfig(id="b", name="B", provider="fake", model_name="m", scope="s2")
    meter.record(a, ok=True, usage=None)
    meter.record(b, ok=True, usage=None)
    clock.now += 120  # the next UTC day
    meter.record(a.model_copy(update={"name": "A2"}), ok=False, usage=None)
    by_row = meter.report(since=None, by="row")
    assert [(r.llm_id, r.name, r.calls, r.errors) for r in by_row] == [
        ("a", "A2", 2, 1),
        ("b", "B", 1, 0),
    ]
    assert [(r.scope, r.calls) for r in meter.report(since=None, by="scope")] == [
        ("s1", 2),
        ("s2", 1),
    ]
    assert [(r.day, r.calls) for r in meter.report(since=None, by="day")] == [
        ("2025-05-01", 2),
        ("2025-05-02", 1),
    ]
    assert [r.calls for r in meter.report(since="1m")] == [1]
    with pytest.raises(ValueError, match="by must be one of"):
        meter.report(by="week")  # type: ignore[arg-type]
    meter.close()


def test_budget_spend_counts_each_call_once_through_flushes_and_readings() -> None:
    """Spend is the table's reading plus this process's calls not in it: the same before and
    after a flush and a reading; another replica's spend shows at the next reading."""
    table = MemoryUsageTable()
    meter = UsageMeter(table, flush_interval=0, budget_refresh=0, clock=Clock())
    row = config_row(output_cost_per_million_tokens=1e6, max_spend={"amount": 10})
    budget = usage_terms(row).budget
    assert budget is not None
    assert meter.spent(row, budget) == 0.0  # the first look reads the table
    for _ in range(2):
        meter.record(row, ok=True, usage={"output_tokens": 1})
    assert meter.spent(row, budget) == 2.0
    assert meter.flush()
    assert meter.spent(row, budget) == 2.0
    minute = int(NOW // 60)
    table.add([UsageBucket(minute, "r1", "global", "Priced", "fake", "m", 1, 0, 0, 1, 1.0)])
    assert meter.spent(row, budget) == 2.0  # not read yet: never per call
    meter.refresh_budgets()
    assert meter.spent(row, budget) == 3.0
    meter.record(row, ok=True, usage={"output_tokens": 1})
    assert meter.spent(row, budget) == 4.0
    meter.close()
    assert table.spend(0, ["r1"]) == {"r1": 4.0}


def test_memory_table_drops_buckets_older_than_it_keeps() -> None:
    """An in-memory table stays bounded: buckets older than keep_days are dropped."""
    table = MemoryUsageTable(keep_days=1)

    def add_and_list(minute: int) -> list[float]:
        table.add([UsageBucket(minute, "a", "global", "A", "fake", "m", 1, 0, 0, 0, 0.0)])
        return sorted(p.minute for p in table.parts(None, None, None, None))

    assert add_and_list(0) == [0]
    assert add_and_list(1000) == [0, 1000]
    assert add_and_list(2000) == [1000, 2000]


# -- the llm_usage table -----------------------------------------------------------------------


def usage_counts(url: str) -> dict[str, tuple[int, int, int, int, float]]:
    """Each row's totals in llm_usage, read with plain SQL."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT llm_id, SUM(calls), SUM(errors), SUM(input_tokens), "
                    "SUM(output_tokens), SUM(cost) FROM llm_usage GROUP BY llm_id"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5])) for r in rows}


def test_flush_upserts_by_adding_to_the_stored_counts(migrated_url: str) -> None:
    """Two meters (two replicas) flushing the same minute add up in one table row."""
    engine = SQLStore(migrated_url).engine
    clock = Clock()
    row = config_row(output_cost_per_million_tokens=1e6)
    meters = [
        UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0, clock=clock)
        for _ in range(2)
    ]
    for meter in meters:
        for _ in range(3):
            meter.record(row, ok=True, usage={"input_tokens": 1, "output_tokens": 2})
        assert meter.flush()
    meters[0].record(row, ok=False, usage=None)
    assert meters[0].close()
    assert usage_counts(migrated_url) == {"r1": (7, 1, 6, 12, 12.0)}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM llm_usage")).scalar_one() == 1
    engine.dispose()


def test_usage_writes_leave_the_llms_generation_unchanged(migrated_url: str) -> None:
    """Flushing usage is not a change to llms: the change counter stays."""
    store = SQLStore(migrated_url)
    store.add(fake("A", 1, "a"))
    before = store.generation()
    meter = UsageMeter(SQLUsageTable(store.engine), flush_interval=0, budget_refresh=0)
    meter.record(store.list_llms()[0], ok=True, usage=None)
    assert meter.close()
    assert store.generation() == before
    store.close()


def _block_sql(dialect: str) -> list[str]:
    if dialect == "sqlite":
        return [
            "CREATE TABLE usage_block (llm_id TEXT)",
            "CREATE TRIGGER usage_block_insert BEFORE INSERT ON llm_usage "
            "WHEN EXISTS (SELECT 1 FROM usage_block WHERE llm_id = NEW.llm_id) "
            "BEGIN SELECT RAISE(ABORT, 'blocked'); END",
        ]
    return [
        "CREATE TABLE usage_block (llm_id text)",
        "CREATE FUNCTION usage_block() RETURNS trigger AS $$ BEGIN "
        "IF EXISTS (SELECT 1 FROM usage_block WHERE llm_id = NEW.llm_id) THEN "
        "RAISE EXCEPTION 'blocked'; END IF; RETURN NEW; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER usage_block BEFORE INSERT ON llm_usage "
        "FOR EACH ROW EXECUTE FUNCTION usage_block()",
    ]


def test_flush_failing_on_every_bucket_writes_nothing_and_its_retry_counts_once(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A flush the database refuses for every bucket writes nothing and keeps the batch; the
    retry adds each once."""
    store = SQLStore(migrated_url)
    engine = store.engine
    with engine.begin() as conn:
        for statement in _block_sql(engine.dialect.name):
            conn.execute(sa.text(statement))
        conn.execute(sa.text("INSERT INTO usage_block VALUES ('r1'), ('r2')"))
    meter = UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0)
    first, second = config_row(), config_row().model_copy(update={"id": "r2"})
    for _ in range(4):
        meter.record(first, ok=True, usage={"input_tokens": 1, "output_tokens": 1})
    meter.record(second, ok=False, usage=None)
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        assert not meter.flush()
    assert "LLM usage not flushed" in caplog.text
    assert usage_counts(migrated_url) == {}
    meter.record(first, ok=True, usage={"input_tokens": 1, "output_tokens": 1})
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM usage_block"))
    assert meter.flush()
    assert meter.flush()  # nothing left: nothing added again
    assert usage_counts(migrated_url) == {"r1": (5, 0, 5, 5, 0.0), "r2": (1, 1, 0, 0, 0.0)}
    meter.close()
    store.close()


def test_a_bucket_the_database_refuses_is_dropped_and_the_others_land(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One bucket the database refuses while the others land is logged (naming its row) and
    dropped: it never holds the other rows' usage back, and close() reports the loss."""
    store = SQLStore(migrated_url)
    engine = store.engine
    with engine.begin() as conn:
        for statement in _block_sql(engine.dialect.name):
            conn.execute(sa.text(statement))
        conn.execute(sa.text("INSERT INTO usage_block VALUES ('r2')"))
    meter = UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0, clock=Clock())
    first = config_row()
    second = config_row().model_copy(update={"id": "r2", "name": "Refused"})
    for _ in range(4):
        meter.record(first, ok=True, usage={"input_tokens": 1, "output_tokens": 1})
    meter.record(second, ok=True, usage=None)
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        assert not meter.flush()
    dropped = [r for r in caplog.records if getattr(r, "event", None) == "usage_dropped"]
    assert [
        (r.__dict__["llm_id"], r.__dict__["llm_name"], r.__dict__["calls"]) for r in dropped
    ] == [("r2", "Refused", 1)]
    assert usage_counts(migrated_url) == {"r1": (4, 0, 4, 4, 0.0)}
    meter.record(first, ok=True, usage=None)
    assert meter.close()
    assert usage_counts(migrated_url) == {"r1": (5, 0, 4, 4, 0.0)}
    store.close()


def test_calls_flow_while_the_usage_table_is_missing_and_are_flushed_once_it_exists(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the table, calls still answer (no write on the call path), the flush warns and
    keeps the counts, and once the table is back they are written exactly once."""
    from llmpool.repository.sql.migrate import load_migrations

    store = SQLStore(migrated_url)
    store.add(fake("A", 1, "a"))
    with store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE llm_usage"))
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0)
    llm = pool.get_llm_with_fallback()
    assert [llm.invoke("hi").content for _ in range(3)] == ["a", "a", "a"]
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        assert not pool.flush_usage()
    assert "LLM usage not flushed" in caplog.text
    llm.invoke("hi")
    usage = ("0004_usage.sql", "0006_usage_latency.sql", "0007_usage_tags.sql")
    with store.engine.begin() as conn:
        for migration in load_migrations(store.engine.dialect.name):
            if migration.name not in usage:
                continue
            if store.engine.dialect.name == "sqlite":
                conn.connection.driver_connection.executescript(migration.sql)  # type: ignore[union-attr]
            else:
                conn.exec_driver_sql(migration.sql)
    pool.close()
    assert [(r.name, r.calls, r.errors) for r in pool.usage(since=None)] == [("A", 4, 0)]
    store.close()


def test_background_thread_flushes_without_close(migrated_url: str) -> None:
    """The flusher writes the counts within its interval, before the pool is closed."""
    store = SQLStore(migrated_url)
    store.add(fake("A", 1, "a"))
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0.05)
    pool.get_llm_with_fallback().invoke("hi")
    wait_until(lambda: usage_counts(migrated_url).get(store.list_llms()[0].id, (0,))[0] == 1)
    pool.close()
    store.close()


def test_pool_usage_reports_typed_rows_and_refuses_when_not_tracking() -> None:
    """``pool.usage()`` returns UsageRow lines; a pool made with track_usage=False has none."""
    store = InMemoryStore([fake("A", 1, "a"), fake("B", 2, "b", scope="other")])
    pool = LLMPool(store, poll_interval=0)
    pool.get_llm_with_fallback().invoke("x")
    pool.get_llm_with_fallback("other").invoke("x")
    rows = pool.usage(since=timedelta(minutes=5))
    assert [type(r) for r in rows] == [UsageRow, UsageRow]
    assert [(r.scope, r.name, r.calls) for r in rows] == [("global", "A", 1), ("other", "B", 1)]
    assert [(r.scope, r.calls) for r in pool.usage(by="scope", scope="other")] == [("other", 1)]
    pool.close()
    quiet = LLMPool(InMemoryStore([fake("A", 1, "a")]), poll_interval=0, track_usage=False)
    quiet.get_llm_with_fallback().invoke("x")
    with pytest.raises(Exception, match="track_usage=False"):
        quiet.usage()
    quiet.close()


def test_down_migration_drops_the_usage_table(migrated_url: str) -> None:
    """The reverse script of 0004 drops exactly llm_usage and its index."""
    dialect = "sqlite" if migrated_url.startswith("sqlite") else "postgresql"
    root = Path(__file__).resolve().parents[1] / "migrations_sql" / dialect / "down"
    engine = SQLStore(migrated_url).engine
    with engine.begin() as conn:
        for statement in (root / "0004_usage.sql").read_text().split(";"):
            body = "\n".join(
                line for line in statement.splitlines() if not line.startswith("--")
            ).strip()
            if body:
                conn.execute(sa.text(body))
    assert "llm_usage" not in sa.inspect(engine).get_table_names()
    assert "llms" in sa.inspect(engine).get_table_names()
    engine.dispose()


# -- absurd counts and bad buckets -------------------------------------------------------------


def refused_fields(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str, str]]:
    """The (event, llm_id, llm_name, field) of each refused usage value logged."""
    return [
        (r.event, r.llm_id, r.llm_name, r.field)  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "usage_value_refused"
    ]


def test_absurd_token_counts_are_refused_and_every_bucket_lands(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Token counts past any real call (2**64, 1e30, negative) count as 0 with a WARNING naming
    the row and the field; the flush then writes every row's usage."""
    engine = SQLStore(migrated_url).engine
    meter = UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0, clock=Clock())
    good = config_row(output_cost_per_million_tokens=1e6)
    bad = good.model_copy(update={"id": "r2", "name": "Liar"})
    meter.record(good, ok=True, usage={"input_tokens": 3, "output_tokens": 5})
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        meter.record(bad, ok=True, usage={"input_tokens": 2**64, "output_tokens": 1e30})
        meter.record(bad, ok=True, usage={"input_tokens": -1, "output_tokens": 2})
    assert refused_fields(caplog) == [
        ("usage_value_refused", "r2", "Liar", "input_tokens"),
        ("usage_value_refused", "r2", "Liar", "output_tokens"),
        ("usage_value_refused", "r2", "Liar", "input_tokens"),
    ]
    assert "18446744073709551616" in caplog.text
    assert meter.close()
    assert usage_counts(migrated_url) == {"r1": (1, 0, 3, 5, 5.0), "r2": (2, 0, 0, 2, 2.0)}
    engine.dispose()


def test_a_cost_too_large_to_store_is_refused_never_infinite(
    migrated_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A price so high that a call's cost passes any real figure counts the call at cost 0
    (logged): the cost column never holds infinity."""
    engine = SQLStore(migrated_url).engine
    meter = UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0, clock=Clock())
    row = config_row(output_cost_per_million_tokens=1e305)
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        for _ in range(2):
            meter.record(row, ok=True, usage={"input_tokens": 1, "output_tokens": 10**9})
    assert refused_fields(caplog) == [("usage_value_refused", "r1", "Priced", "cost")] * 2
    assert meter.close()
    assert usage_counts(migrated_url) == {"r1": (2, 0, 2, 2 * 10**9, 0.0)}
    engine.dispose()


# -- money -------------------------------------------------------------------------------------


def test_cost_and_budget_read_back_as_decimals_without_float_noise(migrated_url: str) -> None:
    """Three calls of 2e-05 each report 0.00006 exactly (not 6.000000000000001e-05): a Decimal
    in UsageRow and in the budget's status, a decimal string in as_dict."""
    from decimal import Decimal

    from llmpool.usage.check import budget_status

    engine = SQLStore(migrated_url).engine
    meter = UsageMeter(SQLUsageTable(engine), flush_interval=0, budget_refresh=0, clock=Clock())
    row = config_row(
        input_cost_per_million_tokens=2.5,
        output_cost_per_million_tokens=2.5,
        max_spend={"amount": 0.1, "period": "day"},
    )
    for _ in range(3):
        meter.record(row, ok=True, usage={"input_tokens": 3, "output_tokens": 5})
    (line,) = meter.report(since=None)
    assert type(line.cost) is Decimal
    assert str(line.cost) == "0.00006"
    assert line.as_dict()["cost"] == "0.00006"
    status = budget_status(meter, row)
    assert status is not None
    assert (status["spent"], status["amount"]) == (Decimal("0.00006"), Decimal("0.1"))
    assert type(status["spent"]) is Decimal and str(status["amount"]) == "0.1"
    meter.close()
    engine.dispose()


def test_a_failing_background_step_is_logged_and_the_steps_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step that raises is logged (``flusher_failed``, naming the thread) and runs again at
    its next interval; the other step keeps its own; nothing runs after ``stop``."""
    caplog.set_level("ERROR", logger="llmpool.usage")
    runs: list[str] = []

    class Owner:
        def fail(self) -> None:
            runs.append("fail")
            raise OSError("the table is gone")

        def flush(self) -> None:
            runs.append("flush")

        def close(self) -> None:
            runs.append("close")

    owner = Owner()
    flusher = Flusher("llmpool-test", [(0.01, owner.fail), (0.03, owner.flush), (0, owner.close)],
                      owner.close)  # fmt: skip
    flusher.start()
    wait_until(lambda: runs.count("fail") >= 3 and "flush" in runs)
    flusher.stop()
    stopped = len(runs)
    assert runs.count("fail") > runs.count("flush") and "close" not in runs
    failed = [r for r in caplog.records if getattr(r, "event", None) == "flusher_failed"]
    assert failed and "llmpool-test" in failed[0].getMessage()
    assert failed[0].exc_info is not None
    flusher.start()  # not after stop
    time.sleep(0.05)
    assert len(runs) == stopped
