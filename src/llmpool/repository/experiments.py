"""A scope's experiment (``llm_scopes.experiment``, migration 0009): named arms of its rows,
each with a weight, and whether a caller keeps its arm (``sticky``).

Stored as a JSON object, ``{"arms": {"control": {"rows": ["GPT-4o"], "weight": 9},
"candidate": {"rows": ["Claude"], "weight": 1}}, "sticky": "session"}``: rows by name within
the scope, weights above 0, ``sticky`` ``null`` (an arm drawn per call), ``"session"`` (per
``session_key``) or ``"tag:NAME"`` (per value of the call's tag NAME). `check_experiment` checks
one before it is written, naming the field at fault; `stored_experiment` reads one back and
never raises (a definition raw SQL broke serves the scope by priority, logged).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from llmpool.contracts import log_fields
from llmpool.errors import InvalidConfigError, shorten, visible

logger = logging.getLogger(__name__)

__all__ = ["Arm", "Experiment", "check_experiment", "stored_experiment"]

#: At most this many arms per experiment.
MAX_ARMS = 16
#: The largest weight an arm may have.
MAX_WEIGHT = 1_000_000

#: An arm's name: it is the value of the call's ``arm`` tag.
_ARM = re.compile(r"[a-z][a-z0-9_.-]{0,39}\Z")
_TAG = re.compile(r"tag:[a-z][a-z0-9_.-]{0,39}\Z")


@dataclass(frozen=True)
class Arm:
    """One arm: its ``name``, the ``rows`` it serves with (names in the scope) and ``weight``."""

    name: str
    rows: tuple[str, ...]
    weight: float


@dataclass(frozen=True)
class Experiment:
    """A scope's arms and how a caller keeps its arm (``sticky``: ``None``, ``"session"`` or
    ``"tag:NAME"``).

    Example:
        >>> e = check_experiment("global", {"arms": {"a": {"rows": ["A"], "weight": 3},
        ...     "b": {"rows": ["B"]}}, "sticky": "tag:user"}, rows=["A", "B"])
        >>> [(arm.name, arm.weight) for arm in e.arms], e.sticky
        ([('a', 3), ('b', 1)], 'tag:user')
    """

    arms: tuple[Arm, ...]
    sticky: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the definition as stored (and as `llmpool export` writes it)."""
        arms = {a.name: {"rows": list(a.rows), "weight": a.weight} for a in self.arms}
        return {"arms": arms, "sticky": self.sticky}


def check_experiment(
    scope: str, given: Mapping[str, Any] | Experiment, *, rows: Collection[str] | None = None
) -> Experiment:
    """Return ``given`` checked as `Experiment`; ``rows``: the names of the scope's rows, which
    the arms must name (``None``: not checked). Raises `InvalidConfigError` naming the field
    (``experiment.arms.NAME.rows``, ``experiment.sticky``, ...)."""
    if isinstance(given, Experiment):
        given = given.as_dict()
    where = f"the experiment of scope {shorten(visible(scope))!r}"
    if not isinstance(given, Mapping):
        msg = f"{where} must be an object with arms, not {type(given).__name__}"
        raise InvalidConfigError(msg, field="experiment")
    unknown = sorted(set(given) - {"arms", "sticky"})
    if unknown:
        key = shorten(visible(str(unknown[0])), 40)
        msg = f"{where} has an unknown key {key!r}: it takes arms, sticky"
        raise InvalidConfigError(msg, field=f"experiment.{key}")
    arms_given = given.get("arms")
    if not isinstance(arms_given, Mapping) or not arms_given:
        msg = f'{where} needs arms: {{"control": {{"rows": ["row name"], "weight": 1}}, ...}}'
        raise InvalidConfigError(msg, field="experiment.arms")
    if len(arms_given) > MAX_ARMS:
        msg = f"{where} has {len(arms_given)} arms; at most {MAX_ARMS} are allowed"
        raise InvalidConfigError(msg, field="experiment.arms")
    arms: list[Arm] = []
    seen: dict[str, str] = {}  # row name -> its arm
    for name, arm in arms_given.items():
        if not isinstance(name, str) or not _ARM.match(name):
            msg = (
                f"{where}: arm name {shorten(visible(str(name)), 40)!r} is not lower case "
                "letters, digits, '_', '.' or '-' starting with a letter (at most 40)"
            )
            raise InvalidConfigError(msg, field="experiment.arms")
        field = f"experiment.arms.{name}"
        if not isinstance(arm, Mapping) or set(arm) - {"rows", "weight"}:
            msg = f'{where}: arm {name!r} must be {{"rows": [...], "weight": N}}'
            raise InvalidConfigError(msg, field=field)
        names = arm.get("rows")
        if isinstance(names, str):
            names = [names]
        if not isinstance(names, list | tuple) or not names:
            msg = f"{where}: arm {name!r} must list at least one row by name"
            raise InvalidConfigError(msg, field=f"{field}.rows")
        for row in names:
            if not isinstance(row, str) or not row.strip():
                msg = f"{where}: arm {name!r} lists a row that is not a name: {row!r}"
                raise InvalidConfigError(msg, field=f"{field}.rows")
            if rows is not None and row not in rows:
                msg = (
                    f"{where}: arm {name!r} names {shorten(visible(row))!r}, which is no row of "
                    "the scope (add it first, or fix the name)"
                )
                raise InvalidConfigError(msg, field=f"{field}.rows")
            if row in seen:
                msg = (
                    f"{where}: row {shorten(visible(row))!r} is in arms {seen[row]!r} and {name!r}"
                )
                raise InvalidConfigError(msg, field=f"{field}.rows")
            seen[row] = name
        weight = arm.get("weight", 1)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or not 0 < weight <= MAX_WEIGHT
        ):
            msg = (
                f"{where}: arm {name!r} has weight {weight!r}; it must be above 0, at most "
                f"{MAX_WEIGHT}"
            )
            raise InvalidConfigError(msg, field=f"{field}.weight")
        arms.append(Arm(name, tuple(names), weight))
    sticky = given.get("sticky")
    if sticky is not None and (
        not isinstance(sticky, str) or (sticky != "session" and not _TAG.match(sticky))
    ):
        msg = f"{where}: sticky must be null, 'session' or 'tag:NAME', not {sticky!r}"
        raise InvalidConfigError(msg, field="experiment.sticky")
    return Experiment(tuple(arms), sticky)


def stored_experiment(scope: str, stored: Any) -> Experiment | None:
    """Return the stored definition of ``scope`` (JSON text or an object), or ``None`` when
    there is none or it is invalid (logged: ``invalid_experiment``)."""
    if stored is None:
        return None
    try:
        if isinstance(stored, str | bytes):
            import json

            stored = json.loads(stored)
        return check_experiment(scope, stored)
    except (ValueError, InvalidConfigError) as error:
        logger.warning(
            "llmpool serves scope %r by priority: its stored experiment is invalid (%s); fix: "
            "llmpool experiment set SCOPE ...",
            shorten(visible(scope)),
            str(error)[:200],
            extra=log_fields("invalid_experiment", scope=shorten(scope)),
        )
        return None
