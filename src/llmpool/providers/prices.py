"""A row's prices (per million tokens, or LiteLLM's per token) and ``max_spend`` budget:
``config`` keys llmpool reads, never passed to the client."""

from __future__ import annotations

import math
from calendar import monthrange
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, get_args

from llmpool.errors import InvalidConfigError
from llmpool.providers.breaker_config import BREAKER_KEY, breaker_overrides
from llmpool.providers.timeouts import STREAM_CONFIG_KEYS, stream_limits

_UNITS = ("million_tokens", "token")

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

#: Per million tokens, and LiteLLM's per token, for input and output.
_PRICE_KEYS = tuple(f"{way}_cost_per_{unit}" for way in ("input", "output") for unit in _UNITS)

#: The ``config`` keys of prices and budgets.
USAGE_CONFIG_KEYS = frozenset({*_PRICE_KEYS, "max_spend"})

#: Every ``config`` key llmpool reads for itself: prices, budget, the breaker policy, stream
#: limits and ``model_info`` (`llmpool.providers.fit`); a provider's client never sees them.
OWN_CONFIG_KEYS = USAGE_CONFIG_KEYS | STREAM_CONFIG_KEYS | {BREAKER_KEY, "model_info"}

#: The periods a budget may cover (UTC calendar day or month).
Period = Literal["day", "month"]


@dataclass(frozen=True)
class Prices:
    """What a row's tokens cost, per million input and output tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Return the cost of one call's tokens."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6


@dataclass(frozen=True)
class Budget:
    """The most a row may spend (``amount``, in the prices' currency) per UTC day or month."""

    amount: float
    period: Period

    def start(self, now: float) -> float:
        """Return when the period holding ``now`` (epoch seconds) began, in epoch seconds."""
        moment = datetime.fromtimestamp(now, timezone.utc)
        day = moment.day if self.period == "day" else 1
        return moment.replace(day=day, hour=0, minute=0, second=0, microsecond=0).timestamp()

    def end(self, now: float) -> float:
        """Return when the period holding ``now`` ends (the next one begins), in epoch seconds."""
        begun = self.start(now)
        if self.period == "day":
            return begun + 86400.0
        moment = datetime.fromtimestamp(begun, timezone.utc)
        return begun + monthrange(moment.year, moment.month)[1] * 86400.0


@dataclass(frozen=True)
class UsageTerms:
    """A row's prices (``None``: its calls cost 0) and budget (``None``: none)."""

    prices: Prices | None = None
    budget: Budget | None = None


def _refuse(config: LLMConfig, key: str, problem: str) -> InvalidConfigError:
    msg = f"{config.describe()}: config.{key} {problem}"
    return InvalidConfigError(msg, llm_name=config.name, llm_id=config.id, field=f"config.{key}")


def _amount(config: LLMConfig, key: str, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(config, key, f"must be a number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        which = "greater than 0" if positive else "0 or more"
        raise _refuse(config, key, f"must be a finite number {which}, not {value!r}")
    return number


def _budget(config: LLMConfig, value: Any) -> Budget:
    key = "max_spend"
    shape = '{"amount": 5.0, "period": "day"} (period "day" or "month", UTC)'
    if not isinstance(value, dict):
        raise _refuse(config, key, f"must be an object like {shape}")
    unknown = sorted(str(k) for k in value if k not in ("amount", "period"))
    if unknown:
        raise _refuse(config, key, f"has unknown key {unknown[0]!r}; expected {shape}")
    if "amount" not in value:
        raise _refuse(config, key, f"needs an amount: {shape}")
    amount = _amount(config, f"{key}.amount", value["amount"], positive=True)
    period = value.get("period", "day")
    if period not in get_args(Period):
        raise _refuse(config, f"{key}.period", f'must be "day" or "month", not {period!r}')
    return Budget(amount, period)


def _per_million(config: LLMConfig, values: dict[str, Any], way: str) -> float:
    million, token = (f"{way}_cost_per_{unit}" for unit in _UNITS)
    if million in values and token in values:
        raise _refuse(config, token, f"and config.{million} both price the same tokens; keep one")
    if token in values:
        return _amount(config, token, values[token]) * 1e6
    return _amount(config, million, values.get(million, 0))


def usage_terms(config: LLMConfig) -> UsageTerms:
    """Return the prices and budget a row's ``config`` sets (`InvalidConfigError`)."""
    values = config.config
    if not any(key in values for key in USAGE_CONFIG_KEYS):
        return UsageTerms()
    prices: Prices | None = None
    if any(key in values for key in _PRICE_KEYS):
        prices = Prices(
            _per_million(config, values, "input"), _per_million(config, values, "output")
        )
    budget = _budget(config, values["max_spend"]) if "max_spend" in values else None
    return UsageTerms(prices, budget)


def client_config(config: LLMConfig) -> LLMConfig:
    """Return the row without its `OWN_CONFIG_KEYS`, checked as `usage_terms`,
    `breaker_overrides` and `stream_limits` do."""
    values = config.config
    if not any(key in values for key in OWN_CONFIG_KEYS):
        return config
    usage_terms(config)
    breaker_overrides(config)
    stream_limits(config)
    kept = {key: value for key, value in values.items() if key not in OWN_CONFIG_KEYS}
    return config.model_copy(update={"config": kept})
