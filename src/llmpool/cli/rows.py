"""The row commands of ``llmpool``: list, show, add, edit, enable, disable, delete, set-default
and audit; each command's parser next to its handler.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import (
    AddCommand,
    Handler,
    bounded,
    edit_flags,
    row_fields,
    row_flags,
    scope_selector,
)
from llmpool.cli.output import (
    CommandFailed,
    UsageError,
    allow_unknown_flag,
    allow_unknown_providers,
    cell,
    emit,
    find_stored,
    one_line,
    open_pool,
    read_input,
    row_reason,
    table,
)
from llmpool.errors import LLMNotFoundError, LLMPoolError, shorten, visible

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.repository.stored import StoredRow

__all__ = ["COMMANDS", "register"]

_EDIT_EPILOG = (
    "--config and --auth-meta replace the whole object. --set PATH=VALUE and --unset PATH "
    "change one field or key and keep the others: edit NAME --set config.temperature=0.2 "
    "--unset config.max_tokens. On an invalid row (written by raw SQL), change the field at "
    "fault: edit ID --unset auth_meta.api_key --set auth_meta.api_key_env=OPENAI_API_KEY."
)

_LIST_EPILOG = (
    "A row that fails validation (written by raw SQL, or holding a literal secret) is listed "
    "too, marked INVALID with the reason (the field at fault, never its value). With --json "
    'it is an object with "invalid": true and "reason", and the fields that could be read '
    "(a value that may be a secret hidden); valid rows are printed as before."
)


def _add_epilog() -> str:
    from llmpool.models import LLMConfig
    from llmpool.repository.rules import READ_ONLY_FIELDS

    # From the model: a field added to LLMConfig is documented here at once.
    fields = ", ".join(f for f in LLMConfig.FIELDS if f not in READ_ONLY_FIELDS)
    return (
        "--from-json takes one object or a list of objects with the row's fields: "
        f"{fields}; name, provider and model_name are required, and an id is made "
        "when absent. A list is added in a single transaction (store.add_many): every item "
        "is validated first, and if any item is refused (a bad field, a secret, a name or id "
        "already taken) nothing is written; the error names the item by its number."
    )


def register(add: AddCommand) -> None:
    """Add the row commands' parsers."""
    p = add("list", "list LLMs, in fallback order (invalid ones too, marked)", _LIST_EPILOG)
    p.add_argument("--provider", type=bounded("provider"))
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true")
    state.add_argument("--disabled", action="store_true")
    p.add_argument("--search", type=bounded("search"), help="part of the name or model name")
    p.add_argument("--kind", choices=("chat", "embedding"), help="only rows of this kind")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", type=bounded("scope"), default="global")
    where.add_argument("--all-scopes", action="store_true")

    p = add("show", "show one LLM by id or name (an invalid row too, with what is wrong)")
    p.add_argument("ref", metavar="ID|NAME", type=bounded("name"))
    scope_selector(p)

    p = add("add", "add an LLM (flags, or --from-json FILE)", _add_epilog())
    row_flags(p)
    p.add_argument("--disabled", action="store_true", help="add it disabled (test first)")
    p.add_argument("--default", dest="is_default", action="store_true")
    p.add_argument(
        "--from-json",
        dest="from_json",
        metavar="FILE",
        help="a JSON object or list of objects ('-' for stdin); all validated before any write",
    )
    allow_unknown_flag(p)

    p = add("edit", "change fields of an LLM (an invalid row too)", _EDIT_EPILOG)
    p.add_argument("ref", metavar="ID|NAME", type=bounded("name"))
    scope_selector(p)
    row_flags(p, skip=("scope",))
    edit_flags(p)
    allow_unknown_flag(p)

    for name, help_text in (
        ("enable", "enable LLMs"),
        ("disable", "disable LLMs (an invalid row too)"),
        ("delete", "delete LLMs (an invalid row too)"),
    ):
        p = add(name, help_text)
        p.add_argument("refs", nargs="+", metavar="ID|NAME", type=bounded("name"))
        scope_selector(p)
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = add("set-default", "make an LLM its scope's default")
    p.add_argument("ref", metavar="ID|NAME", type=bounded("name"))
    scope_selector(p)

    p = add("audit", "the audit log, newest first")
    p.add_argument(
        "--llm",
        dest="llm_ref",
        metavar="ID|NAME",
        type=bounded("name"),
        help="one row's entries, by id or name (a deleted row's name too)",
    )
    scope_selector(p)
    p.add_argument("--since", help="ISO date/time, or relative: 30m, 12h, 7d")
    p.add_argument("--limit", type=int, default=100)


