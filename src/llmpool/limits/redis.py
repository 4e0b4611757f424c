"""Rate-limit windows in Redis, shared by every replica of a service (extra ``redis``).

Each check is one Lua script, one round trip: it drops the entries that left the window, counts
what is left, and takes a request when there is room, atomically, on Redis's own clock (so
replicas whose clocks disagree still share one window). When Redis cannot be reached, counting
falls back to this process's `LocalLimits` with a WARNING in the log, calls keep flowing, and
Redis is tried again after ``retry_after`` seconds.

Key layout (``<prefix>`` is ``llmpool:limits:`` by default): ``<prefix><row id>:r`` (a sorted
set of request times) and ``<prefix><row id>:t`` (token entries); both expire a window after
their last change.

Example:
    >>> from llmpool import LLMPool
    >>> from llmpool.limits.redis import RedisLimits
    >>> pool = LLMPool(limits=RedisLimits("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from typing import Any

from llmpool.fallback.breakers_redis import redis_client
from llmpool.limits.local import LocalLimits, WindowUse, describe_refusal
from llmpool.observe.fields import log_fields

__all__ = ["RedisLimits"]

logger = logging.getLogger(__name__)

# KEYS: requests, tokens. ARGV: rpm (0: none), tpm (0: none), window (ms), a unique member.
# Returns {0} when taken, else {1 (rpm) or 2 (tpm), used, ms until the oldest entry leaves}.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local since = '(' .. (now - window)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
  local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  local used, oldest = 0, nil
  for i = 1, #entries, 2 do
    used = used + tonumber(string.match(entries[i], ':(%d+)$'))
    if oldest == nil then oldest = tonumber(entries[i + 1]) end
  end
  if used >= tpm then return {2, used, oldest + window - now} end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, n, tonumber(first[2]) + window - now}
  end
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
end
return {0}
"""

# KEYS: tokens. ARGV: tokens, window (ms), a unique member.
_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS: requests, tokens. ARGV: window (ms). Returns {requests, tokens} in the window.
_USE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local since = '(' .. (now - tonumber(ARGV[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
local used = 0
for _, entry in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  used = used + tonumber(string.match(entry, ':(%d+)$'))
end
return {redis.call('ZCARD', KEYS[1]), used}
"""


class RedisLimits:
    """A `LimitStore` in Redis: every replica counts in the same windows.

    Args:
        url: The Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: Key prefix, so several services (or tests) can share one Redis.
        window: The window's length in seconds (60: per minute).
        margin: Seconds added to the window, so that requests admitted a window apart, which
            reach the provider after varying delays, are still a window apart there (the
            default, a quarter second, covers the jitter of busy replicas).
        retry_after: Seconds to count locally after Redis failed before trying it again.
        client: An existing ``redis.Redis`` client instead of ``url``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "llmpool:limits:",
        window: float = 60.0,
        margin: float = 0.25,
        retry_after: float = 5.0,
        client: Any = None,
    ) -> None:
        if client is None:
            client = redis_client(url, "Shared rate limits")
        self.client = client
        self.prefix = prefix
        self.window = window
        self.retry_after = retry_after
        self.local = LocalLimits(window, margin=margin)
        self._ms = max(1, round((window + margin) * 1000))
        self._take = client.register_script(_TAKE)
        self._tokens = client.register_script(_TOKENS)
        self._use = client.register_script(_USE)
        self._down_until = 0.0
        self._member = 0
        import os
        import uuid

        self._origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __repr__(self) -> str:
        return f"RedisLimits(prefix={self.prefix!r}, window={self.window})"

    def _keys(self, key: str) -> list[str]:
        return [f"{self.prefix}{key}:r", f"{self.prefix}{key}:t"]

    def _unique(self) -> str:
        self._member += 1  # not atomic across threads: the origin and a collision are harmless
        return f"{self._origin}-{self._member}"

    def _available(self) -> bool:
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def _failed(self, error: Exception) -> None:
        if self._down_until == 0.0:
            logger.warning(
                "llmpool cannot reach Redis for shared rate limits; counting in this process "
                "until it answers: %s",
                type(error).__name__,
                extra=log_fields("redis_limits_down", error_class=type(error).__name__),
            )
        self._down_until = time.monotonic() + self.retry_after

    def _recovered(self) -> None:
        if self._down_until != 0.0:
            self._down_until = 0.0
            logger.warning(
                "llmpool reaches Redis again for shared rate limits",
                extra=log_fields("redis_limits_up"),
            )

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from ``key``'s shared window (one script, one round trip)."""
        if not self._available():
            return self.local.take(key, rpm, tpm)
        try:
            result = self._take(
                keys=self._keys(key), args=[rpm or 0, tpm or 0, self._ms, self._unique()]
            )
        except Exception as error:  # any Redis failure: count in this process
            self._failed(error)
            return self.local.take(key, rpm, tpm)
        self._recovered()
        if int(result[0]) == 0:
            return None
        kind, limit = ("rpm", rpm) if int(result[0]) == 1 else ("tpm", tpm)
        return describe_refusal(kind, int(result[1]), int(limit or 0), int(result[2]) / 1000)

    def give_back(self, key: str) -> None:
        """Undo a `take`: remove the newest request of ``key``'s window."""
        if not self._available():
            self.local.give_back(key)
            return
        try:
            self.client.zpopmax(self._keys(key)[0])
        except Exception as error:
            self._failed(error)

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in ``key``'s shared window, now."""
        if not self._available():
            self.local.add_tokens(key, tokens)
            return
        try:
            self._tokens(keys=[self._keys(key)[1]], args=[tokens, self._ms, self._unique()])
        except Exception as error:
            self._failed(error)
            self.local.add_tokens(key, tokens)

    def use(self, key: str) -> WindowUse:
        """Return ``key``'s current shared window."""
        if not self._available():
            return self.local.use(key)
        try:
            requests, tokens = self._use(keys=self._keys(key), args=[self._ms])
        except Exception as error:
            self._failed(error)
            return self.local.use(key)
        return WindowUse(int(requests), int(tokens))
