"""Where rows come from: the read protocol (`LLMRepository`), the write protocol (`LLMStore`,
each write one audited transaction: `llmpool.repository.writes`), and what both return."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmpool.models import AuditEntry, BadRow, LLMConfig
    from llmpool.repository.experiments import Experiment
    from llmpool.repository.quotas import Quota

from llmpool.errors import LLMNotFoundError, NoDefaultLLMError, shorten, visible

#: The actor recorded in the audit log when a write names none.
DEFAULT_ACTOR = "llmpool"

#: A check run on every row a store is about to write (e.g. the environment allowlist).
ConfigValidator = Callable[["LLMConfig"], None]

#: Called after a write is committed, with the write method's name (``"add"``, ``"delete"``, ...).
CommitListener = Callable[[str], None]


@runtime_checkable
class CommitNotifier(Protocol):
    """A store that tells its listeners about every committed write."""

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` after every committed write; return the call that stops it."""


def sort_key(config: LLMConfig) -> tuple[int, str, str]:
    """Return the fallback order key: priority, then name, then id."""
    return (config.priority, config.name, config.id)


def not_found_error(llm_id: str) -> LLMNotFoundError:
    """Return the error of every store for an id with no row, the id quoted shortened."""
    return LLMNotFoundError(f"No LLM with id {shorten(str(llm_id))!r}")


def no_default_error(scope: str) -> NoDefaultLLMError:
    """Return the seed's "No default LLM configured" error for a scope with no default row."""
    return NoDefaultLLMError(
        f"No default LLM configured for scope {shorten(visible(str(scope)))!r}: mark one with "
        "set_default() or `llmpool set-default ID`"
    )


@dataclass(frozen=True)
class Snapshot:
    """Every row of the table at one moment: the valid rows in fallback order, the bad ones,
    the change counter, each scope's strategy as stored (read through `routing_of`), and the
    quotas (`llmpool.repository.quotas`)."""

    configs: tuple[LLMConfig, ...]
    bad_rows: tuple[BadRow, ...] = ()
    generation: int = 0
    routing: Mapping[str, str] = field(default_factory=dict, compare=False)
    experiments: Mapping[str, Any] = field(default_factory=dict, compare=False)
    quotas: tuple[Quota, ...] = field(default=(), compare=False)
    _warned: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def routing_of(self, scope: str) -> str:
        """Return how ``scope`` routes its calls (an invalid stored one, or an experiment
        without a valid definition: priority, warned once)."""
        from llmpool.repository.scopes import usable_strategy

        stored = self.routing.get(scope, "priority")
        strategy = usable_strategy(scope, stored, warn=scope not in self._warned)
        if strategy == "experiment" and self.experiment_of(scope) is None:
            strategy = "priority"
        if strategy != stored:
            self._warned.add(scope)
        return strategy

    def experiment_of(self, scope: str) -> Experiment | None:
        """Return the experiment stored for ``scope`` (`llmpool.repository.experiments`),
        ``None`` when there is none or it is invalid (warned once)."""
        from llmpool.repository.experiments import stored_experiment

        stored = self.experiments.get(scope)
        if stored is None or scope in self._warned:
            return None
        experiment = stored_experiment(scope, stored)
        if experiment is None:
            self._warned.add(scope)
        return experiment


@runtime_checkable
class LLMRepository(Protocol):
    """A read-only source of rows."""

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order, filtered (``scope=None``: every scope; ``search``: in
        the name or model name, case-insensitive)."""

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row by id; raise `LLMNotFoundError` when there is none."""

    def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default row; raise `NoDefaultLLMError` when there is none."""

    def snapshot(self) -> Snapshot:
        """Return every row of every scope, with the bad rows and the generation."""

    def generation(self) -> int:
        """Return the table's change counter (a cheap query)."""


@runtime_checkable
class AsyncLLMRepository(Protocol):
    """The async twin of `LLMRepository`."""

    async def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]: ...

    async def get(self, llm_id: str) -> LLMConfig: ...

    async def get_default(self, scope: str = "global") -> LLMConfig: ...

    async def snapshot(self) -> Snapshot: ...

    async def generation(self) -> int: ...


@runtime_checkable
class LLMStore(LLMRepository, Protocol):
    """A repository that can also be written: each write one audited transaction, all or
    nothing (`llmpool.repository.writes`)."""

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig: ...

    def add_many(
        self, llms: Sequence[Mapping[str, Any]], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]: ...

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig: ...

    def delete(self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR) -> int: ...

    def enable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]: ...

    def disable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]: ...

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig: ...

    def audit_log(
        self,
        *,
        llm_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEntry]: ...
