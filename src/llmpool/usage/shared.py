"""`RedisBudgets`: the rows' budgets shared by every replica through Redis (extra ``redis``).

Each step is one Lua script, one round trip, atomic: `admit` (before a budgeted call: lapse the
expired reservations, decide, reserve the call's expected cost) and `settle` (after it: the real
cost replaces the reservation). Per row and budget period (its UTC start in the key), a hash
``<prefix><row id>:<period start>`` holds ``settled`` (the cost of every call settled here this
period, every replica's), ``flushed`` (how much of ``settled`` is committed to ``llm_usage``),
``reserved`` and ``unknown`` (the open reservations' expected cost, and how many are of a cost
not known yet) and each open reservation's amount; the sorted set ``…:r`` orders them by expiry
(Redis's clock). ``<prefix><row id>[:<version>]:mean`` is the row version's running mean cost
per answer, learnt by every replica. Keys expire a day after their period ends (the mean: 35
days after its last change). While Redis cannot be reached, every method says so by returning
``None`` or ``False`` (`llmpool.contracts.Shared` logs it once) and the caller counts locally.

The handover with the table. A replica reads the row's ``flushed`` (its *mark*, F) before it
reads the table's spend this period (T); after each flush that commits, the flushing replica
adds what the batch held of ``settled`` to ``flushed``. The fleet's spend is then
``T + settled - F`` (plus this process's calls settled while Redis was down, which only the
table will hold). A call settled here counts once: in T and F when its flush's mark was added
before the reading, in ``settled - F`` when its flush committed after the reading; a flush that
commits before a reading and marks after it counts twice until the next reading (too much,
never too little). A replica whose mark failed keeps it owed and adds it before its next reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmpool.contracts import Shared, redis_client

if TYPE_CHECKING:
    from llmpool.providers.prices import Budget

__all__ = ["RESERVATION_TTL", "RedisBudgets"]

#: Seconds after which a call admitted, then neither recorded nor released, holds no budget.
RESERVATION_TTL = 600.0
#: How long a period's keys outlive it (late flushes still mark it), and a mean its last change.
_GRACE, _MEAN_TTL = 86400, 35 * 86400

# Lapse the expired reservations of KEYS[1] (hash), KEYS[2] (by expiry); set `calls`.
_LAPSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  local amount = redis.call('HGET', KEYS[1], 'r:' .. id)
  if amount == '-1' then redis.call('HINCRBY', KEYS[1], 'unknown', -1)
  elseif amount then redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(amount)) end
  redis.call('HDEL', KEYS[1], 'r:' .. id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local calls = redis.call('ZCARD', KEYS[2])
if calls == 0 then redis.call('HDEL', KEYS[1], 'reserved', 'unknown') end
"""

# KEYS: hash, reservations, mean. ARGV: base (what this replica adds to `settled`), seed (the
# expected cost when no mean is known; -1: unknown), amount, reservation id ('': only decide),
# ttl (ms), expire at (epoch s). Returns {1 admitted | 0, spent, reserved, calls, unknown,
# expected} (numbers as text: Lua's would be cut to integers).
_ADMIT = (
    _LAPSE
    + """
local v = redis.call('HMGET', KEYS[1], 'settled', 'reserved', 'unknown')
local spent = tonumber(ARGV[1]) + tonumber(v[1] or '0')
local reserved, unknown = tonumber(v[2] or '0'), tonumber(v[3] or '0')
local expected = tonumber(redis.call('GET', KEYS[3]) or ARGV[2])
local amount = tonumber(ARGV[3])
local ok
if expected < 0 then ok = calls == 0 and spent < amount
else ok = unknown == 0 and spent < amount and spent + reserved + expected <= amount * (1 + 1e-9) end
if ok and ARGV[4] ~= '' then
  local shown = string.format('%.17g', expected)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])
  redis.call('HSET', KEYS[1], 'r:' .. ARGV[4], shown)
  if expected < 0 then redis.call('HINCRBY', KEYS[1], 'unknown', 1)
  else redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', shown) end
  redis.call('EXPIREAT', KEYS[1], ARGV[6])
  redis.call('EXPIREAT', KEYS[2], ARGV[6])
  calls = calls + 1
end
local function text(x) return string.format('%.17g', x) end
return {ok and 1 or 0, text(spent), text(reserved), calls, unknown, text(expected)}
"""
)

# KEYS: hash, reservations, mean. ARGV: reservation id ('': none here), cost, 1 when answered
# (its cost feeds the mean), the latest answer's weight in the mean, expire at (epoch s).
_SETTLE = f"""
if ARGV[1] ~= '' then
  local amount = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
  if amount == '-1' then redis.call('HINCRBY', KEYS[1], 'unknown', -1)
  elseif amount then redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', -tonumber(amount)) end
  redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
local cost = tonumber(ARGV[2])
if cost > 0 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'settled', ARGV[2])
  redis.call('EXPIREAT', KEYS[1], ARGV[5])
end
if ARGV[3] == '1' then
  local mean = tonumber(redis.call('GET', KEYS[3]) or ARGV[2])
  mean = mean + (cost - mean) * tonumber(ARGV[4])
  redis.call('SET', KEYS[3], string.format('%.17g', mean), 'EX', {_MEAN_TTL})
end
return 1
"""


