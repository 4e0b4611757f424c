"""The ``llmpool`` commands on the database as a whole, on the store alone: ``migrate``,
``export`` and ``apply`` (the table as a JSON or YAML file, `llmpool.repository.declarative`),
``doctor`` (`llmpool.pool.doctor`), ``routing`` (each scope's strategy) and ``usage`` (the
``llm_usage`` table, `llmpool.usage.report`)."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import (
    AddCommand,
    allow_unknown_flag,
    bounded,
    grouping,
    moment,
    scope_or_all,
    tag_pair,
    yes_flag,
)
from llmpool.cli.output import (
    UsageError,
    confirmed,
    emit,
    one_line,
    open_store,
    read_input,
    require_extra,
    require_tables,
    table,
)
from llmpool.errors import InvalidConfigError, shorten
from llmpool.repository.scopes import STRATEGIES

if TYPE_CHECKING:
    from llmpool.repository.litellm import Translation
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
    "Reports invalid rows, literal secrets, unresolvable references (judged from this "
    "environment: run it with that of the hosts that serve the models), unknown providers and "
    "config keys, names of one scope differing only by case or spaces, disabled defaults, "
    "scopes whose stored routing is no strategy, experiments whose arm names no enabled row, "
    "and scopes whose embedding rows mix vector spaces. Each finding is an error (calls fail, "
    "or a secret is stored), a warning (it still serves, or depends on where doctor runs: "
    "unresolvable_reference, similar_names, invalid_routing, invalid_experiment) or info; a "
    "provider or reference problem of a disabled row is one step lower. In CI without provider "
    "keys or plugins: --ignore unresolvable_reference --ignore unknown_provider."
)

_MIGRATE_EPILOG = (
    "Without --to, applies every pending migration. --to N applies those up to N, or reverts "
    "those above N by their reverse scripts, newest first, in one transaction: what they "
    "created is dropped, with its rows, so it asks first (pass --yes when not on a terminal). "
    "status lists each migration: applied (when), pending, changed (its file differs from the "
    "one applied) or unknown (applied by another llmpool release)."
)

#: `llmpool.pool.doctor.SEVERITIES`, written out: importing doctor would slow every command.
_SEVERITIES = ("info", "warning", "error")

_ROUTING_EPILOG = (
    "Strategies reorder only rows of equal priority; a failing row falls back to its siblings, "
    "then to the next priority. A strategy other than priority is refused for a scope without "
    "rows (add its rows first). experiment routes by the scope's experiment (`llmpool "
    "experiment set`), which must be defined first; priority stops it, experiment resumes it."
)

_USAGE_COLUMNS = {
    "row": ["name", "scope", "provider", "model_name"],
    "scope": ["scope"],
    "day": ["day"],
    "hour": ["period"],
    "minute": ["period"],
    "tag": ["tag"],
}
_COUNTS = ["calls", "errors", "input_tokens", "output_tokens", "cost"]
_LATENCY = ["p50_ms", "p95_ms"]
#: The bars of one chart: at most a terminal's width of them.
_MAX_BARS = 120


def register(add: AddCommand) -> None:
    """Add the parsers of the commands on the whole database."""
    scope = bounded("scope")
    help_text = "apply llmpool's migrations, go back to one (--to N), or show them (status)"
    example = "llmpool migrate --seed\nllmpool migrate status\nllmpool migrate --to 4 --yes"
    p = add("migrate", cmd_migrate, help_text, _MIGRATE_EPILOG, writes=True, example=example)
    help_text = "show each migration, applied (when) or pending; change nothing"
    p.add_argument("status", nargs="?", choices=("status",), metavar="status", help=help_text)
    help_text = "migrate up or down to migration N (0: remove llmpool's tables)"
    p.add_argument("--to", type=int, metavar="N", help=help_text)
    p.add_argument("--seed", action="store_true", help="also add the example rows")
    yes_flag(p, "going down: revert")

    help_text = "write rows as a JSON or YAML document (references only, never secrets)"
    example = "llmpool export --all-scopes -o llms.yaml"
    p = add("export", cmd_export, help_text, example=example)
    scope_or_all(p, "the rows of this scope (default: global)")
    help_text = "default: from -o's suffix, else json"
    p.add_argument("--format", choices=("json", "yaml"), help=help_text)
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")

    help_text = "make the table match a JSON or YAML document"
    example = "llmpool apply llms.yaml --dry-run\nllmpool apply llms.yaml --prune --yes"
    p = add("apply", cmd_apply, help_text, _APPLY_EPILOG, writes=True, example=example)
    p.add_argument("file", metavar="FILE", help="the document ('-' for stdin)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--prune", action="store_true", help="remove rows the document does not list")
    help_text = "with --prune: a scope to empty of unlisted rows even if the file has none of it"
    p.add_argument(
        "--scope", dest="scopes", action="append", default=[], type=scope, help=help_text
    )
    yes_flag(p, "with --prune: remove rows")
    p.add_argument("--format", choices=("json", "yaml"), help="default: from the suffix, else JSON")
    help_text = "FILE is a LiteLLM proxy or Router config: its model_list becomes rows (README)"
    p.add_argument("--from-litellm", action="store_true", help=help_text)
    allow_unknown_flag(p)

    help_text = "find invalid rows and other problems, with the command fixing each"
    example = "llmpool doctor --ignore unresolvable_reference --fail-on warning"
    p = add("doctor", cmd_doctor, help_text, _DOCTOR_EPILOG, example=example)
    p.add_argument("--scope", type=scope, help="only this scope (default: all)")
    help_text = "leave out the findings of this KIND (e.g. unknown_provider); repeatable"
    p.add_argument(
        "--ignore", action="append", default=[], type=_kind, metavar="KIND", help=help_text
    )
    help_text = "exit 1 when a finding is this serious or more (default: error)"
    p.add_argument("--fail-on", choices=_SEVERITIES, default="error", help=help_text)

    help_text = "show or set how a scope routes its calls (priority, weighted, latency, ...)"
    example = "llmpool routing global weighted"
    p = add("routing", cmd_routing, help_text, _ROUTING_EPILOG, writes=True, example=example)
    p.add_argument("scope", type=scope, help="the scope, e.g. global")
    p.add_argument("strategy", nargs="?", choices=STRATEGIES, help="the strategy to set")

    help_text = "calls, tokens, cost and latency per row, scope or time (from the llm_usage table)"
    epilog = (
        "Times: a duration before now (30m, 12h, 1d, 2w) or an ISO date or time (UTC). --chart "
        "draws each row's calls, errors, cost and p95 latency per --by minute, hour (default) "
        "or day as bars over time (needs the tui extra; --json prints the values)."
    )
    example = (
        "llmpool usage --since 7d --by day --scope global\n"
        "llmpool usage --by tag:tenant --since 30d\n"
        "llmpool usage --tag tenant=acme --by row\n"
        "llmpool usage --chart --by hour"
    )
    p = add("usage", cmd_usage, help_text, epilog, example=example)
    p.add_argument("--since", type=moment, help="from when (default: 1d, the last day)")
    p.add_argument("--until", type=moment, help="until when (default: now)")
    help_text = (
        "group by row, scope, day, hour, minute or tag:NAME, the calls' value of tag NAME "
        "(default: row; with --chart: hour)"
    )
    p.add_argument("--by", type=grouping, metavar="BY", help=help_text)
    help_text = "only the calls with this tag (repeat: with every one of them)"
    p.add_argument("--tag", type=tag_pair, action="append", metavar="NAME=VALUE", help=help_text)
    p.add_argument("--scope", type=scope, help="only this scope")
    help_text = "only this row (its id, or its name at the time of its calls)"
    p.add_argument("--llm", metavar="NAME|ID", type=bounded("name"), help=help_text)
    help_text = "draw charts over time instead of a table"
    p.add_argument("--chart", action="store_true", help=help_text)


def _kind(text: str) -> str:
    # A kind doctor reports, its table read only when --ignore is given.
    from llmpool.pool.doctor import KINDS

    if text not in KINDS:
        close = difflib.get_close_matches(text, KINDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        msg = f"{shorten(text)!r} is no kind doctor reports; {hint}kinds: {', '.join(KINDS)}"
        raise argparse.ArgumentTypeError(msg)
    return text


def cmd_migrate(args: argparse.Namespace) -> int:
    """``llmpool migrate [status] [--to N] [--seed] [--yes]``: apply llmpool's migrations (up to
    N), or revert those above N (asking first), or show them; seed the guide's rows."""
    from llmpool.repository.sql.migrate import downgrade, migrate, seed_starter_rows
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    if args.status:
        return _migrations(args)
    if args.seed and args.to is not None:
        raise UsageError("--seed needs every migration: leave out --to")
    # Named in the output: without --database-url or a configured URL it is a local file.
    database = mask_url(resolve_database_url(args.database_url))
    undo = [] if args.to is None else _to_revert(args)
    if undo:
        question = (
            f"Revert {len(undo)} migration(s) of {database}: {', '.join(undo)}? What they "
            "created is dropped, with its rows."
        )
        if not confirmed(args, "migrate --to", question):
            print("nothing reverted")
            return 1
        reverted, applied = downgrade(args.database_url, to=args.to), []
    else:
        reverted, applied = [], migrate(args.database_url, to=args.to)
    seeded: list[str] = []
    if args.seed:
        with open_store(args, writes=True) as store:
            seeded = [c.name for c in seed_starter_rows(store, actor=args.actor)]
    lines = [f"database: {database}"]
    lines += [f"reverted {name}" for name in reverted] + [f"applied {name}" for name in applied]
    lines += [] if applied or reverted else ["database is up to date"]
    lines += [f"seeded {name}" for name in seeded]
    data = {"database": database, "applied": applied, "reverted": reverted, "seeded": seeded}
    emit(args, data, lambda: "\n".join(lines))
    return 0


