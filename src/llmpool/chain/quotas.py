"""`QuotaCheck`: the quotas of ``llm_quotas`` (`llmpool.repository.quotas`) on the admission seam.

Before each attempt, the quotas that apply to it are taken in turn: the row's, its provider's,
its scope's, and one per tag of the call (``llmpool_tags``) that has a quota. A budget reserves
the call's expected cost (as a row's ``max_spend`` does: `llmpool.usage.check`) and its real
cost replaces the reservation when the call ends; ``rpm`` and ``tpm`` take from the pool's
limit store under the key ``quota:<kind>:<target>``. When one refuses, those taken are given
back, and:

- a row's or provider's quota skips the row with its reason (the call falls back);
- a scope's or tag's quota refuses the call before any request: `QuotaExceededError` naming
  the quota, what is spent of what is allowed, and when it resets (logged ``quota_exceeded``,
  once a minute per quota).

A budget's spend this UTC day or month starts from ``llm_usage`` (read at the quota's first
call of the period in this process). With the pool's ``redis``, the first replica to use a
period writes that reading to Redis and every replica then reserves and settles there
(`llmpool.usage.shared.RedisBudgets`, under ``<redis_prefix>budget:quota:<kind>:<target>``),
one script per step: the fleet's spend is exact, whatever the number of replicas. Without
Redis, or while it cannot be reached, each process counts the table's spend as read and its
own calls since. A pool that does not track usage (``track_usage=False``) enforces no budget.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.contracts import Candidate, CheckBase, log_fields
from llmpool.errors import QuotaExceededError
from llmpool.providers.prices import Budget
from llmpool.usage.check import RECENT, admits, duration_text, expected_cost, learn_cost, refusal
from llmpool.usage.shared import RESERVATION_TTL

if TYPE_CHECKING:
    from llmpool.limits import LimitStore
    from llmpool.repository.quotas import Quota
    from llmpool.tags import Tags
    from llmpool.usage.meter import UsageMeter

__all__ = ["QuotaCheck"]

logger = logging.getLogger(__name__)

#: Quotas whose refusal refuses the call; the others skip the row.
REFUSING = frozenset({"scope", "tag"})
_APPLYING_SIZE = 4096
_FREES = re.compile(r"frees in (\d+) s")


@dataclass
class _Period:
    """One budget quota's current period, as this process counts it."""

    quota: Quota  # as the snapshot holds it: the same object while unchanged
    budget: Budget
    start: float
    end: float
    spent: float  # the table's spend as read, plus this process's calls since
    seeded: bool = False  # Redis holds the period's spend
    # This process's admitted calls: when (clock), Redis reservation id ("": local), expected;
    # with what they reserve, and how many of a cost not known yet.
    flying: deque[tuple[float, str, float | None]] = field(default_factory=deque)
    reserved: float = 0.0
    unknown: int = 0

    def fly(self, now: float, reservation: str, expected: float | None) -> None:
        """Count a call admitted at ``now``."""
        self.flying.append((now, reservation, expected))
        if expected is None:
            self.unknown += 1
        else:
            self.reserved += expected

    def land(self) -> str:
        """Forget the oldest call in flight; return its Redis reservation ("": none)."""
        _, reservation, expected = self.flying.popleft()
        if expected is None:
            self.unknown -= 1
        else:
            self.reserved = max(0.0, self.reserved - expected) if self.flying else 0.0
        return reservation


#: `_Index.applying`'s answer: the quotas, the meter deciding them here or ``None``, free.
_Applying = tuple[tuple["Quota", ...], "UsageMeter | None", bool]


