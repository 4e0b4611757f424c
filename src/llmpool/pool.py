"""`LLMPool`: the facade that serves the table's rows as chat models, and the seed's functions.

A pool owns a repository (a store, when it can be written), the provider registry, a cache of
built models keyed by ``(row id, row version)`` so their HTTP connection pools stay warm, the
circuit breakers, and a watcher that keeps its snapshot of the table current without a restart.
After the first load, serving a chain costs no database round trip.

The usage guide's module functions (`get_llm`, `get_llm_with_fallback`, ...) live in
`llmpool.functions`, over a default pool built lazily from configuration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.breaker import BreakerBoard
from llmpool.credentials import EnvAllowlist
from llmpool.errors import LLMNotFoundError, LLMPoolError, NoDefaultLLMError
from llmpool.models import LLMConfig
from llmpool.policy import FallbackPolicy
from llmpool.repository import LLMStore, sort_key

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from sqlalchemy.engine import URL, Engine

    from llmpool.breaker import BreakerStore
    from llmpool.fallback import Candidate, FallbackChatModel
    from llmpool.providers import ProviderRegistry
    from llmpool.repository import AsyncLLMRepository, LLMRepository, Snapshot
    from llmpool.watch import Watcher

__all__ = ["LLMPool"]

logger = logging.getLogger(__name__)


def _no_default(scope: str) -> NoDefaultLLMError:
    return NoDefaultLLMError(
        f"No default LLM configured for scope {scope!r}: mark one with "
        "store.set_default(id) or `llmpool set-default ID`"
    )


class LLMPool:
    """Rows of the ``llms`` table, served as LangChain chat models.

    Args:
        database: An engine or URL; ``None`` for the configured database
            (``LLMPOOL_DATABASE_URL``, ``DATABASE_URL``, else ``./llmpool.sqlite3``).
        repository: Read rows from this instead (an `InMemoryStore`, a custom source).
        registry: The provider registry; the process-wide one by default.
        allowlist: Environment variables rows may reference; from the environment by default.
        policy: Retry, deadline and circuit-breaker settings of the fallback chains.
        poll_interval: Seconds between change checks when NOTIFY is unavailable.
        listen: Use PostgreSQL LISTEN/NOTIFY to see changes at once.
        breaker_store: Where circuit breaker state lives (e.g. a `RedisBreakerStore` shared by
            replicas); in-process by default.
        auto_migrate: Apply llmpool's migrations on first use; by default only for SQLite,
            where the database is embedded.

    Example:
        >>> from llmpool.repository.memory import InMemoryStore
        >>> pool = LLMPool(repository=InMemoryStore([{"name": "Fake", "provider": "fake",
        ...     "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]))
        >>> pool.get_llm_with_fallback().invoke("hello").content
        'hi'
        >>> pool.close()
    """

    def __init__(
        self,
        database: Engine | str | URL | None = None,
        *,
        repository: LLMRepository | None = None,
        registry: ProviderRegistry | None = None,
        allowlist: EnvAllowlist | None = None,
        policy: FallbackPolicy | None = None,
        poll_interval: float = 1.0,
        listen: bool = True,
        breaker_store: BreakerStore | None = None,
        auto_migrate: bool | None = None,
    ) -> None:
        self.allowlist = allowlist if allowlist is not None else EnvAllowlist.from_env()
        self.policy = policy if policy is not None else FallbackPolicy()
        self.breakers = BreakerBoard(breaker_store)
        self.poll_interval = poll_interval
        self._registry = registry
        self._engine: Engine | None = None
        self._database = database
        self._async_repository: AsyncLLMRepository | None = None
        if repository is None:
            from llmpool.repository.sql import SQLStore

            sql_store = SQLStore(database, validators=[self.allowlist])
            self._engine = sql_store.engine
            repository = sql_store
            if auto_migrate is None:
                auto_migrate = sql_store.engine.dialect.name == "sqlite"
        self.repository: LLMRepository = repository
        self._auto_migrate = bool(auto_migrate)
        self._listen = listen
        self._snapshot: Snapshot | None = None
        self._load_lock = threading.Lock()
        self._build_locks: dict[tuple[str, int], threading.Lock] = {}
        self._build_locks_guard = threading.Lock()
        self._models: dict[tuple[str, int], Candidate] = {}
        self._chains: dict[str, tuple[int, tuple[Candidate, ...]]] = {}
        self._live: dict[str, FallbackChatModel] = {}
        self._watcher: Watcher | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<LLMPool repository={self.repository!r}>"

    @property
    def registry(self) -> ProviderRegistry:
        """The provider registry this pool builds with."""
        if self._registry is None:
            from llmpool.providers import get_registry

            return get_registry()
        return self._registry

    @property
    def store(self) -> LLMStore:
        """The admin API: writes go through the allowlist and are seen by this pool at once.

        Raises:
            LLMPoolError: The pool's repository is read-only.
        """
        if not isinstance(self.repository, LLMStore):
            msg = f"{self.repository!r} is read-only: it has no admin API"
            raise LLMPoolError(msg)
        self._ensure_schema()
        return _RefreshingStore(self.repository, self)

    def _ensure_schema(self) -> None:
        if self._auto_migrate:
            with self._load_lock:
                if self._auto_migrate:
                    from llmpool.migrate import migrate

                    migrate(self._engine)
                    self._auto_migrate = False

    # -- the snapshot --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return the current snapshot of the table, loading it on first use."""
        snapshot = self._snapshot
        if snapshot is None:
            self._ensure_schema()
            with self._load_lock:
                if self._snapshot is None:
                    self._snapshot = self.repository.snapshot()
                    self._start_watcher(self._snapshot.generation)
                snapshot = self._snapshot
        return snapshot

    def refresh(self) -> Snapshot:
        """Reload the snapshot now (the watcher does this on every change)."""
        snapshot = self.repository.snapshot()
        with self._load_lock:
            if self._snapshot is None or snapshot.generation >= self._snapshot.generation:
                self._snapshot = snapshot
            live = {(c.id, c.version) for c in snapshot.configs}
            for key in [k for k in self._models if k not in live]:
                self._models.pop(key, None)
        return snapshot

    def _on_change(self, generation: int) -> None:
        self.refresh()

    def _start_watcher(self, generation: int) -> None:
        if self._closed or self.poll_interval <= 0:
            return
        from llmpool.watch import Watcher

        engine = self._engine if self._listen else None
        self._watcher = Watcher(
            self.repository,
            self._on_change,
            poll_interval=self.poll_interval,
            engine=engine,
        )
        self._watcher.start(generation)

    def close(self) -> None:
        """Stop watching the table and release the database connections."""
        self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
        if self._engine is not None and self._database is not self._engine:
            self._engine.dispose()

    async def aclose(self) -> None:
        """`close`, and also release the async engine's connections."""
        self.close()
        repository = self._async_repository
        if repository is not None and hasattr(repository, "aclose"):
            await repository.aclose()

    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configs -------------------------------------------------------------------------------

    def get_llms_from_db(self, enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
        """Return the scope's rows in priority order (ties by name, then id).

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> LLMPool(repository=InMemoryStore(), poll_interval=0).get_llms_from_db()
            []
        """
        return [
            c
            for c in self.snapshot().configs
            if c.scope == scope and (c.enabled or not enabled_only)
        ]

    def get_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row.

        Raises:
            NoDefaultLLMError: "No default LLM configured for scope ...".
        """
        for config in self.snapshot().configs:
            if config.scope == scope and config.is_default:
                return config
        raise _no_default(scope)

    def _config(self, llm_id: str) -> LLMConfig:
        for config in self.snapshot().configs:
            if config.id == llm_id:
                return config
        raise LLMNotFoundError(f"No LLM with id {llm_id!r}")

    # -- models --------------------------------------------------------------------------------

    def _candidate(self, config: LLMConfig) -> Candidate:
        key = (config.id, config.version)
        cached = self._models.get(key)
        if cached is not None and cached.config == config:
            return cached
        with self._build_locks_guard:
            lock = self._build_locks.setdefault(key, threading.Lock())
        from llmpool.fallback import Candidate

        with lock:  # a stampede on one row builds it once
            cached = self._models.get(key)
            if cached is not None and cached.config == config:
                return cached
            try:
                candidate = Candidate(config, model=self._build(config))
            except LLMPoolError as error:
                candidate = Candidate(config, error=error)
            self._models[key] = candidate
        with self._build_locks_guard:
            self._build_locks.pop(key, None)
        return candidate

    def _build(self, config: LLMConfig) -> BaseChatModel:
        return self.registry.build(config, allowlist=self.allowlist)

    def create_llm_instance(self, config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
        """Build the chat model of a row (cached per row id and version).

        Args:
            config: An `LLMConfig`, or a mapping with its fields.

        Raises:
            MissingSecretError, ProviderNotInstalledError, UnknownProviderError,
            UnsupportedParameterError, EnvNotAllowedError: The row cannot be built.
        """
        if not isinstance(config, LLMConfig):
            config = LLMConfig.from_row({"id": "adhoc", **dict(config)})
        candidate = self._candidate(config)
        if candidate.model is None:
            assert candidate.error is not None
            raise candidate.error
        return candidate.model

    def get_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Return the scope's default model, or one row's model by id.

        Raises:
            NoDefaultLLMError: No id given and the scope has no default.
            LLMNotFoundError: No row has that id.
        """
        config = self.get_default_llm_config(scope) if llm_id is None else self._config(llm_id)
        return self.create_llm_instance(config)

    def _chain(self, scope: str) -> tuple[Candidate, ...]:
        snapshot = self.snapshot()
        cached = self._chains.get(scope)
        if cached is not None and cached[0] == snapshot.generation:
            return cached[1]
        rows = sorted((c for c in snapshot.configs if c.scope == scope and c.enabled), key=sort_key)
        chain = tuple(self._candidate(c) for c in rows)
        self._chains[scope] = (snapshot.generation, chain)
        return chain

    def get_llm_with_fallback(
        self,
        scope: str = "global",
        *,
        fallbacks: Sequence[BaseChatModel] = (),
        policy: FallbackPolicy | None = None,
    ) -> FallbackChatModel:
        """Return a live chat model over the scope's enabled rows, in priority order.

        The model re-reads the pool's current chain at every call, so it follows changes to
        the table (a disabled row, a new priority) without being rebuilt.

        Args:
            scope: Whose rows.
            fallbacks: Models supplied in code, tried after the rows (e.g. a local Ollama).
            policy: Overrides the pool's policy for this model.

        Raises:
            AllLLMsFailedToInitializeError: "All LLMs failed to initialize": no row could be
                built (and no code fallback was given); lists every row and why.
        """
        from llmpool.fallback import ensure_buildable

        chain = self._chain(scope)
        if not fallbacks:
            ensure_buildable(chain, scope=scope)
            if policy is None:
                live = self._live.get(scope)
                if live is None:
                    live = self._live.setdefault(scope, self._fallback_model(scope, (), None))
                return live
        return self._fallback_model(scope, fallbacks, policy)

    def _fallback_model(
        self, scope: str, fallbacks: Sequence[BaseChatModel], policy: FallbackPolicy | None
    ) -> FallbackChatModel:
        from llmpool.fallback import FallbackChatModel

        return FallbackChatModel(
            source=lambda: self._chain(scope),
            fallbacks=tuple(fallbacks),
            policy=policy or self.policy,
            breakers=self.breakers,
            scope=scope,
        )

    # -- async ---------------------------------------------------------------------------------

    def _async_repo(self) -> AsyncLLMRepository | None:
        if self._async_repository is None and self._engine is not None:
            from llmpool.repository.sql import AsyncSQLRepository

            self._async_repository = AsyncSQLRepository(self._engine.url)
        return self._async_repository

    async def _asnapshot(self) -> Snapshot:
        if self._snapshot is not None:
            return self._snapshot
        repo = self._async_repo()
        if repo is None or self._auto_migrate:
            import asyncio

            return await asyncio.to_thread(self.snapshot)
        snapshot = await repo.snapshot()
        with self._load_lock:
            if self._snapshot is None:
                self._snapshot = snapshot
                self._start_watcher(snapshot.generation)
            return self._snapshot

    async def aget_llms_from_db(
        self, enabled_only: bool = True, scope: str = "global"
    ) -> list[LLMConfig]:
        """Async twin of `get_llms_from_db`."""
        await self._asnapshot()
        return self.get_llms_from_db(enabled_only, scope)

    async def aget_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Async twin of `get_default_llm_config`."""
        await self._asnapshot()
        return self.get_default_llm_config(scope)

    async def aget_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Async twin of `get_llm`."""
        await self._asnapshot()
        return self.get_llm(llm_id, scope)

    async def aget_llm_with_fallback(
        self,
        scope: str = "global",
        *,
        fallbacks: Sequence[BaseChatModel] = (),
        policy: FallbackPolicy | None = None,
    ) -> FallbackChatModel:
        """Async twin of `get_llm_with_fallback`."""
        await self._asnapshot()
        return self.get_llm_with_fallback(scope, fallbacks=fallbacks, policy=policy)


class _RefreshingStore:
    """The pool's store: every successful write refreshes the pool's snapshot at once."""

    _WRITES = frozenset({"add", "update", "delete", "enable", "disable", "set_default"})

    def __init__(self, store: LLMStore, pool: LLMPool) -> None:
        self._store = store
        self._pool = pool

    def __repr__(self) -> str:
        return repr(self._store)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if self._pool._snapshot is not None:
                self._pool.refresh()
            return result

        return write
