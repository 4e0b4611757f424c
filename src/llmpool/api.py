"""The usage guide's functions, over a default `LLMPool` built lazily from configuration.

The default pool reads ``LLMPOOL_DATABASE_URL``, else ``DATABASE_URL``, else an embedded SQLite
file. `set_pool` replaces it, and as a context manager restores the previous one (the escape
hatch for tests and for applications that build their own pool). A ``scope`` or ``llm_id``
longer than any row could hold is refused with `llmpool.errors.ArgumentTooLongError` before
the pool is built.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from llmpool.embeddings.model import FallbackEmbeddings
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool

__all__ = [
    "aget_default_llm_config",
    "aget_embeddings",
    "aget_embeddings_with_fallback",
    "aget_llm",
    "aget_llm_with_fallback",
    "aget_llms_from_db",
    "create_llm_instance",
    "get_default_llm_config",
    "get_embeddings",
    "get_embeddings_with_fallback",
    "get_llm",
    "get_llm_with_fallback",
    "get_llms_from_db",
    "get_pool",
    "set_pool",
]


_pool: LLMPool | None = None
_pool_lock = threading.Lock()


def _check(scope: str, llm_id: str | None = None) -> None:
    # Before the default pool is built: an argument no row could match opens no database.
    from llmpool.models import MAX_LENGTHS, check_argument

    check_argument("scope", scope, MAX_LENGTHS["scope"])
    if llm_id is not None:
        check_argument("llm_id", llm_id, MAX_LENGTHS["id"])


def get_pool() -> LLMPool:
    """Return the default pool, built on first use from configuration.

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> mine = LLMPool(repository=InMemoryStore(), poll_interval=0)
        >>> with set_pool(mine):
        ...     get_pool() is mine
        True
    """
    global _pool
    if _pool is None:
        # Imported here: importing the functions stays cheap (no pydantic models, no
        # SQLAlchemy) until one is called.
        from llmpool.pool.facade import LLMPool

        with _pool_lock:
            if _pool is None:
                _pool = LLMPool()
    return _pool


@contextmanager
def _restore(previous: LLMPool | None) -> Iterator[None]:
    global _pool
    try:
        yield
    finally:
        _pool = previous


def set_pool(pool: LLMPool | None) -> Any:
    """Replace the default pool now; as a context manager, restore the previous one after.

    ``None`` resets it: the next call builds a new one from configuration.

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> with set_pool(LLMPool(repository=InMemoryStore(), poll_interval=0)):
        ...     get_llms_from_db()
        []
    """
    global _pool
    previous = _pool
    _pool = pool
    return _restore(previous)


def get_llms_from_db(enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
    """Return the scope's rows in priority order (see `LLMPool.get_llms_from_db`).

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     [(c["name"], c["priority"]) for c in get_llms_from_db(enabled_only=True)]
        [('Fake', 100)]
    """
    _check(scope)
    return get_pool().get_llms_from_db(enabled_only, scope)


def get_default_llm_config(scope: str = "global") -> LLMConfig:
    """Return the scope's default row; "No default LLM configured" when there is none.

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     get_default_llm_config(scope="global")["name"]
        'Fake'
    """
    _check(scope)
    return get_pool().get_default_llm_config(scope)


def create_llm_instance(config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
    """Build the chat model of a row (see `LLMPool.create_llm_instance`).

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     create_llm_instance(get_llms_from_db()[0]).invoke("Test message").content
        'hi'
    """
    return get_pool().create_llm_instance(config)


def get_llm(llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
    """Return the default model, or one row's model by id (see `LLMPool.get_llm`).

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     get_llm(llm_id="abc-123-def-456").invoke("What is Python?").content
        'hi'
    """
    _check(scope, llm_id)
    return get_pool().get_llm(llm_id, scope)


def get_llm_with_fallback(
    scope: str = "global",
    *,
    fallbacks: Sequence[BaseChatModel] = (),
    policy: FallbackPolicy | None = None,
) -> FallbackChatModel:
    """Return the scope's live fallback model (see `LLMPool.get_llm_with_fallback`).

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     get_llm_with_fallback().invoke("Explain machine learning").content
        'hi'
    """
    _check(scope)
    return get_pool().get_llm_with_fallback(scope, fallbacks=fallbacks, policy=policy)


async def aget_llms_from_db(enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
    """Async twin of `get_llms_from_db`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     [c.name for c in asyncio.run(aget_llms_from_db())]
        ['Fake']
    """
    _check(scope)
    return await get_pool().aget_llms_from_db(enabled_only, scope)


async def aget_default_llm_config(scope: str = "global") -> LLMConfig:
    """Async twin of `get_default_llm_config`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> with set_pool(pool):
        ...     asyncio.run(aget_default_llm_config()).name
        'Fake'
    """
    _check(scope)
    return await get_pool().aget_default_llm_config(scope)


async def aget_llm(llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
    """Async twin of `get_llm`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> async def ask() -> str:
        ...     return (await (await aget_llm()).ainvoke("hello")).content
        >>> with set_pool(pool):
        ...     asyncio.run(ask())
        'hi'
    """
    _check(scope, llm_id)
    return await get_pool().aget_llm(llm_id, scope)


async def aget_llm_with_fallback(
    scope: str = "global",
    *,
    fallbacks: Sequence[BaseChatModel] = (),
    policy: FallbackPolicy | None = None,
) -> FallbackChatModel:
    """Async twin of `get_llm_with_fallback`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"id": "abc-123-def-456", "name": "Fake", "provider": "fake",
        ...          "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]
        >>> pool = LLMPool(repository=InMemoryStore(rows), poll_interval=0)
        >>> async def ask() -> str:
        ...     return (await (await aget_llm_with_fallback()).ainvoke("hello")).content
        >>> with set_pool(pool):
        ...     asyncio.run(ask())
        'hi'
    """
    _check(scope)
    return await get_pool().aget_llm_with_fallback(scope, fallbacks=fallbacks, policy=policy)


def get_embeddings(scope: str = "global", llm_id: str | None = None) -> Embeddings:
    """Return the scope's default embedding model, or one embedding row's by id.

    See `LLMPool.get_embeddings`. Chat functions never see embedding rows, and this function
    never serves a chat row (`llmpool.errors.WrongKindError`).

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"name": "Vectors", "provider": "fake", "model_name": "m",
        ...          "kind": "embedding", "is_default": True, "config": {"dimensions": 4}}]
        >>> with set_pool(LLMPool(repository=InMemoryStore(rows), poll_interval=0)):
        ...     len(get_embeddings().embed_query("What is Python?"))
        4
    """
    _check(scope, llm_id)
    return get_pool().get_embeddings(scope, llm_id)


def get_embeddings_with_fallback(
    scope: str = "global", *, space: str | None = None, policy: FallbackPolicy | None = None
) -> FallbackEmbeddings:
    """Return live embeddings over the scope's embedding rows of one vector space.

    See `LLMPool.get_embeddings_with_fallback`: the rows fail over as chat rows do, but only
    within one space, and each answer says which row and space produced it.

    Example:
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"name": "Vectors", "provider": "fake", "model_name": "m",
        ...          "kind": "embedding"}]
        >>> with set_pool(LLMPool(repository=InMemoryStore(rows), poll_interval=0)):
        ...     vectors = get_embeddings_with_fallback().embed_documents(["a", "b"])
        >>> len(vectors), vectors.response_metadata["llmpool"]["space"]
        (2, 'm')
    """
    _check(scope)
    return get_pool().get_embeddings_with_fallback(scope, space=space, policy=policy)


async def aget_embeddings(scope: str = "global", llm_id: str | None = None) -> Embeddings:
    """Async twin of `get_embeddings`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"name": "Vectors", "provider": "fake", "model_name": "m",
        ...          "kind": "embedding", "is_default": True, "config": {"dimensions": 4}}]
        >>> async def embed() -> int:
        ...     return len(await (await aget_embeddings()).aembed_query("hello"))
        >>> with set_pool(LLMPool(repository=InMemoryStore(rows), poll_interval=0)):
        ...     asyncio.run(embed())
        4
    """
    _check(scope, llm_id)
    return await get_pool().aget_embeddings(scope, llm_id)


async def aget_embeddings_with_fallback(
    scope: str = "global", *, space: str | None = None, policy: FallbackPolicy | None = None
) -> FallbackEmbeddings:
    """Async twin of `get_embeddings_with_fallback`.

    Example:
        >>> import asyncio
        >>> from llmpool import LLMPool
        >>> from llmpool.repository.memory import InMemoryStore
        >>> rows = [{"name": "Vectors", "provider": "fake", "model_name": "m",
        ...          "kind": "embedding"}]
        >>> async def embed() -> str:
        ...     vectors = await (await aget_embeddings_with_fallback()).aembed_documents(["a"])
        ...     return vectors.response_metadata["llmpool"]["name"]
        >>> with set_pool(LLMPool(repository=InMemoryStore(rows), poll_interval=0)):
        ...     asyncio.run(embed())
        'Vectors'
    """
    _check(scope)
    return await get_pool().aget_embeddings_with_fallback(scope, space=space, policy=policy)
