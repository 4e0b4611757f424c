"""Usage read back: report lines (`UsageRow`) grouped by row, scope, UTC day, hour or minute, or
a tag's value (``"tag:tenant"``),
each row's sums per period (`series`, what ``llmpool usage --chart`` draws), and their times.

Costs are summed as binary doubles, whose noise (``6.000000000000001e-05``) `money` rounds
away: a report's cost is a `decimal.Decimal`, and decimal text in JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from llmpool.errors import shorten
from llmpool.tags import TAG_NAME
from llmpool.usage.table import COUNTS, LABELS, add_counts, latency_of

if TYPE_CHECKING:
    from llmpool.usage.table import UsageBucket

#: How a report groups its lines: one of `GROUPS`, or ``"tag:NAME"``, by the value of tag NAME.
By = str
GROUPS = ("row", "scope", "day", "hour", "minute")


def check_by(by: str) -> str:
    """Return ``by`` when a report can group by it; else a `ValueError` naming the choices."""
    if by in GROUPS or (by.startswith("tag:") and TAG_NAME.match(by[4:])):
        return by
    msg = f"by must be one of {', '.join(GROUPS)} or tag:NAME, not {shorten(by)!r}"
    raise ValueError(msg)


def tag_value(tags: str, name: str) -> str | None:
    """Return tag ``name``'s value in a bucket's ``tags`` text, or ``None``.

    Example:
        >>> tag_value("feature=chat,tenant=acme", "tenant"), tag_value("", "tenant")
        ('acme', None)
    """
    for pair in tags.split(",") if tags else ():
        key, _, value = pair.partition("=")
        if key == name:
            return value
    return None


#: The minutes of each UTC period a report or a chart steps by.
PERIOD_MINUTES = {"minute": 1, "hour": 60, "day": 1440}
_PERIOD_TEXT = {"minute": "%Y-%m-%d %H:%M", "hour": "%Y-%m-%d %H:00", "day": "%Y-%m-%d"}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

#: The decimal places of a cost read back.
MONEY_PLACES = 9
_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_EXACT = Context(prec=400)  # every finite double, to the last place


def money(value: float) -> Decimal:
    """Return a cost as a `Decimal` rounded to `MONEY_PLACES` places, without trailing zeros.

    Example:
        >>> money(6.000000000000001e-05), money(3.0), money(1e-10)
        (Decimal('0.00006'), Decimal('3'), Decimal('0'))
    """
    amount = Decimal(value)
    if not amount.is_finite():  # never written by llmpool; shown as it is
        return amount
    text = format(amount.quantize(_QUANTUM, context=_EXACT), "f")
    return Decimal(text.rstrip("0").rstrip(".") if "." in text else text)


def money_text(amount: Decimal) -> str:
    """Return an amount as plain decimal text, never in exponent form (JSON's cost).

    Example:
        >>> money_text(money(6e-08)), money_text(money(1500.5))
        ('0.00000006', '1500.5')
    """
    return format(amount, "f")


@dataclass(frozen=True)
class UsageRow:
    """One line of a usage report: the calls (every attempt), errors, tokens, cost and answers'
    latency (milliseconds; ``None`` without answers) of a row (labelled as at its latest call),
    a scope, a UTC day, a UTC hour or minute (``period``), or a tag's value (``tag``; ``None``:
    the calls without that tag); the other labels are ``None``."""

    llm_id: str | None = None
    name: str | None = None
    scope: str | None = None
    provider: str | None = None
    model_name: str | None = None
    day: str | None = None
    period: str | None = None
    tag: str | None = None
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    mean_ms: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the line as a JSON-ready dict (``cost`` as decimal text: `money_text`)."""
        return {**asdict(self), "cost": money_text(self.cost)}


def period_text(minute: int, by: str) -> str:
    """Return the UTC day, hour or minute (``by``) of an epoch minute as report text.

    Example:
        >>> period_text(29000000, "hour"), period_text(29000000, "day")
        ('2025-02-19 21:00', '2025-02-19')
    """
    return datetime.fromtimestamp(minute * 60, timezone.utc).strftime(_PERIOD_TEXT[by])