def _to_revert(args: argparse.Namespace) -> list[str]:
    # The applied migrations --to N reverts, newest first; N is 0 or a migration's number.
    from llmpool.repository.sql.migrate import migration_states

    states = migration_states(args.database_url)
    if args.to != 0 and args.to not in {m.version for m in states}:
        numbers = f"1 to {states[-1].version}" if states else "none"
        msg = f"there is no migration {args.to} (migrations: {numbers}; --to 0 removes all)"
        raise UsageError(msg)
    return [m.name for m in reversed(states) if m.state != "pending" and m.version > args.to]


def _migrations(args: argparse.Namespace) -> int:
    # ``llmpool migrate status``: every migration, applied (when) or pending; a read.
    from llmpool.repository.sql.migrate import migration_states
    from llmpool.repository.sql.url import mask_url, resolve_database_url

    if args.to is not None or args.seed or args.yes:
        raise UsageError("migrate status changes nothing: it takes no --to, --seed or --yes")
    require_tables(args.database_url)
    database = mask_url(resolve_database_url(args.database_url))
    states = [
        {
            "version": m.version,
            "name": m.name,
            "state": m.state,
            "applied_at": m.applied_at and m.applied_at.isoformat(" ", timespec="seconds"),
        }
        for m in migration_states(args.database_url)
    ]
    pending = [m["name"] for m in states if m["state"] == "pending"]
    summary = f"{len(states) - len(pending)} applied, {len(pending)} pending"
    summary += "; run `llmpool migrate`" if pending else ""
    listing = table(states, ("version", "name", "state", "applied_at"))
    data = {"database": database, "migrations": states, "pending": pending}
    emit(args, data, lambda: f"database: {database}\n\n{listing}\n\n{summary}")
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
    """``llmpool apply FILE [--dry-run] [--prune] [--from-litellm]``: --prune asks before it
    removes rows; --from-litellm lists what the LiteLLM config holds that is not mapped."""
    from llmpool.repository.declarative import apply, loads, plan

    source, fmt = read_input(args.file), _format(args.file, args.format)
    translation = _from_litellm(source, fmt) if args.from_litellm else None
    document = loads(source, fmt) if translation is None else translation.document
    with open_store(args, writes=not args.dry_run, checks=True) as store, _located(translation):
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
    if translation is not None and translation.unmapped:
        text.append(translation.render())
    if args.dry_run:
        text.append("dry run: nothing was changed")
    elif applied:
        text.append(f"applied {len(changes.steps)} change(s)")
    data = {**changes.as_dict(), "dry_run": args.dry_run, "applied": applied}
    if translation is not None:
        data["unmapped"] = [vars(item) for item in translation.unmapped]
    emit(args, data, lambda: "\n".join(text))
    return 0


