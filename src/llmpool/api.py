"""The usage guide's functions over a default `LLMPool`, built on first use from configuration.

The default pool reads ``LLMPOOL_DATABASE_URL``, else ``DATABASE_URL``, else an embedded SQLite
file; `set_pool` replaces it (as a context manager, until the block ends). Each function refuses
a ``scope`` or ``llm_id`` longer than any row could hold before the pool is built.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import llmpool.contracts

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from llmpool.fallback.embeddings import FallbackEmbeddings
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.fallback.verdicts import Judge
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool


_pool: LLMPool | None = None
_pool_lock = threading.Lock()


def _checked(scope: str, llm_id: str | None = None) -> LLMPool:
    # Checked before the default pool is built: an argument no row could match opens nothing.
    from llmpool.pool.rows import check_lookup

    check_lookup(scope, llm_id)
    return get_pool()


def get_pool() -> LLMPool:
    """Return the default pool, built on first use from configuration.

    Example:
        >>> mine = llmpool.LLMPool(llmpool.InMemoryStore(), poll_interval=0)
        >>> with set_pool(mine):
        ...     get_pool() is mine
        True
    """
    global _pool
    if _pool is None:
        # Imported here: the functions stay cheap to import until one is called.
        from llmpool.pool.facade import LLMPool

        with _pool_lock:
            if _pool is None:
                _pool = LLMPool()
    return _pool


# What FallbackChatModel(scope=...) alone, and so a loaded serialized one, serves.
llmpool.contracts.default_scope_model = lambda scope: get_pool().get_llm_with_fallback(scope)


@contextmanager
def _restore(previous: LLMPool | None) -> Iterator[None]:
    global _pool
    try:
        yield
    finally:
        _pool = previous


def set_pool(pool: LLMPool | None) -> Any:
    """Replace the default pool now (``None``: build a new one on next use); as a context
    manager, restore the previous one after the block.

    Example:
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore(), poll_interval=0)):
        ...     get_llms_from_db()
        []
    """
    global _pool
    previous, _pool = _pool, pool
    return _restore(previous)


def get_llms_from_db(enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
    """Return the scope's chat rows in priority order (ties by name, then id).

    Example:
        >>> row = {"name": "A", "provider": "fake", "model_name": "m", "priority": 5}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     [(c["name"], c["priority"]) for c in get_llms_from_db(enabled_only=True)]
        [('A', 5)]
    """
    return _checked(scope).get_llms_from_db(enabled_only, scope)


def get_default_llm_config(scope: str = "global") -> LLMConfig:
    """Return the scope's default row; "No default LLM configured" when there is none.

    Example:
        >>> row = {"name": "A", "provider": "fake", "model_name": "m", "is_default": True}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     get_default_llm_config(scope="global")["name"]
        'A'
    """
    return _checked(scope).get_default_llm_config(scope)


def create_llm_instance(config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
    """Build the chat model of a row, as served alone (with its client's own retries).

    Example:
        >>> row = {"name": "A", "provider": "fake", "model_name": "m"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore(), poll_interval=0)):
        ...     create_llm_instance(row).invoke("Test message").content
        'This is a fake answer.'
    """
    return get_pool().create_llm_instance(config)


def get_llm(llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
    """Return the scope's default chat model, or one row's by id.

    Example:
        >>> row = {"id": "abc-123", "name": "A", "provider": "fake", "model_name": "m"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     get_llm(llm_id="abc-123").invoke("What is Python?").content
        'This is a fake answer.'
    """
    return _checked(scope, llm_id).get_llm(llm_id, scope)


def get_llm_with_fallback(
    scope: str = "global",
    *,
    fallbacks: Sequence[BaseChatModel] = (),
    policy: FallbackPolicy | None = None,
    accept: Judge | None = None,
) -> FallbackChatModel:
    """Return the scope's live fallback model, which follows the table without a rebuild
    (``accept``: the scope's own rule for answers, see `LLMPool.get_llm_with_fallback`).

    Example:
        >>> row = {"name": "A", "provider": "fake", "model_name": "m"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     get_llm_with_fallback().invoke("Explain machine learning").content
        'This is a fake answer.'
    """
    return _checked(scope).get_llm_with_fallback(
        scope, fallbacks=fallbacks, policy=policy, accept=accept
    )


async def aget_llms_from_db(enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
    """Async twin of `get_llms_from_db`.

    Example:
        >>> import asyncio
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore(), poll_interval=0)):
        ...     asyncio.run(aget_llms_from_db())
        []
    """
    return await _checked(scope).aget_llms_from_db(enabled_only, scope)


async def aget_default_llm_config(scope: str = "global") -> LLMConfig:
    """Async twin of `get_default_llm_config`.

    Example:
        >>> import asyncio
        >>> row = {"name": "A", "provider": "fake", "model_name": "m", "is_default": True}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     asyncio.run(aget_default_llm_config()).name
        'A'
    """
    return await _checked(scope).aget_default_llm_config(scope)


async def aget_llm(llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
    """Async twin of `get_llm`.

    Example:
        >>> import asyncio
        >>> row = {"name": "A", "provider": "fake", "model_name": "m", "is_default": True}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     asyncio.run(aget_llm()).invoke("hello").content
        'This is a fake answer.'
    """
    return await _checked(scope, llm_id).aget_llm(llm_id, scope)


async def aget_llm_with_fallback(
    scope: str = "global",
    *,
    fallbacks: Sequence[BaseChatModel] = (),
    policy: FallbackPolicy | None = None,
    accept: Judge | None = None,
) -> FallbackChatModel:
    """Async twin of `get_llm_with_fallback`.

    Example:
        >>> import asyncio
        >>> row = {"name": "A", "provider": "fake", "model_name": "m"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     asyncio.run(aget_llm_with_fallback()).invoke("hello").content
        'This is a fake answer.'
    """
    return await _checked(scope).aget_llm_with_fallback(
        scope, fallbacks=fallbacks, policy=policy, accept=accept
    )


def get_embeddings(scope: str = "global", llm_id: str | None = None) -> Embeddings:
    """Return the scope's default embedding model, or one embedding row's by id (a chat row is
    refused with `llmpool.errors.WrongKindError`, as chat functions refuse embedding rows).

    Example:
        >>> row = {"name": "V", "provider": "fake", "model_name": "m", "kind": "embedding",
        ...        "is_default": True, "config": {"dimensions": 4}}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     len(get_embeddings().embed_query("What is Python?"))
        4
    """
    return _checked(scope, llm_id).get_embeddings(scope, llm_id)


def get_embeddings_with_fallback(
    scope: str = "global", *, space: str | None = None, policy: FallbackPolicy | None = None
) -> FallbackEmbeddings:
    """Return live embeddings over the scope's embedding rows of one vector space: they fail
    over as chat rows do, never across spaces, and each answer names its row and space.

    Example:
        >>> row = {"name": "V", "provider": "fake", "model_name": "m", "kind": "embedding"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     vectors = get_embeddings_with_fallback().embed_documents(["a", "b"])
        >>> len(vectors), vectors.response_metadata["llmpool"]["space"]
        (2, 'fake/m')
    """
    return _checked(scope).get_embeddings_with_fallback(scope, space=space, policy=policy)


async def aget_embeddings(scope: str = "global", llm_id: str | None = None) -> Embeddings:
    """Async twin of `get_embeddings`.

    Example:
        >>> import asyncio
        >>> row = {"name": "V", "provider": "fake", "model_name": "m", "kind": "embedding",
        ...        "is_default": True, "config": {"dimensions": 4}}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     len(asyncio.run(aget_embeddings()).embed_query("hello"))
        4
    """
    return await _checked(scope, llm_id).aget_embeddings(scope, llm_id)


async def aget_embeddings_with_fallback(
    scope: str = "global", *, space: str | None = None, policy: FallbackPolicy | None = None
) -> FallbackEmbeddings:
    """Async twin of `get_embeddings_with_fallback`.

    Example:
        >>> import asyncio
        >>> row = {"name": "V", "provider": "fake", "model_name": "m", "kind": "embedding"}
        >>> with set_pool(llmpool.LLMPool(llmpool.InMemoryStore([row]), poll_interval=0)):
        ...     embeddings = asyncio.run(aget_embeddings_with_fallback())
        >>> embeddings.embed_documents(["a"]).response_metadata["llmpool"]["name"]
        'V'
    """
    return await _checked(scope).aget_embeddings_with_fallback(scope, space=space, policy=policy)
