"""llmpool's tables as SQLAlchemy Core (``migrations_sql/`` creates them), the statements the
sync and async stores share, and the reading of rows, where a bad row never breaks the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from llmpool.contracts import log_fields
from llmpool.errors import InvalidConfigError, InvalidDefaultLLMError, describe_row, shorten
from llmpool.models import (
    MAX_LENGTHS,
    MAX_SEARCH_LENGTH,
    AuditEntry,
    BadRow,
    LLMConfig,
    check_argument,
)
from llmpool.repository import Snapshot, no_default_error, not_found_error, sort_key
from llmpool.repository.quotas import parse_quotas

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

logger = logging.getLogger("llmpool.repository")


class _Portable(sa.types.TypeDecorator[Any]):
    """``impl``, or on PostgreSQL the type ``postgresql`` names (its dialect imported late)."""

    postgresql: tuple[str, dict[str, Any]]

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name != "postgresql":
            return self.impl_instance
        from sqlalchemy.dialects import postgresql

        name, options = self.postgresql
        return dialect.type_descriptor(getattr(postgresql, name)(**options))


class _Json(_Portable):
    """JSON: TEXT on SQLite, read as text so that one malformed row is a bad row instead of a
    failed query; jsonb on PostgreSQL, which validates on write."""

    impl, cache_ok, postgresql = sa.Text, True, ("JSONB", {})


class _Id(_Portable):
    impl, cache_ok, postgresql = sa.String(36), True, ("UUID", {"as_uuid": False})


_JSON = _Json()
_ID = _Id()
_TIME = sa.DateTime(timezone=True)

metadata = sa.MetaData()

llms = sa.Table(
    "llms",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("provider", sa.String(100)),
    sa.Column("model_name", sa.String(200)),
    sa.Column("scope", sa.String(100)),
    sa.Column("priority", sa.Integer),
    sa.Column("enabled", sa.Boolean),
    sa.Column("is_default", sa.Boolean),
    sa.Column("auth_meta", _JSON),
    sa.Column("config", _JSON),
    sa.Column("created_at", _TIME),
    sa.Column("updated_at", _TIME),
    sa.Column("version", sa.Integer),
    sa.Column("kind", sa.String(20)),
    sa.Column("space", sa.String(200)),
    sa.Column("weight", sa.Integer),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
)

#: How each scope routes its calls (migration 0002), and its experiment (0009).
scopes = sa.Table(
    "llm_scopes",
    metadata,
    sa.Column("scope", sa.String(100), primary_key=True),
    sa.Column("routing", sa.String(32)),
    sa.Column("experiment", _JSON),
)

#: Budgets and rate limits per row, scope, provider or tag value (migration 0008).
quotas = sa.Table(
    "llm_quotas",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("target", sa.String(200), primary_key=True),
    sa.Column("budget", sa.Float),
    sa.Column("period", sa.String(8)),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("created_at", _TIME),
    sa.Column("updated_at", _TIME),
)

#: The length of each vector space's vectors (migration 0005): the first answer's wins.
spaces = sa.Table(
    "llm_spaces",
    metadata,
    sa.Column("space", sa.String(300), primary_key=True),
    sa.Column("dimensions", sa.Integer),
    sa.Column("llm_id", sa.String(64)),
)

audit = sa.Table(
    "llm_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("llm_id", sa.String(64)),
    sa.Column("actor", sa.String(200)),
    sa.Column("action", sa.String(32)),
    sa.Column("before", _JSON),
    sa.Column("after", _JSON),
    sa.Column("at", _TIME),
)

state = sa.Table(
    "llmpool_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger),
)

#: The columns of `llms`, in contract order.
COLUMNS = tuple(column.name for column in llms.columns)

_ORDER = (llms.c.priority, llms.c.name, llms.c.id)

#: The longest error text a `BadRow` (and its log record) carries.
MAX_BAD_ROW_ERROR = 1000


def _read_column(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    # The id and JSON as text (`RowParser` parses a row version once); timestamps and booleans
    # unconverted: on SQLite one ``created_at = 'yesterday'`` would break every read.
    if column.name in ("id", "auth_meta", "config"):
        return sa.cast(column, sa.Text).label(column.name)
    if column.name in ("created_at", "updated_at", "enabled", "is_default"):
        return sa.type_coerce(column, sa.types.NullType()).label(column.name)
    return column


_READ = [_read_column(column) for column in llms.columns]


def select_llms(
    *,
    enabled_only: bool = False,
    scope: str | None = "global",
    provider: str | None = None,
    search: str | None = None,
    llm_id: str | None = None,
) -> sa.Select[Any]:
    """Return the SELECT of rows matching the filters, in fallback order."""
    check_argument("scope", scope, MAX_LENGTHS["scope"])
    check_argument("provider", provider, MAX_LENGTHS["provider"])
    check_argument("search", search, MAX_SEARCH_LENGTH)
    if llm_id is not None:
        check_argument("llm_id", str(llm_id), MAX_LENGTHS["id"])
    stmt = sa.select(*_READ).order_by(*_ORDER)
    if enabled_only:
        stmt = stmt.where(llms.c.enabled.is_(True))
    if scope is not None:
        stmt = stmt.where(llms.c.scope == scope)
    if provider is not None:
        stmt = stmt.where(llms.c.provider == provider)
    if search:
        found = llms.c.name.icontains(search, autoescape=True)
        stmt = stmt.where(found | llms.c.model_name.icontains(search, autoescape=True))
    if llm_id is not None:
        try:
            canonical = str(uuid.UUID(str(llm_id)))
        except ValueError:
            # Never a row on PostgreSQL (compared as text there, so never an error); on SQLite
            # it still finds a row written by raw SQL with a non-UUID id.
            stmt = stmt.where(sa.cast(llms.c.id, sa.String) == llm_id)
        else:
            # Stored canonical by llmpool; as given by raw SQL on SQLite.
            stmt = stmt.where(llms.c.id.in_(sorted({canonical, llm_id})))
    return stmt


def select_generation() -> sa.Select[Any]:
    """Return the one-value query of the table's change counter."""
    return sa.select(state.c.generation).where(state.c.id == 1)


