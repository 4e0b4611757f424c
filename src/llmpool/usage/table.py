"""Where flushed usage goes: `UsageBucket`, what one call may add to it, and the tables.

`llmpool.usage.sql` is the ``llm_usage`` table every replica shares; `MemoryUsageTable` serves
pools over a store that is not SQL. `call_counts` bounds what one call adds, so that summed
the counts never overflow a column.
"""

from __future__ import annotations

import logging
import threading
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

#: The fields of a bucket that name its row, and those that add up.
LABELS = ("llm_id", "scope", "name", "provider", "model_name")
COUNTS = ("calls", "errors", "input_tokens", "output_tokens", "cost")


class UsageBucket(NamedTuple):
    """A row's usage in one epoch minute (a report part: one UTC day's, ``minute`` the latest)."""

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


class MemoryUsageTable:
    """A usage table in this process that drops buckets ``keep_days`` older than the newest."""

    def __init__(self, keep_days: int = 32) -> None:
        self._buckets: dict[tuple[int, str], UsageBucket] = {}
        self._lock = threading.Lock()
        self._keep = keep_days * 1440  # minutes
        self._pruned = 0  # the newest minute at the last pruning

    def __repr__(self) -> str:
        return f"MemoryUsageTable({len(self._buckets)} buckets)"

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts to the stored ones (the newest labels win)."""
        with self._lock:
            for bucket in buckets:
                have = self._buckets.get((bucket.minute, bucket.llm_id))
                if have is not None:
                    sums = {name: getattr(have, name) + getattr(bucket, name) for name in COUNTS}
                    bucket = bucket._replace(**sums)
                self._buckets[bucket.minute, bucket.llm_id] = bucket
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

    def parts(
        self, since: float | None, until: float | None, scope: str | None, llm_id: str | None
    ) -> list[UsageBucket]:
        """Return the buckets within ``[since, until)``, of ``scope`` and ``llm_id`` if given."""
        with self._lock:
            buckets = list(self._buckets.values())
        return [
            b
            for b in buckets
            if (since is None or b.minute * 60 >= since)
            and (until is None or b.minute * 60 < until)
            and scope in (None, b.scope)
            and llm_id in (None, b.llm_id)
        ]


def add_counts(into: dict[Any, list[Any]], key: Any, counts: Sequence[Any]) -> None:
    """Add ``counts`` (in `COUNTS` order) to ``into[key]``."""
    have = into.setdefault(key, [0, 0, 0, 0, 0.0])
    for i, value in enumerate(counts):
        have[i] += value


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
    counts = []
    for field in ("input_tokens", "output_tokens"):
        value = usage.get(field)
        try:  # a whole float or a numeric text is read
            count = -1 if isinstance(value, bool) else 0 if value is None else int(value)
        except (TypeError, ValueError, OverflowError):
            count = -1
        if not 0 <= count <= MAX_CALL_TOKENS:
            _refuse(config, field, value, MAX_CALL_TOKENS)
            count = 0
        counts.append(count)
    cost = prices.cost(counts[0], counts[1]) if prices is not None else 0.0
    if not cost <= MAX_CALL_COST:  # NaN too
        _refuse(config, "cost", cost, MAX_CALL_COST)
        cost = 0.0
    return counts[0], counts[1], cost


def _refuse(config: LLMConfig, field: str, value: Any, bound: float) -> None:
    # The value is a number from a provider's usage or our own cost, never prompt text.
    shown = shorten(repr(value), 40) if isinstance(value, (int, float)) else type(value).__name__
    text = "LLM usage value refused, counted as 0: %s %s of %s is not from 0 to %g"
    args = (field, shown, config.describe(), bound)
    fields = {"llm_id": config.id, "llm_name": config.name, "field": field}
    logger.warning(text, *args, extra=log_fields("usage_value_refused", **fields))
