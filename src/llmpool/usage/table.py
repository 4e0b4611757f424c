"""Where flushed usage goes: `UsageBucket`, what one call may add to it, and the tables.

`llmpool.usage.sql` is the ``llm_usage`` table every replica shares; `MemoryUsageTable` serves
pools over a store that is not SQL. `call_counts` bounds what one call adds, so that summed
the counts never overflow a column. An answer's latency is counted in a fixed histogram
(`LATENCY_BOUNDS_MS`), which adds up across replicas and minutes: `latency_of` reads the
mean, p50 and p95 of any sum of buckets.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.contracts import log_fields
from llmpool.errors import shorten

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers.prices import Prices

logger = logging.getLogger(__name__)

#: The most input (or output) tokens one call counts: context windows hold about 10**7.
MAX_CALL_TOKENS = 10**9
#: The most one call costs, in the prices' currency: more comes from an absurd price.
MAX_CALL_COST = 1e12

#: The upper bounds (milliseconds) of the latency histogram's buckets; one more holds the rest.
LATENCY_BOUNDS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)
#: The histogram's fields, one per bucket: answers that took at most N ms (more than the last
#: bound before), and longer.
HISTOGRAM = (*(f"latency_le_{n}" for n in LATENCY_BOUNDS_MS), f"latency_gt_{LATENCY_BOUNDS_MS[-1]}")

#: The fields of a bucket that name its row, and those that add up.
LABELS = ("llm_id", "scope", "name", "provider", "model_name")
COUNTS = ("calls", "errors", "input_tokens", "output_tokens", "cost", "latency_ms_sum", *HISTOGRAM)


class UsageBucket(NamedTuple):
    """A row's usage in one epoch minute with one tag set (a report part: one UTC period's,
    ``minute`` the latest): its calls, errors, tokens, cost, and its answers' latency
    (`HISTOGRAM`); ``tags``: the calls' tags as canonical text (``''``: untagged)."""

    minute: int
    llm_id: str
    scope: str
    name: str
    provider: str
    model_name: str
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float
    latency_ms_sum: float = 0.0
    latency_le_50: int = 0
    latency_le_100: int = 0
    latency_le_250: int = 0
    latency_le_500: int = 0
    latency_le_1000: int = 0
    latency_le_2500: int = 0
    latency_le_5000: int = 0
    latency_le_10000: int = 0
    latency_le_30000: int = 0
    latency_gt_30000: int = 0
    tags: str = ""

    @property
    def sums(self) -> tuple[Any, ...]:
        """Its counts, in `COUNTS` order."""
        return self[6:-1]


def has_tags(tags: str, wanted: Mapping[str, str] | None) -> bool:
    """Whether a bucket's ``tags`` text holds every ``name: value`` of ``wanted``.

    Example:
        >>> has_tags("feature=chat,tenant=acme", {"tenant": "acme"}), has_tags("", {"a": "b"})
        (True, False)
    """
    if not wanted:
        return True
    held = f",{tags},"
    return all(f",{name}={value}," in held for name, value in wanted.items())


class LatencySummary(NamedTuple):
    """Answers' latency in milliseconds, read from a histogram: p50 and p95 within the bucket
    they fall in (linear inside it; the last bucket's lower bound for answers beyond it)."""

    answers: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class MemoryUsageTable:
    """A usage table in this process that drops buckets ``keep_days`` older than the newest."""

    def __init__(self, keep_days: int = 32) -> None:
        self._buckets: dict[tuple[int, str, str], UsageBucket] = {}
        self._lock = threading.Lock()
        self._keep = keep_days * 1440  # minutes
        self._pruned = 0  # the newest minute at the last pruning

    def __repr__(self) -> str:
        return f"MemoryUsageTable({len(self._buckets)} buckets)"

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts to the stored ones (the newest labels win)."""
        with self._lock:
            for bucket in buckets:
                key = (bucket.minute, bucket.llm_id, bucket.tags)
                have = self._buckets.get(key)
                if have is not None:
                    sums = {name: getattr(have, name) + getattr(bucket, name) for name in COUNTS}
                    bucket = bucket._replace(**sums)
                self._buckets[key] = bucket
            newest = max((bucket.minute for bucket in buckets), default=0)
            if newest - self._pruned >= 60:  # at most once an hour
                self._pruned = newest
                for key in [key for key in self._buckets if key[0] < newest - self._keep]:
                    del self._buckets[key]

    def spend(self, since: float, llm_ids: Collection[str]) -> dict[str, float]:
        """Return the cost of each row's calls in buckets from ``since`` on."""
        spent: dict[str, float] = {}
        for bucket in self.parts(since, None, None, None):
            if bucket.llm_id in llm_ids:
                spent[bucket.llm_id] = spent.get(bucket.llm_id, 0.0) + bucket.cost
        return spent

    def spend_of(self, kind: str, target: str, since: float) -> float:
        """Return the cost of the calls of a quota's target in buckets from ``since`` on (as
        `llmpool.usage.sql.SQLUsageTable.spend_of`)."""
        if kind == "tag":
            name, _, value = target.partition("=")
            return sum(b.cost for b in self.parts(since, None, None, None, tags={name: value}))
        field = {"row": "llm_id", "scope": "scope", "provider": "provider"}[kind]
        buckets = self.parts(since, None, None, None)
        return sum(b.cost for b in buckets if getattr(b, field) == target)

    def parts(
        self,
        since: float | None,
        until: float | None,
        scope: str | None,
        llm_id: str | None,
        *,
        llm: str | None = None,
        per: str = "day",
        tags: Mapping[str, str] | None = None,
    ) -> list[UsageBucket]:
        """Return the buckets within ``[since, until)``, of ``scope``, ``llm_id``, ``llm`` (a
        row's id or name) and with ``tags`` if given: minute buckets, finer than any ``per``."""
        with self._lock:
            buckets = list(self._buckets.values())
        return [
            b
            for b in buckets
            if (since is None or b.minute * 60 >= since)
            and (until is None or b.minute * 60 < until)
            and scope in (None, b.scope)
            and llm_id in (None, b.llm_id)
            and llm in (None, b.llm_id, b.name)
            and has_tags(b.tags, tags)
        ]


