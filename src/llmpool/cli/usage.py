"""``llmpool usage``: the calls, tokens and cost of the rows, from the ``llm_usage`` table.

``llmpool usage --since 1d`` lists each row's calls, errors, tokens and cost over the last day;
``--by scope`` or ``--by day`` groups them otherwise; ``--json`` prints the typed rows
(`llmpool.usage.UsageRow`) and their total, each cost a decimal string (``"0.00006"``).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from llmpool.cli.args import AddCommand, Handler, bounded
from llmpool.cli.output import UsageError, emit, open_pool, table

__all__ = ["COMMANDS", "register"]

_COLUMNS = {
    "row": ["name", "scope", "provider", "model_name"],
    "scope": ["scope"],
    "day": ["day"],
}
_COUNTS = ["calls", "errors", "input_tokens", "output_tokens", "cost"]


def _moment(text: str) -> datetime:
    from llmpool.usage.report import as_epoch, parse_since

    now = time.time()
    try:
        moment = parse_since(text, now)
        as_epoch(moment, now)  # within range
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return moment


def register(add: AddCommand) -> None:
    """Add the ``usage`` parser."""
    p = add(
        "usage",
        "calls, tokens and cost per row, scope or day (from the llm_usage table)",
        epilog="Times: a duration before now (30m, 12h, 1d, 2w) or an ISO date or time (UTC).",
    )
    p.add_argument(
        "--since", type=_moment, default=None, help="from when (default: 1d, the last day)"
    )
    p.add_argument("--until", type=_moment, default=None, help="until when (default: now)")
    p.add_argument(
        "--by", choices=["row", "scope", "day"], default="row", help="group by (default: row)"
    )
    p.add_argument("--scope", type=bounded("scope"), default=None, help="only this scope")


def cmd_usage(args: argparse.Namespace) -> int:
    """``llmpool usage [--since 1d] [--until T] [--by row|scope|day] [--scope S]``."""
    from llmpool.usage.report import money_text

    since = args.since if args.since is not None else _moment("1d")
    if args.until is not None and args.until <= since:
        msg = (
            f"--until ({args.until:%Y-%m-%d %H:%M:%S} UTC) is not after --since "
            f"({since:%Y-%m-%d %H:%M:%S} UTC): the window is empty"
        )
        raise UsageError(msg)
    with open_pool(args) as pool:
        rows = pool.usage(since=since, until=args.until, by=args.by, scope=args.scope)
    total: dict[str, Any] = {name: sum(getattr(row, name) for row in rows) for name in _COUNTS}
    total["cost"] = money_text(sum((row.cost for row in rows), Decimal(0)))
    lines = [row.as_dict() for row in rows]
    data: dict[str, Any] = {
        "since": since.isoformat(),
        "until": args.until.isoformat() if args.until is not None else None,
        "by": args.by,
        "rows": lines,
        "total": total,
    }

    def render() -> str:
        if not lines:
            return f"no calls recorded since {since:%Y-%m-%d %H:%M} UTC"
        first = _COLUMNS[args.by][0]
        return table([*lines, {first: "TOTAL", **total}], _COLUMNS[args.by] + _COUNTS)

    emit(args, data, render)
    return 0


COMMANDS: dict[str, Handler] = {"usage": cmd_usage}
