"""`LLMPool.explain`: the scope's chain in the order a call tries it, with the pool's verdicts."""

from __future__ import annotations

import pytest

from llmpool.fallback.breakers import breaker_key
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore


def _pool() -> LLMPool:
    return LLMPool(
        repository=InMemoryStore(
            [
                {"name": "Second", "provider": "fake", "model_name": "m", "priority": 20},
                {"name": "First", "provider": "fake", "model_name": "m", "priority": 10},
                {"name": "Off", "provider": "fake", "model_name": "m", "enabled": False},
                {"name": "Typo", "provider": "nope", "model_name": "m", "priority": 30},
                {"name": "Elsewhere", "provider": "fake", "model_name": "m", "scope": "other"},
            ]
        ),
        poll_interval=0,
    )


def test_explain_lists_the_scope_in_call_order_with_each_reason() -> None:
    """Rows come in priority order, and each skipped one says why."""
    with _pool() as pool:
        steps = pool.explain()
    assert [(s.position, s.name, s.status) for s in steps] == [
        (1, "First", "would be tried"),
        (2, "Second", "would be tried"),
        (3, "Typo", "skipped"),
        (4, "Off", "skipped"),
    ]
    assert steps[3].reason == "disabled"
    assert steps[2].reason == "unknown provider 'nope'"


def test_explain_reports_the_pools_own_open_breaker() -> None:
    """A breaker this pool opened shows as cooling down; only a look, no probe slot taken."""
    with _pool() as pool:
        first = next(c for c in pool.snapshot().configs if c.name == "First")
        key = breaker_key(first.id, first.version)
        for _ in range(pool.policy.failure_threshold):
            pool.breakers.failure(
                key, threshold=pool.policy.failure_threshold, cooldown=lambda trips: 60.0
            )
        steps = {s.name: s for s in pool.explain()}
        assert steps["First"].reason == "cooling down after repeated failures"
        assert pool.breakers.seems_open(key)


def test_explain_refuses_an_over_long_scope() -> None:
    """The scope is bounded like every other lookup."""
    from llmpool.errors import ArgumentTooLongError

    with _pool() as pool, pytest.raises(ArgumentTooLongError):
        pool.explain("s" * 10_000)
