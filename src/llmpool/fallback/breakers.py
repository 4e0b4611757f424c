"""Circuit breakers: stop calling a candidate that keeps failing, then probe it once.

A breaker is closed until ``failure_threshold`` consecutive failures open it. While open, its
candidate is skipped with no network call. When the cooldown ends, exactly one caller gets a
half-open probe while concurrent callers keep skipping; the probe's success closes the breaker,
its failure reopens it with a longer cooldown.

The board holds the runtime state of each candidate under `breaker_key`: the row's id and
version, so an edited row (its version goes up) starts with a clean breaker while the state of
the version it replaced expires. State lives behind `BreakerStore`, so replicas can share it
(see ``llmpool.fallback.breakers_redis``).
Times are wall-clock seconds (`time.time`) so that several processes agree on them.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "Admission",
    "BreakerBoard",
    "BreakerChange",
    "BreakerState",
    "BreakerStore",
    "LocalBreakerStore",
    "breaker_key",
    "state_name",
]


def breaker_key(llm_id: str, version: int = 1) -> str:
    """Return the board key of one version of a row: ``"<id>:<version>"``.

    A row as first written (version 1) keeps its bare id, the key state had before versions
    were part of it, so breakers already recorded (in Redis too) stay in force.

    Example:
        >>> breaker_key("row-1"), breaker_key("row-1", 3)
        ('row-1', 'row-1:3')
    """
    return llm_id if version <= 1 else f"{llm_id}:{version}"


class BreakerState(NamedTuple):
    """One candidate's breaker (a tuple: cheap to make, compare and replace on the hot path).

    Attributes:
        failures: Consecutive failures.
        open_until: Wall-clock time the cooldown ends; 0 when closed.
        trips: How many times in a row it opened (grows the cooldown).
        probe_until: While a half-open probe is in flight, when its lease ends.
    """

    failures: int = 0
    open_until: float = 0.0
    trips: int = 0
    probe_until: float = 0.0


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
    """A breaker's change of state, as `BreakerBoard.failure` and `success` report it.

    Attributes:
        key: The board key.
        previous: ``"closed"``, ``"open"`` or ``"half_open"``.
        state: The new state.
        failures: Consecutive failures now counted.
        trips: Times in a row it opened.
        reopens_at: When the cooldown ends (wall clock); 0 when closed.
    """

    key: str
    previous: str
    state: str
    failures: int = 0
    trips: int = 0
    reopens_at: float = 0.0


class Admission(enum.Enum):
    """What the breaker says about calling a candidate now."""

    CLOSED = "closed"
    PROBE = "probe"
    OPEN = "open"


@runtime_checkable
class BreakerStore(Protocol):
    """Where breaker state lives. Each method is atomic for one key."""

    def get(self, key: str) -> BreakerState | None:
        """Return the state of ``key``, or ``None`` when it has none (closed)."""
        ...

    def update(
        self, key: str, change: Callable[[BreakerState], BreakerState | None]
    ) -> BreakerState | None:
        """Atomically replace the state of ``key`` with ``change(state)``; ``None`` deletes it.

        Returns:
            The new state.
        """
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

    def admit(self, key: str) -> Admission:
        """Return whether a call to ``key`` may go out now, taking the probe slot if due."""
        state = self.store.get(key)
        if state is None or state.open_until == 0.0:
            return Admission.CLOSED
        now = self.clock()
        if now < state.open_until or now < state.probe_until:
            return Admission.OPEN
        taken = False

        def take(current: BreakerState) -> BreakerState:
            nonlocal taken
            taken = False  # a store may run this again after losing a race
            if current.open_until and now >= current.open_until and now >= current.probe_until:
                taken = True
                return current._replace(probe_until=now + self.probe_lease)
            return current

        self.store.update(key, take)
        return Admission.PROBE if taken else Admission.OPEN

    def force_probe(self, key: str) -> bool:
        """Take the probe slot of ``key`` even though its cooldown has not ended.

        Returns:
            Whether the slot was taken: ``False`` while another caller's probe is in flight.
        """
        now = self.clock()
        taken = False

        def take(current: BreakerState) -> BreakerState:
            nonlocal taken
            taken = False  # a store may run this again after losing a race
            if now >= current.probe_until:
                taken = True
                return current._replace(probe_until=now + self.probe_lease)
            return current

        self.store.update(key, take)
        return taken

    def release(self, key: str) -> None:
        """Give back a probe slot whose call ended without a verdict on the candidate.

        A probe cancelled, interrupted, or failed for a reason that is not the candidate's
        (a bug in the caller, a context-length error) must not keep the candidate locked out
        until the probe lease ends.
        """
        state = self.store.get(key)
        if state is not None and state.probe_until:
            self.store.update(key, lambda current: current._replace(probe_until=0.0))

    def is_open(self, key: str) -> bool:
        """Return whether ``key`` is cooling down, without taking a probe slot."""
        state = self.store.get(key)
        if state is None or state.open_until == 0.0:
            return False
        now = self.clock()
        return now < state.open_until or now < state.probe_until

    @property
    def shared(self) -> bool:
        """Whether the state lives outside this process (e.g. Redis), seen by every replica."""
        return not isinstance(self.store, LocalBreakerStore)

    def state(self, key: str) -> tuple[str, BreakerState | None]:
        """Return the state's name (`state_name`) and the state of ``key``: only a look."""
        state = self.store.get(key)
        return state_name(state, self.clock()), state

    def reopens_at(self, key: str) -> float:
        """Return when ``key``'s cooldown ends (0 when closed)."""
        state = self.store.get(key)
        return state.open_until if state is not None else 0.0

    def success(self, key: str) -> BreakerChange | None:
        """Record a success: the breaker closes.

        Returns:
            The change, when the breaker was open or half-open; ``None`` when it was closed.
        """
        state = self.store.get(key)
        if state is None:
            return None
        self.store.update(key, lambda _state: None)
        if state.open_until == 0.0:
            return None
        return BreakerChange(key, state_name(state, self.clock()), "closed")

    def failure(
        self,
        key: str,
        *,
        threshold: int,
        cooldown: Callable[[int], float],
        probe: bool = False,
    ) -> BreakerChange | None:
        """Record a failure; open (or reopen) the breaker when due.

        Only two failures move the cooldown: the one that reaches ``threshold`` on a closed
        breaker, and a failed probe. A call that was already in flight when the breaker opened
        and fails afterwards adds nothing: it is old news, not a new trip.

        Args:
            key: The candidate.
            threshold: Consecutive failures that open a closed breaker.
            cooldown: Trips -> cooldown seconds.
            probe: Whether the failed call held the probe slot (half-open, or forced).

        Returns:
            The change when the breaker opened (from closed, or from half-open after a failed
            probe); ``None`` otherwise.
        """
        now = self.clock()
        change: BreakerChange | None = None

        def fail(state: BreakerState) -> BreakerState:
            nonlocal change
            change = None  # a store may run this again after losing a race
            if probe:
                trips = state.trips + 1
                new = BreakerState(state.failures + 1, now + cooldown(trips), trips)
                change = BreakerChange(
                    key, "half_open", "open", new.failures, trips, new.open_until
                )
                return new
            if state.open_until != 0.0:  # open: a straggler from before it opened
                return state
            failures = state.failures + 1
            if failures >= threshold:
                trips = state.trips + 1
                new = BreakerState(failures, now + cooldown(trips), trips)
                change = BreakerChange(key, "closed", "open", failures, trips, new.open_until)
                return new
            return BreakerState(failures)

        self.store.update(key, fail)
        return change
