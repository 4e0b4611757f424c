"""``llmpool usage --chart``: each row's calls, errors, cost and p95 latency per UTC minute,
hour or day (`llmpool.usage.report.series`), one chart each, drawn with ``rich`` (the ``tui``
extra): a row is a line of bars over the same time axis, scaled to the chart's largest value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.cli.output import one_line
from llmpool.usage.report import PERIOD_MINUTES, Series, money, period_text
from llmpool.usage.table import COUNTS, add_counts, latency_of

if TYPE_CHECKING:
    from rich.console import RenderableType

#: A bar's eight heights; a period without calls shows ``·``, one without answers nothing.
BARS = "▁▂▃▄▅▆▇█"
EMPTY, NONE = "·", " "


def _p95(sums: Sequence[Any]) -> float | None:
    latency = latency_of(sums)
    return None if latency is None else latency.p95_ms


#: Each chart: its key in ``--json``, its title, its value of a period's sums (``None``: no
#: value), and what its last column reads of the whole window's sums.
CHARTS: tuple[tuple[str, str, Callable[[Sequence[Any]], float | None], str], ...] = (
    ("calls", "calls", lambda sums: sums[0], "total"),
    ("errors", "errors", lambda sums: sums[1], "total"),
    ("cost", "cost", lambda sums: sums[4], "total"),
    ("p95_ms", "p95 latency (ms)", _p95, "p95"),
)
_NO_CALLS = [0] * len(COUNTS)


def values(
    row: Series, periods: Sequence[int], read: Callable[[Sequence[Any]], float | None]
) -> list[float | None]:
    """Return what ``read`` finds in each period of ``row`` (a period without calls: zeros)."""
    return [read(row.periods.get(period, _NO_CALLS)) for period in periods]


def bars(values: Sequence[float | None], top: float) -> str:
    """Return one bar per value, scaled to ``top`` (any value above 0 shows at least ``▁``).

    Example:
        >>> bars([0, 1, 4, 8, None], 8)
        '·▁▄█ '
    """
    marks = []
    for value in values:
        if value is None:
            marks.append(NONE)
        elif value <= 0 or top <= 0:
            marks.append(EMPTY)
        else:
            marks.append(BARS[max(0, min(7, round(value / top * 8) - 1))])
    return "".join(marks)


def _number(value: float | None, title: str) -> str:
    if value is None:
        return "-"
    if title == "cost":
        return format(money(value), "f")
    return f"{value:g}" if title.startswith("p95") else str(int(value))


def usage_charts(
    rows: Mapping[str, Series], by: str, first: int, last: int
) -> list[RenderableType]:
    """Return the charts of ``rows`` from the period starting at epoch minute ``first`` to the
    one starting at ``last``, one bar per ``by`` (minute, hour or day)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    step = PERIOD_MINUTES[by]
    periods = list(range(first, last + 1, step))
    axis = f"{period_text(first, by)} to {period_text(last, by)} UTC, one bar per {by}"
    charts: list[RenderableType] = []
    ordered = sorted(rows.items(), key=lambda item: (item[1].name, item[0]))
    whole: dict[str, list[Any]] = {}  # each row's sums over the window
    for llm_id, series in ordered:
        for sums in series.periods.values():
            add_counts(whole, llm_id, sums)
    for _, title, read, summary in CHARTS:
        grid = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold")
        grid.add_column("NAME", no_wrap=True)
        grid.add_column(title.split(" ")[0].upper(), no_wrap=True)
        grid.add_column("MAX", justify="right")
        grid.add_column(summary.upper(), justify="right")
        lines = {llm_id: values(series, periods, read) for llm_id, series in ordered}
        top = max((v for line in lines.values() for v in line if v is not None), default=0)
        for llm_id, series in ordered:
            line = lines[llm_id]
            highest = max((v for v in line if v is not None), default=None)
            grid.add_row(
                one_line(series.name),
                Text(bars(line, float(top)), style="cyan"),
                _number(highest, title),
                _number(read(whole[llm_id]), title),
            )
        charts.append(Group(Text(f"{title} per {by}, {axis}", style="bold"), grid))
    return charts
