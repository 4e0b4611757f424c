"""The ``llm_usage`` table (migrations ``0004_usage``, ``0006_usage_latency``,
``0007_usage_tags``) through SQLAlchemy Core, on PostgreSQL and SQLite: the usage table every
replica of a service adds to; and ``llm_feedback`` (``0009_experiments``), the metrics given
for experiment calls.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.repository.sql.engine import write_transaction
from llmpool.repository.sql.errors import db_errors
from llmpool.repository.sql.url import mask_url
from llmpool.usage.feedback import Feedback, MetricSums
from llmpool.usage.table import COUNTS, HISTOGRAM, LABELS, UsageBucket

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

metadata = sa.MetaData()

llm_usage = sa.Table(
    "llm_usage",
    metadata,
    sa.Column("bucket_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("llm_id", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(100), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("calls", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cost", sa.Float, nullable=False),
    sa.Column("latency_ms_sum", sa.Float, nullable=False),
    *(sa.Column(name, sa.BigInteger, nullable=False) for name in HISTOGRAM),
    sa.Column("tags", sa.String(1400), primary_key=True),
)

#: The leading characters of a bucket's UTC time that name its period, and PostgreSQL's format.
_PERIODS = {"minute": (16, "YYYY-MM-DD HH24:MI"), "hour": (13, "YYYY-MM-DD HH24"),
            "day": (10, "YYYY-MM-DD")}  # fmt: skip


class _Table:
    # A table through an engine, ``ensure_schema`` called before each use; a failure raises
    # `llmpool.errors.DatabaseError` (a failed write writes nothing).

    def __init__(self, engine: Engine, ensure_schema: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._ready = ensure_schema or (lambda: None)
        self._postgres = engine.dialect.name == "postgresql"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({mask_url(self.engine)!r})"

    def _time(self, epoch: float) -> datetime:
        moment = datetime.fromtimestamp(epoch, timezone.utc)
        # SQLite stores naive UTC text; PostgreSQL a timestamptz.
        return moment if self._postgres else moment.replace(tzinfo=None)


class SQLUsageTable(_Table):
    """The ``llm_usage`` table through an engine, ``ensure_schema`` called before each use;
    a failure raises `llmpool.errors.DatabaseError` (a failed `add` adds nothing)."""

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts in one transaction, in key order (replicas lock rows alike)."""
        self._ready()
        from sqlalchemy.dialects import postgresql, sqlite

        stmt: Any = (postgresql.insert if self._postgres else sqlite.insert)(llm_usage)
        updates = {name: llm_usage.c[name] + stmt.excluded[name] for name in COUNTS}
        updates.update({name: stmt.excluded[name] for name in LABELS[1:]})
        key = ["bucket_start", "llm_id", "tags"]
        stmt = stmt.on_conflict_do_update(index_elements=key, set_=updates)
        values = [  # "minute" is no column: left out of the statement
            {**b._asdict(), "bucket_start": self._time(b.minute * 60)}
            for b in sorted(buckets, key=lambda b: (b.minute, b.llm_id, b.tags))
        ]
        with (
            db_errors(self.engine, "record LLM usage"),
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            conn.execute(stmt, values)

    def spend(self, since: float, llm_ids: Collection[str]) -> dict[str, float]:
        """Return the cost of each row's calls in buckets from ``since`` on."""
        self._ready()
        c = llm_usage.c
        stmt = (
            sa.select(c.llm_id, sa.func.sum(c.cost))
            .where(c.bucket_start >= self._time(since), c.llm_id.in_(sorted(llm_ids)))
            .group_by(c.llm_id)
        )
        with db_errors(self.engine, "read LLM spend"), self.engine.connect() as conn:
            return {str(row[0]): float(row[1] or 0.0) for row in conn.execute(stmt)}

    def spend_of(self, kind: str, target: str, since: float) -> float:
        """Return the cost of the calls of a quota's target (``kind``: ``row``, ``scope``,
        ``provider`` or ``tag``, whose target ``name=value`` a call's tags hold) in buckets
        from ``since`` on."""
        self._ready()
        c = llm_usage.c
        stmt = sa.select(sa.func.sum(c.cost)).where(c.bucket_start >= self._time(since))
        if kind == "tag":
            held = sa.literal(",") + c.tags + sa.literal(",")
            stmt = stmt.where(held.contains(f",{target},", autoescape=True))
        else:
            column = {"row": c.llm_id, "scope": c.scope, "provider": c.provider}[kind]
            stmt = stmt.where(column == target)
        with db_errors(self.engine, "read LLM spend"), self.engine.connect() as conn:
            return float(conn.execute(stmt).scalar() or 0.0)

    def parts(
        self,
        since: float | None,
        until: float | None,
        scope: str | None,
        llm_id: str | None,
        *,
        llm: str | None = None,
        per: str = "day",
        tags: Mapping[str, str] | None = None,
    ) -> list[UsageBucket]:
        """Return the sums per row, labels, tag set and UTC ``per`` (minute, hour or day) within
        ``[since, until)``, of ``scope``, ``llm_id``, ``llm`` (a row's id or name) and with
        ``tags`` (every one of these names and values) if given."""
        self._ready()
        c = llm_usage.c
        length, text = _PERIODS[per]
        if self._postgres:
            period = sa.func.to_char(sa.func.timezone("UTC", c.bucket_start), text)
        else:
            period = sa.func.substr(sa.cast(c.bucket_start, sa.Text), 1, length)
        keys = [*(c[name] for name in LABELS), c.tags, period]
        stmt = sa.select(
            sa.func.max(c.bucket_start),
            *keys[:-2],
            *(sa.func.sum(c[name]) for name in COUNTS),
            c.tags,
        ).group_by(*keys)
        if since is not None:
            stmt = stmt.where(c.bucket_start >= self._time(since))
        if until is not None:
            stmt = stmt.where(c.bucket_start < self._time(until))
        if scope is not None:
            stmt = stmt.where(c.scope == scope)
        if llm_id is not None:
            stmt = stmt.where(c.llm_id == llm_id)
        if llm is not None:
            stmt = stmt.where(sa.or_(c.llm_id == llm, c.name == llm))
        held = sa.literal(",") + c.tags + sa.literal(",")
        for name, value in (tags or {}).items():
            stmt = stmt.where(held.contains(f",{name}={value},", autoescape=True))
        with db_errors(self.engine, "read LLM usage"), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        # Each row: the latest bucket_start, the labels, the sums (PostgreSQL's are Decimal),
        # the tags.
        return [
            UsageBucket._make(
                [_minute(r[0]), str(r[1]), *r[2:6]]
                + [float(v) if i in _FLOATS else int(v) for i, v in enumerate(r[6:-1])]
                + [r[-1]]
            )
            for r in rows
        ]


#: The positions in `COUNTS` of the sums that are not whole numbers.
_FLOATS = (COUNTS.index("cost"), COUNTS.index("latency_ms_sum"))


def _minute(value: Any) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite: text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() // 60)


llm_feedback = sa.Table(
    "llm_feedback",
    metadata,
    sa.Column("call_id", sa.String(64), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("scope", sa.String(100), nullable=False),
    sa.Column("arm", sa.String(64), nullable=False),
    sa.Column("llm_id", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class SQLFeedbackTable(_Table):
    """The ``llm_feedback`` table through an engine (`llmpool.usage.feedback`), as
    `SQLUsageTable` reads and writes ``llm_usage``."""

    def add(self, rows: Sequence[Feedback]) -> None:
        """Store ``rows`` in one transaction, each replacing the value of its call and metric."""
        self._ready()
        from sqlalchemy.dialects import postgresql, sqlite

        stmt: Any = (postgresql.insert if self._postgres else sqlite.insert)(llm_feedback)
        kept = ("scope", "arm", "llm_id", "value", "created_at")
        stmt = stmt.on_conflict_do_update(
            index_elements=["call_id", "metric"], set_={n: stmt.excluded[n] for n in kept}
        )
        latest = {(r.call_id, r.metric): r for r in rows}  # one statement updates a key once
        values = [
            {**r._asdict(), "created_at": self._time(r.at)}
            for _, r in sorted(latest.items(), key=lambda item: item[0])
        ]
        with (
            db_errors(self.engine, "record LLM feedback"),
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            conn.execute(stmt, values)

    def sums(self, scope: str, since: float | None, until: float | None) -> list[MetricSums]:
        """Return the feedback of ``scope`` given within ``[since, until)``, summed per arm and
        metric (one query)."""
        self._ready()
        c = llm_feedback.c
        binary = sa.func.min(sa.case((c.value.in_([0.0, 1.0]), 1), else_=0))
        stmt = (
            sa.select(
                c.arm,
                c.metric,
                sa.func.count(),
                sa.func.sum(c.value),
                sa.func.sum(c.value * c.value),
                binary,
            )
            .where(c.scope == scope)
            .group_by(c.arm, c.metric)
            .order_by(c.arm, c.metric)
        )
        if since is not None:
            stmt = stmt.where(c.created_at >= self._time(since))
        if until is not None:
            stmt = stmt.where(c.created_at < self._time(until))
        with db_errors(self.engine, "read LLM feedback"), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            MetricSums(str(r[0]), str(r[1]), int(r[2]), float(r[3]), float(r[4]), bool(r[5]))
            for r in rows
        ]
