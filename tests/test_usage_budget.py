"""Budgets under concurrency: calls in flight count against a row's budget at their expected
cost, so N concurrent calls overspend by about one call, not by N."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import wait_until
from servers import AnthropicServer, OpenAIServer, Request

from llmpool.contracts import Candidate
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.store import SQLStore
from llmpool.usage.check import UsageCheck
from llmpool.usage.meter import UsageMeter
from llmpool.usage.table import MemoryUsageTable

POLICY = FallbackPolicy(
    attempts=1, backoff_initial=0.001, backoff_max=0.002, backoff_jitter=0, failure_threshold=1000
)
CALLERS = 40


class GatedOpenAIServer(OpenAIServer):
    """An OpenAI server that holds every answer until its gate opens: calls stay in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        self.gate.wait(30)
        return super().answer(request, text, tool)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GatedOpenAIServer, AnthropicServer]]:
    """A gated OpenAI server (the budgeted row A) and an Anthropic server (row B)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    a = GatedOpenAIServer()
    with a, AnthropicServer() as b:
        try:
            yield a, b
        finally:
            a.gate.set()


def budget_pool(url: str, a: str, b: str, **a_config: Any) -> LLMPool:
    """A pool over A (1.0 per answer: 5 output tokens, a day's budget of 3) and B (free)."""
    store = SQLStore(url)
    try:
        store.add_many(
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
                    "provider": "anthropic",
                    "model_name": "claude",
                    "priority": 2,
                    "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"},
                    "config": {"base_url": b},
                },
            ]
        )
    finally:
        store.close()
    return LLMPool(url, poll_interval=0, listen=False, policy=POLICY, usage_flush_interval=0)


def race_threads(llm: Any, a: GatedOpenAIServer) -> list[str]:
    """Make CALLERS concurrent calls from threads, A's answers held until every call is either
    answered by B or waiting at A; return who answered each."""
    before = a.count
    a.gate.clear()
    names: list[str] = []

    def call() -> None:
        names.append(llm.invoke("hi").response_metadata["llmpool"]["name"])

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(names) + a.count - before == CALLERS, timeout=30)
    finally:
        a.gate.set()
        for thread in threads:
            thread.join()
    return names


def race_tasks(llm: Any, a: GatedOpenAIServer) -> list[str]:
    """The same race as `race_threads`, with CALLERS tasks on one event loop."""
    before = a.count
    a.gate.clear()

    async def main() -> list[str]:
        tasks = [asyncio.create_task(llm.ainvoke("hi")) for _ in range(CALLERS)]
        deadline = time.monotonic() + 30
        try:
            while sum(t.done() for t in tasks) + a.count - before < CALLERS:
                assert time.monotonic() < deadline, "the calls never all arrived"
                await asyncio.sleep(0.005)
        finally:
            a.gate.set()
        answers = await asyncio.gather(*tasks)
        return [answer.response_metadata["llmpool"]["name"] for answer in answers]

    return asyncio.run(main())


def spent_on_a(pool: LLMPool) -> float:
    """A's spend this period, as the pool's status reports it."""
    row = next(r for r in pool.status()["rows"] if r["name"] == "A")
    return float(row["budget"]["spent"])


Race = Callable[[Any, GatedOpenAIServer], list[str]]


@pytest.mark.parametrize("race", [race_threads, race_tasks], ids=["threads", "asyncio"])
def test_concurrent_calls_with_history_overspend_by_at_most_one_call(
    migrated_url: str, servers: tuple[GatedOpenAIServer, AnthropicServer], race: Race
) -> None:
    """After one call priced the row, 40 concurrent calls against a budget of 3 calls' cost are
    admitted only while spend plus the calls in flight stays under it; the rest go to B."""
    a, b = servers
    pool = budget_pool(migrated_url, a.url, b.url)
    llm = pool.get_llm_with_fallback()
    a.gate.set()
    assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "A"  # spent 1
    names = race(llm, a)
    assert len(names) == CALLERS
    assert a.count <= 3 + 1  # the budget's 3 calls and at most one more
    assert spent_on_a(pool) <= 3 + 1
    assert names.count("A") == a.count - 1
    assert names.count("B") >= CALLERS - 3
    pool.close()


@pytest.mark.parametrize("race", [race_threads, race_tasks], ids=["threads", "asyncio"])
def test_a_row_with_no_history_reserves_its_max_tokens_cost(
    migrated_url: str, servers: tuple[GatedOpenAIServer, AnthropicServer], race: Race
) -> None:
    """With no call priced yet, a call in flight is expected to cost its max_tokens at the
    row's output price: 40 first calls against a budget of 3 such calls admit 3."""
    a, b = servers
    pool = budget_pool(migrated_url, a.url, b.url, max_tokens=5)
    names = race(pool.get_llm_with_fallback(), a)
    assert names.count("A") == a.count == 3
    assert spent_on_a(pool) == 3.0
    pool.close()


def test_a_row_of_unknown_cost_admits_one_call_until_its_first_answer(
    migrated_url: str, servers: tuple[GatedOpenAIServer, AnthropicServer]
) -> None:
    """With no history and no max_tokens, a row lets one call at a time through until one has
    answered; then its reservations are settled and the next race uses the price it learnt."""
    a, b = servers
    pool = budget_pool(migrated_url, a.url, b.url)
    llm = pool.get_llm_with_fallback()
    assert race_threads(llm, a).count("A") == a.count == 1
    assert race_threads(llm, a).count("A") == 2  # spent 1, then 2 more at 1.0 each
    assert spent_on_a(pool) == 3.0
    pool.close()


def candidate(**config: Any) -> Candidate:
    """A candidate for a fake row with ``config``."""
    return Candidate(
        LLMConfig(id="r1", name="Priced", provider="fake", model_name="m", config=config)
    )


def test_release_frees_a_reservation_and_record_settles_it_at_the_real_cost() -> None:
    """An admitted call holds its expected cost until it is released (no call made) or
    recorded (its real cost counted instead); the refusal names the calls in flight."""
    check = UsageCheck(UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0))
    row = candidate(
        output_cost_per_million_tokens=1e6, max_tokens=1, max_spend={"amount": 2, "period": "day"}
    )
    assert check.admit(row, None) is None
    assert check.admit(row, None) is None
    refused = check.admit(row, None)
    assert refused is not None
    assert refused.startswith("over budget: spent 0 of 2 this day (UTC), 2 reserved by 2 calls")
    check.release(row, None)
    assert check.admit(row, None) is None
    check.record(row, None, ok=True, latency=0.1, usage={"input_tokens": 0, "output_tokens": 1})
    check.record(row, None, ok=False, latency=0.1, usage=None)
    assert check.admit(row, None) is None  # spent 1, nothing in flight
    assert check.admit(row, None) is not None  # spent 1 and 1 reserved
    check.meter.close()


def test_a_reservation_never_settled_lapses_after_its_ttl() -> None:
    """A call admitted and then abandoned without an outcome holds the row's budget only for
    RESERVATION_TTL seconds: until then a row of unknown cost admits nothing more."""
    from llmpool.usage.check import RESERVATION_TTL

    now = [1_750_000_000.0]
    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0, clock=lambda: now[0])
    check = UsageCheck(meter)
    row = candidate(output_cost_per_million_tokens=1, max_spend={"amount": 2, "period": "month"})
    assert check.admit(row, None) is None  # never recorded nor released
    refused = check.admit(row, None)
    assert refused == (
        "over budget: spent 0 of 2 this month (UTC) and 1 call in flight of a cost not known yet"
    )
    now[0] += RESERVATION_TTL + 1
    assert check.admit(row, None) is None
    meter.close()
