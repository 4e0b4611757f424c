"""``llmpool experiment``: show, set and report a scope's experiment (its arms, each a set of
rows with a weight, `llmpool.repository.experiments`), on the store alone: the report reads
``llm_usage`` by tag ``arm`` and ``llm_feedback`` (`llmpool.usage.experiments`)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand, bounded, moment
from llmpool.cli.output import UsageError, emit, open_store, table

if TYPE_CHECKING:
    from llmpool.repository.experiments import Experiment

_EPILOG = (
    "set defines the scope's arms (--arm NAME=ROW[,ROW...], rows by name in the scope; "
    "--weight NAME=N, default 1) and routes the scope by them: each call is served by one arm, "
    "drawn by weight (per session_key with --sticky session, per value of a call tag with "
    "--sticky tag:NAME, else per call), its rows first, then the scope's other rows. report "
    "gives each arm's calls, errors, cost, p50/p95 latency and each feedback metric's mean "
    "with a 95 % interval (Wilson for 0/1 metrics, else normal); --adapt METRIC sets the "
    "weights by Thompson sampling on that 0/1 metric (audited). Stop an experiment with "
    "`llmpool routing SCOPE priority`."
)

_ARMS = ["arm", "weight", "calls", "errors", "error_rate", "cost", "p50_ms", "p95_ms"]
_METRICS = ["arm", "metric", "n", "mean", "low", "high", "method"]


def register(add: AddCommand) -> None:
    """Add the parser of ``llmpool experiment``."""
    help_text = "show, set or report a scope's experiment (arms of rows, with feedback)"
    example = (
        "llmpool experiment set global --arm control=GPT-4o --arm candidate=Claude "
        "--weight control=9 --sticky session\n"
        "llmpool experiment report global --since 7d\n"
        "llmpool experiment report global --adapt thumbs_up"
    )
    p = add("experiment", cmd_experiment, help_text, _EPILOG, writes=True, example=example)
    help_text = "show the definition, set it, or report the arms"
    p.add_argument("action", choices=("show", "set", "report"), help=help_text)
    p.add_argument("scope", type=bounded("scope"), help="the scope, e.g. global")
    help_text = "set: an arm and its rows, by name (repeatable)"
    p.add_argument("--arm", action="append", default=[], metavar="NAME=ROW[,ROW]", help=help_text)
    help_text = "set: an arm's weight, above 0 (default 1; repeatable)"
    p.add_argument("--weight", action="append", default=[], metavar="NAME=N", help=help_text)
    help_text = "set: keep a caller's arm per session_key (session) or tag value (tag:NAME)"
    p.add_argument("--sticky", metavar="session|tag:NAME", help=help_text)
    p.add_argument("--since", type=moment, help="report: from when (default: 7d)")
    p.add_argument("--until", type=moment, help="report: until when (default: now)")
    help_text = "report: set the weights by Thompson sampling on this 0/1 metric (audited)"
    p.add_argument("--adapt", metavar="METRIC", help=help_text)


def cmd_experiment(args: argparse.Namespace) -> int:
    """``llmpool experiment show|set|report SCOPE [...]``."""
    setting = args.arm or args.weight or args.sticky is not None
    if setting and args.action != "set":
        raise UsageError("--arm, --weight and --sticky go with `experiment set`")
    if args.action != "report" and (args.since or args.until or args.adapt):
        raise UsageError("--since, --until and --adapt go with `experiment report`")
    if args.action == "set":
        return _set(args)
    if args.action == "report":
        return _report(args)
    with open_store(args) as store:
        experiment = store.get_experiment(args.scope)
        routing = store.get_routing(args.scope)
    data = {
        "scope": args.scope,
        "routing": routing,
        "experiment": experiment and experiment.as_dict(),
    }
    emit(args, data, lambda: _describe(args.scope, routing, experiment))
    return 0


def _describe(scope: str, routing: str, experiment: Experiment | None) -> str:
    if experiment is None:
        return f"scope {scope!r} has no experiment (it routes by {routing})"
    state = "running" if routing == "experiment" else f"stopped: the scope routes by {routing}"
    lines = [f"scope {scope!r}: experiment {state}; sticky: {experiment.sticky or 'no'}"]
    rows = [{"arm": a.name, "weight": a.weight, "rows": list(a.rows)} for a in experiment.arms]
    return "\n".join([*lines, "", table(rows, ["arm", "weight", "rows"])])


def _pairs(given: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for text in given:
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{flag} takes NAME=VALUE, not {text!r}")
        pairs[name.strip()] = value.strip()
    return pairs


def _set(args: argparse.Namespace) -> int:
    if not args.arm:
        raise UsageError("experiment set needs at least one --arm NAME=ROW[,ROW]")
    arms: dict[str, dict[str, Any]] = {
        name: {"rows": [row.strip() for row in rows.split(",") if row.strip()]}
        for name, rows in _pairs(args.arm, "--arm").items()
    }
    for name, weight in _pairs(args.weight, "--weight").items():
        if name not in arms:
            raise UsageError(f"--weight names arm {name!r}, which no --arm defines")
        try:
            arms[name]["weight"] = float(weight) if "." in weight else int(weight)
        except ValueError:
            raise UsageError(f"--weight {name}={weight}: the weight is not a number") from None
    sticky = None if args.sticky in (None, "none") else args.sticky
    with open_store(args, writes=True) as store:
        experiment = store.set_experiment(
            args.scope, {"arms": arms, "sticky": sticky}, actor=args.actor
        )
    data = {"scope": args.scope, "routing": "experiment", "experiment": experiment.as_dict()}
    emit(args, data, lambda: _describe(args.scope, "experiment", experiment))
    return 0


def _report(args: argparse.Namespace) -> int:
    from llmpool.usage.experiments import arm_reports, thompson_weights
    from llmpool.usage.report import as_epoch, group
    from llmpool.usage.sql import SQLFeedbackTable, SQLUsageTable

    since = args.since if args.since is not None else moment("7d")
    now = time.time()
    start, end = as_epoch(since, now), as_epoch(args.until, now)
    if end is not None and start is not None and end <= start:
        raise UsageError("--until is not after --since: the window is empty")
    with open_store(args, writes=args.adapt is not None) as store:
        experiment = store.get_experiment(args.scope)
        if experiment is None:
            raise UsageError(f"scope {args.scope!r} has no experiment: see `experiment set`")
        parts = SQLUsageTable(store.engine).parts(start, end, args.scope, None, per="day")
        sums = SQLFeedbackTable(store.engine).sums(args.scope, start, end)
        weights = None
        if args.adapt is not None:
            if store.get_routing(args.scope) != "experiment":
                msg = (
                    f"scope {args.scope!r} does not route by its experiment: --adapt would start it"
                )
                raise UsageError(msg)
            try:
                weights = thompson_weights(experiment, sums, args.adapt)
            except ValueError as error:
                raise UsageError(str(error)) from None
            definition = experiment.as_dict()
            for name, weight in weights.items():
                definition["arms"][name]["weight"] = weight
            store.set_experiment(args.scope, definition, actor=args.actor)
    reports = [r.as_dict() for r in arm_reports(experiment, group(parts, "tag:arm"), sums)]
    data: dict[str, Any] = {
        "scope": args.scope,
        "since": since.isoformat(),
        "until": args.until.isoformat() if args.until is not None else None,
        "arms": reports,
        "adapted": weights,
    }

    def render() -> str:
        arms = [{**r, "error_rate": _rate(r["error_rate"])} for r in reports]
        metrics = [
            {"arm": r["arm"], **m, **{k: _round(m[k]) for k in ("mean", "low", "high")}}
            for r in reports
            for m in r["metrics"]
        ]
        text = [table(arms, _ARMS)]
        if metrics:
            text += ["", table(metrics, _METRICS)]
        if weights is not None:
            shown = ", ".join(f"{k}={v:g}" for k, v in weights.items())
            text += ["", f"weights set by Thompson sampling on {args.adapt}: {shown}"]
        return "\n".join(text)

    emit(args, data, render)
    return 0


def _rate(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
