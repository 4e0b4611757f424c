"""Embedding rows served as LangChain ``Embeddings``, with a fallback that never mixes spaces.

- `space_of` / `one_space`: which rows produce vectors that may share an index
  (`llmpool.embeddings.space`);
- `FallbackEmbeddings`: candidates of one space, the first that answers wins; `Vectors` and
  `Vector`, its answers, say which row and space produced them (`llmpool.embeddings.model`).

The pool serves them: `LLMPool.get_embeddings`, `LLMPool.get_embeddings_with_fallback`.
"""

from __future__ import annotations

from llmpool.embeddings.model import (
    EmbeddingRunner,
    FallbackEmbeddings,
    MalformedVectorsError,
    Vector,
    Vectors,
)
from llmpool.embeddings.space import DIMENSION_KEYS, one_space, space_of

__all__ = [
    "DIMENSION_KEYS",
    "EmbeddingRunner",
    "FallbackEmbeddings",
    "MalformedVectorsError",
    "Vector",
    "Vectors",
    "one_space",
    "space_of",
]
