"""Why each row of a scope's chain would, or would not, be tried: the pool's own view.

`explain_chain` walks the scope's rows in the order a call would try them (the same routing
the pool's fallback models use) and says for each whether it would be tried, and if not, why:
disabled, a missing variable, a package not installed, a reference outside the allowlist, an
unknown provider, any other build error, or a circuit breaker cooling down. It builds nothing
into the pool's cache and takes no breaker probe slot: it only looks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from llmpool.errors import (
    EnvNotAllowedError,
    LLMPoolError,
    MissingSecretError,
    ProviderNotInstalledError,
    UnknownProviderError,
)
from llmpool.fallback.breakers import breaker_key
from llmpool.fallback.routing import PriorityRouting
from llmpool.fallback.walk import Candidate

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
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


def _why_not(pool: LLMPool, config: LLMConfig) -> str | None:
    if not config.enabled:
        return "disabled"
    try:
        pool.registry.build(config, allowlist=pool.allowlist)
    except MissingSecretError as error:
        return f"missing environment variable {error.variable}"
    except ProviderNotInstalledError as error:
        return f"provider package not installed: {str(error).split('run: ')[-1]}"
    except EnvNotAllowedError as error:
        return f"not on the allowlist: {error.field}"
    except UnknownProviderError:
        return f"unknown provider {config.provider!r}"
    except LLMPoolError as error:
        return str(error)
    if pool.breakers.is_open(breaker_key(config.id, config.version)):  # a look, not a probe
        return "cooling down after repeated failures"
    return None


def explain_chain(pool: LLMPool, scope: str = "global") -> list[ChainStep]:
    """Return the scope's rows in the order a call would try them, each with its verdict.

    Args:
        pool: The pool whose snapshot, registry, allowlist and breakers decide.
        scope: The scope.

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
    configs = [c for c in pool.snapshot().configs if c.scope == scope]
    ordered = PriorityRouting().order([Candidate(config) for config in configs])
    steps = []
    for position, candidate in enumerate(ordered, 1):
        config = candidate.config
        reason = _why_not(pool, config)
        steps.append(
            ChainStep(
                position=position,
                id=config.id,
                name=config.name,
                provider=config.provider,
                priority=config.priority,
                status="skipped" if reason is not None else "would be tried",
                reason=reason,
            )
        )
    return steps
