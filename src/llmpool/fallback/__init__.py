"""The fallback chat model: candidates in order, the first that answers wins.

- `llmpool.fallback.model`: `FallbackChatModel`, the thin sync and async shells.
- `llmpool.fallback.walk`: `Candidate` and `Walk`, the decision core of one call.
- `llmpool.fallback.streaming`: the stream gate and the deadline bound of an attempt.
- `llmpool.fallback.policy`: which errors retry, fall back or propagate.
- `llmpool.fallback.breakers`, `breakers_redis`: per-candidate circuit breakers, local or
  shared.
"""
