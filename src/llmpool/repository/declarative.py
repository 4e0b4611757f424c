"""The table as a file: export rows, plan the changes a file asks for, apply them at once.

A document is ``{"llms": [entry, ...], "scopes": {scope: {"routing": strategy,
"experiment": {...}}}, "quotas": [quota, ...]}`` (an experiment as
`llmpool.repository.experiments` defines it; the scope routes by it with ``"routing":
"experiment"``); an entry holds a row's writable fields, matched by ``(scope, name)``
(``scope`` default ``global``); what it leaves out is left as it is. A quota
(`llmpool.repository.quotas`) is ``{"kind": "tag", "target": "tenant=acme", "budget": 50,
"period": "month", "rpm": 600}``, matched by kind and target (a row's by id, or by the name of a
row already stored), its limits set whole; with ``prune``, a document that has ``quotas``
removes the quotas it does not list. `plan` validates every entry as a write would; `apply` writes
the plan in one transaction, all or nothing. Applying an export changes nothing.

Example:
    >>> from llmpool.repository.memory import InMemoryStore
    >>> store = InMemoryStore()
    >>> doc = {"llms": [{"name": "Fake", "provider": "fake", "model_name": "echo"}]}
    >>> print(apply(store, doc).render())
    + add LLM 'Fake' in scope 'global'
    >>> apply(store, export_rows(store)).empty
    True
"""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from llmpool.contracts import log_fields
from llmpool.errors import InvalidConfigError, LLMPoolError, describe_row, shorten
from llmpool.models import LLMConfig
from llmpool.repository import DEFAULT_ACTOR
from llmpool.repository.documents import dumps, loads
from llmpool.repository.experiments import Experiment, check_experiment
from llmpool.repository.quotas import Quota, quota_entry
from llmpool.repository.rules import WRITABLE_FIELDS, new_config, updated_config
from llmpool.repository.scopes import check_routing
from llmpool.repository.stored import StoredRow, stored_rows

if TYPE_CHECKING:
    from llmpool.repository import ConfigValidator

