"""The row commands of ``llmpool``, on the store alone: list, show, add, edit, enable, disable,
delete, set-default and audit."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import (
    AddCommand,
    allow_unknown_flag,
    bounded,
    json_arg,
    moment,
    scope_or_all,
    yes_flag,
)
from llmpool.cli.output import (
    CommandFailed,
    UsageError,
    cell,
    confirmed,
    emit,
    one_line,
    open_store,
    read_input,
    row_reason,
    table,
)
from llmpool.errors import LLMNotFoundError, LLMPoolError, shorten
from llmpool.repository.stored import StoredRow, find_row, stored_rows

if TYPE_CHECKING:
    from llmpool.models import AuditEntry, LLMConfig
    from llmpool.repository.sql.store import SQLStore

_AUTH_META_HELP = 'replaces the whole object, e.g. \'{"api_key_env": "OPENAI_API_KEY"}\''
_CONFIG_HELP = (
    "replaces the whole object, e.g. '{\"temperature\": 0.2}'; to change one key and keep the "
    "others, use --set config.KEY=VALUE"
)

#: The row fields that ``add`` and ``edit`` take as flags: flag, field, argparse keywords.
#: A new field needs one line here (its values are checked by the store).
ROW_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--name", "name", {"help": "a name, unique within the scope"}),
    ("--provider", "provider", {"help": "openai, anthropic, ... (llmpool providers lists them)"}),
    ("--model", "model_name", {"help": "the provider's model id, e.g. gpt-4o"}),
    ("--priority", "priority", {"type": int, "help": "lower is tried first (default: 100)"}),
    ("--scope", "scope", {"help": "the scope of the row (default: global)"}),
    ("--kind", "kind", {"choices": ("chat", "embedding"), "help": "chat (default) or embedding"}),
    ("--space", "space", {"help": "an embedding row's vector space label ('' clears it)"}),
    ("--weight", "weight", {"type": int, "help": "share among equal priority (routing weighted)"}),
    ("--rpm", "rpm", {"type": int, "help": "requests per minute at most (--set rpm=null clears)"}),
    ("--tpm", "tpm", {"type": int, "help": "tokens per minute at most (--set tpm=null clears)"}),
    ("--auth-meta", "auth_meta", {"type": json_arg, "help": _AUTH_META_HELP}),
    ("--config", "config", {"type": json_arg, "help": _CONFIG_HELP}),
)

_LIST_EPILOG = (
    "A row that fails validation (written by raw SQL, or holding a literal secret) is listed "
    "too, marked INVALID with the reason (the field at fault, never its value). With --json "
    'it is an object with "invalid": true and "reason", and the fields that could be read '
    "(a value that may be a secret hidden); valid rows are printed as before."
)

_EDIT_EPILOG = (
    "--config and --auth-meta replace the whole object. --set PATH=VALUE and --unset PATH "
    "change one field or key and keep the others: edit NAME --set config.temperature=0.2 "
    "--unset config.max_tokens. On an invalid row (written by raw SQL), change the field at "
    "fault: edit ID --unset auth_meta.api_key --set auth_meta.api_key_env=OPENAI_API_KEY."
)

_LIST_COLUMNS = (
    *("id", "name", "provider", "model_name", "scope", "priority"),
    *("enabled", "is_default", "kind"),
)
_FLAGS = ("enabled", "is_default")  # SQLite hands them back as 0 and 1


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


def _assignment(text: str) -> tuple[str, Any]:
    # --set PATH=VALUE: VALUE as JSON when it is JSON, else as text.
    path, sep, value = text.partition("=")
    if not sep or not path.strip():
        msg = f"{shorten(text)!r} is not PATH=VALUE (e.g. config.temperature=0.2)"
        raise argparse.ArgumentTypeError(msg)
    try:
        return path.strip(), json_arg(value)
    except argparse.ArgumentTypeError:
        return path.strip(), value


def _selector(parser: argparse.ArgumentParser, name: str = "ref", **options: Any) -> None:
    # The row(s) a command acts on, by id or name, and the scope a name is looked up in.
    many = options.get("nargs") == "+"
    options.setdefault("help", "the rows, by id or name" if many else "the row, by id or name")
    parser.add_argument(name, metavar="ID|NAME", type=bounded("name"), **options)
    parser.add_argument(
        "--scope",
        dest="ref_scope",
        type=bounded("scope"),
        help="look NAME up in this scope (when rows of several scopes share it)",
    )


def register(add: AddCommand) -> None:
    """Add the row commands' parsers."""
    help_text = "list LLMs, in fallback order (invalid ones too, marked)"
    example = "llmpool list --enabled --search gpt"
    p = add("list", cmd_list, help_text, _LIST_EPILOG, example=example)
    p.add_argument("--provider", type=bounded("provider"), help="only rows of this provider")
    state = p.add_mutually_exclusive_group()
    state.add_argument("--enabled", action="store_true", help="only enabled rows")
    state.add_argument("--disabled", action="store_true", help="only disabled rows")
    p.add_argument("--search", type=bounded("search"), help="part of the name or model name")
    p.add_argument("--kind", choices=("chat", "embedding"), help="only rows of this kind")
    scope_or_all(p, "the rows of this scope (default: global)")

    help_text = "show one LLM by id or name (an invalid row too, with what is wrong)"
    _selector(add("show", cmd_show, help_text, example="llmpool show 'OpenAI GPT-4'"))

    example = (
        "llmpool add --name GPT-4o --provider openai --model gpt-4o --disabled "
        '--auth-meta \'{"api_key_env": "OPENAI_API_KEY"}\'\n'
        "llmpool add --from-json rows.json"
    )
    help_text = "add an LLM (flags, or --from-json FILE)"
    p = add("add", cmd_add, help_text, _add_epilog(), writes=True, example=example)
    for flag, field, options in ROW_FLAGS:
        p.add_argument(flag, dest=field, **options)
    p.add_argument("--disabled", action="store_true", help="add it disabled (test first)")
    help_text = "make it its scope's default (the one get_llm() returns)"
    p.add_argument("--default", dest="is_default", action="store_true", help=help_text)
    help_text = "a JSON object or list of objects ('-' for stdin); all validated before any write"
    p.add_argument("--from-json", metavar="FILE", help=help_text)
    allow_unknown_flag(p)

    help_text = "change fields of an LLM (an invalid row too)"
    example = "llmpool edit 'OpenAI GPT-4' --priority 5 --set config.temperature=0.2"
    p = add("edit", cmd_edit, help_text, _EDIT_EPILOG, writes=True, example=example)
    _selector(p)
    for flag, field, options in ROW_FLAGS:
        if field != "scope":  # --scope selects the row
            p.add_argument(flag, dest=field, **options)
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        type=_assignment,
        help="set one field or key, keeping the others: priority=5, config.temperature=0.2, "
        "auth_meta.api_key_env=OPENAI_API_KEY (VALUE is JSON, else text); repeatable",
    )
    help_text = "remove one key (config.max_tokens), or reset a field to its default; repeatable"
    p.add_argument(
        "--unset", dest="unsets", action="append", default=[], metavar="PATH", help=help_text
    )
    allow_unknown_flag(p)

    example = "llmpool enable 'Claude 3 Opus'"
    p = add("enable", _bulk("enable"), "enable LLMs", writes=True, example=example)
    _selector(p, "refs", nargs="+")
    example = "llmpool disable 'OpenAI GPT-3.5' 'OpenAI GPT-4'"
    help_text = "disable LLMs (an invalid row too)"
    p = add("disable", _bulk("disable"), help_text, writes=True, example=example)
    _selector(p, "refs", nargs="+")
    example = "llmpool delete 'OpenAI GPT-3.5' --yes"
    help_text = "delete LLMs (an invalid row too); asks first"
    p = add("delete", cmd_delete, help_text, writes=True, example=example)
    _selector(p, "refs", nargs="+")
    yes_flag(p, "delete")
    example = "llmpool set-default 'Ollama Llama2' --scope global"
    help_text = "make an LLM its scope's default"
    _selector(add("set-default", cmd_set_default, help_text, writes=True, example=example))

    example = "llmpool audit --llm 'OpenAI GPT-4' --since 7d"
    p = add("audit", cmd_audit, "the audit log, newest first", example=example)
    help_text = "one row's entries, by id or name (a deleted row's name too)"
    _selector(p, "--llm", dest="llm_ref", help=help_text)
    p.add_argument("--since", type=moment, help="ISO date/time, or relative: 30m, 12h, 7d")
    p.add_argument(
        "--limit", type=int, default=100, help="at most this many entries (default: 100)"
    )


