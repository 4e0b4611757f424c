"""How scopes route their calls: the ``llm_scopes`` rows every store writes the same way.

A scope without a row routes by ``priority`` (the behaviour before routing strategies existed).
`check_routing` validates a write, `routing_audit` describes it for the audit log: a routing
change is audited under the id ``scope:<scope>`` (cut to the audit column's 64 characters),
with ``{"scope": ..., "routing": ...}`` before and after.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from llmpool.errors import InvalidConfigError
from llmpool.models import MAX_LENGTHS, check_argument
from llmpool.repository import DEFAULT_ACTOR

__all__ = ["STRATEGIES", "RoutingStore", "check_routing", "routing_audit"]

#: The strategies a scope may route by (the ``llm_scopes.routing`` column's values).
STRATEGIES = ("priority", "weighted", "latency", "least_busy")

#: The audit action of a routing change.
ACTION = "set_routing"


@runtime_checkable
class RoutingStore(Protocol):
    """A store that also keeps each scope's routing strategy."""

    def set_routing(self, scope: str, strategy: str, *, actor: str = DEFAULT_ACTOR) -> str:
        """Set how ``scope`` routes its calls (audited); return the strategy."""
        ...

    def get_routing(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls (``"priority"`` when never set)."""
        ...


def check_routing(scope: str, strategy: str) -> tuple[str, str]:
    """Return ``(scope, strategy)`` checked and stripped, ready to write.

    Raises:
        InvalidConfigError: An empty scope, or a strategy not in `STRATEGIES` (field
            ``routing``).
        ArgumentTooLongError: A scope longer than 100 characters.

    Example:
        >>> check_routing(" global ", "weighted")
        ('global', 'weighted')
    """
    if not isinstance(scope, str) or not scope.strip():
        msg = "scope must be a non-empty string"
        raise InvalidConfigError(msg, field="scope")
    check_argument("scope", scope, MAX_LENGTHS["scope"])
    if not isinstance(strategy, str) or strategy.strip() not in STRATEGIES:
        shown = strategy[:40] if isinstance(strategy, str) else type(strategy).__name__
        msg = (
            f"Unknown routing strategy {shown!r} for scope {scope.strip()!r}: "
            f"use one of {', '.join(STRATEGIES)}"
        )
        raise InvalidConfigError(msg, field="routing")
    return scope.strip(), strategy.strip()


def routing_audit(scope: str, before: str, after: str) -> tuple[str, Mapping[str, Any], Any]:
    """Return the audit log's id, before and after of a routing change."""
    return (
        f"scope:{scope}"[:64],
        {"scope": scope, "routing": before},
        {"scope": scope, "routing": after},
    )
