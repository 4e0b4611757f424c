"""`UsageCheck`: the usage meter and the rows' budgets on the fallback walk's admission seam.

A row whose ``max_spend`` is reached this UTC day or month is skipped until it rolls over. Calls
in flight count at their expected cost (the row version's running average here; before any,
``config.max_tokens`` at its output price; else unknown: one call at a time), so concurrency
cannot multiply the overspend: about one call per process, plus other replicas' since a reading.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.contracts import Candidate, CheckBase
from llmpool.usage.report import money

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers.prices import Budget
    from llmpool.usage.meter import UsageMeter

__all__ = ["RESERVATION_TTL", "BudgetStatus", "UsageCheck", "budget_status", "duration_text"]

#: Seconds after which a call admitted, then neither recorded nor released, holds no budget.
RESERVATION_TTL = 600.0
#: The weight of the latest answer in a row's running average cost.
_RECENT = 0.2


class BudgetStatus(TypedDict):
    """A row's budget and its spend (every replica's) this UTC day or month, for ``status``."""

    amount: Decimal
    period: str
    spent: Decimal
    reached: bool
    resets_at: str
    resets_in: float


def budget_status(meter: UsageMeter, config: LLMConfig) -> BudgetStatus | None:
    """Return a row's budget and spend now, or ``None`` when it has no budget."""
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
        >>> duration_text(11520), duration_text(30), duration_text(200000), duration_text(86400)
        ('3 h 12 min', '30 s', '2 d 7 h', '1 d')
    """
    seconds = max(0, int(seconds))
    for unit, size, part, part_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60)):
        if seconds >= size:
            rest, text = seconds % size // part_size, f"{seconds // size} {unit}"
            return f"{text} {rest} {part}" if rest else text
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


class UsageCheck(CheckBase):
    """Counts every call in a `UsageMeter`; skips rows whose budget is reached."""

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

    def _budget(self, candidate: Candidate) -> Budget | None:
        if candidate.config.provider == "code":  # a model supplied in code: not a row
            return None
        return self.meter.terms(candidate.config).budget

    def _expected(self, candidate: Candidate) -> float:
        # What a call in flight is expected to cost (see the module's docstring).
        prices = self.meter.terms(candidate.config).prices
        if prices is None:
            return 0.0
        known = self._average.get(candidate.config.id)
        if known is not None and known[0] == candidate.key:
            return known[1]
        max_tokens = candidate.config.config.get("max_tokens")
        if type(max_tokens) is int and max_tokens > 0:
            return prices.cost(0, max_tokens)
        return math.inf

    def admit(self, candidate: Candidate) -> str | None:
        """Reserve the call's expected cost, or return why the row's budget refuses it."""
        return self._verdict(candidate, reserve=True)

    def peek(self, candidate: Candidate) -> str | None:
        """Say why the row's budget would refuse a call now, reserving nothing."""
        return self._verdict(candidate, reserve=False)

    def _verdict(self, candidate: Candidate, *, reserve: bool) -> str | None:
        budget = self._budget(candidate)
        if budget is None:
            return None
        with self._lock:
            spent = self.meter.spent(candidate.config, budget)
            now = self.meter.clock()
            flying = self._flying.setdefault(candidate.config.id, deque())
            while flying and flying[0] < now - RESERVATION_TTL:
                flying.popleft()
            calls = len(flying)
            reserved = calls * self._expected(candidate) if calls else 0.0
            if spent + reserved < budget.amount:
                if reserve:
                    flying.append(now)
                return None
        head = f"over budget: spent {spent:.6g} of {budget.amount:g} this {budget.period} (UTC)"
        many = "s" if calls > 1 else ""
        if math.isinf(reserved):
            return f"{head} and {calls} call{many} in flight of a cost not known yet"
        if calls:
            head += f", {reserved:.6g} reserved by {calls} call{many} in flight"
        return f"{head}; resets in {duration_text(budget.end(now) - now)}"

    def release(self, candidate: Candidate) -> None:
        """Give the call's reservation back: it was not made."""
        with self._lock:
            self._settle(candidate.config.id)

    def _settle(self, llm_id: str) -> None:
        flying = self._flying.get(llm_id)
        if flying:
            flying.popleft()

    def record(
        self, candidate: Candidate, *, ok: bool, latency: float, usage: Mapping[str, Any] | None
    ) -> None:
        """Count the call; its real cost replaces its reservation and feeds the row's average."""
        config = candidate.config
        if self._budget(candidate) is None:
            if config.provider != "code":
                self.meter.record(config, ok=ok, usage=usage)
            return
        with self._lock:
            cost = self.meter.record(config, ok=ok, usage=usage)
            self._settle(config.id)
            if ok:
                known = self._average.get(config.id)
                if known is not None and known[0] == candidate.key:
                    cost = known[1] + (cost - known[1]) * _RECENT
                self._average[config.id] = (candidate.key, cost)