def _row(config: LLMConfig) -> dict[str, Any]:
    # warnings=False: a row disabled or deleted while invalid is returned as stored.
    data: dict[str, Any] = config.model_dump(mode="json", warnings=False)
    return data


def cmd_list(args: argparse.Namespace) -> int:
    """``llmpool list``: every row as stored, an invalid one marked with what is wrong."""
    with open_store(args) as store:
        stored = stored_rows(store, scope=None if args.all_scopes else args.scope)
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
    # A valid row as always; an invalid one with what could be read, marked, and why.
    if row.config is not None:
        return _row(row.config)
    flags = {k: bool(v) for k, v in row.fields.items() if k in _FLAGS and v in (0, 1)}
    why = row_reason(str(row.error), row.name, row.id)
    return {**row.fields, **flags, "id": row.id, "invalid": True, "reason": why}


def _selected(row: dict[str, Any], args: argparse.Namespace) -> bool:
    # list's filters; a field an invalid row lacks fails them.
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
    """``llmpool show ID|NAME``: one row, or what could be read of an invalid one and why."""
    with open_store(args) as store:
        row = find_row(store, args.ref, scope=args.ref_scope)
    if row.config is not None:
        data = _row(row.config)
    else:
        data = {**row.fields, "problem": one_line(str(row.error))}
    emit(args, data, lambda: "\n".join(f"{k:>11}: {cell(v)}" for k, v in data.items()))
    return 0


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    return {f: getattr(args, f) for _, f, _ in ROW_FLAGS if getattr(args, f, None) is not None}


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
        items = [{**_changes(args), "enabled": not args.disabled, "is_default": args.is_default}]
    with open_store(args, writes=True) as store:
        if not batch:
            added = [store.add(items[0], actor=args.actor)]
        else:
            try:
                added = store.add_many(items, actor=args.actor)
            except LLMPoolError as error:
                raise CommandFailed(f"{one_line(str(error))}; nothing was added") from error
    data = [_row(c) for c in added]
    text = "\n".join(f"added {c.describe()}" for c in added)
    emit(args, data if batch else data[0], lambda: text)
    return 0


