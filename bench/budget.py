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

Run alone: ``python -m bench.run --only budget``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.harness import Row

LATENCY = 0.05
BUDGET_CALLS = 3
STATES = ("no call priced yet", "max_tokens priced", "after one call")


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


def _model(state: str) -> tuple[Any, Any]:
    """A fallback model over A (budgeted) and B, and its meter."""
    from llmpool.fallback.model import Candidate, FallbackChatModel
    from llmpool.models import LLMConfig
    from llmpool.usage.check import UsageCheck
    from llmpool.usage.meter import UsageMeter
    from llmpool.usage.table import MemoryUsageTable

    config: dict[str, Any] = {
        "output_cost_per_million_tokens": 200_000,  # 5 tokens: 1.0
        "max_spend": {"amount": float(BUDGET_CALLS), "period": "day"},
    }
    if state == "max_tokens priced":
        config["max_tokens"] = 5
    a = LLMConfig(id="a", name="A", provider="fake", model_name="m", config=config)
    b = LLMConfig(id="b", name="B", provider="fake", model_name="m", priority=2)
    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0)
    llm = FallbackChatModel(
        candidates=[Candidate(a, _priced_model("A")), Candidate(b, _priced_model("B"))],
        admissions=(UsageCheck(meter),),
    )
    if state == "after one call":
        llm.invoke("hi")
    return llm, meter


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

    llm, meter = _model(state)
    try:
        race(llm, n)
        config = llm.candidates[0].config
        budget = usage_terms(config).budget
        assert budget is not None
        return float(meter.spent(config, budget))
    finally:
        meter.close()


def bench_budget(n: dict[str, int]) -> list[Row]:
    """The worst overspend of a budget of 3 calls under N concurrent calls, over rounds."""
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
    return rows
