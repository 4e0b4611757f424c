"""Where flushed usage goes: the `UsageTable` protocol, its batches, and a table in memory.

A `UsageTable` takes a batch of minute buckets in one all-or-nothing step (`add`: on SQL one
transaction of ``INSERT ... ON CONFLICT DO UPDATE SET calls = llm_usage.calls +
excluded.calls, ...``, so replicas add to one count), sums a period's spend per row (`spend`,
for budgets) and reports (`parts`, folded by `llmpool.usage.report.group`).

`llmpool.usage.sql.SQLUsageTable` is the ``llm_usage`` table of migration ``0004_usage``
(PostgreSQL and SQLite); `MemoryUsageTable` keeps the same in the process, for pools over a
repository that is not SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from llmpool.usage.report import UsagePart

__all__ = ["MemoryUsageTable", "UsageBucket", "UsageTable"]


@dataclass(frozen=True)
class UsageBucket:
    """One row's usage in one minute, as a batch carries it.

    Attributes:
        minute: The bucket, in minutes since the epoch (UTC).
        llm_id: The row's id.
        scope, name, provider, model_name: The row's labels at its latest call.
        calls, errors, input_tokens, output_tokens, cost: What to add.
    """

    minute: int
    llm_id: str
    scope: str
    name: str
    provider: str
    model_name: str
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float


class UsageTable(Protocol):
    """Where a pool's usage is flushed to, summed and reported from."""

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts to the stored ones, all of them or (raising) none."""
        ...

    def spend(self, since: float, llm_ids: Collection[str]) -> dict[str, float]:
        """Return the cost of each row's calls since ``since`` (epoch seconds)."""
        ...

    def parts(
        self, since: float | None, until: float | None, scope: str | None, llm_id: str | None
    ) -> list[UsagePart]:
        """Return the totals per row, UTC day and labels, within ``[since, until)``."""
        ...


def _day(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, timezone.utc).strftime("%Y-%m-%d")


class MemoryUsageTable:
    """A usage table in the process: what a pool over an in-memory store flushes to.

    Args:
        keep_days: Buckets older than this many days (before the newest one) are dropped, so
            a long-running process stays bounded; a month's budget needs at most 31.

    Example:
        >>> table = MemoryUsageTable()
        >>> table.add([UsageBucket(1, "id1", "global", "A", "fake", "m", 2, 1, 3, 5, 0.5)])
        >>> table.spend(0, ["id1"])
        {'id1': 0.5}
    """

    def __init__(self, keep_days: int = 32) -> None:
        self._rows: dict[tuple[int, str], list[Any]] = {}
        self._lock = threading.Lock()
        self._keep = keep_days * 1440  # minutes
        self._pruned = 0  # the newest minute at the last pruning

    def __repr__(self) -> str:
        return f"MemoryUsageTable({len(self._rows)} buckets)"

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts (the newest labels replace older ones)."""
        with self._lock:
            for b in buckets:
                row = self._rows.get((b.minute, b.llm_id))
                if row is None:
                    self._rows[b.minute, b.llm_id] = [b.scope, b.name, b.provider, b.model_name]
                    row = self._rows[b.minute, b.llm_id]
                    row += [0, 0, 0, 0, 0.0]
                row[:4] = [b.scope, b.name, b.provider, b.model_name]
                row[4] += b.calls
                row[5] += b.errors
                row[6] += b.input_tokens
                row[7] += b.output_tokens
                row[8] += b.cost
            newest = max((b.minute for b in buckets), default=0)
            if newest - self._pruned >= 60:  # at most once an hour
                self._pruned = newest
                for key in [key for key in self._rows if key[0] < newest - self._keep]:
                    del self._rows[key]

    def spend(self, since: float, llm_ids: Collection[str]) -> dict[str, float]:
        """Return the cost of each row's calls in buckets starting at ``since`` or later."""
        wanted = set(llm_ids)
        first = since / 60
        spent: dict[str, float] = {}
        with self._lock:
            for (minute, llm_id), row in self._rows.items():
                if llm_id in wanted and minute >= first:
                    spent[llm_id] = spent.get(llm_id, 0.0) + row[8]
        return spent

    def parts(
        self, since: float | None, until: float | None, scope: str | None, llm_id: str | None
    ) -> list[UsagePart]:
        """Return one part per bucket within ``[since, until)`` (grouped by the report)."""
        with self._lock:
            items = list(self._rows.items())
        parts = []
        for (minute, row_id), row in items:
            start = minute * 60
            if (since is not None and start < since) or (until is not None and start >= until):
                continue
            if (scope is not None and row[0] != scope) or (llm_id is not None and row_id != llm_id):
                continue
            scope_, name, provider, model_name, calls, errors, tokens_in, tokens_out, cost = row
            parts.append(
                UsagePart(
                    llm_id=row_id,
                    scope=scope_,
                    name=name,
                    provider=provider,
                    model_name=model_name,
                    day=_day(minute),
                    last=float(start),
                    calls=calls,
                    errors=errors,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    cost=cost,
                )
            )
        return parts
