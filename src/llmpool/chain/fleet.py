"""`FleetStats`: `RowStats` shared by every replica of a fleet through Redis.

A call never waits on Redis: it counts in this process, as `RowStats` does. Once the pool
serves (`serve`), one daemon thread syncs every ``interval`` seconds in one pipelined round
trip: it renews this replica's heartbeat, publishes this replica's part of each row (calls in
flight now; over the last ``window`` seconds its attempts, errors, answers' latency histogram
and sum; its weighted mean latency) and each row's newest error, and reads every live
replica's parts back into a `FleetView`. Routing (``latency``, ``least_busy``) and
`LLMPool.status` read that view; while Redis cannot be reached, this process's own numbers
(`llmpool.contracts.Shared` says so once, and once when Redis answers again).

Each replica publishes its whole part (not deltas), so a lost or repeated round trip counts
nothing twice, and a replica that dies takes its calls in flight with it: parts count only
while their replica's heartbeat is live. Keys, under ``prefix`` (``llmpool:fleet:``):

- ``replicas``: sorted set, replica id -> until when it counts as live (Redis's clock, ms):
  three sync intervals of its own, plus half a second; expired members are removed at once.
- ``row:<row key>``: hash, replica id -> its part (compact JSON); the key expires
  ``2 * window`` seconds after its last write, the fields of dead replicas are removed by the
  next replica to see them.
- ``error:<row id>``: the row's newest failed attempt, ``"<error class>|<epoch seconds>"``,
  kept a day.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.chain.stats import LastError, LatencyStatus, RowStats, iso
from llmpool.contracts import Candidate, Shared

if TYPE_CHECKING:
    from llmpool.tags import Tags

__all__ = ["FleetRow", "FleetStats", "FleetView"]

# KEYS[1]: the replicas set. ARGV: this replica ('' to only read), ms it stays live, ms the
# set lives. Returns the live replicas, on Redis's clock: replicas whose clocks disagree agree.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if ARGV[1] ~= '' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""

#: Latency histogram buckets per doubling: a percentile is within 4.5 % of the true value.
_STEPS = 8
_ERROR_TTL = 86_400


def _bucket(seconds: float) -> int:
    return math.floor(_STEPS * math.log2(max(seconds, 1e-6) * 1000.0))


def _bucket_ms(bucket: int) -> float:
    return float(2.0 ** ((bucket + 0.5) / _STEPS))  # the bucket's geometric middle


class FleetRow(NamedTuple):
    """One row, summed over the live replicas (the last ``window`` seconds)."""

    in_flight: int
    attempts: int
    errors: int
    latency: LatencyStatus | None
    mean: float | None
    """The replicas' weighted mean latencies (seconds), weighed by their answers: what
    ``latency`` routing reads."""
    replicas: int
    """How many replicas have a part of this row."""


class FleetView(NamedTuple):
    """What one round trip read: the live replicas and the rows' fleet numbers."""

    replicas: tuple[str, ...]
    rows: dict[str, FleetRow]
    others: dict[str, int]
    """Calls in flight per row key at the other replicas (this one counts its own live)."""
    errors: dict[str, tuple[str | None, float]]
    """The newest failed attempt of each row id: its error class and epoch seconds."""
    at: float
    """When it was read (monotonic seconds)."""


class _Part:
    # This replica's window of one row: one entry per sync tick, with running totals.
    __slots__ = ("errors", "histogram", "n", "sum", "ticks")

    def __init__(self) -> None:
        self.ticks: deque[tuple[float, int, int, float, Counter[int]]] = deque()
        self.n = self.errors = 0
        self.sum = 0.0
        self.histogram: Counter[int] = Counter()

    def add(self, now: float, outcomes: list[tuple[bool, float]]) -> None:
        answered = [latency for ok, latency in outcomes if ok]
        tick = Counter(_bucket(latency) for latency in answered)
        failed, total = len(outcomes) - len(answered), sum(answered)
        self.ticks.append((now, len(outcomes), failed, total, tick))
        self.n, self.errors = self.n + len(outcomes), self.errors + failed
        self.sum += total
        self.histogram.update(tick)

    def expire(self, since: float) -> None:
        while self.ticks and self.ticks[0][0] < since:
            _, n, failed, total, tick = self.ticks.popleft()
            self.n, self.errors, self.sum = self.n - n, self.errors - failed, self.sum - total
            self.histogram.subtract(tick)
        if not self.ticks:
            self.sum, self.histogram = 0.0, Counter()
        else:
            self.histogram = +self.histogram  # drop the buckets that emptied

    def encode(self, in_flight: int, mean: float | None) -> str:
        part = {"f": in_flight, "n": self.n, "e": self.errors, "s": round(self.sum, 6),
                "m": mean, "h": self.histogram}  # fmt: skip
        return json.dumps(part, separators=(",", ":"))


