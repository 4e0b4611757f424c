"""Budgets shared through Redis by replicas (real Redis on 127.0.0.1:6379, real usage tables).

The database number comes from ``LLMPOOL_TEST_REDIS_DB`` (default 15); each test deletes only
the keys under its own fresh prefix.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until
from test_usage_budget import POLICY, GatedOpenAIServer

from llmpool.contracts import Candidate
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.store import SQLStore
from llmpool.usage.check import UsageCheck
from llmpool.usage.meter import UsageMeter, table_for
from llmpool.usage.shared import RedisBudgets

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"
REPLICAS, CALLS_EACH = 8, 5


def fleet(url: str, a: str, prefix: str, **a_config: Any) -> tuple[str, list[LLMPool]]:
    """A's id and REPLICAS pools sharing Redis, over A (1.0 per answer: 5 output tokens, a day's
    budget of 3) and B (a free fake)."""
    store = SQLStore(url)
    try:
        row = store.add_many(
            [
                {
                    "name": "A",
                    "provider": "openai",
                    "model_name": "gpt-4o",
                    "priority": 1,
                    "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                    "config": {
                        "base_url": a + "/v1",
                        "output_cost_per_million_tokens": 200_000,
                        "max_spend": {"amount": 3, "period": "day"},
                        **a_config,
                    },
                },
                {
                    "name": "B",
                    "provider": "fake",
                    "model_name": "m",
                    "priority": 2,
                    "config": {"responses": ["B"]},
                },
            ]
        )[0]
    finally:
        store.close()
    pools = [
        LLMPool(
            url,
            poll_interval=0,
            listen=False,
            policy=POLICY,
            usage_flush_interval=0,
            budget_refresh=0,
            redis=REDIS_URL,
            redis_prefix=prefix,
        )
        for _ in range(REPLICAS)
    ]
    return row.id, pools


def race(llms: list[Any], a: GatedOpenAIServer) -> list[str]:
    """CALLS_EACH concurrent calls per replica, A's answers held until every call is either
    answered by B or waiting at A; return who answered each."""
    before = a.count
    a.gate.clear()
    names: list[str] = []
    threads = [
        threading.Thread(
            target=lambda llm=llm: names.append(
                llm.invoke("hi").response_metadata["llmpool"]["name"]
            )
        )
        for llm in llms
        for _ in range(CALLS_EACH)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(names) + a.count - before == len(threads), timeout=30)
    finally:
        a.gate.set()
        for thread in threads:
            thread.join()
    return names


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GatedOpenAIServer]:
    """A gated OpenAI server: the budgeted row A's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    a = GatedOpenAIServer()
    with a:
        try:
            yield a
        finally:
            a.gate.set()


def test_eight_replicas_racing_one_budget_spend_exactly_it(
    migrated_url: str,
    server: GatedOpenAIServer,
    redis_keys: tuple[Any, str],
) -> None:
    """Eight pools sharing Redis race 40 calls at a budget of 3 calls: with no cost known, one
    call at a time goes through fleet-wide; once one answered, its cost (learnt by the fleet)
    lets exactly 2 more through; after the flushes Redis, the table and every replica agree."""
    a = server
    client, prefix = redis_keys
    llm_id, pools = fleet(migrated_url, a.url, prefix)
    try:
        llms = [pool.get_llm_with_fallback() for pool in pools]
        assert race(llms, a).count("A") == a.count == 1
        names = race(llms, a)
        assert names.count("A") == 2
        assert a.count == 3  # the budget exactly: no overspend
        assert {float(r["budget"]["spent"]) for p in pools for r in p.status()["rows"][:1]} == {3}
        for pool in pools:
            assert pool.flush_usage()
        period = f"{prefix}budget:{llm_id}:{int(time.time() // 86400 * 86400)}"
        settled, flushed = (float(v) for v in client.hmget(period, "settled", "flushed"))
        assert settled == flushed == 3.0
        assert sum(float(line.cost) for line in pools[0].usage(by="row")[:1]) == 3.0
        for pool in pools:
            pool.usage_meter.refresh_budgets()  # type: ignore[union-attr]
            assert float(pool.status()["rows"][0]["budget"]["spent"]) == 3.0
    finally:
        for pool in pools:
            pool.close()


def priced(llm_id: str = "r1", **config: Any) -> Candidate:
    """A candidate for a fake row costing 1.0 per output token, with ``config``."""
    config = {"output_cost_per_million_tokens": 1e6, **config}
    return Candidate(
        LLMConfig(id=llm_id, name="Priced", provider="fake", model_name="m", config=config)
    )


def replicas(
    store: SQLStore, prefix: str, n: int = 2, clock: Any = time.time, **budgets: Any
) -> list[UsageCheck]:
    """``n`` replicas' budget checks over one usage table, sharing Redis under ``prefix``."""
    table = table_for(store)
    return [
        UsageCheck(
            UsageMeter(
                table,
                flush_interval=0,
                budget_refresh=0,
                clock=clock,
                budgets=RedisBudgets(REDIS_URL, prefix=prefix, **budgets),
            )
        )
        for _ in range(n)
    ]


