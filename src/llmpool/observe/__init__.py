"""What llmpool tells an operator: `hooks` hands each event (`events`) to every `Observer`, and
logging (`logs`) and OpenTelemetry (`otel`, extra ``otel``) are two of them. Register yours on
a pool (``LLMPool(observers=[...])``) or a policy (``FallbackPolicy(observers=[...])``).
"""

from __future__ import annotations

from llmpool.contracts import Observer

__all__ = ["Observer"]
