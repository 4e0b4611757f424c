"""Vector spaces: which embedding rows produce vectors that may share one index (the same
``space`` label, or else provider, model and dimensions). A fallback chain never crosses spaces:
`one_space` refuses a mix, a write that makes one is warned (`warn_if_mixed`), and
`SpaceDimensions` keeps a space's vector length the same in every process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from llmpool.contracts import log_fields
from llmpool.errors import MixedSpacesError, shorten
from llmpool.models import LLMConfig

logger = logging.getLogger(__name__)

#: The ``config`` keys that set how many numbers a vector has (Google GenAI's is the second).
DIMENSION_KEYS = ("dimensions", "output_dimensionality")

# How many rows a refusal names (a scope may hold hundreds).
_MAX_NAMED = 10


def space_of(config: LLMConfig) -> str:
    """Return the vector space of an embedding row: its ``space`` label, else
    ``provider/model_name[@dimensions]``.

    Example:
        >>> row = LLMConfig(id="1", name="Small", provider="openai", kind="embedding",
        ...                 model_name="text-embedding-3-small", config={"dimensions": 256})
        >>> space_of(row), space_of(row.model_copy(update={"space": "te3-small-256"}))
        ('openai/text-embedding-3-small@256', 'te3-small-256')
    """
    if config.space:
        return config.space
    for key in DIMENSION_KEYS:
        dimensions = config.config.get(key)
        if dimensions is not None:
            return f"{config.provider}/{config.model_name}@{dimensions}"
    return f"{config.provider}/{config.model_name}"


def one_space(configs: Iterable[LLMConfig], *, scope: str | None = None) -> str | None:
    """Return the one space of a chain's rows (``None`` for no rows); `MixedSpacesError`: a mix."""
    spaces: dict[str, list[str]] = {}
    for config in configs:
        spaces.setdefault(space_of(config), []).append(config.describe())
    if len(spaces) <= 1:
        return next(iter(spaces), None)
    named = [f"{row} in space {shorten(space)!r}" for space, rows in spaces.items() for row in rows]
    if len(named) > _MAX_NAMED:
        named[_MAX_NAMED:] = [f"and {len(named) - _MAX_NAMED} more"]
    where = f" of scope {shorten(scope)!r}" if scope is not None else ""
    msg = (
        f"The embedding rows{where} are in {len(spaces)} vector spaces: {'; '.join(named)}; "
        "vectors of different spaces cannot share an index, so llmpool does not fall back "
        "between them. Give rows that serve the same vectors the same space label "
        "(`llmpool edit ID --space LABEL`), disable the others, or ask for one space "
        "(get_embeddings_with_fallback(space=...))"
    )
    raise MixedSpacesError(msg, spaces=spaces)


def warn_if_mixed(store: Any, written: Iterable[LLMConfig]) -> None:
    """Log a warning for each scope of ``written`` whose enabled embedding rows are now in
    several spaces (``event=mixed_spaces``)."""
    scopes = {c.scope for c in written if c.kind == "embedding" and c.enabled}
    for scope in sorted(scopes):
        rows = [c for c in store.list_llms(enabled_only=True, scope=scope) if c.kind == "embedding"]
        try:
            one_space(rows, scope=scope)
        except MixedSpacesError as error:
            logger.warning(
                "%s; until then get_embeddings_with_fallback(scope=%r) without space= raises "
                "MixedSpacesError",
                error,
                shorten(scope),
                extra=log_fields("mixed_spaces", scope=scope, spaces=sorted(error.spaces)),
            )


class SpaceDimensions:
    """The length of each vector space's vectors: the first ``record`` (the store's
    ``record_space``) returns, else (no store, or the database unreachable) this process's first."""

    def __init__(self, record: Callable[[str, int, str], int] | None = None) -> None:
        self._record = record
        self._known: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned = False

    def refusal(self, space: str, size: int, config: LLMConfig) -> str | None:
        """Return why an answer of ``size`` numbers is not in ``space``, or ``None`` if it is."""
        known = self._known.get(space)
        if known is None:
            known = self._first(space, size, config)
        if known == size:
            return None
        return (
            f"answered vectors of {size} numbers, but space {shorten(space)!r} has {known}; "
            "the row is not in the space it declares: fix its space label or its model"
        )

    def _first(self, space: str, size: int, config: LLMConfig) -> int:
        known = size
        if self._record is not None:
            try:
                known = self._record(space, size, config.id)
            except Exception as error:  # the database is down: this process's own view
                if not self._warned:
                    self._warned = True
                    logger.warning(
                        "llmpool cannot record the length of vector space %r; checking it in "
                        "this process only: %s",
                        shorten(space),
                        type(error).__name__,
                        extra=log_fields("space_unrecorded", error_class=type(error).__name__),
                    )
                return self._known.setdefault(space, size)
        with self._lock:
            return self._known.setdefault(space, known)
