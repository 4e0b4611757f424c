"""Vector spaces: which embedding rows produce vectors that may share one index.

Two rows are in the same space when they declare the same ``space`` label, or, without one,
when they have the same ``model_name`` and the same ``dimensions`` in their ``config``. A
fallback chain of embedding rows never crosses between spaces: a chain whose rows are in more
than one space is refused when it is built (`one_space`), naming every row with its space,
because vectors of another model written into the same index silently spoil every later
search.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from llmpool.errors import MixedSpacesError, shorten

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = ["DIMENSION_KEYS", "one_space", "space_of"]

#: The ``config`` keys that set how many numbers a vector has: ``dimensions`` (OpenAI, Azure
#: OpenAI, Bedrock, Vertex AI, Ollama, fake) and Google GenAI's ``output_dimensionality``.
DIMENSION_KEYS = ("dimensions", "output_dimensionality")

# How many rows a refusal names (a scope may hold hundreds).
_MAX_NAMED = 10


def space_of(config: LLMConfig) -> str:
    """Return the vector space of an embedding row.

    Its ``space`` label when it has one; else its ``model_name``, followed by ``@`` and its
    ``config`` dimensions when it sets them.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="Small", provider="openai", kind="embedding",
        ...                 model_name="text-embedding-3-small", config={"dimensions": 256})
        >>> space_of(row), space_of(row.model_copy(update={"space": "te3-small-256"}))
        ('text-embedding-3-small@256', 'te3-small-256')
    """
    if config.space:
        return config.space
    for key in DIMENSION_KEYS:
        dimensions = config.config.get(key)
        if dimensions is not None:
            return f"{config.model_name}@{dimensions}"
    return config.model_name


def one_space(configs: Iterable[LLMConfig], *, scope: str | None = None) -> str | None:
    """Return the one space of a chain's rows (``None`` for no rows); refuse a mix of spaces.

    Raises:
        MixedSpacesError: The rows are in more than one space; the message names every row
            (up to ten) with its space, and says how to fix it.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> rows = [LLMConfig(id=n, name=n, provider="fake", model_name=m, kind="embedding")
        ...         for n, m in [("A", "x"), ("B", "y")]]
        >>> one_space(rows[:1])
        'x'
        >>> one_space(rows)
        Traceback (most recent call last):
        ...
        llmpool.errors.MixedSpacesError: The embedding rows are in 2 vector spaces: ...
    """
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
