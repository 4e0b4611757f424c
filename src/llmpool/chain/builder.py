"""From a snapshot of the table to one immutable `ScopeChain` per scope, kind and generation."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmpool.chain.experiment import CallNote, ExperimentRouting
from llmpool.chain.routing import Routing, make_routing
from llmpool.contracts import AdmissionCheck, Candidate, Served
from llmpool.errors import (
    AllLLMsFailedToInitializeError,
    CandidateFailure,
    EnvNotAllowedError,
    LLMPoolError,
    MissingSecretError,
    ProviderLoadError,
    ProviderNotInstalledError,
    shorten,
)
from llmpool.models import LLMConfig
from llmpool.providers.declarations import model_fit
from llmpool.repository.spaces import one_space, space_of

if TYPE_CHECKING:
    from llmpool.chain.stats import RowStats
    from llmpool.observe.hooks import Hooks
    from llmpool.providers import ProviderRegistry
    from llmpool.providers.allowlist import EnvAllowlist
    from llmpool.repository import Snapshot


@dataclass(frozen=True, eq=False)
class ScopeChain:
    """One scope's chain of one kind, as every call of one generation of the table uses it;
    ``problem`` is raised by every call, ``rebuild_at`` is when a failed build is retried."""

    scope: str | None
    kind: str
    generation: int
    candidates: tuple[Candidate, ...]
    routing: Routing | None = None
    checks: tuple[AdmissionCheck, ...] = ()
    space: str | None = None
    problem: LLMPoolError | None = None
    disabled: tuple[LLMConfig, ...] = ()
    rebuild_at: float | None = None
    strategy: str = "priority"
    experiment: ExperimentRouting | None = None

    def current(self) -> ScopeChain:
        """A chain given in code is its own, unchanging `ChainSource`."""
        return self

    @cached_property
    def fitted(self) -> bool:
        """Whether a row declares what its model can take: calls then measure their prompt."""
        return any(candidate.fit is not None for candidate in self.candidates)


@runtime_checkable
class ChainSource(Protocol):
    """Where a fallback model reads the chain every call starting now uses."""

    def current(self) -> ScopeChain: ...


def build_reason(error: BaseException | None) -> str:
    """Say why a row cannot be built, naming the variable or package, never a value."""
    if isinstance(error, MissingSecretError):
        return f"missing environment variable {error.variable}"
    if isinstance(error, ProviderNotInstalledError):
        return f"provider package not installed: {str(error).split('run: ')[-1]}"
    if isinstance(error, EnvNotAllowedError):
        return f"not on the allowlist: {error.field}"
    if error is None:
        return "could not be built"
    if isinstance(error, LLMPoolError):  # its message names the row and the field
        return str(error)
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def ensure_buildable(candidates: Sequence[Candidate], *, scope: str | None = None) -> None:
    """Raise "All LLMs failed to initialize", listing every row's reason, if none was built."""
    if any(candidate.model is not None for candidate in candidates):
        return
    failures = [
        CandidateFailure(
            c.config.id, c.config.name, c.config.provider, build_reason(c.error), c.error
        )
        for c in candidates
    ]
    error = AllLLMsFailedToInitializeError(failures, scope=scope)
    if failures and failures[-1].error is not None:
        raise error from failures[-1].error
    raise error


_Key = tuple[str, int, bool]


