"""The ``experiment`` strategy: each call is served by one arm of the scope's experiment
(`llmpool.repository.experiments`), the arm's rows first by priority, then the scope's other
rows by priority as its fallback.

The arm is drawn by weight: from a hash of the call's ``session_key`` (``sticky: session``) or
of its tag's value (``sticky: tag:NAME``), so that a caller keeps its arm on every replica
without shared state; at random otherwise (or when the call has no key or tag). A session's
row (`llmpool.chain.affinity`) goes first only when it is one of the arm's rows. The arm
becomes the call's tag ``arm`` (usage, budgets and spans see it), and the answer's metadata
carries ``arm`` and a fresh ``call_id``, which `LLMPool.feedback` takes.
"""

from __future__ import annotations

import hashlib
import os
import random
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import TYPE_CHECKING

from llmpool.chain.routing import PriorityRouting
from llmpool.tags import Tags

if TYPE_CHECKING:
    from llmpool.contracts import Candidate
    from llmpool.repository.experiments import Experiment

__all__ = ["ExperimentRouting", "Trial", "arm_fraction"]

#: Told of each answered experiment call: (call_id, scope, arm, llm_id).
CallNote = Callable[[str, str, str, str], None]

#: A call's session as the walk holds it: (affinity, key, pinned row id).
_Session = tuple[object, str, "str | None"]


def arm_fraction(scope: str, value: str) -> float:
    """Return where ``value`` (a session key, a tag's value) falls in [0, 1) for ``scope``'s
    experiment: the same on every replica and run.

    Example:
        >>> arm_fraction("global", "user-1") == arm_fraction("global", "user-1")
        True
    """
    digest = hashlib.blake2b(f"{scope}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Trial:
    """One call's place in an experiment: its ``arm`` and ``call_id``; `served` notes which
    row answered, for the feedback given later."""

    __slots__ = ("arm", "call_id", "routing")

    def __init__(self, routing: ExperimentRouting, arm: str) -> None:
        self.routing = routing
        self.arm = arm
        self.call_id = os.urandom(16).hex()  # 128 random bits: unique, and guessed by nobody

    def served(self, llm_id: str) -> None:
        """Note that the row ``llm_id`` answered this call."""
        note = self.routing.note
        if note is not None:
            note(self.call_id, self.routing.scope, self.arm, llm_id)


class ExperimentRouting:
    """Routes a scope's calls by its `Experiment` (see the module); as a `Routing`, `order`
    draws an arm at random.

    Example:
        >>> from llmpool.repository.experiments import check_experiment
        >>> e = check_experiment("s", {"arms": {"a": {"rows": ["A"]}}})
        >>> ExperimentRouting("s", e).choose(None, None)
        'a'
    """

    __slots__ = ("_bounds", "_last", "_priority", "_random", "_tagged", "experiment", "note",
                 "scope")  # fmt: skip

    def __init__(
        self,
        scope: str,
        experiment: Experiment,
        rng: random.Random | None = None,
        note: CallNote | None = None,
    ) -> None:
        self.scope = scope
        self.experiment = experiment
        self.note = note
        self._random = (rng or random.Random()).random
        self._priority = PriorityRouting()
        weights = [arm.weight for arm in experiment.arms]
        total = sum(weights)
        self._bounds = [w / total for w in accumulate(weights)][:-1]  # the last arm takes the rest
        self._tagged = {
            arm.name: Tags((("arm", arm.name),), f"arm={arm.name}") for arm in experiment.arms
        }
        self._last: tuple[Sequence[Candidate], dict[str, tuple[Candidate, ...]]] | None = None

    def __repr__(self) -> str:
        arms = ", ".join(f"{a.name}={a.weight:g}" for a in self.experiment.arms)
        return f"ExperimentRouting({arms}, sticky={self.experiment.sticky})"

    def choose(self, session_key: str | None, tags: Tags | None) -> str:
        """Return the arm of a call with ``session_key`` and ``tags``."""
        experiment = self.experiment
        sticky = experiment.sticky
        by = None
        if sticky == "session":
            by = session_key
        elif sticky is not None and tags is not None:
            by = tags.get(sticky[4:])
        at = self._random() if by is None else arm_fraction(self.scope, by)
        return experiment.arms[bisect_right(self._bounds, at)].name

    def _orders(self, candidates: Sequence[Candidate]) -> dict[str, tuple[Candidate, ...]]:
        # Each arm's order for this chain: its rows by priority, then the others by priority.
        last = self._last
        if last is not None and last[0] is candidates:
            return last[1]
        ordered = self._priority.order(candidates)
        orders = {}
        for arm in self.experiment.arms:
            mine = tuple(c for c in ordered if c.config.name in arm.rows)
            orders[arm.name] = (*mine, *(c for c in ordered if c.config.name not in arm.rows))
        self._last = (candidates, orders)
        return orders

    def order(self, candidates: Sequence[Candidate]) -> Sequence[Candidate]:
        """Return ``candidates`` in the order of an arm drawn at random by weight."""
        return self._orders(candidates)[self.choose(None, None)]

    def route(
        self, candidates: Sequence[Candidate], session: _Session | None, tags: Tags | None
    ) -> tuple[Sequence[Candidate], Tags, Trial]:
        """Return a call's order, its tags with its ``arm``, and its `Trial`."""
        arm = self.choose(None if session is None else session[1], tags)
        order: Sequence[Candidate] = self._orders(candidates)[arm]
        pinned = None if session is None else session[2]
        if pinned is not None:
            rows = next(a.rows for a in self.experiment.arms if a.name == arm)
            for index, candidate in enumerate(order):
                if candidate.config.id == pinned:
                    if index and candidate.config.name in rows:
                        order = (candidate, *order[:index], *order[index + 1 :])
                    break
        tagged = self._tagged[arm] if tags is None else tags.with_tag("arm", arm)
        return order, tagged, Trial(self, arm)