def _row(config: LLMConfig) -> dict[str, Any]:
    # warnings=False: a row disabled or deleted while invalid is returned as stored.
    data: dict[str, Any] = config.model_dump(mode="json", warnings=False)
    return data


_LIST_COLUMNS = (
    "id",
    "name",
    "provider",
    "model_name",
    "scope",
    "priority",
    "enabled",
    "is_default",
    "kind",
)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for f in row_fields() if getattr(args, f, None) is not None}


def cmd_list(args: argparse.Namespace) -> int:
    """``llmpool list``: every row as stored, an invalid one marked with what is wrong."""
    from llmpool.repository.stored import stored_rows

    with open_pool(args) as pool:
        stored = stored_rows(pool.store, scope=None if args.all_scopes else args.scope)
    data = [_listed(r) for r in sorted(stored, key=_fallback_order)]
    data = [d for d in data if _selected(d, args)]
    columns = _LIST_COLUMNS + (("invalid", "reason") if any(d.get("invalid") for d in data) else ())
    emit(args, data, lambda: table(data, columns))
    return 0


def _fallback_order(row: StoredRow) -> tuple[float, str, str]:
    # Priority, name, id (`llmpool.repository.sort_key`); a row without a readable priority last.
    priority = row.fields.get("priority")
    if not isinstance(priority, int) or isinstance(priority, bool):
        priority = math.inf
    return (priority, row.name or "", row.id)


def _listed(row: StoredRow) -> dict[str, Any]:
    """A row for ``list``: a valid one as always; an invalid one with what could be read."""
    if row.config is not None:
        return _row(row.config)
    # SQLite hands booleans back as 0 and 1.
    flags = {k: bool(v) for k, v in row.fields.items() if k in _FLAGS and v in (0, 1)}
    why = row_reason(str(row.error), row.name, row.id)
    return {**row.fields, **flags, "id": row.id, "invalid": True, "reason": why}


_FLAGS = ("enabled", "is_default")


def _selected(row: dict[str, Any], args: argparse.Namespace) -> bool:
    """Whether ``row`` passes ``list``'s filters (a field an invalid row lacks fails them)."""
    search = (args.search or "").casefold()
    texts = [str(row.get(k) or "").casefold() for k in ("name", "model_name")]
    return (
        (not args.enabled or row.get("enabled") is True)
        and (not args.disabled or row.get("enabled") is False)
        and (args.provider is None or row.get("provider") == args.provider)
        and (args.kind is None or row.get("kind", "chat") == args.kind)
        and (not search or any(search in text for text in texts))
    )