def add_counts(into: dict[Any, list[Any]], key: Any, counts: Sequence[Any]) -> None:
    """Add ``counts`` (in `COUNTS` order, or its first ones) to ``into[key]``."""
    have = into.setdefault(key, [0] * len(COUNTS))
    for i, value in enumerate(counts):
        have[i] += value


def count_call(
    into: list[Any], ok: bool, counts: tuple[int, int, float], latency: float | None
) -> None:
    """Add one call to ``into`` (a bucket's sums, in `COUNTS` order): its `call_counts`, and an
    answer's ``latency`` (seconds) in the histogram.

    Example:
        >>> sums = [0] * len(COUNTS)
        >>> count_call(sums, True, (3, 5, 0.5), 0.2)
        >>> sums[:8]
        [1, 0, 3, 5, 0.5, 200.0, 0, 0]
    """
    into[0] += 1
    if not ok:
        into[1] += 1
    into[2] += counts[0]
    into[3] += counts[1]
    into[4] += counts[2]
    if ok and latency is not None and latency >= 0:
        milliseconds = latency * 1000.0
        into[5] += milliseconds
        into[6 + bisect_left(LATENCY_BOUNDS_MS, milliseconds)] += 1  # past the last: the last


def latency_of(sums: Sequence[Any]) -> LatencySummary | None:
    """Return the latency of the answers counted in ``sums`` (in `COUNTS` order), or ``None``
    when it holds none.

    Example:
        >>> latency_of([0] * 5 + [300.0, 1, 2] + [0] * 8)
        LatencySummary(answers=3, mean_ms=100.0, p50_ms=62.5, p95_ms=96.2)
    """
    histogram = [int(count) for count in sums[6 : 6 + len(HISTOGRAM)]]
    answers = sum(histogram)
    if not answers:
        return None

    def percentile(q: float) -> float:
        rank, seen, lower = q * answers, 0, 0.0
        for count, upper in zip(histogram, LATENCY_BOUNDS_MS, strict=False):
            if count and seen + count >= rank:
                return round(lower + (upper - lower) * (rank - seen) / count, 1)
            seen, lower = seen + count, float(upper)
        return float(LATENCY_BOUNDS_MS[-1])  # beyond the last bound: at least that

    mean = round(float(sums[5]) / answers, 1)
    return LatencySummary(answers, mean, percentile(0.5), percentile(0.95))


def call_counts(
    config: LLMConfig, usage: Mapping[str, Any], prices: Prices | None
) -> tuple[int, int, float]:
    """Return one answered call's input tokens, output tokens and cost; a count or cost out of
    bounds is no real call's, and counts 0 (logged: ``usage_value_refused``).

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.providers.prices import Prices
        >>> row = LLMConfig(id="1", name="GPT", provider="fake", model_name="m")
        >>> call_counts(row, {"input_tokens": 3, "output_tokens": 5.0}, Prices(1e6, 0))
        (3, 5, 3.0)
    """
    inputs, outputs = usage.get("input_tokens"), usage.get("output_tokens")
    if type(inputs) is not int or not 0 <= inputs <= MAX_CALL_TOKENS:  # as clients report them
        inputs = _tokens(config, "input_tokens", inputs)
    if type(outputs) is not int or not 0 <= outputs <= MAX_CALL_TOKENS:
        outputs = _tokens(config, "output_tokens", outputs)
    cost = prices.cost(inputs, outputs) if prices is not None else 0.0
    if not cost <= MAX_CALL_COST:  # NaN too
        _refuse(config, "cost", cost, MAX_CALL_COST)
        cost = 0.0
    return inputs, outputs, cost


def _tokens(config: LLMConfig, field: str, value: Any) -> int:
    # One count of `call_counts` that is not an int in bounds: a whole float or a numeric
    # text is read.
    try:
        count = -1 if isinstance(value, bool) else 0 if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        count = -1
    if not 0 <= count <= MAX_CALL_TOKENS:
        _refuse(config, field, value, MAX_CALL_TOKENS)
        count = 0
    return count


def _refuse(config: LLMConfig, field: str, value: Any, bound: float) -> None:
    # The value is a number from a provider's usage or our own cost, never prompt text.
    shown = shorten(repr(value), 40) if isinstance(value, (int, float)) else type(value).__name__
    text = "LLM usage value refused, counted as 0: %s %s of %s is not from 0 to %g"
    args = (field, shown, config.describe(), bound)
    fields = {"llm_id": config.id, "llm_name": config.name, "field": field}
    logger.warning(text, *args, extra=log_fields("usage_value_refused", **fields))
