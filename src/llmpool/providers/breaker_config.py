"""A row's own circuit-breaker policy: the ``breaker`` object of its ``config``, read by
llmpool and never passed to the client.

Example:
    >>> from llmpool.models import LLMConfig
    >>> row = LLMConfig(id="1", name="A", provider="fake", model_name="m",
    ...                 config={"breaker": {"failure_rate": 0.25, "errors": ["retry"]}})
    >>> dict(breaker_overrides(row))
    {'failure_rate': 0.25, 'errors': ('retry',)}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = ["BREAKER_KEY", "ERROR_CLASSES", "breaker_overrides"]

#: The ``config`` key holding the row's breaker policy.
BREAKER_KEY = "breaker"

#: The error classes a breaker may count (`llmpool.fallback.policy.Outcome` values): transient
#: errors (429, 5xx, timeouts) and errors of a candidate that cannot answer (401/403, 404).
ERROR_CLASSES = ("retry", "fallback")

_SHAPE = (
    '{"failure_threshold": 3, "failure_rate": 0.5, "min_calls": 10, "window": 60, '
    '"cooldown": 30, "errors": ["retry", "fallback"]}'
)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _refuse(config: LLMConfig, key: str, problem: str) -> InvalidConfigError:
    field = f"config.{BREAKER_KEY}" + (f".{key}" if key else "")
    msg = f"{config.describe()}: {field} {problem}"
    return InvalidConfigError(msg, llm_name=config.name, llm_id=config.id, field=field)


def _count(config: LLMConfig, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise _refuse(config, key, f"must be a whole number from 1 to 1000000, not {value!r}")
    return int(value)


def _seconds(config: LLMConfig, key: str, value: Any, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(config, key, f"must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or not low <= value <= 86_400:
        raise _refuse(config, key, f"must be from {low:g} to 86400 seconds, not {value!r}")
    return float(value)


def _rate(config: LLMConfig, key: str, value: Any) -> float | None:
    if value is None:  # this row trips on consecutive failures only
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(config, key, f"must be a share from 0.01 to 1, or null; not {value!r}")
    if not math.isfinite(value) or not 0.01 <= value <= 1:
        raise _refuse(config, key, f"must be a share from 0.01 to 1, or null; not {value!r}")
    return float(value)


def _errors(config: LLMConfig, key: str, value: Any) -> tuple[str, ...]:
    choices = ", ".join(repr(c) for c in ERROR_CLASSES)
    if not isinstance(value, list) or any(item not in ERROR_CLASSES for item in value):
        raise _refuse(config, key, f"must be a list of error classes among {choices}")
    return tuple(dict.fromkeys(value))


_READERS = {  # in the order the health views show them
    "failure_threshold": _count,
    "failure_rate": _rate,
    "min_calls": _count,
    "window": lambda config, key, value: _seconds(config, key, value, 1.0),
    "cooldown": lambda config, key, value: _seconds(config, key, value, 0.0),
    "errors": _errors,
}


def breaker_overrides(config: LLMConfig) -> Mapping[str, Any]:
    """Return the breaker settings a row's ``config`` overrides, checked (`InvalidConfigError`
    naming the row and the field, e.g. ``config.breaker.min_calls``); empty when it sets none.

    Raises:
        InvalidConfigError: ``breaker`` is not an object, has an unknown key or a bad value.
    """
    value = config.config.get(BREAKER_KEY)
    if value is None:
        return _EMPTY
    if not isinstance(value, dict):
        raise _refuse(config, "", f"must be an object like {_SHAPE}")
    unknown = next((key for key in value if key not in _READERS), None)
    if unknown is not None:
        raise _refuse(config, "", f"has unknown key {str(unknown)!r}; expected {_SHAPE}")
    read = {
        key: reader(config, key, value[key]) for key, reader in _READERS.items() if key in value
    }
    return MappingProxyType(read)
