"""Routing: the order in which one call tries its candidates, decided in this one place.

A `Routing` turns the candidates of a chain into the order a call tries them. The pool orders a
scope's chain with it, and every call's walk asks it again (a routing may depend on the moment:
weights, latency, load). `PriorityRouting` is the default rule: priority, then name, then id.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmpool.repository import sort_key

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate

__all__ = ["PriorityRouting", "Routing"]


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
