"""`UsageCheck`: the usage meter and the rows' budgets on the fallback walk's admission seam.

A row whose ``max_spend`` is reached this UTC day or month is skipped until it rolls over. A call
is admitted only while the row's spend, the expected cost of its calls in flight and its own
expected cost fit in the budget; its real cost replaces its reservation when it ends. A call's
expected cost is the row version's running mean cost per answer; before any answer,
``config.max_tokens`` output tokens at the row's output price; else unknown: one call at a time
until one has answered. With the meter's `RedisBudgets` the spend, the calls in flight and the
mean are every replica's, and deciding-and-reserving and settling are one script each; while
Redis cannot be reached (or before this process's first reading with it), the process decides
alone: the table's spend as last read, its own calls since, its own calls in flight.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.contracts import Candidate, CheckBase
from llmpool.usage.report import money
from llmpool.usage.shared import RESERVATION_TTL
from llmpool.usage.table import call_counts

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers.prices import Budget
    from llmpool.tags import Tags
    from llmpool.usage.meter import UsageMeter

__all__ = [
    "RECENT",
    "RESERVATION_TTL",
    "BudgetStatus",
    "UsageCheck",
    "admits",
    "budget_status",
    "duration_text",
    "expected_cost",
    "learn_cost",
    "refusal",
]

#: The weight of the latest answer in a row's running average cost.
RECENT = 0.2
#: What a failed call, or an answer without usage, counts: no tokens, no cost.
_NOTHING = (0, 0, 0.0)


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


def admits(
    amount: float, spent: float, reserved: float, calls: int, unknown: int, expected: float | None
) -> bool:
    """Whether a budget of ``amount`` admits a call expected to cost ``expected`` (``None``:
    unknown) after ``spent``, with ``calls`` in flight holding ``reserved`` (``unknown`` of them
    of a cost not known yet); `RedisBudgets`'s script decides the same way. The slack of one
    part in 10**9 lets calls that fill the budget exactly through despite float rounding.

    Example:
        >>> admits(3.0, 1.0, 1.0, 1, 0, 1.0), admits(3.0, 1.0, 1.5, 1, 0, 1.0)
        (True, False)
    """
    if expected is None:
        return calls == 0 and spent < amount
    return unknown == 0 and spent < amount and spent + reserved + expected <= amount * (1 + 1e-9)


def refusal(
    budget: Budget,
    now: float,
    spent: float,
    reserved: float,
    calls: int,
    unknown: int,
    expected: float | None,
) -> str:
    """Say why ``budget`` refuses a call (the arguments as for `admits`)."""
    head = f"over budget: spent {spent:.6g} of {budget.amount:g} this {budget.period} (UTC)"
    many = "s" if calls > 1 else ""
    if calls and (unknown or expected is None):
        return f"{head} and {calls} call{many} in flight of a cost not known yet"
    if calls:
        head += f", {reserved:.6g} reserved by {calls} call{many} in flight"
    if expected is not None and spent + reserved < budget.amount:
        head += f", the next call expected to cost {expected:.6g}"
    return f"{head}; resets in {duration_text(budget.end(now) - now)}"


def expected_cost(
    meter: UsageMeter, candidate: Candidate, average: Mapping[str, tuple[str, float]]
) -> float | None:
    """Return what a call of ``candidate`` is expected to cost, as this process knows (see the
    module's docstring): the row version's running mean cost per answer in ``average`` (row
    id -> (row version key, mean)); 0 without prices; ``config.max_tokens`` output tokens at
    its output price; else ``None``, unknown."""
    known = average.get(candidate.config.id)
    if known is not None and known[0] == candidate.key:
        return known[1]
    prices = meter.terms(candidate.config).prices
    if prices is None:
        return 0.0
    max_tokens = candidate.config.config.get("max_tokens")
    if type(max_tokens) is int and max_tokens > 0:
        return prices.cost(0, max_tokens)
    return None


def learn_cost(average: dict[str, tuple[str, float]], candidate: Candidate, cost: float) -> None:
    """Move the row version's running mean cost per answer in ``average`` towards ``cost``."""
    known = average.get(candidate.config.id)
    mean = cost
    if known is not None and known[0] == candidate.key:
        mean = known[1] + (cost - known[1]) * RECENT
    average[candidate.config.id] = (candidate.key, mean)


class UsageCheck(CheckBase):
    """Counts every call in a `UsageMeter`; skips rows whose budget is reached."""

    __slots__ = ("_average", "_flying", "_lock", "meter")

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._lock = threading.Lock()  # one local budget decision (reading and reserving) at a time
        # llm_id -> its budgeted calls in flight: when admitted (meter clock), Redis reservation
        self._flying: dict[str, deque[tuple[float, str]]] = {}
        # llm_id -> (row version key, running average cost of its answers)
        self._average: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"UsageCheck({self.meter!r})"

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        """Reserve the call's expected cost, or return why the row's budget refuses it."""
        return self._verdict(candidate, True)

    def peek(self, candidate: Candidate) -> str | None:
        """Say why the row's budget would refuse a call now, reserving nothing."""
        return self._verdict(candidate, False)

    def _verdict(self, candidate: Candidate, reserve: bool) -> str | None:
        config = candidate.config  # a model supplied in code has no terms: no budget
        budget = self.meter.terms(config).budget
        if budget is None:
            return None
        now = self.meter.clock()
        expected = expected_cost(self.meter, candidate, self._average)
        shared = self.meter.budgets
        if shared is not None:
            base = self.meter.spend(config, budget, now).base
            reservation = uuid.uuid4().hex if reserve else ""
            found = None
            if base is not None:
                found = shared.admit(
                    candidate.key,
                    config.id,
                    budget,
                    now,
                    base=base,
                    seed=expected,
                    reservation=reservation,
                )
            if found is not None:
                if not found[0]:
                    return refusal(budget, now, *found[1:])
                if reserve:
                    with self._lock:
                        self._flying.setdefault(config.id, deque()).append((now, reservation))
                return None
        with self._lock:
            spent = self.meter.spend(config, budget, now).local
            flying = self._flying.setdefault(config.id, deque())
            while flying and flying[0][0] < now - RESERVATION_TTL:
                flying.popleft()
            calls = len(flying)
            reserved = calls * expected if calls and expected is not None else 0.0
            if admits(budget.amount, spent, reserved, calls, 0, expected):
                if reserve:
                    flying.append((now, ""))
                return None
        return refusal(budget, now, spent, reserved, calls, 0, expected)

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        """Give the call's reservation back: it was not made."""
        with self._lock:
            reservation = self._settle(candidate.config.id)
        budget = self.meter.terms(candidate.config).budget
        if reservation and budget is not None and self.meter.budgets is not None:
            self.meter.budgets.settle(
                candidate.key,
                candidate.config.id,
                budget,
                self.meter.clock(),
                reservation=reservation,
                cost=0.0,
                answered=False,
                weight=RECENT,
            )

    def _settle(self, llm_id: str) -> str:
        # This process's oldest reservation of the row: its Redis id ("" when local).
        flying = self._flying.get(llm_id)
        return flying.popleft()[1] if flying else ""

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the call; its real cost replaces its reservation and feeds the row's average."""
        config = candidate.config
        if config.provider == "code":  # a model supplied in code: not a row
            return
        terms = self.meter.terms(config)
        counts = call_counts(config, usage, terms.prices) if ok and usage else _NOTHING
        budget = terms.budget
        if budget is None:
            self.meter.add(config, ok=ok, counts=counts, latency=latency, tags=tags)
            return
        cost, now = counts[2], self.meter.clock()
        with self._lock:  # counted here first: no local decision sees neither cost nor call
            reservation = self._settle(config.id)
            self.meter.add(config, ok=ok, counts=counts, now=now, latency=latency, tags=tags)
            if ok:
                learn_cost(self._average, candidate, cost)
        shared = self.meter.budgets
        if shared is None or not (reservation or cost or ok):
            return
        settled = shared.settle(
            candidate.key,
            config.id,
            budget,
            now,
            reservation=reservation,
            cost=cost,
            answered=ok,
            weight=RECENT,
        )
        if settled and cost:
            self.meter.share(config, budget, now, cost)
