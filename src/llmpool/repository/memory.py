"""An in-memory `LLMStore`: the same rules and errors as the SQL store, for tests and demos."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import ConflictError
from llmpool.models import MAX_LENGTHS, MAX_SEARCH_LENGTH, AuditEntry, LLMConfig, check_argument
from llmpool.repository import (
    DEFAULT_ACTOR,
    BulkWrites,
    CommitListeners,
    Snapshot,
    no_default_error,
    not_found_error,
    sort_key,
)
from llmpool.repository.rules import (
    as_id_list,
    canonical_id,
    default_move_conflict,
    default_rule,
    disabled_default_error,
    doing,
    item_label,
    name_taken_error,
    new_config,
    new_configs,
    updated_config,
)
from llmpool.repository.scopes import check_routing, no_rows_error, routing_audit

if TYPE_CHECKING:
    from llmpool.repository import CommitListener, ConfigValidator

#: The rows being written and their audit entries (id, action, before, after).
_Draft = tuple[dict[str, LLMConfig], list[tuple[str, str, Any, Any]]]

__all__ = ["InMemoryStore"]


def _check_has_rows(rows: Mapping[str, LLMConfig], scope: str, strategy: str) -> None:
    if strategy != "priority" and not any(row.scope == scope for row in rows.values()):
        raise no_rows_error(scope, strategy)


def _find(rows: Mapping[str, LLMConfig], llm_id: str) -> LLMConfig | None:
    check_argument("llm_id", llm_id, MAX_LENGTHS["id"])
    found = rows.get(llm_id)
    return found if found is not None else rows.get(canonical_id(llm_id))


class InMemoryStore(BulkWrites):
    """Rows kept in a dict, with an audit log and a generation counter; thread-safe.

    Args:
        configs: Initial rows (configs or mappings; not audited), validated as every write is
            (a config made with ``model_copy`` or ``model_construct`` included).
        validators: Checks run on every row before it is written.
        on_commit: Called after every committed write (see `subscribe`).

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
        self.validators = tuple(validators)
        self._listeners = CommitListeners(() if on_commit is None else (on_commit,))
        self._lock = threading.Lock()
        self._rows: dict[str, LLMConfig] = {}
        self._audit: list[AuditEntry] = []
        self._audit_ids = itertools.count(1)
        self._generation = 1
        self._routing: dict[str, str] = {}  # scope -> strategy, as llm_scopes holds them
        for item in configs:
            if isinstance(item, LLMConfig):
                # model_copy(update=...) and model_construct skip validation: check it again.
                config = LLMConfig.from_row(item.model_dump())
            else:
                config = new_config(item, self.validators)
            self._check_unique(self._rows, config, config, "create")
            self._rows[config.id] = config

    def __repr__(self) -> str:
        return f"InMemoryStore({len(self._rows)} rows)"

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` with the write's name after every committed write.

        A listener that raises is logged; the write stays committed and returns its result.

        Returns:
            The call that unsubscribes ``listener``.
        """
        return self._listeners.subscribe(listener)

    # -- reads -------------------------------------------------------------------------------

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order, filtered as `LLMRepository.list_llms` says.

        Raises:
            ArgumentTooLongError: A text filter is longer than any row could hold.
        """
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        check_argument("provider", provider, MAX_LENGTHS["provider"])
        check_argument("search", search, MAX_SEARCH_LENGTH)
        needle = search.lower() if search else None
        with self._lock:
            rows = list(self._rows.values())
        return sorted(
            (
                row
                for row in rows
                if (not enabled_only or row.enabled)
                and (scope is None or row.scope == scope)
                and (provider is None or row.provider == provider)
                and (
                    needle is None or needle in row.name.lower() or needle in row.model_name.lower()
                )
            ),
            key=sort_key,
        )

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row; raise `LLMNotFoundError` when there is none."""
        with self._lock:
            found = _find(self._rows, llm_id)
        if found is None:
            raise not_found_error(llm_id)
        return found

    def get_default(self, scope: str = "global", *, kind: str = "chat") -> LLMConfig:
        """Return the scope's default of ``kind``; raise `NoDefaultLLMError` when there is none."""
        for row in self.list_llms(scope=scope):
            if row.is_default and row.kind == kind:
                return row
        raise no_default_error(scope)

    def snapshot(self) -> Snapshot:
        """Return every row of every scope and the generation."""
        with self._lock:
            rows, generation = list(self._rows.values()), self._generation
            routing = dict(self._routing)
        return Snapshot(
            configs=tuple(sorted(rows, key=sort_key)),
            generation=generation,
            read_at=datetime.now(timezone.utc),
            routing=routing,
        )

    def get_routing(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls (``"priority"`` when never set)."""
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        return self._routing.get(scope, "priority")

    def scope_routing(self) -> dict[str, str]:
        """Return every scope's routing as stored (see `SQLStore.scope_routing`)."""
        with self._lock:
            return dict(self._routing)

    def set_routing(self, scope: str, strategy: str, *, actor: str = DEFAULT_ACTOR) -> str:
        """Set how ``scope`` routes its calls, audited (see `SQLStore.set_routing`)."""
        scope, strategy = check_routing(scope, strategy)
        with self._lock:
            _check_has_rows(self._rows, scope, strategy)
            self._routing_in(scope, strategy, actor)
            self._generation += 1
        self._listeners.notify("set_routing")
        return strategy

    def _routing_in(self, scope: str, strategy: str, actor: str) -> None:
        # Set a scope's strategy with its audit entry (the caller holds the lock and has
        # checked the scope's rows).
        before = self._routing.get(scope, "priority")
        self._routing[scope] = strategy
        audit_id, old, new = routing_audit(scope, before, strategy)
        self._audit.append(
            AuditEntry(
                id=next(self._audit_ids),
                llm_id=audit_id,
                actor=actor,
                action="set_routing",
                before=dict(old),
                after=dict(new),
                at=datetime.now(timezone.utc),
            )
        )

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
            entries = list(reversed(self._audit))
        selected = [
            entry
            for entry in entries
            if (llm_id is None or entry.llm_id == llm_id)
            and (since is None or entry.at >= aware(since))
            and (until is None or entry.at < aware(until))
        ]
        return selected if limit is None else selected[:limit]

    # -- writes: each builds the new state aside and swaps it in whole -------------------------

    @staticmethod
    def _check_unique(
        rows: Mapping[str, LLMConfig],
        config: LLMConfig,
        who: LLMConfig,
        action: str,
        label: str | None = None,
    ) -> None:
        for other in rows.values():
            if other.id != config.id and (other.scope, other.name) == (config.scope, config.name):
                if action == "create":
                    raise name_taken_error(label or who.describe(), other.describe(), other.scope)
                what = doing(action, label or who.describe())
                msg = f"Could not {what}: LLM names are unique within a scope"
                raise ConflictError(msg)

    @contextmanager
    def _transaction(self, action: str, actor: str) -> Iterator[_Draft]:
        # The one commit point: the draft is swapped in whole, then the listeners are told.
        with self._lock:
            rows = dict(self._rows)
            entries: list[tuple[str, str, Any, Any]] = []
            yield rows, entries
            self._commit(rows, entries, actor)
        self._listeners.notify(action)

    def _commit(
        self, rows: dict[str, LLMConfig], entries: list[tuple[str, str, Any, Any]], actor: str
    ) -> None:
        now = datetime.now(timezone.utc)
        self._rows = rows
        self._generation += 1
        for llm_id, action, before, after in entries:
            self._audit.append(
                AuditEntry(
                    id=next(self._audit_ids),
                    llm_id=llm_id,
                    actor=actor,
                    action=action,
                    before=before.model_dump(mode="json") if before else None,
                    after=after.model_dump(mode="json") if after else None,
                    at=now,
                )
            )

    @staticmethod
    def _put(
        rows: dict[str, LLMConfig],
        entries: list[tuple[str, str, Any, Any]],
        before: LLMConfig | None,
        after: LLMConfig,
        action: str,
        *,
        take_default: bool,
    ) -> None:
        if after.is_default and take_default:
            for other in list(rows.values()):
                if (
                    (other.scope, other.kind) == (after.scope, after.kind)
                    and other.is_default
                    and other.id != after.id
                ):
                    cleared = other.model_copy(
                        update={"is_default": False, "version": other.version + 1}
                    )
                    rows[other.id] = cleared
                    entries.append((other.id, "update", other, cleared))
        rows[after.id] = after
        entries.append((after.id, action, before, after))

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Insert a row and return it (see `LLMStore.add`)."""
        return self._insert([new_config(llm, self.validators)], actor, numbered=False)[0]

    def add_many(
        self, llms: Sequence[Mapping[str, Any]], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Insert several rows, all or none, and return them (see `LLMStore.add_many`)."""
        return self._insert(new_configs(llms, self.validators), actor, numbered=True)

    def _insert(
        self, configs: Sequence[LLMConfig], actor: str, *, numbered: bool
    ) -> list[LLMConfig]:
        with self._transaction("add_many" if numbered else "add", actor) as (rows, entries):
            for index, config in enumerate(configs):
                label = item_label(config, index, numbered)
                self._check_unique(rows, config, config, "create", label)
                if config.id in rows:
                    raise ConflictError(f"Could not add {label}: the id is taken")
                self._put(rows, entries, None, config, "create", take_default=True)
        return list(configs)

    def _change(self, llm_id: str, changes: Mapping[str, Any], action: str, actor: str) -> Any:
        with self._transaction(action, actor) as (rows, entries):
            after = self._apply(rows, entries, llm_id, changes, action)
        return after

    def _apply(
        self,
        rows: dict[str, LLMConfig],
        entries: list[tuple[str, str, Any, Any]],
        llm_id: str,
        changes: Mapping[str, Any],
        action: str,
    ) -> LLMConfig:
        current = _find(rows, llm_id)
        if current is None:
            raise not_found_error(llm_id)
        if action == "set_default" and not current.enabled:
            raise disabled_default_error(current)
        after = updated_config(current, changes, self.validators)
        after = after.model_copy(update={"version": current.version + 1})
        self._check_unique(rows, after, current, action)
        rule = default_rule(current, after, changes)
        if rule == "check":
            for other in rows.values():
                if (
                    (other.scope, other.kind) == (after.scope, after.kind)
                    and other.is_default
                    and other.id != after.id
                ):
                    raise default_move_conflict(current, after.scope, other.describe(), after.kind)
        self._put(rows, entries, current, after, action, take_default=rule == "take")
        return after

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig:
        """Apply a partial update and return the row after it (see `LLMStore.update`)."""
        result: LLMConfig = self._change(llm_id, changes, "update", actor)
        return result

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others at once."""
        result: LLMConfig = self._change(llm_id, {"is_default": True}, "set_default", actor)
        return result

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        ids = as_id_list(llm_ids)
        results: list[LLMConfig] = []
        with self._transaction(action, actor) as (rows, entries):
            for llm_id in ids:
                if action == "delete":
                    current = _find(rows, llm_id)
                    if current is None:
                        raise not_found_error(llm_id)
                    del rows[current.id]
                    entries.append((current.id, "delete", current, None))
                    results.append(current)
                else:
                    changes = {"enabled": action == "enable"}
                    results.append(self._apply(rows, entries, llm_id, changes, action))
        return results

    def apply_changes(
        self,
        *,
        add: Sequence[Mapping[str, Any]] = (),
        update: Sequence[tuple[str, Mapping[str, Any]]] = (),
        delete: Sequence[str] = (),
        routing: Mapping[str, str] | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> list[LLMConfig]:
        """Delete, update and add rows at once, all or none (see `SQLStore.apply_changes`)."""
        configs = new_configs(add, self.validators)
        strategies = [check_routing(scope, strategy) for scope, strategy in (routing or {}).items()]
        changed: list[LLMConfig] = []
        with self._transaction("apply", actor) as (rows, entries):
            for llm_id in delete:
                current = _find(rows, llm_id)
                if current is None:
                    raise not_found_error(llm_id)
                del rows[current.id]
                entries.append((current.id, "delete", current, None))
            for llm_id, changes in update:
                changed.append(self._apply(rows, entries, llm_id, changes, "update"))
            for index, config in enumerate(configs):
                label = item_label(config, index, True)
                self._check_unique(rows, config, config, "create", label)
                self._put(rows, entries, None, config, "create", take_default=True)
                changed.append(config)
            for scope, strategy in strategies:  # refused before any is written
                _check_has_rows(rows, scope, strategy)
            for scope, strategy in strategies:  # the last step: nothing after it can refuse
                self._routing_in(scope, strategy, actor)
        return changed
