"""An experiment's report: per arm, its calls, errors, cost and latency (the usage of the
calls tagged with the arm, `llmpool.usage.report`) and each metric's mean with a 95 %
confidence interval (`llmpool.usage.feedback`); and weights drawn from the arms' results by
Thompson sampling.

Intervals: a metric whose every value is 0 or 1 is a rate, and its interval is Wilson's score
interval (sound near 0 and 1 and for few values); any other metric's is the normal
approximation, mean ± 1.96 standard errors (sample standard deviation; none below 2 values),
which is rough below about 30 values. Calls and errors count attempts, as ``llmpool usage``
does: a call that fell back from a failing row counts that attempt as an error of its arm.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmpool.usage.report import money_text

if TYPE_CHECKING:
    from llmpool.repository.experiments import Experiment
    from llmpool.usage.feedback import MetricSums
    from llmpool.usage.report import UsageRow

__all__ = ["ArmReport", "MetricSummary", "arm_reports", "interval", "thompson_weights"]

#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one arm: ``n`` values, their ``mean``, and the 95 % interval ``low`` to
    ``high`` (``None`` with fewer than 2 values of a non-rate metric), by ``method``
    (``"wilson"`` or ``"normal"``)."""

    metric: str
    n: int
    mean: float
    low: float | None
    high: float | None
    method: str


@dataclass(frozen=True)
class ArmReport:
    """One arm: its weight, the calls (attempts) tagged with it, their errors and error rate,
    cost and answers' latency (ms), and its metrics."""

    arm: str
    weight: float
    calls: int = 0
    errors: int = 0
    error_rate: float | None = None
    cost: Decimal = Decimal(0)
    p50_ms: float | None = None
    p95_ms: float | None = None
    metrics: tuple[MetricSummary, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """Return the arm as a JSON-ready dict (``cost`` as decimal text)."""
        return {**asdict(self), "cost": money_text(self.cost)}


def interval(sums: MetricSums, z: float = Z95) -> tuple[float | None, float | None]:
    """Return the 95 % interval of a metric's mean (see the module).

    Example:
        >>> from llmpool.usage.feedback import MetricSums
        >>> low, high = interval(MetricSums("a", "thumbs_up", 10, 8.0, 8.0, True))
        >>> round(low, 3), round(high, 3)
        (0.49, 0.943)
    """
    n = sums.n
    if n == 0:
        return None, None
    mean = sums.total / n
    if sums.binary:  # Wilson's score interval
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    if n < 2:
        return None, None
    variance = max(0.0, (sums.squares - n * mean * mean) / (n - 1))
    half = z * math.sqrt(variance / n)
    return mean - half, mean + half


def arm_reports(
    experiment: Experiment, usage: Sequence[UsageRow], feedback: Sequence[MetricSums]
) -> list[ArmReport]:
    """Return one report per arm of ``experiment``, in its order, from the scope's usage by
    tag ``arm`` and its feedback summed per arm and metric (an arm no longer defined, whose
    calls or feedback are in the window, is reported after them with weight 0)."""
    by_tag = {row.tag: row for row in usage if row.tag is not None}
    weights = {arm.name: arm.weight for arm in experiment.arms}
    names = list(weights)
    names += sorted(({*by_tag} | {s.arm for s in feedback}) - set(weights))
    reports = []
    for name in names:
        row = by_tag.get(name)
        metrics = tuple(
            MetricSummary(s.metric, s.n, s.total / s.n, *interval(s), _method(s))
            for s in feedback
            if s.arm == name and s.n
        )
        if row is None:
            reports.append(ArmReport(name, weights.get(name, 0), metrics=metrics))
            continue
        reports.append(
            ArmReport(
                name,
                weights.get(name, 0),
                row.calls,
                row.errors,
                row.errors / row.calls if row.calls else None,
                row.cost,
                row.p50_ms,
                row.p95_ms,
                metrics,
            )
        )
    return reports


def _method(sums: MetricSums) -> str:
    return "wilson" if sums.binary else "normal"


def thompson_weights(
    experiment: Experiment,
    feedback: Sequence[MetricSums],
    metric: str,
    *,
    draws: int = 10_000,
    rng: random.Random | None = None,
) -> dict[str, float]:
    """Return each arm's new weight: how often its rate of the 0/1 ``metric`` is the highest in
    ``draws`` draws from the arms' Beta(1 + successes, 1 + failures) posteriors (Thompson
    sampling), as a percentage, at least 1 (every arm keeps being explored).

    Raises:
        ValueError: ``metric`` has a value other than 0 or 1 for some arm.

    Example:
        >>> from llmpool.repository.experiments import check_experiment
        >>> from llmpool.usage.feedback import MetricSums
        >>> e = check_experiment("s", {"arms": {"a": {"rows": ["A"]}, "b": {"rows": ["B"]}}})
        >>> w = thompson_weights(e, [MetricSums("a", "up", 100, 90.0, 90.0, True),
        ...     MetricSums("b", "up", 100, 10.0, 10.0, True)], "up", rng=random.Random(1))
        >>> w["a"] > 90 and w["b"] == 1
        True
    """
    rng = rng or random.Random()
    counts: dict[str, tuple[float, float]] = {arm.name: (0.0, 0.0) for arm in experiment.arms}
    for sums in feedback:
        if sums.metric != metric or sums.arm not in counts:
            continue
        if not sums.binary:
            msg = f"metric {metric!r} has values other than 0 and 1: Thompson sampling needs a rate"
            raise ValueError(msg)
        counts[sums.arm] = (sums.total, sums.n - sums.total)
    wins = dict.fromkeys(counts, 0)
    for _ in range(draws):
        best = max(counts, key=lambda arm: rng.betavariate(1 + counts[arm][0], 1 + counts[arm][1]))
        wins[best] += 1
    return {arm: max(1.0, round(100 * won / draws, 1)) for arm, won in wins.items()}
