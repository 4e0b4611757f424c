"""Routing: the order in which one call tries its candidates, decided in this one place.

A `Routing` turns the candidates of a chain into the order a call tries them. The pool orders a
scope's chain with it, and every call's walk asks it again (a routing may depend on the moment:
weights, latency, load). Every strategy keeps priority first: it only reorders rows of equal
priority, so a failing row falls back to its siblings, then to the next priority.

- `PriorityRouting` (``priority``, the default): priority, then name, then id.
- `WeightedRouting` (``weighted``): among equal priority, a random order drawn by each row's
  ``weight`` (a row is first with probability weight / sum of the group's weights; weight 0
  rows come last), from a seedable random generator.
- `LatencyRouting` (``latency``): among equal priority, the lowest recent latency first (an
  exponentially weighted mean of successful calls), with a little exploration so that a row
  that recovered is noticed; a row never measured is tried first.
- `LeastBusyRouting` (``least_busy``): among equal priority, the fewest calls in flight first.

The latency and in-flight figures come from `RoutingStats`, an admission check
(`llmpool.fallback.admission`) told about every attempt, in this process.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmpool.fallback.admission import CheckBase
from llmpool.repository import sort_key
from llmpool.repository.scopes import STRATEGIES

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate

__all__ = [
    "STRATEGIES",
    "LatencyRouting",
    "LeastBusyRouting",
    "LiveRouting",
    "PriorityRouting",
    "Routing",
    "RoutingStats",
    "WeightedRouting",
    "make_routing",
]


@runtime_checkable
class Routing(Protocol):
    """Decides the order of the candidates for one call."""

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Return ``candidates`` in the order to try them (the same candidates, none added)."""
        ...


class PriorityRouting:
    """Lower priority first; ties by name, then id (the order `get_llms_from_db` returns).

    An input already in that order comes back as it is. The last input and its order are
    remembered, so a chain asked about again (the same sequence object) costs one comparison.

    Example:
        >>> from llmpool.fallback.walk import Candidate
        >>> from llmpool.models import LLMConfig
        >>> rows = [LLMConfig(id=i, name=n, provider="fake", model_name="m", priority=p)
        ...         for i, n, p in [("1", "b", 5), ("2", "a", 5), ("3", "c", 1)]]
        >>> [c.config.name for c in PriorityRouting().order([Candidate(r) for r in rows])]
        ['c', 'a', 'b']
    """

    __slots__ = ("_last",)
    name = "priority"

    def __init__(self) -> None:
        self._last: tuple[Sequence[Candidate], Sequence[Candidate]] | None = None

    def __repr__(self) -> str:
        return "PriorityRouting()"

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Return ``candidates`` by priority, name, then id; the input itself when in order."""
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and last[0] is candidates:
            return last[1]
        keys = [sort_key(candidate.config) for candidate in candidates]
        ordered: Sequence[Candidate] = candidates
        if any(later < earlier for earlier, later in pairwise(keys)):
            ordered = tuple(sorted(candidates, key=lambda candidate: sort_key(candidate.config)))
        self._last = (candidates, ordered)
        return ordered


Groups = tuple[tuple["Candidate", ...], ...]


class _GroupedRouting:
    # Priority order, then each group of equal priority reordered by `_arrange` at every call.
    # The groups of the last chain seen are remembered (the pool hands the same tuple).

    __slots__ = ("_last", "_priority")
    name = "priority"

    def __init__(self) -> None:
        self._priority = PriorityRouting()
        self._last: tuple[Sequence[Candidate], Groups, bool] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _groups(self, candidates: Sequence[Candidate]) -> tuple[Groups, bool]:
        last = self._last
        if last is not None and last[0] is candidates:
            return last[1], last[2]
        ordered = self._priority.order(candidates)
        groups: list[list[Candidate]] = []
        for candidate in ordered:
            if groups and groups[-1][0].config.priority == candidate.config.priority:
                groups[-1].append(candidate)
            else:
                groups.append([candidate])
        frozen = tuple(tuple(group) for group in groups)
        shared = any(len(group) > 1 for group in frozen)
        self._last = (candidates, frozen, shared)
        return frozen, shared

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Return ``candidates`` by priority, each group of equal priority in this strategy's
        order for this call."""
        groups, shared = self._groups(candidates)
        if not shared:
            return self._priority.order(candidates)
        if len(groups) == 1:  # one priority: the whole chain is the group
            return self._arrange(groups[0])
        out: list[Candidate] = []
        for group in groups:
            if len(group) == 1:
                out.append(group[0])
            else:
                out.extend(self._arrange(group))
        return tuple(out)

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        return group