def _merge(parts: Iterable[Mapping[str, Any]]) -> FleetRow:
    flying = attempts = errors = answered = replicas = 0
    total = weighted = 0.0
    histogram: Counter[int] = Counter()
    for part in parts:
        replicas += 1
        flying += int(part["f"])
        attempts += int(part["n"])
        errors += int(part["e"])
        total += float(part["s"])
        counts = {int(b): int(c) for b, c in part["h"].items()}
        histogram.update(counts)
        mean, own = part["m"], sum(counts.values())
        if mean is not None and own:
            answered, weighted = answered + own, weighted + own * float(mean)
    samples = sum(histogram.values())
    latency: LatencyStatus | None = None
    if samples:
        ranked = sorted(histogram.items())

        def percentile(q: float) -> float:
            rank, seen = round(q * (samples - 1)), 0
            for bucket, count in ranked:
                seen += count
                if seen > rank:
                    return round(_bucket_ms(bucket), 3)
            return round(_bucket_ms(ranked[-1][0]), 3)  # pragma: no cover - rank < samples

        latency = {"samples": samples, "mean_ms": round(total / samples * 1000.0, 3),
                   "p50_ms": percentile(0.5), "p95_ms": percentile(0.95)}  # fmt: skip
    mean = weighted / answered if answered else None
    return FleetRow(flying, attempts, errors, latency, mean, replicas)


class FleetStats(RowStats):
    """`RowStats` whose routing and status read the whole fleet's numbers (see the module).

    Args:
        client: A ``redis.Redis`` client (`llmpool.contracts.redis_client`).
        prefix: The keys' prefix.
        interval: Seconds between syncs (one round trip each).
        window: Seconds of attempts the latency percentiles and error rate cover.
        retry_after: Seconds to count alone after Redis failed before trying it again.

    Example:
        >>> from llmpool.contracts import redis_client
        >>> client = redis_client("redis://127.0.0.1:6379/0", "A fleet")  # doctest: +SKIP
        >>> stats = FleetStats(client)  # doctest: +SKIP
        >>> stats.read(["row-1"]).rows["row-1"].in_flight  # doctest: +SKIP
        0
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "llmpool:fleet:",
        interval: float = 1.0,
        window: float = 60.0,
        retry_after: float = 5.0,
    ) -> None:
        super().__init__()
        self.shared = Shared(client, what="runtime statistics", retry_after=retry_after)
        self.prefix = prefix
        self.interval = interval
        self.window = window
        #: This replica's id in the fleet: host, process and a random part.
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._alive_ms = round((3 * interval + 0.5) * 1000)
        self._ttl_ms = round(2 * window * 1000)
        self._outbox: deque[tuple[str, bool, float]] = deque(maxlen=1_000_000)
        self._parts: dict[str, _Part] = {}
        self._sent: set[str] = set()  # row keys this replica has a part of in Redis
        self._errors_sent: dict[str, tuple[str | None, float]] = {}
        self._dead: set[tuple[str, str]] = set()  # (row key, replica) parts to remove
        self._keys: tuple[str, ...] = ()
        self._ids: tuple[str, ...] = ()
        self._view: FleetView | None = None
        self._replicas = 1
        self._sync_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"FleetStats(prefix={self.prefix!r}, replica={self.replica!r})"

    # -- the calls: counted here, sent by the sync ---------------------------------------------

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the ended call here (`RowStats.record`), and queue it for the next sync."""
        super().record(candidate, tags, ok=ok, latency=latency, usage=usage)
        self._outbox.append((candidate.key, ok, latency))

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """A chain of these candidates was built: the sync reads their fleet numbers too."""
        with self._lock:
            self._keys = tuple(dict.fromkeys([*self._keys, *(c.key for c in candidates)]))
            self._ids = tuple(dict.fromkeys([*self._ids, *(c.config.id for c in candidates)]))
        return True

    def forget(self, keys: Collection[str], llm_ids: Collection[str]) -> None:
        """Drop rows no longer in the table, and stop reading their fleet numbers."""
        super().forget(keys, llm_ids)
        with self._lock:
            self._keys = tuple(k for k in self._keys if k in keys)
            self._ids = tuple(i for i in self._ids if i in llm_ids)

    # -- the sync ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Join the fleet: heartbeat, publish and read every ``interval`` seconds in a daemon
        thread, until `close` (a pool starts it when it first hands out a fallback model)."""
        with self._sync_lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="llmpool-fleet", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            self.sync()
            if self._stop.wait(self.interval):
                return

    def close(self) -> None:
        """Stop the sync thread and leave the fleet: this replica's heartbeat and parts go."""
        self._stop.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(timeout=2.0)

        def leave(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.zrem(self.prefix + "replicas", self.replica)
            for key in self._sent:
                pipe.hdel(f"{self.prefix}row:{key}", self.replica)
            pipe.execute()

        self.shared.run(leave, lambda: None)

    def sync(self) -> FleetView | None:
        """One round trip: publish this replica's parts and heartbeat (once it serves), read
        the fleet's; return what was read, or ``None`` while Redis cannot be reached."""
        with self._sync_lock:
            serving = self._thread is not None
            writes = self._tick(time.time()) if serving else {}
            view = self.shared.run(
                lambda client: self._exchange(client, writes, serving), lambda: None
            )
            self._view = view
            return view

    def read(self, keys: Iterable[str], llm_ids: Iterable[str] = ()) -> FleetView | None:
        """`sync`, reading the fleet's numbers of ``keys`` (row keys, `Candidate.key`) and the
        newest errors of ``llm_ids`` (for a reader of its own, e.g. a benchmark's; a pool's
        stats read the rows of its snapshot)."""
        self._keys, self._ids = tuple(keys), tuple(llm_ids)
        return self.sync()

    def _tick(self, now: float) -> dict[str, str | None]:
        # Fold the calls queued since the last tick into this replica's windows; return the
        # parts to write (None: remove this replica's part of that row).
        queued: dict[str, list[tuple[bool, float]]] = {}
        outbox = self._outbox
        while outbox:
            key, ok, latency = outbox.popleft()
            queued.setdefault(key, []).append((ok, latency))
        since, parts, rows = now - self.window, self._parts, self._rows
        for key, outcomes in queued.items():
            (parts.get(key) or parts.setdefault(key, _Part())).add(now, outcomes)
        writes: dict[str, str | None] = {}
        with self._lock:  # the calls' threads add rows meanwhile
            keys = {*parts, *rows}
        for key in keys:
            part: _Part | None = parts.get(key)
            row = rows.get(key)
            if part is not None:
                part.expire(since)
            flying = row.in_flight if row is not None else 0
            if part is not None and part.n == 0 and not part.ticks:
                del parts[key]
                part = None
            if part is None and flying == 0:
                if key in self._sent:
                    writes[key] = None
                continue
            writes[key] = (part or _Part()).encode(flying, row.mean if row is not None else None)
        return writes

    def _exchange(self, client: Any, writes: Mapping[str, str | None], serving: bool) -> FleetView:
        prefix, me = self.prefix, self.replica
        keys, ids = self._keys, self._ids
        errors = {i: e for i, e in list(self._errors.items()) if self._errors_sent.get(i) != e}
        dead, self._dead = self._dead, set()
        pipe = client.pipeline(transaction=False)
        pipe.eval(
            _HEARTBEAT, 1, prefix + "replicas", me if serving else "", self._alive_ms, self._ttl_ms
        )
        for key, part in writes.items():
            name = f"{prefix}row:{key}"
            if part is None:
                pipe.hdel(name, me)
            else:
                pipe.hset(name, me, part)
                pipe.pexpire(name, self._ttl_ms)
        for key, replica in dead:
            pipe.hdel(f"{prefix}row:{key}", replica)
        for llm_id, (error_class, at) in errors.items():
            pipe.set(f"{prefix}error:{llm_id}", f"{error_class or ''}|{at}", ex=_ERROR_TTL)
        for key in keys:
            pipe.hgetall(f"{prefix}row:{key}")
        if ids:
            pipe.mget([f"{prefix}error:{llm_id}" for llm_id in ids])
        answers = pipe.execute()
        # Written: remember it, so the next sync removes what empties and sends only new errors.
        self._sent.update(k for k, part in writes.items() if part is not None)
        self._sent.difference_update(k for k, part in writes.items() if part is None)
        self._errors_sent.update(errors)
        live = tuple(member.decode() for member in answers[0])
        self._replicas = max(1, len(live))
        hashes = answers[len(answers) - len(keys) - (1 if ids else 0) :][: len(keys)]
        return FleetView(
            live,
            *self._rows_of(keys, hashes, set(live)),
            self._errors_of(ids, answers[-1] if ids else []),
            time.monotonic(),
        )

    def _rows_of(
        self, keys: tuple[str, ...], hashes: list[dict[bytes, bytes]], live: set[str]
    ) -> tuple[dict[str, FleetRow], dict[str, int]]:
        rows: dict[str, FleetRow] = {}
        others: dict[str, int] = {}
        for key, fields in zip(keys, hashes, strict=True):
            parts: list[Mapping[str, Any]] = []
            for raw_replica, raw in fields.items():
                replica = raw_replica.decode()
                if replica not in live:
                    self._dead.add((key, replica))
                    continue
                try:
                    part = json.loads(raw)
                    int(part["f"]), part["h"].items()
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue  # not a part this version reads: skipped
                parts.append(part)
                if replica != self.replica and part["f"]:
                    others[key] = others.get(key, 0) + int(part["f"])
            if parts:
                rows[key] = _merge(parts)
        return rows, others

    @staticmethod
    def _errors_of(
        ids: tuple[str, ...], values: list[bytes | None]
    ) -> dict[str, tuple[str | None, float]]:
        errors: dict[str, tuple[str | None, float]] = {}
        for llm_id, raw in zip(ids, values, strict=True):
            error_class, _, at = (raw or b"").decode().rpartition("|")
            try:
                errors[llm_id] = (error_class or None, float(at))
            except ValueError:
                continue
        return errors

    # -- what routing reads: the fleet's, as of the last sync ---------------------------------

    @property
    def replicas(self) -> int:
        """Live replicas as last seen through Redis (at least 1; kept while Redis is down)."""
        return self._replicas

    @property
    def view(self) -> FleetView | None:
        """The last round trip's `FleetView`; ``None`` before one, and while Redis is down."""
        return self._view

    def in_flight(self, candidate: Candidate) -> int:
        """Calls to ``candidate`` in flight now: this process's, and the other replicas' as of
        the last sync."""
        row = self._rows.get(candidate.key)
        view = self._view
        others = view.others.get(candidate.key, 0) if view is not None else 0
        return (0 if row is None else row.in_flight) + others

    def latency(self, candidate: Candidate) -> float | None:
        """The fleet's weighted mean latency of ``candidate`` (seconds); this process's while
        the fleet has none."""
        view = self._view
        fleet = view.rows.get(candidate.key) if view is not None else None
        if fleet is not None and fleet.mean is not None:
            return fleet.mean
        return super().latency(candidate)

    # -- what status reads: the fleet's over the last `window` seconds -------------------------

    def _current(self) -> FleetView | None:
        # Serving: the sync thread keeps the view fresh. A reader (a shell) reads on demand.
        view = self._view
        if self._thread is None and (view is None or time.monotonic() - view.at > self.interval):
            view = self.sync()
        return view

    def fleet_row(self, candidate: Candidate) -> FleetRow | None:
        """The fleet's numbers of ``candidate``, or ``None`` when no live replica has any (or
        Redis cannot be reached)."""
        view = self._current()
        return None if view is None else view.rows.get(candidate.key)

    def latencies(self, candidate: Candidate) -> LatencyStatus | None:
        """The fleet's answer latencies of the last ``window`` seconds (this process's last
        `WINDOW` attempts while Redis is down)."""
        if self._current() is None:
            return super().latencies(candidate)
        row = self.fleet_row(candidate)
        return None if row is None else row.latency

    def error_rate(self, candidate: Candidate) -> float | None:
        """The failed share of the fleet's attempts of the last ``window`` seconds."""
        if self._current() is None:
            return super().error_rate(candidate)
        row = self.fleet_row(candidate)
        return round(row.errors / row.attempts, 4) if row is not None and row.attempts else None

    def attempts(self, candidate: Candidate) -> int:
        """The fleet's attempts of the row in the last ``window`` seconds."""
        if self._current() is None:
            return super().attempts(candidate)
        row = self.fleet_row(candidate)
        return 0 if row is None else row.attempts

    def last_error(self, llm_id: str) -> LastError | None:
        """The row's newest failed attempt at any replica (this process's included)."""
        view = self._current()
        newest = [e for e in (view.errors.get(llm_id) if view else None, self._errors.get(llm_id))
                  if e is not None]  # fmt: skip
        if not newest:
            return None
        error_class, at = max(newest, key=lambda error: error[1])
        return {"error_class": error_class, "at": iso(at)}
