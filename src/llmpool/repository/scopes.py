"""How scopes route their calls: the ``llm_scopes`` rows every store writes the same way.

A scope without a row routes by ``priority`` (the behaviour before routing strategies existed).
`check_routing` validates a write, `routing_audit` describes it for the audit log: a routing
change is audited under the id ``scope:<scope>`` (cut to the audit column's 64 characters),
with ``{"scope": ..., "routing": ...}`` before and after.

A strategy other than ``priority`` is set only on a scope that has rows (`no_rows_error`): a
typo in a scope name must not create a scope silently. `apply` may set the strategy of a scope
whose rows the same document adds: the stores write the strategies after the rows.

A stored strategy that is none of `STRATEGIES` (raw SQL wrote it) is never handed on:
`usable_strategy` serves the scope by ``priority`` and logs it, and ``llmpool doctor`` names
it (``invalid_routing``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from llmpool.errors import InvalidConfigError, shorten, visible
from llmpool.models import MAX_LENGTHS, check_argument, check_text
from llmpool.observe.fields import log_fields
from llmpool.repository import DEFAULT_ACTOR

__all__ = [
    "AUDIT_PREFIX",
    "STRATEGIES",
    "RoutingStore",
    "check_routing",
    "no_rows_error",
    "routing_audit",
    "usable_strategy",
]

logger = logging.getLogger(__name__)

#: The strategies a scope may route by (the ``llm_scopes.routing`` column's values).
STRATEGIES = ("priority", "weighted", "latency", "least_busy")

#: The audit action of a routing change.
ACTION = "set_routing"

#: How the audit log's ``llm_id`` of a routing change starts; no row's id may start so.
AUDIT_PREFIX = "scope:"


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
        InvalidConfigError: An empty scope, a scope holding a control or invisible character
            (field ``scope``, see `llmpool.models.check_text`), or a strategy not in
            `STRATEGIES` (field ``routing``).
        ArgumentTooLongError: A scope longer than 100 characters.

    Example:
        >>> check_routing(" global ", "weighted")
        ('global', 'weighted')
    """
    if not isinstance(scope, str) or not scope.strip():
        msg = "scope must be a non-empty string"
        raise InvalidConfigError(msg, field="scope")
    check_argument("scope", scope, MAX_LENGTHS["scope"])
    check_text(scope, field="scope", row="Could not set the routing")
    if not isinstance(strategy, str) or strategy.strip() not in STRATEGIES:
        shown = visible(strategy[:40]) if isinstance(strategy, str) else type(strategy).__name__
        msg = (
            f"Unknown routing strategy {shown!r} for scope {shorten(scope.strip())!r}: "
            f"use one of {', '.join(STRATEGIES)}"
        )
        raise InvalidConfigError(msg, field="routing")
    return scope.strip(), strategy.strip()


def routing_audit(scope: str, before: str, after: str) -> tuple[str, Mapping[str, Any], Any]:
    """Return the audit log's id, before and after of a routing change."""
    return (
        f"{AUDIT_PREFIX}{scope}"[:64],
        {"scope": scope, "routing": before},
        {"scope": scope, "routing": after},
    )


def no_rows_error(scope: str, strategy: str) -> InvalidConfigError:
    """Return the refusal to route ``scope`` by ``strategy`` while it has no rows."""
    msg = (
        f"Could not route scope {shorten(scope)!r} by {strategy}: the scope has no rows (a "
        "misspelt scope?); add its rows first (or set the strategy in the `llmpool apply` "
        "document that adds them)"
    )
    return InvalidConfigError(msg, field="scope")


def usable_strategy(scope: str, stored: object, *, warn: bool = True) -> str:
    """Return the strategy ``stored`` names, or ``"priority"`` when it names none.

    Args:
        scope: The scope, for the log record.
        stored: The strategy as stored (raw SQL may have written anything).
        warn: Log a warning when ``stored`` is refused.

    Example:
        >>> usable_strategy("global", "weighted"), usable_strategy("x", " Weighted ", warn=False)
        ('weighted', 'priority')
    """
    if stored in STRATEGIES:
        return str(stored)
    if warn:
        shown = visible(shorten(stored if isinstance(stored, str) else repr(stored), 40))
        logger.warning(
            "llmpool serves scope %r by priority: its stored routing %r is not a strategy "
            "(fix: llmpool routing SCOPE priority, or another of %s)",
            shorten(visible(scope)),
            shown,
            ", ".join(STRATEGIES),
            extra=log_fields("invalid_routing", scope=shorten(scope), routing=shown),
        )
    return "priority"