__all__ = [
    "Plan",
    "Step",
    "apply",
    "dumps",
    "export_rows",
    "loads",
    "ordered",
    "plan",
    "quota_steps",
    "route_steps",
    "row_step",
    "shown",
    "write",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One step of a plan: ``add``, ``change``, ``remove`` a row, define a scope's
    ``experiment``, route a scope (``routing``), set a quota (``quota``; ``name`` is its key)
    or remove one (``unquota``); ``changes`` maps field -> value to add, or -> ``(before,
    after)``."""

    action: str
    scope: str
    name: str
    llm_id: str | None = None
    changes: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """Return the step as one line of a plan."""
        if self.action == "routing":
            before, after = self.changes["routing"]
            return f"~ route scope {shorten(self.scope)!r}: {before} -> {after}"
        if self.action == "experiment":
            before, after = self.changes["experiment"]
            return (
                f"~ experiment of scope {shorten(self.scope)!r}: {shown(before)} -> {shown(after)}"
            )
        if self.action in ("quota", "unquota"):
            before, after = self.changes["quota"]
            kind, _, target = self.name.partition(":")
            what = f"quota on {kind} {shorten(target)!r}"
            if after is None:
                return f"- remove {what}"
            limits = quota_entry(after, what).limits()
            return f"~ set {what}: {limits}" if before is not None else f"+ add {what}: {limits}"
        row = describe_row(self.name, self.llm_id)
        if self.action == "add":
            return f"+ add {row} in scope {shorten(self.scope)!r}"
        if self.action == "remove":
            return f"- remove {row} from scope {shorten(self.scope)!r}"
        diff = "; ".join(
            f"{name}: {shown(before)} -> {shown(after)}"
            for name, (before, after) in self.changes.items()
        )
        return f"~ change {row}: {diff}"

    def as_dict(self) -> dict[str, Any]:
        """Return the step as a JSON-ready dict."""
        changes: Any = self.changes
        if self.action in ("change", "routing", "experiment", "quota", "unquota"):
            changes = {k: {"before": b, "after": a} for k, (b, a) in self.changes.items()}
        return {
            "action": self.action,
            "scope": self.scope,
            "name": self.name,
            "id": self.llm_id,
            "changes": changes,
        }


def shown(value: Any) -> str:
    """Return a field's value as a plan shows it: JSON, cut short."""
    return shorten(json.dumps(value, sort_keys=True, default=str), 200)


@dataclass(frozen=True)
class Plan:
    """What applying a document changes, in order: removals, changes, additions, routing,
    quotas."""

    steps: tuple[Step, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether the table already matches the document."""
        return not self.steps

    def render(self) -> str:
        """Return the plan, one line per row (``no changes`` when empty)."""
        return "\n".join(step.describe() for step in self.steps) or "no changes"

    def as_dict(self) -> dict[str, Any]:
        """Return the plan as a JSON-ready dict."""
        return {"steps": [step.as_dict() for step in self.steps]}


def export_rows(store: Any, *, scope: str | None = "global") -> dict[str, Any]:
    """Return the valid rows of ``scope`` (``None``: every scope) as a document (an invalid
    row, which may hold a secret, is left out and logged)."""
    entries = []
    for row in stored_rows(store, scope=scope):
        if row.config is None:
            logger.warning(
                "export left out an invalid row: %s",
                row.describe(),
                extra=log_fields("export_skipped", llm_id=row.id, llm_name=row.name),
            )
            continue
        data = row.config.model_dump(mode="json")
        entries.append({name: data[name] for name in WRITABLE_FIELDS})
    entries.sort(key=lambda e: (e["scope"], e["priority"], e["name"]))
    document: dict[str, Any] = {"llms": entries}
    get_routing = getattr(store, "get_routing", None)
    if get_routing is not None:
        names = sorted({e["scope"] for e in entries} | ({scope} if scope is not None else set()))
        document["scopes"] = {name: {"routing": get_routing(name)} for name in names}
        get_experiment = getattr(store, "get_experiment", None)
        for name, settings in document["scopes"].items():
            experiment = get_experiment(name) if get_experiment is not None else None
            if experiment is not None:
                settings["experiment"] = experiment.as_dict()
    list_quotas = getattr(store, "list_quotas", None)
    if list_quotas is not None:
        document["quotas"] = [quota.as_dict() for quota in list_quotas()]
    return document


def _entries(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    defaults: dict[tuple[str, str], str] = {}
    for index, entry in enumerate(document.get("llms", [])):
        if not isinstance(entry, Mapping):
            raise InvalidConfigError(f"entry {index} is not an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            msg = f"entry {index} has no name (rows are matched by scope and name)"
            raise InvalidConfigError(msg, field="name")
        where = f"entry {index} ({describe_row(name, None)})"
        for key in entry:
            if key not in WRITABLE_FIELDS:
                close = difflib.get_close_matches(str(key), WRITABLE_FIELDS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                reason = "is set by the store" if key in LLMConfig.FIELDS else "is not a field"
                msg = f"{where}: {shorten(str(key))!r} {reason}{hint}"
                raise InvalidConfigError(msg, llm_name=name, field=str(key))
        values = {"scope": "global", **entry}
        key = (str(values["scope"]), name)
        if key in seen:
            msg = f"{where}: scope {shorten(key[0])!r} lists this name twice"
            raise InvalidConfigError(msg, llm_name=name, field="name")
        seen.add(key)
        if values.get("is_default") is True:
            kind = (key[0], str(values.get("kind", "chat")))
            if kind in defaults:
                msg = (
                    f"{where}: scope {shorten(key[0])!r} already has a default in this "
                    f"document, {describe_row(defaults[kind], None)}"
                )
                raise InvalidConfigError(msg, llm_name=name, field="is_default")
            defaults[kind] = name
        entries.append(values)
    return entries


def _strategies(document: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Experiment]]:
    listed = document.get("scopes") or {}
    if not isinstance(listed, Mapping):
        msg = 'scopes must be an object: {"scope": {"routing": "weighted"}}'
        raise InvalidConfigError(msg, field="scopes")
    strategies: dict[str, str] = {}
    experiments: dict[str, Experiment] = {}
    for scope, settings in listed.items():
        where = f"scopes.{shorten(str(scope))}"
        if not isinstance(settings, Mapping):
            msg = f'{where} must be an object like {{"routing": "weighted"}}'
            raise InvalidConfigError(msg, field=where)
        for key in settings:
            if key not in ("routing", "experiment"):
                msg = (
                    f"{where}: {shorten(str(key))!r} is not a scope setting (only 'routing' and "
                    "'experiment')"
                )
                raise InvalidConfigError(msg, field=f"{where}.{shorten(str(key))}")
        if "routing" in settings:
            name, strategy = check_routing(str(scope), settings["routing"])
            strategies[name] = strategy
        if settings.get("experiment") is not None:
            name, _ = check_routing(str(scope), "experiment")
            experiments[name] = check_experiment(name, settings["experiment"])
    return strategies, experiments


def plan(
    store: Any, document: Mapping[str, Any], *, prune: bool = False, scopes: Sequence[str] = ()
) -> Plan:
    """Return what applying ``document`` to ``store`` would change (``prune``: also remove the
    rows of its scopes, and of ``scopes``, it does not list); `InvalidConfigError` names an
    entry that would be refused."""
    entries = _entries(document)
    strategies, experiments = _strategies(document)
    rows = stored_rows(store, scope=None)
    by_key = {(r.scope, r.name): r for r in rows if r.scope is not None and r.name is not None}
    validators = tuple(getattr(store, "validators", ()))
    adds: list[Step] = []
    changes: list[Step] = []
    for index, entry in enumerate(entries):
        try:
            step = row_step(
                by_key.get((str(entry["scope"]), str(entry["name"]))), entry, validators
            )
        except InvalidConfigError as error:
            error.args = (f"entry {index}: {error.args[0]}", *error.args[1:])
            raise
        if step is not None:
            (adds if step.action == "add" else changes).append(step)
    removes: list[Step] = []
    if prune:
        covered = {str(e["scope"]) for e in entries} | set(scopes)
        listed = {(str(e["scope"]), str(e["name"])) for e in entries}
        for row in rows:
            if row.scope in covered and (row.scope, row.name) not in listed:
                removes.append(Step("remove", row.scope or "", row.name or "", row.id))
    routes = [*_experiment_steps(store, experiments), *route_steps(store, strategies)]
    steps = ordered(removes, changes, adds, routes)
    if "quotas" not in document:
        return steps
    return Plan((*steps.steps, *quota_steps(store, document["quotas"], prune=prune)))


def _experiment_steps(store: Any, experiments: Mapping[str, Experiment]) -> list[Step]:
    # The steps that define each scope's experiment, where it differs from the stored one.
    steps: list[Step] = []
    if not experiments:
        return steps
    get_experiment = getattr(store, "get_experiment", None)
    if get_experiment is None:
        msg = f"{store!r} keeps no experiments; leave them out of the document"
        raise InvalidConfigError(msg, field="scopes")
    for scope, experiment in sorted(experiments.items()):
        stored = get_experiment(scope)
        before = None if stored is None else stored.as_dict()
        if before != experiment.as_dict():
            steps.append(
                Step("experiment", scope, "", None, {"experiment": (before, experiment.as_dict())})
            )
    return steps


def quota_steps(store: Any, listed: Any, *, prune: bool = False) -> list[Step]:
    """Return the steps that set each quota ``listed`` (a document's ``quotas``) and, with
    ``prune``, remove the stored ones it does not list."""
    if not isinstance(listed, list):
        msg = 'quotas must be a list: [{"kind": "tag", "target": "tenant=acme", "budget": 5}]'
        raise InvalidConfigError(msg, field="quotas")
    list_quotas = getattr(store, "list_quotas", None)
    if list_quotas is None:
        msg = f"{store!r} keeps no quotas; leave 'quotas' out of the document"
        raise InvalidConfigError(msg, field="quotas")
    stored: dict[str, Quota] = {quota.key: quota for quota in list_quotas()}
    wanted: dict[str, Quota] = {}
    for index, entry in enumerate(listed):
        quota = quota_entry(entry, f"quotas.{index}")
        if quota.kind == "row" and f"row:{quota.target}" not in stored:
            quota = replace(quota, target=store.row_target(quota.target))
        if quota.key in wanted:
            msg = f"quotas.{index}: {quota.describe()} is listed twice"
            raise InvalidConfigError(msg, field="quotas")
        wanted[quota.key] = quota
    steps = []
    for key, quota in sorted(wanted.items()):
        before = stored.get(key)
        old = before.as_dict() if before is not None else None
        if old != quota.as_dict():
            steps.append(Step("quota", "", key, None, {"quota": (old, quota.as_dict())}))
    if prune:
        for key in sorted(set(stored) - set(wanted)):
            step = Step("unquota", "", key, None, {"quota": (stored[key].as_dict(), None)})
            steps.append(step)
    return steps


def row_step(
    row: StoredRow | None,
    entry: Mapping[str, Any],
    validators: Sequence[ConfigValidator],
    *,
    key: tuple[str, ...] = ("scope", "name"),
) -> Step | None:
    """Return the step that makes ``row`` (``None``: none yet, so add it) hold ``entry``'s
    fields (``key``: the fields it was matched by), validated as the write will be; ``None``
    when it already does."""
    scope, row_name = str(entry["scope"]), str(entry["name"])
    if row is None:
        new_config(entry, validators)
        return Step("add", scope, row_name, entry.get("id"), dict(entry))
    diff = {
        name: (row.fields.get(name), value)
        for name, value in entry.items()
        if name not in key and row.fields.get(name) != value
    }
    if not diff:
        return None
    if row.config is not None:
        updated_config(row.config, {k: a for k, (_, a) in diff.items()}, validators)
    return Step("change", scope, row_name, row.id, diff)


def route_steps(store: Any, strategies: Mapping[str, str]) -> list[Step]:
    """Return the steps that route each scope of ``strategies`` by its strategy."""
    routes: list[Step] = []
    if strategies:
        get_routing = getattr(store, "get_routing", None)
        if get_routing is None:
            msg = f"{store!r} keeps no routing strategies; leave 'scopes' out of the document"
            raise InvalidConfigError(msg, field="scopes")
        for scope, strategy in sorted(strategies.items()):
            before = get_routing(scope)
            if before != strategy:
                routes.append(Step("routing", scope, "", None, {"routing": (before, strategy)}))
    return routes


def ordered(
    removes: Sequence[Step], changes: Sequence[Step], adds: Sequence[Step], routes: Sequence[Step]
) -> Plan:
    """Return the steps as a plan in the order they can be written: a removed row frees its
    name, defaults are given up before they are taken, a routed scope has its rows."""
    # Defaults given up first, taken last: no row is cleared behind the plan's back.
    changed = sorted(changes, key=lambda s: _default_order(s.changes.get("is_default")))
    return Plan((*removes, *changed, *adds, *routes))


def _default_order(change: Any) -> int:
    if change is None:
        return 1
    return 2 if change[1] is True else 0


def apply(
    store: Any,
    document: Mapping[str, Any],
    *,
    prune: bool = False,
    scopes: Sequence[str] = (),
    dry_run: bool = False,
    actor: str | None = None,
) -> Plan:
    """Make the table match ``document`` (see `plan`) in one transaction, unless ``dry_run``;
    return the plan. When anything is refused, nothing is written."""
    steps = plan(store, document, prune=prune, scopes=scopes)
    if not dry_run:
        write(store, steps, actor=actor)
    return steps


def write(store: Any, steps: Plan, *, actor: str | None = None) -> None:
    """Write a plan's steps in one transaction with one audit entry per row; when anything is
    refused, nothing is written."""
    if steps.empty:
        return
    apply_changes = getattr(store, "apply_changes", None)
    if apply_changes is None:
        raise LLMPoolError(f"{store!r} cannot apply a document (it has no apply_changes)")
    apply_changes(
        add=[s.changes for s in steps.steps if s.action == "add"],
        update=[
            (s.llm_id, {k: a for k, (_, a) in s.changes.items()})
            for s in steps.steps
            if s.action == "change"
        ],
        delete=[s.llm_id for s in steps.steps if s.action == "remove"],
        routing={s.scope: s.changes["routing"][1] for s in steps.steps if s.action == "routing"},
        experiments={
            s.scope: s.changes["experiment"][1] for s in steps.steps if s.action == "experiment"
        },
        quotas=[
            quota_entry(s.changes["quota"][1], s.name) for s in steps.steps if s.action == "quota"
        ],
        unquota=[tuple(s.name.split(":", 1)) for s in steps.steps if s.action == "unquota"],
        actor=actor or DEFAULT_ACTOR,
    )
