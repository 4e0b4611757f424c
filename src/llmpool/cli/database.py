"""The ``llmpool`` commands on the database as a whole, on the store alone: ``migrate``,
``export`` and ``apply`` (the table as a JSON or YAML file, `llmpool.repository.declarative`),
``doctor`` (`llmpool.pool.doctor`), ``routing`` (each scope's strategy) and ``usage`` (the
``llm_usage`` table, `llmpool.usage.report`)."""

from __future__ import annotations

import argparse
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, allow_unknown_flag, bounded, moment
from llmpool.cli.output import (
    UsageError,
    confirmed,
    emit,
    one_line,
    open_store,
    read_input,
    require_extra,
    table,
)
from llmpool.repository.scopes import STRATEGIES

if TYPE_CHECKING:
    from llmpool.usage.report import By

_APPLY_EPILOG = (
    "Rows are matched by (scope, name). The plan lists rows to add, rows to change (each "
    "field before -> after) and, with --prune, rows of the file's scopes (and of --scope) that "
    "it does not list, to remove. A field an entry leaves out is left as it is. The plan is "
    "applied in one transaction with one audit entry per row changed: when anything is "
    "refused, nothing is written. --prune asks before it removes rows, as delete does (pass "
    "--yes when not on a terminal). Export, then apply the export: no changes."
)

_DOCTOR_EPILOG = (
    "Reports invalid rows, literal secrets, unresolvable references (run it with the "
    "environment of the hosts that serve the models), unknown providers and config keys, "
    "names of one scope differing only by case or spaces, disabled defaults, scopes whose "
    "stored routing is no strategy, and scopes whose embedding rows mix vector spaces. Exit "
    "code 1 when anything is found."
)

_ROUTING_EPILOG = (
    "Strategies reorder only rows of equal priority; a failing row falls back to its siblings, "
    "then to the next priority. A strategy other than priority is refused for a scope without "
    "rows (add its rows first)."
)

_USAGE_COLUMNS = {
    "row": ["name", "scope", "provider", "model_name"],
    "scope": ["scope"],
    "day": ["day"],
    "hour": ["period"],
    "minute": ["period"],
}
_COUNTS = ["calls", "errors", "input_tokens", "output_tokens", "cost"]
_LATENCY = ["p50_ms", "p95_ms"]
#: The bars of one chart: at most a terminal's width of them.
_MAX_BARS = 120


