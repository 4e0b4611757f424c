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
from llmpool.pool.options import PoolOptions
from llmpool.pool.snapshots import SnapshotKeeper
from llmpool.repository import (
    CommitNotifier,
    LLMRepository,
    LLMStore,
    no_default_error,
    not_found_error,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from sqlalchemy.engine import URL, Engine

    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.walk import Candidate
    from llmpool.pool.explain import ChainStep
    from llmpool.pool.watch import Watcher
    from llmpool.providers import ProviderRegistry
    from llmpool.repository import Snapshot
    from llmpool.repository.sql.store import SQLStore

__all__ = ["LLMPool", "PoolOptions"]

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
        source: Where rows come from: an engine or URL (the pool makes a `SQLStore` on it,
            and closes it with the pool), a store or repository of yours (an `InMemoryStore`,
            a `SQLStore`, a custom source: left open), or ``None`` for the configured
            database (``LLMPOOL_DATABASE_URL``, ``DATABASE_URL``, else ``./llmpool.sqlite3``).
        options: How the pool builds, watches and reads (`PoolOptions`).
        repository: The same as passing a repository as ``source``.
        **settings: Any field of `PoolOptions` (``poll_interval=0``, ``registry=...``), taken
            over the ones in ``options``.

    The pool subscribes to its store: every committed write, through `store` or straight to
    the store, reloads the pool's snapshot at once.

    Example:
        >>> from llmpool.repository.memory import InMemoryStore
        >>> pool = LLMPool(InMemoryStore([{"name": "Fake", "provider": "fake",
        ...     "model_name": "echo", "is_default": True, "config": {"responses": ["hi"]}}]),
        ...     options=PoolOptions(poll_interval=0))
        >>> pool.get_llm_with_fallback().invoke("hello").content
        'hi'
        >>> pool.close()
    """

    def __init__(
        self,
        source: Engine | str | URL | LLMRepository | None = None,
        *,
        options: PoolOptions | None = None,
        repository: LLMRepository | None = None,
        **settings: Any,
    ) -> None:
        options = options if options is not None else PoolOptions()
        if settings:
            options = dataclasses.replace(options, **settings)
        self.options = options
        if repository is not None:
            source = repository
        allow = options.allowlist if options.allowlist is not None else EnvAllowlist.from_env()
        if options.registry is not None and allow.registry is None:
            # Rows are checked against the providers this pool builds with.
            allow = dataclasses.replace(allow, registry=options.registry)
        self.allowlist = allow
        self.policy = options.policy if options.policy is not None else FallbackPolicy()
        self.breakers = BreakerBoard(options.breaker_store)
        self._registry = options.registry
        self._owned: SQLStore | None = None
        if not isinstance(source, LLMRepository):  # an engine, a URL, or the configured one
            from llmpool.providers import ConfigKeysCheck
            from llmpool.repository.sql.store import SQLStore

            source = self._owned = SQLStore(
                source,
                validators=[self.allowlist, ConfigKeysCheck(registry=options.registry)],
                async_engine=options.async_database,
                auto_migrate=options.auto_migrate,
            )
        self.repository: LLMRepository = source
        self._cache = ModelCache(
            self._build, retry_failed_after=options.retry_failed_builds_after, clock=options.clock
        )
        # scope -> (generation, when a skipped row is due for a rebuild or None, chain)
        self._chains: dict[str, tuple[int, float | None, tuple[Candidate, ...]]] = {}
        self._live: dict[str, FallbackChatModel] = {}
        self._snapshots = SnapshotKeeper(
            source,
            self._pruned,
            poll_interval=options.poll_interval,
            listen=options.listen,
            listen_retry=options.listen_retry,
        )
        self._unsubscribe: Callable[[], None] | None = None
        if isinstance(source, CommitNotifier):
            self._unsubscribe = source.subscribe(self._snapshots.refresh_after_write)

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
        """The pool's store, the admin API: its committed writes are seen by this pool at once.

        Raises:
            LLMPoolError: The pool's repository is read-only.
        """
        if not isinstance(self.repository, LLMStore):
            msg = f"{self.repository!r} is read-only: it has no admin API"
            raise LLMPoolError(msg)
        return self.repository

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
        """Stop watching the table and close the store the pool made from a URL or engine.

        Returns promptly: the watcher closes its LISTEN connection and ends within a fraction
        of a second, whatever ``poll_interval`` is. A store you passed is left open.
        """
        self._stop()
        if self._owned is not None:
            self._owned.close()

    async def aclose(self) -> None:
        """`close` without blocking the event loop; also release the async engine llmpool made."""
        import asyncio

        await asyncio.to_thread(self._stop)
        if self._owned is not None:
            await self._owned.aclose()

    def _stop(self) -> None:
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        self._snapshots.close()

    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configs -------------------------------------------------------------------------------

    def explain(self, scope: str = "global") -> list[ChainStep]:
        """Return the scope's rows in the order a call would try them, and why any would not be
        tried (disabled, not buildable, breaker cooling down): the pool's own view.

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> pool = LLMPool(repository=InMemoryStore([
            ...     {"name": "On", "provider": "fake", "model_name": "m"}]))
            >>> [(step.name, step.status) for step in pool.explain()]
            [('On', 'would be tried')]
            >>> pool.close()
        """
        from llmpool.pool.explain import explain_chain

        check_argument("scope", scope, MAX_LENGTHS["scope"])
        return explain_chain(self, scope)

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
        from llmpool.fallback.routing import PriorityRouting

        rows = [c for c in snapshot.configs if c.scope == scope and c.enabled]
        # The same routing every call's walk applies: the walk then finds the chain in order.
        chain = tuple(PriorityRouting().order(tuple(self._cache.get(c) for c in rows)))
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
        from llmpool.fallback.routing import PriorityRouting

        return FallbackChatModel(
            source=lambda: self._chain(scope),
            fallbacks=tuple(fallbacks),
            policy=policy or self.policy,
            breakers=self.breakers,
            scope=scope,
            routing=PriorityRouting(),
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
