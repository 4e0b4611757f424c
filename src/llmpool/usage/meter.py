"""`UsageMeter`: every call's usage and cost, counted in memory and flushed in batches.

The call path only counts: `UsageMeter.record` adds one attempt to its row's minute bucket in
memory (a lock, a few dict operations; never a database write). A background thread
(`llmpool.usage.flusher`) adds the pending buckets to the table every ``flush_interval``
seconds, in one transaction; the pool's ``close`` flushes what is left, and so does the
interpreter's exit for a pool never closed. A crash loses at most what was counted since the
last flush.

Nothing is counted twice: a batch stays with the meter until its transaction commits; a flush
that fails puts its batch back (its transaction rolled back) and the next flush retries it,
merged with what came since. Nothing absurd is counted (a call's token counts and cost are
bounded: `llmpool.usage.counts`), and a bucket the database refuses while the others land is
dropped (logged), so one bad bucket never holds back the others.

Budgets read the spend of a row's current period from the table (every replica's flushed
calls) plus this process's calls not yet in that reading: the pending buckets, the batch being
flushed, and batches committed since the reading. The table is read once when a budgeted row
is first seen in a period, then every ``budget_refresh`` seconds by the same thread, never per
call.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from llmpool.errors import DatabaseUnavailableError, LLMPoolError, describe_row
from llmpool.observe.fields import log_fields
from llmpool.usage.counts import call_counts
from llmpool.usage.prices import UsageTerms, usage_terms
from llmpool.usage.report import BY, By, UsageRow, group, window
from llmpool.usage.table import UsageBucket, UsageTable

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.repository import LLMRepository
    from llmpool.usage.flusher import Flusher
    from llmpool.usage.prices import Budget

__all__ = ["UsageMeter", "table_for"]

logger = logging.getLogger(__name__)

# minute -> [calls, errors, input_tokens, output_tokens, cost]
_Minutes = dict[int, list[Any]]

_open_meters: weakref.WeakSet[UsageMeter] = weakref.WeakSet()
_atexit_registered = False
_atexit_lock = threading.Lock()


def _flush_open_meters() -> None:
    for meter in list(_open_meters):
        meter.close()


class UsageMeter:
    """Counts calls, errors, tokens and cost per row and minute; flushes them to a table.

    Args:
        table: Where batches go and spend is read (`SQLUsageTable`, `MemoryUsageTable`).
        flush_interval: Seconds between background flushes; ``0`` for none (only `flush`,
            `close` and the interpreter's exit flush).
        budget_refresh: Seconds between readings of the budgeted rows' spend from the table.
        clock: Wall-clock seconds since the epoch (minute buckets, budget periods).

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.usage.table import MemoryUsageTable
        >>> row = LLMConfig(id="1", name="GPT", provider="fake", model_name="m",
        ...                 config={"input_cost_per_million_tokens": 1.0})
        >>> meter = UsageMeter(MemoryUsageTable(), flush_interval=0)
        >>> meter.record(row, ok=True, usage={"input_tokens": 3, "output_tokens": 5})
        3e-06
        >>> meter.flush()
        True
        >>> meter.table.spend(0, ["1"])
        {'1': 3e-06}
        >>> meter.close()
        True
    """

    def __init__(
        self,
        table: UsageTable,
        *,
        flush_interval: float = 10.0,
        budget_refresh: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("flush_interval", flush_interval), ("budget_refresh", budget_refresh)):
            if not value >= 0:
                msg = f"{name} must be 0 or more seconds, not {value!r}"
                raise ValueError(msg)
        self.table = table
        self.flush_interval = flush_interval
        self.budget_refresh = budget_refresh
        self.clock = clock
        self._lock = threading.Lock()  # the counts
        self._flush_lock = threading.Lock()  # one flush or spend reading at a time
        self._pending: dict[str, _Minutes] = {}
        self._in_flight: dict[str, _Minutes] = {}  # the batch being written
        self._labels: dict[str, LLMConfig] = {}  # llm_id -> the row at its latest call
        self._terms: dict[str, UsageTerms] = {}
        # Budgets: llm_id -> (period start, spend read from the table), and the costs this
        # process committed since that reading (llm_id -> minute -> cost).
        self._budgets: dict[str, Budget] = {}
        self._base: dict[str, tuple[float, float]] = {}
        self._unread: dict[str, dict[int, float]] = {}
        self._flusher: Flusher | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"UsageMeter({self.table!r}, flush_interval={self.flush_interval})"

    # -- the call path ---------------------------------------------------------------------

    def terms(self, config: LLMConfig, key: str | None = None) -> UsageTerms:
        """Return a row's prices and budget, read once per row version.

        Args:
            config: The row.
            key: A string naming the row's version (e.g. its candidate's ``key``), when the
                caller has one: saves building one.
        """
        if key is None:
            key = f"{config.id}@{config.version}"
        terms = self._terms.get(key)
        if terms is None:
            try:
                terms = usage_terms(config)
            except LLMPoolError:  # written by raw SQL; its build refuses it anyway
                terms = UsageTerms()
            if len(self._terms) > 4096:
                self._terms.clear()
            self._terms[key] = terms
        return terms

    def record(
        self,
        config: LLMConfig,
        *,
        ok: bool,
        usage: Mapping[str, Any] | None,
        key: str | None = None,
    ) -> float:
        """Count one call to a row: answered (``ok``) or failed, with its answer's usage.

        Never writes to the database and never raises for a strange ``usage``: an absurd
        token count or cost counts as 0 and is logged (`llmpool.usage.counts`). ``key`` is as
        for `terms`.

        Returns:
            The call's cost as counted.
        """
        input_tokens = output_tokens = 0
        cost = 0.0
        if ok and usage:
            prices = self.terms(config, key).prices
            input_tokens, output_tokens, cost = call_counts(config, usage, prices)
        minute = int(self.clock() // 60)
        llm_id = config.id
        with self._lock:
            minutes = self._pending.get(llm_id)
            if minutes is None:
                minutes = self._pending[llm_id] = {}
            counts = minutes.get(minute)
            if counts is None:
                minutes[minute] = [1, 0 if ok else 1, input_tokens, output_tokens, cost]
            else:
                counts[0] += 1
                if not ok:
                    counts[1] += 1
                counts[2] += input_tokens
                counts[3] += output_tokens
                counts[4] += cost
            self._labels[llm_id] = config
        if self._flusher is None and not self._closed:
            self._start()
        return cost

    def spent(self, config: LLMConfig, budget: Budget) -> float:
        """Return what a row spent in its budget's current period: every replica's flushed
        calls (as last read) and this process's calls since that reading."""
        now = self.clock()
        start = budget.start(now)
        llm_id = config.id
        base = self._base.get(llm_id)
        if base is None or base[0] != start or self._budgets.get(llm_id) != budget:
            self._read_spend(llm_id, budget, start)
        first = start // 60
        with self._lock:  # the reading and what it does not hold, as one consistent view
            base = self._base.get(llm_id, (start, 0.0))
            if base[0] != start:  # a reading of another period: none of this one yet
                base = (start, 0.0)
            unread = self._unread.get(llm_id, {})
            local = sum(cost for minute, cost in unread.items() if minute >= first)
            for source in (self._pending, self._in_flight):
                for minute, counts in source.get(llm_id, {}).items():
                    if minute >= first:
                        local += counts[4]
        return base[1] + local

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> bool:
        """Add the pending counts to the table now.

        The batch goes in one transaction. When the database refuses it, each bucket (a row's
        minute) is tried alone: the ones that land stay, and a bucket refused while others
        landed is dropped and logged (a WARNING, ``event`` ``usage_dropped``, naming the row),
        so one bad bucket never holds the other rows' usage back. When none lands (the
        database is down, the table missing) the batch is kept for the next flush: nothing is
        counted twice.

        Returns:
            Whether everything counted so far is in the table (failures are logged).
        """
        with self._flush_lock:
            with self._lock:
                if not self._pending:
                    return True
                batch, self._pending = self._pending, {}
                self._in_flight = batch
                labels = dict(self._labels)
            buckets = [
                _bucket(minute, labels[llm_id], counts)
                for llm_id, minutes in batch.items()
                for minute, counts in minutes.items()
            ]
            landed, refused = self._write(buckets)
            with self._lock:
                self._in_flight = {}
                if not landed:  # keep the batch, never raise: a background step
                    _merge(self._pending, batch)
                for bucket in landed:
                    if bucket.llm_id in self._budgets:
                        unread = self._unread.setdefault(bucket.llm_id, {})
                        unread[bucket.minute] = unread.get(bucket.minute, 0.0) + bucket.cost
            if not landed:
                error = refused[0][1]
                logger.warning(
                    "LLM usage not flushed, kept for the next flush: %s",
                    _first_line(error),
                    extra=log_fields(
                        "usage_not_flushed", buckets=len(buckets), error_class=type(error).__name__
                    ),
                )
                return False
            for bucket, error in refused:
                logger.warning(
                    "LLM usage of %d calls to %s dropped: the database refused it: %s",
                    bucket.calls,
                    describe_row(bucket.name, bucket.llm_id),
                    _first_line(error),
                    extra=log_fields(
                        "usage_dropped",
                        llm_id=bucket.llm_id,
                        llm_name=bucket.name,
                        calls=bucket.calls,
                        error_class=type(error).__name__,
                    ),
                )
            return not refused

    def _write(
        self, buckets: list[UsageBucket]
    ) -> tuple[list[UsageBucket], list[tuple[UsageBucket, Exception]]]:
        # The buckets that landed, and those refused with their errors.
        try:
            self.table.add(buckets)
        except Exception as error:
            if len(buckets) == 1 or isinstance(error, DatabaseUnavailableError):
                return [], [(bucket, error) for bucket in buckets]
        else:
            return buckets, []
        landed: list[UsageBucket] = []
        refused: list[tuple[UsageBucket, Exception]] = []
        for bucket in buckets:
            try:
                self.table.add([bucket])
            except Exception as error:
                refused.append((bucket, error))
            else:
                landed.append(bucket)
        return landed, refused

    def refresh_budgets(self) -> None:
        """Read the spend of every budgeted row from the table (the flusher does this)."""
        with self._lock:
            budgets = dict(self._budgets)
        now = self.clock()
        for llm_id, budget in budgets.items():
            self._read_spend(llm_id, budget, budget.start(now))

    def _read_spend(self, llm_id: str, budget: Budget, start: float) -> None:
        with self._flush_lock:  # no commit of ours between the reading and its bookkeeping
            try:
                spent = self.table.spend(start, [llm_id]).get(llm_id, 0.0)
            except Exception as error:  # keep calling; the next refresh reads again
                logger.warning(
                    "LLM spend not read; its budget counts this process's calls only: %s",
                    _first_line(error),
                    extra=log_fields(
                        "spend_not_read", llm_id=llm_id, error_class=type(error).__name__
                    ),
                )
                spent = None
            with self._lock:
                self._budgets[llm_id] = budget
                if spent is not None:
                    self._base[llm_id] = (start, spent)
                    self._unread.pop(llm_id, None)
                elif self._base.get(llm_id, (None,))[0] != start:
                    self._base[llm_id] = (start, 0.0)
        if self._flusher is None and not self._closed:
            self._start()

    def report(
        self,
        *,
        since: datetime | timedelta | float | str | None = "1d",
        until: datetime | timedelta | float | str | None = None,
        by: By = "row",
        scope: str | None = None,
        llm_id: str | None = None,
    ) -> list[UsageRow]:
        """Flush, then return the table's usage within ``[since, until)`` grouped ``by``.

        Args:
            since: From when: a datetime (naive means UTC), a timedelta or duration text
                (``"1d"``, ``"12h"``) before now, an ISO text, epoch seconds, or ``None``
                (from the first call).
            until: Until when (excluded), in the same forms; ``None`` for now.
            by: ``"row"``, ``"scope"`` or ``"day"`` (UTC).
            scope: Only this scope.
            llm_id: Only this row.

        Raises:
            ValueError: ``by`` or a time is not understood, a time is before 1970 or after
                9999, or ``until`` is not after ``since``.
            DatabaseError: The table could not be read.
        """
        start, end = window(since, until, self.clock())
        if by not in BY:
            msg = f"by must be one of {', '.join(BY)}, not {by!r}"
            raise ValueError(msg)
        self.flush()
        return group(self.table.parts(start, end, scope, llm_id), by)

    @property
    def budgeted(self) -> bool:
        """Whether any row's budget is being followed (the flusher then refreshes spend)."""
        return bool(self._budgets)

    def _start(self) -> None:
        from llmpool.usage.flusher import Flusher

        global _atexit_registered
        with self._lock:
            if self._flusher is not None or self._closed:
                return
            self._flusher = Flusher(self)
        with _atexit_lock:
            _open_meters.add(self)
            if not _atexit_registered:
                atexit.register(_flush_open_meters)
                _atexit_registered = True
        self._flusher.start()

    def close(self) -> bool:
        """Stop the background thread and flush what is pending (one last try).

        Returns:
            Whether everything counted is in the table; when not, the lost counts are logged.
        """
        with self._lock:
            self._closed = True
            flusher = self._flusher
        if flusher is not None:
            flusher.stop()
        _open_meters.discard(self)
        done = self.flush()
        with self._lock:
            calls = sum(c[0] for minutes in self._pending.values() for c in minutes.values())
        if calls:
            logger.warning(
                "LLM usage of %d calls lost: the last flush failed",
                calls,
                extra=log_fields("usage_lost", calls=calls),
            )
        return done


def _first_line(error: Exception) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _bucket(minute: int, config: LLMConfig, counts: list[Any]) -> UsageBucket:
    return UsageBucket(
        minute,
        config.id,
        config.scope,
        config.name,
        config.provider,
        config.model_name,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
    )


def _merge(into: dict[str, _Minutes], batch: dict[str, _Minutes]) -> None:
    for llm_id, minutes in batch.items():
        target = into.setdefault(llm_id, {})
        for minute, counts in minutes.items():
            have = target.get(minute)
            if have is None:
                target[minute] = counts
            else:
                for i in range(5):
                    have[i] += counts[i]


def table_for(repository: LLMRepository) -> UsageTable:
    """Return where a pool over ``repository`` flushes its usage: the ``llm_usage`` table of a
    SQL store's database, else a table in memory."""
    engine = getattr(repository, "engine", None)
    if engine is not None:
        import sqlalchemy as sa

        if isinstance(engine, sa.Engine):
            from llmpool.usage.sql import SQLUsageTable

            return SQLUsageTable(engine, getattr(repository, "ensure_schema", None))
    from llmpool.usage.table import MemoryUsageTable

    return MemoryUsageTable()
