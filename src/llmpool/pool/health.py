"""`LLMPool.status` and `explain`: a scope's chain, row by row, as its calls will use it.

Both read the `ScopeChain` every call of the scope reads, and judge each candidate the way the
walk does, without taking anything: not buildable, breaker open (on the pool's board: the
fleet's view when it is shared), refused by an admission check (`AdmissionCheck.peek`). Health
is what calls will do, by construction. Recent latency, error rate and calls in flight are the
pool's `RowStats` over each row's last `WINDOW` attempts (``None`` in a process that made no
call), or with ``redis=`` the fleet's over the last minute (`llmpool.chain.fleet.FleetStats`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from llmpool.chain.builder import build_reason
from llmpool.chain.fleet import FleetStats
from llmpool.chain.stats import LastError, LatencyStatus, iso
from llmpool.contracts import Candidate
from llmpool.errors import InvalidConfigError, UnknownProviderError
from llmpool.fallback.breakers import state_name
from llmpool.providers.fit import Prompt, call_needs
from llmpool.repository import sort_key

#: A prompt as `LLMPool.explain` takes it: text, or messages in any form LangChain reads.
Messages = str | Sequence[Any]

if TYPE_CHECKING:
    from llmpool.chain.builder import ScopeChain
    from llmpool.fallback.breakers import BreakerBoard
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.pool.facade import LLMPool
    from llmpool.usage.check import BudgetStatus


COOLING = "cooling down after repeated failures"


class BreakerStatus(TypedDict):
    """A row's circuit breaker."""

    state: str
    """``"closed"``, ``"open"``, ``"half_open"`` (the next call probes), or ``"unknown"``: the
    shared store cannot be read (calls use this process's own state)."""
    failures: int | None
    trips: int | None
    reopens_at: str | None
    reopens_in: float | None
    policy: dict[str, Any] | None
    """What opens it (`llmpool.fallback.policy.BreakerRule.describe`: ``failure_threshold``,
    ``failure_rate``, ``min_calls``, ``window``, ``cooldown``, ``errors``, and the
    ``overrides`` the row's ``config["breaker"]`` sets); ``None`` when that object is invalid
    (the row cannot be built)."""


class LimitStatus(TypedDict):
    """A row's rate limits and its current window (the fleet's, when the limits are shared)."""

    rpm: int | None
    tpm: int | None
    requests: int
    tokens: int
    share: int
    """1; while the shared store is down, the replicas the limits are divided among (this
    process counts ``ceil(rpm / share)``)."""


class RowStatus(TypedDict):
    """One row of `ScopeStatus`: ``status`` is ``"would be tried"`` or ``"skipped"``."""

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
    in_flight: int
    status: str
    reason: str | None
    """Why it would be skipped (disabled, not buildable, cooling down, rate limited, over
    budget, in a chain no call can use); never a secret."""
    answers_now: bool
    weight: int
    limits: LimitStatus | None
    budget: BudgetStatus | None


class ScopeStatus(TypedDict):
    """`LLMPool.status`'s result: a plain, JSON-serializable dict; ``answering`` names the row
    a call would get its answer from now."""

    scope: str
    at: str
    routing: str
    breakers: str
    """``"shared"`` (the fleet's view), ``"shared, unreachable"`` (Redis down) or ``"local"``."""
    stats: str
    """Whose latency, errors and calls in flight: ``"fleet"``, ``"fleet, unreachable"`` (Redis
    down: this process's) or ``"local"``."""
    replicas: int | None
    """With ``redis=``: the live replicas last seen."""
    can_answer: bool
    answering: dict[str, str] | None
    note: str | None
    rows: list[RowStatus]


@dataclass(frozen=True)
class ChainStep:
    """One row of a chain, by priority, with `RowStatus`'s verdict (`LLMPool.explain`)."""

    position: int
    id: str
    name: str
    provider: str
    priority: int
    status: str
    reason: str | None


def _breaker(
    breakers: BreakerBoard, policy: FallbackPolicy, candidate: Candidate, now: float
) -> BreakerStatus:
    # A shared store tells "no state" from "could not read" (`RedisBreakerStore.read`).
    read = getattr(breakers.store, "read", None)
    known, state = (
        read(candidate.key) if read is not None else (True, breakers.store.get(candidate.key))
    )
    try:
        rule: dict[str, Any] | None = policy.breaker_rule(candidate).describe()
    except InvalidConfigError:  # said as the row's build error
        rule = None
    if not known:
        return {"state": "unknown", "failures": None, "trips": None, "reopens_at": None,
                "reopens_in": None, "policy": rule}  # fmt: skip
    name = state_name(state, now)
    cooling = name == "open" and state is not None
    return {
        "state": name,
        "failures": state.failures if state is not None else 0,
        "trips": state.trips if state is not None else 0,
        "reopens_at": iso(state.open_until) if cooling and state else None,
        "reopens_in": round(state.open_until - now, 3) if cooling and state else None,
        "policy": rule,
    }


