"""Routing: the order in which one call tries its candidates, decided in this one place.

Every call's walk asks for it anew. Every strategy keeps priority first and only reorders rows
of equal priority, so a failing row falls back to its siblings, then to the next priority:

- `PriorityRouting` (``priority``, the default): priority, then name, then id.
- `WeightedRouting` (``weighted``): a random order drawn by each row's ``weight`` (a row is
  first with probability weight / sum of the group's weights; weight 0 rows come last).
- `LatencyRouting` (``latency``): the lowest recent latency first (`RowStats`' weighted mean),
  exploring a little so that a row that recovered is noticed; a row never measured first.
- `LeastBusyRouting` (``least_busy``): the fewest calls in flight (in this process) first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from itertools import groupby, pairwise
from typing import Protocol, runtime_checkable

from llmpool.chain.stats import RowStats
from llmpool.contracts import Candidate
from llmpool.repository import sort_key
from llmpool.repository.scopes import STRATEGIES


@runtime_checkable
class Routing(Protocol):
    """Decides the order of the candidates for one call (a routing with ``fixed = True``
    always orders the same candidates the same way: a chain asks it once)."""

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Return ``candidates`` in the order to try them (the same candidates, none added)."""


class PriorityRouting:
    """Lower priority first; ties by name, then id (the order `get_llms_from_db` returns).

    The last input and its order are remembered: a chain asked about again costs one comparison.
    """

    __slots__ = ("_last",)
    fixed = True

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


Groups = tuple[tuple[Candidate, ...], ...]


class _GroupedRouting:
    # Priority order, then each group of equal priority reordered by `_arrange` at every call.
    # The groups of the last chain seen are remembered (the pool hands the same tuple).

    __slots__ = ("_last", "_priority")

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
        frozen = tuple(tuple(g) for _, g in groupby(ordered, key=lambda c: c.config.priority))
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
        return tuple(
            c for group in groups for c in (group if len(group) == 1 else self._arrange(group))
        )

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        return group


class WeightedRouting(_GroupedRouting):
    """Among rows of equal priority, a random order drawn by each row's ``weight``."""

    __slots__ = ("_random",)

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


class LatencyRouting(_GroupedRouting):
    """Among rows of equal priority, the lowest recent latency first; with probability
    ``explore`` a random row of the group first instead. ``stats`` must be among the chain's
    admission checks to be told about calls."""

    __slots__ = ("_explore", "_random", "stats")

    def __init__(
        self, stats: RowStats, explore: float = 0.05, rng: random.Random | None = None
    ) -> None:
        super().__init__()
        self.stats = stats
        self._explore = explore
        self._random = rng or random.Random()

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        latency = self.stats.latency  # no latency yet counts as 0: a new row is measured first
        explore = self._explore and self._random.random() < self._explore
        if len(group) == 2 and not explore:  # the common case, without a sort
            first, second = group
            if (latency(second) or 0.0) < (latency(first) or 0.0):
                return (second, first)
            return group
        ranked = sorted(group, key=lambda c: latency(c) or 0.0)
        if explore:
            pick = ranked.pop(self._random.randrange(len(ranked)))
            ranked.insert(0, pick)
        return ranked


class LeastBusyRouting(_GroupedRouting):
    """Among rows of equal priority, the fewest calls in flight first; ties in random order,
    so idle rows share the calls."""

    __slots__ = ("_random", "stats")

    def __init__(self, stats: RowStats, rng: random.Random | None = None) -> None:
        super().__init__()
        self.stats = stats
        self._random = (rng or random.Random()).random

    def _arrange(self, group: tuple[Candidate, ...]) -> Sequence[Candidate]:
        busy = self.stats.in_flight
        draw = self._random
        if len(group) == 2:  # the common case, without a sort
            first, second = group
            a, b = busy(first), busy(second)
            if b < a or (a == b and draw() < 0.5):
                return (second, first)
            return group
        return sorted(group, key=lambda c: (busy(c), draw()))


def make_routing(
    strategy: str, stats: RowStats, rng: random.Random | None = None
) -> PriorityRouting | _GroupedRouting:
    """Return the routing named ``strategy`` (a `ValueError` names the known ones otherwise)."""
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