def _json_items(source: str) -> tuple[list[dict[str, Any]], bool]:
    # The objects in --from-json's file, and whether it held a list.
    from llmpool.models import MAX_JSON_DEPTH, json_text_depth

    text = read_input(source)
    # A list of rows nesting at most MAX_JSON_DEPTH levels, refused deeper before json.loads
    # (which recurses once per level) parses it.
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
    names = {str: "string", bool: "boolean", int: "number", float: "number", list: "array"}
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            where = f"item {index} of {source}" if isinstance(loaded, list) else source
            kind = "null" if item is None else names.get(type(item), type(item).__name__)
            msg = (
                f"{where} is a JSON {kind}, not an object; expected e.g. "
                '{"name": "GPT-4", "provider": "openai", "model_name": "gpt-4"}'
            )
            raise UsageError(msg)
    return items, isinstance(loaded, list)


def cmd_edit(args: argparse.Namespace) -> int:
    """``llmpool edit ID|NAME ...``: flags replace fields; --set/--unset merge."""
    from llmpool.repository.rules import edited_values

    changes = _changes(args)
    if not changes and not args.sets and not args.unsets:
        msg = "edit needs at least one field to change (e.g. --priority 5 or --set KEY=VALUE)"
        raise UsageError(msg)
    with open_store(args, writes=True) as store:
        row = find_row(store, args.ref, scope=args.ref_scope)
        if args.sets or args.unsets:
            changes.update(edited_values({**row.values, **changes}, dict(args.sets), args.unsets))
        after = store.update(row.id, changes, actor=args.actor)
    emit(args, _row(after), lambda: f"updated {after.describe()}")
    return 0


