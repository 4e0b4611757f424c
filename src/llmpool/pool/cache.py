"""Built chat models, cached per row version so their HTTP connection pools stay warm.

`ModelCache` turns a row into a `Candidate` once per ``(row id, row version)``: a changed row
gets a new model, an unchanged one keeps its client. A stampede on a cold row builds it once
(a lock per key, none on the hot path). A row that could not be built (a missing variable, a
plugin that raised) is remembered with its reason and built again after a delay, so setting
the variable is enough to bring it back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from llmpool.errors import LLMPoolError
from llmpool.models import LLMConfig

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.fallback.walk import Candidate

__all__ = ["ModelCache"]

Key = tuple[str, int]


class ModelCache:
    """Row -> `Candidate`, built once per row version.

    Args:
        build: Row -> chat model; an `LLMPoolError` it raises makes an unbuildable candidate.
        retry_failed_after: Seconds an unbuildable row keeps its error before it is built again.
        clock: Monotonic seconds; injectable for tests.

    Example:
        >>> from llmpool.providers.fake import FakeChatModel
        >>> cache = ModelCache(lambda config: FakeChatModel(model=config.model_name))
        >>> row = LLMConfig(id="1", name="Fake", provider="fake", model_name="echo")
        >>> cache.get(row) is cache.get(row)
        True
    """

    def __init__(
        self,
        build: Callable[[LLMConfig], BaseChatModel],
        *,
        retry_failed_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.build = build
        self.retry_failed_after = retry_failed_after
        self.clock = clock
        self.models: dict[Key, Candidate] = {}
        self._retry_at: dict[Key, float] = {}
        self._locks: dict[Key, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def __len__(self) -> int:
        return len(self.models)

    def _usable(self, key: Key, candidate: Candidate, config: LLMConfig) -> bool:
        if candidate.config != config:
            return False
        return candidate.model is not None or self.clock() < self._retry_at.get(key, 0.0)

    def get(self, config: LLMConfig) -> Candidate:
        """Return the row's candidate: its model, or why it could not be built."""
        key = (config.id, config.version)
        cached = self.models.get(key)
        if cached is not None and self._usable(key, cached, config):
            return cached
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        from llmpool.fallback.walk import Candidate

        with lock:  # a stampede on one row builds it once
            cached = self.models.get(key)
            if cached is not None and self._usable(key, cached, config):
                return cached
            try:
                candidate = Candidate(config, model=self.build(config))
            except LLMPoolError as error:
                candidate = Candidate(config, error=error)
                self._retry_at[key] = self.clock() + self.retry_failed_after
            self.models[key] = candidate
        with self._locks_guard:
            self._locks.pop(key, None)
        return candidate

    def retry_due(self, candidate: Candidate) -> float | None:
        """Return when an unbuildable candidate is due for another build (``None`` if built)."""
        if candidate.model is not None:
            return None
        return self._retry_at.get((candidate.config.id, candidate.config.version), 0.0)

    def prune(self, live: Collection[Key]) -> None:
        """Forget the models of rows no longer in the table, and every failed build."""
        # A copy: `get` inserts without a lock shared with this.
        for key, candidate in self.models.copy().items():
            if key not in live or candidate.model is None:
                if self.models.get(key) is candidate:
                    self.models.pop(key, None)
                self._retry_at.pop(key, None)