def scope_status(pool: LLMPool, chain: ScopeChain, prompt: Messages | None = None) -> ScopeStatus:
    """Return the chain's rows by priority, each with the verdict a call would give it now (a
    call of ``prompt``, when given: a row it does not fit is skipped)."""
    from llmpool.usage.check import budget_status

    measured = None
    if prompt is not None:
        from langchain_core.messages import convert_to_messages

        measured = Prompt(convert_to_messages([prompt] if isinstance(prompt, str) else prompt), {})

    breakers, stats, limiter, usage = pool.breakers, pool.stats, pool.limiter, pool.usage_meter
    now = breakers.clock()
    entries = [*chain.candidates, *(Candidate(config) for config in chain.disabled)]
    entries.sort(key=lambda candidate: sort_key(candidate.config))
    rows: list[RowStatus] = []
    answering: dict[str, str] | None = None
    cooling: list[tuple[float, str]] = []
    for position, candidate in enumerate(entries, 1):
        config = candidate.config
        build_error = None
        if config.enabled and isinstance(candidate.error, UnknownProviderError):
            build_error = f"unknown provider {config.provider!r}"
        elif config.enabled and candidate.model is None:
            build_error = build_reason(candidate.error)
        breaker = _breaker(breakers, pool.policy, candidate, now)
        limits: LimitStatus | None = None
        if config.rpm is not None or config.tpm is not None:
            use = limiter.use(candidate)
            limits = {"rpm": config.rpm, "tpm": config.tpm, "requests": use.requests,
                      "tokens": use.tokens, "share": use.share}  # fmt: skip
        budget = None if usage is None else budget_status(usage, config)
        reason = _verdict(chain, candidate, build_error, breaker, measured)
        if reason == COOLING:
            cooling.append((breaker["reopens_in"] or 0.0, config.name))
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
                "latency": stats.latencies(candidate),
                "error_rate": stats.error_rate(candidate),
                "attempts": stats.attempts(candidate),
                "in_flight": stats.in_flight(candidate),  # after the reads above: fresh
                "status": "skipped" if reason is not None else "would be tried",
                "reason": reason,
                "answers_now": first,
                "weight": config.weight,
                "limits": limits,
                "budget": budget,
            }
        )
    note = None if chain.problem is None else str(chain.problem)
    if note is None and answering is None:
        note = "no enabled row of this scope can be built" if rows else "no rows"
        if cooling:
            reopens_in, name = min(cooling)
            note = f"every buildable row is cooling down; {name!r} reopens first, in "
            note += f"{reopens_in:.0f} s"
    shared = breakers.shared
    reachable = all(row["breaker"]["state"] != "unknown" for row in rows)
    fleet = stats if isinstance(stats, FleetStats) else None
    return {
        "scope": str(chain.scope),
        "at": iso(time.time()),
        "routing": chain.strategy,
        "breakers": _reach("shared", reachable) if shared else "local",
        "stats": "local" if fleet is None else _reach("fleet", fleet.shared.reachable),
        "replicas": None if fleet is None else fleet.replicas,
        "can_answer": answering is not None,
        "answering": answering,
        "note": note,
        "rows": rows,
    }


def _reach(shared: str, reachable: bool) -> str:
    return shared if reachable else f"{shared}, unreachable"


def _verdict(
    chain: ScopeChain,
    candidate: Candidate,
    build_error: str | None,
    breaker: BreakerStatus,
    prompt: Prompt | None,
) -> str | None:
    # Why a call starting now would skip the row, as the walk decides it; None: it is tried.
    if not candidate.config.enabled:
        return "disabled"
    if chain.problem is not None:
        return "in a chain no call can use (see the note)"
    if build_error is not None:
        return build_error
    if breaker["state"] == "open":
        return COOLING
    if prompt is not None and candidate.fit is not None:
        unfit = candidate.fit.refusal(call_needs(candidate.model, {}), prompt)
        if unfit is not None:
            return unfit
    for check in chain.checks:
        refusal = check.peek(candidate)
        if refusal is not None:
            return refusal
    return None


def explain(status: ScopeStatus) -> list[ChainStep]:
    """Return the rows of a status as `ChainStep` verdicts."""
    return [
        ChainStep(row["position"], row["id"], row["name"], row["provider"], row["priority"],
                  row["status"], row["reason"])
        for row in status["rows"]
    ]  # fmt: skip
