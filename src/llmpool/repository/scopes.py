"""How scopes route their calls (``llm_scopes``); a scope without a row routes by priority.

A strategy other than ``priority`` is set only on a scope that has rows (a misspelt scope must
not be created silently); a routing change is audited under the id ``scope:<scope>``. A stored
strategy that is none of `STRATEGIES` (raw SQL wrote it) is never handed on: `usable_strategy`
serves the scope by priority and logs it (``invalid_routing``, which ``llmpool doctor`` names).
"""

from __future__ import annotations

import logging

from llmpool.contracts import log_fields
from llmpool.errors import InvalidConfigError, shorten, visible
from llmpool.models import MAX_LENGTHS, check_argument, check_text

logger = logging.getLogger(__name__)

#: The strategies a scope may route by (the ``llm_scopes.routing`` column's values);
#: ``experiment`` needs the scope's definition (`llmpool.repository.experiments`).
STRATEGIES = ("priority", "weighted", "latency", "least_busy", "experiment")

#: How the audit log's ``llm_id`` of a routing change starts; no row's id may start so.
AUDIT_PREFIX = "scope:"


def check_routing(scope: str, strategy: str) -> tuple[str, str]:
    """Return ``(scope, strategy)`` checked and stripped, ready to write (`InvalidConfigError`
    naming field ``scope`` or ``routing``; `ArgumentTooLongError`)."""
    if not isinstance(scope, str) or not scope.strip():
        raise InvalidConfigError("scope must be a non-empty string", field="scope")
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


def usable_strategy(scope: str, stored: object, *, warn: bool = True) -> str:
    """Return the strategy ``stored`` names, else ``"priority"`` (logged when ``warn``)."""
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
