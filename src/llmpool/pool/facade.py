"""`LLMPool`: the facade that serves the table's rows as chat models, and the seed's functions.

A pool owns a repository (a store, when it can be written), the provider registry, a cache of
built models keyed by ``(row id, row version)`` so their HTTP connection pools stay warm
(`llmpool.pool.cache`), the circuit breakers, and the snapshot of the table that a watcher keeps
current without a restart (`llmpool.pool.snapshots`). After the first load, serving a chain costs
no database round trip.

The usage guide's module functions (`get_llm`, `get_llm_with_fallback`, ...) live in
`llmpool.api`, over a default pool built lazily from configuration.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.credentials.allowlist import EnvAllowlist
from llmpool.errors import (
    InvalidDefaultLLMError,
    LLMPoolError,
    ProviderLoadError,
)
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import MAX_LENGTHS, LLMConfig, check_argument
from llmpool.pool.cache import ModelCache
from llmpool.pool.snapshots import SnapshotKeeper
from llmpool.repository import LLMStore, no_default_error, not_found_error, sort_key

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.fallback.breakers import BreakerStore
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.walk import Candidate
    from llmpool.pool.watch import Watcher
    from llmpool.providers import ProviderRegistry
    from llmpool.repository import LLMRepository, Snapshot

__all__ = ["LLMPool"]

logger = logging.getLogger(__name__)


def _check_scope(scope: str) -> None:
    check_argument("scope", scope, MAX_LENGTHS["scope"])


def _default_of(snapshot: Snapshot, scope: str) -> LLMConfig | None:
    for config in snapshot.configs:
        if config.scope == scope and config.is_default:
            return config
    return None


class LLMPool:
    """Rows of the ``llms`` table, served as LangChain chat models.

    Args:
        database: An engine or URL; ``None`` for the configured database
            (``LLMPOOL_DATABASE_URL``, ``DATABASE_URL``, else ``./llmpool.sqlite3``).
        repository: Read rows from this instead (an `InMemoryStore`, a custom source).
        async_database: The async engine (or its URL) the ``aget_*`` methods read through.
            By default: an async engine on the same URL when llmpool made the engine from a
            URL; when you passed an `Engine` (whose ``creator`` or ``connect_args`` an async
            engine could not copy), the sync engine in a worker thread.
        registry: The provider registry; the process-wide one by default.
        allowlist: Environment variables rows may reference; from the environment by default.
        policy: Retry, deadline and circuit-breaker settings of the fallback chains.
        poll_interval: Seconds between change checks (the safety net under NOTIFY, and all
            there is without it); ``0`` to never look for changes.
        listen: Use PostgreSQL LISTEN/NOTIFY to see changes at once.
        listen_retry: Seconds before reopening a lost LISTEN connection; doubles on each
            failure, up to 30 s.
        breaker_store: Where circuit breaker state lives (e.g. a `RedisBreakerStore` shared by
            replicas); in-process by default.
        auto_migrate: Apply llmpool's migrations on first use; by default only for SQLite,
            where the database is embedded.
        retry_failed_builds_after: Seconds a row that could not be built (a missing variable,
            a plugin that raised) stays skipped before it is built again; a refresh retries it
            at once.
        clock: Monotonic seconds, for that delay; injectable for tests.

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
        async_database: AsyncEngine | str | URL | None = None,
        registry: ProviderRegistry | None = None,
        allowlist: EnvAllowlist | None = None,
        policy: FallbackPolicy | None = None,
        poll_interval: float = 1.0,
        listen: bool = True,
        listen_retry: float = 1.0,
        breaker_store: BreakerStore | None = None,
        auto_migrate: bool | None = None,
        retry_failed_builds_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        allow = allowlist if allowlist is not None else EnvAllowlist.from_env()
        if registry is not None and allow.registry is None:
            # Rows are checked against the providers this pool builds with.
            allow = dataclasses.replace(allow, registry=registry)
        self.allowlist = allow
        self.policy = policy if policy is not None else FallbackPolicy()
        self.breakers = BreakerBoard(breaker_store)
        self._registry = registry
        engine: Engine | None = None
        if repository is None:
            from llmpool.repository.sql.store import SQLStore

            sql_store = SQLStore(database, validators=[self.allowlist])
            engine = sql_store.engine
            repository = sql_store
            if auto_migrate is None:
                auto_migrate = engine.dialect.name == "sqlite"
        self.repository: LLMRepository = repository
        self._cache = ModelCache(
            self._build, retry_failed_after=retry_failed_builds_after, clock=clock
        )
        # scope -> (generation, when a skipped row is due for a rebuild or None, chain)
        self._chains: dict[str, tuple[int, float | None, tuple[Candidate, ...]]] = {}
        self._live: dict[str, FallbackChatModel] = {}
        self._snapshots = SnapshotKeeper(
            repository,
            self._pruned,
            engine=engine,
            database=database,
            async_database=async_database,
            poll_interval=poll_interval,
            listen=listen,
            listen_retry=listen_retry,
            auto_migrate=bool(auto_migrate),
        )

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
        self._snapshots.ensure_schema()
        return _RefreshingStore(self.repository, self._snapshots.refresh_after_write)

    # -- the snapshot --------------------------------------------------------------------------

    # -- the snapshot --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return the current snapshot of the table, loading it on first use."""
        return self._snapshots.current or self._snapshots.get()

    def refresh(self) -> Snapshot:
        """Reload the snapshot now (the watcher does this on every change).

        Returns:
            The pool's snapshot after the reload: the one just read, unless a newer one was
            installed meanwhile.
        """
        return self._snapshots.refresh()

    def _pruned(self, snapshot: Snapshot) -> None:
        # Rows that could not be built are dropped too, so a refresh retries them.
        self._cache.prune({(c.id, c.version) for c in snapshot.configs})
        self._chains.clear()

    @property
    def _watcher(self) -> Watcher | None:
        return self._snapshots.watcher

    def close(self) -> None:
        """Stop watching the table and release the database connections.

        Returns promptly: the watcher closes its LISTEN connection and ends within a fraction
        of a second, whatever ``poll_interval`` is.
        """
        self._snapshots.close()

    async def aclose(self) -> None:
        """`close` without blocking the event loop; also release the async engine llmpool made."""
        await self._snapshots.aclose()

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

        Raises:
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.
        """
        _check_scope(scope)
        return [
            c
            for c in self.snapshot().configs
            if c.scope == scope and (c.enabled or not enabled_only)
        ]

    def get_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row.

        Raises:
            NoDefaultLLMError: "No default LLM configured for scope ...".
            InvalidDefaultLLMError: The scope's default row fails validation (a
                `NoDefaultLLMError` naming the row and why).
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.
        """
        _check_scope(scope)
        snapshot = self.snapshot()
        config = _default_of(snapshot, scope)
        if config is not None:
            return config
        if snapshot.bad_rows:
            self._raise_invalid_default(scope)
        raise no_default_error(scope)

    def _raise_invalid_default(self, scope: str) -> None:
        # Bad rows carry no scope: the repository's own lookup names an invalid default row.
        # Only on this error path, and only when some row failed validation.
        try:
            self.repository.get_default(scope)
        except InvalidDefaultLLMError:
            raise
        except Exception as error:  # none there either, or the database is down
            logger.debug("no invalid default row found: %s", type(error).__name__)

    def _config(self, llm_id: str) -> LLMConfig:
        check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
        for config in self.snapshot().configs:
            if config.id == llm_id:
                return config
        raise not_found_error(llm_id)

    # -- models --------------------------------------------------------------------------------

    def _build(self, config: LLMConfig) -> BaseChatModel:
        try:
            return self.registry.build(config, allowlist=self.allowlist)
        except LLMPoolError:
            raise
        except Exception as exc:  # a plugin's bug must skip its row, not break the chain
            text = str(exc).strip()
            first = f": {text.splitlines()[0][:200]}" if text else ""
            msg = (
                f"{config.describe()}: provider {config.provider!r} failed to build the chat "
                f"model: {type(exc).__name__}{first}"
            )
            raise ProviderLoadError(msg, distribution=self._distribution(config)) from exc

    def _distribution(self, config: LLMConfig) -> str | None:
        try:
            return self.registry.distribution_of(config.provider)
        except LLMPoolError:
            return None

    def create_llm_instance(self, config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
        """Build the chat model of a row (cached per row id and version).

        Args:
            config: An `LLMConfig`, or a mapping with its fields.

        Raises:
            MissingSecretError, ProviderNotInstalledError, UnknownProviderError,
            UnsupportedParameterError, EnvNotAllowedError: The row cannot be built.
            ProviderLoadError: The provider raised something else while building.
        """
        if not isinstance(config, LLMConfig):
            config = LLMConfig.from_row({"id": "adhoc", **dict(config)})
        candidate = self._cache.get(config)
        if candidate.model is None:
            assert candidate.error is not None
            raise candidate.error
        return candidate.model

    def get_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Return the scope's default model, or one row's model by id.

        Raises:
            NoDefaultLLMError: No id given and the scope has no default.
            LLMNotFoundError: No row has that id.
            ArgumentTooLongError: ``llm_id`` or ``scope`` is longer than any row's could be.
        """
        _check_scope(scope)
        config = self.get_default_llm_config(scope) if llm_id is None else self._config(llm_id)
        return self.create_llm_instance(config)

    def _chain(self, scope: str) -> tuple[Candidate, ...]:
        snapshot = self.snapshot()
        cached = self._chains.get(scope)
        if (
            cached is not None
            and cached[0] == snapshot.generation
            and (cached[1] is None or self._cache.clock() < cached[1])
        ):
            return cached[2]
        rows = sorted((c for c in snapshot.configs if c.scope == scope and c.enabled), key=sort_key)
        chain = tuple(self._cache.get(c) for c in rows)
        due = [at for c in chain if (at := self._cache.retry_due(c)) is not None]
        self._chains[scope] = (snapshot.generation, min(due) if due else None, chain)
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
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.
        """
        from llmpool.fallback.model import ensure_buildable

        _check_scope(scope)
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
        from llmpool.fallback.model import FallbackChatModel

        return FallbackChatModel(
            source=lambda: self._chain(scope),
            fallbacks=tuple(fallbacks),
            policy=policy or self.policy,
            breakers=self.breakers,
            scope=scope,
        )

    # -- async ---------------------------------------------------------------------------------

    async def aget_llms_from_db(
        self, enabled_only: bool = True, scope: str = "global"
    ) -> list[LLMConfig]:
        """Async twin of `get_llms_from_db`."""
        _check_scope(scope)
        await self._snapshots.aget()
        return self.get_llms_from_db(enabled_only, scope)

    async def aget_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Async twin of `get_default_llm_config`."""
        _check_scope(scope)
        snapshot = await self._snapshots.aget()
        config = _default_of(snapshot, scope)
        if config is not None:
            return config
        if snapshot.bad_rows:  # the error path may read the table: not on the event loop
            import asyncio

            return await asyncio.to_thread(self.get_default_llm_config, scope)
        raise no_default_error(scope)

    async def aget_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Async twin of `get_llm`."""
        _check_scope(scope)
        if llm_id is not None:
            check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
        await self._snapshots.aget()
        if llm_id is None:
            return self.create_llm_instance(await self.aget_default_llm_config(scope))
        return self.get_llm(llm_id, scope)

    async def aget_llm_with_fallback(
        self,
        scope: str = "global",
        *,
        fallbacks: Sequence[BaseChatModel] = (),
        policy: FallbackPolicy | None = None,
    ) -> FallbackChatModel:
        """Async twin of `get_llm_with_fallback`."""
        _check_scope(scope)
        await self._snapshots.aget()
        return self.get_llm_with_fallback(scope, fallbacks=fallbacks, policy=policy)


class _RefreshingStore:
    """The pool's store: every successful write refreshes the pool's snapshot at once.

    A write is committed before the refresh; when the refresh fails (the database went away
    in between), the write still returns its result, the failure is logged once, and the
    watcher catches up.
    """

    _WRITES = frozenset({"add", "add_many", "update", "delete", "enable", "disable", "set_default"})

    def __init__(self, store: LLMStore, refresh: Callable[[], None]) -> None:
        self._store = store
        self._refresh = refresh

    def __repr__(self) -> str:
        return repr(self._store)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._WRITES:
            return attr

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            self._refresh()
            return result

        return write
