"""`FeedbackLog`: metrics given for experiment calls after they answered (a thumbs-up, a
score), kept in memory and written in batches to ``llm_feedback`` (migration 0009).

A call of an experiment (`llmpool.chain.experiment`) is noted when it answers: its
``call_id`` -> (scope, arm, row), the last ``size`` calls in this process and, with ``shared``
(Redis), for every replica for ``ttl`` seconds (written in batches by the flush, never on the
call path). `FeedbackLog.add` only checks and queues; a background thread started at the first
feedback flushes every ``flush_interval`` seconds, and ``close`` (or the interpreter's exit)
flushes the rest. Feedback whose call is not known yet (noted by another replica, not flushed
to Redis yet) waits up to three flushes, then is dropped with a WARNING
(``feedback_dropped``). A metric given again for a call replaces its value.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.contracts import log_fields
from llmpool.errors import InvalidOptionError, shorten, visible
from llmpool.usage.flusher import Flusher

if TYPE_CHECKING:
    from llmpool.contracts import Shared
    from llmpool.repository import LLMRepository
    from llmpool.usage.sql import SQLFeedbackTable

__all__ = ["Feedback", "FeedbackLog", "MemoryFeedbackTable", "MetricSums", "check_feedback"]

logger = logging.getLogger(__name__)

#: A metric's name: lower case letters, digits, ``_``, ``.`` and ``-``, starting with a letter.
METRIC_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,63}\Z")
#: A value's largest magnitude.
MAX_VALUE = 1e12
#: How many flushes feedback waits for its call to be known before it is dropped.
_TRIES = 3


class Feedback(NamedTuple):
    """One metric of one call: the call's id, the metric's name, the call's scope, arm and row,
    the value, and when it was given (epoch seconds)."""

    call_id: str
    metric: str
    scope: str
    arm: str
    llm_id: str
    value: float
    at: float


class MetricSums(NamedTuple):
    """A metric's values for one arm, summed: how many, their sum and sum of squares, and
    whether every one is 0 or 1 (a rate: its interval is Wilson's)."""

    arm: str
    metric: str
    n: int
    total: float
    squares: float
    binary: bool


def check_feedback(call_id: Any, metric: Any, value: Any) -> tuple[str, str, float]:
    """Return ``(call_id, metric, value)`` checked (`InvalidOptionError` naming ``call_id``,
    ``metric`` or ``value``); a bool counts as 1 or 0.

    Example:
        >>> check_feedback("0f3c", "thumbs_up", True)
        ('0f3c', 'thumbs_up', 1.0)
    """
    if not isinstance(call_id, str) or not 0 < len(call_id) <= 64:
        msg = f"a call_id is the text an answer's metadata gives as call_id, not {call_id!r:.80}"
        raise InvalidOptionError(msg, option="call_id")
    if not isinstance(metric, str) or not METRIC_NAME.match(metric):
        shown = shorten(visible(metric)) if isinstance(metric, str) else type(metric).__name__
        msg = (
            f"metric {shown!r} is not lower case letters, digits, '_', '.' or '-' starting with "
            "a letter (at most 64 characters)"
        )
        raise InvalidOptionError(msg, option="metric")
    if isinstance(value, bool):
        value = 1.0 if value else 0.0
    if (
        not isinstance(value, int | float)
        or not math.isfinite(value)
        or not -MAX_VALUE <= value <= MAX_VALUE
    ):
        shown = repr(value)[:40] if isinstance(value, int | float) else type(value).__name__
        msg = f"the value of metric {metric!r} must be a finite number or a bool, not {shown}"
        raise InvalidOptionError(msg, option="value")
    return call_id, metric, float(value)


def sums_of(rows: Sequence[Feedback]) -> list[MetricSums]:
    """Return ``rows`` summed per arm and metric, in that order."""
    sums: dict[tuple[str, str], list[Any]] = {}
    for row in rows:
        entry = sums.setdefault((row.arm, row.metric), [0, 0.0, 0.0, True])
        entry[0] += 1
        entry[1] += row.value
        entry[2] += row.value * row.value
        entry[3] = entry[3] and row.value in (0.0, 1.0)
    return [MetricSums(arm, metric, *entry) for (arm, metric), entry in sorted(sums.items())]


class MemoryFeedbackTable:
    """Feedback kept in memory, for pools over a store that is not SQL."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], Feedback] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryFeedbackTable({len(self._rows)} values)"

    def add(self, rows: Sequence[Feedback]) -> None:
        """Store ``rows``, each replacing the value of its call and metric."""
        with self._lock:
            for row in rows:
                self._rows[(row.call_id, row.metric)] = row

    def sums(self, scope: str, since: float | None, until: float | None) -> list[MetricSums]:
        """Return the feedback of ``scope`` given within ``[since, until)``, summed per arm and
        metric."""
        with self._lock:
            rows = list(self._rows.values())
        return sums_of(
            [
                r
                for r in rows
                if r.scope == scope
                and (since is None or r.at >= since)
                and (until is None or r.at < until)
            ]
        )


class FeedbackLog:
    """Experiment calls noted, and the feedback given for them, flushed in batches (see the
    module)."""

    def __init__(
        self,
        table: MemoryFeedbackTable | SQLFeedbackTable,
        *,
        flush_interval: float = 10.0,
        size: int = 100_000,
        shared: Shared | None = None,
        prefix: str = "llmpool:call:",
        ttl: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.flush_interval = flush_interval
        self.size = size
        self.shared = shared
        self.prefix = prefix
        self.ttl = ttl
        self.clock = clock
        self._calls: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._unshared: list[tuple[str, str]] = []  # calls to write to Redis: (call_id, value)
        self._pending: list[tuple[str, str, float, float, int]] = []  # + given at, tries
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flusher = Flusher("llmpool-feedback", [(flush_interval, self.flush)], self.close)

    def __repr__(self) -> str:
        return f"FeedbackLog({self.table!r}, flush_interval={self.flush_interval})"

    def note(self, call_id: str, scope: str, arm: str, llm_id: str) -> None:
        """Note that ``llm_id`` answered the experiment call ``call_id`` in ``scope``'s ``arm``."""
        with self._lock:
            self._calls[call_id] = (scope, arm, llm_id)
            if len(self._calls) > self.size:
                self._calls.popitem(last=False)
            if self.shared is not None:
                self._unshared.append((call_id, f"{scope}\x00{arm}\x00{llm_id}"))
                if len(self._unshared) > self.size:
                    del self._unshared[0]
        if self.shared is not None and not self._flusher.started:
            self._flusher.start()

    def add(self, call_id: Any, metric: Any, value: Any) -> None:
        """Queue ``metric``'s ``value`` for the call ``call_id`` (checked: `check_feedback`);
        without Redis, a call this process did not note is refused (`InvalidOptionError`)."""
        call_id, metric, number = check_feedback(call_id, metric, value)
        if self.shared is None and call_id not in self._calls:
            msg = (
                f"no experiment call {shorten(visible(call_id))!r} answered in this process "
                f"(of its last {self.size}); give feedback where the call was made, or share "
                "calls through redis="
            )
            raise InvalidOptionError(msg, option="call_id")
        with self._lock:
            self._pending.append((call_id, metric, number, self.clock(), 0))
        if not self._flusher.started:
            self._flusher.start()

    def flush(self) -> bool:
        """Write the feedback queued (and, with Redis, the calls noted) now; whether all of
        the feedback whose call is known landed."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
                unshared, self._unshared = self._unshared, []
            if unshared:
                self._share(unshared)
            if not batch:
                return True
            found = self._found([call_id for call_id, *_ in batch])
            rows, waiting = [], []
            for call_id, metric, value, at, tries in batch:
                call = found.get(call_id)
                if call is not None:
                    rows.append(Feedback(call_id, metric, *call, value, at))
                elif tries + 1 < _TRIES:
                    waiting.append((call_id, metric, value, at, tries + 1))
                else:
                    logger.warning(
                        "feedback %r for call %r dropped: no replica noted the call",
                        metric,
                        shorten(visible(call_id)),
                        extra=log_fields("feedback_dropped", metric=metric, call_id=call_id),
                    )
            try:
                if rows:
                    self.table.add(rows)
            except Exception as error:  # kept for the next flush, never raised: a background step
                first = str(error).splitlines()[0] if str(error) else type(error).__name__
                logger.warning(
                    "LLM feedback not flushed, kept for the next flush: %s",
                    first,
                    extra=log_fields(
                        "feedback_not_flushed", error_class=type(error).__name__, values=len(rows)
                    ),
                )
                waiting += [(r.call_id, r.metric, r.value, r.at, 0) for r in rows]
                rows = []
            with self._lock:
                self._pending[:0] = waiting
            return len(waiting) == 0

    def _found(self, call_ids: list[str]) -> dict[str, tuple[str, str, str]]:
        # Each call's scope, arm and row: noted here, else in Redis (one MGET).
        found = {c: call for c in call_ids if (call := self._calls.get(c)) is not None}
        missing = sorted(set(call_ids) - found.keys())
        if missing and self.shared is not None:
            keys = [self.prefix + c for c in missing]
            values = self.shared.run(lambda client: client.mget(keys), lambda: [None] * len(keys))
            for call_id, value in zip(missing, values, strict=True):
                if value is not None:
                    text = value.decode() if isinstance(value, bytes) else str(value)
                    scope, arm, llm_id = text.split("\x00", 2)
                    found[call_id] = (scope, arm, llm_id)
        return found

    def _share(self, calls: list[tuple[str, str]]) -> None:
        # The calls noted since the last flush, for every replica's feedback: one pipeline.
        assert self.shared is not None
        ttl = max(1, round(self.ttl))

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for call_id, value in calls:
                pipe.set(self.prefix + call_id, value, ex=ttl)
            pipe.execute()

        self.shared.run(write, lambda: None)

    def close(self) -> bool:
        """Stop the background thread and flush what is queued; whether all of it landed."""
        self._flusher.stop()
        return self.flush()


def feedback_table_for(repository: LLMRepository) -> MemoryFeedbackTable | SQLFeedbackTable:
    """Return where a pool over ``repository`` writes feedback: its database's, or memory."""
    engine = getattr(repository, "engine", None)
    if engine is not None:
        import sqlalchemy as sa

        if isinstance(engine, sa.Engine):
            from llmpool.usage.sql import SQLFeedbackTable

            return SQLFeedbackTable(engine, getattr(repository, "ensure_schema", None))
    return MemoryFeedbackTable()
