"""The fallback models: candidates in order, the first that answers wins.

- `llmpool.fallback.model`: `FallbackChatModel`, its four thin shells;
  `llmpool.fallback.embeddings`: `FallbackEmbeddings`, on the same walk.
- `llmpool.fallback.walk`: `Walk`, the decision core of one call.
- `llmpool.fallback.calls`: what an attempt calls, its deadline bound and stream gate.
- `llmpool.fallback.record`: one call's metadata, failures and events.
- `llmpool.fallback.structured`: tools and structured output on every candidate.
- `llmpool.fallback.policy`: which errors retry, fall back or propagate.
- `llmpool.fallback.breakers`: per-candidate circuit breakers, local or shared in Redis.
"""
