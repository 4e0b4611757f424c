"""`LLMPool`: the composition root that serves the table's rows as chat models and embeddings.

It wires one store, one `ChainBuilder` and its `Chains`, the runtime boards the chains share and
the observers; every call of a scope, and `status`, read the scope's one `ScopeChain`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.chain.builder import ChainBuilder, Chains, ensure_buildable
from llmpool.chain.quotas import QuotaCheck
from llmpool.contracts import AdmissionCheck, breaker_key
from llmpool.errors import LLMPoolError
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.embeddings import FallbackEmbeddings
from llmpool.fallback.model import FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.limits import RateLimiter
from llmpool.models import MAX_LENGTHS, LLMConfig, check_argument
from llmpool.observe.events import ReloadEvent
from llmpool.pool import health, rows
from llmpool.pool.accounts import Accounts, twin
from llmpool.pool.options import PoolOptions
from llmpool.pool.rows import check_lookup
from llmpool.pool.snapshots import SnapshotKeeper
from llmpool.repository import LLMRepository, LLMStore
from llmpool.repository.spaces import SpaceDimensions

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from sqlalchemy.engine import URL, Engine

    from llmpool.fallback.verdicts import Judge
    from llmpool.pool.watch import Watcher
    from llmpool.providers import ProviderRegistry
    from llmpool.repository import Snapshot
    from llmpool.repository.quotas import Quota
    from llmpool.repository.sql.store import SQLStore

__all__ = ["LLMPool", "PoolOptions"]


class LLMPool(Accounts):
    """Rows of the ``llms`` table, served as LangChain chat models and embeddings.

    Args:
        source: Where rows come from: an engine or URL (the pool makes a `SQLStore` on it,
            and closes it with the pool), a store or repository of yours (an `InMemoryStore`,
            a `SQLStore`, a custom source: left open), or ``None`` for the configured
            database (``LLMPOOL_DATABASE_URL``, ``DATABASE_URL``, else ``./llmpool.sqlite3``).
        options: How the pool builds, watches and reads (`PoolOptions`).
        repository: The same as passing a repository as ``source``.
        **settings: Any field of `PoolOptions` (``poll_interval=0``, ``registry=...``), taken
            over the ones in ``options``.

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
        self.options = options = dataclasses.replace(options or PoolOptions(), **settings)
        source = repository if repository is not None else source
        self.allowlist = options.rows_allowlist()
        # Each row's calls (for routing and `status`), breakers, limits: the fleet's with redis=.
        self.stats, breaker_store, limits = options.boards()
        self._observers = (self.stats, *options.observers)
        self.policy = self._observed(options.policy or FallbackPolicy())
        self.breakers = BreakerBoard(breaker_store)
        self.affinity = options.affinity(self.stats)  # which row serves each session_key
        self.limiter = RateLimiter(limits)
        self._owned: SQLStore | None = None
        if not isinstance(source, LLMRepository):  # an engine, a URL, or the configured one
            source = self._owned = options.sql_store(source, self.allowlist)
        self.repository: LLMRepository = source
        checks: list[AdmissionCheck] = [self.stats, self.limiter]
        self.usage_meter = options.usage_meter(source)
        self.feedback_log = options.feedback_log(source, self.stats)  # experiment calls
        if self.usage_meter is not None:  # calls counted per row and minute; rows' budgets
            from llmpool.usage.check import UsageCheck

            checks.append(UsageCheck(self.usage_meter))
        # The quotas of llm_quotas, as the snapshot in force holds them.
        self.quota_check = QuotaCheck(
            self._quotas, limits=self.limiter.store, meter=self.usage_meter
        )
        checks.append(self.quota_check)
        self.builder = ChainBuilder(
            options.registry,
            self.allowlist,
            hooks=self.policy.hooks,
            retry_failed_after=options.retry_failed_builds_after,
            clock=options.clock,
        )
        self._snapshots = SnapshotKeeper(source, self._reloaded, options)
        self.chains = Chains(
            self._snapshots,
            self.builder,
            checks=[*checks, *options.admissions],
            stats=self.stats,
            seed=options.routing_seed,
            note=self.feedback_log.note,
        )
        self.dimensions = SpaceDimensions(getattr(source, "record_space", None))
        self._generation: int | None = None
        self._live: dict[tuple[str, str, str | None], Any] = {}  # the models served per scope

    def __repr__(self) -> str:
        return f"<LLMPool repository={self.repository!r}>"

    @property
    def registry(self) -> ProviderRegistry:
        """The provider registry this pool builds with."""
        return self.builder.registry

    @property
    def store(self) -> LLMStore:
        """The pool's store, the admin API (`LLMPoolError` when read-only): its committed writes
        are seen by this pool at once."""
        if not isinstance(self.repository, LLMStore):
            msg = f"{self.repository!r} is read-only: it has no admin API"
            raise LLMPoolError(msg)
        return self.repository

    # -- the snapshot and its lifecycle --------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """Return the current snapshot of the table, loading it on first use."""
        return self._snapshots.get()

    def refresh(self) -> Snapshot:
        """Reload the snapshot now (the watcher does this on every change); return it."""
        return self._snapshots.refresh()

    @property
    def watcher(self) -> Watcher | None:
        """What follows the table's changes, once the first load started it (`Watcher`)."""
        return self._snapshots.watcher

    def _quotas(self) -> tuple[Quota, ...]:
        snapshot = self._snapshots.current
        return () if snapshot is None else snapshot.quotas

    def _observed(self, policy: FallbackPolicy) -> FallbackPolicy:
        # The pool's observers (its row statistics, then the user's) after the policy's own.
        mine = [o for o in self._observers if all(o is not p for p in policy.observers)]
        return dataclasses.replace(policy, observers=(*policy.observers, *mine)) if mine else policy

    def _reloaded(self, snapshot: Snapshot) -> None:
        previous, self._generation = self._generation, snapshot.generation
        rows, bad = len(snapshot.configs), len(snapshot.bad_rows)
        keys = {breaker_key(c.id, c.version) for c in snapshot.configs}
        self.stats.forget(keys, {c.id for c in snapshot.configs})
        self.breakers.forget(keys)
        self.policy.hooks.emit("on_reload", ReloadEvent(snapshot.generation, previous, rows, bad))
        self.builder.prune({(c.id, c.version) for c in snapshot.configs})
        self.chains.clear()

    def close(self) -> None:
        """Stop watching the table, flush the usage counted, and close a store the pool made."""
        self._stop()
        if self._owned is not None:
            self._owned.close()

    async def aclose(self) -> None:
        """`close` without blocking the event loop; also release the async engine llmpool made."""
        await asyncio.to_thread(self._stop)
        if self._owned is not None:
            await self._owned.aclose()

    def _stop(self) -> None:
        self._snapshots.close()
        self.stats.close()
        if self.usage_meter is not None:
            self.usage_meter.close()
        self.feedback_log.close()

    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- health and usage ----------------------------------------------------------------------

    def status(self, scope: str = "global", kind: str = "chat") -> health.ScopeStatus:
        """Return the scope's health, read from the chain its calls use (`llmpool.pool.health`):
        each row by priority with its verdict, and which would answer now; ``kind``: the chat
        chain (default) or the ``"embedding"`` one. A JSON-ready dict for a ``/health`` route."""
        check_lookup(scope)
        return health.scope_status(self, self.chains.get(scope, kind))

    def explain(
        self, scope: str = "global", kind: str = "chat", prompt: health.Messages | None = None
    ) -> list[health.ChainStep]:
        """Return `status`'s rows as verdicts: would each be tried now, and if not, why; with a
        ``prompt`` (text or messages), also whether each row fits it (`llmpool.providers.fit`)."""
        check_lookup(scope)
        return health.explain(health.scope_status(self, self.chains.get(scope, kind), prompt))

    def routing_of(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls (``priority``, ``weighted``, ...)."""
        check_lookup(scope)
        return self.snapshot().routing_of(scope)

    # -- rows --------------------------------------------------------------------------------

    def get_llms_from_db(self, enabled_only: bool = True, scope: str = "global") -> list[LLMConfig]:
        """Return the scope's chat rows in priority order (ties by name, then id)."""
        check_lookup(scope)
        return rows.scope_rows(self.snapshot(), scope, enabled_only)

    def get_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default chat row.

        Raises:
            NoDefaultLLMError: "No default LLM configured for scope ...", also when the
                default is disabled (naming it and the fix).
            InvalidDefaultLLMError: The scope's default row fails validation.
        """
        return self._row(scope, None, "chat")

    def _row(self, scope: str, llm_id: str | None, kind: str) -> LLMConfig:
        check_lookup(scope, llm_id)
        if llm_id is not None:
            return rows.find_row(self.snapshot(), llm_id, kind)
        return rows.default_row(self.snapshot(), self.repository, scope, kind)

    # -- models --------------------------------------------------------------------------------

    def create_llm_instance(self, config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
        """Build a row's chat model as served alone: its provider's client with its own
        retries (`llmpool.providers.chat.standalone_config`), cached per row version.

        Raises:
            ProviderError, MissingSecretError, EnvNotAllowedError: The row cannot be built.
        """
        if not isinstance(config, LLMConfig):
            config = LLMConfig.from_row({"id": "adhoc", **dict(config)})
        if config.kind != "chat":
            raise rows.wrong_kind_error(config)
        return self._built(config, standalone=True)  # type: ignore[no-any-return]

    def _built(self, config: LLMConfig, standalone: bool = False) -> Any:
        candidate = self.builder.candidate(config, standalone=standalone)
        if candidate.model is None:
            assert candidate.error is not None
            raise candidate.error
        return candidate.model

    def get_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Return the scope's default model, or one row's by id (as `create_llm_instance`).

        Raises:
            NoDefaultLLMError: No id given and the scope has no default.
            LLMNotFoundError: No row has that id.
        """
        return self.create_llm_instance(self._row(scope, llm_id, "chat"))

    def get_llm_with_fallback(
        self,
        scope: str = "global",
        *,
        fallbacks: Sequence[BaseChatModel] = (),
        policy: FallbackPolicy | None = None,
        accept: Judge | None = None,
    ) -> FallbackChatModel:
        """Return a live chat model over the scope's enabled rows, in priority order; it
        reads the scope's chain at every call, so it follows the table without a rebuild.

        Args:
            scope: Whose rows.
            fallbacks: Models supplied in code, tried after the rows (e.g. a local Ollama).
            policy: Overrides the pool's policy for this model.
            accept: The scope's own rule for answers (message -> keep it; falsy: the next
                row is tried), as ``FallbackPolicy.accept``; a call's ``accept=`` replaces it.

        Raises:
            AllLLMsFailedToInitializeError: "All LLMs failed to initialize": no row could be
                built (and no code fallback was given); lists every row and why.
        """
        check_lookup(scope)
        if not fallbacks:
            ensure_buildable(self.chains.get(scope).candidates, scope=scope)
        if accept is not None:
            policy = dataclasses.replace(policy or self.policy, accept=accept)
        key = ("chat", scope, None)
        if not fallbacks and policy is None and key in self._live:
            return self._live[key]  # type: ignore[no-any-return]
        self.stats.serve()  # counted calls: shared from now on, with redis=
        model = FallbackChatModel(
            chain=self.chains.source(scope),
            fallbacks=tuple(fallbacks),
            policy=self.policy if policy is None else self._observed(policy),
            breakers=self.breakers,
            scope=scope,
            affinity=self.affinity,
        )
        return self._live.setdefault(key, model) if not fallbacks and policy is None else model

    def get_embeddings(self, scope: str = "global", llm_id: str | None = None) -> Embeddings:
        """Return the scope's default embedding model, or one embedding row's by id.

        Raises:
            NoDefaultLLMError: No id given and the scope has no default embedding row.
            LLMNotFoundError: No row has that id (`WrongKindError`: it is a chat row).
        """
        return self._built(self._row(scope, llm_id, "embedding"))  # type: ignore[no-any-return]

    def get_embeddings_with_fallback(
        self,
        scope: str = "global",
        *,
        space: str | None = None,
        policy: FallbackPolicy | None = None,
    ) -> FallbackEmbeddings:
        """Return live embeddings over the scope's enabled embedding rows of one vector space
        (`llmpool.repository.spaces`), failing over as chat does but never across spaces.

        Raises:
            MixedSpacesError: The rows are in several spaces and no ``space`` was given.
            AllLLMsFailedToInitializeError: No row could be built, or there is none.
        """
        check_lookup(scope)
        if space is not None:
            check_argument("space", space, MAX_LENGTHS["space"])
        chain = self.chains.get(scope, "embedding", space)
        if chain.problem is not None:
            raise chain.problem
        ensure_buildable(chain.candidates, scope=scope)
        key = ("embedding", scope, space)
        live = self._live.get(key)
        if policy is None and live is not None and live.space == chain.space:
            return live  # type: ignore[no-any-return]
        self.stats.serve()
        made = FallbackEmbeddings(
            chain=self.chains.source(scope, "embedding", space),
            space=chain.space,
            policy=self.policy if policy is None else self._observed(policy),
            breakers=self.breakers,
            dimensions=self.dimensions,
            scope=scope,
        )
        if policy is None:
            self._live[key] = made
        return made

    # -- async twins: the snapshot loaded on the event loop, then the sync method ---------------

    astatus = twin(status, thread=True)  # the breaker board may be Redis
    aget_llms_from_db = twin(get_llms_from_db)
    aget_default_llm_config = twin(get_default_llm_config)
    aget_llm = twin(get_llm)
    aget_llm_with_fallback = twin(get_llm_with_fallback)
    aget_embeddings = twin(get_embeddings)
    aget_embeddings_with_fallback = twin(get_embeddings_with_fallback)
