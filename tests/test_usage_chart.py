"""Answers' latency in ``llm_usage`` (migration 0006), ``llmpool usage`` by hour or minute and
for one row, and ``usage --chart``."""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from helpers import fake

from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.store import SQLStore
from llmpool.usage.meter import UsageMeter
from llmpool.usage.report import group
from llmpool.usage.sql import SQLUsageTable, llm_usage
from llmpool.usage.table import HISTOGRAM, LATENCY_BOUNDS_MS, MemoryUsageTable, UsageBucket

#: 2026-01-01 00:00 UTC, as an epoch minute.
START = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp() // 60)
WINDOW = ("--since", "2026-01-01T00:00", "--until", "2026-01-01T04:00")


def bucket(minute: int, name: str, calls: int, errors: int = 0, ms: float = 0.0) -> UsageBucket:
    """A minute of row ``name`` whose answers each took ``ms`` (each counted in its bucket)."""
    answers = calls - errors
    histogram = [0] * len(HISTOGRAM)
    if answers:
        index = next((i for i, n in enumerate(LATENCY_BOUNDS_MS) if ms <= n), -1)
        histogram[index] = answers
    cost = calls * 0.25
    return UsageBucket(minute, f"id-{name}", "global", name, "fake", "m", calls, errors, 0, 0,
                       cost, answers * ms, *histogram)  # fmt: skip


def hours(url: str) -> None:
    """A: 4 calls in hour 0 (180 ms), 8 in hour 2 (one failed; 700 ms), 2 in hour 3 (40 ms);
    B: 2 calls in hour 1, both failed."""
    store = SQLStore(url)
    SQLUsageTable(store.engine).add(
        [
            bucket(START + 5, "A", 4, ms=180),
            bucket(START + 125, "A", 5, ms=700),
            bucket(START + 130, "A", 3, errors=1, ms=700),
            bucket(START + 185, "A", 2, ms=40),
            bucket(START + 70, "B", 2, errors=2),
        ]
    )
    store.close()


def test_each_answers_latency_lands_in_its_minutes_histogram(migrated_url: str) -> None:
    """Calls through a pool add their answers' latency (sum and histogram bucket) beside their
    calls and cost; failed calls add none."""
    store = SQLStore(migrated_url)
    slow = fake("Slow", 2, "slow", config={"responses": ["slow"], "sleep": 0.3})
    store.add_many([fake("Flaky", 1, "x", config={"error": "down"}), slow])
    with LLMPool(store, policy=FallbackPolicy(attempts=1), poll_interval=0) as pool:
        model = pool.get_llm_with_fallback()
        assert [model.invoke("hi").content for _ in range(3)] == ["slow"] * 3
        assert pool.flush_usage()
        lines = {line.name: line for line in pool.usage()}
    columns = ", ".join(f"SUM({name})" for name in HISTOGRAM)
    with store.engine.connect() as conn:
        found = {
            row[0]: row[1:]
            for row in conn.execute(
                sa.text(  # the calls may fall in two minutes
                    "SELECT name, SUM(calls), SUM(errors), SUM(latency_ms_sum), "
                    f"{columns} FROM llm_usage GROUP BY name"
                )
            )
        }
    store.close()
    calls, errors, total, *histogram = found["Slow"]
    assert (calls, errors, sum(histogram)) == (3, 0, 3)
    assert total >= 900 and histogram.index(3) >= LATENCY_BOUNDS_MS.index(500)
    assert tuple(found["Flaky"]) == (3, 3, 0) + (0,) * len(HISTOGRAM)
    line = lines["Slow"]
    assert line.mean_ms is not None and line.p50_ms is not None and line.p95_ms is not None
    assert line.mean_ms >= 300 and line.p50_ms <= line.p95_ms
    assert lines["Flaky"].p95_ms is None


def test_usage_by_hour_and_for_one_row(migrated_url: str) -> None:
    """--by hour sums every row per UTC hour with its latency; --llm keeps one row's calls,
    named by name or by id."""
    hours(migrated_url)
    db = ("--database-url", migrated_url, *WINDOW)
    data = json.loads(run_cli("usage", "--by", "hour", "--json", *db).out)
    got = [(r["period"], r["calls"], r["errors"], r["p50_ms"]) for r in data["rows"]]
    assert got == [
        ("2026-01-01 00:00", 4, 0, 175.0),
        ("2026-01-01 01:00", 2, 2, None),
        ("2026-01-01 02:00", 8, 1, 750.0),
        ("2026-01-01 03:00", 2, 0, 25.0),
    ]
    for llm in ("B", "id-B"):
        only = json.loads(run_cli("usage", "--llm", llm, "--json", *db).out)
        assert [(r["name"], r["calls"]) for r in only["rows"]] == [("B", 2)]
    text = run_cli("usage", "--by", "minute", "--llm", "A", *db).out.splitlines()
    assert text[0].split() == ["PERIOD", "CALLS", "ERRORS", "INPUT_TOKENS", "OUTPUT_TOKENS",
                               "COST", "P50_MS", "P95_MS"]  # fmt: skip
    assert text[1].split() == ["2026-01-01", "00:05", "4", "0", "0", "0", "1", "175.0", "242.5"]
    assert text[-1].split() == ["TOTAL", "14", "1", "0", "0", "3.50", "535.7", "953.6"]