class WeightedRouting(_GroupedRouting):
    """Among rows of equal priority, a random order drawn by each row's ``weight``.

    Args:
        rng: The random generator (a seeded `random.Random` for repeatable orders).

    Example:
        >>> import random
        >>> from llmpool.fallback.walk import Candidate
        >>> from llmpool.models import LLMConfig
        >>> rows = [LLMConfig(id=n, name=n, provider="fake", model_name="m", weight=w)
        ...         for n, w in [("a", 3), ("b", 1)]]
        >>> routing = WeightedRouting(random.Random(7))
        >>> chain = tuple(Candidate(r) for r in rows)
        >>> firsts = [routing.order(chain)[0].config.name for _ in range(1000)]
        >>> 700 < firsts.count("a") < 800
        True
    """

    __slots__ = ("_random",)
    name = "weighted"

    def __init__(self, rng: random.Random | None = None) -> None:
        super().__init__()
        self._random = (rng or random.Random()).random

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        draw = self._random
        if len(group) == 2:  # the common case, without a sort
            first, second = group
            a, b = first.config.weight, second.config.weight
            if a + b == 0:
                return group
            return group if draw() * (a + b) < a else (second, first)
        # A weighted random permutation (Efraimidis-Spirakis): each row's key is u ** (1 / w);
        # the largest key first. Weight 0 rows come last, in priority order.
        keyed = [
            (draw() ** (1.0 / w) if (w := c.config.weight) > 0 else -1.0, -i, c)
            for i, c in enumerate(group)
        ]
        keyed.sort(reverse=True, key=lambda item: (item[0], item[1]))
        return [c for _, _, c in keyed]


class RoutingStats(CheckBase):
    """Each row's recent latency and calls in flight, in this process: an admission check.

    In flight counts up when a call is admitted and down when it ends; the latency of each
    successful call moves the row's exponentially weighted mean by ``alpha``. Keyed by row id
    and version (an edited row starts afresh).

    Args:
        alpha: The weight of the newest latency in the mean (0 < alpha <= 1).

    Example:
        >>> from llmpool.fallback.walk import Candidate
        >>> from llmpool.models import LLMConfig
        >>> c = Candidate(LLMConfig(id="a", name="a", provider="fake", model_name="m"))
        >>> stats = RoutingStats(alpha=0.5)
        >>> stats.admit(c), stats.in_flight(c)
        (None, 1)
        >>> stats.record(c, ok=True, latency=0.2, usage=None)
        >>> stats.in_flight(c), stats.latency(c)
        (0, 0.2)
    """

    __slots__ = ("_alpha", "_in_flight", "_latency", "_lock")

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0.0 < alpha <= 1.0:
            msg = f"RoutingStats: alpha must be in (0, 1], got {alpha!r}"
            raise ValueError(msg)
        self._alpha = alpha
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._latency: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"RoutingStats(rows={len(self._latency)}, in_flight={sum(self._in_flight.values())})"

    def admit(self, candidate: Candidate) -> str | None:
        """Count the call in flight; never refuses."""
        key = candidate.key
        lock = self._lock
        lock.acquire()
        in_flight = self._in_flight
        in_flight[key] = in_flight.get(key, 0) + 1
        lock.release()
        return None

    def release(self, candidate: Candidate) -> None:
        """The admitted call was not made: it is no longer in flight."""
        self._done(candidate.key)

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """The call ended: count it out, and fold a success's latency into the mean."""
        key = candidate.key
        lock = self._lock
        lock.acquire()  # nothing below can raise: no try (it costs on every call)
        in_flight = self._in_flight  # _count_out, inlined for the same reason
        left = in_flight.get(key, 0) - 1
        if left > 0:
            in_flight[key] = left
        else:
            in_flight.pop(key, None)
        if ok:
            means = self._latency
            mean = means.get(key)
            means[key] = latency if mean is None else mean + self._alpha * (latency - mean)
        lock.release()

    def _done(self, key: str) -> None:
        with self._lock:
            self._count_out(key)

    def _count_out(self, key: str) -> None:
        # Under the lock.
        in_flight = self._in_flight
        left = in_flight.get(key, 0) - 1
        if left > 0:
            in_flight[key] = left
        else:
            in_flight.pop(key, None)

    def in_flight(self, candidate: Candidate) -> int:
        """Calls to ``candidate`` in flight now, in this process."""
        return self._in_flight.get(candidate.key, 0)

    def latency(self, candidate: Candidate) -> float | None:
        """The mean latency of ``candidate``'s recent successful calls (seconds), if any."""
        return self._latency.get(candidate.key)

    def forget(self, candidate: Candidate) -> None:
        """Drop ``candidate``'s latency (e.g. to measure it afresh)."""
        with self._lock:
            self._latency.pop(candidate.key, None)


