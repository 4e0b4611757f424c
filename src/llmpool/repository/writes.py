"""Every write of both stores, written once over each store's transaction primitives: the
rules (a name is unique within a scope, one default per scope and kind, a disabled row is never
the default) and their messages live here, so `InMemoryStore` and `SQLStore` say the same.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llmpool.contracts import log_fields
from llmpool.errors import (
    ConflictError,
    InvalidConfigError,
    LLMNotFoundError,
    describe_row,
    shorten,
    visible,
)
from llmpool.models import MAX_LENGTHS, check_argument
from llmpool.repository import DEFAULT_ACTOR
from llmpool.repository.experiments import Experiment, check_experiment, stored_experiment
from llmpool.repository.quotas import AUDIT_PREFIX as QUOTA_PREFIX
from llmpool.repository.quotas import Quota, check_quota, check_target
from llmpool.repository.rules import new_config, new_configs, updated_config
from llmpool.repository.scopes import AUDIT_PREFIX, check_routing, usable_strategy
from llmpool.repository.spaces import warn_if_mixed

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.repository import CommitListener, ConfigValidator

logger = logging.getLogger(__name__)


@dataclass
class Tx:
    """One write transaction: the store's handle, its actor, what it does (for errors), its rows."""

    handle: Any
    actor: str
    what: str
    written: list[LLMConfig] = field(default_factory=list)


def _doing(action: str, row: str) -> str:
    verb = {"create": "add", "set_default": "set the default LLM to"}.get(action, action)
    return f"{verb} {row}"