class _Index:
    """The quotas of one snapshot, by what they apply to."""

    def __init__(self, quotas: Sequence[Quota], meter: UsageMeter | None) -> None:
        self.source = quotas
        self.meter = meter
        self.fixed: dict[tuple[str, str], Quota] = {
            (q.kind, q.target): q for q in quotas if q.kind != "tag"
        }
        self.tags = {tuple(q.target.split("=", 1)): q for q in quotas if q.kind == "tag"}
        self._of: dict[str, tuple[Quota, ...]] = {}
        # candidate -> tags' text -> `applying`'s answer
        self.found: dict[Candidate, dict[str, _Applying]] = {}

    def of(self, candidate: Candidate) -> tuple[Quota, ...]:
        """The scope's, provider's and row's quotas of ``candidate`` (in that order)."""
        found = self._of.get(candidate.key)
        if found is None:
            c = candidate.config
            keys: tuple[tuple[str, str], ...] = (
                ("scope", c.scope),
                ("provider", c.provider),
                ("row", c.id),
            )
            if c.provider == "code":  # a model supplied in code: no row, provider or scope
                keys = ()
            found = tuple(q for key in keys if (q := self.fixed.get(key)) is not None)
            self._of[candidate.key] = found
        return found

    def applying(self, candidate: Candidate, tags: Tags | None) -> _Applying:
        """Every quota a call of ``candidate`` with ``tags`` meets (its tags' first, then `of`);
        the meter when this process decides them all at once (some, each a budget alone: no
        rpm or tpm, and no Redis budgets), else ``None``; and whether its row is free (no
        prices: its calls cost 0). Kept in ``found`` per candidate and tag set."""
        if not self.tags:
            tags = None
        text = "" if tags is None else tags.text
        try:
            return self.found[candidate][text]
        except KeyError:
            sets = self.found.setdefault(candidate, {})
            quotas = self.of(candidate)
            for pair in () if tags is None else tags.pairs:
                quota = self.tags.get(pair)
                if quota is not None:
                    quotas = (quota, *quotas)
            if len(sets) >= _APPLYING_SIZE:  # tag sets beyond count: start over
                sets.clear()
            meter = self.meter
            local = (
                meter
                if meter is not None
                and meter.budgets is None
                and quotas
                and all(q.budget is not None and q.rpm is None and q.tpm is None for q in quotas)
                else None
            )
            free = meter is None or meter.terms(candidate.config).prices is None
            found = sets[text] = (quotas, local, free)
            return found


