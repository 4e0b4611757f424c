"""Usage rows against local provider servers: exact counts, budgets, replicas, crashes, CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from helpers import fake, wait_until
from servers import AnthropicServer, OpenAIServer, Reply, Status

from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.providers.prices import Budget
from llmpool.repository.sql.store import SQLStore

POLICY = FallbackPolicy(
    attempts=2, backoff_initial=0.001, backoff_max=0.002, backoff_jitter=0,
    failure_threshold=1000, failure_rate=None,
)  # fmt: skip

#: 23:58 UTC: the day's budget resets in two minutes.
LATE = datetime(2025, 5, 1, 23, 58, tzinfo=timezone.utc).timestamp()


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = LATE) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIServer, AnthropicServer]]:
    """An OpenAI server (row A) and an Anthropic server (row B), with their keys set."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with OpenAIServer() as a, AnthropicServer() as b:
        yield a, b


def priced_rows(a: str, b: str, budget: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A (OpenAI, 1.0 per answer: 5 output tokens) then B (Anthropic, 3.0 per answer)."""
    a_config: dict[str, Any] = {"base_url": a + "/v1", "output_cost_per_million_tokens": 200_000}
    if budget is not None:
        a_config["max_spend"] = budget
    return [
        {
            "name": "A",
            "provider": "openai",
            "model_name": "gpt-4o",
            "priority": 1,
            "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            "config": a_config,
        },
        {
            "name": "B",
            "provider": "anthropic",
            "model_name": "claude",
            "priority": 2,
            "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"},
            "config": {"base_url": b, "input_cost_per_million_tokens": 1_000_000},
        },
    ]


def seed(url: str, rows: list[dict[str, Any]]) -> None:
    """Add ``rows`` to the database at ``url``."""
    store = SQLStore(url)
    try:
        store.add_many(rows)
    finally:
        store.close()


def usage_by_name(url: str) -> dict[str, tuple[int, int, int, int, float]]:
    """Each row's totals in llm_usage, read with plain SQL."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT name, SUM(calls), SUM(errors), SUM(input_tokens), "
                    "SUM(output_tokens), SUM(cost) FROM llm_usage GROUP BY name"
                )
            ).all()
    finally:
        engine.dispose()
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]), float(r[5])) for r in rows}


