"""Usage and spend: what each row's calls used and cost, held to the rows' budgets.

`meter` counts calls and flushes them to a `table` (in memory, or `sql`: ``llm_usage``);
`check` puts the meter and the budgets on the walk's admission seam; `report` reads usage back.
"""

from __future__ import annotations

from llmpool.usage.report import UsageRow

__all__ = ["UsageRow"]