def _line(labels: dict[str, Any], sums: list[Any]) -> UsageRow:
    latency = latency_of(sums)
    timing = {} if latency is None else latency._asdict()
    timing.pop("answers", None)
    counts = dict(zip(COUNTS[:4], sums[:4], strict=True))
    return UsageRow(**labels, **counts, cost=money(sums[4]), **timing)


def group(parts: Iterable[UsageBucket], by: By) -> list[UsageRow]:
    """Fold a table's parts into report lines, labelled as at their newest part, in order."""
    sums: dict[str, list[Any]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for part in sorted(parts, key=lambda part: part.minute):
        if by == "row":
            key, label = part.llm_id, {name: getattr(part, name) for name in LABELS}
        elif by == "scope":
            key, label = part.scope, {"scope": part.scope}
        elif by.startswith("tag:"):
            value = tag_value(part.tags, by[4:])
            key, label = "\0" if value is None else value, {"tag": value}
        else:
            key = period_text(part.minute, by)
            label = {"day" if by == "day" else "period": key}
        add_counts(sums, key, part.sums)
        labels[key] = label
    lines = [_line(labels[key], total) for key, total in sums.items()]
    lines.sort(
        key=lambda r: (r.scope or r.day or r.period or r.tag or "", r.name or "", r.llm_id or "")
    )
    if by.startswith("tag:"):  # the calls without the tag last
        lines.sort(key=lambda r: r.tag is None)
    return lines


class Series(NamedTuple):
    """One row's usage over time: its name (as at its latest call) and its sums (in `COUNTS`
    order) per period, keyed by the period's first epoch minute."""

    name: str
    periods: dict[int, list[Any]]


def series(parts: Iterable[UsageBucket], by: str) -> dict[str, Series]:
    """Return each row's (by id) sums per UTC ``by`` (minute, hour or day) of a table's parts."""
    step = PERIOD_MINUTES[by]
    rows: dict[str, Series] = {}
    for part in sorted(parts, key=lambda part: part.minute):
        row = rows.get(part.llm_id)
        periods = {} if row is None else row.periods
        add_counts(periods, part.minute // step * step, part.sums)
        rows[part.llm_id] = Series(part.name, periods)
    return rows


#: The times a report may name: from the epoch to the end of year 9999 (UTC).
_EARLIEST, _LATEST = 0.0, 253402300800.0


def _out_of_range(shown: str) -> ValueError:
    return ValueError(f"{shorten(shown, 40)} is out of range: a time from 1970-01-01 to 9999-12-31")


def as_epoch(moment: datetime | timedelta | float | str | None, now: float) -> float | None:
    """Return a datetime (naive: UTC), a timedelta or text before ``now``, an ISO text or epoch
    seconds as epoch seconds; `ValueError` for no time or one outside 1970 to 9999 (UTC)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = parse_since(moment, now)
    try:
        if isinstance(moment, timedelta):
            epoch = now - moment.total_seconds()
        elif isinstance(moment, datetime):
            epoch = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
        else:
            epoch = float(moment)
    except (OverflowError, OSError):
        raise _out_of_range(str(moment)) from None
    if not _EARLIEST <= epoch < _LATEST:  # NaN too
        raise _out_of_range(str(moment))
    return epoch


def parse_since(text: str, now: float) -> datetime:
    """Read a ``--since`` / ``--until``: a duration before ``now`` (``30m``, ``12h``, ``1d``,
    ``2w``) or an ISO date or time (UTC unless it says otherwise); `ValueError` else."""
    match = _DURATION.match(text)
    if match:
        epoch = now - float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not _EARLIEST <= epoch < _LATEST:
            raise _out_of_range(text)
        return datetime.fromtimestamp(epoch, timezone.utc)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{shorten(text, 40)!r} is not a duration or a date: use e.g. 30m, 12h, 1d, 2w, "
            "2025-05-01 or 2025-05-01T12:00"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
