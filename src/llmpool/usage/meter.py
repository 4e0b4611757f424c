"""`UsageMeter`: every call's usage and cost, counted in memory and flushed in batches.

The call path only counts; a background thread started at the first call flushes, and
``close`` (or the interpreter's exit) flushes what is left: a crash loses at most one interval,
and a batch stays with the meter until its transaction commits, so nothing is counted twice. A
budget's spend is read from the table (every replica's calls) when first needed, then on that
thread, never per call, plus this process's calls since that reading; with `RedisBudgets`, plus
every replica's calls settled in Redis since that reading (`llmpool.usage.shared` defines the
handover: each reading carries the Redis flush mark read just before it).

Usage is counted per row and per tag set (`llmpool.tags.Tags`). A tag may take at most
``max_tag_values`` distinct values per UTC day in one process; calls with further values are
counted under the value ``other`` (logged once per tag and day: ``tag_values_folded``), so that a
user id given as a tag cannot grow the table without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.contracts import log_fields
from llmpool.errors import DatabaseUnavailableError, LLMPoolError, describe_row
from llmpool.providers.prices import UsageTerms, usage_terms
from llmpool.usage.flusher import Flusher
from llmpool.usage.report import By, UsageRow, as_epoch, check_by, group
from llmpool.usage.table import (
    COUNTS,
    MemoryUsageTable,
    UsageBucket,
    add_counts,
    call_counts,
    count_call,
)

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers.prices import Budget
    from llmpool.repository import LLMRepository
    from llmpool.tags import Tags
    from llmpool.usage.shared import RedisBudgets
    from llmpool.usage.sql import SQLUsageTable

__all__ = ["Spend", "UsageMeter", "table_for"]

logger = logging.getLogger(__name__)

#: The value a tag's calls are counted under beyond its ``max_tag_values`` of the day.
OTHER = "other"
_TAG_SETS = 10_000  # tag sets remembered per day (then forgotten and checked again)


class Spend(NamedTuple):
    """A budgeted row's spend this period (from ``start``), as this process knows it."""

    start: float
    #: The table's spend as last read, plus this process's calls since.
    local: float
    #: What this process adds to the fleet's spend settled in Redis: the table's as last read,
    #: plus this process's calls since that Redis does not hold, minus the reading's flush mark;
    #: ``None`` without a mark (no `RedisBudgets`, or Redis down at the reading).
    base: float | None


