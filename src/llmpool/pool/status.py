"""`LLMPool.status`: what a scope's chain looks like now, row by row, from the pool's own view.

For each row of the scope, in the order a call tries them: enabled or not, buildable or why
not, its circuit breaker (read from the pool's board: the shared Redis board when the pool has
one, so every replica sees the fleet's view), the last error and when, its recent latency and
error rate, and whether it would be tried now; then which row would answer. The result is a
plain dict (`ScopeStatus`), ready for ``json.dumps`` and a ``/health`` route.

Recent latency and error rate come from `RowStats`, an observer every pool subscribes: a
bounded window of each row's last `WINDOW` attempts, updated in place (a couple of numbers per
call). A process that made no call (``llmpool chain`` in an admin shell) has none: they read
``None``.
"""

from __future__ import annotations

import datetime
import statistics
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.errors import (
    EnvNotAllowedError,
    LLMPoolError,
    MissingSecretError,
    ProviderNotInstalledError,
    UnknownProviderError,
)
from llmpool.fallback.breakers import breaker_key, state_name
from llmpool.fallback.routing import PriorityRouting
from llmpool.fallback.walk import Candidate
from llmpool.observe.hooks import Observer
from llmpool.usage.check import BudgetStatus, budget_status

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.observe.events import AttemptEvent
    from llmpool.pool.facade import LLMPool

__all__ = [
    "WINDOW",
    "BreakerStatus",
    "RowStats",
    "RowStatus",
    "ScopeStatus",
    "build_reason",
    "scope_status",
]

#: Attempts per row kept for the recent latency and error rate.
WINDOW = 100

COOLING = "cooling down after repeated failures"


class BreakerStatus(TypedDict):
    """A row's circuit breaker."""

    state: str
    """``"closed"``, ``"open"`` (cooling down), ``"half_open"`` (the next call probes), or
    ``"unknown"``: the shared store cannot be read (calls use this process's own state)."""
    failures: int | None
    trips: int | None
    reopens_at: str | None
    """When the cooldown ends (ISO 8601, UTC), while open."""
    reopens_in: float | None
    """Seconds until then."""


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


class RowStatus(TypedDict):
    """One row of `ScopeStatus`."""

    position: int
    id: str
    name: str
    provider: str
    model: str
    priority: int
    enabled: bool
    is_default: bool
    buildable: bool
    build_error: str | None
    breaker: BreakerStatus
    last_error: LastError | None
    latency: LatencyStatus | None
    error_rate: float | None
    attempts: int
    status: str
    """``"would be tried"`` or ``"skipped"``."""
    reason: str | None
    """Why it would be skipped: disabled, not buildable, cooling down; never a secret."""
    answers_now: bool
    weight: int
    """The row's share among equal priority when the scope routes ``weighted``."""
    limits: LimitStatus | None
    """The row's ``rpm`` / ``tpm`` and its current window, when it has a limit."""
    budget: BudgetStatus | None
    """The row's ``max_spend`` and its spend this period, when it has a budget."""


class LimitStatus(TypedDict):
    """A row's rate limits and how much of its current window is used."""

    rpm: int | None
    tpm: int | None
    requests: int
    """Requests in the current window (the fleet's, when the limits are shared)."""
    tokens: int
    """Tokens in the current window."""


def _limits(pool: LLMPool, candidate: Candidate) -> LimitStatus | None:
    config = candidate.config
    if config.rpm is None and config.tpm is None:
        return None
    use = pool.limiter.use(candidate)
    return {"rpm": config.rpm, "tpm": config.tpm, "requests": use.requests, "tokens": use.tokens}


def _limited(limits: LimitStatus | None) -> str | None:
    if limits is None:
        return None
    if limits["tpm"] is not None and limits["tokens"] >= limits["tpm"]:
        return f"rate limited: tpm {limits['tokens']}/{limits['tpm']}"
    if limits["rpm"] is not None and limits["requests"] >= limits["rpm"]:
        return f"rate limited: rpm {limits['requests']}/{limits['rpm']}"
    return None


class ScopeStatus(TypedDict):
    """`LLMPool.status`'s result: a plain, JSON-serializable dict."""

    scope: str
    at: str
    routing: str
    """How the scope routes its calls (``priority``, ...); rows are listed by priority."""
    breakers: str
    """``"shared"`` (the fleet's view), ``"shared, unreachable"`` (Redis down: this process's
    own until it answers) or ``"local"`` (this process's own)."""
    can_answer: bool
    answering: dict[str, str] | None
    """The row a call would get its answer from now (``id``, ``name``), if any."""
    note: str | None
    rows: list[RowStatus]


