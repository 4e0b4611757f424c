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
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.credentials.allowlist import EnvAllowlist
from llmpool.errors import (
    InvalidDefaultLLMError,
    LLMPoolError,
    NoDefaultLLMError,
    ProviderLoadError,
    shorten,
)
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import MAX_LENGTHS, LLMConfig, check_argument
from llmpool.observe.fields import log_fields
from llmpool.pool.cache import ModelCache
from llmpool.pool.embeddings import EmbeddingChains, wrong_kind_error
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
    from datetime import datetime, timedelta

    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel
    from sqlalchemy.engine import URL, Engine

    from llmpool.embeddings.model import FallbackEmbeddings
    from llmpool.fallback.admission import AdmissionCheck
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.routing import Routing
    from llmpool.fallback.walk import Candidate
    from llmpool.pool.explain import ChainStep
    from llmpool.pool.status import ScopeStatus
    from llmpool.pool.watch import Watcher
    from llmpool.providers import ProviderRegistry
    from llmpool.repository import Snapshot
    from llmpool.repository.sql.store import SQLStore
    from llmpool.usage.meter import UsageMeter
    from llmpool.usage.report import By, UsageRow

__all__ = ["LLMPool", "PoolOptions"]

logger = logging.getLogger(__name__)


def _check_scope(scope: str) -> None:
    check_argument("scope", scope, MAX_LENGTHS["scope"])