class UsageMeter:
    """Counts calls, errors, tokens, cost and answers' latency per row and minute; flushes them
    every ``flush_interval`` seconds, reads spend every ``budget_refresh`` (``0``: never); with
    ``budgets``, every replica's budgeted calls meet in Redis too; ``max_tag_values``: see the
    module."""

    def __init__(
        self,
        table: MemoryUsageTable | SQLUsageTable,
        *,
        flush_interval: float = 10.0,
        budget_refresh: float = 5.0,
        clock: Callable[[], float] = time.time,
        budgets: RedisBudgets | None = None,
        max_tag_values: int = 1000,
    ) -> None:
        for name, value in (("flush_interval", flush_interval), ("budget_refresh", budget_refresh)):
            if not value >= 0:
                msg = f"{name} must be 0 or more seconds, not {value!r}"
                raise ValueError(msg)
        self.table = table
        self.flush_interval = flush_interval
        self.budget_refresh = budget_refresh
        self.clock = clock
        self.budgets = budgets
        self.max_tag_values = max_tag_values
        self._tag_day = -1  # the UTC day (epoch days) whose tag values `_tag_values` holds
        self._tag_values: dict[str, set[str]] = {}
        self._tag_sets: dict[str, str] = {}  # today's tag sets' text -> the text counted
        self._lock = threading.Lock()  # the counts
        self._flush_lock = threading.Lock()  # one flush or spend reading at a time
        # (llm_id, minute, tags text) -> COUNTS
        self._pending: dict[tuple[str, int, str], list[Any]] = {}
        self._labels: dict[str, LLMConfig] = {}  # llm_id -> the row at its latest call
        self._terms: dict[int, tuple[LLMConfig, UsageTerms]] = {}
        # Budgeted rows: (budget, period start, spend read from the table, Redis flush mark read
        # before it), the cost of this process's calls since that reading (minute -> cost), and
        # how much of that its period's Redis hash holds.
        self._readings: dict[str, tuple[Budget, float, float, float | None]] = {}
        self._since_read: dict[str, dict[int, float]] = {}
        self._shared_since: dict[str, float] = {}
        # Cost settled in Redis per (row id, period start, end): not flushed yet; flushed but
        # its mark not added yet (Redis down).
        self._unmarked: dict[tuple[str, float, float], float] = {}
        self._owed: dict[tuple[str, float, float], float] = {}
        self._flusher = Flusher(
            "llmpool-usage",
            [(flush_interval, self.flush), (budget_refresh, self.refresh_budgets)],
            self.close,
        )

    def __repr__(self) -> str:
        return f"UsageMeter({self.table!r}, flush_interval={self.flush_interval})"

    def terms(self, config: LLMConfig) -> UsageTerms:
        """Return a row's prices and budget, read once per row object (a snapshot's rows are
        read at every call)."""
        held = self._terms.get(id(config))
        if held is not None and held[0] is config:
            return held[1]
        try:
            terms = usage_terms(config)
        except LLMPoolError:  # written by raw SQL; its build refuses it anyway
            terms = UsageTerms()
        if len(self._terms) > 4096:
            self._terms.clear()
        self._terms[id(config)] = (config, terms)  # the row kept: its id is not reused
        return terms

    def counts(
        self, config: LLMConfig, *, ok: bool, usage: Mapping[str, Any] | None
    ) -> tuple[int, int, float]:
        """Return one call's input tokens, output tokens and cost (`call_counts`)."""
        if ok and usage:
            return call_counts(config, usage, self.terms(config).prices)
        return (0, 0, 0.0)

    def record(
        self,
        config: LLMConfig,
        *,
        ok: bool,
        usage: Mapping[str, Any] | None,
        latency: float | None = None,
        tags: Tags | None = None,
    ) -> float:
        """Count one call to a row with ``tags``, answered (``ok``, in ``latency`` seconds) or
        failed, and return its cost."""
        counts = self.counts(config, ok=ok, usage=usage)
        self.add(config, ok=ok, counts=counts, latency=latency, tags=tags)
        return counts[2]

    def add(
        self,
        config: LLMConfig,
        *,
        ok: bool,
        counts: tuple[int, int, float],
        now: float | None = None,
        latency: float | None = None,
        tags: Tags | None = None,
    ) -> None:
        """Count one call with its `counts` (and an answer's ``latency``, seconds) and ``tags``,
        at ``now`` (the meter's clock by default)."""
        cost = counts[2]
        minute = int((self.clock() if now is None else now) // 60)
        with self._lock:
            text = "" if tags is None else self._bounded(tags, minute // 1440)
            key = (config.id, minute, text)
            sums = self._pending.get(key) or self._pending.setdefault(key, [0] * len(COUNTS))
            count_call(sums, ok, counts, latency)
            self._labels[config.id] = config
            local = self._since_read.get(config.id)
            if local is not None:
                local[minute] = local.get(minute, 0.0) + cost
        if not self._flusher.started:
            self._flusher.start()

    def _bounded(self, tags: Tags, day: int) -> str:
        # The tags' text, each value beyond its tag's max_tag_values of the day folded into
        # OTHER (under the lock).
        if day != self._tag_day:
            self._tag_day, self._tag_values, self._tag_sets = day, {}, {}
        known = self._tag_sets.get(tags.text)
        if known is not None:
            return known
        if len(self._tag_sets) >= _TAG_SETS:
            self._tag_sets.clear()
        self._tag_sets[tags.text] = text = self._fold(tags)
        return text

    def _fold(self, tags: Tags) -> str:
        # `_bounded` of a tag set not seen today.
        folded = None
        for name, value in tags.pairs:
            seen = self._tag_values.setdefault(name, set())
            if value in seen:
                continue
            if len(seen) < self.max_tag_values:
                seen.add(value)
                continue
            folded = {**(folded or tags.as_dict()), name: OTHER}
            if OTHER not in seen:  # the first fold of this tag today
                seen.add(OTHER)
                logger.warning(
                    "LLM usage tag %r has more than %d values today; the rest are counted as %r",
                    name,
                    self.max_tag_values,
                    OTHER,
                    extra=log_fields("tag_values_folded", tag=name, limit=self.max_tag_values),
                )
        if folded is None:
            return tags.text
        return ",".join(f"{k}={v}" for k, v in sorted(folded.items()))

    def share(self, config: LLMConfig, budget: Budget, now: float, cost: float) -> None:
        """Note that ``cost``, counted (`add`) at ``now``, was also settled in Redis in
        ``budget``'s period there: the next flush that commits it marks it flushed."""
        start = budget.start(now)
        key = (config.id, start, budget.end(now))
        with self._lock:
            self._unmarked[key] = self._unmarked.get(key, 0.0) + cost
            reading = self._readings.get(config.id)
            if reading is not None and reading[1] == start:
                self._shared_since[config.id] = self._shared_since.get(config.id, 0.0) + cost

    def spend(self, config: LLMConfig, budget: Budget, now: float | None = None) -> Spend:
        """Return a row's spend this period as this process knows it (`Spend`)."""
        start = budget.start(self.clock() if now is None else now)
        reading = self._readings.get(config.id)
        if reading is None or reading[:2] != (budget, start):
            self._read_spend(config.id, budget, start)
        first = start // 60
        with self._lock:  # the reading and what it does not hold, as one consistent view
            _, begun, spent, mark = self._readings[config.id]
            local = sum(c for minute, c in self._since_read[config.id].items() if minute >= first)
            shared = self._shared_since.get(config.id, 0.0)
        if begun != start:  # a reading of another period (a refresh racing its turn) holds none
            return Spend(start, local, None)
        base = None if mark is None else spent + local - shared - mark
        return Spend(start, spent + local, base)

    def spent(self, config: LLMConfig, budget: Budget) -> float:
        """Return a row's spend this period: every replica's through Redis when it answers,
        else the table's as last read and this process's calls since."""
        spend = self.spend(config, budget)
        if spend.base is not None and self.budgets is not None:
            settled = self.budgets.settled(config.id, spend.start)
            if settled is not None:
                return spend.base + settled
        return spend.local

    def flush(self) -> bool:
        """Add the pending counts to the table in one transaction; whether all landed. A bucket
        refused while others land is dropped (logged); when none lands, the batch is kept."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                unmarked, self._unmarked = self._unmarked, {}
                labels = dict(self._labels) if batch else {}
            if not batch:  # settled in Redis after their counts were flushed, and owed marks
                self._mark(unmarked)
                return True
            buckets = []
            for (llm_id, minute, tags), counts in batch.items():
                c = labels[llm_id]
                row = (c.id, c.scope, c.name, c.provider, c.model_name)
                buckets.append(UsageBucket._make([minute, *row, *counts, tags]))
            refused = self._write(buckets)
            landed = len(refused) < len(buckets)
            with self._lock:
                if not landed:  # keep the batch, never raise: a background step
                    for key, counts in batch.items():
                        add_counts(self._pending, key, counts)
                    for period, cost in unmarked.items():
                        self._unmarked[period] = self._unmarked.get(period, 0.0) + cost
                else:  # what was dropped is spent no more
                    for bucket, _ in refused:
                        local = self._since_read.get(bucket.llm_id, {})
                        local[bucket.minute] = local.get(bucket.minute, 0.0) - bucket.cost
            if landed:  # dropped costs are marked too: Redis then agrees with the table
                self._mark(unmarked)
        if not landed:
            error = refused[0][1]
            text = "LLM usage not flushed, kept for the next flush"
            _warn("usage_not_flushed", error, text, buckets=len(buckets))
            return False
        for bucket, error in refused:
            name = describe_row(bucket.name, bucket.llm_id)
            text = f"LLM usage of {bucket.calls} calls to {name} dropped: the database refused it"
            fields = {"llm_id": bucket.llm_id, "llm_name": bucket.name, "calls": bucket.calls}
            _warn("usage_dropped", error, text, **fields)
        return not refused

    def _write(self, buckets: list[UsageBucket]) -> list[tuple[UsageBucket, Exception]]:
        # The buckets refused, with their errors: all of them when the database is down.
        try:
            self.table.add(buckets)
            return []
        except Exception as error:
            if len(buckets) == 1 or isinstance(error, DatabaseUnavailableError):
                return [(bucket, error) for bucket in buckets]
        refused = []
        for bucket in buckets:
            try:
                self.table.add([bucket])
            except Exception as error:
                refused.append((bucket, error))
        return refused

    def _mark(self, flushed: dict[tuple[str, float, float], float]) -> None:
        # Under the flush lock, so that no reading of ours falls between a commit and its mark.
        if self.budgets is None:
            return
        for key, cost in self._owed.items():
            flushed[key] = flushed.get(key, 0.0) + cost
        self._owed = {} if self.budgets.mark_flushed(flushed) else flushed

    def refresh_budgets(self) -> None:
        """Read the spend of every budgeted row from the table (the background thread does)."""
        with self._lock:
            readings = list(self._readings.items())
        now = self.clock()
        for llm_id, (budget, *_) in readings:
            self._read_spend(llm_id, budget, budget.start(now))

    def _read_spend(self, llm_id: str, budget: Budget, start: float) -> None:
        with self._flush_lock:  # no commit of ours between the reading and its bookkeeping
            mark = None
            if self.budgets is not None:  # the mark first: see `llmpool.usage.shared`
                self._mark({})
                mark = self.budgets.mark(llm_id, start)
                if mark is not None:  # flushed here, not marked in Redis yet: in the table
                    mark += _of(self._owed, llm_id, start)
            try:
                spent: float | None = self.table.spend(start, [llm_id]).get(llm_id, 0.0)
            except Exception as error:  # keep calling; the next refresh reads again
                text = "LLM spend not read; its budget counts this process's calls only"
                _warn("spend_not_read", error, text, llm_id=llm_id)
                spent = None
            with self._lock:
                if spent is not None or llm_id not in self._since_read:
                    # The calls the table does not hold yet: the pending ones.
                    pending: dict[int, float] = {}
                    for (i, m, _), c in self._pending.items():
                        if i == llm_id:
                            pending[m] = pending.get(m, 0.0) + c[4]
                    self._since_read[llm_id] = pending
                    self._shared_since[llm_id] = _of(self._unmarked, llm_id, start)
                if spent is None:  # keep the last reading of this period, if any
                    last = self._readings.get(llm_id)
                    spent, mark = last[2:] if last is not None and last[1] == start else (0.0, None)
                self._readings[llm_id] = (budget, start, spent, mark)
        if not self._flusher.started:
            self._flusher.start()

    def report(
        self,
        *,
        since: datetime | timedelta | float | str | None = "1d",
        until: datetime | timedelta | float | str | None = None,
        by: By = "row",
        scope: str | None = None,
        llm_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[UsageRow]:
        """Flush, then return the usage within ``[since, until)`` (see `as_epoch`) of calls with
        ``tags`` (each of these names and values) grouped ``by`` row, scope, UTC day, hour or
        minute, or ``"tag:NAME"``; `ValueError` for a window empty or not understood."""
        now = self.clock()
        start, end = as_epoch(since, now), as_epoch(until, now)
        if start is not None and end is not None and end <= start:
            shown = [time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) for t in (end, start)]
            msg = f"until ({shown[0]}) is not after since ({shown[1]}): the window is empty"
            raise ValueError(msg)
        check_by(by)
        self.flush()
        per = by if by in ("day", "hour", "minute") else "day"
        return group(self.table.parts(start, end, scope, llm_id, per=per, tags=tags), by)

    def close(self) -> bool:
        """Stop the background thread and flush what is pending; whether all of it landed."""
        self._flusher.stop()
        done = self.flush()
        with self._lock:
            calls = sum(counts[0] for counts in self._pending.values())
        if calls:
            text = "LLM usage of %d calls lost: the last flush failed"
            logger.warning(text, calls, extra=log_fields("usage_lost", calls=calls))
        return done


def _of(costs: dict[tuple[str, float, float], float], llm_id: str, start: float) -> float:
    # The part of ``costs`` (keyed by row id, period start and end) of one row's period.
    return sum(cost for (i, s, _), cost in costs.items() if i == llm_id and s == start)


def _warn(event: str, error: Exception, text: str, **fields: Any) -> None:
    # The error's first line only: a driver's message may run to pages.
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    fields["error_class"] = type(error).__name__
    logger.warning("%s: %s", text, first, extra=log_fields(event, **fields))


def table_for(repository: LLMRepository) -> MemoryUsageTable | SQLUsageTable:
    """Return where a pool over ``repository`` flushes usage: its database's, or memory."""
    engine = getattr(repository, "engine", None)
    if engine is not None:
        import sqlalchemy as sa

        if isinstance(engine, sa.Engine):
            from llmpool.usage.sql import SQLUsageTable

            return SQLUsageTable(engine, getattr(repository, "ensure_schema", None))
    return MemoryUsageTable()
