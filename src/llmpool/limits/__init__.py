"""Rate limits per row: requests per minute (``rpm``) and tokens per minute (``tpm``).

`RateLimiter` is an admission check (`llmpool.fallback.admission`): before each call it asks
its `LimitStore` whether the row has room in its window; a row at its limit is skipped with no
network call, the reason recorded ("rate limited: rpm 60/60, frees in 12 s"), and the call goes
on to the next row. After each call the tokens of the answer (``usage_metadata``) are counted
for ``tpm``. Windows slide: a row with ``rpm=60`` never takes more than 60 requests in any
60 seconds.

Counting is local to the process by default (`LocalLimits`), and shared by every replica
through Redis with `RedisLimits` (one Lua script per check, one round trip; extra ``redis``).
Limits are keyed by row id, so editing a row keeps its window.

Example:
    >>> from llmpool.fallback.walk import Candidate
    >>> from llmpool.models import LLMConfig
    >>> row = Candidate(LLMConfig(id="1", name="A", provider="fake", model_name="m", rpm=1))
    >>> limiter = RateLimiter()
    >>> limiter.admit(row) is None, limiter.admit(row)
    (True, 'rate limited: rpm 1/1, frees in 60 s')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.fallback.admission import CheckBase
from llmpool.limits.local import LimitStore, LocalLimits, WindowUse, describe_refusal

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate

__all__ = ["LimitStore", "LocalLimits", "RateLimiter", "WindowUse", "describe_refusal"]


class RateLimiter(CheckBase):
    """The admission check of the rows' ``rpm`` and ``tpm`` limits.

    Args:
        store: Where the windows are counted: `LocalLimits` (this process; the default) or
            `llmpool.limits.redis.RedisLimits` (every replica).
    """

    __slots__ = ("store",)

    def __init__(self, store: LimitStore | None = None) -> None:
        self.store: LimitStore = store if store is not None else LocalLimits()

    def __repr__(self) -> str:
        return f"RateLimiter({self.store!r})"

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Whether any row of the chain has a limit."""
        return any(c.config.rpm is not None or c.config.tpm is not None for c in candidates)

    def admit(self, candidate: Candidate) -> str | None:
        """Take a request from the row's window, or say why it is full."""
        c = candidate.config
        rpm, tpm = c.rpm, c.tpm
        if rpm is None and tpm is None:
            return None
        return self.store.take(c.id, rpm, tpm)

    def release(self, candidate: Candidate) -> None:
        """Give the request back: no call was made."""
        c = candidate.config
        if c.rpm is not None:
            self.store.give_back(c.id)

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the answer's tokens against the row's ``tpm``."""
        c = candidate.config
        if c.tpm is None or usage is None:
            return
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        if tokens > 0:
            self.store.add_tokens(c.id, tokens)

    def use(self, candidate: Candidate) -> WindowUse:
        """Return the row's current window: requests and tokens in it."""
        return self.store.use(candidate.config.id)
