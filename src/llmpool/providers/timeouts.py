"""A row's stream limits, ``ttft_timeout`` and ``stall_timeout``: ``config`` keys llmpool reads,
never passed to the client."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = ["STREAM_CONFIG_KEYS", "check_seconds", "stream_limits"]

#: Seconds to the first content of a stream, and the longest pause between two of its chunks.
STREAM_CONFIG_KEYS = frozenset({"ttft_timeout", "stall_timeout"})


def check_seconds(value: Any) -> str | None:
    """Return what is wrong with a limit in seconds (``None``: a finite number over 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, not {type(value).__name__}"
    if not math.isfinite(value) or value <= 0:
        return f"must be a finite number of seconds greater than 0, not {value!r}"
    return None


def stream_limits(config: LLMConfig) -> tuple[float | None, float | None]:
    """Return a row's ``(ttft_timeout, stall_timeout)`` (`InvalidConfigError` naming the key).

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="A", provider="fake", model_name="m",
        ...                 config={"ttft_timeout": 5})
        >>> stream_limits(row)
        (5.0, None)
    """
    values = config.config
    ttft, stall = values.get("ttft_timeout"), values.get("stall_timeout")
    for key, value in (("ttft_timeout", ttft), ("stall_timeout", stall)):
        problem = None if value is None else check_seconds(value)
        if problem is not None:
            msg = f"{config.describe()}: config.{key} {problem}"
            raise InvalidConfigError(
                msg, llm_name=config.name, llm_id=config.id, field=f"config.{key}"
            )
    return (
        None if ttft is None else float(ttft),
        None if stall is None else float(stall),
    )
