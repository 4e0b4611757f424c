"""`UsageCheck`: the usage meter and the rows' budgets on the fallback walk's admission seam.

Before each attempt the walk asks `UsageCheck.admit`: a row whose ``max_spend`` is reached in
the current UTC day or month is skipped, with the reason ("over budget: spent 5.0021 of 5 this
day (UTC); resets in 3 h 12 min"), like a rate-limited row, and tried again once the period
rolls over. After each call the walk tells `UsageCheck.record`, which counts it in the meter
(`llmpool.usage.meter.UsageMeter`): one call, an error or its answer's tokens and cost.
Models supplied in code (no row) are neither counted nor budgeted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.fallback.admission import CheckBase

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate
    from llmpool.models import LLMConfig
    from llmpool.usage.meter import UsageMeter

__all__ = ["BudgetStatus", "UsageCheck", "budget_status", "duration_text"]


class BudgetStatus(TypedDict):
    """A row's budget and its spend in the current period (``LLMPool.status``)."""

    amount: float
    period: str
    """``"day"`` or ``"month"`` (UTC)."""
    spent: float
    """Spent so far this period: the table's (every replica's) plus this process's unflushed."""
    reached: bool
    resets_at: str
    """When the next period begins (ISO 8601, UTC)."""
    resets_in: float
    """Seconds until then."""


def budget_status(meter: UsageMeter, config: LLMConfig) -> BudgetStatus | None:
    """Return a row's budget and spend now, or ``None`` when it has no budget.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.usage.meter import UsageMeter
        >>> from llmpool.usage.table import MemoryUsageTable
        >>> meter = UsageMeter(MemoryUsageTable(), flush_interval=0, clock=lambda: 0.0)
        >>> row = LLMConfig(id="1", name="GPT", provider="fake", model_name="m",
        ...                 config={"max_spend": {"amount": 5, "period": "day"}})
        >>> status = budget_status(meter, row)
        >>> status["spent"], status["reached"], status["resets_at"], status["resets_in"]
        (0.0, False, '1970-01-02T00:00:00Z', 86400.0)
        >>> meter.close()
        True
    """
    budget = meter.terms(config).budget
    if budget is None:
        return None
    spent = meter.spent(config, budget)
    now = meter.clock()
    end = budget.end(now)
    return {
        "amount": budget.amount,
        "period": budget.period,
        "spent": spent,
        "reached": spent >= budget.amount,
        "resets_at": datetime.fromtimestamp(end, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resets_in": end - now,
    }


def duration_text(seconds: float) -> str:
    """Return a short human duration: ``45 s``, ``12 min``, ``3 h 12 min``, ``2 d 4 h``.

    Example:
        >>> duration_text(11520), duration_text(30), duration_text(200000)
        ('3 h 12 min', '30 s', '2 d 7 h')
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


class UsageCheck(CheckBase):
    """Counts every call in a `UsageMeter` and skips rows over their budget.

    Args:
        meter: Where calls are counted and spend is read.

    Example:
        >>> from llmpool.fallback.walk import Candidate
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.usage.meter import UsageMeter
        >>> from llmpool.usage.table import MemoryUsageTable
        >>> row = LLMConfig(id="1", name="GPT", provider="fake", model_name="m", config={
        ...     "output_cost_per_million_tokens": 1e6, "max_spend": {"amount": 5}})
        >>> check = UsageCheck(UsageMeter(MemoryUsageTable(), flush_interval=0))
        >>> check.admit(Candidate(row)) is None
        True
        >>> check.record(Candidate(row), ok=True, latency=0.1, usage={"output_tokens": 5})
        >>> check.admit(Candidate(row))[:30]
        'over budget: spent 5 of 5 this'
        >>> check.meter.close()
        True
    """

    __slots__ = ("meter",)

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter

    def __repr__(self) -> str:
        return f"UsageCheck({self.meter!r})"

    def admit(self, candidate: Candidate) -> str | None:
        """Return why the row is skipped when its budget is reached, else ``None``."""
        config = candidate.config
        budget = self.meter.terms(config, candidate.key).budget
        if budget is None or config.provider == "code":
            return None
        spent = self.meter.spent(config, budget)
        if spent < budget.amount:
            return None
        now = self.meter.clock()
        return (
            f"over budget: spent {spent:.6g} of {budget.amount:g} this {budget.period} (UTC); "
            f"resets in {duration_text(budget.end(now) - now)}"
        )

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the call (models supplied in code are not rows: not counted)."""
        config = candidate.config
        if config.provider != "code":
            self.meter.record(config, ok=ok, usage=usage, key=candidate.key)

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Every chain of rows is counted."""
        return True
