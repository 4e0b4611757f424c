"""``llmpool demo``: the usage guide's rows and three ``fake`` ones on a temporary SQLite
database, offline: a provider error and a failover, a circuit breaker opening, a rate limit and a
budget, each shown as the calls meet them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand
from llmpool.cli.output import Progress, emit, one_line, quiet, table
from llmpool.cli.runtime import chain_row

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig

#: The fake rows after the usage guide's: one down, one limited, one on a small budget.
DEMO_ROWS: tuple[dict[str, Any], ...] = (
    {
        "name": "Demo Flaky",
        "provider": "fake",
        "model_name": "flaky",
        "priority": 85,
        "config": {"error": 503, "sleep": 0.05},
    },
    {
        "name": "Demo Fake",
        "provider": "fake",
        "model_name": "demo",
        "priority": 90,
        "rpm": 2,
        "config": {
            "responses": ["Machine learning is software that improves from examples."],
            "sleep": 0.05,
            "input_cost_per_million_tokens": 2.5,
            "output_cost_per_million_tokens": 10.0,
        },
    },
    {
        "name": "Demo Backup",
        "provider": "fake",
        "model_name": "backup",
        "priority": 95,
        "config": {
            "responses": ["Machine learning finds patterns in data to make predictions."],
            "output_cost_per_million_tokens": 20.0,
            "max_spend": {"amount": 0.0001, "period": "day"},
        },
    },
)

#: Calls enough for each row to meet its limit: the breaker, the rpm, then the budget.
CALLS = 4
QUESTION = "Explain machine learning"
_ACTOR = "llmpool demo"
_MARKS = {"ok": "answered", "error": "failed", "skipped": "skipped"}


def register(add: AddCommand) -> None:
    """Add the ``demo`` parser: ``--json`` only (its database is always a temporary one)."""
    help_text = (
        "a fallback walk offline, on a temporary SQLite database: a provider error and a "
        "failover, a circuit breaker, a rate limit and a budget"
    )
    add("demo", cmd_demo, help_text, shared=("--json",), example="llmpool demo")


def _label(config: LLMConfig) -> str:
    # "Demo Fake (90, rpm 2)": what each row brings to the walk.
    notes = [str(config.priority)] + ([] if config.enabled else ["disabled"])
    notes += [f"rpm {config.rpm}"] if config.rpm else []
    notes += [f"error {config.config['error']}"] if "error" in config.config else []
    budget = config.config.get("max_spend")
    notes += [f"budget {budget['amount']:g}/{budget.get('period', 'day')}"] if budget else []
    return f"{config.name} ({', '.join(notes)})"


def _detail(reason: Any) -> str | None:
    return one_line(str(reason or "")).removeprefix("skipped: ") or None


def _call(llm: BaseChatModel, number: int, progress: Progress) -> dict[str, Any]:
    # One call: who was tried, why each did not answer, and the answer or the final error.
    from llmpool.errors import AllLLMsFailedError

    try:
        answer = llm.invoke(QUESTION)
    except AllLLMsFailedError as error:
        walk = [
            {
                "name": f.name,
                "outcome": "skipped" if f.error is None else "error",
                "detail": _detail(f.reason),
            }
            for f in error.failures
        ]
        progress.step(f"call {number}", "no row could answer")
        return {"walk": walk, "answered_by": None, "answer": None, "usage": None}
    meta = answer.response_metadata["llmpool"]
    walk = [
        {
            "name": a["name"],
            "outcome": a["outcome"],
            "detail": _detail(a.get("reason") or a.get("error")),
        }
        for a in meta["attempts"]
    ]
    failed = [str(step["name"]) for step in walk if step["outcome"] == "error"]
    after = f" after {', '.join(failed)} failed" if failed else ""
    progress.step(f"call {number}", f"{meta['name']} answered{after}")
    said = str(answer.content)
    return {
        "walk": walk,
        "answered_by": meta["name"],
        "answer": said,
        "usage": answer.usage_metadata,
    }


def _render(shown: str, order: str, calls: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    text = [f"database: {shown} (temporary, deleted on exit)", f"rows in priority order: {order}"]
    first = {(s["name"], s["detail"]) for s in calls[0]["walk"] if s["outcome"] == "skipped"}
    for number, call in enumerate(calls, 1):
        text.append(f"\ncall {number}: get_llm_with_fallback().invoke({QUESTION!r})")
        steps = call["walk"]
        if number > 1:  # the rows without their keys once
            steps = [s for s in steps if (s["name"], s["detail"]) not in first]
            text.append(f"  ({len(call['walk']) - len(steps)} rows skipped as in call 1)")
        for step in steps:
            detail = f": {step['detail']}" if step["detail"] else ""
            text.append(f"  {step['name']:<16} {_MARKS[step['outcome']]}{detail}")
        if call["answered_by"] is None:
            text.append("  no row could answer: every one was skipped or failed")
            continue
        usage = call["usage"] or {}
        tokens = f"{usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out"
        text.append(f"  answer from {call['answered_by']} ({tokens}): {call['answer']}")
    columns = ["name", "status", "breaker", "limits", "spend", "last_error"]
    text.append(f"\nthe chain after the calls (`llmpool chain`):\n{table(rows, columns)}")
    return "\n".join(text)


def cmd_demo(args: argparse.Namespace) -> int:
    """``llmpool demo``: the seed's rows and `DEMO_ROWS` on a temporary SQLite database, called
    `CALLS` times through a fallback walk that hides the variables the rows reference, so it
    calls no real provider; each call reported on stderr as it ends."""
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows
    from llmpool.repository.sql.url import mask_url

    if getattr(args, "database_url", None):  # given before the command name
        print(
            "llmpool: note: demo always uses a temporary SQLite database; "
            "--database-url is ignored",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix="llmpool-demo-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'demo.sqlite3'}"
        migrate(url)
        # One attempt per row and a breaker that opens after two failures: the walk shows both.
        policy = FallbackPolicy(attempts=1, failure_threshold=2, deadline=30)
        with LLMPool(url, poll_interval=0, listen=False, policy=policy) as pool:
            seed_starter_rows(pool.store, actor=_ACTOR)
            pool.store.add_many(list(DEMO_ROWS), actor=_ACTOR)
            configs = pool.store.list_llms()
            names = {v for r in configs for k, v in r.auth_meta.items() if k.endswith("_env")}
            hidden = {name: os.environ.pop(name) for name in names if name in os.environ}
            progress = Progress("demo", CALLS)
            try:  # the walk below shows why rows are skipped
                with quiet("llmpool", logging.CRITICAL):
                    llm = pool.get_llm_with_fallback()
                    calls = [_call(llm, number, progress) for number in range(1, CALLS + 1)]
                    status = pool.status()
            finally:
                os.environ.update(hidden)
    rows = [chain_row(dict(row)) for row in status["rows"]]
    order = ", ".join(_label(config) for config in configs)
    shown = mask_url(url)
    data = {
        "database": shown,
        "temporary": True,
        "rows": [r.name for r in configs],
        "calls": calls,
        "chain": [{k: row.get(k) for k in ("name", "status", "breaker", "limits", "spend")}
                  for row in rows],
    }  # fmt: skip
    emit(args, data, lambda: _render(shown, order, calls, rows))
    return 0