def cmd_show(args: argparse.Namespace) -> int:
    """``llmpool show ID|NAME``."""
    with open_pool(args) as pool:
        row = find_stored(pool, args.ref, scope=args.ref_scope)
    if row.config is not None:
        data = _row(row.config)
    else:
        data = {**row.fields, "problem": one_line(str(row.error))}
    emit(args, data, lambda: "\n".join(f"{k:>11}: {cell(v)}" for k, v in data.items()))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    """``llmpool add``: one row from flags, or every row of ``--from-json``, all or none."""
    batch = False
    if args.from_json:
        items, batch = _json_items(args.from_json)
    else:
        missing = [f for f in ("name", "provider", "model_name") if getattr(args, f) is None]
        if missing:
            flags = ", ".join("--" + ("model" if f == "model_name" else f) for f in missing)
            msg = f"add needs {flags} (or --from-json FILE)"
            raise UsageError(msg)
        item = _changes(args)
        item["enabled"] = not args.disabled
        item["is_default"] = args.is_default
        items = [item]
    with open_pool(args, writes=True) as pool:
        if args.allow_unknown_provider:
            allow_unknown_providers(pool.store)
        if not batch:
            added = [pool.store.add(items[0], actor=args.actor)]
        else:
            try:
                added = pool.store.add_many(items, actor=args.actor)
            except LLMPoolError as error:
                raise CommandFailed(f"{one_line(str(error))}; nothing was added") from error
    data = [_row(c) for c in added]
    emit(
        args,
        data if batch else data[0],
        lambda: "\n".join(f"added {c.describe()}" for c in added),
    )
    return 0


def _json_items(source: str) -> tuple[list[dict[str, Any]], bool]:
    """Return the objects in ``source`` and whether it held a list."""
    from llmpool.models import MAX_JSON_DEPTH, json_text_depth

    text = read_input(source)
    # A list of rows whose fields nest at most MAX_JSON_DEPTH levels: parsed only when no
    # deeper (json.loads recurses once per level).
    if json_text_depth(text) > MAX_JSON_DEPTH + 2:
        msg = f"{source} nests deeper than a list of rows can ({MAX_JSON_DEPTH + 2} levels)"
        raise UsageError(msg)
    try:
        loaded = json.loads(text)
    except (ValueError, RecursionError) as error:
        msg = f"{source} is not valid JSON: {shorten(str(error), 200)}"
        raise UsageError(msg) from None
    items = loaded if isinstance(loaded, list) else [loaded]
    if not items:
        msg = f"{source} holds an empty list: nothing to add"
        raise UsageError(msg)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"item {index} of {source}" if isinstance(loaded, list) else source
            msg = (
                f"{where} is a JSON {_json_type(item)}, not an object; expected e.g. "
                '{"name": "GPT-4", "provider": "openai", "model_name": "gpt-4"}'
            )
            raise UsageError(msg)
    return items, isinstance(loaded, list)