class _ScopeRouting(FunctionElement[Any]):
    """Every ``llm_scopes`` row as one JSON text, ``[[scope, routing, experiment], ...]`` (on
    SQLite a value that is not text, or an experiment that is not JSON, reads as ``null``)."""

    type = sa.Text()
    inherit_cache = True


@compiles(_ScopeRouting, "postgresql")
def _scope_routing_postgresql(element: _ScopeRouting, compiler: Any, **kw: Any) -> str:
    c = scopes.c
    pairs = sa.func.json_agg(sa.func.json_build_array(c.scope, c.routing, c.experiment))
    return str(compiler.process(sa.cast(pairs, sa.Text), **kw))


@compiles(_ScopeRouting)
def _scope_routing_sqlite(element: _ScopeRouting, compiler: Any, **kw: Any) -> str:
    def text(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        return sa.case((sa.func.typeof(column) == "text", column))

    c = scopes.c
    experiment = sa.case((sa.func.json_valid(c.experiment), sa.func.json(c.experiment)))
    pairs = sa.func.json_array(text(c.scope), text(c.routing), experiment)
    return str(compiler.process(sa.func.json_group_array(pairs), **kw))


class _Quotas(FunctionElement[Any]):
    """Every ``llm_quotas`` row as one JSON text, ``[[kind, target, budget, period, rpm, tpm],
    ...]``, as `llmpool.repository.quotas.parse_quotas` reads it."""

    type = sa.Text()
    inherit_cache = True


_QUOTA_COLUMNS = ("kind", "target", "budget", "period", "rpm", "tpm")


@compiles(_Quotas, "postgresql")
def _quotas_postgresql(element: _Quotas, compiler: Any, **kw: Any) -> str:
    items = sa.func.json_build_array(*(quotas.c[name] for name in _QUOTA_COLUMNS))
    return str(compiler.process(sa.cast(sa.func.json_agg(items), sa.Text), **kw))


@compiles(_Quotas)
def _quotas_sqlite(element: _Quotas, compiler: Any, **kw: Any) -> str:
    items = sa.func.json_array(*(quotas.c[name] for name in _QUOTA_COLUMNS))
    return str(compiler.process(sa.func.json_group_array(items), **kw))


def select_quotas() -> sa.Select[Any]:
    """Return the one-value query of every quota, as `parse_quotas` reads it."""
    return sa.select(_Quotas()).select_from(quotas)


def select_routing() -> sa.Select[Any]:
    """Return the one-value query of every scope's routing, as `parse_routing` reads it."""
    return sa.select(_ScopeRouting()).select_from(scopes)


def select_snapshot() -> sa.Select[Any]:
    """Return one query for the generation, every scope's routing, every quota and every row."""
    routing = select_routing().scalar_subquery().label("scope_routing")
    limits = select_quotas().scalar_subquery().label("quotas")
    return (
        sa.select(state.c.generation, routing, limits, *_READ)
        .select_from(state.outerjoin(llms, sa.true()))
        .where(state.c.id == 1)
        .order_by(*_ORDER)
    )


def row_mapping(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Return a row of `llms` for `LLMConfig.from_row`, timestamps and booleans read strictly."""
    values = {name: row[name] for name in COLUMNS}
    values["id"] = str(values["id"])
    for field in ("created_at", "updated_at", "enabled", "is_default"):
        value = row[field]
        if field.endswith("_at"):
            # SQLite holds text; no timestamp is longer than 64 characters.
            if isinstance(value, str) and len(value) <= 64:
                with contextlib.suppress(ValueError):
                    value = datetime.fromisoformat(value)
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            if value is None or isinstance(value, datetime):
                values[field] = value
                continue
            expected = "a timestamp"
        else:
            # SQLite's booleans are the integers 0 and 1; the text 'false' is not one.
            if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
                values[field] = bool(value)
                continue
            expected = "a boolean, 0 or 1"
        name = row["name"] if isinstance(row["name"], str) else None
        where = describe_row(name, str(row["id"]))
        msg = f"{where}: field {field!r} is not {expected} ({type(value).__name__})"
        raise InvalidConfigError(msg, field=field)
    return values


class RowParser:
    """Turns rows into configs: each row version (``id, version, updated_at``) is validated
    once, and any exception reading a row makes it a `BadRow`, logged once."""

    def __init__(self) -> None:
        self._validated: dict[str, tuple[Any, LLMConfig]] = {}
        self._reported: dict[str, Any] = {}  # id -> the bad version last logged

    def parse(
        self, rows: Iterable[Mapping[Any, Any]], *, complete: bool = False
    ) -> tuple[list[LLMConfig], list[BadRow]]:
        """Validate rows, reporting bad ones; ``complete``: the whole table (forget the rest)."""
        configs: list[LLMConfig] = []
        bad: list[BadRow] = []
        seen: dict[str, tuple[Any, LLMConfig]] = {}
        ids: set[str] = set()
        for row in rows:
            llm_id = str(row["id"])
            ids.add(llm_id)
            try:
                stamp = (row["version"], row["updated_at"])
                cached = self._validated.get(llm_id)
                if cached is None or cached[0] != stamp:
                    cached = (stamp, LLMConfig.from_row(row_mapping(row)))
            except Exception as error:  # one row, whatever it holds, never stops the others
                bad.append(self._report(row, llm_id, error))
                continue
            configs.append(cached[1])
            seen[llm_id] = self._validated[llm_id] = cached
        if complete:
            self._validated = seen
            self._reported = {k: v for k, v in self._reported.items() if k in ids}
        configs.sort(key=sort_key)
        return configs, bad

    def _report(self, row: Mapping[Any, Any], llm_id: str, error: Exception) -> BadRow:
        name = shorten(row["name"]) if isinstance(row.get("name"), str) else None
        kind = type(error).__name__
        if isinstance(error, InvalidConfigError):
            # llmpool's own messages name the field and never a value.
            text = shorten(str(error), MAX_BAD_ROW_ERROR)
        else:  # anything else may quote the value: say only what failed
            text = f"{describe_row(name, llm_id)} could not be read ({kind})"
        version = row.get("version")
        if llm_id not in self._reported or self._reported[llm_id] != version:
            self._reported[llm_id] = version
            logger.warning(
                "llmpool skipped an invalid row (%s): %s",
                kind,
                text,
                extra=log_fields(
                    "invalid_row",
                    llm_id=shorten(llm_id),
                    llm_name=name,
                    error_class=kind,
                    reason=text,
                ),
            )
        return BadRow(llm_id=llm_id, name=name, error=text)


def one_config(rows: Sequence[Mapping[Any, Any]], llm_id: str) -> LLMConfig:
    """Return the one config of a lookup by id (`LLMNotFoundError`)."""
    if not rows:
        raise not_found_error(llm_id)
    configs, bad = RowParser().parse(rows)
    if bad:
        raise InvalidConfigError(bad[0].error, llm_name=bad[0].name, llm_id=bad[0].llm_id)
    return configs[0]


def default_config(rows: Sequence[Mapping[Any, Any]], scope: str) -> LLMConfig:
    """Return the scope's default from its rows (`NoDefaultLLMError`, `InvalidDefaultLLMError`)."""
    configs, bad = RowParser().parse(rows)
    for config in configs:
        if config.is_default:
            return config
    if bad:
        # There is a default row, but it cannot be used: say which, not "no default".
        row = describe_row(bad[0].name, bad[0].llm_id)
        msg = (
            f"The default LLM of scope {scope!r}, {row}, is invalid and cannot be used: "
            f"{bad[0].error}. Fix the row, or make another row the default"
        )
        raise InvalidDefaultLLMError(msg, llm_name=bad[0].name, llm_id=bad[0].llm_id)
    raise no_default_error(scope)


def snapshot_from_rows(rows: Sequence[Mapping[Any, Any]], parser: RowParser) -> Snapshot:
    """Build a `Snapshot` from the result of `select_snapshot`."""
    configs, bad = parser.parse([row for row in rows if row["id"] is not None], complete=True)
    return Snapshot(
        configs=tuple(configs),
        bad_rows=tuple(bad),
        generation=int(rows[0]["generation"]) if rows else 0,
        routing=parse_routing(rows[0]["scope_routing"] if rows else None),
        experiments=parse_experiments(rows[0]["scope_routing"] if rows else None),
        quotas=parse_quotas(rows[0]["quotas"] if rows else None),
    )


def _scope_rows(text: Any) -> list[list[Any]]:
    # `select_routing`'s JSON text as its rows: [scope, routing, experiment], scope a string.
    if isinstance(text, (str, bytes)):
        with contextlib.suppress(ValueError, RecursionError):
            text = json.loads(text)
    return [
        row
        for row in (text if isinstance(text, list) else ())
        if isinstance(row, list) and len(row) in (2, 3) and isinstance(row[0], str)
    ]


def parse_routing(text: Any) -> dict[str, str]:
    """Return the scopes' routing from `select_routing`'s JSON text (scope -> as stored)."""
    return {
        row[0]: row[1] if isinstance(row[1], str) else "<not text>" for row in _scope_rows(text)
    }


def parse_experiments(text: Any) -> dict[str, Any]:
    """Return the scopes' experiments from `select_routing`'s JSON text (scope -> as stored)."""
    return {row[0]: row[2] for row in _scope_rows(text) if len(row) == 3 and row[2] is not None}


def db_time(value: datetime | None, dialect: str) -> datetime:
    """Return a time (``None``: now; naive: UTC) as the dialect's timestamp columns take it."""
    value = value or datetime.now(timezone.utc)
    value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return value if dialect == "postgresql" else value.astimezone(timezone.utc).replace(tzinfo=None)


def db_values(config: LLMConfig, dialect: str) -> dict[str, Any]:
    """Return the column values to write for a config."""
    values = {name: getattr(config, name) for name in COLUMNS}
    if dialect != "postgresql":
        values["auth_meta"] = json.dumps(config.auth_meta, sort_keys=True)
        values["config"] = json.dumps(config.config, sort_keys=True)
        for name in ("created_at", "updated_at"):
            if values[name] is not None:
                values[name] = db_time(values[name], dialect)
    return values


def audit_values(
    llm_id: str, actor: str, action: str, before: Any, after: Any, dialect: str
) -> dict[str, Any]:
    """Return the values of one audit row (``before``, ``after``: configs, safe dicts or None)."""

    def dump(value: Any) -> Any:
        if value is None:
            return None
        data = value.model_dump(mode="json") if isinstance(value, LLMConfig) else dict(value)
        return data if dialect == "postgresql" else json.dumps(data, sort_keys=True, default=str)

    values = {"llm_id": llm_id, "actor": actor, "action": action, "at": db_time(None, dialect)}
    return {**values, "before": dump(before), "after": dump(after)}


def audit_entry(row: Mapping[Any, Any]) -> AuditEntry:
    """Return an audit row as an `AuditEntry`."""
    before, after, at = row["before"], row["after"], row["at"]
    return AuditEntry(
        id=int(row["id"]),
        llm_id=str(row["llm_id"]),
        actor=row["actor"],
        action=row["action"],
        before=json.loads(before) if isinstance(before, str) else before,
        after=json.loads(after) if isinstance(after, str) else after,
        at=at if at.tzinfo else at.replace(tzinfo=timezone.utc),
    )
