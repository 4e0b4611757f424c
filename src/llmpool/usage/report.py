"""Usage as it is read back: typed rows grouped by row, scope or day, and the time arguments.

`UsageRow` is one line of a report. The tables (`llmpool.usage.table`) hand over parts, one
per row, day and set of labels (`UsagePart`), and `group` folds them into the report's lines,
so the SQL and in-memory tables report alike. `parse_since` reads the ``--since`` of the
command line (``30m``, ``12h``, ``1d``, ``2w``, or an ISO date or time).

Money is read back as `decimal.Decimal` (`money`): the ``cost`` column holds a binary double,
whose sums carry noise (``6.000000000000001e-05``), so a cost is rounded to `MONEY_PLACES`
decimal places (a billionth of the currency unit: a token at 0.01 per million tokens still
shows) without trailing zeros; JSON carries it as a decimal string (`money_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import Context, Decimal
from typing import Any, Literal

from llmpool.errors import shorten

__all__ = [
    "BY",
    "MONEY_PLACES",
    "By",
    "UsagePart",
    "UsageRow",
    "as_epoch",
    "group",
    "money",
    "money_text",
    "parse_since",
    "window",
]

By = Literal["row", "scope", "day"]

#: How a report may group its lines.
BY: tuple[By, ...] = ("row", "scope", "day")

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
    """One line of a usage report: the calls, tokens and cost of a row, a scope or a day.

    The fields that do not belong to the grouping are ``None`` (``day`` when grouped by row,
    ``llm_id`` when grouped by scope...).

    Attributes:
        llm_id: The row's id (grouped by row).
        name: The row's name, as of its latest call (grouped by row).
        scope: The scope (grouped by row or scope).
        provider: The row's provider (grouped by row).
        model_name: The row's model (grouped by row).
        day: The UTC day, ``YYYY-MM-DD`` (grouped by day).
        calls: Calls made to the provider (each attempt, retries included).
        errors: Those of the calls that failed.
        input_tokens: Input tokens of the calls that answered.
        output_tokens: Output tokens of the calls that answered.
        cost: Their cost, in the prices' currency (`money`: rounded to `MONEY_PLACES`).
    """

    llm_id: str | None = None
    name: str | None = None
    scope: str | None = None
    provider: str | None = None
    model_name: str | None = None
    day: str | None = None
    calls: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)

    def as_dict(self) -> dict[str, Any]:
        """Return the line as a JSON-ready dict (``cost`` a decimal string: `money_text`)."""
        line = asdict(self)
        line["cost"] = money_text(self.cost)
        return line


@dataclass(frozen=True)
class UsagePart:
    """Totals of one row on one UTC day under one set of labels, as a table reads them."""

    llm_id: str
    scope: str
    name: str
    provider: str
    model_name: str
    day: str
    last: float  # the latest bucket's start, epoch seconds: the newest labels win
    calls: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost: float


def group(parts: Iterable[UsagePart], by: By) -> list[UsageRow]:
    """Fold parts into report lines grouped ``by`` row, scope or day.

    Rows come by scope then name, scopes by name, days in order.

    Raises:
        ValueError: ``by`` is not one of `BY`.
    """
    if by not in BY:
        msg = f"by must be one of {', '.join(BY)}, not {by!r}"
        raise ValueError(msg)
    totals: dict[str, list[Any]] = {}
    labels: dict[str, tuple[float, UsagePart]] = {}
    for part in parts:
        key = part.llm_id if by == "row" else part.scope if by == "scope" else part.day
        sums = totals.setdefault(key, [0, 0, 0, 0, 0.0])
        sums[0] += part.calls
        sums[1] += part.errors
        sums[2] += part.input_tokens
        sums[3] += part.output_tokens
        sums[4] += part.cost
        if key not in labels or part.last >= labels[key][0]:
            labels[key] = (part.last, part)
    lines = []
    for key, sums in totals.items():
        calls, errors, input_tokens, output_tokens = (int(n) for n in sums[:4])
        cost = money(sums[4])
        if by == "row":
            part = labels[key][1]
            lines.append(
                UsageRow(
                    llm_id=key,
                    name=part.name,
                    scope=part.scope,
                    provider=part.provider,
                    model_name=part.model_name,
                    calls=calls,
                    errors=errors,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cost=cost,
                )
            )
            continue
        line = UsageRow(
            calls=calls,
            errors=errors,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=cost,
        )
        lines.append(replace(line, scope=key) if by == "scope" else replace(line, day=key))
    if by == "row":
        lines.sort(key=lambda line: (line.scope or "", line.name or "", line.llm_id or ""))
    else:
        lines.sort(key=lambda line: line.scope or line.day or "")
    return lines


#: The times a report may name: from the epoch to the end of year 9999 (UTC).
_EARLIEST, _LATEST = 0.0, 253402300800.0


def _out_of_range(shown: str) -> ValueError:
    return ValueError(f"{shorten(shown, 40)} is out of range: a time from 1970-01-01 to 9999-12-31")


def as_epoch(moment: datetime | timedelta | float | str | None, now: float) -> float | None:
    """Return a time argument as epoch seconds.

    Args:
        moment: A datetime (naive means UTC), a timedelta or a duration text (that long before
            ``now``), an ISO date or time text, epoch seconds, or ``None``.
        now: The current time, epoch seconds.

    Raises:
        ValueError: A text that is neither a duration nor an ISO date or time, or a time before
            1970 or after 9999 (UTC).
    """
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = parse_since(moment, now)
    try:
        if isinstance(moment, timedelta):
            epoch = now - moment.total_seconds()
        elif isinstance(moment, datetime):
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            epoch = moment.timestamp()
        else:
            epoch = float(moment)
    except (OverflowError, OSError):
        raise _out_of_range(str(moment)) from None
    if not _EARLIEST <= epoch < _LATEST:  # NaN too
        raise _out_of_range(str(moment))
    return epoch


def window(
    since: datetime | timedelta | float | str | None,
    until: datetime | timedelta | float | str | None,
    now: float,
) -> tuple[float | None, float | None]:
    """Return a report's ``[since, until)`` as epoch seconds (`as_epoch`).

    Example:
        >>> window("1d", None, 86400.0 * 2)
        (86400.0, None)

    Raises:
        ValueError: A time is not understood or out of range, or ``until`` is not after
            ``since`` (both named).
    """
    start, end = as_epoch(since, now), as_epoch(until, now)
    if start is not None and end is not None and end <= start:
        msg = f"until ({_iso(end)}) is not after since ({_iso(start)}): the window is empty"
        raise ValueError(msg)
    return start, end


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_since(text: str, now: float) -> datetime:
    """Read a ``--since`` / ``--until``: a duration before ``now`` or an ISO date or time (UTC
    unless it says otherwise).

    Example:
        >>> now = datetime(2025, 5, 2, 12, tzinfo=timezone.utc).timestamp()
        >>> parse_since("1d", now).isoformat(), parse_since("90m", now).isoformat()
        ('2025-05-01T12:00:00+00:00', '2025-05-02T10:30:00+00:00')
        >>> parse_since("2025-04-30", now).isoformat()
        '2025-04-30T00:00:00+00:00'

    Raises:
        ValueError: The text is neither (the message gives examples), or a duration reaches
            before 1970.
    """
    match = _DURATION.match(text)
    if match:
        epoch = now - float(match.group(1)) * _UNITS[match.group(2).lower()]
        if not _EARLIEST <= epoch < _LATEST:
            raise _out_of_range(text)
        return datetime.fromtimestamp(epoch, timezone.utc)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "…"
        msg = (
            f"{shown!r} is not a duration or a date: use e.g. 30m, 12h, 1d, 2w, "
            "2025-05-01 or 2025-05-01T12:00"
        )
        raise ValueError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment
