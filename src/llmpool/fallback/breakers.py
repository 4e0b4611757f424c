"""Circuit breakers: stop calling a candidate that keeps failing, then probe it once.

A breaker is closed until ``failure_threshold`` consecutive failures open it, or a `Window`'s
failure rate does (``failure_rate`` of at least ``min_calls`` calls in the last ``window``
seconds). While open, its candidate is skipped with no network call. When the cooldown ends,
exactly one caller gets a half-open probe while concurrent callers keep skipping; the probe's
success closes the breaker, its failure reopens it with a longer cooldown. A failure never
shortens a cooldown; a ``Retry-After`` may only lengthen it.

The window is `BUCKETS` fixed buckets. An answer while the row has no state (no failure in its
window) is only counted in this process (`BreakerBoard.passed`: O(1), no store access); those
counts join the stored window with the board's next write of that row (a failure, or an answer
while it has state), so replicas sharing a store count every call of the fleet.

State is kept per `breaker_key` (the row's id and version: an edited row starts clean) behind
`BreakerStore`: in the process (`LocalBreakerStore`), or in Redis, shared by every replica
(`RedisBreakerStore`). Times are wall-clock seconds (`time.time`), so processes agree on them.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, NamedTuple, Protocol, runtime_checkable

from llmpool.contracts import Shared, breaker_key, log_fields, redis_client

__all__ = [
    "Admission",
    "BreakerBoard",
    "BreakerChange",
    "BreakerState",
    "BreakerStore",
    "LocalBreakerStore",
    "RedisBreakerStore",
    "Window",
    "breaker_key",
    "state_name",
]

logger = logging.getLogger(__name__)

#: Fixed buckets of a failure-rate window: it slides by a tenth of its length.
BUCKETS = 10


class Window(NamedTuple):
    """A failure-rate trip: ``rate`` (0-1) of at least ``min_calls`` calls in ``seconds``."""

    rate: float
    min_calls: int
    seconds: float


class BreakerState(NamedTuple):
    """One candidate's breaker (a tuple: cheap to make, compare and replace on the hot path).

    Attributes:
        failures: Consecutive failures.
        open_until: Wall-clock time the cooldown ends; 0 when closed.
        trips: How many times in a row it opened (grows the cooldown).
        probe_until: While a half-open probe is in flight, when its lease ends.
        bucket: The newest bucket of the failure-rate window (wall-clock time // its width).
        calls: Calls per bucket of the window, oldest first (empty: no window).
        errors: Failures per bucket of the window.
    """

    failures: int = 0
    open_until: float = 0.0
    trips: int = 0
    probe_until: float = 0.0
    bucket: int = 0
    calls: tuple[int, ...] = ()
    errors: tuple[int, ...] = ()


def state_name(state: BreakerState | None, now: float) -> str:
    """Return ``"closed"``, ``"open"`` (cooling down) or ``"half_open"`` for a state at ``now``.

    Half-open is a probe in flight, or a cooldown that has ended: the next call probes.

    Example:
        >>> state_name(None, 0.0), state_name(BreakerState(3, 100.0, 1), 50.0)
        ('closed', 'open')
    """
    if state is None or state.open_until == 0.0:
        return "closed"
    if now < state.probe_until or now >= state.open_until:
        return "half_open"
    return "open"


class BreakerChange(NamedTuple):
    """A breaker's change of state (``previous`` to ``state``, as `state_name` names them)."""

    key: str
    previous: str
    state: str
    failures: int = 0
    trips: int = 0
    reopens_at: float = 0.0  # when the cooldown ends (wall clock); 0 when closed


def _slide(
    state: BreakerState, bucket: int, passed: dict[int, int] | None
) -> tuple[int, list[int], list[int]]:
    # The window moved on to end at ``bucket`` (never back: replicas' clocks may differ a
    # little), with the answers counted in this process since its last write added.
    bucket = max(bucket, state.bucket)
    shift = bucket - state.bucket
    if len(state.calls) != BUCKETS or shift >= BUCKETS:
        calls, errors = [0] * BUCKETS, [0] * BUCKETS
    else:
        calls = [*state.calls[shift:], *[0] * shift]
        errors = [*state.errors[shift:], *[0] * shift]
    # A copy: a thread that read the counts before they were taken may still add to them.
    for at, count in list((passed or {}).items()):
        index = BUCKETS - 1 - (bucket - at)
        if 0 <= index < BUCKETS:
            calls[index] += count
    return bucket, calls, errors


class Admission(enum.Enum):
    """What the breaker says about calling a candidate now."""

    CLOSED = "closed"
    """Call it."""
    PROBE = "probe"
    """Call it as the half-open probe: its outcome closes or reopens the breaker."""
    OPEN = "open"
    """Do not call it: cooling down."""


@runtime_checkable
class BreakerStore(Protocol):
    """Where breaker state lives. Each method is atomic for one key."""

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key``, or ``None`` when it has none (closed)."""
        ...

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically replace the state of ``key`` with ``change(state)`` (``None`` deletes
        it) and return the new state."""
        ...


_CLOSED = BreakerState()


class LocalBreakerStore:
    """Breaker state in this process's memory."""

    def __init__(self) -> None:
        self._states: dict[str, BreakerState] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key``."""
        return self._states.get(key)

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically change the state of ``key``."""
        with self._lock:
            new = change(self._states.get(key, _CLOSED))
            if new is None or new == _CLOSED:
                self._states.pop(key, None)
                return None
            self._states[key] = new
            return new


class BreakerBoard:
    """The breakers of every candidate of a pool, over one store.

    Args:
        store: Where state lives; in-process by default.
        clock: Returns the current wall-clock time; injectable for tests.
        probe_lease: Seconds a half-open probe holds its slot before another caller may probe
            (a caller that died mid-probe must not block the candidate forever).

    Example:
        >>> board = BreakerBoard()
        >>> board.admit("row-1")
        <Admission.CLOSED: 'closed'>
    """

    def __init__(
        self,
        store: BreakerStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        probe_lease: float = 60.0,
    ) -> None:
        self.store: BreakerStore = store if store is not None else LocalBreakerStore()
        self.clock = clock
        self.probe_lease = probe_lease
        #: Whether the state lives outside this process (Redis), seen by every replica.
        self.shared = not isinstance(self.store, LocalBreakerStore)
        #: Keys this process saw open, until when: `seems_open` reads it (empty: none).
        self.seen_open: dict[str, float] = {}
        # Answers not yet in the store, per key: bucket -> count (see the module).
        self._passed: dict[str, dict[int, int]] = {}

    def admit(self, key: str) -> Admission:
        """Return whether a call to ``key`` may go out now, taking the probe slot if due."""
        return self.check(key)[0]

    def check(self, key: str) -> tuple[Admission, bool]:
        """`admit`, and whether ``key`` has state a success must clear (failures counted)."""
        state = self.store.get(key)
        if state is None:
            return Admission.CLOSED, False
        if state.open_until == 0.0:
            return Admission.CLOSED, True
        now = self.clock()
        if now < state.open_until or now < state.probe_until:
            self.seen_open[key] = state.open_until
            return Admission.OPEN, True
        taken = False

        def take(current: BreakerState) -> BreakerState:
            nonlocal taken
            taken = False  # a store may run this again after losing a race
            if current.open_until and now >= current.open_until and now >= current.probe_until:
                taken = True
                return current._replace(probe_until=now + self.probe_lease)
            return current

        self.store.update(key, take)
        return (Admission.PROBE if taken else Admission.OPEN), True

    def release(self, key: str) -> None:
        """Give back a probe slot whose call ended without a verdict on the candidate
        (cancelled, interrupted, or not the candidate's fault), so it is not locked out."""
        state = self.store.get(key)
        if state is not None and state.probe_until:
            self.store.update(key, lambda current: current._replace(probe_until=0.0))

    def seems_open(self, key: str) -> bool:
        """Whether ``key`` is cooling down as far as this process last saw (no store read)."""
        until = self.seen_open.get(key)
        return until is not None and self.clock() < until

    def reopens_at(self, key: str) -> float:
        """Return when ``key``'s cooldown ends (0 when closed)."""
        state = self.store.get(key)
        return state.open_until if state is not None else 0.0

    def probing(self, key: str) -> BreakerChange:
        """The change a half-open probe of ``key`` makes, once it is let through."""
        s = self.store.get(key) or _CLOSED
        return BreakerChange(key, "open", "half_open", s.failures, s.trips, s.open_until)

    def forget(self, keys: Collection[str]) -> None:
        """Drop what this process holds for keys not in ``keys`` (rows deleted or edited)."""
        for held in (self._passed, self.seen_open):
            for key in [k for k in list(held) if k not in keys]:
                held.pop(key, None)

    def passed(self, key: str, window: Window) -> None:
        """Count an answer of ``key`` while it has no state, in this process only (O(1))."""
        bucket = int(self.clock() * BUCKETS // window.seconds)
        # Threads may race on one count: a lost answer skews a rate, it never opens a breaker.
        try:
            self._passed[key][bucket] += 1
        except KeyError:
            counts = self._passed.setdefault(key, {})
            if len(counts) >= BUCKETS:
                for old in [at for at in list(counts) if at <= bucket - BUCKETS]:
                    counts.pop(old, None)
            counts[bucket] = counts.get(bucket, 0) + 1

    def success(self, key: str, window: Window | None = None) -> BreakerChange | None:
        """Record a success: the breaker closes and the consecutive failures are forgotten
        (failures still in ``window`` stay counted); return the change if it was not closed."""
        state = self.store.get(key)
        if state is None:
            if window is not None:
                self.passed(key, window)
            return None
        now = self.clock()
        passed = self._passed.pop(key, None)
        bucket = int(now * BUCKETS // window.seconds) if window is not None else 0
        kept: dict[int, int] = {}

        def close(current: BreakerState) -> BreakerState | None:
            kept.clear()  # a store may run this again after losing a race
            if window is None or current.open_until != 0.0:
                return None  # closed afresh, its window too
            newest, calls, errors = _slide(current, bucket, passed)
            calls[-1] += 1
            if not any(errors):  # nothing to trip on: the answers are counted here again
                kept.update({newest - BUCKETS + 1 + i: n for i, n in enumerate(calls) if n})
                return None
            return BreakerState(0, 0.0, 0, 0.0, newest, (*calls,), (*errors,))

        self.store.update(key, close)
        if kept:
            self._passed[key] = kept
        self.seen_open.pop(key, None)
        if state.open_until == 0.0:
            return None
        return BreakerChange(key, state_name(state, now), "closed")

    def failure(
        self,
        key: str,
        *,
        threshold: int,
        cooldown: Callable[[int], float],
        probe: bool = False,
        window: Window | None = None,
        hint: float = 0.0,
    ) -> BreakerChange | None:
        """Record a failure; open (or reopen) the breaker when due, and return that change.

        Only two failures open it for ``cooldown(trips)`` seconds, or the ``hint`` (the
        error's ``Retry-After``) when longer: the one that reaches ``threshold`` consecutive
        failures, or the ``window``'s failure rate, on a closed breaker; and a failed
        ``probe``. A call already in flight when the breaker opened that fails afterwards is
        old news, not a new trip: it changes nothing, but for a ``hint`` that ends later than
        the cooldown. A cooldown is never shortened.
        """
        now = self.clock()
        change: BreakerChange | None = None
        passed = self._passed.pop(key, None) if window is not None else None
        bucket = int(now * BUCKETS // window.seconds) if window is not None else 0

        def fail(state: BreakerState) -> BreakerState:
            nonlocal change
            change = None  # a store may run this again after losing a race
            failures = state.failures + 1
            counted = failures
            if probe:
                previous = "half_open"
            elif state.open_until != 0.0:  # open: a straggler from before it opened
                if hint and now + hint > state.open_until:
                    return state._replace(open_until=now + hint)
                return state
            else:
                tripped = failures >= threshold
                if window is not None:
                    newest, calls, errors = _slide(state, bucket, passed)
                    calls[-1] += 1
                    errors[-1] += 1
                    made, failed = sum(calls), sum(errors)
                    # A small tolerance: 0.3 * 10 is 3.0000000000000004.
                    if made >= window.min_calls and failed >= window.rate * made - 1e-9:
                        tripped, counted = True, max(failures, failed)
                    if not tripped:
                        return BreakerState(failures, 0.0, 0, 0.0, newest, (*calls,), (*errors,))
                elif not tripped:
                    return BreakerState(failures)
                previous = "closed"
            trips = state.trips + 1
            until = max(state.open_until, now + max(cooldown(trips), hint))
            new = BreakerState(failures, until, trips)
            change = BreakerChange(key, previous, "open", counted, trips, until)
            return new

        state = self.store.update(key, fail)
        if change is not None:
            self.seen_open[key] = change.reopens_at
        elif state is not None and state.open_until and key in self.seen_open:
            self.seen_open[key] = state.open_until  # lengthened by a Retry-After
        return change


class RedisBreakerStore:
    """A `BreakerStore` in Redis: one key per candidate, updated with optimistic transactions.

    Key ``<prefix><board key>`` (e.g. ``llmpool:breaker:row-1``) holds the `BreakerState` as
    JSON. An update WATCHes the key and commits with MULTI/EXEC, starting over when another
    replica changed it, up to `MAX_RACES` times: after a cooldown exactly one replica gets the
    probe. While Redis cannot be reached, or for a change that loses every race, the replica's
    own state is used instead, and the log says so once.

    Args:
        url: The Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
        prefix: Key prefix, so several pools (or tests) can share one Redis.
        ttl: Seconds a breaker key lives after its cooldown or probe lease ends.
        retry_after: Seconds to use local state after Redis failed before trying it again.
        client: An existing ``redis.Redis`` client instead of ``url``.

    Example:
        >>> store = RedisBreakerStore("redis://127.0.0.1:6379/0")  # doctest: +SKIP
        >>> pool = LLMPool(breaker_store=store)  # doctest: +SKIP
    """

    #: Lost WATCH races after which an update applies to local state.
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
        client = client if client is not None else redis_client(url, "Shared breakers")
        self.shared = Shared(client, what="circuit breakers", retry_after=retry_after)
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self.local = LocalBreakerStore()
        self._contention_reported = False

    def __repr__(self) -> str:
        return f"RedisBreakerStore(prefix={self.prefix!r})"

    @property
    def reachable(self) -> bool:
        """Whether Redis answered last time it was asked (else local state is in use)."""
        return self.shared.reachable

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key`` from Redis (local state while Redis is down)."""
        known, state = self.read(key)
        return state if known else self.local.get(key)

    def read(self, key: str) -> tuple[bool, BreakerState | None]:
        """Return whether Redis answered, and the state of ``key`` it holds: never this
        process's local state, so a health view can say "unknown" instead of "closed"."""
        name = self.prefix + key
        return self.shared.run(
            lambda redis: (True, _decode(redis.get(name))), lambda: (False, None)
        )

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically change the state of ``key`` (WATCH/MULTI; retried on a race)."""
        races: list[bool] = []

        def remote(redis: Any) -> BreakerState | None:
            name = self.prefix + key
            for _ in range(self.MAX_RACES):
                with redis.pipeline() as pipe:
                    try:
                        pipe.watch(name)
                        new = change(_decode(pipe.get(name)) or _CLOSED)
                        pipe.multi()
                        if new is None or new == _CLOSED:
                            pipe.delete(name)
                        else:
                            pipe.set(name, json.dumps(new._asdict()), ex=self._expiry(new))
                        pipe.execute()
                        return new
                    except Exception as error:
                        if type(error).__name__ != "WatchError":
                            raise
            races.append(True)
            return None

        new = self.shared.run(remote, lambda: self.local.update(key, change))
        if not races:
            return new
        if not self._contention_reported:
            self._contention_reported = True
            logger.warning(
                "llmpool lost %d Redis races in a row on a circuit breaker; this change "
                "applies to this replica's local state only",
                self.MAX_RACES,
                extra=log_fields("redis_contended", breaker=key),
            )
        return self.local.update(key, change)

    def _expiry(self, state: BreakerState) -> int:
        # Redis refuses EX 0, and a key must outlive the cooldown or probe lease it records.
        pending = max(state.open_until, state.probe_until) - time.time()
        return max(1, math.ceil(max(pending, 0.0) + self.ttl))


def _decode(raw: Any) -> BreakerState | None:
    if raw is None:
        return None
    fields = json.loads(raw)
    for name in ("calls", "errors"):  # JSON arrays, tuples in a state
        if name in fields:
            fields[name] = tuple(fields[name])
    return BreakerState(**fields)
