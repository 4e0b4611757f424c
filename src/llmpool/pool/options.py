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
    from llmpool.fallback.breakers import BreakerStore
    from llmpool.fallback.policy import FallbackPolicy
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
