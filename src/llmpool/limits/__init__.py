"""Rate limits per row: requests (``rpm``) and tokens (``tpm``) in any sliding minute.

A row whose window is full is skipped with no network call, its reason recorded. Windows are
keyed by row id (editing a row keeps its window) and counted in this process (`LocalLimits`) or
by every replica in Redis (`llmpool.limits.redis.RedisLimits`).

Example:
    >>> from llmpool.contracts import Candidate
    >>> from llmpool.models import LLMConfig
    >>> row = Candidate(LLMConfig(id="1", name="A", provider="fake", model_name="m", rpm=1))
    >>> limiter = RateLimiter()
    >>> limiter.admit(row, None) is None, limiter.admit(row, None)
    (True, 'rate limited: rpm 1/1, frees in 60 s')
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from llmpool.contracts import Candidate, CheckBase

if TYPE_CHECKING:
    from llmpool.tags import Tags

__all__ = [
    "LimitStore",
    "LocalLimits",
    "RateLimiter",
    "WindowUse",
    "describe_refusal",
    "share",
]


class WindowUse(NamedTuple):
    """A row's current window: the requests taken and the tokens counted in it; ``share``: the
    row's limits are divided by it (a replica counting alone while the shared store is down);
    ``refusal``: why every call is refused now, whatever the window."""

    requests: int
    tokens: int
    share: int = 1
    refusal: str | None = None


class LimitStore(Protocol):
    """Where the windows are counted; each method is atomic for one key (a row id)."""

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from the window, or return why it is full (taking nothing)."""

    def give_back(self, key: str) -> None:
        """Undo the latest `take` (the call was not made)."""

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in the window, now."""

    def use(self, key: str) -> WindowUse:
        """Return the current window."""


def describe_refusal(kind: str, used: int, limit: int, frees_in: float) -> str:
    """Return the skip reason of a full window: ``rate limited: rpm 60/60, frees in 12 s``."""
    return f"rate limited: {kind} {used}/{limit}, frees in {max(1, math.ceil(frees_in))} s"


def share(limit: int | None, replicas: int) -> int | None:
    """Return one replica's part of ``limit`` among ``replicas``: ``ceil(limit / replicas)``."""
    return limit if limit is None or replicas <= 1 else -(-limit // replicas)


class RateLimiter(CheckBase):
    """The admission check of the rows' ``rpm`` and ``tpm``, counted in ``store`` (or locally)."""

    __slots__ = ("store",)

    def __init__(self, store: LimitStore | None = None) -> None:
        self.store: LimitStore = store if store is not None else LocalLimits()

    def __repr__(self) -> str:
        return f"RateLimiter({self.store!r})"

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Whether any row of the chain has a limit."""
        return any(c.config.rpm is not None or c.config.tpm is not None for c in candidates)

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        """Take a request from the row's window, or say why it is full."""
        c = candidate.config
        return None if c.rpm is None and c.tpm is None else self.store.take(c.id, c.rpm, c.tpm)

    def peek(self, candidate: Candidate) -> str | None:
        """Say why the row's window is full now, taking nothing; else ``None``."""
        c = candidate.config
        if c.rpm is None and c.tpm is None:
            return None
        use = self.store.use(c.id)
        if use.refusal is not None:
            return use.refusal
        tpm, rpm = share(c.tpm, use.share), share(c.rpm, use.share)
        if tpm is not None and use.tokens >= tpm:
            return f"rate limited: tpm {use.tokens}/{tpm}"
        if rpm is not None and use.requests >= rpm:
            return f"rate limited: rpm {use.requests}/{rpm}"
        return None

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        """Give the request back: no call was made."""
        if candidate.config.rpm is not None:
            self.store.give_back(candidate.config.id)

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Count the answer's tokens against the row's ``tpm``."""
        if candidate.config.tpm is None or usage is None:
            return
        tokens = usage.get("total_tokens")
        if not isinstance(tokens, int):
            tokens = int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0)
        if tokens > 0:
            self.store.add_tokens(candidate.config.id, tokens)

    def use(self, candidate: Candidate) -> WindowUse:
        """Return the row's current window."""
        return self.store.use(candidate.config.id)


class _Window:
    __slots__ = ("requests", "tokens", "used")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.used = 0  # the sum of `tokens`


class LocalLimits:
    """Sliding windows of ``window`` seconds in this process (thread-safe); ``margin`` seconds
    added keep requests a window apart at the provider too, which they reach after a delay.

    Example:
        >>> limits = LocalLimits()
        >>> limits.take("row", 2, None), limits.take("row", 2, None), limits.use("row")
        (None, None, WindowUse(requests=2, tokens=0, share=1, refusal=None))
    """

    def __init__(
        self,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        margin: float = 0.0,
    ) -> None:
        self.window = window + margin
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: defaultdict[str, _Window] = defaultdict(_Window)

    def __repr__(self) -> str:
        return f"LocalLimits(window={self.window})"

    def _current(self, key: str, now: float) -> _Window:
        # The key's window without its entries older than `window` (one exactly that old stays).
        w = self._windows[key]
        since = now - self.window
        while w.requests and w.requests[0] < since:
            w.requests.popleft()
        while w.tokens and w.tokens[0][0] < since:
            w.used -= w.tokens.popleft()[1]
        return w

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from ``key``'s window, or return why it is full."""
        now = self.clock()
        with self._lock:
            w = self._current(key, now)
            if tpm is not None and w.used >= tpm:
                return describe_refusal("tpm", w.used, tpm, w.tokens[0][0] + self.window - now)
            if rpm is not None:
                if len(w.requests) >= rpm:
                    frees = w.requests[0] + self.window - now
                    return describe_refusal("rpm", len(w.requests), rpm, frees)
                w.requests.append(now)
        return None

    def give_back(self, key: str) -> None:
        """Undo the latest `take` of ``key``."""
        with self._lock:
            requests = self._windows[key].requests
            if requests:
                requests.pop()

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in ``key``'s window, now."""
        now = self.clock()
        with self._lock:
            w = self._windows[key]
            w.tokens.append((now, tokens))
            w.used += tokens

    def use(self, key: str) -> WindowUse:
        """Return ``key``'s current window."""
        with self._lock:
            w = self._current(key, self.clock())
            return WindowUse(len(w.requests), w.used)