class LatencyRouting(_GroupedRouting):
    """Among rows of equal priority, the lowest recent latency first, exploring a little.

    A row with no measured latency yet comes first (so it gets measured). With probability
    ``explore``, a call tries a random row of the group first instead, so that a row whose
    latency improved is noticed.

    Args:
        stats: Where the latencies come from (the pool's; it must be among the chain's
            admission checks to be told about calls).
        explore: The share of calls that try a random row of the group first.
        rng: The random generator.
    """

    __slots__ = ("_explore", "_random", "stats")
    name = "latency"

    def __init__(
        self, stats: RoutingStats, explore: float = 0.05, rng: random.Random | None = None
    ) -> None:
        super().__init__()
        self.stats = stats
        self._explore = explore
        self._random = rng or random.Random()

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        latency = self.stats._latency  # read without the lock: a dict get is atomic
        explore = self._explore and self._random.random() < self._explore
        if len(group) == 2 and not explore:  # the common case, without a sort
            first, second = group
            if latency.get(second.key, 0.0) < latency.get(first.key, 0.0):
                return (second, first)
            return group
        ranked = sorted(group, key=lambda c: latency.get(c.key, 0.0))
        if explore:
            pick = ranked.pop(self._random.randrange(len(ranked)))
            ranked.insert(0, pick)
        return ranked


class LeastBusyRouting(_GroupedRouting):
    """Among rows of equal priority, the fewest calls in flight (in this process) first.

    Ties keep a random order, so idle rows share the calls.

    Args:
        stats: Where the in-flight counts come from (see `LatencyRouting`).
        rng: The random generator for ties.
    """

    __slots__ = ("_random", "stats")
    name = "least_busy"

    def __init__(self, stats: RoutingStats, rng: random.Random | None = None) -> None:
        super().__init__()
        self.stats = stats
        self._random = (rng or random.Random()).random

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        busy = self.stats._in_flight
        draw = self._random
        if len(group) == 2:  # the common case, without a sort
            first, second = group
            a, b = busy.get(first.key, 0), busy.get(second.key, 0)
            if b < a or (a == b and draw() < 0.5):
                return (second, first)
            return group
        return sorted(group, key=lambda c: (busy.get(c.key, 0), draw()))


def make_routing(
    strategy: str, stats: RoutingStats, rng: random.Random | None = None
) -> PriorityRouting | _GroupedRouting:
    """Return the routing named ``strategy`` (one of `STRATEGIES`).

    Raises:
        ValueError: An unknown strategy, listing the known ones.

    Example:
        >>> make_routing("weighted", RoutingStats()).name
        'weighted'
    """
    if strategy == "priority":
        return PriorityRouting()
    if strategy == "weighted":
        return WeightedRouting(rng)
    if strategy == "latency":
        return LatencyRouting(stats, rng=rng)
    if strategy == "least_busy":
        return LeastBusyRouting(stats, rng=rng)
    msg = f"unknown routing strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}"
    raise ValueError(msg)


class LiveRouting:
    """The routing of a scope as it is now: asks ``current`` at every call.

    Args:
        current: Returns the routing to use now (the pool's lookup of the scope's strategy).
    """

    __slots__ = ("current",)

    def __init__(self, current: Callable[[], Routing]) -> None:
        self.current = current

    def __repr__(self) -> str:
        return f"LiveRouting({self.current()!r})"

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Order ``candidates`` by the routing in force now."""
        return self.current().order(candidates)