class Writes:
    """The admin writes of `LLMStore`: each one transaction, audited, all or nothing."""

    _uuid_ids = False  # PostgreSQL's id column is a uuid

    def __init__(
        self, validators: Sequence[ConfigValidator], on_commit: CommitListener | None
    ) -> None:
        self.validators = tuple(validators)
        self._listeners: tuple[CommitListener, ...] = () if on_commit is None else (on_commit,)
        self._listeners_lock = threading.Lock()

    scope_routing: Callable[[], dict[str, str]]  # every scope's routing, as stored
    scope_experiments: Callable[[], dict[str, Any]]  # every scope's experiment, as stored
    get: Callable[[str], LLMConfig]  # the read side of each store
    list_llms: Callable[..., list[LLMConfig]]

    def get_routing(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls (``"priority"`` when never set)."""
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        return usable_strategy(scope, self.scope_routing().get(scope, "priority"))

    def get_experiment(self, scope: str = "global") -> Experiment | None:
        """Return the experiment stored for ``scope`` (whether or not it routes by it now), or
        ``None`` (`llmpool.repository.experiments`)."""
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        return stored_experiment(scope, self.scope_experiments().get(scope))

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` with the write's name after every commit (its failure is logged,
        never raised); return the call that stops it."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            with self._listeners_lock, contextlib.suppress(ValueError):
                listeners = list(self._listeners)
                listeners.remove(listener)
                self._listeners = tuple(listeners)

        return unsubscribe

    def _notify(self, action: str) -> None:
        for listener in self._listeners:
            try:
                listener(action)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as error:  # the write is committed: nothing undoes it
                logger.warning(
                    "llmpool committed the %s, but a commit listener failed (%s)",
                    action,
                    type(error).__name__,
                    exc_info=True,
                    extra=log_fields("commit_listener_failed", error_class=type(error).__name__),
                )

    # The primitives each store implements, run inside the transaction `_transaction` opens.
    _transaction: Callable[[Tx], AbstractContextManager[None]]
    _find: Callable[[Tx, str], LLMConfig]  # locked; `InvalidConfigError`: stored invalid
    _name_holder: Callable[[Tx, LLMConfig], str | None]  # the row with the config's name
    _other_defaults: Callable[[Tx, LLMConfig], Sequence[Any]]  # of its scope and kind, locked
    _clear_defaults: Callable[[Tx, LLMConfig], None]  # the others of its scope, audited
    _insert: Callable[[Tx, LLMConfig], LLMConfig]
    _update: Callable[[Tx, LLMConfig, LLMConfig], LLMConfig]  # (current, target): version + 1
    _delete: Callable[[Tx, LLMConfig], None]
    _audit: Callable[[Tx, str, str, Any, Any], None]  # (llm_id, action, before, after)
    _has_rows: Callable[[Tx, str], bool]
    _set_routing: Callable[[Tx, str, str], str]  # returns the strategy it replaced
    _set_experiment: Callable[[Tx, str, Any], Any]  # returns the definition it replaced
    _experiment: Callable[[Tx, str], Any]  # the scope's definition as stored, or None
    _row_names: Callable[[Tx, str], set[str]]  # the names of the scope's rows
    _get_quota: Callable[[Tx, str, str], Quota | None]  # (kind, target), locked
    _put_quota: Callable[[Tx, Quota], Quota]  # inserted or replaced; returned as stored
    _drop_quota: Callable[[Tx, str, str], None]
    list_quotas: Callable[[], list[Quota]]  # every quota, by kind and target
    # A row stored invalid (raw SQL put it there): (llm_id, changes, action, error); SQL only.
    _repair: Callable[[Tx, str, Any, str, InvalidConfigError], LLMConfig] | None = None

    @contextmanager
    def _write(self, action: str, what: str, actor: str) -> Iterator[Tx]:
        # The one commit point; listeners hear of the write only once it is committed.
        tx = Tx(None, actor, what)
        with self._transaction(tx):
            yield tx
        self._notify(action)
        warn_if_mixed(self, tx.written)

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Insert a row (``id`` generated when absent) and return it as stored; `ConflictError`
        when the name is taken in the scope, or a concurrent default won."""
        config = new_config(llm, self.validators, uuid_ids=self._uuid_ids)
        with self._write("add", "add LLMs", actor) as tx:
            return self._add_in(tx, config, describe_row(config.name, None))

    def add_many(
        self, llms: Sequence[Mapping[str, Any]], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Insert several rows in one transaction, all or none, and return them (an error names
        the item: ``item N: ...``, ``(item N)``)."""
        configs = new_configs(llms, self.validators, uuid_ids=self._uuid_ids)
        with self._write("add_many", "add LLMs", actor) as tx:
            return [self._add_in(tx, c, _item(c, i)) for i, c in enumerate(configs)]

    def _add_in(self, tx: Tx, config: LLMConfig, label: str) -> LLMConfig:
        tx.what = f"add {label}"
        self._check_name(tx, config, label)
        if config.is_default:
            self._clear_defaults(tx, config)
        stored = self._insert(tx, config)
        self._audit(tx, stored.id, "create", None, stored)
        tx.written.append(stored)
        return stored

    def _check_name(self, tx: Tx, config: LLMConfig, label: str) -> None:
        # Checked first so that the refusal names the row that has the name (not the refused
        # row's generated id); the unique index still decides a race.
        holder = self._name_holder(tx, config)
        if holder is not None:
            raise ConflictError(
                f"Could not add {label}: LLM names are unique within a scope, and {holder} has "
                f"that name in scope {shorten(config.scope)!r}"
            )

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig:
        """Apply a partial update and return the row after it (``is_default=True`` clears the
        scope's other default; a default moved to a scope that has one is refused)."""
        with self._write("update", f"update LLM id {llm_id}", actor) as tx:
            return self._change(tx, llm_id, changes, "update")

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others in the same transaction (a
        disabled row is refused: `InvalidConfigError`, field ``enabled``)."""
        what = _doing("set_default", f"LLM id {llm_id}")
        with self._write("set_default", what, actor) as tx:
            return self._change(tx, llm_id, {"is_default": True}, "set_default")

    def delete(self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR) -> int:
        """Delete one row or many, all or none; return how many (`LLMNotFoundError`)."""
        return len(self._bulk(llm_ids, "delete", actor))

    def enable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Enable one row or many, all or none; return the rows after (`LLMNotFoundError`)."""
        return self._bulk(llm_ids, "enable", actor)

    def disable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Disable one row or many, all or none; return the rows after (`LLMNotFoundError`)."""
        return self._bulk(llm_ids, "disable", actor)

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        ids = list(dict.fromkeys([llm_ids] if isinstance(llm_ids, str) else map(str, llm_ids)))
        if not ids:
            raise InvalidConfigError("No LLM ids given", field="id")
        changes = {"enabled": action == "enable"}
        with self._write(action, _doing(action, f"{len(ids)} LLM(s)"), actor) as tx:
            return [self._change(tx, llm_id, changes, action) for llm_id in ids]

    def _change(self, tx: Tx, llm_id: str, changes: Mapping[str, Any], action: str) -> LLMConfig:
        try:
            current = self._find(tx, llm_id)
        except InvalidConfigError as error:  # an invalid row (raw SQL): the repair path
            if self._repair is None:
                raise
            return self._repair(tx, llm_id, changes, action, error)
        tx.what = _doing(action, current.describe())
        if action == "delete":
            self._delete(tx, current)
            self._audit(tx, current.id, action, current, None)
            return current
        if action == "set_default" and not current.enabled:
            # get_llm() serves no disabled row: such a default would leave the scope without one.
            msg = (
                f"Could not {tx.what}: it is disabled, and get_llm() serves no disabled row; "
                f"enable it first (llmpool enable {current.id}), or make another row of scope "
                f"{shorten(current.scope)!r} the default"
            )
            raise InvalidConfigError(msg, llm_name=current.name, llm_id=current.id, field="enabled")
        target = updated_config(current, changes, self.validators)
        if target.is_default and "is_default" in changes:
            self._clear_defaults(tx, target)
        elif target.is_default and (target.scope, target.kind) != (current.scope, current.kind):
            # A default moved to another scope (or kind), which must not have one already.
            holders = self._other_defaults(tx, target)
            if holders:
                holder = describe_row(holders[0]["name"], str(holders[0]["id"]))
                of_kind = "" if target.kind == "chat" else f" {target.kind} model"
                raise ConflictError(
                    f"Could not update {current.describe()}: it is the default of scope "
                    f"{current.scope!r}, and scope {target.scope!r} already has a default"
                    f"{of_kind}, {holder}; move it with is_default=False, or pass is_default=True "
                    "as well to make it that scope's default instead"
                )
        after = self._update(tx, current, target)
        self._audit(tx, current.id, action, current, after)
        tx.written.append(after)
        return after

    def set_routing(self, scope: str, strategy: str, *, actor: str = DEFAULT_ACTOR) -> str:
        """Set how ``scope`` routes its calls, audited; return the strategy now in force
        (`InvalidConfigError`: an unknown strategy, a bad scope, or one without rows)."""
        scope, strategy = check_routing(scope, strategy)
        what = f"set the routing of scope {shorten(scope)!r}"
        with self._write("set_routing", what, actor) as tx:
            self._route(tx, scope, strategy)
        return strategy

    def set_experiment(
        self,
        scope: str,
        experiment: Mapping[str, Any] | Experiment,
        *,
        actor: str = DEFAULT_ACTOR,
    ) -> Experiment:
        """Store ``scope``'s experiment and route the scope by it, in one audited transaction;
        return it (`InvalidConfigError` naming the field: an arm naming no row of the scope, a
        weight not above 0, ...).

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> store = InMemoryStore([{"name": "A", "provider": "fake", "model_name": "m"},
            ...                        {"name": "B", "provider": "fake", "model_name": "m"}])
            >>> e = store.set_experiment("global", {"arms": {"a": {"rows": ["A"], "weight": 9},
            ...                                               "b": {"rows": ["B"]}}})
            >>> store.get_routing("global"), [arm.name for arm in e.arms]
            ('experiment', ['a', 'b'])
        """
        scope, _ = check_routing(scope, "experiment")
        checked = check_experiment(scope, experiment)  # its shape, before the transaction
        what = f"set the experiment of scope {shorten(scope)!r}"
        with self._write("set_experiment", what, actor) as tx:
            checked = self._experiment_in(tx, scope, checked)
        return checked

    def _experiment_in(
        self, tx: Tx, scope: str, experiment: Experiment, *, route: bool = True
    ) -> Experiment:
        checked = check_experiment(scope, experiment, rows=self._row_names(tx, scope))
        before = self._set_experiment(tx, scope, checked.as_dict())
        if before != checked.as_dict():
            llm_id = f"{AUDIT_PREFIX}{scope}"[:64]
            was, now = (
                {"scope": scope, "experiment": before},
                {"scope": scope, "experiment": checked.as_dict()},
            )
            self._audit(tx, llm_id, "set_experiment", was, now)
        if route:
            self._route(tx, scope, "experiment")
        return checked

    def _route(self, tx: Tx, scope: str, strategy: str) -> None:
        if strategy == "experiment" and self._experiment(tx, scope) is None:
            raise InvalidConfigError(
                f"Could not route scope {shorten(scope)!r} by experiment: it has no experiment; "
                "define its arms first (llmpool experiment set SCOPE --arm NAME=ROW ...)",
                field="experiment",
            )
        if strategy != "priority" and not self._has_rows(tx, scope):
            raise InvalidConfigError(
                f"Could not route scope {shorten(scope)!r} by {strategy}: the scope has no rows (a "
                "misspelt scope?); add its rows first (or set the strategy in the `llmpool apply` "
                "document that adds them)",
                field="scope",
            )
        before = self._set_routing(tx, scope, strategy)
        # Audited under "scope:<scope>", cut to the audit column's 64 characters.
        llm_id = f"{AUDIT_PREFIX}{scope}"[:64]
        new = {"scope": scope, "routing": strategy}
        self._audit(tx, llm_id, "set_routing", {"scope": scope, "routing": before}, new)

    def get_quota(self, kind: str, target: str) -> Quota | None:
        """Return the quota on ``kind`` ``target`` (a row by id), or ``None``."""
        kind, target = check_target(kind, target)
        return next((q for q in self.list_quotas() if (q.kind, q.target) == (kind, target)), None)

    def row_target(self, target: str) -> str:
        """Return the id of the row a row quota names by id or, when unique, by name
        (`InvalidConfigError`, field ``target``)."""
        try:
            return self.get(target).id
        except LLMNotFoundError:
            pass
        named = [c for c in self.list_llms(scope=None) if c.name == target]
        if len(named) == 1:
            return str(named[0].id)
        shown = shorten(visible(target))
        if not named:
            msg = f"Could not set the quota: no row has the id or name {shown!r}"
            raise InvalidConfigError(msg, field="target")
        scopes = ", ".join(sorted(repr(c.scope) for c in named))
        msg = f"Could not set the quota: rows of scopes {scopes} are named {shown!r}; give the id"
        raise InvalidConfigError(msg, field="target")

    def set_quota(
        self,
        kind: str,
        target: str,
        *,
        budget: float | None = None,
        period: str | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> Quota:
        """Set the quota on ``kind`` ``target`` (a row by id or unique name), replacing any,
        audited; return it as stored (`InvalidConfigError` naming the field at fault).

        Example:
            >>> from llmpool.repository.memory import InMemoryStore
            >>> InMemoryStore().set_quota("tag", "tenant=acme", budget=50, period="month").limits()
            '50 a month'
        """
        quota = check_quota(kind, target, budget=budget, period=period, rpm=rpm, tpm=tpm)
        if quota.kind == "row":
            quota = replace(quota, target=self.row_target(quota.target))
        with self._write("set_quota", f"set the quota on {quota.describe()}", actor) as tx:
            return self._quota_in(tx, quota)

    def delete_quota(self, kind: str, target: str, *, actor: str = DEFAULT_ACTOR) -> Quota | None:
        """Delete the quota on ``kind`` ``target``, audited; return it (``None``: none)."""
        kind, target = check_target(kind, target)
        with self._write("delete_quota", f"delete the quota on {kind} {target!r}", actor) as tx:
            return self._unquota(tx, kind, target)

    def _quota_in(self, tx: Tx, quota: Quota) -> Quota:
        before = self._get_quota(tx, quota.kind, quota.target)
        stored = self._put_quota(tx, quota)
        llm_id = f"{QUOTA_PREFIX}{quota.key}"[:64]
        old = before.as_dict() if before is not None else None
        self._audit(tx, llm_id, "set_quota", old, stored.as_dict())
        return stored

    def _unquota(self, tx: Tx, kind: str, target: str) -> Quota | None:
        before = self._get_quota(tx, kind, target)
        if before is not None:
            self._drop_quota(tx, kind, target)
            self._audit(
                tx, f"{QUOTA_PREFIX}{before.key}"[:64], "delete_quota", before.as_dict(), None
            )
        return before

    def apply_changes(
        self,
        *,
        add: Sequence[Mapping[str, Any]] = (),
        update: Sequence[tuple[str, Mapping[str, Any]]] = (),
        delete: Sequence[str] = (),
        routing: Mapping[str, str] | None = None,
        experiments: Mapping[str, Mapping[str, Any] | Experiment] | None = None,
        quotas: Sequence[Quota] = (),
        unquota: Sequence[tuple[str, str]] = (),
        actor: str = DEFAULT_ACTOR,
    ) -> list[LLMConfig]:
        """Delete (first: a removed row frees its name), update and add rows, then set scopes'
        experiments and strategies, then delete (``unquota``: kind and target) and set
        ``quotas``, in one audited transaction (`llmpool.repository.declarative`); return the
        rows updated and added."""
        configs = new_configs(add, self.validators, uuid_ids=self._uuid_ids)
        strategies = [check_routing(scope, strategy) for scope, strategy in (routing or {}).items()]
        trials = [(s, check_experiment(s, e)) for s, e in (experiments or {}).items()]
        with self._write("apply", "apply changes", actor) as tx:
            for llm_id in delete:
                self._change(tx, llm_id, {}, "delete")
            changed = [self._change(tx, llm_id, c, "update") for llm_id, c in update]
            changed += [self._add_in(tx, c, _item(c, i)) for i, c in enumerate(configs)]
            for scope, experiment in trials:  # defined; routed by it if `routing` says so
                self._experiment_in(tx, scope, experiment, route=False)
            for scope, strategy in strategies:
                self._route(tx, scope, strategy)
            for kind, target in unquota:
                self._unquota(tx, kind, target)
            for quota in quotas:
                self._quota_in(tx, quota)
        return changed


def _item(config: LLMConfig, index: int) -> str:
    # A refused row's id was generated for it and exists nowhere: it is named without one.
    return f"{describe_row(config.name, None)} (item {index})"
