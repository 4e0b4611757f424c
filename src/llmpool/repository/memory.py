"""An in-memory `LLMStore`: the same rules and errors as the SQL store, for tests and demos."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import ConflictError
from llmpool.models import MAX_LENGTHS, MAX_SEARCH_LENGTH, AuditEntry, LLMConfig, check_argument
from llmpool.repository import Snapshot, no_default_error, not_found_error, sort_key
from llmpool.repository.quotas import Quota
from llmpool.repository.rules import canonical_id, new_config
from llmpool.repository.writes import Tx, Writes

if TYPE_CHECKING:
    from llmpool.repository import CommitListener, ConfigValidator


@dataclass
class _Draft:
    """The state a write builds aside and the commit swaps in whole."""

    rows: dict[str, LLMConfig]
    routing: dict[str, str]
    experiments: dict[str, Any]
    quotas: dict[tuple[str, str], Quota]
    entries: list[tuple[str, str, Any, Any]] = field(default_factory=list)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, LLMConfig) else value and dict(value)


def _find(rows: Mapping[str, LLMConfig], llm_id: str) -> LLMConfig:
    check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
    found = rows.get(llm_id) or rows.get(canonical_id(llm_id))
    if found is None:
        raise not_found_error(llm_id)
    return found


class InMemoryStore(Writes):
    """Rows kept in a dict, with an audit log and a generation counter; thread-safe.

    ``configs`` (configs or mappings) are validated as every write is, but not audited.

    Example:
        >>> store = InMemoryStore([{"name": "Fake", "provider": "fake", "model_name": "echo",
        ...                         "is_default": True}])
        >>> store.get_default().name
        'Fake'
    """

    def __init__(
        self,
        configs: Iterable[LLMConfig | Mapping[str, Any]] = (),
        *,
        validators: Sequence[ConfigValidator] = (),
        on_commit: CommitListener | None = None,
    ) -> None:
        super().__init__(validators, on_commit)
        self._spaces: dict[str, int] = {}  # each vector space's length (`record_space`)
        self._lock = threading.Lock()
        self._rows: dict[str, LLMConfig] = {}
        self._routing: dict[str, str] = {}  # scope -> strategy, as llm_scopes holds them
        self._experiments: dict[str, Any] = {}  # scope -> its experiment's definition
        self._quotas: dict[tuple[str, str], Quota] = {}  # (kind, target) -> as llm_quotas
        self._entries: list[AuditEntry] = []
        self._audit_ids = itertools.count(1)
        self._generation = 1
        tx = Tx(_Draft(self._rows, self._routing, self._experiments, self._quotas), "", "")
        for item in configs:
            # model_copy(update=...) and model_construct skip validation: check it again.
            if isinstance(item, LLMConfig):
                config = LLMConfig.from_row(item.model_dump())
            else:
                config = new_config(item, self.validators)
            self._check_name(tx, config, config.describe())
            self._rows[config.id] = config

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self._rows)} rows)"

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order, filtered as `LLMRepository.list_llms` says."""
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        check_argument("provider", provider, MAX_LENGTHS["provider"])
        check_argument("search", search, MAX_SEARCH_LENGTH)
        needle = search.lower() if search else None
        with self._lock:
            rows = list(self._rows.values())
        kept = [
            row
            for row in rows
            if (row.enabled or not enabled_only)
            and scope in (None, row.scope)
            and provider in (None, row.provider)
            and (not needle or needle in row.name.lower() or needle in row.model_name.lower())
        ]
        return sorted(kept, key=sort_key)

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row; raise `LLMNotFoundError` when there is none."""
        with self._lock:
            return _find(self._rows, llm_id)

    def get_default(self, scope: str = "global", *, kind: str = "chat") -> LLMConfig:
        """Return the scope's default of ``kind``; raise `NoDefaultLLMError` when there is none."""
        for row in self.list_llms(scope=scope):
            if row.is_default and row.kind == kind:
                return row
        raise no_default_error(scope)

    def snapshot(self) -> Snapshot:
        """Return every row of every scope and the generation."""
        with self._lock:
            rows, generation, routing = list(self._rows.values()), self._generation, self._routing
            experiments = self._experiments
            quotas = tuple(self._quotas[key] for key in sorted(self._quotas))
        configs = tuple(sorted(rows, key=sort_key))
        return Snapshot(
            configs=configs,
            generation=generation,
            routing=dict(routing),
            experiments=experiments,
            quotas=quotas,
        )

    def list_quotas(self) -> list[Quota]:
        """Return every quota, by kind and target."""
        with self._lock:
            return [self._quotas[key] for key in sorted(self._quotas)]

    def scope_routing(self) -> dict[str, str]:
        """Return every scope's routing as stored."""
        with self._lock:
            return dict(self._routing)

    def scope_experiments(self) -> dict[str, Any]:
        """Return every scope's experiment as stored."""
        with self._lock:
            return dict(self._experiments)

    def generation(self) -> int:
        """Return the change counter."""
        return self._generation

    def audit_log(
        self,
        *,
        llm_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first, filtered by row and time."""

        def aware(value: datetime) -> datetime:
            return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

        with self._lock:
            entries = list(reversed(self._entries))
        selected = [
            entry
            for entry in entries
            if (llm_id is None or entry.llm_id == llm_id)
            and (since is None or entry.at >= aware(since))
            and (until is None or entry.at < aware(until))
        ]
        return selected if limit is None else selected[:limit]

    def record_space(self, space: str, dimensions: int, llm_id: str) -> int:
        """Record a vector space's length the first time it is seen; return the one recorded."""
        with self._lock:
            return self._spaces.setdefault(space, dimensions)

    @contextmanager
    def _transaction(self, tx: Tx) -> Iterator[None]:
        with self._lock:
            draft = tx.handle = _Draft(
                dict(self._rows), dict(self._routing), dict(self._experiments), dict(self._quotas)
            )
            yield
            now = datetime.now(timezone.utc)
            self._rows, self._routing = draft.rows, draft.routing
            self._experiments, self._quotas = draft.experiments, draft.quotas
            self._generation += 1
            for llm_id, action, before, after in draft.entries:
                entry = AuditEntry(
                    id=next(self._audit_ids),
                    llm_id=llm_id,
                    actor=tx.actor,
                    action=action,
                    before=_dump(before),
                    after=_dump(after),
                    at=now,
                )
                self._entries.append(entry)

    def _find(self, tx: Tx, llm_id: str) -> LLMConfig:
        return _find(tx.handle.rows, llm_id)

    def _other_defaults(self, tx: Tx, target: LLMConfig) -> list[LLMConfig]:
        return [
            row
            for row in tx.handle.rows.values()
            if row.is_default
            and (row.scope, row.kind) == (target.scope, target.kind)
            and row.id != target.id
        ]

    def _name_holder(self, tx: Tx, config: LLMConfig) -> str | None:
        for row in tx.handle.rows.values():
            if row.id != config.id and (row.scope, row.name) == (config.scope, config.name):
                return str(row.describe())
        return None

    def _clear_defaults(self, tx: Tx, target: LLMConfig) -> None:
        for row in self._other_defaults(tx, target):
            cleared = self._update(tx, row, row.model_copy(update={"is_default": False}))
            self._audit(tx, row.id, "update", row, cleared)

    def _insert(self, tx: Tx, config: LLMConfig) -> LLMConfig:
        if config.id in tx.handle.rows:
            raise ConflictError(f"Could not {tx.what}: the id is taken")
        tx.handle.rows[config.id] = config
        return config

    def _update(self, tx: Tx, current: LLMConfig, target: LLMConfig) -> LLMConfig:
        if self._name_holder(tx, target) is not None:
            raise ConflictError(f"Could not {tx.what}: LLM names are unique within a scope")
        after = target.model_copy(update={"version": current.version + 1})
        tx.handle.rows[after.id] = after
        return after

    def _delete(self, tx: Tx, config: LLMConfig) -> None:
        del tx.handle.rows[config.id]

    def _audit(self, tx: Tx, llm_id: str, action: str, before: Any, after: Any) -> None:
        tx.handle.entries.append((llm_id, action, before, after))

    def _has_rows(self, tx: Tx, scope: str) -> bool:
        return any(row.scope == scope for row in tx.handle.rows.values())

    def _set_routing(self, tx: Tx, scope: str, strategy: str) -> str:
        before = str(tx.handle.routing.get(scope, "priority"))
        tx.handle.routing[scope] = strategy
        return before

    def _set_experiment(self, tx: Tx, scope: str, definition: Any) -> Any:
        before = tx.handle.experiments.get(scope)
        tx.handle.experiments[scope] = definition
        return before

    def _experiment(self, tx: Tx, scope: str) -> Any:
        return tx.handle.experiments.get(scope)

    def _row_names(self, tx: Tx, scope: str) -> set[str]:
        return {row.name for row in tx.handle.rows.values() if row.scope == scope}

    def _get_quota(self, tx: Tx, kind: str, target: str) -> Quota | None:
        return tx.handle.quotas.get((kind, target))  # type: ignore[no-any-return]

    def _put_quota(self, tx: Tx, quota: Quota) -> Quota:
        now = datetime.now(timezone.utc)
        before = tx.handle.quotas.get((quota.kind, quota.target))
        created = before.created_at if before is not None else now
        stored = replace(quota, created_at=created, updated_at=now)
        tx.handle.quotas[quota.kind, quota.target] = stored
        return stored

    def _drop_quota(self, tx: Tx, kind: str, target: str) -> None:
        del tx.handle.quotas[kind, target]
