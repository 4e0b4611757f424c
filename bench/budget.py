"""Budgets under a race: how far N concurrent calls overspend a row's ``max_spend``.

Each round builds a fallback model over two rows, A (budgeted: 3 calls' cost a day) and B (no
budget), with the pool's `UsageCheck` on its admission seam, and starts N calls at once: asyncio
tasks on one loop (N = the run's ``concurrency``) or threads (at most 64). Every answer takes
``LATENCY`` seconds and reports 3 input and 5 output tokens, so every call of A costs 1.0. The
overspend is what A's answers cost beyond the budget, in calls; the worst of the rounds is
reported, with the most calls A answered. Three states of A:

- ``no call priced yet``: the first calls of a process, A without ``max_tokens``;
- ``max_tokens priced``: the same, A with ``max_tokens`` (5 output tokens at its price);
- ``after one call``: A answered once (spent 1.0; its average cost known), then the race.

Beside them, a fleet: ``PROCESSES`` OS processes race one budget over one SQLite ``llm_usage``
table, each with its own meter and ``concurrency / PROCESSES`` asyncio tasks, first each on its
own (today's behaviour without Redis: every process spends the budget it reads), then sharing
Redis (`RedisBudgets`, ``LLMPOOL_BENCH_REDIS_URL``, default database 15, under a fresh prefix
whose keys are deleted afterwards). The overspend is read back from the table, in calls and cost.

Run alone: ``python -m bench.run --only budget``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.harness import Row

LATENCY = 0.05
BUDGET_CALLS = 3
STATES = ("no call priced yet", "max_tokens priced", "after one call")
PROCESSES = 8
REDIS_URL = os.environ.get("LLMPOOL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def _priced_model(name: str) -> Any:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    usage = {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8}

    class PricedModel(BaseChatModel):
        """Answers after LATENCY seconds, reporting 3 input and 5 output tokens."""

        @property
        def _llm_type(self) -> str:
            return "bench-priced"

        def _answer(self) -> ChatResult:
            message = AIMessage(content=name, usage_metadata=usage)  # type: ignore[arg-type]
            return ChatResult(generations=[ChatGeneration(message=message)])

        def _generate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
            time.sleep(LATENCY)
            return self._answer()

        async def _agenerate(self, messages: Any, stop: Any = None, **kwargs: Any) -> ChatResult:
            await asyncio.sleep(LATENCY)
            return self._answer()

    return PricedModel()


def _model(state: str, meter: Any, llm_id: str = "a", *, prime: bool = True) -> Any:
    """A fallback model over A (budgeted) and B, counting in ``meter``; primed by one call in
    the state ``after one call`` unless told not to."""
    from llmpool.fallback.model import Candidate, FallbackChatModel
    from llmpool.models import LLMConfig
    from llmpool.usage.check import UsageCheck

    config: dict[str, Any] = {
        "output_cost_per_million_tokens": 200_000,  # 5 tokens: 1.0
        "max_spend": {"amount": float(BUDGET_CALLS), "period": "day"},
    }
    if state == "max_tokens priced":
        config["max_tokens"] = 5
    a = LLMConfig(id=llm_id, name="A", provider="fake", model_name="m", config=config)
    b = LLMConfig(id=f"{llm_id}-b", name="B", provider="fake", model_name="m", priority=2)
    llm = FallbackChatModel(
        candidates=[Candidate(a, _priced_model("A")), Candidate(b, _priced_model("B"))],
        admissions=(UsageCheck(meter),),
    )
    if state == "after one call" and prime:
        llm.invoke("hi")
    return llm


def _race_tasks(llm: Any, n: int) -> list[str]:
    async def main() -> list[Any]:
        return await asyncio.gather(*(llm.ainvoke("hi") for _ in range(n)))

    return [str(answer.content) for answer in asyncio.run(main())]


def _race_threads(llm: Any, n: int) -> list[str]:
    names: list[str] = []
    start = threading.Barrier(n)

    def call() -> None:
        start.wait()
        names.append(str(llm.invoke("hi").content))

    threads = [threading.Thread(target=call) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return names


def spent(state: str, race: Callable[[Any, int], list[str]], n: int) -> float:
    """One round: what A spent, in calls (one costs 1.0)."""
    from llmpool.providers.prices import usage_terms
    from llmpool.usage.meter import UsageMeter
    from llmpool.usage.table import MemoryUsageTable

    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0)
    llm = _model(state, meter)
    try:
        race(llm, n)
        config = llm.candidates[0].config
        budget = usage_terms(config).budget
        assert budget is not None
        return float(meter.spent(config, budget))
    finally:
        meter.close()


def _replica(url: str, prefix: str | None, state: str, llm_id: str, tasks: int, start: Any) -> None:
    """One process of the fleet: its own meter (sharing Redis under ``prefix`` unless ``None``),
    ``tasks`` concurrent calls once every process is ready, its usage flushed at the end."""
    from llmpool.repository.sql.store import SQLStore
    from llmpool.usage.meter import UsageMeter, table_for
    from llmpool.usage.shared import RedisBudgets

    store = SQLStore(url)
    budgets = None if prefix is None else RedisBudgets(REDIS_URL, prefix=prefix)
    meter = UsageMeter(table_for(store), flush_interval=0, budget_refresh=0, budgets=budgets)
    llm = _model(state, meter, llm_id, prime=False)
    start.wait()
    _race_tasks(llm, tasks)
    meter.close()
    store.close()


def fleet_spent(url: str, prefix: str | None, state: str, tasks: int) -> float:
    """One round of the fleet: what A's calls cost, read back from the table (1.0 a call)."""
    from llmpool.repository.sql.store import SQLStore
    from llmpool.usage.meter import UsageMeter, table_for
    from llmpool.usage.shared import RedisBudgets

    llm_id = uuid.uuid4().hex
    store = SQLStore(url)
    table = table_for(store)
    # One answer in the table (its cost learnt in Redis) in the state "after one call"; in any
    # state, everything a process imports is imported before the fork.
    budgets = None if prefix is None else RedisBudgets(REDIS_URL, prefix=prefix)
    meter = UsageMeter(table, flush_interval=0, budget_refresh=0, budgets=budgets)
    _model(state, meter, llm_id)
    meter.close()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(PROCESSES)
    processes = [
        context.Process(target=_replica, args=(url, prefix, state, llm_id, tasks, start))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    spent = table.spend(0.0, [llm_id]).get(llm_id, 0.0)
    store.close()
    return spent


def _fleet_rows(n: dict[str, int], rounds: int) -> list[Row]:
    """The fleet's worst overspend, per process and sharing Redis, over rounds."""
    import redis

    from llmpool.repository.sql.migrate import migrate

    tasks = max(1, n["concurrency"] // PROCESSES)
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        return [Row("budget race, fleet", "skipped", f"no Redis at {REDIS_URL}: {error}")]
    prefix = f"llmpool-bench:{uuid.uuid4().hex}:"
    races = [("on its own (no Redis)", None, "after one call")]
    races += [("sharing Redis", prefix, state) for state in STATES]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/usage.sqlite3"
            migrate(url)
            for label, shared, state in races:
                most = max(fleet_spent(url, shared, state, tasks) for _ in range(rounds))
                worst = max(most - BUDGET_CALLS, 0.0)
                rows.append(
                    Row(
                        f"budget race, {BUDGET_CALLS} calls' budget (worst of {rounds} rounds)",
                        f"{PROCESSES} processes x {tasks} asyncio tasks, each {label}, {state}",
                        f"overspend {worst:g} calls, cost {worst:g} (A answered {most:g})",
                        None,
                        f"≤ {PROCESSES} calls" if shared else "",
                        ("pass" if worst <= PROCESSES else "miss") if shared else "",
                    )
                )
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()
    return rows


def bench_budget(n: dict[str, int]) -> list[Row]:
    """The worst overspend of a budget of 3 calls under N concurrent calls, over rounds: in one
    process, and in a fleet of processes."""
    rounds = max(1, min(n["rounds"], 10))
    rows: list[Row] = []
    races = {
        f"{n['concurrency']} asyncio tasks": (_race_tasks, n["concurrency"]),
        f"{min(n['concurrency'], 64)} threads": (_race_threads, min(n["concurrency"], 64)),
    }
    for label, (race, callers) in races.items():
        for state in STATES:
            most = max(spent(state, race, callers) for _ in range(rounds))
            worst = max(most - BUDGET_CALLS, 0.0)
            rows.append(
                Row(
                    f"budget race, {BUDGET_CALLS} calls' budget (worst of {rounds} rounds)",
                    f"{label}, {state}",
                    f"overspend {worst:g} calls (A answered {most:g})",
                    None,
                    "≤ 1 call",
                    "pass" if worst <= 1 else "miss",
                )
            )
    return rows + _fleet_rows(n, min(rounds, 5))