def test_a_flush_between_a_reading_and_a_call_counts_once(
    sql_store: SQLStore, redis_keys: tuple[Any, str]
) -> None:
    """A replica's reading and the fleet's settled spend since its flush mark count every call
    once: before and after another replica flushes, before and after it reads again; Redis then
    agrees with the table; the next day starts from nothing under keys of its own."""
    client, prefix = redis_keys
    now = [time.time()]
    x, y = replicas(sql_store, prefix, clock=lambda: now[0])
    row = priced(max_tokens=1, max_spend={"amount": 5, "period": "day"})
    budget = x.meter.terms(row.config).budget
    assert budget is not None
    assert x.meter.spent(row.config, budget) == 0.0  # X reads: the table holds nothing
    for _ in range(2):
        assert y.admit(row, None) is None
        y.record(row, None, ok=True, latency=0.1, usage={"input_tokens": 0, "output_tokens": 1})
    assert x.meter.spent(row.config, budget) == 2.0  # through Redis
    assert y.meter.flush()
    assert x.meter.spent(row.config, budget) == 2.0  # X's reading predates the flush
    x.meter.refresh_budgets()
    assert x.meter.spent(row.config, budget) == 2.0  # the table holds it now, the mark too
    key = f"{prefix}r1:{int(budget.start(now[0]))}"
    assert [float(v) for v in client.hmget(key, "settled", "flushed")] == [2.0, 2.0]
    assert x.meter.table.spend(budget.start(now[0]), ["r1"]) == {"r1": 2.0}
    assert x.admit(row, None) is None and x.admit(row, None) is None and y.admit(row, None) is None
    refused = y.admit(row, None)
    assert refused is not None
    assert refused.startswith("over budget: spent 2 of 5 this day (UTC), 3 reserved by 3 calls")
    now[0] += 86400
    assert x.admit(row, None) is None  # a new day, a new key
    assert client.exists(f"{prefix}r1:{int(budget.start(now[0]))}")
    for check in (x, y):
        check.meter.close()


def test_a_reservation_of_a_replica_that_never_settles_lapses(
    sql_store: SQLStore, redis_keys: tuple[Any, str]
) -> None:
    """A call of unknown cost admitted by a replica that then dies holds the fleet's budget
    only until its reservation expires (on Redis's clock)."""
    _, prefix = redis_keys
    x, y = replicas(sql_store, prefix, reservation_ttl=0.05)
    row = priced(max_spend={"amount": 2, "period": "month"})
    assert x.admit(row, None) is None  # never settled
    refused = y.admit(row, None)
    assert refused == (
        "over budget: spent 0 of 2 this month (UTC) and 1 call in flight of a cost not known yet"
    )
    wait_until(lambda: y.peek(row) is None, timeout=2)
    for check in (x, y):
        check.meter.close()


def test_redis_down_decides_per_process_logged_once_down_and_once_back(
    sql_store: SQLStore, redis_keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Rows without a budget never ask Redis; with Redis down a budgeted row is decided on this
    process's own calls (logged once); when Redis answers again (logged once), the next reading
    puts the row back on the fleet's budget."""
    import redis

    client, prefix = redis_keys
    budgets = RedisBudgets(
        prefix=prefix, retry_after=0, client=redis.Redis.from_url("redis://127.0.0.1:1/0")
    )
    meter = UsageMeter(table_for(sql_store), flush_interval=0, budget_refresh=0)
    meter.budgets = budgets
    check = UsageCheck(meter)
    free, row = priced("free"), priced(max_tokens=1, max_spend={"amount": 2, "period": "day"})
    with caplog.at_level(logging.WARNING, logger="llmpool.redis"):
        assert check.admit(free, None) is None
        check.record(free, None, ok=True, latency=0.1, usage={"output_tokens": 1})
        assert caplog.records == []  # a row without a budget pays nothing
        assert check.admit(row, None) is None and check.admit(row, None) is None
        assert check.admit(row, None) is not None  # this process's own two calls in flight
        check.release(row, None)
        check.release(row, None)
        budgets.shared.client = client  # Redis answers again
        meter.refresh_budgets()
        assert check.admit(row, None) is None
    assert [r.event for r in caplog.records] == ["redis_down", "redis_up"]  # type: ignore[attr-defined]
    key = f"{prefix}r1:{int(time.time() // 86400 * 86400)}"
    assert client.zcard(f"{key}:r") == 1  # the reservation is the fleet's
    meter.close()


def test_a_settlement_redis_missed_releases_its_reservation_at_the_next_flush(
    sql_store: SQLStore, redis_keys: tuple[Any, str]
) -> None:
    """A call admitted through Redis whose settlement finds Redis down counts its cost locally,
    and the flush after Redis answers again releases its reservation for the fleet."""
    import redis

    client, prefix = redis_keys
    (check,) = replicas(sql_store, prefix, n=1, retry_after=0)
    budgets = check.meter.budgets
    assert budgets is not None
    row = priced(max_tokens=1, max_spend={"amount": 2, "period": "day"})
    assert check.admit(row, None) is None
    reservations = f"{prefix}r1:{int(time.time() // 86400 * 86400)}:r"
    assert client.zcard(reservations) == 1
    budgets.shared.client = redis.Redis.from_url("redis://127.0.0.1:1/0")
    check.record(row, None, ok=True, latency=0.1, usage={"output_tokens": 1})
    budgets.shared.client = client
    assert client.zcard(reservations) == 1  # held until released
    assert check.meter.flush()
    assert client.zcard(reservations) == 0
    check.meter.close()
