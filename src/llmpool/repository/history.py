"""The audit log read back: what each entry changed, a row's history under all its names, and
the table as it was at an entry or a time, restored through `llmpool.repository.declarative`.

The log keeps each row before and after every write (references to variables and files, never
a secret), and each scope's routing and experiment under ``scope:<scope>`` (a rollback puts a
scope's routing back; its experiment's definition stays as it is). Undoing the entries after a
point, newest first, leaves every row they touched as the oldest of them found it: a row
created since is removed, a row deleted since is added back with its id and every field (its
``auth_meta`` names the same variables), a changed one gets its fields back. Rows no entry
after the point touched are left alone.

Example:
    >>> from llmpool.repository.memory import InMemoryStore
    >>> store = InMemoryStore()
    >>> row = store.add({"name": "A", "provider": "fake", "model_name": "echo"})
    >>> point = store.audit_log()[0].id
    >>> _ = store.update(row.id, {"priority": 5})
    >>> print(rollback(store, point).render())
    ~ change LLM 'A' (id ...): priority: 5 -> 100
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from llmpool.errors import InvalidConfigError, RollbackError, describe_row
from llmpool.repository.declarative import Plan, Step, ordered, route_steps, row_step, write
from llmpool.repository.quotas import AUDIT_PREFIX as QUOTA_PREFIX
from llmpool.repository.quotas import FIELDS as QUOTA_FIELDS
from llmpool.repository.rules import WRITABLE_FIELDS
from llmpool.repository.scopes import AUDIT_PREFIX
from llmpool.repository.stored import stored_rows

if TYPE_CHECKING:
    from llmpool.models import AuditEntry

__all__ = ["changed_fields", "history", "rollback", "rollback_plan"]


def changed_fields(entry: AuditEntry) -> dict[str, tuple[Any, Any]]:
    """Return what ``entry`` changed: field -> ``(before, after)`` (``None`` where a row was
    not: all its fields for a create or a delete; ``routing`` or ``experiment`` for a scope's
    entry).

    Example:
        >>> from datetime import datetime, timezone
        >>> from llmpool.models import AuditEntry
        >>> changed_fields(AuditEntry(id=1, llm_id="x", actor="ops", action="update",
        ...     before={"priority": 1}, after={"priority": 2}, at=datetime.now(timezone.utc)))
        {'priority': (1, 2)}
    """
    before, after = entry.before or {}, entry.after or {}
    names: Sequence[str] = ("routing", "experiment") if _is_routing(entry) else WRITABLE_FIELDS
    if entry.llm_id.startswith(QUOTA_PREFIX):
        names = QUOTA_FIELDS
    return {
        name: (before.get(name), after.get(name))
        for name in names
        if (name in before or name in after) and before.get(name) != after.get(name)
    }


def history(
    store: Any, *, ref: str | None = None, scope: str | None = None, limit: int | None = None
) -> list[AuditEntry]:
    """Return the audit entries, newest first: of the row ``ref`` names (its id, or a name it
    has or had: its entries under every name), of rows and routing of ``scope``; at most
    ``limit``; `LLMNotFoundError` when no entry names ``ref``.

    Example:
        >>> from llmpool.repository.memory import InMemoryStore
        >>> store = InMemoryStore()
        >>> row = store.add({"name": "A", "provider": "fake", "model_name": "echo"})
        >>> _ = store.update(row.id, {"name": "B"})
        >>> [e.action for e in history(store, ref="A")]
        ['update', 'create']
    """
    from llmpool.errors import LLMNotFoundError

    entries: list[AuditEntry] = store.audit_log(limit=None)
    if ref is not None:
        ids = {e.llm_id for e in entries if ref == e.llm_id or ref in _names(e)}
        if not ids:
            raise LLMNotFoundError(f"No audit entry names an LLM {ref!r} (by id or name)")
        entries = [e for e in entries if e.llm_id in ids]
    if scope is not None:
        entries = [e for e in entries if scope in _scopes(e)]
    return entries if limit is None else entries[:limit]


def rollback_plan(store: Any, to: int | datetime, *, scope: str | None = None) -> Plan:
    """Return the plan that puts the rows and the routing back as they were right after the
    audit entry of id ``to`` (or at the time ``to``, naive meaning UTC), only those of ``scope``
    if given. Quotas are left as they are.

    Raises:
        RollbackError: ``to`` is no entry's id, a time before the first entry, or an entry
            after it did not record the row (an invalid row's content is never logged).
        InvalidConfigError: a row as it was would be refused now (named with its entry).
    """
    undone = _after(store.audit_log(limit=None), to)
    if scope is not None:
        touched = {e.llm_id for e in undone if scope in _scopes(e)}
        undone = [e for e in undone if e.llm_id in touched]
    targets: dict[str, AuditEntry] = {}  # each row's oldest entry after the point
    for entry in sorted(undone, key=lambda e: e.id):  # a row's writes take ids in their order
        if _is_routing(entry) and "routing" not in (entry.before or {}):
            continue  # an experiment's definition stays; its scope's routing is put back
        targets.setdefault(entry.llm_id, entry)
    rows = {row.id: row for row in stored_rows(store, scope=None)}
    validators = tuple(getattr(store, "validators", ()))
    removes: list[Step] = []
    changes: list[Step] = []
    adds: list[Step] = []
    strategies: dict[str, str] = {}
    for llm_id, entry in targets.items():
        if llm_id.startswith(QUOTA_PREFIX):  # quotas are left as they are
            continue
        before = entry.before or {}
        if entry.action != "create" and not before:
            raise RollbackError(
                f"Audit entry {entry.id} ({entry.action} of {llm_id}) did not record what was "
                "before it (a row invalid as stored is logged without its content): roll back "
                f"to entry {entry.id} or later"
            )
        if _is_routing(entry):
            scope_name = str(before.get("scope", llm_id.removeprefix(AUDIT_PREFIX)))
            strategies[scope_name] = str(before.get("routing", "priority"))
            continue
        if entry.before is None:  # created after the point
            row = rows.get(llm_id)
            if row is not None:
                removes.append(Step("remove", row.scope or "", row.name or "", llm_id))
            continue
        was = {name: before[name] for name in WRITABLE_FIELDS if name in before}
        try:
            step = row_step(rows.get(llm_id), {"id": llm_id, **was}, validators, key=("id",))
        except InvalidConfigError as error:
            where = f"audit entry {entry.id}, {describe_row(was.get('name'), llm_id)} as it was"
            error.args = (f"{where}: {error.args[0]}", *error.args[1:])
            raise
        if step is not None:
            (adds if step.action == "add" else changes).append(step)
    return ordered(removes, changes, adds, route_steps(store, strategies))


def rollback(
    store: Any,
    to: int | datetime,
    *,
    scope: str | None = None,
    dry_run: bool = False,
    actor: str | None = None,
) -> Plan:
    """Put the rows and the routing back as they were at ``to`` (see `rollback_plan`) in one
    transaction with one audit entry per row, unless ``dry_run``; return the plan."""
    steps = rollback_plan(store, to, scope=scope)
    if not dry_run:
        write(store, steps, actor=actor)
    return steps


def _after(entries: Sequence[AuditEntry], to: int | datetime) -> list[AuditEntry]:
    # The entries (newest first) after the point; refused when the log cannot say what was then.
    if isinstance(to, int):
        if not any(e.id == to for e in entries):
            msg = f"No audit entry has id {to}: `llmpool history` lists them"
            raise RollbackError(msg)
        return [e for e in entries if e.id > to]
    if not entries:
        raise RollbackError("The audit log is empty: there is no earlier state to go back to")
    to = to if to.tzinfo else to.replace(tzinfo=timezone.utc)  # naive: UTC, as audit_log reads it
    first = entries[-1]
    if to < first.at:
        raise RollbackError(
            f"{to:%Y-%m-%d %H:%M:%S} UTC is before the first audit entry (id {first.id}, "
            f"{first.at:%Y-%m-%d %H:%M:%S} UTC): the log cannot say what the table held then"
        )
    return [e for e in entries if e.at > to]


def _is_routing(entry: AuditEntry) -> bool:
    return entry.llm_id.startswith(AUDIT_PREFIX)


def _names(entry: AuditEntry) -> set[Any]:
    return {state.get("name") for state in (entry.before, entry.after) if state}


def _scopes(entry: AuditEntry) -> set[Any]:
    return {state.get("scope") for state in (entry.before, entry.after) if state}