def _from_litellm(source: str, fmt: str | None) -> Translation:
    """Return a LiteLLM config's rows as a document, with what it leaves unmapped."""
    from llmpool.repository.documents import load_object
    from llmpool.repository.litellm import from_litellm

    return from_litellm(load_object(source, fmt))


@contextlib.contextmanager
def _located(translation: Translation | None) -> Iterator[None]:
    """Name the LiteLLM entry a refused row came from, not its place in the document made of it."""
    try:
        yield
    except InvalidConfigError as error:
        if translation is not None and error.args:
            error.args = (translation.locate(str(error.args[0])), *error.args[1:])
        raise


def cmd_doctor(args: argparse.Namespace) -> int:
    """``llmpool doctor [--scope S] [--ignore KIND] [--fail-on SEVERITY]``: exit code 1 when a
    finding not ignored is as serious as ``--fail-on`` or more."""
    from llmpool.pool.doctor import SEVERITIES, diagnose
    from llmpool.repository.sql.url import mask_url

    with open_store(args) as store:
        database = mask_url(store.engine)
        found = diagnose(store, scope=args.scope)
    findings = [
        {**f.as_dict(), "problem": one_line(f.problem), "fix": one_line(f.fix)}
        for f in found
        if f.kind not in args.ignore
    ]
    rank = SEVERITIES.index
    failing = [f for f in findings if rank(f["severity"]) >= rank(args.fail_on)]
    counts = ", ".join(
        f"{n} {level}{'(s)' * (level != 'info')}"
        for level in reversed(SEVERITIES)
        if (n := sum(f["severity"] == level for f in findings))
    )
    ignored = f"; ignored: {', '.join(sorted(set(args.ignore)))}" if args.ignore else ""

    def render() -> str:
        if not findings:
            return f"no problems found (database: {database}{ignored})"
        lines = [f"{len(findings)} problem(s) found: {counts} (database: {database}{ignored})", ""]
        lines.append(table(findings, ("severity", "kind", "name", "llm_id", "field")))
        for f in findings:
            lines += ["", f"{f['severity']}: {f['kind']}: {f['problem']}", f"  fix: {f['fix']}"]
        return "\n".join(lines)

    data = {
        "database": database,
        "ok": not failing,
        "fail_on": args.fail_on,
        "ignored": sorted(set(args.ignore)),
        "findings": findings,
    }
    emit(args, data, render)
    return 1 if failing else 0


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
    """``llmpool usage [--since 1d] [--until T] [--by B] [--tag N=V] [--scope S] [--llm NAME]
    [--chart]``."""
    from llmpool.usage.report import as_epoch, group, money_text
    from llmpool.usage.sql import SQLUsageTable
    from llmpool.usage.table import add_counts, latency_of

    by: By = args.by or ("hour" if args.chart else "row")
    if args.chart and by not in ("minute", "hour", "day"):
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
    per = by if by in ("minute", "hour", "day") else "day"
    tags = dict(args.tag) if args.tag else None
    with open_store(args) as store:
        usage = SQLUsageTable(store.engine)
        parts = usage.parts(start, end, args.scope, None, llm=args.llm, per=per, tags=tags)
    if args.chart:
        assert start is not None
        return _chart(args, parts, by, start, now if end is None else end)
    rows = group(parts, by)
    total: dict[str, Any] = {name: sum(getattr(row, name) for row in rows) for name in _COUNTS}
    total["cost"] = money_text(sum((row.cost for row in rows), Decimal(0)))
    whole: dict[str, list[Any]] = {}
    for part in parts:
        add_counts(whole, "all", part.sums)
    latency = latency_of(whole["all"]) if whole else None
    total.update(p50_ms=latency and latency.p50_ms, p95_ms=latency and latency.p95_ms)
    lines = [row.as_dict() for row in rows]
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "until": args.until.isoformat() if args.until is not None else None,
        "by": by,
        "tags": tags,
        "rows": lines,
        "total": total,
    }

    def render() -> str:
        if not lines:
            return f"no calls recorded since {since:%Y-%m-%d %H:%M} UTC"
        columns = _USAGE_COLUMNS[by.partition(":")[0]]
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