class ChainBuilder:
    """Rows -> candidates, each client built once per row version; ``hooks`` hear failures."""

    def __init__(
        self,
        registry: ProviderRegistry | None = None,
        allowlist: EnvAllowlist | None = None,
        *,
        hooks: Hooks | None = None,
        retry_failed_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self.allowlist = allowlist
        self.hooks = hooks
        self.retry_failed_after = retry_failed_after
        self.clock = clock
        self._built: dict[_Key, Candidate] = {}
        self._retry_at: dict[_Key, float] = {}
        self._locks: dict[_Key, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def registry(self) -> ProviderRegistry:
        """The provider registry (the process-wide one by default)."""
        from llmpool.providers import get_registry

        return get_registry() if self._registry is None else self._registry

    def candidate(self, config: LLMConfig, *, standalone: bool = False) -> Candidate:
        """Return the row's candidate (``standalone``: as served alone, with its own retries)."""
        if standalone and self._standalone(config) is config:
            standalone = False  # the same client as its chain's: share it
        key = (config.id, config.version, standalone)
        if (cached := self._cached(key, config)) is not None:
            return cached
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # a stampede on one row builds it once
            if (cached := self._cached(key, config)) is not None:
                return cached
            try:
                model, served = self._build(config, standalone)
                candidate = Candidate(config, model, served=served)
                if config.kind == "chat":
                    candidate.fit = model_fit(config, self.registry.get(config.provider))
            except LLMPoolError as error:
                candidate = Candidate(config, error=error)
                self._retry_at[key] = self.clock() + self.retry_failed_after
            self._built[key] = candidate
        with self._guard:
            self._locks.pop(key, None)
        return candidate

    def _cached(self, key: _Key, config: LLMConfig) -> Candidate | None:
        built = self._built.get(key)  # read once: `prune` may drop it meanwhile
        if built is None or built.config != config:
            return None
        usable = built.model is not None or self.clock() < self._retry_at.get(key, 0.0)
        return built if usable else None

    def _build(self, config: LLMConfig, standalone: bool) -> tuple[Any, Served]:
        # The client, and what telemetry says of its requests (as its provider declares).
        from llmpool.providers.declarations import served_by

        registry = self.registry
        try:
            model: Any
            if config.kind == "embedding":
                model = registry.build_embeddings(config, allowlist=self.allowlist)
            else:
                built = self._standalone(config) if standalone else config
                model = registry.build(built, allowlist=self.allowlist)
            return model, served_by(config, registry.get(config.provider))
        except LLMPoolError as error:
            self._failed(config, error)
            raise
        except Exception as exc:  # a plugin's bug must skip its row, not break the chain
            text = str(exc).strip()
            first = f": {text.splitlines()[0][:200]}" if text else ""
            msg = (
                f"{config.describe()}: provider {config.provider!r} failed to build the "
                f"client: {type(exc).__name__}{first}"
            )
            try:
                distribution = registry.distribution_of(config.provider)
            except LLMPoolError:
                distribution = None
            failure = ProviderLoadError(msg, distribution=distribution)
            self._failed(config, failure)
            raise failure from exc

    def _standalone(self, config: LLMConfig) -> LLMConfig:
        from llmpool.providers.chat import standalone_config

        try:
            return standalone_config(config, self.registry.get(config.provider))
        except LLMPoolError:
            return config  # an unknown provider: building it says so

    def _failed(self, config: LLMConfig, error: LLMPoolError) -> None:
        if self.hooks is None:
            return
        from llmpool.credentials.redaction import redact
        from llmpool.observe.events import BuildFailedEvent

        event = BuildFailedEvent(
            config.scope, config.id, config.name, config.provider, config.model_name,
            type(error).__name__, redact(build_reason(error)),
        )  # fmt: skip
        self.hooks.emit("on_build_failure", event)

    def retry_due(self, candidate: Candidate) -> float | None:
        """Return when an unbuildable candidate is due for another build."""
        if candidate.model is not None:
            return None
        c = candidate.config
        return self._retry_at.get((c.id, c.version, False), 0.0)

    def prune(self, live: set[tuple[str, int]]) -> None:
        """Forget the clients of rows no longer in the table, and every failed build."""
        for key, candidate in self._built.copy().items():  # `candidate` inserts without a lock
            if key[:2] not in live or candidate.model is None:
                if self._built.get(key) is candidate:
                    self._built.pop(key, None)
                self._retry_at.pop(key, None)


class SnapshotSource(Protocol):
    """What `Chains` reads rows from: the pool's snapshot keeper (``current``: ``None`` before
    the first load, which ``get`` makes)."""

    @property
    def current(self) -> Snapshot | None: ...

    def get(self) -> Snapshot: ...


class Chains:
    """The chain of each scope, kind and space, built once per generation of the table."""

    def __init__(
        self,
        snapshots: SnapshotSource,
        builder: ChainBuilder,
        *,
        checks: Sequence[AdmissionCheck],
        stats: RowStats,
        seed: int | None = None,
        note: CallNote | None = None,
    ) -> None:
        self.snapshots = snapshots
        self.note = note  # told of each answered experiment call
        self.builder = builder
        self.checks = tuple(checks)
        self.stats = stats
        self._rng = random.Random(seed)
        self._chains: dict[tuple[str, str, str | None], ScopeChain] = {}
        # Routings keep state (their random generator, remembered groups): kept across reloads.
        self._routings: dict[tuple[str, object], Routing] = {}

    def get(self, scope: str, kind: str = "chat", space: str | None = None) -> ScopeChain:
        """Return the chain in force now (built on first use, and after each change)."""
        snapshot = self.snapshots.get()
        key = (scope, kind, space)
        chain = self._chains.get(key)
        if (
            chain is not None
            and chain.generation == snapshot.generation
            and (chain.rebuild_at is None or self.builder.clock() < chain.rebuild_at)
        ):
            return chain
        chain = self._chains[key] = self._build(snapshot, scope, kind, space)
        return chain

    def source(self, scope: str, kind: str = "chat", space: str | None = None) -> ChainSource:
        """Return the live source of a scope's chain, read at each call."""
        return _LiveChain(self, scope, kind, space)

    def clear(self) -> None:
        """Forget every chain (the table changed)."""
        self._chains.clear()

    def _build(self, snapshot: Snapshot, scope: str, kind: str, space: str | None) -> ScopeChain:
        rows = [c for c in snapshot.configs if c.scope == scope and c.kind == kind]
        enabled = [c for c in rows if c.enabled]
        problem: LLMPoolError | None = None
        if kind == "embedding":
            if space is not None:
                enabled = [c for c in enabled if space_of(c) == space]
            else:
                try:
                    space = one_space(enabled, scope=scope)
                except LLMPoolError as error:
                    problem = error
            if not enabled:
                problem = AllLLMsFailedToInitializeError([], scope=scope)
                of = f" in space {shorten(space)!r}" if space is not None else ""
                problem.args = (
                    f"{problem.header} in scope {shorten(scope)!r}: no enabled embedding "
                    f"rows{of}; add one with kind='embedding'",
                )
        builder = self.builder
        candidates = tuple(builder.candidate(c) for c in enabled)
        strategy = snapshot.routing_of(scope)
        experiment = None
        if strategy == "experiment":  # its arms are chat rows: embeddings by priority
            experiment = snapshot.experiment_of(scope) if kind == "chat" else None
            strategy = "experiment" if experiment is not None else "priority"
        if experiment is not None:  # kept while its definition is unchanged
            routing = self._routings.get((scope, experiment)) or self._routings.setdefault(
                (scope, experiment), ExperimentRouting(scope, experiment, self._rng, self.note)
            )
        else:
            routing = self._routings.get((scope, strategy)) or self._routings.setdefault(
                (scope, strategy), make_routing(strategy, self.stats, self._rng)
            )
        wanted = (
            (self.stats, *self.checks) if strategy in ("latency", "least_busy") else self.checks
        )
        unique = {id(check): check for check in wanted}.values()
        due = [at for c in candidates if (at := builder.retry_due(c)) is not None]
        return ScopeChain(
            scope=scope,
            kind=kind,
            generation=snapshot.generation,
            candidates=candidates,
            routing=routing,
            strategy=strategy,
            checks=tuple(check for check in unique if check.applies_to(candidates)),
            space=space,
            problem=problem,
            disabled=tuple(c for c in rows if not c.enabled),
            rebuild_at=min(due) if due else None,
            experiment=routing if isinstance(routing, ExperimentRouting) else None,
        )


@dataclass(eq=True, slots=True)
class _LiveChain:
    """A scope's chain as the pool's `Chains` holds it now."""

    chains: Chains
    scope: str
    kind: str
    space: str | None
    last: tuple[object, ScopeChain | None] = field(default=(None, None), compare=False)
    """The snapshot read last, and its chain while no clock can change it (else ``None``)."""

    def __repr__(self) -> str:
        return f"<live {self.kind} chain of scope {shorten(self.scope)!r}>"

    def current(self) -> ScopeChain:
        """Return the chain in force now (one identity check while the table is unchanged)."""
        seen, chain = self.last
        if chain is not None and seen is self.chains.snapshots.current:
            return chain
        chain = self.chains.get(self.scope, self.kind, self.space)
        self.last = (self.chains.snapshots.current, chain if chain.rebuild_at is None else None)
        return chain
