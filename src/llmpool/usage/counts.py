"""One call's usage as the meter counts it: its token counts and cost, bounded.

A provider's ``usage_metadata`` is read as it comes. A token count that is not a whole number
from 0 to `MAX_CALL_TOKENS` (negative, ``2**64``, ``1e30``, a text) and a cost above
`MAX_CALL_COST` (an absurd price) are no real call's: each counts as 0 and is logged (a
WARNING, ``event`` ``usage_value_refused``, naming the row and the field, never the prompt), so
one strange answer can never overflow the ``llm_usage`` columns, whose sums must hold every
call of a minute.

Example:
    >>> from llmpool.models import LLMConfig
    >>> from llmpool.usage.prices import Prices
    >>> row = LLMConfig(id="1", name="GPT", provider="fake", model_name="m")
    >>> call_counts(row, {"input_tokens": 3, "output_tokens": 5.0}, Prices(1e6, 0))
    (3, 5, 3.0)
    >>> call_counts(row, {"input_tokens": 2**64, "output_tokens": -1}, None)
    (0, 0, 0.0)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmpool.errors import shorten
from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.usage.prices import Prices

__all__ = ["MAX_CALL_COST", "MAX_CALL_TOKENS", "call_counts"]

logger = logging.getLogger(__name__)

#: The most input (or output) tokens one call counts: a larger figure is no real call's (the
#: longest context windows hold about 10**7), and summed it would overflow the columns.
MAX_CALL_TOKENS = 10**9
#: The most one call costs, in the prices' currency: more comes from an absurd price.
MAX_CALL_COST = 1e12


def call_counts(
    config: LLMConfig, usage: Mapping[str, Any], prices: Prices | None
) -> tuple[int, int, float]:
    """Return one answered call's input tokens, output tokens and cost, each bounded.

    Args:
        config: The row called (named in the log of a refused value).
        usage: The answer's ``usage_metadata``.
        prices: The row's prices; ``None``: the call costs 0.
    """
    input_tokens = usage.get("input_tokens", 0)
    if type(input_tokens) is not int or not 0 <= input_tokens <= MAX_CALL_TOKENS:
        input_tokens = _tokens(config, "input_tokens", input_tokens)
    output_tokens = usage.get("output_tokens", 0)
    if type(output_tokens) is not int or not 0 <= output_tokens <= MAX_CALL_TOKENS:
        output_tokens = _tokens(config, "output_tokens", output_tokens)
    if prices is None:
        return input_tokens, output_tokens, 0.0
    cost = prices.cost(input_tokens, output_tokens)
    if not cost <= MAX_CALL_COST:  # NaN too
        _refuse(config, "cost", cost, MAX_CALL_COST)
        cost = 0.0
    return input_tokens, output_tokens, cost


def _refuse(config: LLMConfig, field: str, value: Any, bound: float) -> None:
    # The value is a number from a provider's usage or our own cost, never prompt text.
    shown = shorten(repr(value), 40) if isinstance(value, (int, float)) else type(value).__name__
    logger.warning(
        "LLM usage value refused, counted as 0: %s %s of %s is not from 0 to %g",
        field,
        shown,
        config.describe(),
        bound,
        extra=log_fields(
            "usage_value_refused", llm_id=config.id, llm_name=config.name, field=field
        ),
    )


def _tokens(config: LLMConfig, field: str, value: Any) -> int:
    # A count that is not a plain int in bounds: a whole float or a numeric text is read;
    # anything else (negative, past MAX_CALL_TOKENS, not a number) is refused and counts 0.
    if value is None:
        return 0
    if not isinstance(value, bool):
        try:
            count = int(value)
        except (TypeError, ValueError, OverflowError):
            pass
        else:
            if 0 <= count <= MAX_CALL_TOKENS:
                return count
    _refuse(config, field, value, MAX_CALL_TOKENS)
    return 0
