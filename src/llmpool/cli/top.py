"""``llmpool top``: a scope's rows as ``chain`` reads them (`LLMPool.status`), redrawn in place.

Each frame is one `read_status`, the same reading ``chain`` prints, drawn with ``rich`` (the
``tui`` extra): breaker, calls per minute and errors (the fleet's last minute through the
service's Redis; this shell's recent attempts without it), latency p50/p95, calls in flight,
the rate-limit window against its limits and the spend against its budget.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmpool.cli.args import AddCommand
from llmpool.cli.output import UsageError, cell, emit, one_line, quiet, require_extra
from llmpool.cli.runtime import add_scope_options, chain_row, read_status, say_whose, status_pool

if TYPE_CHECKING:
    from rich.console import RenderableType

    from llmpool.pool.facade import LLMPool

_EPILOG = (
    "Reads what `llmpool chain` reads, every --interval seconds, until Ctrl-C. With --redis (or "
    "LLMPOOL_REDIS_URL), the service's redis=: breakers, limits and the numbers are the "
    "fleet's, calls per minute over its last minute; without it, this shell's own. --once (or "
    "--json) prints one frame and exits: 1 when no row can answer."
)

#: The columns of a frame, and the key of each in a row; limits and spend only when used.
_COLUMNS = {
    "#": "position",
    "NAME": "name",
    "PROVIDER": "provider",
    "BREAKER": "breaker",
    "CALLS/MIN": "calls_per_min",
    "ERRORS": "errors",
    "P50_MS": "latency_ms",
    "P95_MS": "p95_ms",
    "IN_FLIGHT": "in_flight",
    "LIMITS": "limits",
    "SPEND": "spend",
    "STATUS": "state",
}
_NOT_SHOWN = ("rows", "invalid_rows")  # a frame's rows replace them
_BREAKER_STYLES = {"closed": "green", "half_open": "yellow", "open": "bold red", "unknown": "dim"}


def register(add: AddCommand) -> None:
    """Add the parser of ``top``."""
    help_text = "a live view of a scope's rows: breakers, calls, errors, latency, limits, spend"
    example = "llmpool top --scope global --redis redis://127.0.0.1:6379/0\nllmpool top --once"
    p = add("top", cmd_top, help_text, _EPILOG, example=example)
    add_scope_options(p)
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    help_text = "seconds between frames (default: 2)"
    p.add_argument("--interval", type=float, default=2.0, help=help_text)


def top_rows(status: Mapping[str, Any], window: float | None) -> list[dict[str, Any]]:
    """Return the status's rows as a frame shows them: `chain_row`'s, with ``calls_per_min``
    (the fleet's over its ``window`` seconds; ``None`` for this shell's own numbers, which
    cover its last attempts, not a time), ``errors`` and ``state``."""
    rows = []
    for row in status["rows"]:
        shown = chain_row(row)
        attempts, rate = row["attempts"], row["error_rate"]
        shown["calls_per_min"] = round(attempts * 60 / window, 1) if window else None
        shown["errors"] = round(rate * attempts) if rate is not None else 0
        shown["state"] = "answers now" if row["answers_now"] else row["reason"] or "ready"
        rows.append(shown)
    for row in status["invalid_rows"]:
        rows.append({**row, "state": f"invalid: {row['reason']}"})
    return rows


def _window(pool: LLMPool, status: Mapping[str, Any]) -> float | None:
    # The fleet's numbers cover its last `window` seconds; this shell's cover no time span.
    from llmpool.chain.fleet import FleetStats

    stats = pool.stats
    return stats.window if isinstance(stats, FleetStats) and status["stats"] == "fleet" else None


def _caption(status: Mapping[str, Any]) -> str:
    answering = status["answering"]
    who = (
        f"{one_line(answering['name'])} answers now"
        if answering
        else f"no row can answer ({one_line(status['note'] or '')})"
    )
    fleet = "" if status["replicas"] is None else f" · replicas live: {status['replicas']}"
    return (
        f"scope {one_line(status['scope'])!r} ({status['routing']}): {who} · breakers: "
        f"{status['breakers']} · statistics: {status['stats']}{fleet} · {status['at'][:19]}Z"
    )


def frame(status: Mapping[str, Any], rows: list[dict[str, Any]]) -> RenderableType:
    """Return one frame: a caption and the rows' table (``rich`` renderables)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    columns = [c for c, key in _COLUMNS.items() if key not in ("limits", "spend") or
               any(row.get(key) for row in rows)]  # fmt: skip
    if not any(row.get("calls_per_min") is not None for row in rows):
        columns[columns.index("CALLS/MIN")] = "CALLS"  # this shell's last attempts
    grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
    for name in columns:
        numeric = name in ("#", "CALLS/MIN", "CALLS", "ERRORS", "P50_MS", "P95_MS", "IN_FLIGHT")
        grid.add_column(name, justify="right" if numeric else "left", no_wrap=name != "STATUS")
    for row in rows:
        cells = []
        for name in columns:
            key = "attempts" if name == "CALLS" else _COLUMNS[name]
            value = row.get(key)
            text = Text(cell(value))
            if name == "BREAKER":
                text.stylize(_BREAKER_STYLES.get(str(value).split(" ")[0], ""))
            elif name == "ERRORS" and value:
                text.stylize("red")
            elif name == "STATUS":
                text.stylize("bold green" if value == "answers now" else
                             "green" if value == "ready" else "yellow")  # fmt: skip
            cells.append(text)
        grid.add_row(*cells)
    return Group(Text(_caption(status), style="bold"), grid)


def _width() -> int | None:
    # A frame printed to a pipe or a file (--once in a script) is not cut at 80 columns.
    return None if sys.stdout.isatty() else 200


def cmd_top(args: argparse.Namespace) -> int:
    """``llmpool top [--scope S] [--once]``: a frame of the scope every ``--interval`` seconds
    until Ctrl-C; one frame with ``--once`` or ``--json`` (exit 1 when no row can answer)."""
    if not (math.isfinite(args.interval) and args.interval >= 0.1):
        msg = f"--interval must be at least 0.1 seconds, not {args.interval:g}"
        raise UsageError(msg)
    once = args.once or args.json
    if not args.json:
        require_extra("rich", "llmpool top")
    with status_pool(args) as pool:
        status = read_status(args, pool)
        rows = top_rows(status, _window(pool, status))
        unreachable = say_whose(args, status)
        if once:

            def render() -> str:
                from rich.console import Console

                console = Console(width=_width(), highlight=False)
                with console.capture() as captured:
                    console.print(frame(status, rows))
                lines = [line.rstrip() for line in captured.get().splitlines()]
                return "\n".join(line for line in lines if line)

            data = {key: value for key, value in status.items() if key not in _NOT_SHOWN}
            emit(args, {**data, "rows": rows}, render)
            return 0 if status["can_answer"] and not unreachable else 1
        from rich.live import Live

        live = Live(frame(status, rows), screen=True, auto_refresh=False)
        try:  # the frame shows why rows are skipped: no warning lines across it
            with live, quiet("llmpool"):
                while True:
                    time.sleep(args.interval)
                    pool.refresh()  # rows added, changed or removed meanwhile
                    status = read_status(args, pool)
                    live.update(
                        frame(status, top_rows(status, _window(pool, status))), refresh=True
                    )
        except KeyboardInterrupt:  # how a live view ends
            return 0
