"""`PoolOptions`: how an `LLMPool` builds, watches and serves, in one frozen value.

`LLMPool(source, options=PoolOptions(...))` is the way to configure a pool; the pool's keyword
arguments of the same names (``LLMPool(url, poll_interval=0)``) are folded into it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.credentials.allowlist import EnvAllowlist
    from llmpool.fallback.admission import AdmissionCheck
    from llmpool.fallback.breakers import BreakerStore
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.limits import LimitStore
    from llmpool.observe.hooks import Observer
    from llmpool.providers import ProviderRegistry

__all__ = ["PoolOptions"]


@dataclass(frozen=True)
class PoolOptions:
    """How a pool builds models, watches the table and reads it.

    Attributes:
        registry: The provider registry; the process-wide one by default.
        allowlist: Environment variables rows may reference; from the environment by default.
        policy: Retry, deadline and circuit-breaker settings of the fallback chains.
        poll_interval: Seconds between change checks (the safety net under NOTIFY, and all
            there is without it); ``0`` to never look for changes.
        listen: Use PostgreSQL LISTEN/NOTIFY to see changes at once.
        listen_retry: Seconds before reopening a lost LISTEN connection; doubles on each
            failure, up to 30 s.
        breaker_store: Where circuit breaker state lives (e.g. a `RedisBreakerStore` shared by
            replicas); in-process by default.
        auto_migrate: Apply llmpool's migrations on first use; by default only for SQLite,
            where the database is embedded. For the store the pool makes from a URL or engine.
        retry_failed_builds_after: Seconds a row that could not be built (a missing variable,
            a plugin that raised) stays skipped before it is built again; a refresh retries it
            at once.
        clock: Monotonic seconds, for that delay; injectable for tests.
        async_database: The async engine (or its URL) the ``aget_*`` methods read through, for
            the store the pool makes. By default: an async engine on the same URL when the
            pool was given a URL; when given an `Engine` (whose ``creator`` or
            ``connect_args`` an async engine could not copy), the sync engine in a worker
            thread.
        track_usage: Count every call's tokens and cost per row and minute, flushed to the
            ``llm_usage`` table (`llmpool.usage`; in memory for a repository that is not SQL),
            and skip a row whose ``max_spend`` is reached. On by default.
        usage_flush_interval: Seconds between flushes of the counted usage (a crash loses at
            most this much); ``0`` flushes only on ``close``, ``usage()`` and exit.
        budget_refresh: Seconds between readings of the budgeted rows' spend from the table
            (what other replicas spent); never read per call.
        usage_clock: Wall-clock seconds since the epoch, for usage minutes and budget periods;
            injectable for tests.
        limits: Where the rows' ``rpm`` and ``tpm`` windows are counted: in this process by
            default (`llmpool.limits.LocalLimits`), or shared by every replica
            (`llmpool.limits.redis.RedisLimits`).
        admissions: Checks of yours asked before every call whether a row may be called now,
            and told how each call went (`llmpool.fallback.admission.AdmissionCheck`); asked
            after the pool's own.
        observers: `llmpool.observe.Observer` objects told about every attempt, failover,
            breaker change, call, reload and row that cannot be built, besides the built-in
            logging and OpenTelemetry ones; added to the pool's policy and to any policy
            passed to `LLMPool.get_llm_with_fallback`.
        routing_seed: Seeds the random choices of the ``weighted`` and ``latency`` strategies
            (repeatable orders, for tests); random by default.

    Example:
        >>> PoolOptions(poll_interval=0).listen
        True
    """

    registry: ProviderRegistry | None = None
    allowlist: EnvAllowlist | None = None
    policy: FallbackPolicy | None = None
    poll_interval: float = 1.0
    listen: bool = True
    listen_retry: float = 1.0
    breaker_store: BreakerStore | None = None
    auto_migrate: bool | None = None
    retry_failed_builds_after: float = 5.0
    clock: Callable[[], float] = field(default=time.monotonic)
    async_database: AsyncEngine | str | URL | None = None
    observers: tuple[Observer, ...] = ()
    limits: LimitStore | None = None
    admissions: tuple[AdmissionCheck, ...] = ()
    routing_seed: int | None = None
    track_usage: bool = True
    usage_flush_interval: float = 10.0
    budget_refresh: float = 5.0
    usage_clock: Callable[[], float] = field(default=time.time)
