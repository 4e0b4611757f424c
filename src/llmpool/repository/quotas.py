"""Budgets and rate limits on a row, a scope, a provider or a tag's value (``llm_quotas``).

A `Quota` is one row of ``llm_quotas``: its ``kind`` (``row``, ``scope``, ``provider``, ``tag``)
and ``target`` (the row's id, the scope's or provider's name, a tag pair ``name=value``), and
at least one of a ``budget`` (in the rows' prices' currency) per UTC ``period`` (``day`` or
``month``), an ``rpm`` and a ``tpm``. Quotas travel with the snapshot: a change reaches every
running pool as a change to a row does. A write is audited under ``quota:<kind>:<target>``.

Example:
    >>> check_quota("tag", "tenant=acme", budget=50, period="month", rpm=600).key
    'tag:tenant=acme'
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from llmpool.contracts import log_fields
from llmpool.errors import InvalidConfigError, InvalidOptionError, shorten, visible
from llmpool.models import MAX_LENGTHS, check_text
from llmpool.tags import MAX_TAG_VALUE, tags_of

__all__ = [
    "AUDIT_PREFIX",
    "FIELDS",
    "KINDS",
    "PERIODS",
    "Quota",
    "check_quota",
    "parse_quotas",
    "quota_entry",
]

logger = logging.getLogger(__name__)

QuotaKind = Literal["row", "scope", "provider", "tag"]
#: What a quota may be set on, as the ``llm_quotas.kind`` column holds it.
KINDS: tuple[str, ...] = get_args(QuotaKind)
#: A budget's periods (UTC).
PERIODS = ("day", "month")
#: How the audit log's ``llm_id`` of a quota's change starts; no row's id may start so.
AUDIT_PREFIX = "quota:"
#: The widest target: a tag's name, ``=`` and its longest value.
MAX_TARGET = 40 + 1 + MAX_TAG_VALUE
#: A quota's writable fields, as documents and the audit log hold them.
FIELDS = ("kind", "target", "budget", "period", "rpm", "tpm")
#: The largest rpm or tpm (the columns are 32-bit integers).
MAX_RATE = 2**31 - 1


@dataclass(frozen=True)
class Quota:
    """One quota: on ``kind`` ``target``, a ``budget`` per ``period`` and/or ``rpm``/``tpm``."""

    kind: QuotaKind
    target: str
    budget: float | None = None
    period: Literal["day", "month"] | None = None
    rpm: int | None = None
    tpm: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    #: ``<kind>:<target>``: how Redis keys and the audit log name it.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.kind}:{self.target}")

    def describe(self) -> str:
        """Return how messages name it: ``tag 'tenant=acme'``."""
        return f"{self.kind} {shorten(visible(self.target))!r}"

    def limits(self) -> str:
        """Return its limits as one line: ``50 a month, rpm 600``."""
        parts = [f"{self.budget:g} a {self.period}"] if self.budget is not None else []
        parts += [f"{name} {value}" for name, value in (("rpm", self.rpm), ("tpm", self.tpm))
                  if value is not None]  # fmt: skip
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """Return its writable fields as a JSON-ready dict (as `quota_entry` reads them)."""
        data: dict[str, Any] = {"kind": self.kind, "target": self.target}
        for name in ("budget", "period", "rpm", "tpm"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        return data


def _refuse(where: str, field: str, problem: str) -> InvalidConfigError:
    return InvalidConfigError(f"{where}: {field} {problem}", field=field)


def _rate(where: str, field: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_RATE:
        raise _refuse(where, field, f"must be a whole number from 1 to {MAX_RATE}, not {value!r}")
    return int(value)


def check_target(kind: Any, target: Any) -> tuple[QuotaKind, str]:
    """Return ``(kind, target)`` checked and stripped (`InvalidConfigError` naming the field)."""
    where = "Could not set the quota"
    if kind not in KINDS:
        shown = visible(shorten(str(kind), 40))
        raise _refuse(where, "kind", f"must be one of {', '.join(KINDS)}, not {shown!r}")
    if not isinstance(target, str) or not target.strip():
        raise _refuse(where, "target", "must be a non-empty string")
    target = target.strip()
    limit = {"tag": MAX_TARGET, "scope": MAX_LENGTHS["scope"], "row": MAX_LENGTHS["id"]}
    longest = limit.get(kind, MAX_LENGTHS["provider"])
    if len(target) > longest:
        raise _refuse(where, "target", f"is longer than {longest} characters")
    check_text(target, field="target", row=where)
    if kind == "tag":
        name, _, value = target.partition("=")
        try:
            tags_of({name: value})  # a call's tag pair, as calls give them
        except InvalidOptionError:
            raise _refuse(
                where,
                "target",
                f"of a tag quota must be a pair name=value (a lower-case name, a value of at "
                f"most {MAX_TAG_VALUE} characters without ',', '=' or control characters), not "
                f"{visible(shorten(target, 40))!r}",
            ) from None
    return kind, target


def check_quota(
    kind: Any,
    target: Any,
    *,
    budget: Any = None,
    period: Any = None,
    rpm: Any = None,
    tpm: Any = None,
) -> Quota:
    """Return the quota checked, ready to write; `InvalidConfigError` names the field at fault
    (``kind``, ``target``, ``budget``, ``period``, ``rpm``, ``tpm``). A budget's period is
    ``day`` unless given."""
    kind, target = check_target(kind, target)
    where = f"Could not set the quota on {kind} {shorten(visible(target))!r}"
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise _refuse(where, "budget", f"must be a number, not {type(budget).__name__}")
        budget = float(budget)
        if not math.isfinite(budget) or budget <= 0:
            raise _refuse(where, "budget", f"must be a finite number greater than 0, not {budget}")
        period = "day" if period is None else period
        if period not in PERIODS:
            shown = visible(shorten(str(period), 40))
            raise _refuse(where, "period", f'must be "day" or "month" (UTC), not {shown!r}')
    elif period is not None:
        raise _refuse(where, "period", "is the period of a budget: give a budget too")
    rpm, tpm = _rate(where, "rpm", rpm), _rate(where, "tpm", tpm)
    if budget is None and rpm is None and tpm is None:
        raise _refuse(where, "budget", "or rpm or tpm must be set (delete the quota to lift it)")
    return Quota(kind, target, budget, period, rpm, tpm)


def quota_entry(entry: Any, where: str) -> Quota:
    """Return a document's quota entry (``{"kind": "tag", "target": "tenant=acme", "budget":
    50, "period": "month", "rpm": 600}``) checked; errors say ``where`` it is."""
    if not isinstance(entry, Mapping):
        raise InvalidConfigError(f"{where} is not an object", field="quotas")
    for key in entry:
        if key not in FIELDS:
            msg = f"{where}: {shorten(str(key))!r} is not a quota field ({', '.join(FIELDS)})"
            raise InvalidConfigError(msg, field=f"quotas.{shorten(str(key))}")
    try:
        return check_quota(**{name: entry.get(name) for name in FIELDS})
    except InvalidConfigError as error:
        error.args = (f"{where}: {error.args[0]}", *error.args[1:])
        raise


def parse_quotas(text: Any) -> tuple[Quota, ...]:
    """Return the quotas of the snapshot's JSON text (``[[kind, target, budget, period, rpm,
    tpm], ...]``); one that fails its checks (raw SQL wrote it) is left out and logged."""
    if isinstance(text, (str, bytes)):
        try:
            text = json.loads(text)
        except (ValueError, RecursionError):
            text = None
    quotas = []
    for item in text if isinstance(text, list) else ():
        try:
            kind, target, budget, period, rpm, tpm = item
            quotas.append(check_quota(kind, target, budget=budget, period=period, rpm=rpm, tpm=tpm))
        except (InvalidConfigError, TypeError, ValueError) as error:
            reason = shorten(str(error), 200)
            logger.warning(
                "llmpool skipped an invalid quota: %s",
                reason,
                extra=log_fields("invalid_quota", reason=reason),
            )
    return tuple(sorted(quotas, key=lambda q: (q.kind, q.target)))
