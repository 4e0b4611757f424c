"""The pool's embedding rows: one row's ``Embeddings``, or a live fallback over one space.

`EmbeddingChains` serves the ``kind='embedding'`` rows of a pool's snapshot the way the pool
serves chat rows: built clients come from the pool's model cache (per row id and version), the
chain of a scope is rebuilt only when the table changes, and the fallback shares the pool's
policy and circuit breakers. A chain is the scope's enabled embedding rows, or those of one
space when the caller names it; a chain whose rows are in several spaces is refused, naming
them (`llmpool.embeddings.space.one_space`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmpool.errors import (
    AllLLMsFailedToInitializeError,
    NoDefaultLLMError,
    WrongKindError,
    shorten,
    visible,
)

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from llmpool.embeddings.model import FallbackEmbeddings
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.fallback.routing import Routing
    from llmpool.fallback.walk import Candidate
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool

__all__ = ["EmbeddingChains", "wrong_kind_error"]

_Key = tuple[str, "str | None"]


def wrong_kind_error(config: LLMConfig, wanted: str) -> WrongKindError:
    """Return the refusal to serve ``config`` to a function of the other kind.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="Vectors", provider="fake", model_name="m",
        ...                 kind="embedding")
        >>> print(wrong_kind_error(row, "chat"))
        LLM 'Vectors' (id 1) is an embedding row, not a chat model; get it with get_embeddings(...
    """
    if config.kind == "embedding":
        use = f"get_embeddings(llm_id={config.id!r})"
        msg = f"{config.describe()} is an embedding row, not a chat model; get it with {use}"
    else:
        use = f"get_llm(llm_id={config.id!r})"
        msg = f"{config.describe()} is a {config.kind} row, not an embedding model; use {use}"
    del wanted  # the message follows from the row's own kind
    return WrongKindError(msg, llm_id=config.id, kind=config.kind)


class EmbeddingChains:
    """A pool's embedding chains, per scope and space, rebuilt when the table changes.

    Args:
        pool: The pool whose snapshot, model cache, registry, policy and breakers are used.
    """

    def __init__(self, pool: LLMPool) -> None:
        self._pool = pool
        # (scope, space asked for) -> (generation, when a skipped row is due, space, chain)
        self._chains: dict[_Key, tuple[int, float | None, str | None, tuple[Candidate, ...]]] = {}
        self._live: dict[_Key, FallbackEmbeddings] = {}
        self._plans: dict[_Key, tuple[int, Routing, tuple[Any, ...]]] = {}

    def clear(self) -> None:
        """Forget the chains (the snapshot changed)."""
        self._chains.clear()
        self._plans.clear()

    def build(self, config: LLMConfig) -> BaseChatModel:
        """Build an embedding row's runner, the model of its candidate in the pool's cache."""
        from llmpool.embeddings.model import EmbeddingRunner, as_chat_model

        pool = self._pool
        embeddings = pool.registry.build_embeddings(config, allowlist=pool.allowlist)
        return as_chat_model(EmbeddingRunner(embeddings))

    # -- one row -------------------------------------------------------------------------------

    def default_config(self, scope: str) -> LLMConfig:
        """Return the scope's default embedding row.

        Raises:
            NoDefaultLLMError: The scope has no default embedding row, or it is disabled.
        """
        for config in self._pool.snapshot().configs:
            if config.scope == scope and config.kind == "embedding" and config.is_default:
                if not config.enabled:
                    msg = (
                        f"No default embedding model configured for scope "
                        f"{shorten(config.scope)!r}: its default, {config.describe()}, is "
                        f"disabled; enable it (`llmpool enable {config.id}`) or make another "
                        "embedding row the default"
                    )
                    raise NoDefaultLLMError(msg)
                return config
        msg = (
            f"No default embedding model configured for scope {shorten(visible(scope))!r}: mark "
            "an embedding row with set_default() or `llmpool set-default ID`"
        )
        raise NoDefaultLLMError(msg)

    def get(self, scope: str, llm_id: str | None) -> Embeddings:
        """Return the scope's default embedding row's client, or one row's by id.

        Raises:
            NoDefaultLLMError: No id given and the scope has no default embedding row.
            LLMNotFoundError: No row has that id; `WrongKindError` when it is a chat row.
            ProviderError, MissingSecretError, EnvNotAllowedError: It cannot be built.
        """
        from llmpool.embeddings.model import runner_candidate

        pool = self._pool
        if llm_id is None:
            config = self.default_config(scope)
        else:
            config = pool._config(llm_id, kind="embedding")
        candidate = pool._cache.get(config)
        embeddings = runner_candidate(candidate)
        if embeddings is None:
            assert candidate.error is not None
            raise candidate.error
        return embeddings

    # -- a chain -------------------------------------------------------------------------------

    def rows(self, scope: str, space: str | None) -> list[LLMConfig]:
        """Return the scope's enabled embedding rows in priority order (of ``space`` if given)."""
        from llmpool.embeddings.space import space_of

        return [
            c
            for c in self._pool.snapshot().configs
            if c.scope == scope
            and c.kind == "embedding"
            and c.enabled
            and (space is None or space_of(c) == space)
        ]

    def chain(self, scope: str, space: str | None = None) -> tuple[str | None, tuple[Any, ...]]:
        """Return the chain's space and its candidates in the order a call tries them.

        Raises:
            MixedSpacesError: The rows are in several spaces (only when ``space`` is not given).
        """
        pool = self._pool
        snapshot = pool.snapshot()
        key = (scope, space)
        cached = self._chains.get(key)
        cache = pool._cache
        if (
            cached is not None
            and cached[0] == snapshot.generation
            and (cached[1] is None or cache.clock() < cached[1])
        ):
            return cached[2], cached[3]
        from llmpool.embeddings.space import one_space
        from llmpool.fallback.routing import PriorityRouting

        rows = self.rows(scope, space)
        found = one_space(rows, scope=scope) if space is None else space
        chain = tuple(PriorityRouting().order(tuple(cache.get(c) for c in rows)))
        due = [at for c in chain if (at := cache.retry_due(c)) is not None]
        self._chains[key] = (snapshot.generation, min(due) if due else None, found, chain)
        return found, chain

    def with_fallback(
        self, scope: str, *, space: str | None = None, policy: FallbackPolicy | None = None
    ) -> FallbackEmbeddings:
        """Return live fallback embeddings over the scope's rows of one space.

        Raises:
            MixedSpacesError: The scope's enabled embedding rows are in several spaces (and no
                ``space`` was asked for); names every row with its space.
            AllLLMsFailedToInitializeError: No row of the chain could be built, or there is
                none.
        """
        found, chain = self.chain(scope, space)
        if not chain:
            of_space = f" in space {shorten(space)!r}" if space is not None else ""
            error = AllLLMsFailedToInitializeError([], scope=scope)
            error.args = (
                f"{error.header} in scope {shorten(scope)!r}: no enabled embedding rows"
                f"{of_space}; add one with kind='embedding'",
            )
            raise error
        from llmpool.fallback.walk import ensure_buildable

        ensure_buildable(chain, scope=scope)
        key = (scope, space)
        if policy is None:
            live = self._live.get(key)
            if live is not None and live.space == found:
                return live
        made = self._fallback(scope, space, found, policy)
        if policy is None:
            self._live[key] = made
        return made

    def plan(self, scope: str, space: str | None = None) -> tuple[Routing, tuple[Any, ...]]:
        """Return the scope's routing (the chat chain's, `LLMPool.routing_of`) and the admission
        checks (rate limits, budgets) that apply to the embedding chain, once per snapshot."""
        pool = self._pool
        generation = pool.snapshot().generation
        key = (scope, space)
        cached = self._plans.get(key)
        if cached is not None and cached[0] == generation:
            return cached[1], cached[2]
        _, routing, scope_checks = pool._plan(scope)
        chain = self.chain(scope, space)[1]
        pooled = [*scope_checks, *pool.admission_checks, *pool.options.admissions]
        unique = list({id(check): check for check in pooled}.values())
        checks = tuple(check for check in unique if check.applies_to(chain))
        self._plans[key] = (generation, routing, checks)
        return routing, checks

    def _fallback(
        self, scope: str, space: str | None, found: str | None, policy: FallbackPolicy | None
    ) -> FallbackEmbeddings:
        from llmpool.embeddings.model import FallbackEmbeddings
        from llmpool.fallback.routing import LiveRouting

        pool = self._pool
        return FallbackEmbeddings(
            source=lambda: self.chain(scope, space),
            space=found,
            policy=pool._observed(policy or pool.policy),
            breakers=pool.breakers,
            scope=scope,
            routing=LiveRouting(lambda: self.plan(scope, space)[0]),
            admissions=lambda: self.plan(scope, space)[1],
        )