def test_usage_rows_add_up_to_the_servers_request_counts_across_replicas(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """Two pools on one database, four threads, scripted failures and retries: each row's
    calls equal its server's requests, errors its failures, tokens and cost its answers."""
    a, b = servers
    seed(migrated_url, priced_rows(a.url, b.url))
    a.script(*[Status(500), Reply(), Status(500), Status(500), Status(503), Reply()] * 4)
    replicas = [
        LLMPool(
            migrated_url, poll_interval=0, listen=False, policy=POLICY, usage_flush_interval=0.02
        )
        for _ in range(2)
    ]
    answers: list[str] = []

    def caller(pool: LLMPool) -> None:
        llm = pool.get_llm_with_fallback()
        for _ in range(10):
            answers.append(str(llm.invoke("hi").content))

    threads = [threading.Thread(target=caller, args=(replicas[i % 2],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for pool in replicas:
        pool.close()
    assert len(answers) == 40
    failures = 16  # every scripted failure was served: A saw more than 24 requests
    answered_a, answered_b = a.count - failures, b.count
    assert answered_a + answered_b == 40
    assert b.count > 0  # some calls fell back after two failures in a row
    assert usage_by_name(migrated_url) == {
        "A": (a.count, failures, 3 * answered_a, 5 * answered_a, 1.0 * answered_a),
        "B": (b.count, 0, 3 * answered_b, 5 * answered_b, 3.0 * answered_b),
    }


def test_async_calls_and_streams_are_counted_exactly(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """ainvoke and astream, concurrent on one loop, flushed by aclose: counts match the
    servers, and a stream's tokens are the sum of its chunks' usage."""
    a, b = servers
    seed(migrated_url, priced_rows(a.url, b.url))

    async def main() -> None:
        pool = LLMPool(migrated_url, poll_interval=0, listen=False, policy=POLICY)
        llm = await pool.aget_llm_with_fallback()

        async def streamed() -> str:
            return "".join([str(chunk.content) async for chunk in llm.astream("hi")])

        a.script(Status(500), Status(500))
        assert await streamed()  # A fails twice: B streams the answer
        a.script(*[Status(500)] * 4)
        results = await asyncio.gather(
            *(llm.ainvoke("hi") for _ in range(10)), *(streamed() for _ in range(4))
        )
        assert len(results) == 14
        await pool.aclose()

    asyncio.run(main())
    answered_a = a.count - 6
    answered_b = b.count
    assert answered_a + answered_b == 15
    usage = usage_by_name(migrated_url)
    assert usage["A"][:2] == (a.count, 6)
    calls, errors, input_tokens, output_tokens, cost = usage["B"]
    # langchain-anthropic reports a stream's input tokens as 0: B's cost is its input tokens
    assert (calls, errors, output_tokens, cost) == (b.count, 0, 5 * answered_b, input_tokens)


def test_budget_skips_the_row_until_the_day_rolls_over(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """A row that spent its day's budget is skipped with the reason (status shows its spend),
    calls go to the next row, and the row answers again once the UTC day rolls over."""
    a, b = servers
    seed(migrated_url, priced_rows(a.url, b.url, {"amount": 3, "period": "day"}))
    clock = Clock()
    pool = LLMPool(migrated_url, poll_interval=0, listen=False, policy=POLICY, usage_clock=clock)
    llm = pool.get_llm_with_fallback()
    names = [llm.invoke("hi").response_metadata["llmpool"]["name"] for _ in range(3)]
    answer = llm.invoke("hi")
    meta = answer.response_metadata["llmpool"]
    assert [*names, meta["name"]] == ["A", "A", "A", "B"]
    assert meta["attempts"][0] == {
        "llm_id": meta["attempts"][0]["llm_id"],
        "name": "A",
        "outcome": "skipped",
        "reason": "over budget: spent 3 of 3 this day (UTC); resets in 2 min",
    }
    assert a.count == 3
    row = pool.status()["rows"][0]
    assert (row["name"], row["status"], row["reason"]) == (
        "A",
        "skipped",
        "over budget: spent 3 of 3 this day (UTC); resets in 2 min",  # as the calls skip it
    )
    assert row["budget"] == {
        "amount": 3.0,
        "period": "day",
        "spent": 3.0,
        "reached": True,
        "resets_at": "2025-05-02T00:00:00Z",
        "resets_in": 120.0,
    }
    clock.now += 180  # the next UTC day
    assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "A"
    pool.close()
    assert usage_by_name(migrated_url)["A"][:2] == (4, 0)


def test_budget_spend_is_shared_by_replicas_through_the_table(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """A replica started later reads the spend from the table; one already running sees
    another's flushed spend at its next budget reading, never per call."""
    a, b = servers
    seed(migrated_url, priced_rows(a.url, b.url, {"amount": 3, "period": "month"}))
    clock = Clock()

    def replica(**options: Any) -> LLMPool:
        return LLMPool(
            migrated_url, poll_interval=0, listen=False, policy=POLICY, usage_clock=clock, **options
        )

    watching = replica(budget_refresh=0.02, usage_flush_interval=0.02)
    first = watching.get_llm_with_fallback()
    assert first.invoke("hi").response_metadata["llmpool"]["name"] == "A"  # spent 1
    spender = replica(usage_flush_interval=0)
    llm = spender.get_llm_with_fallback()
    assert [llm.invoke("hi").response_metadata["llmpool"]["name"] for _ in range(2)] == ["A", "A"]
    spender.close()  # flushes: the table holds 3
    row = next(c for c in watching.snapshot().configs if c.name == "A")
    meter = watching.usage_meter
    assert meter is not None
    wait_until(lambda: meter.spent(row, Budget(3, "month")) >= 3)
    assert first.invoke("hi").response_metadata["llmpool"]["name"] == "B"
    late = replica()
    assert late.get_llm_with_fallback().invoke("hi").response_metadata["llmpool"]["name"] == "B"
    assert a.count == 3
    watching.close()
    late.close()


def test_crash_loses_at_most_the_unflushed_interval(migrated_url: str) -> None:
    """A process killed after a background flush keeps exactly what that flush wrote."""
    store = SQLStore(migrated_url)
    store.add(fake("A", 1, "a"))
    store.close()
    script = textwrap.dedent(
        f"""
        import os, time
        from llmpool.pool.facade import LLMPool
        pool = LLMPool({migrated_url!r}, poll_interval=0, listen=False,
                       usage_flush_interval=2.0)
        llm = pool.get_llm_with_fallback()
        for _ in range(5):
            llm.invoke("hi")
        table = pool.usage_meter.table
        deadline = time.monotonic() + 30
        while sum(p.calls for p in table.parts(None, None, None, None)) < 5:
            assert time.monotonic() < deadline, "no background flush"
            time.sleep(0.01)
        for _ in range(3):
            llm.invoke("hi")
        os._exit(0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert usage_by_name(migrated_url)["A"][:2] == (5, 0)


def test_cli_usage_lists_rows_scopes_and_days(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """``llmpool usage`` prints the table's rows with a total, as JSON or grouped by day."""
    a, b = servers
    seed(migrated_url, priced_rows(a.url, b.url))
    a.script(Status(500), Status(500))
    pool = LLMPool(migrated_url, poll_interval=0, listen=False, policy=POLICY)
    llm = pool.get_llm_with_fallback()
    for _ in range(3):
        llm.invoke("hi")
    pool.close()
    env = {"OPENAI_API_KEY": "sk-test"}
    result = run_cli("usage", "--since", "1h", "--json", "--database-url", migrated_url, env=env)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["by"] == "row"
    assert [(r["name"], r["calls"], r["errors"]) for r in data["rows"]] == [
        ("A", 4, 2),
        ("B", 1, 0),
    ]
    assert data["total"]["calls"] == 5
    assert [r["cost"] for r in data["rows"]] == ["2", "3"]
    assert data["total"]["cost"] == "5"
    text = run_cli("usage", "--by", "day", "--database-url", migrated_url).out.splitlines()
    assert text[0].split() == ["DAY", "CALLS", "ERRORS", "INPUT_TOKENS", "OUTPUT_TOKENS", "COST",
                               "P50_MS", "P95_MS"]  # fmt: skip
    total = text[-1].split()
    assert total[:6] == ["TOTAL", "5", "2", "9", "15", "5"]
    assert 0 < float(total[6]) <= float(total[7])  # p50 and p95 of the 3 answers
    future = run_cli("usage", "--since", "2999-01-01", "--database-url", migrated_url)
    assert future.out.startswith("no calls recorded since 2999-01-01")
    bad = run_cli("usage", "--since", "yesterday", "--database-url", migrated_url)
    assert bad.code == 2
    assert "not a duration or a date" in bad.err
    backwards = run_cli("usage", "--since", "1d", "--until", "2d", "--database-url", migrated_url)
    assert backwards.code == 2
    assert "--until" in backwards.err and "is not after --since" in backwards.err
    for absurd in ("99999999999d", "0001-01-01"):
        refused = run_cli("usage", "--since", absurd, "--database-url", migrated_url)
        assert refused.code == 2, refused.err
        assert "out of range" in refused.err and "Traceback" not in refused.err


def test_cli_usage_reports_cost_as_decimal_text(
    migrated_url: str, servers: tuple[OpenAIServer, AnthropicServer]
) -> None:
    """Three answers of 2e-05 each cost 0.00006 in the JSON (a string) and in the table, never
    a binary float's 6.000000000000001e-05."""
    a, _ = servers
    row = priced_rows(a.url, "")[0]
    row["config"] = {
        "base_url": a.url + "/v1",
        "input_cost_per_million_tokens": 2.5,
        "output_cost_per_million_tokens": 2.5,
    }
    seed(migrated_url, [row])
    pool = LLMPool(migrated_url, poll_interval=0, listen=False, policy=POLICY)
    llm = pool.get_llm_with_fallback()
    for _ in range(3):
        llm.invoke("hi")
    pool.close()
    db = ("--database-url", migrated_url)
    data = json.loads(run_cli("usage", "--json", *db).out)
    assert [r["cost"] for r in data["rows"]] == ["0.00006"]
    assert data["total"]["cost"] == "0.00006"
    assert run_cli("usage", *db).out.splitlines()[-1].split()[-3] == "0.00006"


def test_usage_rows_survive_a_row_deleted_later(migrated_url: str) -> None:
    """The history keeps the row's labels after the row is deleted from llms."""
    store = SQLStore(migrated_url)
    row = store.add(fake("Gone", 1, "x"))
    pool = LLMPool(store, poll_interval=0)
    pool.get_llm_with_fallback().invoke("hi")
    pool.flush_usage()
    store.delete(row.id)
    assert [(r.llm_id, r.name, r.calls) for r in pool.usage()] == [(row.id, "Gone", 1)]
    pool.close()
    store.close()


def test_module_import_loads_no_usage_machinery() -> None:
    """``import llmpool`` loads neither the usage table nor SQLAlchemy's dialects."""
    code = (
        "import sys, llmpool; print(any(m.startswith(('llmpool.usage', 'sqlalchemy.dialects'))"
        " for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
