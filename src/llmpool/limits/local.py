"""Sliding windows counted in this process, and the `LimitStore` protocol they satisfy."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = ["LimitStore", "LocalLimits", "WindowUse", "describe_refusal"]


class WindowUse(NamedTuple):
    """A row's current window.

    Attributes:
        requests: Requests taken in the window.
        tokens: Tokens counted in the window.
    """

    requests: int
    tokens: int


@runtime_checkable
class LimitStore(Protocol):
    """Where the windows are counted. Each method is atomic for one row."""

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from ``key``'s window, or return why it is full (taking nothing)."""
        ...

    def give_back(self, key: str) -> None:
        """Undo the latest `take` of ``key`` (the call was not made)."""
        ...

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in ``key``'s window, now."""
        ...

    def use(self, key: str) -> WindowUse:
        """Return ``key``'s current window."""
        ...


def describe_refusal(kind: str, used: int, limit: int, frees_in: float) -> str:
    """Return the skip reason of a full window.

    Example:
        >>> describe_refusal("rpm", 60, 60, 11.2)
        'rate limited: rpm 60/60, frees in 12 s'
    """
    return f"rate limited: {kind} {used}/{limit}, frees in {max(1, math.ceil(frees_in))} s"


class _Window:
    __slots__ = ("requests", "tokens", "used")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()
        self.tokens: deque[tuple[float, int]] = deque()
        self.used = 0  # the sum of `tokens`


class LocalLimits:
    """Sliding windows in this process (thread-safe).

    Args:
        window: The window's length in seconds (60: per minute).
        clock: Seconds, monotonic; injectable for tests.
        margin: Seconds added to the window. A request is counted when it is admitted and
            reaches the provider a moment later, by a varying delay; the margin keeps two
            requests a full window apart at the provider too (see `RateLimiter`).

    Example:
        >>> limits = LocalLimits()
        >>> limits.take("row", 2, None), limits.take("row", 2, None), limits.use("row")
        (None, None, WindowUse(requests=2, tokens=0))
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
        self._windows: dict[str, _Window] = {}

    def __repr__(self) -> str:
        return f"LocalLimits(window={self.window})"

    def _prune(self, w: _Window, now: float) -> None:
        # Entries older than the window leave it; one exactly `window` old is still in it.
        since = now - self.window
        requests = w.requests
        while requests and requests[0] < since:
            requests.popleft()
        tokens = w.tokens
        while tokens and tokens[0][0] < since:
            w.used -= tokens.popleft()[1]

    def take(self, key: str, rpm: int | None, tpm: int | None) -> str | None:
        """Take one request from ``key``'s window, or return why it is full."""
        now = self.clock()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window()
            else:
                self._prune(w, now)
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
            w = self._windows.get(key)
            if w is not None and w.requests:
                w.requests.pop()

    def add_tokens(self, key: str, tokens: int) -> None:
        """Count ``tokens`` in ``key``'s window, now."""
        now = self.clock()
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window()
            w.tokens.append((now, tokens))
            w.used += tokens

    def use(self, key: str) -> WindowUse:
        """Return ``key``'s current window."""
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                return WindowUse(0, 0)
            self._prune(w, self.clock())
            return WindowUse(len(w.requests), w.used)