def _bulk(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        with open_store(args, writes=True) as store:
            ids = [find_row(store, ref, scope=args.ref_scope).id for ref in args.refs]
            rows = getattr(store, action)(ids, actor=args.actor)
        data = [_row(r) for r in rows]
        emit(args, data, lambda: "\n".join(f"{action}d {r.describe()}" for r in rows))
        return 0

    return run


def cmd_delete(args: argparse.Namespace) -> int:
    """``llmpool delete ID|NAME... [--yes]``."""
    if not confirmed(args, "delete", f"Delete {len(args.refs)} LLM(s) {', '.join(args.refs)}?"):
        print("nothing deleted")
        return 1
    with open_store(args, writes=True) as store:
        ids = [find_row(store, ref, scope=args.ref_scope).id for ref in args.refs]
        count = store.delete(ids, actor=args.actor)
    emit(args, {"deleted": count}, lambda: f"deleted {count} LLM(s)")
    return 0


def cmd_set_default(args: argparse.Namespace) -> int:
    """``llmpool set-default ID|NAME``."""
    with open_store(args, writes=True) as store:
        llm_id = find_row(store, args.ref, scope=args.ref_scope).id
        after = store.set_default(llm_id, actor=args.actor)
    emit(args, _row(after), lambda: f"{after.describe()} is now the default of {after.scope!r}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """``llmpool audit [--llm ID|NAME] [--since T] [--limit N]``: newest first."""
    with open_store(args) as store:
        if args.llm_ref is None:
            entries = store.audit_log(since=args.since, limit=args.limit)
        else:
            entries = _audit_of(store, args)
    from llmpool.cli.history import changes_text

    data = [e.model_dump(mode="json") for e in entries]
    rows = [
        {**d, "name": (d["after"] or d["before"] or {}).get("name"), "changes": changes_text(e)}
        for d, e in zip(data, entries, strict=True)
    ]
    columns = ("id", "at", "actor", "action", "name", "llm_id", "changes")
    emit(args, data, lambda: table(rows, columns))
    return 0


def _audit_of(store: SQLStore, args: argparse.Namespace) -> list[AuditEntry]:
    # The entries of the row --llm names: by id, by a current name, or by a former one.
    try:
        llm_id = find_row(store, args.llm_ref, scope=args.ref_scope).id
    except LLMNotFoundError as error:
        if type(error) is not LLMNotFoundError:  # ambiguous: the candidates are listed
            raise
        # A deleted (or renamed) row: its name is in the audit log.
        ref, scope = args.llm_ref, args.ref_scope
        ids = {
            e.llm_id
            for e in store.audit_log(limit=None)
            for state in (e.before, e.after)
            if state
            and ref in (state.get("id"), state.get("name"))
            and (scope is None or state.get("scope") == scope)
        }
        if not ids:
            raise
        entries = [e for i in ids for e in store.audit_log(llm_id=i, since=args.since, limit=None)]
        entries.sort(key=lambda e: (e.at, e.id), reverse=True)
        return entries[: args.limit]
    return store.audit_log(llm_id=llm_id, since=args.since, limit=args.limit)
