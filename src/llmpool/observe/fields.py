"""The fields of every log record llmpool emits: `log_fields` builds a record's ``extra``.

Every record carries `FIELDS` (``None`` where one does not apply), so a format string such as
``"%(event)s %(llm_name)s %(error_class)s"`` works for any record of any ``llmpool`` logger,
and a JSON formatter sees the same keys each time. A record may carry more (a breaker change
its ``state``, a reload its ``generation``). See `llmpool.observe.logs` for the events of
calls, breakers and reloads.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIELDS", "log_fields"]

#: The fields of every record, in the order the documentation lists them.
FIELDS = (
    "event",
    "scope",
    "llm_id",
    "llm_name",
    "provider",
    "model",
    "attempt",
    "outcome",
    "error_class",
    "reason",
    "latency_ms",
)

_NONE = dict.fromkeys(FIELDS)


def log_fields(event: str, **fields: Any) -> dict[str, Any]:
    """Return a record's ``extra``: every field of `FIELDS`, ``None`` unless given.

    Args:
        event: The record's short event name, e.g. ``"redis_down"``.
        **fields: Values of `FIELDS`, and any field particular to the record.

    Returns:
        The dict to pass as ``extra=``.

    Example:
        >>> extra = log_fields("redis_down", error_class="ConnectionError")
        >>> extra["event"], extra["error_class"], extra["llm_id"]
        ('redis_down', 'ConnectionError', None)
    """
    return {**_NONE, "event": event, **fields}
