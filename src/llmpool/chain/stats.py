"""`RowStats`: each row's calls in flight, recent latency and errors, in this process.

An admission check told about every attempt (calls in flight for ``least_busy`` routing, each
answer's latency in a weighted mean for ``latency`` routing, the last `WINDOW` attempts for
`LLMPool.status`), and an observer of failed attempts' errors. Keyed by row id and version.
"""

from __future__ import annotations

import datetime
import statistics
import threading
from collections import defaultdict, deque
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.contracts import Candidate, CheckBase, Observer

if TYPE_CHECKING:
    from llmpool.observe.events import AttemptEvent
    from llmpool.tags import Tags


#: Attempts per row kept for the recent percentiles and error rate.
WINDOW = 100


class LatencyStatus(TypedDict):
    """A row's recent answers: their latency in milliseconds."""

    samples: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class LastError(TypedDict):
    """A row's last failed attempt in this process."""

    error_class: str | None
    at: str


def iso(seconds: float) -> str:
    """Return epoch ``seconds`` as ISO 8601 in UTC, to the millisecond, as status shows times."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


class _Row:
    __slots__ = ("failed", "in_flight", "latencies", "mean")

    def __init__(self) -> None:
        self.in_flight = 0
        self.mean: float | None = None
        self.latencies: deque[float] = deque(maxlen=WINDOW)
        self.failed: deque[bool] = deque(maxlen=WINDOW)


class RowStats(CheckBase, Observer):
    """Each row's calls in flight, recent latency and errors, in this process (see the module);
    ``alpha`` is the weight of the newest latency in the mean."""

    every_call = False  # answers are heard through `record`; events only for failures

    def __init__(self, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._lock = threading.Lock()
        self._rows: defaultdict[str, _Row] = defaultdict(_Row)  # made at a row's first call
        self._errors: dict[str, tuple[str | None, float]] = {}  # by row id: class, when

    def __repr__(self) -> str:
        flying = sum(row.in_flight for row in self._rows.values())
        return f"RowStats(rows={len(self._rows)}, in_flight={flying})"

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        """Count the call in flight; never refuses."""
        with self._lock:
            self._rows[candidate.key].in_flight += 1
        return None

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        """The admitted call was not made: it is no longer in flight."""
        with self._lock:
            row = self._rows[candidate.key]
            if row.in_flight:
                row.in_flight -= 1

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """The call ended: count it out, and keep its outcome (and an answer's latency)."""
        with self._lock:
            row = self._rows[candidate.key]
            if row.in_flight:
                row.in_flight -= 1
            row.failed.append(not ok)
            if ok:
                row.latencies.append(latency)
                mean = row.mean
                row.mean = latency if mean is None else mean + self._alpha * (latency - mean)

    def on_attempt(self, event: AttemptEvent) -> None:
        """Note the error class of a failed attempt, and when."""
        if event.outcome == "error":
            self._errors[event.llm_id] = (event.error_class, event.started + (event.latency or 0))

    def serve(self) -> None:
        """Start sharing this process's counts, where they are shared (`FleetStats`); these
        stay in the process: nothing to start."""

    def close(self) -> None:
        """Stop sharing (`FleetStats`); nothing to stop here."""

    def forget(self, keys: Collection[str], llm_ids: Collection[str]) -> None:
        """Drop what is known of rows no longer in the table."""
        with self._lock:
            for key in [k for k in self._rows if k not in keys]:
                del self._rows[key]
            for llm_id in [i for i in self._errors if i not in llm_ids]:
                del self._errors[llm_id]

    # -- what routing reads ------------------------------------------------------------------

    def in_flight(self, candidate: Candidate) -> int:
        """Calls to ``candidate`` in flight now, in this process."""
        row = self._rows.get(candidate.key)
        return 0 if row is None else row.in_flight

    def latency(self, candidate: Candidate) -> float | None:
        """The weighted mean latency of ``candidate``'s recent answers (seconds), if any."""
        row = self._rows.get(candidate.key)
        return None if row is None else row.mean

    # -- what status reads -------------------------------------------------------------------

    def latencies(self, candidate: Candidate) -> LatencyStatus | None:
        """The row's recent answer latencies, or ``None`` when it answered none here."""
        row = self._rows.get(candidate.key)
        values = sorted(row.latencies) if row is not None else []
        if not values:
            return None
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        return {
            "samples": len(values),
            "mean_ms": round(statistics.fmean(values) * 1000.0, 3),
            "p50_ms": round(statistics.median(values) * 1000.0, 3),
            "p95_ms": round(p95 * 1000.0, 3),
        }

    def error_rate(self, candidate: Candidate) -> float | None:
        """The failed share of the row's recent attempts, or ``None`` when it made none here."""
        row = self._rows.get(candidate.key)
        outcomes = list(row.failed) if row is not None else []
        return round(sum(outcomes) / len(outcomes), 4) if outcomes else None

    def attempts(self, candidate: Candidate) -> int:
        """Attempts of the row's recent window in this process."""
        row = self._rows.get(candidate.key)
        return 0 if row is None else len(row.failed)

    def last_error(self, llm_id: str) -> LastError | None:
        """The row's last failed attempt in this process, if any."""
        error = self._errors.get(llm_id)
        return None if error is None else {"error_class": error[0], "at": iso(error[1])}