def _iso(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds")


class _Window:
    __slots__ = ("attempts", "failed", "last_at", "last_class", "latencies")

    def __init__(self) -> None:
        self.latencies: deque[float] = deque(maxlen=WINDOW)
        self.failed: deque[bool] = deque(maxlen=WINDOW)
        self.attempts = 0
        self.last_class: str | None = None
        self.last_at = 0.0


class RowStats(Observer):
    """Each row's last `WINDOW` attempts in this process: latency, errors, the last error.

    Example:
        >>> from llmpool.observe.events import AttemptEvent
        >>> stats = RowStats()
        >>> stats.on_attempt(AttemptEvent("global", "1", "A", "fake", "m", 1, "ok", latency=0.2))
        >>> stats.latency("1")["mean_ms"], stats.error_rate("1")
        (200.0, 0.0)
    """

    def __init__(self) -> None:
        self._rows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def _window(self, llm_id: str) -> _Window:
        window = self._rows.get(llm_id)
        if window is None:
            with self._lock:
                window = self._rows.setdefault(llm_id, _Window())
        return window

    def on_attempt(self, event: AttemptEvent) -> None:
        """Count an attempt that made a request (a skip made none)."""
        if event.outcome == "skipped":
            return
        window = self._window(event.llm_id)
        window.attempts += 1
        if event.outcome == "ok":
            window.failed.append(False)
            if event.latency is not None:
                window.latencies.append(event.latency)
        else:
            window.failed.append(True)
            window.last_class = event.error_class
            window.last_at = event.started + (event.latency or 0.0)

    def forget(self, keep: set[str]) -> None:
        """Drop the windows of rows not in ``keep`` (rows deleted from the table)."""
        with self._lock:
            for llm_id in [i for i in self._rows if i not in keep]:
                del self._rows[llm_id]

    def latency(self, llm_id: str) -> LatencyStatus | None:
        """The row's recent answer latencies, or ``None`` when it answered none here."""
        window = self._rows.get(llm_id)
        values = sorted(window.latencies) if window is not None else []
        if not values:
            return None
        p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        return {
            "samples": len(values),
            "mean_ms": round(statistics.fmean(values) * 1000.0, 3),
            "p50_ms": round(statistics.median(values) * 1000.0, 3),
            "p95_ms": round(p95 * 1000.0, 3),
        }

    def error_rate(self, llm_id: str) -> float | None:
        """Failed share of the row's recent attempts, or ``None`` when it made none here."""
        window = self._rows.get(llm_id)
        outcomes = list(window.failed) if window is not None else []
        return round(sum(outcomes) / len(outcomes), 4) if outcomes else None

    def attempts(self, llm_id: str) -> int:
        """Attempts the row made in this process."""
        window = self._rows.get(llm_id)
        return window.attempts if window is not None else 0

    def last_error(self, llm_id: str) -> LastError | None:
        """The row's last failed attempt in this process, if any."""
        window = self._rows.get(llm_id)
        if window is None or not window.last_at:
            return None
        return {"error_class": window.last_class, "at": _iso(window.last_at)}


def build_reason(error: BaseException | None) -> str:
    """Say why a row cannot be built, naming the variable or package, never a value."""
    if isinstance(error, MissingSecretError):
        return f"missing environment variable {error.variable}"
    if isinstance(error, ProviderNotInstalledError):
        return f"provider package not installed: {str(error).split('run: ')[-1]}"
    if isinstance(error, EnvNotAllowedError):
        return f"not on the allowlist: {error.field}"
    if error is None:
        return "could not be built"
    from llmpool.fallback.policy import describe_error

    return str(error) if isinstance(error, LLMPoolError) else describe_error(error)


def _buildable(pool: LLMPool, config: LLMConfig) -> str | None:
    # The pool's own cached candidate when it has one (what its calls use); else the row is
    # built outside the cache and forgotten: a status only looks, and logs nothing.
    cached = pool._cache.models.get((config.id, config.version))
    if cached is not None and cached.config == config:
        if cached.model is not None:
            return None
        error = cached.error
    else:
        registry = pool.registry
        build = registry.build_embeddings if config.kind == "embedding" else registry.build
        try:
            build(config, allowlist=pool.allowlist)
        except LLMPoolError as exc:
            error = exc
        except Exception as exc:  # a plugin's bug: the pool would skip the row
            return (
                f"provider {config.provider!r} failed to build the chat model: {type(exc).__name__}"
            )
        else:
            return None
    if isinstance(error, UnknownProviderError):
        return f"unknown provider {config.provider!r}"
    return build_reason(error)


def _breaker(pool: LLMPool, config: LLMConfig, now: float) -> BreakerStatus:
    key = breaker_key(config.id, config.version)
    # A shared store that can tell "no state" from "could not read" (`RedisBreakerStore.read`).
    read = getattr(pool.breakers.store, "read", None)
    known, state = read(key) if read is not None else (True, pool.breakers.store.get(key))
    if not known:
        return {"state": "unknown", "failures": None, "trips": None, "reopens_at": None,
                "reopens_in": None}  # fmt: skip
    name = state_name(state, now)
    cooling = name == "open" and state is not None
    return {
        "state": name,
        "failures": state.failures if state is not None else 0,
        "trips": state.trips if state is not None else 0,
        "reopens_at": _iso(state.open_until) if cooling and state else None,
        "reopens_in": round(state.open_until - now, 3) if cooling and state else None,
    }


def _shared(pool: LLMPool) -> str:
    if not pool.breakers.shared:
        return "local"
    reachable = getattr(pool.breakers.store, "reachable", True)
    return "shared" if reachable else "shared, unreachable"


def _routing(pool: LLMPool, scope: str) -> str:
    routing_of = getattr(pool, "routing_of", None)
    if routing_of is None:
        return "priority"
    try:
        return str(routing_of(scope))
    except LLMPoolError:
        return "priority"


def scope_status(pool: LLMPool, scope: str = "global", kind: str = "chat") -> ScopeStatus:
    """Return the scope's rows in call order, each with its state now (see the module).

    Args:
        pool: The pool whose snapshot, builds, breakers and recent calls are read.
        scope: The scope.
        kind: The chain's kind: ``"chat"``, or ``"embedding"`` for its embedding rows.

    Example:
        >>> from llmpool.pool.facade import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> pool = LLMPool(InMemoryStore([{"name": "On", "provider": "fake",
        ...     "model_name": "m"}]), poll_interval=0)
        >>> status = scope_status(pool)
        >>> status["answering"]["name"], status["rows"][0]["breaker"]["state"]
        ('On', 'closed')
        >>> pool.close()
    """
    snapshot = pool.snapshot()
    configs = [c for c in snapshot.configs if c.scope == scope and c.kind == kind]
    ordered = PriorityRouting().order([Candidate(config) for config in configs])
    stats = pool.stats
    now = pool.breakers.clock()
    rows: list[RowStatus] = []
    answering: dict[str, str] | None = None
    cooling: list[tuple[float, str]] = []
    for position, candidate in enumerate(ordered, 1):
        config = candidate.config
        build_error = _buildable(pool, config)
        breaker = _breaker(pool, config, now)
        limits = _limits(pool, candidate)
        budget = None if pool.usage_meter is None else budget_status(pool.usage_meter, config)
        reason: str | None = None
        if not config.enabled:
            reason = "disabled"
        elif build_error is not None:
            reason = build_error
        elif breaker["state"] == "open":
            reason = COOLING
            cooling.append((breaker["reopens_in"] or 0.0, config.name))
        elif _limited(limits) is not None:
            reason = _limited(limits)
        elif budget is not None and budget["reached"]:
            reason = f"over budget: spent {budget['spent']:.6g} of {budget['amount']:g}"
        first = reason is None and answering is None
        if first:
            answering = {"id": config.id, "name": config.name}
        rows.append(
            {
                "position": position,
                "id": config.id,
                "name": config.name,
                "provider": config.provider,
                "model": config.model_name,
                "priority": config.priority,
                "enabled": config.enabled,
                "is_default": config.is_default,
                "buildable": build_error is None,
                "build_error": build_error,
                "breaker": breaker,
                "last_error": stats.last_error(config.id),
                "latency": stats.latency(config.id),
                "error_rate": stats.error_rate(config.id),
                "attempts": stats.attempts(config.id),
                "status": "skipped" if reason is not None else "would be tried",
                "reason": reason,
                "answers_now": first,
                "weight": config.weight,
                "limits": limits,
                "budget": budget,
            }
        )
    note = None
    if answering is None:
        if cooling:
            note = (
                f"every buildable row is cooling down; a call would probe {min(cooling)[1]!r} first"
            )
        else:
            note = "no enabled row of this scope can be built" if rows else "no rows"
    return {
        "scope": scope,
        "at": _iso(time.time()),
        "routing": _routing(pool, scope),
        "breakers": _shared(pool),
        "can_answer": answering is not None,
        "answering": answering,
        "note": note,
        "rows": rows,
    }


def as_steps(status: ScopeStatus) -> list[dict[str, Any]]:
    """The rows' position, id, name, provider, priority, status and reason (`ChainStep`)."""
    keys = ("position", "id", "name", "provider", "priority", "status", "reason")
    return [{key: row[key] for key in keys} for row in status["rows"]]  # type: ignore[literal-required]
