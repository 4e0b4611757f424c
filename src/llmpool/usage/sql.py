"""The ``llm_usage`` table (migration ``0004_usage``) through SQLAlchemy Core, on PostgreSQL and
SQLite: a `llmpool.usage.table.UsageTable` shared by every replica of a service.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.repository.sql.engine import write_transaction
from llmpool.repository.sql.errors import db_errors
from llmpool.usage.report import UsagePart

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from llmpool.usage.table import UsageBucket

__all__ = ["SQLUsageTable", "llm_usage"]

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
)

_COUNTS = ("calls", "errors", "input_tokens", "output_tokens", "cost")
_LABELS = ("scope", "name", "provider", "model_name")


class SQLUsageTable:
    """The ``llm_usage`` table, through an engine (PostgreSQL or SQLite).

    Args:
        engine: The database's engine (not disposed here).
        ensure_schema: Called before each use (e.g. a store's auto-migration).
    """

    def __init__(self, engine: Engine, ensure_schema: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self._ensure_schema = ensure_schema
        self._dialect = engine.dialect.name

    def __repr__(self) -> str:
        from llmpool.repository.sql.url import mask_url

        return f"SQLUsageTable({mask_url(self.engine)!r})"

    def _time(self, epoch: float) -> datetime:
        moment = datetime.fromtimestamp(epoch, timezone.utc)
        # SQLite stores naive UTC text; PostgreSQL a timestamptz.
        return moment if self._dialect == "postgresql" else moment.replace(tzinfo=None)

    def _ready(self) -> None:
        if self._ensure_schema is not None:
            self._ensure_schema()

    def add(self, buckets: Sequence[UsageBucket]) -> None:
        """Add the buckets' counts in one transaction; on any error nothing is added.

        Rows are written in key order, so replicas flushing at once lock them in one order.

        Raises:
            DatabaseError: The write failed (e.g. the table is missing: run ``llmpool
                migrate``); the transaction was rolled back.
        """
        if not buckets:
            return
        self._ready()
        from sqlalchemy.dialects import postgresql, sqlite

        insert: Any = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        values = [
            {
                "bucket_start": self._time(b.minute * 60),
                "llm_id": b.llm_id,
                "scope": b.scope,
                "name": b.name,
                "provider": b.provider,
                "model_name": b.model_name,
                "calls": b.calls,
                "errors": b.errors,
                "input_tokens": b.input_tokens,
                "output_tokens": b.output_tokens,
                "cost": b.cost,
            }
            for b in sorted(buckets, key=lambda b: (b.minute, b.llm_id))
        ]
        stmt = insert(llm_usage)
        table = llm_usage.c
        updates: dict[str, Any] = {
            name: getattr(table, name) + getattr(stmt.excluded, name) for name in _COUNTS
        }
        updates.update({name: getattr(stmt.excluded, name) for name in _LABELS})
        stmt = stmt.on_conflict_do_update(index_elements=["bucket_start", "llm_id"], set_=updates)
        with (
            db_errors(self.engine, "record LLM usage"),
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            conn.execute(stmt, values)

    def spend(self, since: float, llm_ids: Collection[str]) -> dict[str, float]:
        """Return the cost of each row's calls in buckets starting at ``since`` or later.

        Raises:
            DatabaseError: The read failed.
        """
        if not llm_ids:
            return {}
        self._ready()
        c = llm_usage.c
        stmt = (
            sa.select(c.llm_id, sa.func.sum(c.cost))
            .where(c.bucket_start >= self._time(since), c.llm_id.in_(sorted(llm_ids)))
            .group_by(c.llm_id)
        )
        with db_errors(self.engine, "read LLM spend"), self.engine.connect() as conn:
            return {str(row[0]): float(row[1] or 0.0) for row in conn.execute(stmt)}

    def _day(self) -> sa.ColumnElement[str]:
        c = llm_usage.c
        if self._dialect == "postgresql":
            return sa.func.to_char(sa.func.timezone("UTC", c.bucket_start), "YYYY-MM-DD")
        return sa.func.substr(sa.cast(c.bucket_start, sa.Text), 1, 10)

    def parts(
        self, since: float | None, until: float | None, scope: str | None, llm_id: str | None
    ) -> list[UsagePart]:
        """Return the totals per row, UTC day and labels within ``[since, until)``.

        Raises:
            DatabaseError: The read failed.
        """
        self._ready()
        c = llm_usage.c
        day = self._day().label("day")
        keys = [c.llm_id, c.scope, c.name, c.provider, c.model_name, day]
        stmt = sa.select(
            *keys,
            sa.func.max(c.bucket_start).label("last"),
            *(sa.func.sum(getattr(c, name)).label(name) for name in _COUNTS),
        ).group_by(*keys)
        if since is not None:
            stmt = stmt.where(c.bucket_start >= self._time(since))
        if until is not None:
            stmt = stmt.where(c.bucket_start < self._time(until))
        if scope is not None:
            stmt = stmt.where(c.scope == scope)
        if llm_id is not None:
            stmt = stmt.where(c.llm_id == llm_id)
        with db_errors(self.engine, "read LLM usage"), self.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [
            UsagePart(
                llm_id=str(row["llm_id"]),
                scope=row["scope"],
                name=row["name"],
                provider=row["provider"],
                model_name=row["model_name"],
                day=str(row["day"]),
                last=_epoch(row["last"]),
                calls=int(row["calls"] or 0),
                errors=int(row["errors"] or 0),
                input_tokens=int(row["input_tokens"] or 0),
                output_tokens=int(row["output_tokens"] or 0),
                cost=float(row["cost"] or 0.0),
            )
            for row in rows
        ]


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return float(value.timestamp())
    if isinstance(value, str):  # SQLite's max() of the text column
        return float(datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp())
    return 0.0
