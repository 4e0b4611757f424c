"""The ``llmpool`` admin subcommands: thin layers over the public API, printing tables or JSON.

The output helpers here (`table`, `emit`, `one_line`, ...) are shared with `llmpool.cli.runtime`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.errors import LLMNotFoundError, LLMPoolError, shorten, visible

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.pool.facade import LLMPool

__all__ = ["COMMANDS", "CommandFailed", "UsageError", "mask_passwords", "one_line"]


class UsageError(Exception):
    """A command line that cannot be run as written (exit code 2)."""


class CommandFailed(Exception):
    """The operation was refused or failed, with a message for the user (exit code 1)."""


# -- output ----------------------------------------------------------------------------------

# scheme://user:password@host...: up to a space, quote, bracket, comma or semicolon, without
# trailing punctuation (so "(postgresql://u:pw@db/app)." keeps its brackets and full stop).
#
# Linear in the text. The lookbehind lets a match start only where a run of scheme characters
# starts (elsewhere it fails at once), and a scheme needs a letter: digits, "+", "." and "-"
# may lead, as the leftmost-letter start of a scheme would skip them. Each attempt then reads
# its own run, the user and password that follow "://" (neither holds "/", so they end before
# the next "://"), and the host and path: those are consumed when the attempt matches, and hold
# only ":" and "." when it fails. So no character is read by more than a bounded number of
# attempts. (A pattern free to start at every letter is quadratic on a long run of letters: a
# 100 KB name takes seconds.)
_URL_WITH_PASSWORD = re.compile(
    r"(?<![A-Za-z0-9+.\-])[0-9+.\-]*[A-Za-z][A-Za-z0-9+.\-]*://"
    r"[^\s:/@'\"<>(),;]*:(?P<password>[^\s@/'\"<>(),;]+)@"
    r"[^\s'\"<>(),;]*[^\s'\"<>(),;:.]"
)

#: The longest line the command prints for an error or a warning.
MAX_MESSAGE = 4000


def _mask(match: re.Match[str]) -> str:
    url, start = match.group(0), match.start()
    return url[: match.start("password") - start] + "***" + url[match.end("password") - start :]


def mask_passwords(text: str) -> str:
    """Return ``text`` with the password of every ``scheme://user:password@host`` replaced.

    Linear in the length of the text, whatever it holds.

    Example:
        >>> mask_passwords("(postgresql://app:pw@db/app). sqlite:///x.db")
        '(postgresql://app:***@db/app). sqlite:///x.db'
    """
    return _URL_WITH_PASSWORD.sub(_mask, text)


def one_line(message: str) -> str:
    """Return ``message`` as one line that is safe to print.

    The password of any URL in it is masked, every resolved secret value redacted
    (`llmpool.credentials.redaction`), and control characters (a terminal escape
    sequence in a row's name) written as visible escapes (`llmpool.errors.visible`).

    Example:
        >>> one_line("Could not connect:\\n  (postgresql://app:pw@db/app) refused")
        'Could not connect: (postgresql://app:***@db/app) refused'
        >>> one_line("\\x1b[31mred")
        '\\\\x1b[31mred'
    """
    parts = [line.strip() for line in message.strip().splitlines() if line.strip()]
    pieces = parts[:1]
    for before, part in itertools.pairwise(parts):
        pieces += [" " if before.endswith(":") else "; ", part]
    from llmpool.credentials.redaction import redact

    return visible(redact(mask_passwords("".join(pieces))))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Render rows as a plain-text table with upper-case column headers."""
    if not rows:
        return "(none)"
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def cell(value: Any) -> str:
    """Render one value for a table: yes/no, ``-`` for none, JSON for objects, one line."""
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None or value == []:
        return "-"
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return one_line(", ".join(value))
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)
    return one_line(text)


def emit(args: argparse.Namespace, data: Any, render: Callable[[], str]) -> None:
    """Print ``data`` as JSON with ``--json``, else the table ``render`` returns."""
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(render())


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


# -- helpers ---------------------------------------------------------------------------------


def open_pool(args: argparse.Namespace, **kwargs: Any) -> LLMPool:
    """Return a pool on the command's database, without background change detection."""
    from llmpool.pool.facade import LLMPool

    return LLMPool(args.database_url, poll_interval=0, listen=False, **kwargs)


def find_llm(pool: LLMPool, ref: str) -> LLMConfig:
    """Return the row whose id, or else whose (unique) name, is ``ref``.

    Raises:
        ArgumentTooLongError: ``ref`` is longer than any name (or id) could be.
        LLMNotFoundError: No row has that id or name.
        UsageError: Several rows, in different scopes, have that name.
    """
    from llmpool.models import MAX_LENGTHS, check_argument

    check_argument("name", ref, MAX_LENGTHS["name"])
    store = pool.store
    if len(ref) <= MAX_LENGTHS["id"]:
        try:
            return store.get(ref)
        except LLMNotFoundError:
            pass
    matches = [c for c in store.list_llms(scope=None) if c.name == ref]
    if len(matches) == 1:
        return matches[0]
    if matches:
        scopes = ", ".join(sorted(c.scope for c in matches))
        msg = f"{len(matches)} LLMs are named {ref!r} (scopes: {scopes}); use the id"
        raise UsageError(msg)
    msg = f"No LLM with id or name {shorten(ref)!r}"
    raise LLMNotFoundError(msg)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    fields = ("name", "provider", "model_name", "priority", "scope", "auth_meta", "config")
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


# -- commands --------------------------------------------------------------------------------


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


def cmd_migrate(args: argparse.Namespace) -> int:
    """``llmpool migrate [--seed]``."""
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows

    applied = migrate(args.database_url)
    seeded: list[str] = []
    if args.seed:
        with open_pool(args, auto_migrate=False) as pool:
            seeded = [c.name for c in seed_starter_rows(pool.store, actor=args.actor)]
    data = {"applied": applied, "seeded": seeded}
    emit(
        args,
        data,
        lambda: (
            "\n".join([f"applied {name}" for name in applied] or ["database is up to date"])
            + "".join(f"\nseeded {name}" for name in seeded)
        ),
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": cmd_list,
    "show": cmd_show,
    "add": cmd_add,
    "edit": cmd_edit,
    "enable": _bulk("enable"),
    "disable": _bulk("disable"),
    "delete": cmd_delete,
    "set-default": cmd_set_default,
    "audit": cmd_audit,
    "migrate": cmd_migrate,
}
