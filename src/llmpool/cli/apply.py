"""``llmpool export`` and ``llmpool apply``: the table as a JSON or YAML file.

See `llmpool.repository.declarative`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import (
    UsageError,
    allow_unknown_flag,
    allow_unknown_providers,
    open_pool,
    read_input,
)

__all__ = ["COMMANDS", "register"]

_APPLY_EPILOG = (
    "Rows are matched by (scope, name). The plan lists rows to add, rows to change (each "
    "field before -> after) and, with --prune, rows of the file's scopes (and of --scope) that "
    "it does not list, to remove. A field an entry leaves out is left as it is. The plan is "
    "applied in one transaction with one audit entry per row changed: when anything is "
    "refused, nothing is written. --prune asks before it removes rows, as delete does (pass "
    "--yes when not on a terminal). Export, then apply the export: no changes."
)


def register(add: AddCommand) -> None:
    """Add the ``export`` and ``apply`` parsers."""
    p = add("export", "write rows as a JSON or YAML document (references only, never secrets)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", type=bounded("scope"), default="global")
    where.add_argument("--all-scopes", action="store_true")
    p.add_argument(
        "--format", choices=("json", "yaml"), help="default: from -o's suffix, else json"
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = add("apply", "make the table match a JSON or YAML document", _APPLY_EPILOG)
    p.add_argument("file", metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--prune", action="store_true", help="remove rows the document does not list")
    p.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        default=[],
        type=bounded("scope"),
        help="with --prune: a scope to empty of unlisted rows even if the file has none of it",
    )
    p.add_argument(
        "--yes", action="store_true", help="with --prune: remove rows without asking (as delete)"
    )
    p.add_argument("--format", choices=("json", "yaml"), help="default: from the suffix, else JSON")
    allow_unknown_flag(p)


def _format(path: str | None, given: str | None) -> str | None:
    if given:
        return given
    if path and Path(path).suffix.lower() in (".yaml", ".yml"):
        return "yaml"
    if path and Path(path).suffix.lower() == ".json":
        return "json"
    return None


def cmd_export(args: argparse.Namespace) -> int:
    """``llmpool export [--scope S | --all-scopes] [--format F] [-o FILE]``."""
    from llmpool.repository.declarative import dumps, export_rows

    with open_pool(args) as pool:
        document = export_rows(pool.store, scope=None if args.all_scopes else args.scope)
    text = dumps(document, _format(args.output, args.format) or "json")
    if args.output:
        try:
            Path(args.output).write_text(text, "utf-8")
        except OSError as error:
            msg = f"cannot write {args.output}: {error.strerror}"
            raise UsageError(msg) from None
        print(f"exported {len(document['llms'])} LLM(s) to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """``llmpool apply FILE [--dry-run] [--prune]``."""
    from llmpool.repository.declarative import apply, loads

    document = loads(read_input(args.file), _format(args.file, args.format))
    with open_pool(args, writes=not args.dry_run) as pool:
        if args.allow_unknown_provider:
            allow_unknown_providers(pool.store)
        if args.prune and not args.dry_run and not _removals_confirmed(args, pool.store, document):
            print("nothing applied")
            return 1
        plan = apply(
            pool.store,
            document,
            prune=args.prune,
            scopes=args.scopes,
            dry_run=args.dry_run,
            actor=args.actor,
        )
    applied = not args.dry_run and not plan.empty
    if args.json:
        print(json.dumps({**plan.as_dict(), "dry_run": args.dry_run, "applied": applied}, indent=2))
        return 0
    print(plan.render())
    if args.dry_run:
        print("dry run: nothing was changed")
    elif applied:
        print(f"applied {len(plan.steps)} change(s)")
    return 0


def _removals_confirmed(args: argparse.Namespace, store: Any, document: Any) -> bool:
    # --prune deletes rows: confirmed as `llmpool delete` is, when the plan removes any.
    from llmpool.cli.rows import confirmed
    from llmpool.repository.declarative import plan

    planned = plan(store, document, prune=True, scopes=args.scopes)
    removed = [step.describe() for step in planned.steps if step.action == "remove"]
    if not removed:
        return True
    question = f"Remove {len(removed)} LLM(s): {'; '.join(removed)}?"
    return confirmed(args, "apply --prune", question)


COMMANDS: dict[str, Handler] = {"export": cmd_export, "apply": cmd_apply}
