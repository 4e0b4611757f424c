"""The row commands of ``llmpool``: list, show, add, edit, enable, disable, delete, set-default
and audit; each command's parser next to its handler.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, Handler, bounded, row_flags
from llmpool.cli.output import (
    CommandFailed,
    UsageError,
    cell,
    emit,
    find_llm,
    one_line,
    open_pool,
    table,
)
from llmpool.errors import LLMPoolError, shorten, visible

if TYPE_CHECKING:
    from llmpool.models import LLMConfig

__all__ = ["COMMANDS", "register"]

_ADD_EPILOG = (
    "--from-json takes one object or a list of objects with the row's fields (name, "
    "provider, model_name, scope, priority, enabled, is_default, auth_meta, config). A list "
    "is added in a single transaction (store.add_many): every item is validated first, and "
    "if any item is refused (a bad field, a secret, a name or id already taken) nothing is "
    "written; the error names the item by its number."
)


def register(add: AddCommand) -> None:
    """Add the row commands' parsers."""
    p = add("list", "list LLMs, in fallback order")
    p.add_argument("--provider", type=bounded("provider"))
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true")
    state.add_argument("--disabled", action="store_true")
    p.add_argument("--search", type=bounded("search"), help="part of the name or model name")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", type=bounded("scope"), default="global")
    where.add_argument("--all-scopes", action="store_true")

    p = add("show", "show one LLM by id or name")
    p.add_argument("ref", metavar="ID|NAME", type=bounded("name"))

    p = add("add", "add an LLM (flags, or --from-json FILE)", _ADD_EPILOG)
    row_flags(p)
    p.add_argument("--disabled", action="store_true", help="add it disabled (test first)")
    p.add_argument("--default", dest="is_default", action="store_true")
    p.add_argument(
        "--from-json",
        dest="from_json",
        metavar="FILE",
        help="a JSON object or list of objects ('-' for stdin); all validated before any write",
    )

    p = add("edit", "change fields of an LLM")
    p.add_argument("id", type=bounded("id"))
    row_flags(p)

    for name, help_text in (
        ("enable", "enable LLMs"),
        ("disable", "disable LLMs"),
        ("delete", "delete LLMs"),
    ):
        p = add(name, help_text)
        p.add_argument("ids", nargs="+", metavar="ID", type=bounded("id"))
        if name == "delete":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = add("set-default", "make an LLM its scope's default")
    p.add_argument("id", type=bounded("id"))

    p = add("audit", "the audit log, newest first")
    p.add_argument("--llm", dest="llm_id", type=bounded("id"))
    p.add_argument("--since", help="ISO date/time, or relative: 30m, 12h, 7d")
    p.add_argument("--limit", type=int, default=100)


def _row(config: LLMConfig) -> dict[str, Any]:
    data: dict[str, Any] = config.model_dump(mode="json")
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
)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("name", "provider", "model_name", "priority", "scope", "auth_meta", "config")
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def cmd_list(args: argparse.Namespace) -> int:
    """``llmpool list``."""
    with open_pool(args) as pool:
        rows = pool.store.list_llms(
            enabled_only=args.enabled,
            scope=None if args.all_scopes else args.scope,
            provider=args.provider,
            search=args.search,
        )
    if args.disabled:
        rows = [r for r in rows if not r.enabled]
    data = [_row(r) for r in rows]
    emit(args, data, lambda: table(data, _LIST_COLUMNS))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``llmpool show ID|NAME``."""
    with open_pool(args) as pool:
        config = find_llm(pool, args.ref)
    data = _row(config)
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
    with open_pool(args) as pool:
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

    text = sys.stdin.read() if source == "-" else _read(source)
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


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise UsageError(msg) from None
    except UnicodeDecodeError:
        msg = f"cannot read {path}: not UTF-8 text"
        raise UsageError(msg) from None


def cmd_edit(args: argparse.Namespace) -> int:
    """``llmpool edit ID ...``."""
    changes = _changes(args)
    if not changes:
        msg = "edit needs at least one field to change (e.g. --priority 5)"
        raise UsageError(msg)
    with open_pool(args) as pool:
        after = pool.store.update(args.id, changes, actor=args.actor)
    emit(args, _row(after), lambda: f"updated {after.describe()}")
    return 0


def _bulk(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with open_pool(args) as pool:
            rows = getattr(pool.store, action)(args.ids, actor=args.actor)
        data = [_row(r) for r in rows]
        emit(args, data, lambda: "\n".join(f"{action}d {r.describe()}" for r in rows))
        return 0

    return run


def cmd_delete(args: argparse.Namespace) -> int:
    """``llmpool delete ID... [--yes]``."""
    if not args.yes:
        if not sys.stdin.isatty():
            msg = "delete asks for confirmation; pass --yes when not on a terminal"
            raise UsageError(msg)
        shown = shorten(visible(", ".join(args.ids)), 400)
        answer = input(f"Delete {len(args.ids)} LLM(s) {shown}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    with open_pool(args) as pool:
        count = pool.store.delete(args.ids, actor=args.actor)
    emit(args, {"deleted": count}, lambda: f"deleted {count} LLM(s)")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    """``llmpool set-default ID``."""
    with open_pool(args) as pool:
        after = pool.store.set_default(args.id, actor=args.actor)
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
        entries = pool.store.audit_log(llm_id=args.llm_id, since=since, limit=args.limit)
    data = [e.model_dump(mode="json") for e in entries]
    rows = [{**d, "name": (d["after"] or d["before"] or {}).get("name")} for d in data]
    emit(args, data, lambda: table(rows, ("at", "actor", "action", "name", "llm_id")))
    return 0


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