def _default_of(snapshot: Snapshot, scope: str) -> LLMConfig | None:
    for config in snapshot.configs:
        # Defaults are per scope and kind: the chat functions' default is a chat row.
        if config.scope == scope and config.is_default and config.kind == "chat":
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
        from llmpool.pool.status import RowStats

        # Each row's recent attempts, for `status`: an observer like the user's.
        self.stats = RowStats()
        self._observers = (self.stats, *options.observers)
        self.policy = self._observed(options.policy or FallbackPolicy())
        self._generation: int | None = None
        self.breakers = BreakerBoard(options.breaker_store)
        # Routing and admission checks (`llmpool.fallback.admission`): the latency and
        # in-flight figures of the strategies, the rows' rate limits, then others' checks.
        from llmpool.fallback.routing import RoutingStats
        from llmpool.limits import RateLimiter

        self.routing_stats = RoutingStats()
        self.limiter = RateLimiter(options.limits)
        self.admission_checks: list[AdmissionCheck] = [self.limiter]
        self._rng = random.Random(options.routing_seed)
        # scope -> (generation, routing, admission checks): what each call of the scope uses
        self._plans: dict[str, tuple[int, Routing, tuple[AdmissionCheck, ...]]] = {}
        self._routings: dict[tuple[str, str], Routing] = {}  # kept across reloads: their state
        self._registry = options.registry
        self._owned: SQLStore | None = None
        if not isinstance(source, LLMRepository):  # an engine, a URL, or the configured one
            from llmpool.providers import ConfigKeysCheck, KnownProviderCheck
            from llmpool.repository.sql.store import SQLStore

            source = self._owned = SQLStore(
                source,
                validators=[
                    self.allowlist,
                    KnownProviderCheck(registry=options.registry),
                    ConfigKeysCheck(registry=options.registry),
                ],
                async_engine=options.async_database,
                auto_migrate=options.auto_migrate,
            )
        self.repository: LLMRepository = source
        # Calls counted per row and minute, flushed to llm_usage; rows' budgets (llmpool.usage).
        self.usage_meter: UsageMeter | None = None
        if options.track_usage:
            from llmpool.usage.check import UsageCheck
            from llmpool.usage.meter import UsageMeter, table_for

            self.usage_meter = UsageMeter(
                table_for(source),
                flush_interval=options.usage_flush_interval,
                budget_refresh=options.budget_refresh,
                clock=options.usage_clock,
            )
            self.admission_checks.append(UsageCheck(self.usage_meter))
        self._cache = ModelCache(
            self._build, retry_failed_after=options.retry_failed_builds_after, clock=options.clock
        )
        # Models served alone (get_llm, create_llm_instance) whose client gets its own retries
        # back: a chain's models make none, the walk retries (`providers.chat.standalone_config`).
        self._standalone_cache = ModelCache(
            lambda config: self._build(self._standalone(config)),
            retry_failed_after=options.retry_failed_builds_after,
            clock=options.clock,
        )
        # scope -> (generation, when a skipped row is due for a rebuild or None, chain)
        self._chains: dict[str, tuple[int, float | None, tuple[Candidate, ...]]] = {}
        self._live: dict[str, FallbackChatModel] = {}
        self._embeddings = EmbeddingChains(self)
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

    def _observed(self, policy: FallbackPolicy) -> FallbackPolicy:
        # The pool's observers (its row statistics, then the user's) after the policy's own.
        mine = [o for o in self._observers if all(o is not p for p in policy.observers)]
        if not mine:
            return policy
        return dataclasses.replace(policy, observers=(*policy.observers, *mine))

    def _pruned(self, snapshot: Snapshot) -> None:
        from llmpool.observe.events import ReloadEvent

        previous, self._generation = self._generation, snapshot.generation
        self.stats.forget({c.id for c in snapshot.configs})
        self.policy.hooks.emit(
            "on_reload",
            ReloadEvent(
                snapshot.generation, previous, len(snapshot.configs), len(snapshot.bad_rows)
            ),
        )
        # Rows that could not be built are dropped too, so a refresh retries them.
        self._cache.prune({(c.id, c.version) for c in snapshot.configs})
        self._standalone_cache.prune({(c.id, c.version) for c in snapshot.configs})
        self._chains.clear()
        self._plans.clear()
        self._embeddings.clear()

    @property
    def _watcher(self) -> Watcher | None:
        return self._snapshots.watcher

    def close(self) -> None:
        """Stop watching the table and close the store the pool made from a URL or engine.

        Returns promptly: the watcher closes its LISTEN connection and ends within a fraction
        of a second, whatever ``poll_interval`` is. A store you passed is left open. The usage
        counted and not yet flushed is flushed first.
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
        if self.usage_meter is not None:
            self.usage_meter.close()

    def __enter__(self) -> LLMPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- usage ---------------------------------------------------------------------------------

    def usage(
        self,
        since: datetime | timedelta | float | str | None = "1d",
        until: datetime | timedelta | float | str | None = None,
        *,
        by: By = "row",
        scope: str | None = None,
        llm_id: str | None = None,
    ) -> list[UsageRow]:
        """Return the calls, errors, tokens and cost recorded in ``[since, until)``, grouped.

        What this pool counted is flushed first; the table holds every replica's calls.

        Args:
            since: From when: a datetime (naive means UTC), a timedelta or a duration text
                (``"30m"``, ``"12h"``, ``"1d"``) before now, an ISO date or time, or ``None``
                for all. Default: the last day.
            until: Until when (excluded), in the same forms; ``None`` for now.
            by: ``"row"`` (one line per row), ``"scope"`` or ``"day"`` (UTC).
            scope: Only this scope.
            llm_id: Only this row.

        Raises:
            LLMPoolError: The pool does not count usage (``track_usage=False``).
            ValueError: ``by`` or a time is not understood.
            DatabaseError: The ``llm_usage`` table could not be read (run ``llmpool migrate``).

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> pool = LLMPool(InMemoryStore([{"name": "Fake", "provider": "fake",
            ...     "model_name": "echo", "config": {"responses": ["hi"]}}]))
            >>> pool.get_llm_with_fallback().invoke("hello").content
            'hi'
            >>> [(row.name, row.calls) for row in pool.usage(since="1h")]
            [('Fake', 1)]
            >>> pool.close()
        """
        return self._usage_meter().report(
            since=since, until=until, by=by, scope=scope, llm_id=llm_id
        )

    def flush_usage(self) -> bool:
        """Flush the usage this pool counted to the ``llm_usage`` table now.

        Returns:
            Whether everything counted is in the table (a failure is logged and retried at
            the next flush).

        Raises:
            LLMPoolError: The pool does not count usage (``track_usage=False``).
        """
        return self._usage_meter().flush()

    def _usage_meter(self) -> UsageMeter:
        if self.usage_meter is None:
            msg = "this pool does not count usage: it was made with track_usage=False"
            raise LLMPoolError(msg)
        return self.usage_meter

    # -- configs -------------------------------------------------------------------------------

    def explain(self, scope: str = "global", kind: str = "chat") -> list[ChainStep]:
        """Return the scope's rows in the order a call would try them, and why any would not be
        tried (disabled, not buildable, breaker cooling down): the pool's own view. ``kind``:
        the chat chain (default) or the scope's ``"embedding"`` rows.

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
        return explain_chain(self, scope, kind)

    def status(self, scope: str = "global", kind: str = "chat") -> ScopeStatus:
        """Return the scope's health: each row in call order, and which would answer now.

        Per row: enabled, buildable or why not, its circuit breaker and when it reopens (from
        the shared board when the pool has one: the fleet's view), its last error, recent
        latency and error rate in this process, and whether it would be tried. A plain,
        JSON-serializable dict (`llmpool.pool.status.ScopeStatus`), for a ``/health`` route.
        ``kind``: the chat chain (default) or the scope's ``"embedding"`` rows.

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> pool = LLMPool(InMemoryStore([{"name": "On", "provider": "fake",
            ...     "model_name": "m"}]), poll_interval=0)
            >>> health = pool.status()
            >>> health["can_answer"], health["answering"]["name"], health["breakers"]
            (True, 'On', 'local')
            >>> pool.close()

        Raises:
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.
        """
        from llmpool.pool.status import scope_status

        check_argument("scope", scope, MAX_LENGTHS["scope"])
        return scope_status(self, scope, kind)

    async def astatus(self, scope: str = "global") -> ScopeStatus:
        """Async twin of `status`: the snapshot is loaded on the event loop, the rest (the
        breaker board may be Redis) in a worker thread."""
        import asyncio

        check_argument("scope", scope, MAX_LENGTHS["scope"])
        await self._snapshots.aget()
        return await asyncio.to_thread(self.status, scope)

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
            if c.scope == scope and (c.enabled or not enabled_only) and c.kind == "chat"
        ]

    def get_default_llm_config(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row.

        Raises:
            NoDefaultLLMError: "No default LLM configured for scope ...".
            InvalidDefaultLLMError: The scope's default row fails validation (a
                `NoDefaultLLMError` naming the row and why).
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.

        A default row that is disabled is not served: "No default LLM configured", naming it.
        (`get_llm_with_fallback` is not concerned: its chain is the scope's enabled rows in
        priority order, whichever is the default.)
        """
        _check_scope(scope)
        snapshot = self.snapshot()
        config = _default_of(snapshot, scope)
        if config is not None:
            return self._served_default(config)
        if snapshot.bad_rows:
            self._raise_invalid_default(scope)
        raise self._no_default(scope)

    def _where(self) -> str:
        engine = getattr(self.repository, "engine", None)
        if engine is None:
            return ""
        from llmpool.repository.sql.url import mask_url

        return f" (database: {mask_url(engine)})"

    def _no_default(self, scope: str) -> NoDefaultLLMError:
        return NoDefaultLLMError(f"{no_default_error(scope)}{self._where()}")

    def _served_default(self, config: LLMConfig) -> LLMConfig:
        if config.enabled:
            return config
        msg = (
            f"No default LLM configured for scope {shorten(config.scope)!r}{self._where()}: its "
            f"default, {config.describe()}, is disabled; enable it (`llmpool enable "
            f"{config.id}`) or make another row the default (`llmpool set-default ID`)"
        )
        raise NoDefaultLLMError(msg)

    def _raise_invalid_default(self, scope: str) -> None:
        # Bad rows carry no scope: the repository's own lookup names an invalid default row.
        # Only on this error path, and only when some row failed validation.
        try:
            self.repository.get_default(scope)
        except InvalidDefaultLLMError:
            raise
        except Exception as error:  # none there either, or the database is down
            logger.debug(
                "no invalid default row found: %s",
                type(error).__name__,
                extra=log_fields(
                    "no_invalid_default", scope=scope, error_class=type(error).__name__
                ),
            )

    def _config(self, llm_id: str, kind: str = "chat") -> LLMConfig:
        check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
        for config in self.snapshot().configs:
            if config.id == llm_id:
                if config.kind != kind:  # chat functions never serve embedding rows
                    raise wrong_kind_error(config, kind)
                return config
        raise not_found_error(llm_id)

    # -- models --------------------------------------------------------------------------------

    def _build(self, config: LLMConfig) -> BaseChatModel:
        try:
            if config.kind == "embedding":  # its candidate's model is its embeddings' runner
                return self._embeddings.build(config)
            return self.registry.build(config, allowlist=self.allowlist)
        except LLMPoolError as error:
            self._build_failed(config, error)
            raise
        except Exception as exc:  # a plugin's bug must skip its row, not break the chain
            text = str(exc).strip()
            first = f": {text.splitlines()[0][:200]}" if text else ""
            msg = (
                f"{config.describe()}: provider {config.provider!r} failed to build the chat "
                f"model: {type(exc).__name__}{first}"
            )
            failure = ProviderLoadError(msg, distribution=self._distribution(config))
            self._build_failed(config, failure)
            raise failure from exc

    def _build_failed(self, config: LLMConfig, error: LLMPoolError) -> None:
        from llmpool.credentials.redaction import redact
        from llmpool.observe.events import BuildFailedEvent
        from llmpool.pool.status import build_reason

        reason = redact(build_reason(error))
        event = BuildFailedEvent(
            config.scope, config.id, config.name, config.provider, config.model_name,
            type(error).__name__, reason,
        )  # fmt: skip
        self.policy.hooks.emit("on_build_failure", event)

    def _distribution(self, config: LLMConfig) -> str | None:
        try:
            return self.registry.distribution_of(config.provider)
        except LLMPoolError:
            return None

    def _standalone(self, config: LLMConfig) -> LLMConfig:
        from llmpool.providers.chat import standalone_config

        try:
            return standalone_config(config, self.registry.get(config.provider))
        except LLMPoolError:
            return config  # an unknown provider: building it says so

    def create_llm_instance(self, config: LLMConfig | Mapping[str, Any]) -> BaseChatModel:
        """Build the chat model of a row (cached per row id and version).

        Served alone, the model is its provider's own client class, with the client's own
        retries (``max_retries=2`` unless the row sets it; see
        `llmpool.providers.chat.standalone_config`): nothing else retries for it. A client
        without retries of its own (ChatOllama, plugins) is the one its fallback chain uses.

        Args:
            config: An `LLMConfig`, or a mapping with its fields.

        Raises:
            MissingSecretError, ProviderNotInstalledError, UnknownProviderError,
            UnsupportedParameterError, EnvNotAllowedError: The row cannot be built.
            ProviderLoadError: The provider raised something else while building.
        """
        if not isinstance(config, LLMConfig):
            config = LLMConfig.from_row({"id": "adhoc", **dict(config)})
        if config.kind != "chat":
            raise wrong_kind_error(config, "chat")
        cache = self._cache if self._standalone(config) is config else self._standalone_cache
        candidate = cache.get(config)
        if candidate.model is None:
            assert candidate.error is not None
            raise candidate.error
        return candidate.model

    def get_llm(self, llm_id: str | None = None, scope: str = "global") -> BaseChatModel:
        """Return the scope's default model, or one row's model by id.

        The model is built as `create_llm_instance` builds it: with its client's own retries.

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

        rows = [c for c in snapshot.configs if c.scope == scope and c.enabled and c.kind == "chat"]
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

    def _plan(self, scope: str) -> tuple[int, Routing, tuple[AdmissionCheck, ...]]:
        # The scope's routing (llm_scopes) and the admission checks its chain needs, made once
        # per snapshot: a check no row of the chain needs is left out (it would cost per call).
        snapshot = self.snapshot()
        plan = self._plans.get(scope)
        if plan is not None and plan[0] == snapshot.generation:
            return plan
        from llmpool.fallback.routing import make_routing

        strategy = snapshot.routing_of(scope)
        routing = self._routings.get((scope, strategy))
        if routing is None:
            routing = make_routing(strategy, self.routing_stats, self._rng)
            routing = self._routings.setdefault((scope, strategy), routing)
        chain = self._chain(scope)
        checks: list[AdmissionCheck] = []
        if strategy in ("latency", "least_busy"):
            checks.append(self.routing_stats)
        checks.extend(self.admission_checks)
        checks.extend(self.options.admissions)
        plan = (
            snapshot.generation,
            routing,
            tuple(check for check in checks if check.applies_to(chain)),
        )
        self._plans[scope] = plan
        return plan

    def routing_of(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls now (``priority``, ``weighted``, ``latency``
        or ``least_busy``; set with ``store.set_routing`` or ``llmpool routing``)."""
        _check_scope(scope)
        return self.snapshot().routing_of(scope)

    def _fallback_model(
        self, scope: str, fallbacks: Sequence[BaseChatModel], policy: FallbackPolicy | None
    ) -> FallbackChatModel:
        from llmpool.fallback.model import FallbackChatModel
        from llmpool.fallback.routing import LiveRouting

        return FallbackChatModel(
            source=lambda: self._chain(scope),
            fallbacks=tuple(fallbacks),
            policy=self._observed(policy) if policy is not None else self.policy,
            breakers=self.breakers,
            scope=scope,
            routing=LiveRouting(lambda: self._plan(scope)[1]),
            admissions=lambda: self._plan(scope)[2],
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
            return self._served_default(config)
        if snapshot.bad_rows:  # the error path may read the table: not on the event loop
            import asyncio

            return await asyncio.to_thread(self.get_default_llm_config, scope)
        raise self._no_default(scope)

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

    # -- embeddings ----------------------------------------------------------------------------

    def get_embeddings(self, scope: str = "global", llm_id: str | None = None) -> Embeddings:
        """Return the scope's default embedding model, or one embedding row's by id.

        Embedding rows (``kind='embedding'``) are served only here; chat functions never see
        them. Defaults are per scope and kind.

        Raises:
            NoDefaultLLMError: No id given and the scope has no default embedding row.
            LLMNotFoundError: No row has that id (`WrongKindError`: it is a chat row).
            ArgumentTooLongError: ``llm_id`` or ``scope`` is longer than any row's could be.

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> pool = LLMPool(InMemoryStore([{"name": "Vectors", "provider": "fake",
            ...     "model_name": "m", "kind": "embedding", "is_default": True,
            ...     "config": {"dimensions": 4}}]), poll_interval=0)
            >>> len(pool.get_embeddings().embed_query("hello"))
            4
            >>> pool.close()
        """
        _check_scope(scope)
        if llm_id is not None:
            check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
        return self._embeddings.get(scope, llm_id)

    def get_embeddings_with_fallback(
        self,
        scope: str = "global",
        *,
        space: str | None = None,
        policy: FallbackPolicy | None = None,
    ) -> FallbackEmbeddings:
        """Return live embeddings over the scope's enabled embedding rows of one vector space.

        They fail over with the same policy, retries, breakers, routing and limits as chat,
        but only between rows of one space (same ``space`` label, or same model name and
        dimensions): a scope whose rows are in several spaces is refused, naming them, unless
        ``space`` picks one. Each answer carries ``response_metadata["llmpool"]`` naming the
        row and the space (`llmpool.embeddings.Vectors`).

        Args:
            scope: Whose rows.
            space: Use only the rows of this space (`llmpool.embeddings.space_of`).
            policy: Overrides the pool's policy for these embeddings.

        Raises:
            MixedSpacesError: The rows are in several spaces and no ``space`` was given.
            AllLLMsFailedToInitializeError: No row could be built, or there is none.
            ArgumentTooLongError: ``scope`` is longer than any row's scope could be.

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> pool = LLMPool(InMemoryStore([
            ...     {"name": "Down", "provider": "fake", "model_name": "m", "priority": 1,
            ...      "kind": "embedding", "config": {"error": "refused"}},
            ...     {"name": "Up", "provider": "fake", "model_name": "m", "priority": 2,
            ...      "kind": "embedding"}]), poll_interval=0)
            >>> vectors = pool.get_embeddings_with_fallback().embed_documents(["a", "b"])
            >>> len(vectors), vectors.response_metadata["llmpool"]["name"]
            (2, 'Up')
            >>> pool.close()
        """
        _check_scope(scope)
        if space is not None:
            check_argument("space", space, MAX_LENGTHS["space"])
        return self._embeddings.with_fallback(scope, space=space, policy=policy)

    async def aget_embeddings(self, scope: str = "global", llm_id: str | None = None) -> Embeddings:
        """Async twin of `get_embeddings`."""
        _check_scope(scope)
        await self._snapshots.aget()
        return self.get_embeddings(scope, llm_id)

    async def aget_embeddings_with_fallback(
        self,
        scope: str = "global",
        *,
        space: str | None = None,
        policy: FallbackPolicy | None = None,
    ) -> FallbackEmbeddings:
        """Async twin of `get_embeddings_with_fallback`."""
        _check_scope(scope)
        await self._snapshots.aget()
        return self.get_embeddings_with_fallback(scope, space=space, policy=policy)