class QuotaCheck(CheckBase):
    """Enforces ``quotas()`` (the pool's snapshot's) with the pool's ``limits`` (rpm, tpm) and
    ``meter`` (prices, the table's spend, Redis budgets); ``clock``: wall-clock seconds."""

    def __init__(
        self,
        quotas: Callable[[], Sequence[Quota]],
        *,
        limits: LimitStore,
        meter: UsageMeter | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.quotas = quotas
        self.limits = limits
        self.meter = meter
        self.clock = clock
        self._index = _Index((), meter)
        self._lock = threading.Lock()
        self._periods: dict[str, _Period] = {}  # quota key -> its period
        self._average: dict[str, tuple[str, float]] = {}  # as `UsageCheck`'s
        self._logged: dict[str, float] = {}  # quota key -> when its refusal was last logged

    def __repr__(self) -> str:
        return f"QuotaCheck({len(self._current().source)} quotas)"

    def _current(self) -> _Index:
        quotas = self.quotas()
        index = self._index
        if index.source is not quotas:
            index = self._index = _Index(quotas, self.meter)
            budgets = [q.describe() for q in quotas if q.budget is not None]
            if budgets and self.meter is None:
                logger.warning(
                    "llmpool enforces no budget of %s: this pool does not track usage "
                    "(track_usage=False)",
                    ", ".join(budgets),
                    extra=log_fields("quota_budget_untracked"),
                )
        return index

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Whether any tag has a quota, or any row of the chain, its provider or its scope
        (read from ``quotas()`` now: the chain builder asks at every new snapshot)."""
        index = self._current()
        return bool(index.tags) or any(index.of(c) for c in candidates)

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        """Take every quota the call meets, or give back those taken and skip the row (its
        or its provider's quota) or raise `QuotaExceededError` (its scope's or a tag's)."""
        # The quotas `applies_to` read when this chain was built: every new snapshot builds
        # new chains before any call uses them, so they are the snapshot's in force.
        quotas, local, free = self._index.applying(candidate, tags)
        if local is not None:  # all in one hold of the lock
            expected = 0.0 if free else expected_cost(local, candidate, self._average)
            lock = self._lock
            lock.acquire()  # by hand: half the instructions of `with`, on every call
            try:
                refusing = self._decide(quotas, self.clock(), expected, reserve=True)
            finally:
                lock.release()
            if refusing is None:
                return None
            quota, reason = refusing
        else:
            for quota in quotas:
                refused = self._take(quota, candidate, reserve=True)
                if refused is not None:
                    reason = refused
                    break
            else:
                return None
        for earlier in reversed(quotas[: quotas.index(quota)]):
            self._give_back(earlier, candidate)
        if quota.kind in REFUSING:
            raise self._refused(quota, reason)
        return f"quota on {quota.describe()}: {reason}"

    def peek(self, candidate: Candidate) -> str | None:
        """Say why the row's, its provider's or its scope's quota would refuse a call now."""
        for quota in self._current().of(candidate):
            reason = self._take(quota, candidate, reserve=False)
            if reason is not None:
                return f"quota on {quota.describe()}: {reason}"
        return None

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        """Give back what `admit` took: the call was not made."""
        for quota in self._index.applying(candidate, tags)[0]:
            self._give_back(quota, candidate)

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Settle the call's real cost in its quotas' budgets, and its tokens in their tpm."""
        quotas, local, free = self._index.applying(candidate, tags)
        if local is None:  # quota by quota
            meter, cost, learn = self.meter, None, ok
            for quota in quotas:
                if quota.tpm is not None:
                    tokens = _tokens(usage)
                    if tokens > 0:
                        self.limits.add_tokens(_key(quota), tokens)
                if quota.budget is None or meter is None:
                    continue
                if cost is None:  # once per call; 0 for a free row, whatever its usage
                    cost = 0.0 if free else meter.counts(candidate.config, ok=ok, usage=usage)[2]
                    if ok and not free:
                        with self._lock:
                            learn_cost(self._average, candidate, cost)
                self._settle(quota, candidate, cost, learn=learn)
                learn = False  # the fleet's mean learns each answer once
            return
        # Budgets alone, in this process: as `admit`, one hold of the lock for them all.
        cost = 0.0 if free else local.counts(candidate.config, ok=ok, usage=usage)[2]
        lock = self._lock
        lock.acquire()
        try:
            if ok and not free:
                learn_cost(self._average, candidate, cost)
            for quota in quotas:  # `_settle`'s booking inline: a call each costs 1,000 instructions
                period = self._periods.get(quota.key)
                if period is None:  # never begun here (the quota is new): begin it
                    period = self._period(quota, self.clock())
                if period.flying:
                    period.land()
                if cost:
                    period.spent += cost
        finally:
            lock.release()

    # -- one quota --------------------------------------------------------------------------

    def _take(self, quota: Quota, candidate: Candidate, *, reserve: bool) -> str | None:
        if quota.budget is not None and self.meter is not None:
            reason = self._reserve(quota, candidate, reserve=reserve)
            if reason is not None:
                return reason
        if quota.rpm is None and quota.tpm is None:
            return None
        if not reserve:
            use = self.limits.use(_key(quota))
            if use.refusal is not None:
                return use.refusal
            if quota.tpm is not None and use.tokens >= quota.tpm:
                return f"rate limited: tpm {use.tokens}/{quota.tpm}"
            if quota.rpm is not None and use.requests >= quota.rpm:
                return f"rate limited: rpm {use.requests}/{quota.rpm}"
            return None
        reason = self.limits.take(_key(quota), quota.rpm, quota.tpm)
        if reason is not None and quota.budget is not None and self.meter is not None:
            self._unreserve(quota)
        return reason

    def _give_back(self, quota: Quota, candidate: Candidate) -> None:
        if quota.rpm is not None:
            self.limits.give_back(_key(quota))
        if quota.budget is not None and self.meter is not None:
            self._unreserve(quota)

    def _decide(
        self, quotas: Sequence[Quota], now: float, expected: float | None, *, reserve: bool
    ) -> tuple[Quota, str] | None:
        # This process's decision (no Redis, or Redis down), under the lock; the admitting ones
        # count the call when ``reserve``. The first refusal: its quota and why (those counted
        # before it stay counted: `_give_back` undoes them).
        for quota in quotas:
            period = self._periods.get(quota.key)
            if period is None or period.quota is not quota or now >= period.end:
                period = self._period(quota, now)
            flying = period.flying
            while flying and flying[0][0] < now - RESERVATION_TTL:
                period.land()
            spent, reserved, calls, unknown = (
                period.spent,
                period.reserved,
                len(flying),
                period.unknown,
            )
            if not admits(period.budget.amount, spent, reserved, calls, unknown, expected):
                return quota, refusal(period.budget, now, spent, reserved, calls, unknown, expected)
            if reserve:
                period.fly(now, "", expected)
        return None

    def _period(self, quota: Quota, now: float) -> _Period:
        # Under the lock. A new period (or budget) starts from the table's spend.
        period = self._periods.get(quota.key)
        assert quota.budget is not None and quota.period is not None
        budget = Budget(quota.budget, quota.period)
        start, end = budget.start(now), budget.end(now)
        if period is not None and period.start == start and period.budget.period == budget.period:
            period.quota, period.budget = quota, budget  # the amount changed, not the period
            return period
        spent = self._read(quota, start)
        period = self._periods[quota.key] = _Period(quota, budget, start, end, spent)
        return period

    def _read(self, quota: Quota, start: float) -> float:
        assert self.meter is not None
        try:
            return self.meter.table.spend_of(quota.kind, quota.target, start)
        except Exception as error:  # counted from 0 in this process; logged
            logger.warning(
                "llmpool could not read the spend of the quota on %s; it counts this "
                "process's calls only: %s",
                quota.describe(),
                type(error).__name__,
                extra=log_fields("spend_not_read", error_class=type(error).__name__),
            )
            return 0.0

    def _reserve(self, quota: Quota, candidate: Candidate, *, reserve: bool) -> str | None:
        meter = self.meter
        assert meter is not None
        now, shared = self.clock(), meter.budgets
        expected = expected_cost(meter, candidate, self._average)
        with self._lock:
            period = self._periods.get(quota.key)
            if period is None or period.quota is not quota or now >= period.end:
                period = self._period(quota, now)
            if shared is None:  # this process's decision
                refusing = self._decide((quota,), now, expected, reserve=reserve)
                return None if refusing is None else refusing[1]
        found = self._shared(quota, candidate, period, now, expected, reserve=reserve)
        if found is not None:
            return found or None
        with self._lock:  # Redis is down: this process's decision
            refusing = self._decide((quota,), now, expected, reserve=reserve)
            return None if refusing is None else refusing[1]

    def _shared(
        self,
        quota: Quota,
        candidate: Candidate,
        period: _Period,
        now: float,
        expected: float | None,
        *,
        reserve: bool,
    ) -> str | None:
        # The fleet's decision in Redis: "" admitted, a reason, or None while Redis is down.
        shared = self.meter.budgets if self.meter is not None else None
        assert shared is not None
        if not period.seeded:
            period.seeded = shared.seed(_key(quota), period.start, period.end, period.spent)
        if not period.seeded:
            return None
        reservation = uuid.uuid4().hex if reserve else ""
        found = shared.admit(
            f"quota:{candidate.key}",
            _key(quota),
            period.budget,
            now,
            base=0.0,
            seed=expected,
            reservation=reservation,
        )
        if found is None:
            return None
        if not found[0]:
            return refusal(period.budget, now, *found[1:])
        if reserve:
            with self._lock:
                period.fly(now, reservation, found[5])
        return ""

    def _unreserve(self, quota: Quota) -> None:
        # The oldest reservation of this process: given back whole.
        with self._lock:
            period = self._periods.get(quota.key)
            if period is None or not period.flying:
                return
            reservation = period.land()
        shared = self.meter.budgets if self.meter is not None else None
        if reservation and shared is not None:
            shared.settle(
                "quota:",
                _key(quota),
                period.budget,
                period.start,
                reservation=reservation,
                cost=0.0,
                answered=False,
                weight=RECENT,
            )

    def _settle(self, quota: Quota, candidate: Candidate, cost: float, *, learn: bool) -> None:
        with self._lock:
            period = self._periods.get(quota.key)
            if period is None:  # its period was never begun here (the quota is new): begin it
                period = self._period(quota, self.clock())
            reservation = period.land() if period.flying else ""
            period.spent += cost
        shared = self.meter.budgets if self.meter is not None else None
        if shared is not None and (reservation or cost or learn):
            shared.settle(
                f"quota:{candidate.key}",
                _key(quota),
                period.budget,
                period.start,
                reservation=reservation,
                cost=cost,
                answered=learn,
                weight=RECENT,
            )

    def _refused(self, quota: Quota, reason: str) -> QuotaExceededError:
        now = self.clock()
        limit, resets = "budget", None
        if reason.startswith("rate limited"):
            limit = "tpm" if "tpm" in reason.split(":", 2)[1] else "rpm"
            frees = _FREES.search(reason)
            resets = now + (int(frees.group(1)) if frees else 60)
        elif quota.key in self._periods and "in flight of a cost" not in reason:
            resets = self._periods[quota.key].end
        at = datetime.fromtimestamp(resets, timezone.utc) if resets is not None else None
        when = (
            f"; it resets at {at:%Y-%m-%d %H:%M:%S} UTC (in {duration_text(resets - now)})"
            if at is not None and resets is not None
            else "; it frees when a call in flight ends"
        )
        said = reason.split("; resets in ")[0]
        msg = f"Call refused by the quota on {quota.describe()} ({quota.limits()}): {said}{when}"
        if now - self._logged.get(quota.key, -1e9) >= 60:
            self._logged[quota.key] = now
            logger.warning(
                "%s",
                msg,
                extra=log_fields("quota_exceeded", quota=quota.key, limit=limit, reason=said),
            )
        return QuotaExceededError(
            msg, kind=quota.kind, target=quota.target, limit=limit, resets_at=at
        )


def _key(quota: Quota) -> str:
    return f"quota:{quota.key}"


def _tokens(usage: Mapping[str, Any] | None) -> int:
    # The answer's tokens, as `llmpool.limits.RateLimiter` counts them.
    if not usage:
        return 0
    tokens = usage.get("total_tokens")
    if not isinstance(tokens, int):
        tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
    return max(0, tokens)