def _json_type(value: Any) -> str:
    names = {str: "string", bool: "boolean", int: "number", float: "number", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def cmd_edit(args: argparse.Namespace) -> int:
    """``llmpool edit ID|NAME ...``: flags replace fields; --set/--unset merge."""
    from llmpool.repository.rules import edited_values

    changes = _changes(args)
    if not changes and not args.sets and not args.unsets:
        msg = "edit needs at least one field to change (e.g. --priority 5 or --set KEY=VALUE)"
        raise UsageError(msg)
    with open_pool(args, writes=True) as pool:
        if args.allow_unknown_provider:
            allow_unknown_providers(pool.store)
        row = find_stored(pool, args.ref, scope=args.ref_scope)
        if args.sets or args.unsets:
            current = {**row.values, **changes}
            changes.update(edited_values(current, dict(args.sets), args.unsets))
        after = pool.store.update(row.id, changes, actor=args.actor)
    emit(args, _row(after), lambda: f"updated {after.describe()}")
    return 0


def _ids(pool: Any, args: argparse.Namespace) -> list[str]:
    return [find_stored(pool, ref, scope=args.ref_scope).id for ref in args.refs]


def _bulk(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with open_pool(args, writes=True) as pool:
            rows = getattr(pool.store, action)(_ids(pool, args), actor=args.actor)
        data = [_row(r) for r in rows]
        emit(args, data, lambda: "\n".join(f"{action}d {r.describe()}" for r in rows))
        return 0

    return run


def confirmed(args: argparse.Namespace, command: str, question: str) -> bool:
    """Return whether a command that deletes rows may go on: ``--yes``, or "y" at the prompt.

    Args:
        args: The command's arguments (with ``yes``).
        command: The command, for the refusal (``delete``, ``apply --prune``).
        question: What the prompt asks (its text escaped, at most 400 characters).

    Raises:
        UsageError: No ``--yes``, and standard input is not a terminal to ask on.
    """
    if args.yes:
        return True
    if not sys.stdin.isatty():
        msg = f"{command} asks for confirmation; pass --yes when not on a terminal"
        raise UsageError(msg)
    answer = input(f"{shorten(visible(question), 400)} [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def cmd_delete(args: argparse.Namespace) -> int:
    """``llmpool delete ID|NAME... [--yes]``."""
    if not confirmed(args, "delete", f"Delete {len(args.refs)} LLM(s) {', '.join(args.refs)}?"):
        print("nothing deleted")
        return 1
    with open_pool(args, writes=True) as pool:
        count = pool.store.delete(_ids(pool, args), actor=args.actor)
    emit(args, {"deleted": count}, lambda: f"deleted {count} LLM(s)")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    """``llmpool set-default ID|NAME``."""
    with open_pool(args, writes=True) as pool:
        llm_id = find_stored(pool, args.ref, scope=args.ref_scope).id
        after = pool.store.set_default(llm_id, actor=args.actor)
    emit(args, _row(after), lambda: f"{after.describe()} is now the default of {after.scope!r}")
    return 0


_RELATIVE = re.compile(r"^(\d{1,9})([smhdw])$")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    try:
        if match:
            unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
            delta = timedelta(**{unit[match.group(2)]: int(match.group(1))})
            return datetime.now(timezone.utc) - delta
        value = datetime.fromisoformat(text) if len(text) <= 64 else None
    except (ValueError, OverflowError):
        value = None
    if value is None:
        msg = f"--since {shorten(text)!r}: use an ISO date/time or 30m, 12h, 7d"
        raise UsageError(msg) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_audit(args: argparse.Namespace) -> int:
    """``llmpool audit``."""
    since = _since(args.since)
    with open_pool(args) as pool:
        if args.llm_ref is None:
            entries = pool.store.audit_log(since=since, limit=args.limit)
        else:
            entries = _audit_of(pool, args, since)
    data = [e.model_dump(mode="json") for e in entries]
    rows = [{**d, "name": (d["after"] or d["before"] or {}).get("name")} for d in data]
    emit(args, data, lambda: table(rows, ("at", "actor", "action", "name", "llm_id")))
    return 0


def _audit_of(pool: Any, args: argparse.Namespace, since: datetime | None) -> list[Any]:
    """The entries of the row ``--llm`` names: by id, by a current name, or by a former one."""
    try:
        llm_id = find_stored(pool, args.llm_ref, scope=args.ref_scope).id
    except LLMNotFoundError as error:
        if type(error) is not LLMNotFoundError:  # ambiguous: the candidates are listed
            raise
        # A deleted (or renamed) row: its name is in the audit log.
        ref, scope = args.llm_ref, args.ref_scope
        ids = {
            e.llm_id
            for e in pool.store.audit_log(limit=None)
            for state in (e.before, e.after)
            if state
            and (state.get("id") == ref or state.get("name") == ref)
            and (scope is None or state.get("scope") == scope)
        }
        if not ids:
            raise
        entries = [
            entry
            for llm_id in ids
            for entry in pool.store.audit_log(llm_id=llm_id, since=since, limit=None)
        ]
        entries.sort(key=lambda e: (e.at, e.id), reverse=True)
        return entries[: args.limit]
    result: list[Any] = pool.store.audit_log(llm_id=llm_id, since=since, limit=args.limit)
    return result


COMMANDS: dict[str, Handler] = {
    "list": cmd_list,
    "show": cmd_show,
    "add": cmd_add,
    "edit": cmd_edit,
    "enable": _bulk("enable"),
    "disable": _bulk("disable"),
    "delete": cmd_delete,
    "set-default": cmd_set_default,
    "audit": cmd_audit,
}
