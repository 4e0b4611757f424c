"""The ``llmpool`` commands on the audit log: ``history`` (what changed, by whom, when) and
``rollback`` (the rows and routing as they were at an entry or a time), on the store alone
(`llmpool.repository.history`)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, bounded, moment, yes_flag
from llmpool.cli.output import confirmed, emit, one_line, open_store

if TYPE_CHECKING:
    from llmpool.models import AuditEntry

_HISTORY_EPILOG = (
    "Each entry: its id (what rollback --to takes), when, who, the action and the row, then "
    "each field it changed as old -> new (a created or deleted row: its fields)."
)

_ROLLBACK_EPILOG = (
    "TIME: a duration before now (30m, 12h, 1d) or an ISO date or time (UTC); AUDIT_ID: an "
    "entry's id from `llmpool history` (the state right after it). Every row an entry after "
    "that point touched is put back: a row created since is removed, a row deleted since is "
    "added again with its id and fields (auth_meta holds variable names, never secrets, so "
    "nothing secret is stored or restored), a changed row gets its fields back; scopes get "
    "their routing back. Rows no later entry touched are left as they are. The plan is "
    "printed as apply --dry-run prints it and applied in one transaction, one audit entry per "
    "row; it asks first (pass --yes when not on a terminal)."
)


def register(add: AddCommand) -> None:
    """Add the parsers of the audit log's commands."""
    help_text = "what changed in the table, newest first: who, when, each field old -> new"
    p = add("history", cmd_history, help_text, _HISTORY_EPILOG, example="llmpool history GPT-4o")
    help_text = "only this row's entries, by id or by any name it has had"
    p.add_argument("ref", nargs="?", metavar="ID|NAME", type=bounded("name"), help=help_text)
    help_text = "only the entries of this scope's rows and routing"
    p.add_argument("--scope", type=bounded("scope"), help=help_text)
    p.add_argument("--limit", type=int, default=100, help="at most this many entries")

    help_text = "put the rows and routing back as they were at a time or an audit entry"
    example = "llmpool rollback --to 1h --dry-run"
    p = add("rollback", cmd_rollback, help_text, _ROLLBACK_EPILOG, writes=True, example=example)
    help_text = "the point to go back to: an audit entry's id, or a time"
    p.add_argument("--to", required=True, type=_point, metavar="TIME|AUDIT_ID", help=help_text)
    p.add_argument("--scope", type=bounded("scope"), help="only this scope's rows and routing")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    yes_flag(p, "roll back")


def _point(text: str) -> int | datetime:
    # An audit id is digits only; anything else is a time as --since reads it.
    return int(text) if text.isascii() and text.isdigit() else moment(text)


def changes_text(entry: AuditEntry, separator: str = "; ") -> str:
    """Return what ``entry`` changed as safe ``field: old -> new`` parts joined by
    ``separator`` (a created or deleted row: its fields as ``field: value`` on one line)."""
    from llmpool.repository.declarative import shown
    from llmpool.repository.history import changed_fields

    changed = changed_fields(entry)
    if entry.before is None and entry.after is None:
        return "(not recorded: the row was invalid as stored)"
    if entry.before is None or entry.after is None:
        return "; ".join(
            one_line(f"{k}: {shown(b if a is None else a)}") for k, (b, a) in changed.items()
        )
    return separator.join(
        one_line(f"{k}: {shown(b)} -> {shown(a)}") for k, (b, a) in changed.items()
    )


def _subject(entry: AuditEntry) -> str:
    from llmpool.errors import describe_row
    from llmpool.repository.quotas import AUDIT_PREFIX as QUOTA_PREFIX
    from llmpool.repository.scopes import AUDIT_PREFIX

    state = entry.after or entry.before or {}
    if entry.llm_id.startswith(QUOTA_PREFIX):
        return one_line(f"quota on {state.get('kind')} {state.get('target')!r}")
    if entry.llm_id.startswith(AUDIT_PREFIX):
        return one_line(f"scope {state.get('scope', entry.llm_id[len(AUDIT_PREFIX) :])!r}")
    return one_line(describe_row(state.get("name"), entry.llm_id))


def cmd_history(args: argparse.Namespace) -> int:
    """``llmpool history [ID|NAME] [--scope S] [--limit N]``: newest first."""
    from llmpool.repository.history import changed_fields, history

    with open_store(args) as store:
        entries = history(store, ref=args.ref, scope=args.scope, limit=args.limit)
    data = [
        {
            **e.model_dump(mode="json", exclude={"before", "after"}),
            "changes": {k: {"before": b, "after": a} for k, (b, a) in changed_fields(e).items()},
        }
        for e in entries
    ]

    def render() -> str:
        if not entries:
            return "no changes recorded"
        lines: list[str] = []
        for e in entries:
            at = f"{e.at:%Y-%m-%d %H:%M:%S} UTC"
            lines.append(f"#{e.id}  {at}  {one_line(e.actor)}  {e.action}  {_subject(e)}")
            lines += [f"    {line}" for line in changes_text(e, "\n").splitlines()]
        return "\n".join(lines)

    emit(args, data, render)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """``llmpool rollback --to TIME|AUDIT_ID [--scope S] [--dry-run] [--yes]``."""
    from llmpool.repository.declarative import write
    from llmpool.repository.history import rollback_plan

    with open_store(args, writes=not args.dry_run, checks=True) as store:
        planned = rollback_plan(store, args.to, scope=args.scope)
        applied = not args.dry_run and not planned.empty
        text = [planned.render()]
        if applied and not args.yes:
            if sys.stdin.isatty() and not args.json:
                print(text.pop())  # the plan the question is about, printed once
            question = f"Roll back: apply these {len(planned.steps)} change(s)?"
            if not confirmed(args, "rollback", question):
                print("nothing applied")
                return 1
        if applied:
            write(store, planned, actor=args.actor)
    if args.dry_run:
        text.append("dry run: nothing was changed")
    elif applied:
        text.append(f"applied {len(planned.steps)} change(s)")
    data: dict[str, Any] = {**planned.as_dict(), "dry_run": args.dry_run, "applied": applied}
    emit(args, data, lambda: "\n".join(text))
    return 0
