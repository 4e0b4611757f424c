"""`UsageCheck`: the usage meter and the rows' budgets on the fallback walk's admission seam.

Before each attempt the walk asks `UsageCheck.admit`: a row whose ``max_spend`` is reached in
the current UTC day or month is skipped, with the reason ("over budget: spent 5.0021 of 5 this
day (UTC); resets in 3 h 12 min"), like a rate-limited row, and tried again once the period
rolls over. After each call the walk tells `UsageCheck.record`, which counts it in the meter
(`llmpool.usage.meter.UsageMeter`): one call, an error or its answer's tokens and cost.
Models supplied in code (no row) are neither counted nor budgeted.

Calls in flight count against the budget, so concurrency cannot multiply the overspend: a
budgeted row admits a call only while its spend plus the expected cost of its calls in flight
is under the budget, and each admitted call holds its reservation until it is recorded (its
real cost counted instead) or released. The expected cost of a call is, in this order:

- the running average cost of the row's recent answers in this process (the same row version);
- before any answer, ``config.max_tokens`` output tokens at the row's output price;
- else it is unknown: the row lets one call at a time through until one has answered.

So the worst overspend is about one call's cost per process beyond the budget (the last call
admitted under it, and how far calls stray from the average), plus what other replicas spend
between two readings of the table (``budget_refresh``). A reservation never settled (a call
abandoned without its outcome) lapses after `RESERVATION_TTL` seconds.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.fallback.admission import CheckBase
from llmpool.usage.report import money

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate
    from llmpool.models import LLMConfig
    from llmpool.usage.meter import UsageMeter
    from llmpool.usage.prices import Budget, UsageTerms

__all__ = ["RESERVATION_TTL", "BudgetStatus", "UsageCheck", "budget_status", "duration_text"]

#: Seconds after which a call admitted but never recorded or released stops holding budget.
RESERVATION_TTL = 600.0
#: The weight of the latest answer in a row's running average cost.
_RECENT = 0.2


class BudgetStatus(TypedDict):
    """A row's budget and its spend in the current period (``LLMPool.status``); money as
    `decimal.Decimal` (`llmpool.usage.report.money`)."""

    amount: Decimal
    period: str
    """``"day"`` or ``"month"`` (UTC)."""
    spent: Decimal
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
        (Decimal('0'), False, '1970-01-02T00:00:00Z', 86400.0)
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
        "amount": money(budget.amount),
        "period": budget.period,
        "spent": money(spent),
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
    """Counts every call in a `UsageMeter`; skips rows whose spend and calls in flight reach
    their budget.

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

    __slots__ = ("_average", "_flying", "_lock", "meter")

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._lock = threading.Lock()  # one budget decision (reading and reserving) at a time
        # llm_id -> when each of its budgeted calls in flight was admitted (meter clock)
        self._flying: dict[str, deque[float]] = {}
        # llm_id -> (row version key, running average cost of its answers)
        self._average: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"UsageCheck({self.meter!r})"

    def _budget(self, candidate: Candidate) -> tuple[Budget, UsageTerms] | None:
        config = candidate.config
        terms = self.meter.terms(config, candidate.key)
        if terms.budget is None or config.provider == "code":
            return None
        return terms.budget, terms

    def _expected(self, candidate: Candidate, terms: UsageTerms) -> float:
        # What a call in flight is expected to cost (see the module's docstring).
        if terms.prices is None:
            return 0.0
        known = self._average.get(candidate.config.id)
        if known is not None and known[0] == candidate.key:
            return known[1]
        max_tokens = candidate.config.config.get("max_tokens")
        if type(max_tokens) is int and max_tokens > 0:
            return terms.prices.cost(0, max_tokens)
        return math.inf

    def admit(self, candidate: Candidate) -> str | None:
        """Reserve the call's expected cost, or return why the row's budget refuses it."""
        found = self._budget(candidate)
        if found is None:
            return None
        budget, terms = found
        config = candidate.config
        with self._lock:
            spent = self.meter.spent(config, budget)
            now = self.meter.clock()
            flying = self._flying.get(config.id)
            while flying and flying[0] < now - RESERVATION_TTL:
                flying.popleft()
            reserved = len(flying) * self._expected(candidate, terms) if flying else 0.0
            if spent + reserved < budget.amount:
                self._flying.setdefault(config.id, deque()).append(now)
                return None
            calls = len(flying) if flying else 0
        head = f"over budget: spent {spent:.6g} of {budget.amount:g} this {budget.period} (UTC)"
        many = "s" if calls > 1 else ""
        if math.isinf(reserved):
            return f"{head} and {calls} call{many} in flight of a cost not known yet"
        if calls:
            head += f", {reserved:.6g} reserved by {calls} call{many} in flight"
        return f"{head}; resets in {duration_text(budget.end(now) - now)}"

    def _settle(self, llm_id: str) -> None:
        flying = self._flying.get(llm_id)
        if flying:
            flying.popleft()
        if not flying:
            self._flying.pop(llm_id, None)

    def release(self, candidate: Candidate) -> None:
        """Give the call's reservation back: it was not made."""
        if self._budget(candidate) is not None:
            with self._lock:
                self._settle(candidate.config.id)

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the call (models supplied in code are not rows: not counted); a budgeted row's
        reservation gives way to the call's real cost, which its running average learns."""
        config = candidate.config
        if config.provider == "code":
            return
        if self._budget(candidate) is None:
            self.meter.record(config, ok=ok, usage=usage, key=candidate.key)
            return
        with self._lock:
            cost = self.meter.record(config, ok=ok, usage=usage, key=candidate.key)
            self._settle(config.id)
            if ok:
                known = self._average.get(config.id)
                if known is not None and known[0] == candidate.key:
                    cost = known[1] + (cost - known[1]) * _RECENT
                self._average[config.id] = (candidate.key, cost)

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Every chain of rows is counted."""
        return True
