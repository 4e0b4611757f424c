"""What llmpool tells an operator: one hook interface, with logging and OpenTelemetry as two of
its subscribers.

- `llmpool.observe.hooks`: `Observer` (override the hooks you need) and `Hooks` (the fan-out).
- `llmpool.observe.events`: the events, frozen dataclasses.
- `llmpool.observe.logs`: `LoggingObserver`, records on the ``llmpool`` logger's children.
- `llmpool.observe.otel`: `OpenTelemetryObserver`, spans and metrics (extra ``otel``).
- `llmpool.observe.recorder`: how one call's walk becomes events.

Register an observer on a pool (``LLMPool(observers=[...])``) or on a policy
(``FallbackPolicy(observers=[...])``).
"""

from __future__ import annotations

from llmpool.observe.events import (
    AttemptEvent,
    BreakerEvent,
    BuildFailedEvent,
    CallEvent,
    FailoverEvent,
    ReloadEvent,
)
from llmpool.observe.hooks import Hooks, Observer, builtin_observers

__all__ = [
    "AttemptEvent",
    "BreakerEvent",
    "BuildFailedEvent",
    "CallEvent",
    "FailoverEvent",
    "Hooks",
    "Observer",
    "ReloadEvent",
    "builtin_observers",
]
