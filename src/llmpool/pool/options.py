"""`PoolOptions`: how an `LLMPool` builds, watches and serves, in one frozen value; the pool's
keyword arguments of the same names (``LLMPool(url, poll_interval=0)``) are folded into it."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.chain.affinity import Affinity
    from llmpool.chain.stats import RowStats
    from llmpool.contracts import AdmissionCheck
    from llmpool.fallback.breakers import BreakerStore
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.limits import LimitStore
    from llmpool.observe.hooks import Observer
    from llmpool.providers import ProviderRegistry
    from llmpool.providers.allowlist import EnvAllowlist
    from llmpool.repository import LLMRepository
    from llmpool.repository.sql.store import SQLStore
    from llmpool.usage.feedback import FeedbackLog
    from llmpool.usage.meter import UsageMeter


@dataclass(frozen=True)
class PoolOptions:
    """How a pool builds models, watches the table and reads it.

    Attributes:
        registry: The provider registry; the process-wide one by default.
        allowlist: Environment variables rows may reference; from the environment by default.
        policy: Retry, deadline and circuit-breaker settings of the fallback chains.
        poll_interval: Seconds between change checks (under NOTIFY, or alone); ``0``: never.
        listen: Use PostgreSQL LISTEN/NOTIFY to see changes at once.
        listen_retry: Seconds before reopening a lost LISTEN connection; doubles up to 30 s.
        breaker_store: Where circuit breaker state lives (a `RedisBreakerStore` for a fleet).
        auto_migrate: Migrate the store the pool makes on first use; by default for SQLite.
        retry_failed_builds_after: Seconds a row that could not be built stays skipped.
        clock: Monotonic seconds, for that delay.
        async_database: The async engine (or URL) the store the pool makes reads ``aget_*``
            through; by default one on the same URL, or the sync engine in a worker thread.
        track_usage: Count every call's tokens and cost per row and minute (``llm_usage``),
            and skip a row whose ``max_spend`` is reached.
        usage_flush_interval: Seconds between flushes of the counted usage, and of the feedback
            given for experiment calls (`LLMPool.feedback`); ``0``: on close.
        max_tag_values: How many distinct values a call tag (``llmpool_tags``) may take per UTC
            day in the usage this pool counts; calls with more are counted as ``other``.
        budget_refresh: Seconds between readings of the budgeted rows' spend from the table.
        usage_clock: Wall-clock seconds, for usage minutes and budget periods.
        limits: Where the rows' ``rpm`` and ``tpm`` are counted: `LocalLimits` (the default)
            or `RedisLimits`, shared by every replica.
        admissions: Your `AdmissionCheck` objects, asked after the pool's own before every call.
        observers: Your `Observer` objects, told about everything after the built-in ones.
        routing_seed: Seeds the ``weighted`` and ``latency`` strategies' random choices.
        session_ttl: Seconds a call's ``session_key`` keeps the row that answered its session's
            last call first (`llmpool.chain.affinity`); in Redis with ``redis``.
        redis: A Redis URL shared by every replica of a fleet, through one client: circuit
            breakers (``<redis_prefix>breaker:``) and rate limits (``<redis_prefix>limits:``),
            unless ``breaker_store`` or ``limits`` is given; each row's runtime statistics
            (`llmpool.chain.fleet.FleetStats`: latency p50/p95 and error rate over the last
            minute, calls in flight, last error), which ``latency`` and ``least_busy`` routing
            and `LLMPool.status` read; and this replica's heartbeat, from when the pool first
            hands out a fallback model until `LLMPool.close`. Calls never wait on Redis: one
            daemon thread syncs every ``redis_sync_interval`` seconds in one round trip. Budget
            reservations and, with ``changes="redis"``, change fan-out live there too. While
            Redis is down: this process's own state, logged once (and once when it is back).
            ``None``: each process alone.
        redis_prefix: The prefix of every key ``redis`` writes.
        redis_sync_interval: Seconds between the statistics' syncs with ``redis``; a replica
            counts as live for three of them (plus half a second) after its last.
        changes: How changes to the table reach this process: ``"notify"`` (LISTEN on a direct
            PostgreSQL URL, with ``poll_interval`` as a safety net; `InvalidOptionError` on a
            database that cannot LISTEN), ``"poll"`` (the version stamp polled every
            ``poll_interval`` seconds, ±20 % jitter, one short transaction each; works through
            PgBouncer in transaction mode) or ``"redis"`` (the replica holding a lease in
            ``redis`` polls and publishes, every replica hears it through pub/sub and polls
            only every 10 intervals (30 s at least); all poll while Redis is down).
            ``None``: ``"notify"`` where LISTEN works and no pooler sits in between (told by
            the process id it reports), else ``"poll"``; ``listen=False`` means ``"poll"``.
        limits_when_redis_down: While ``redis`` cannot be reached, ``"share"`` counts each
            row's ``rpm``/``tpm`` in this process divided by the replicas last seen live
            (``ceil(rpm / replicas)``); ``"closed"`` refuses calls to rows that have limits,
            saying why. Applies to the limits ``redis`` makes (not to a ``limits`` passed).

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
    max_tag_values: int = 1000
    budget_refresh: float = 5.0
    usage_clock: Callable[[], float] = field(default=time.time)
    redis: str | None = None
    changes: Literal["notify", "poll", "redis"] | None = None
    limits_when_redis_down: Literal["share", "closed"] = "share"
    redis_prefix: str = "llmpool:"
    redis_sync_interval: float = 1.0
    session_ttl: float = 600.0

    def rows_allowlist(self) -> EnvAllowlist:
        """The allowlist rows are checked against, knowing the providers of ``registry``."""
        from llmpool.providers.allowlist import EnvAllowlist

        allow = self.allowlist if self.allowlist is not None else EnvAllowlist.from_env()
        if self.registry is not None and allow.registry is None:
            allow = dataclasses.replace(allow, registry=self.registry)
        return allow

    def sql_store(self, source: Any, allowlist: EnvAllowlist) -> SQLStore:
        """The store a pool makes on an engine or URL, checking every row it writes."""
        from llmpool.providers import ConfigKeysCheck, KnownProviderCheck
        from llmpool.repository.sql.store import SQLStore

        checks = (KnownProviderCheck(self.registry), ConfigKeysCheck(self.registry))
        return SQLStore(
            source,
            validators=[allowlist, *checks],
            async_engine=self.async_database,
            auto_migrate=self.auto_migrate,
        )

    def boards(self) -> tuple[RowStats, BreakerStore | None, LimitStore | None]:
        """The row statistics, breaker store and limit store of a pool: with ``redis``, the
        fleet's, on one client (but a ``breaker_store`` or ``limits`` given)."""
        from llmpool.chain.stats import RowStats

        if self.redis is None:
            return RowStats(), self.breaker_store, self.limits
        from llmpool.chain.fleet import FleetStats
        from llmpool.contracts import redis_client
        from llmpool.errors import InvalidOptionError
        from llmpool.fallback.breakers import RedisBreakerStore
        from llmpool.limits.redis import RedisLimits

        interval = self.redis_sync_interval
        if not (isinstance(interval, (int, float)) and 0 < interval < math.inf):
            msg = f"redis_sync_interval must be a positive number of seconds, not {interval!r}"
            raise InvalidOptionError(msg, option="redis_sync_interval")
        try:
            client, prefix = redis_client(self.redis, "The fleet (redis=)"), self.redis_prefix
        except ValueError as error:  # redis-py's message names the schemes, never the URL
            msg = f"redis= is not a Redis URL: {error}"
            raise InvalidOptionError(msg, option="redis") from error
        stats = FleetStats(client, prefix=prefix + "fleet:", interval=interval)
        breakers = self.breaker_store or RedisBreakerStore(
            prefix=prefix + "breaker:", client=client
        )
        limits = self.limits or RedisLimits(
            client=client,
            prefix=prefix + "limits:",
            when_down=self.limits_when_redis_down,
            replicas=lambda: stats.replicas,
        )
        return stats, breakers, limits

    def affinity(self, stats: RowStats) -> Affinity:
        """Where sessions find their row: with ``redis``, on the fleet statistics' client."""
        from llmpool.chain.affinity import Affinity
        from llmpool.chain.fleet import FleetStats
        from llmpool.contracts import Shared
        from llmpool.errors import InvalidOptionError

        ttl = self.session_ttl
        if not (isinstance(ttl, (int, float)) and 0 < ttl < math.inf):
            msg = f"session_ttl must be a positive number of seconds, not {ttl!r}"
            raise InvalidOptionError(msg, option="session_ttl")
        if not isinstance(stats, FleetStats):
            return Affinity(ttl)
        shared = Shared(stats.shared.client, what="session affinity")
        return Affinity(ttl, shared, prefix=self.redis_prefix + "session:")

    def feedback_log(self, repository: LLMRepository, stats: RowStats) -> FeedbackLog:
        """Where a pool on ``repository`` notes experiment calls and writes their feedback:
        its database's ``llm_feedback`` (or memory); with ``redis``, calls noted fleet-wide."""
        from llmpool.chain.fleet import FleetStats
        from llmpool.contracts import Shared
        from llmpool.usage.feedback import FeedbackLog, feedback_table_for

        table = feedback_table_for(repository)
        shared = None
        if isinstance(stats, FleetStats):
            shared = Shared(stats.shared.client, what="experiment calls")
        return FeedbackLog(
            table,
            flush_interval=self.usage_flush_interval,
            shared=shared,
            prefix=self.redis_prefix + "call:",
            clock=self.usage_clock,
        )

    def usage_meter(self, repository: LLMRepository) -> UsageMeter | None:
        """The meter of a pool on ``repository``, when it counts usage."""
        if not self.track_usage:
            return None
        from llmpool.usage.meter import UsageMeter, table_for

        budgets = None
        if self.redis is not None:  # every replica's budgeted calls meet there
            from llmpool.usage.shared import RedisBudgets

            budgets = RedisBudgets(self.redis, prefix=self.redis_prefix + "budget:")
        return UsageMeter(
            table_for(repository),
            flush_interval=self.usage_flush_interval,
            budget_refresh=self.budget_refresh,
            clock=self.usage_clock,
            budgets=budgets,
            max_tag_values=self.max_tag_values,
        )