def test_a_memory_table_reports_by_hour_for_one_row() -> None:
    """Minute buckets kept in memory group by UTC hour, and keep one row by name or id."""
    table = MemoryUsageTable()
    table.add([bucket(START + 5, "A", 4, ms=180), bucket(START + 70, "A", 1, ms=40),
               bucket(START + 71, "B", 2, errors=1, ms=600)])  # fmt: skip
    meter = UsageMeter(table, flush_interval=0, budget_refresh=0, clock=lambda: START * 60.0)
    lines = meter.report(since=None, by="hour")
    assert [(r.period, r.calls, r.errors, r.p50_ms) for r in lines] == [
        ("2026-01-01 00:00", 4, 0, 175.0),
        ("2026-01-01 01:00", 3, 1, 50.0),
    ]
    for llm in ("B", "id-B"):
        (only,) = group(table.parts(None, None, None, None, llm=llm), "row")
        assert (only.name, only.calls, only.p95_ms) == ("B", 2, 975.0)


def test_usage_chart_draws_each_row_per_period(migrated_url: str) -> None:
    """--chart draws calls, errors, cost and p95 latency per hour, a bar per hour scaled to the
    chart's largest value; --json gives the same values."""
    hours(migrated_url)
    result = run_cli("usage", "--chart", "--database-url", migrated_url, *WINDOW)
    assert result.code == 0, result.err
    charts = result.out.split("\n\n")
    titles = [chart.splitlines()[0] for chart in charts]
    axis = "per hour, 2026-01-01 00:00 to 2026-01-01 03:00 UTC, one bar per hour"
    assert titles == [f"{name} {axis}" for name in ("calls", "errors", "cost", "p95 latency (ms)")]
    lines = {
        title.split(" ")[0]: chart.splitlines()[1:]
        for title, chart in zip(titles, charts, strict=True)
    }
    assert lines["calls"][0].split() == ["NAME", "CALLS", "MAX", "TOTAL"]
    drawn = {name: [line.split() for line in chart[2:]] for name, chart in lines.items()}
    assert drawn["calls"] == [["A", "▄·█▂", "8", "14"], ["B", "·▂··", "2", "2"]]
    assert drawn["errors"] == [["A", "··▄·", "1", "1"], ["B", "·█··", "2", "2"]]
    assert drawn["cost"] == [["A", "▄·█▂", "2", "3.5"], ["B", "·▂··", "0.5", "0.5"]]
    assert drawn["p95"] == [["A", "▂", "█▁", "975", "953.6"], ["B", "-", "-"]]
    data = json.loads(run_cli("usage", "--chart", "--json", "--database-url", migrated_url,
                              *WINDOW).out)  # fmt: skip
    assert data["periods"] == [f"2026-01-01 0{h}:00" for h in range(4)]
    a, b = data["rows"]
    assert (a["name"], a["calls"], a["errors"], a["cost"]) == ("A", [4, 0, 8, 2], [0, 0, 1, 0],
                                                               ["1", "0", "2", "0.5"])  # fmt: skip
    assert a["p95_ms"] == [242.5, None, 975.0, 47.5]
    assert (b["calls"], b["p95_ms"]) == ([0, 2, 0, 0], [None] * 4)


def test_usage_chart_refuses_grouping_by_row_and_more_bars_than_it_holds(
    migrated_sqlite_url: str,
) -> None:
    """A chart steps over time: --by row is a usage error, and so is a window of more minutes
    than a chart has bars, naming what to change."""
    db = ("--database-url", migrated_sqlite_url)
    by_row = run_cli("usage", "--chart", "--by", "row", *db)
    assert (by_row.code, by_row.err.strip()) == (
        2, "llmpool: error: --chart draws over time: --by minute, hour or day, not row",
    )  # fmt: skip
    wide = run_cli("usage", "--chart", "--by", "minute", "--since", "1d", *db)
    assert wide.code == 2
    # 1441 minutes hold the day's seconds, 1440 when its last second is the first of a minute
    assert re.search(
        r"is 144[01] bars; a chart holds 120: use a shorter window or a longer --by", wide.err
    )
    assert run_cli("usage", "--chart", *db).out.startswith("no calls recorded since ")


def test_usage_chart_without_rich_names_the_extra(
    migrated_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without rich, --chart exits 1 in one line naming the extra; --chart --json needs none."""
    hours(migrated_sqlite_url)
    monkeypatch.setitem(sys.modules, "rich", None)
    db = ("--database-url", migrated_sqlite_url, *WINDOW)
    result = run_cli("usage", "--chart", *db)
    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [
        "llmpool: error: llmpool usage --chart needs rich, which is not installed: "
        "pip install 'llmpool[tui]'"
    ]
    data = run_cli("usage", "--chart", "--json", *db)
    assert [row["name"] for row in json.loads(data.out)["rows"]] == ["A", "B"]


def test_the_usage_table_definition_matches_the_migrated_table(migrated_url: str) -> None:
    """The columns SQLAlchemy writes are those the migrations create, on both databases."""
    engine = sa.create_engine(migrated_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        columns: list[dict[str, Any]] = sa.inspect(engine).get_columns("llm_usage")
    finally:
        engine.dispose()
    assert sorted(c["name"] for c in columns) == sorted(llm_usage.c.keys())