def register(add: AddCommand) -> None:
    """Add the parsers of the commands on the whole database."""
    scope = bounded("scope")
    p = add("migrate", cmd_migrate, "apply llmpool's migrations")
    p.add_argument("--seed", action="store_true", help="also add the example rows")

    help_text = "write rows as a JSON or YAML document (references only, never secrets)"
    p = add("export", cmd_export, help_text)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scope", type=scope, default="global")
    where.add_argument("--all-scopes", action="store_true")
    help_text = "default: from -o's suffix, else json"
    p.add_argument("--format", choices=("json", "yaml"), help=help_text)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    p = add("apply", cmd_apply, "make the table match a JSON or YAML document", _APPLY_EPILOG)
    p.add_argument("file", metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--prune", action="store_true", help="remove rows the document does not list")
    help_text = "with --prune: a scope to empty of unlisted rows even if the file has none of it"
    p.add_argument(
        "--scope", dest="scopes", action="append", default=[], type=scope, help=help_text
    )
    help_text = "with --prune: remove rows without asking (as delete)"
    p.add_argument("--yes", action="store_true", help=help_text)
    p.add_argument("--format", choices=("json", "yaml"), help="default: from the suffix, else JSON")
    allow_unknown_flag(p)

    help_text = "find invalid rows and other problems, with the command fixing each"
    p = add("doctor", cmd_doctor, help_text, _DOCTOR_EPILOG)
    p.add_argument("--scope", type=scope, help="only this scope (default: all)")

    help_text = "show or set how a scope routes its calls (priority, weighted, latency, least_busy)"
    p = add("routing", cmd_routing, help_text, _ROUTING_EPILOG)
    p.add_argument("scope", type=scope, help="the scope, e.g. global")
    p.add_argument("strategy", nargs="?", choices=STRATEGIES, help="the strategy to set")

    help_text = "calls, tokens, cost and latency per row, scope or time (from the llm_usage table)"
    epilog = (
        "Times: a duration before now (30m, 12h, 1d, 2w) or an ISO date or time (UTC). --chart "
        "draws each row's calls, errors, cost and p95 latency per --by minute, hour (default) "
        "or day as bars over time (needs the tui extra; --json prints the values)."
    )
    p = add("usage", cmd_usage, help_text, epilog)
    p.add_argument("--since", type=moment, help="from when (default: 1d, the last day)")
    p.add_argument("--until", type=moment, help="until when (default: now)")
    help_text = "group by (default: row; with --chart: hour)"
    p.add_argument("--by", choices=["row", "scope", "day", "hour", "minute"], help=help_text)
    p.add_argument("--scope", type=scope, help="only this scope")
    help_text = "only this row (its id, or its name at the time of its calls)"
    p.add_argument("--llm", metavar="NAME|ID", type=bounded("name"), help=help_text)
    help_text = "draw charts over time instead of a table"
    p.add_argument("--chart", action="store_true", help=help_text)


def cmd_migrate(args: argparse.Namespace) -> int:
    """``llmpool migrate [--seed]``: apply llmpool's migrations, and seed the guide's rows."""
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    # Named in the output: without --database-url or a configured URL it is a local file.
    database = mask_url(resolve_database_url(args.database_url))
    applied = migrate(args.database_url)
    seeded: list[str] = []
    if args.seed:
        with open_store(args, writes=True) as store:
            seeded = [c.name for c in seed_starter_rows(store, actor=args.actor)]
    lines = [f"database: {database}"]
    lines += [f"applied {name}" for name in applied] or ["database is up to date"]
    lines += [f"seeded {name}" for name in seeded]
    data = {"database": database, "applied": applied, "seeded": seeded}
    emit(args, data, lambda: "\n".join(lines))
    return 0


def _format(path: str | None, given: str | None) -> str | None:
    suffix = Path(path).suffix.lower() if path else ""
    return given or {".yaml": "yaml", ".yml": "yaml", ".json": "json"}.get(suffix)


def cmd_export(args: argparse.Namespace) -> int:
    """``llmpool export [--scope S | --all-scopes] [--format F] [-o FILE]``."""
    from llmpool.repository.declarative import dumps, export_rows

    with open_store(args) as store:
        document = export_rows(store, scope=None if args.all_scopes else args.scope)
    text = dumps(document, _format(args.output, args.format) or "json")
    if not args.output:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text, "utf-8")
    except OSError as error:
        raise UsageError(f"cannot write {args.output}: {error.strerror}") from None
    print(f"exported {len(document['llms'])} LLM(s) to {args.output}", file=sys.stderr)
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    """``llmpool apply FILE [--dry-run] [--prune]``: --prune asks before it removes rows."""
    from llmpool.repository.declarative import apply, loads, plan

    document = loads(read_input(args.file), _format(args.file, args.format))
    with open_store(args, writes=not args.dry_run, checks=True) as store:
        if args.prune and not args.dry_run:
            planned = plan(store, document, prune=True, scopes=args.scopes)
            removed = [step.describe() for step in planned.steps if step.action == "remove"]
            question = f"Remove {len(removed)} LLM(s): {'; '.join(removed)}?"
            if removed and not confirmed(args, "apply --prune", question):
                print("nothing applied")
                return 1
        options = {"prune": args.prune, "scopes": args.scopes, "dry_run": args.dry_run}
        changes = apply(store, document, **options, actor=args.actor)
    applied = not args.dry_run and not changes.empty
    text = [changes.render()]
    if args.dry_run:
        text.append("dry run: nothing was changed")
    elif applied:
        text.append(f"applied {len(changes.steps)} change(s)")
    data = {**changes.as_dict(), "dry_run": args.dry_run, "applied": applied}
    emit(args, data, lambda: "\n".join(text))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """``llmpool doctor [--scope S]``: exit code 1 when anything is wrong."""
    from llmpool.pool.doctor import diagnose
    from llmpool.repository.sql.url import mask_url

    with open_store(args) as store:
        database = mask_url(store.engine)
        found = diagnose(store, scope=args.scope)
    findings = [
        {**f.as_dict(), "problem": one_line(f.problem), "fix": one_line(f.fix)} for f in found
    ]

    def render() -> str:
        if not findings:
            return f"no problems found (database: {database})"
        lines = [f"{len(findings)} problem(s) found (database: {database})", ""]
        lines.append(table(findings, ("kind", "name", "llm_id", "field")))
        for f in findings:
            lines += ["", f"{f['kind']}: {f['problem']}", f"  fix: {f['fix']}"]
        return "\n".join(lines)

    emit(args, {"database": database, "ok": not findings, "findings": findings}, render)
    return 1 if findings else 0


