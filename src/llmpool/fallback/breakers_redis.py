"""Circuit breaker state in Redis, shared by every replica of a service (extra ``redis``).

When replica A finds a provider dead and opens its breaker, replica B skips that candidate with
no network call of its own. When Redis cannot be reached, each replica falls back to its own
in-process state, says so once in the log, and goes back to Redis when it answers again.

Example:
    >>> from llmpool import LLMPool
    >>> from llmpool.fallback.breakers_redis import RedisBreakerStore
    >>> store = RedisBreakerStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
    >>> pool = LLMPool(breaker_store=store)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from llmpool.errors import ProviderNotInstalledError
from llmpool.fallback.breakers import BreakerState, LocalBreakerStore
from llmpool.observe.fields import log_fields

__all__ = ["RedisBreakerStore", "redis_client"]

logger = logging.getLogger(__name__)


def redis_client(url: str, needed_by: str) -> Any:
    """Return a ``redis.Redis`` for ``url`` whose every round trip is bounded (0.5 s).

    A call never waits on a stalled Redis longer than that: the callers fall back to counting
    in the process.

    Raises:
        ProviderNotInstalledError: The redis package is not installed; the message says which
            feature (``needed_by``) needs it and how to install it.
    """
    try:
        import redis
    except ImportError as error:
        msg = f'{needed_by} need the redis package: pip install "llmpool[redis]"'
        raise ProviderNotInstalledError(msg) from error
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


class RedisBreakerStore:
    """A `BreakerStore` in Redis: one key per candidate, updated with optimistic transactions.

    Key layout: ``<prefix><board key>``, e.g. ``llmpool:breaker:row-1`` for a row at version 1
    and ``llmpool:breaker:row-1:3`` once it has been edited to version 3 (see
    `llmpool.fallback.breakers.breaker_key`); the value is the `BreakerState` as a JSON
    object of its fields.

    An update WATCHes the key, computes the change and commits it with MULTI/EXEC; when
    another replica changed the key in between, it starts over, up to `MAX_RACES` times. Each
    replica's change is applied at most once in Redis, so after a cooldown exactly one
    replica gets the half-open probe. A replica that loses every one of those races (extreme
    contention on one key) applies its change to its own in-process state instead, as when
    Redis is down, and logs that once: a breaker decision is never an error for the caller.

    Args:
        url: The Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: Key prefix, so several pools (or tests) can share one Redis.
        ttl: Seconds a breaker key lives after its last change, counted from the end of its
            cooldown or probe lease when that is later (stale state expires, a live cooldown
            never does); at least one second.
        retry_after: Seconds to wait before trying Redis again after it failed.
        client: An existing ``redis.Redis`` client instead of ``url``.
    """

    #: Lost WATCH races after which an update falls back to in-process state.
    MAX_RACES = 20

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
            client = redis_client(url, "Shared breakers")
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.retry_after = retry_after
        self.local = LocalBreakerStore()
        self._down_until = 0.0
        self._contention_reported = False

    def __repr__(self) -> str:
        return f"RedisBreakerStore(prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self.prefix + key

    @staticmethod
    def _decode(raw: Any) -> BreakerState | None:
        if raw is None:
            return None
        return BreakerState(**json.loads(raw))

    @property
    def reachable(self) -> bool:
        """Whether Redis answered last time it was asked (else local state is in use)."""
        return self._down_until == 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if self._down_until == 0.0:
            logger.warning(
                "llmpool cannot reach Redis for shared circuit breakers; using local state: %s",
                type(error).__name__,
                extra=log_fields("redis_down", error_class=type(error).__name__),
            )
        self._down_until = time.monotonic() + self.retry_after

    def _recovered(self) -> None:
        if self._down_until != 0.0:
            self._down_until = 0.0
            logger.warning(
                "llmpool reaches Redis again for shared circuit breakers",
                extra=log_fields("redis_up"),
            )

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key`` from Redis (or local state while Redis is down)."""
        known, state = self.read(key)
        return state if known else self.local.get(key)

    def read(self, key: str) -> tuple[bool, BreakerState | None]:
        """Return whether Redis answered, and the state of ``key`` it holds.

        Unlike `get`, never this process's local state: while Redis cannot be reached this
        returns ``(False, None)``, so a health view can say "unknown" instead of "closed".
        """
        if not self._available():
            return False, None
        try:
            state = self._decode(self.client.get(self._key(key)))
        except Exception as error:  # any Redis failure: the fleet's state is unknown
            self._failed(error)
            return False, None
        self._recovered()
        return True, state

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically change the state of ``key`` (WATCH/MULTI; retried on a race)."""
        if not self._available():
            return self.local.update(key, change)
        name = self._key(key)
        try:
            for _ in range(self.MAX_RACES):
                with self.client.pipeline() as pipe:
                    try:
                        pipe.watch(name)
                        current = self._decode(pipe.get(name)) or BreakerState()
                        new = change(current)
                        pipe.multi()
                        if new is None or new == BreakerState():
                            pipe.delete(name)
                        else:
                            pipe.set(name, json.dumps(new._asdict()), ex=self._expiry(new))
                        pipe.execute()
                        self._recovered()
                        return new
                    except Exception as error:
                        if type(error).__name__ != "WatchError":
                            raise
        except Exception as error:
            self._failed(error)
            return self.local.update(key, change)
        self._contended(key)
        return self.local.update(key, change)

    def _expiry(self, state: BreakerState) -> int:
        # Redis refuses EX 0, and a key must outlive the cooldown or probe lease it records.
        pending = max(state.open_until, state.probe_until) - time.time()
        return max(1, math.ceil(max(pending, 0.0) + self.ttl))

    def _contended(self, key: str) -> None:
        if not self._contention_reported:
            self._contention_reported = True
            logger.warning(
                "llmpool lost %d Redis races in a row on a circuit breaker; "
                "this change applies to this replica's local state only",
                self.MAX_RACES,
                extra=log_fields("redis_contended", breaker=key),
            )