class RedisBudgets:
    """Budget reservations, settled spend and flush marks in Redis, shared by every replica;
    after a failure the caller counts in this process for ``retry_after`` seconds."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "llmpool:budget:",
        reservation_ttl: float = RESERVATION_TTL,
        retry_after: float = 5.0,
        client: Any = None,
    ) -> None:
        client = client if client is not None else redis_client(url, "Shared budgets")
        self.shared = Shared(client, what="budgets", retry_after=retry_after)
        self.prefix = prefix
        self._ttl_ms = max(1, round(reservation_ttl * 1000))
        self._admit = client.register_script(_ADMIT)
        self._settle = client.register_script(_SETTLE)
        # Reservations whose settlement did not reach Redis: released at the next `mark_flushed`.
        self._stale: list[tuple[list[str], str]] = []

    def __repr__(self) -> str:
        return f"RedisBudgets(prefix={self.prefix!r})"

    def _keys(self, row_key: str, llm_id: str, start: float) -> list[str]:
        period = f"{self.prefix}{llm_id}:{int(start)}"
        return [period, f"{period}:r", f"{self.prefix}{row_key}:mean"]

    def admit(
        self,
        row_key: str,
        llm_id: str,
        budget: Budget,
        now: float,
        *,
        base: float,
        seed: float | None,
        reservation: str,
    ) -> tuple[bool, float, float, int, int, float | None] | None:
        """Decide a call (and reserve its expected cost under ``reservation``, unless ``""``).

        Args:
            row_key: The row version's key (its mean cost is learnt per version).
            llm_id: The row's id.
            budget: The row's budget; ``now`` (epoch seconds) picks its period.
            base: What this replica adds to the fleet's settled spend (see the module).
            seed: The expected cost when the fleet has learnt none; ``None``: unknown.
            reservation: A unique id, or ``""`` to decide without reserving.

        Returns:
            ``(admitted, spent, reserved, calls in flight, of them of unknown cost, expected
            cost or None)``, or ``None`` while Redis cannot be reached.
        """
        start = budget.start(now)
        keys = self._keys(row_key, llm_id, start)
        args = [
            repr(base),
            "-1" if seed is None else repr(seed),
            repr(budget.amount),
            reservation,
            self._ttl_ms,
            int(budget.end(now)) + _GRACE,
        ]
        found = self.shared.run(lambda r: self._admit(keys=keys, args=args, client=r), lambda: None)
        if found is None:
            return None
        expected = float(found[5])
        return (
            int(found[0]) == 1,
            float(found[1]),
            float(found[2]),
            int(found[3]),
            int(found[4]),
            None if expected < 0 else expected,
        )

    def settle(
        self,
        row_key: str,
        llm_id: str,
        budget: Budget,
        now: float,
        *,
        reservation: str,
        cost: float,
        answered: bool,
        weight: float,
    ) -> bool:
        """Settle a call: drop its ``reservation`` (``""``: none here) and add its ``cost`` to the
        period's spend; an ``answered`` call's cost moves the mean by ``weight``. Whether Redis
        took it (else the cost is this process's alone, and the reservation is released later).
        """
        keys = self._keys(row_key, llm_id, budget.start(now))
        args = [reservation, repr(cost), int(answered), weight, int(budget.end(now)) + _GRACE]
        done = self.shared.run(
            lambda r: bool(self._settle(keys=keys, args=args, client=r)), lambda: False
        )
        if not done and reservation:
            self._stale.append((keys, reservation))
        return done

    def seed(self, key: str, start: float, end: float, spent: float) -> bool:
        """Start the settled spend of ``key``'s period (``start`` to ``end``) at ``spent``, read
        from the table, unless a replica did already (`llmpool.chain.quotas` keys its quotas'
        periods so); whether Redis holds the period now."""
        name = f"{self.prefix}{key}:{int(start)}"

        def run(redis: Any) -> bool:
            pipe = redis.pipeline(transaction=True)
            pipe.hsetnx(name, "settled", repr(spent))
            pipe.expireat(name, int(end) + _GRACE)
            pipe.execute()
            return True

        return self.shared.run(run, lambda: False)

    def mark(self, llm_id: str, start: float) -> float | None:
        """Return how much of the period's settled spend is flushed (``None``: Redis is down)."""
        key = f"{self.prefix}{llm_id}:{int(start)}"
        found = self.shared.run(lambda redis: redis.hget(key, "flushed") or 0, lambda: None)
        return None if found is None else float(found)

    def settled(self, llm_id: str, start: float) -> float | None:
        """Return the period's settled spend, every replica's (``None``: Redis is down)."""
        key = f"{self.prefix}{llm_id}:{int(start)}"
        found = self.shared.run(lambda redis: redis.hget(key, "settled") or 0, lambda: None)
        return None if found is None else float(found)

    def mark_flushed(self, flushed: dict[tuple[str, float, float], float]) -> bool:
        """Add what a committed flush held of each period's settled spend (keyed by row id,
        period start and end) to its ``flushed``, and release the stale reservations, in one
        round trip; whether Redis took it."""
        stale, self._stale = self._stale, []

        def run(redis: Any) -> bool:
            pipe = redis.pipeline(transaction=False)
            for (llm_id, start, end), cost in flushed.items():
                key = f"{self.prefix}{llm_id}:{int(start)}"
                pipe.hincrbyfloat(key, "flushed", cost)
                pipe.expireat(key, int(end) + _GRACE)
            for keys, reservation in stale:
                self._settle(keys=keys, args=[reservation, "0", 0, 0, 0], client=pipe)
            pipe.execute()
            return True

        if not flushed and not stale:
            return True
        if self.shared.run(run, lambda: False):
            return True
        self._stale += stale
        return False