def cmd_routing(args: argparse.Namespace) -> int:
    """``llmpool routing SCOPE [STRATEGY]``: print the scope's strategy, or set it (audited)."""
    with open_store(args, writes=args.strategy is not None) as store:
        data: dict[str, Any] = {"scope": args.scope, "routing": store.get_routing(args.scope)}
        if args.strategy is not None:
            after = store.set_routing(args.scope, args.strategy, actor=args.actor)
            data = {**data, "routing": after, "before": data["routing"]}
    was = f" (was {data['before']})" if "before" in data else ""
    emit(args, data, lambda: f"scope {data['scope']!r} routes by {data['routing']}{was}")
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """``llmpool usage [--since 1d] [--until T] [--by B] [--scope S] [--llm NAME] [--chart]``."""
    from llmpool.usage.report import as_epoch, group, money_text
    from llmpool.usage.sql import SQLUsageTable
    from llmpool.usage.table import add_counts, latency_of

    by: By = args.by or ("hour" if args.chart else "row")
    if args.chart and by in ("row", "scope"):
        raise UsageError(f"--chart draws over time: --by minute, hour or day, not {by}")
    if args.chart and not args.json:
        require_extra("rich", "llmpool usage --chart")
    since = args.since if args.since is not None else moment("1d")
    if args.until is not None and args.until <= since:
        raise UsageError(
            f"--until ({args.until:%Y-%m-%d %H:%M:%S} UTC) is not after --since "
            f"({since:%Y-%m-%d %H:%M:%S} UTC): the window is empty"
        )
    now = time.time()
    start, end = as_epoch(since, now), as_epoch(args.until, now)
    per = "day" if by in ("row", "scope") else by
    with open_store(args) as store:
        usage = SQLUsageTable(store.engine)
        parts = usage.parts(start, end, args.scope, None, llm=args.llm, per=per)
    if args.chart:
        assert start is not None
        return _chart(args, parts, by, start, now if end is None else end)
    rows = group(parts, by)
    total: dict[str, Any] = {name: sum(getattr(row, name) for row in rows) for name in _COUNTS}
    total["cost"] = money_text(sum((row.cost for row in rows), Decimal(0)))
    whole: dict[str, list[Any]] = {}
    for part in parts:
        add_counts(whole, "all", part[6:])
    latency = latency_of(whole["all"]) if whole else None
    total.update(p50_ms=latency and latency.p50_ms, p95_ms=latency and latency.p95_ms)
    lines = [row.as_dict() for row in rows]
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "until": args.until.isoformat() if args.until is not None else None,
        "by": by,
        "rows": lines,
        "total": total,
    }

    def render() -> str:
        if not lines:
            return f"no calls recorded since {since:%Y-%m-%d %H:%M} UTC"
        columns = _USAGE_COLUMNS[by]
        return table([*lines, {columns[0]: "TOTAL", **total}], columns + _COUNTS + _LATENCY)

    emit(args, data, render)
    return 0


def _chart(args: argparse.Namespace, parts: list[Any], by: str, start: float, end: float) -> int:
    # The periods from the one holding `start` to the one holding the window's last second.
    from llmpool.cli.charts import CHARTS, usage_charts, values
    from llmpool.usage.report import PERIOD_MINUTES, money, money_text, period_text, series

    step = PERIOD_MINUTES[by]
    first, last = int(start // 60) // step * step, int((end - 1) // 60) // step * step
    count = (last - first) // step + 1
    if count > _MAX_BARS:
        raise UsageError(
            f"--by {by} from --since to --until is {count} bars; a chart holds {_MAX_BARS}: "
            "use a shorter window or a longer --by"
        )
    rows = series(parts, by)
    periods = list(range(first, last + 1, step))
    data: dict[str, Any] = {
        "by": by,
        "periods": [period_text(p, by) for p in periods],
        "rows": [
            {
                "llm_id": llm_id,
                "name": row.name,
                **{key: values(row, periods, read) for key, _, read, _ in CHARTS},
            }
            for llm_id, row in sorted(rows.items(), key=lambda item: (item[1].name, item[0]))
        ],
    }
    for line in data["rows"]:
        line["cost"] = [money_text(money(c)) for c in line["cost"]]

    def render() -> str:
        if not rows:
            return f"no calls recorded since {period_text(first, by)} UTC"
        from rich.console import Console

        console = Console(width=_MAX_BARS + 60, highlight=False)
        shown = []
        for chart in usage_charts(rows, by, first, last):
            with console.capture() as captured:
                console.print(chart)
            shown.append("\n".join(ln.rstrip() for ln in captured.get().splitlines() if ln.strip()))
        return "\n\n".join(shown)

    emit(args, data, render)
    return 0
