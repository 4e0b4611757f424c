"""Why each row of a scope's chain would, or would not, be tried: the pool's own view.

`explain_chain` is `llmpool.pool.status.scope_status` cut down to the verdicts: the scope's
rows in the order a call would try them, each saying whether it would be tried, and if not,
why: disabled, a missing variable, a package not installed, a reference outside the allowlist,
an unknown provider, any other build error, or a circuit breaker cooling down. It takes no
breaker probe slot: it only looks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmpool.pool.facade import LLMPool

__all__ = ["ChainStep", "explain_chain"]


@dataclass(frozen=True)
class ChainStep:
    """One row of a chain, in the order a call would try it.

    Attributes:
        position: 1 for the row tried first.
        id: The row's id.
        name: The row's name.
        provider: The row's provider.
        priority: The row's priority.
        status: ``"would be tried"`` or ``"skipped"``.
        reason: Why it would be skipped (``None`` when it would be tried); never a secret.
    """

    position: int
    id: str
    name: str
    provider: str
    priority: int
    status: str
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        """Return the step as a JSON-ready dict."""
        return asdict(self)


def explain_chain(pool: LLMPool, scope: str = "global", kind: str = "chat") -> list[ChainStep]:
    """Return the scope's rows in the order a call would try them, each with its verdict.

    Args:
        pool: The pool whose snapshot, builds and breakers decide.
        scope: The scope.
        kind: The chain's kind: ``"chat"``, or ``"embedding"`` for its embedding rows.

    Example:
        >>> from llmpool.pool.facade import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> pool = LLMPool(repository=InMemoryStore([
        ...     {"name": "Off", "provider": "fake", "model_name": "m", "enabled": False},
        ...     {"name": "On", "provider": "fake", "model_name": "m", "priority": 200}]))
        >>> [(s.name, s.status, s.reason) for s in explain_chain(pool)]
        [('Off', 'skipped', 'disabled'), ('On', 'would be tried', None)]
        >>> pool.close()
    """
    from llmpool.pool.status import scope_status

    return [
        ChainStep(
            position=row["position"],
            id=row["id"],
            name=row["name"],
            provider=row["provider"],
            priority=row["priority"],
            status=row["status"],
            reason=row["reason"],
        )
        for row in scope_status(pool, scope, kind)["rows"]
    ]
