"""Usage and spend: what each row's calls used and cost, and the rows' budgets.

- `prices`: a row's prices and budget (``config`` keys the client never sees);
- `meter`: every call counted in memory by row and minute, flushed in batches by a background
  thread (`flusher`) to a table (`table` in memory, `sql` the ``llm_usage`` table);
- `counts`: one call's token counts and cost, bounded (absurd values count as 0, logged);
- `check`: the meter and the budgets on the fallback walk's admission seam (calls in flight
  count against a budget at their expected cost);
- `report`: usage read back as typed rows, by row, scope or day, money as `decimal.Decimal`.

A pool counts its calls by default (`llmpool.pool.options.PoolOptions.track_usage`) and reports
them with `llmpool.LLMPool.usage`; ``llmpool usage --since 1d`` prints them.
"""

from __future__ import annotations

from llmpool.usage.prices import USAGE_CONFIG_KEYS, Budget, Prices, UsageTerms, usage_terms
from llmpool.usage.report import UsageRow

__all__ = ["USAGE_CONFIG_KEYS", "Budget", "Prices", "UsageRow", "UsageTerms", "usage_terms"]
