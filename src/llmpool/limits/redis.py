"""Rate-limit windows in Redis, shared by every replica of a service (extra ``redis``).

Each check is one Lua script, one round trip, atomic and on Redis's clock (replicas whose clocks
disagree share one window). While Redis cannot be reached (`llmpool.contracts.Shared`), this
process's `LocalLimits` count each row's limits divided by the live replicas last seen
(``when_down="share"``, the default), or rows with limits are refused (``"closed"``). Keys
``<prefix><row id>:r`` (requests) and ``:t`` (tokens) expire a window after their last change.

Example:
    >>> from llmpool import LLMPool
    >>> from llmpool.limits.redis import RedisLimits
    >>> pool = LLMPool(limits=RedisLimits("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal

from llmpool.contracts import Shared, log_fields, redis_client
from llmpool.errors import InvalidOptionError
from llmpool.limits import LocalLimits, WindowUse, describe_refusal, share

__all__ = ["CLOSED", "RedisLimits"]

logger = logging.getLogger("llmpool.redis")

#: The refusal of a row with limits while Redis is down and ``when_down="closed"``.
CLOSED = "rate limits unavailable: Redis cannot be reached (limits_when_redis_down='closed')"

# KEYS: requests, tokens. ARGV: rpm, tpm (0: none; both 0 only reads), window (ms), a unique
# member, tokens to count (0: none; then nothing else is done). Returns {0, requests, tokens}
# when taken (or read), else {1 (rpm) or 2 (tpm), used, ms until the oldest entry leaves}.
_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
if tonumber(ARGV[5]) > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[4] .. ':' .. ARGV[5])
  redis.call('PEXPIRE', KEYS[2], window)
  return {0}
end
local since = '(' .. (now - window)
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', since)
local entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do
  used = used + tonumber(string.match(entries[i], ':(%d+)$'))
end
if tpm > 0 and used >= tpm then return {2, used, tonumber(entries[2]) + window - now} end
local n = redis.call('ZCARD', KEYS[1])
if rpm > 0 then
  if n >= rpm then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, n, tonumber(first[2]) + window - now}
  end
  redis.call('ZADD', KEYS[1], now, now .. ':' .. ARGV[4])
  redis.call('PEXPIRE', KEYS[1], window)
  n = n + 1
end
return {0, n, used}
"""


class RedisLimits:
    """A `llmpool.limits.LimitStore` in Redis: every replica counts in the same windows (``margin``
    as for `LocalLimits`); after a failure this process counts for ``retry_after`` seconds.

    Args:
        when_down: While Redis cannot be reached: ``"share"`` counts ``ceil(limit / replicas())``
            of each row's ``rpm`` and ``tpm`` here; ``"closed"`` refuses rows with limits.
        replicas: The live replicas last seen through Redis (`FleetStats.replicas`); 1 (the
            whole limits here) by default.
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
        when_down: Literal["share", "closed"] = "share",
        replicas: Callable[[], int] = lambda: 1,
    ) -> None:
        if when_down not in ("share", "closed"):
            msg = f"limits_when_redis_down must be 'share' or 'closed', not {when_down!r}"
            raise InvalidOptionError(msg, option="limits_when_redis_down")
        client = client if client is not None else redis_client(url, "Shared rate limits")
        self.shared = Shared(client, what="rate limits", retry_after=retry_after)
        self.prefix = prefix
        self.window = window
        self.local = LocalLimits(window, margin=margin)
        self._ms = max(1, round((window + margin) * 1000))
        self._script = client.register_script(_SCRIPT)
        self.when_down = when_down
        self.replicas = replicas
        self._alone: int | None = None  # the share counted here while Redis is down; 0: closed

    def __repr__(self) -> str:
        return f"RedisLimits(prefix={self.prefix!r}, window={self.window})"

    def _run(self, key: str, rpm: int, tpm: int, tokens: int = 0) -> Any:
        # The script's answer, or None while Redis cannot be reached.
        args = [rpm, tpm, self._ms, uuid.uuid4().hex, tokens]
        keys = [f"{self.prefix}{key}:r", f"{self.prefix}{key}:t"]
        return self.shared.run(lambda _: self._script(keys=keys, args=args), lambda: None)

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from ``key``'s shared window (one script, one round trip)."""
        result = self._run(key, rpm or 0, tpm or 0)
        if result is None:  # Redis is down: this process's own window, or none
            replicas = self._down()
            if not replicas:
                return CLOSED
            return self.local.take(key, share(rpm, replicas), share(tpm, replicas))
        if self._alone is not None:
            self._alone = None
        if int(result[0]) == 0:
            return None
        kind, limit = ("rpm", rpm) if int(result[0]) == 1 else ("tpm", tpm)
        return describe_refusal(kind, int(result[1]), int(limit or 0), int(result[2]) / 1000)

    def give_back(self, key: str) -> None:
        """Undo a `take`: remove the newest request of ``key``'s window."""
        name = f"{self.prefix}{key}:r"
        self.shared.run(lambda redis: redis.zpopmax(name), lambda: self.local.give_back(key))

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in ``key``'s shared window, now."""
        if self._run(key, 0, 0, tokens) is None:
            self.local.add_tokens(key, tokens)

    def use(self, key: str) -> WindowUse:
        """Return ``key``'s current shared window."""
        result = self._run(key, 0, 0)
        if result is not None:
            return WindowUse(int(result[1]), int(result[2]))
        replicas = self._down()
        refusal = None if replicas else CLOSED
        return self.local.use(key)._replace(share=max(1, replicas), refusal=refusal)

    def _down(self) -> int:
        # Redis is down: the replicas this one shares the limits with (0: closed), logged once
        # per change.
        alone = 0 if self.when_down == "closed" else max(1, self.replicas())
        if alone != self._alone:
            self._alone = alone
            if alone:
                logger.warning(
                    "llmpool counts rate limits in this replica while Redis is down: each "
                    "row's rpm and tpm divided by %d live replicas",
                    alone,
                    extra=log_fields("limits_local", replicas=alone),
                )
            else:
                logger.warning(
                    "llmpool refuses rows with rate limits while Redis is down "
                    "(limits_when_redis_down='closed')",
                    extra=log_fields("limits_closed"),
                )
        return alone
