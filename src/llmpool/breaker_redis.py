"""Circuit breaker state in Redis, shared by every replica of a service (extra ``redis``).

When replica A finds a provider dead and opens its breaker, replica B skips that candidate with
no network call of its own. When Redis cannot be reached, each replica falls back to its own
in-process state, says so once in the log, and goes back to Redis when it answers again.

Example:
    >>> from llmpool import LLMPool
    >>> from llmpool.breaker_redis import RedisBreakerStore
    >>> store = RedisBreakerStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> pool = LLMPool(breaker_store=store)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from llmpool.breaker import BreakerState, LocalBreakerStore
from llmpool.errors import ProviderNotInstalledError

__all__ = ["RedisBreakerStore"]

logger = logging.getLogger(__name__)


class RedisBreakerStore:
    """A `BreakerStore` in Redis: one key per candidate, updated with optimistic transactions.

    Args:
        url: The Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: Key prefix, so several pools (or tests) can share one Redis.
        ttl: Seconds a breaker key lives after its last change (stale state expires).
        retry_after: Seconds to wait before trying Redis again after it failed.
        client: An existing ``redis.Redis`` client instead of ``url``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "llmpool:breaker:",
        ttl: float = 3600.0,
        retry_after: float = 5.0,
        client: Any = None,
    ) -> None:
        if client is None:
            try:
                import redis
            except ImportError as error:
                msg = 'Shared breakers need the redis package: pip install "llmpool[redis]"'
                raise ProviderNotInstalledError(msg) from error
            client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.retry_after = retry_after
        self.local = LocalBreakerStore()
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"RedisBreakerStore(prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _decode(raw: Any) -> BreakerState | None:
        if raw is None:
            return None
        return BreakerState(**json.loads(raw))

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if self._down_until == 0.0:
            logger.warning(
                "llmpool cannot reach Redis for shared circuit breakers; using local state: %s",
                type(error).__name__,
            )
        self._down_until = time.monotonic() + self.retry_after

    def _recovered(self) -> None:
        if self._down_until != 0.0:
            self._down_until = 0.0
            logger.warning("llmpool reaches Redis again for shared circuit breakers")

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key`` from Redis (or local state while Redis is down)."""
        if not self._available():
            return self.local.get(key)
        try:
            state = self._decode(self.client.get(self._key(key)))
        except Exception as error:  # any Redis failure: degrade to local state
            self._failed(error)
            return self.local.get(key)
        self._recovered()
        return state

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically change the state of ``key`` (WATCH/MULTI; retried on a race)."""
        if not self._available():
            return self.local.update(key, change)
        name = self._key(key)
        try:
            for _ in range(20):
                with self.client.pipeline() as pipe:
                    try:
                        pipe.watch(name)
                        current = self._decode(pipe.get(name)) or BreakerState()
                        new = change(current)
                        pipe.multi()
                        if new is None or new == BreakerState():
                            pipe.delete(name)
                        else:
                            pipe.set(name, json.dumps(asdict(new)), ex=int(self.ttl))
                        pipe.execute()
                        self._recovered()
                        return new
                    except Exception as error:
                        if type(error).__name__ != "WatchError":
                            raise
            return self.local.update(key, change)
        except Exception as error:
            self._failed(error)
            return self.local.update(key, change)
