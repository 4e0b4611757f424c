"""SQLAlchemy Core descriptions of llmpool's tables, and the statements built on them.

The tables are created by the SQL files in ``migrations_sql/``; these descriptions only let
SQLAlchemy build queries. The statements are shared by the sync and async repositories.

Reads never let one row break the others: a value SQLAlchemy would convert for the whole
result at fetch time (a timestamp, a boolean; SQLite stores whatever raw SQL gives it) is read
as the driver returns it and checked row by row (`row_mapping`), and `RowParser` turns any
failure of one row into a `BadRow` instead of an exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

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

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "COLUMNS",
    "audit",
    "audit_entry",
    "db_values",
    "default_config",
    "llms",
    "one_config",
    "select_generation",
    "select_llms",
    "RowParser",
    "parse_routing",
    "parse_rows",
    "select_routing",
    "select_snapshot",
    "snapshot_from_rows",
    "state",
]

logger = logging.getLogger("llmpool.repository")

# JSON is TEXT on SQLite and read as text, so that one malformed row is reported as a bad row
# instead of breaking the whole query; PostgreSQL has jsonb and validates on write.
_JSON = sa.Text().with_variant(postgresql.JSONB(), "postgresql")
_ID = sa.String(36).with_variant(postgresql.UUID(as_uuid=False), "postgresql")

metadata = sa.MetaData()

llms = sa.Table(
    "llms",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("scope", sa.String(100), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False),
    sa.Column("auth_meta", _JSON, nullable=False),
    sa.Column("config", _JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("space", sa.String(200), nullable=True),
    sa.Column("weight", sa.Integer, nullable=False),
    sa.Column("rpm", sa.Integer, nullable=True),
    sa.Column("tpm", sa.Integer, nullable=True),
)

#: How each scope routes its calls (migration 0002); a scope without a row routes by priority.
scopes = sa.Table(
    "llm_scopes",
    metadata,
    sa.Column("scope", sa.String(100), primary_key=True),
    sa.Column("routing", sa.String(32), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
)

audit = sa.Table(
    "llm_audit",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("llm_id", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("before", _JSON),
    sa.Column("after", _JSON),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)

state = sa.Table(
    "llmpool_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("generation", sa.BigInteger, nullable=False),
)

#: The columns of `llms`, in contract order.
COLUMNS = tuple(column.name for column in llms.columns)

_ORDER = (llms.c.priority, llms.c.name, llms.c.id)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


#: Columns read as the driver returns them, without SQLAlchemy's result processing, which runs
#: on the whole result at fetch: on SQLite, one ``created_at = 'yesterday'`` written by raw SQL
#: would break every read, and the text ``'false'`` in ``enabled`` would read as true.
#: `row_mapping` checks them row by row. (PostgreSQL's driver returns datetimes and booleans.)
RAW_COLUMNS = frozenset({"created_at", "updated_at", "enabled", "is_default"})

#: The longest error text a `BadRow` (and its log record) carries.
MAX_BAD_ROW_ERROR = 1000


def _read_columns() -> list[sa.ColumnElement[Any]]:
    # What reads select: the id and the JSON columns as text. A row version already validated
    # is served from `RowParser`'s cache, so its JSON is never parsed again, and psycopg makes
    # no UUID object only for it to become a string.
    as_text = {"id": sa.String, "auth_meta": sa.Text, "config": sa.Text}
    read: list[sa.ColumnElement[Any]] = []
    for column in llms.columns:
        if column.name in as_text:
            read.append(sa.cast(column, as_text[column.name]).label(column.name))
        elif column.name in RAW_COLUMNS:
            read.append(sa.type_coerce(column, sa.types.NullType()).label(column.name))
        else:
            read.append(column)
    return read


_READ = _read_columns()


def select_llms(
    *,
    enabled_only: bool = False,
    scope: str | None = "global",
    provider: str | None = None,
    search: str | None = None,
    llm_id: str | None = None,
) -> sa.Select[Any]:
    """Return the SELECT of rows matching the filters, in fallback order.

    Raises:
        ArgumentTooLongError: A text filter is longer than any row could hold.
    """
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
        pattern = f"%{_escape_like(search)}%"
        stmt = stmt.where(
            sa.or_(
                llms.c.name.ilike(pattern, escape="\\"),
                llms.c.model_name.ilike(pattern, escape="\\"),
            )
        )
    if llm_id is not None:
        try:
            canonical = str(uuid.UUID(str(llm_id)))
        except ValueError:
            # Never a row on PostgreSQL (and compared as text there, so never an error); on
            # SQLite it still finds a row written by raw SQL with a non-UUID id.
            stmt = stmt.where(sa.cast(llms.c.id, sa.String) == llm_id)
        else:
            # Stored canonical by llmpool; as given by raw SQL on SQLite.
            stmt = stmt.where(llms.c.id.in_(sorted({canonical, llm_id})))
    return stmt


def select_generation() -> sa.Select[Any]:
    """Return the one-value query of the table's change counter."""
    return sa.select(state.c.generation).where(state.c.id == 1)


class _ScopeRouting(FunctionElement[Any]):
    """Every ``llm_scopes`` row as one JSON text, ``[[scope, routing], ...]``.

    JSON escapes whatever a value holds, so no scope name can pose as another scope's routing
    (as it could in text joined with separators). On SQLite a value that is not text (a BLOB or
    a number written by raw SQL) reads as ``null`` instead of failing the whole snapshot.
    """

    type = sa.Text()
    inherit_cache = True


@compiles(_ScopeRouting, "postgresql")
def _scope_routing_postgresql(element: _ScopeRouting, compiler: Any, **kw: Any) -> str:
    pairs = sa.func.json_agg(sa.func.json_build_array(scopes.c.scope, scopes.c.routing))
    return str(compiler.process(sa.cast(pairs, sa.Text), **kw))


@compiles(_ScopeRouting)
def _scope_routing_sqlite(element: _ScopeRouting, compiler: Any, **kw: Any) -> str:
    def text(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        return sa.case((sa.func.typeof(column) == "text", column))

    pairs = sa.func.json_array(text(scopes.c.scope), text(scopes.c.routing))
    return str(compiler.process(sa.func.json_group_array(pairs), **kw))


def select_routing() -> sa.Select[Any]:
    """Return the one-value query of every scope's routing, as `parse_routing` reads it."""
    return sa.select(_ScopeRouting()).select_from(scopes)


def select_snapshot() -> sa.Select[Any]:
    """Return one query for the generation, every scope's routing and every row (one row of
    NULLs when empty)."""
    routing = select_routing().scalar_subquery().label("scope_routing")
    return (
        sa.select(state.c.generation, routing, *_READ)
        .select_from(state.outerjoin(llms, sa.true()))
        .where(state.c.id == 1)
        .order_by(*_ORDER)
    )


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _where(row: Mapping[Any, Any]) -> str:
    name = row["name"]
    return describe_row(name if isinstance(name, str) else None, str(row["id"]))


def _timestamp(row: Mapping[Any, Any], field: str) -> datetime | None:
    value = row[field]
    # SQLite holds the text SQLAlchemy (or CURRENT_TIMESTAMP) wrote; SQLAlchemy reads it with
    # fromisoformat too. No timestamp is longer than 64 characters.
    if isinstance(value, str) and len(value) <= 64:
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    msg = f"{_where(row)}: field {field!r} is not a timestamp ({type(value).__name__})"
    raise InvalidConfigError(msg, field=field)


def _flag(row: Mapping[Any, Any], field: str) -> bool:
    value = row[field]
    if isinstance(value, bool):
        return value
    # SQLite's booleans are the integers 0 and 1; the text 'false' is not one.
    if type(value) is int and value in (0, 1):
        return bool(value)
    msg = f"{_where(row)}: field {field!r} is not a boolean, 0 or 1 ({type(value).__name__})"
    raise InvalidConfigError(msg, field=field)


def row_mapping(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Return a row of `llms` as a plain dict ready for `LLMConfig.from_row`.

    Timestamps and booleans are read strictly, row by row (see `RAW_COLUMNS`).

    Raises:
        InvalidConfigError: A timestamp or a boolean holds something else; names the field.
    """
    values = {name: row[name] for name in COLUMNS}
    values["id"] = str(values["id"])
    for field in ("created_at", "updated_at"):
        values[field] = _timestamp(row, field)
    for field in ("enabled", "is_default"):
        values[field] = _flag(row, field)
    return values


class RowParser:
    """Turns rows into configs: each row version is validated once, each bad row logged once.

    Rows change rarely and are read often, so a row whose ``(id, version, updated_at)`` was
    already validated is served from the previous result. The triggers bump ``version`` on
    every UPDATE, raw SQL included, so a changed row is always validated again.

    Whatever one row holds, it fails alone: any exception while reading it (a validation error,
    a ``RecursionError``, a ``TypeError``) makes it a `BadRow`, and every other row is served.
    """

    def __init__(self) -> None:
        self._validated: dict[str, tuple[Any, LLMConfig]] = {}
        # id -> the version last reported: one warning per bad row version.
        self._reported: dict[str, Any] = {}

    def parse(
        self, rows: Iterable[Mapping[Any, Any]], *, complete: bool = False
    ) -> tuple[list[LLMConfig], list[BadRow]]:
        """Validate rows; report the bad ones by name and id instead of failing the others.

        Args:
            rows: Rows of `llms`.
            complete: The rows are the whole table (forget rows no longer in it).
        """
        configs: list[LLMConfig] = []
        bad: list[BadRow] = []
        validated = self._validated
        seen: dict[str, tuple[Any, LLMConfig]] = {}
        ids: set[str] = set()
        for row in rows:
            llm_id = str(row["id"])
            ids.add(llm_id)
            try:
                stamp = (row["version"], row["updated_at"])
                cached = validated.get(llm_id)
                if cached is not None and cached[0] == stamp:
                    configs.append(cached[1])
                    seen[llm_id] = cached
                    continue
                config = LLMConfig.from_row(row_mapping(row))
            except Exception as error:  # one row, whatever it holds, never stops the others
                bad.append(self._report(row, llm_id, error))
                continue
            configs.append(config)
            seen[llm_id] = validated[llm_id] = (stamp, config)
        if complete:
            self._validated = seen
            self._reported = {k: v for k, v in self._reported.items() if k in ids}
        configs.sort(key=sort_key)
        return configs, bad

    def _report(self, row: Mapping[Any, Any], llm_id: str, error: Exception) -> BadRow:
        raw_name = row.get("name")
        name = shorten(raw_name) if isinstance(raw_name, str) else None
        kind = type(error).__name__
        if isinstance(error, InvalidConfigError):
            # llmpool's own messages name the field and never a value.
            text = shorten(str(error), MAX_BAD_ROW_ERROR)
        else:  # anything else may quote the value: say only what failed
            text = f"{describe_row(name, llm_id)} could not be read ({kind})"
        version = row.get("version")
        if llm_id not in self._reported or self._reported[llm_id] != version:
            self._reported[llm_id] = version
            from llmpool.observe.fields import log_fields

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


def parse_rows(rows: Iterable[Mapping[Any, Any]]) -> tuple[list[LLMConfig], list[BadRow]]:
    """Validate rows with a one-off `RowParser` (no caching across calls)."""
    return RowParser().parse(rows)


def one_config(rows: Sequence[Mapping[Any, Any]], llm_id: str) -> LLMConfig:
    """Return the one config of a lookup by id (`LLMNotFoundError`; a bad row: its error)."""
    if not rows:
        raise not_found_error(llm_id)
    configs, bad = parse_rows(rows)
    if bad:
        raise InvalidConfigError(bad[0].error, llm_name=bad[0].name, llm_id=bad[0].llm_id)
    return configs[0]


def default_config(rows: Sequence[Mapping[Any, Any]], scope: str) -> LLMConfig:
    """Return the scope's default from its rows (`NoDefaultLLMError`, `InvalidDefaultLLMError`)."""
    configs, bad = parse_rows(rows)
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
    generation = int(rows[0]["generation"]) if rows else 0
    present = [row for row in rows if row["id"] is not None]
    configs, bad = parser.parse(present, complete=True)
    return Snapshot(
        configs=tuple(configs),
        bad_rows=tuple(bad),
        generation=generation,
        read_at=datetime.now(timezone.utc),
        routing=parse_routing(rows[0]["scope_routing"] if rows else None),
    )


def parse_routing(text: Any) -> Mapping[str, str]:
    """Return the scopes' routing from `select_snapshot`'s JSON text (scope -> strategy as
    stored, an unknown one included: `Snapshot.routing_of` serves it by priority)."""
    if isinstance(text, (str, bytes)):
        with contextlib.suppress(ValueError, RecursionError):
            text = json.loads(text)
    if not isinstance(text, list):
        return {}
    routing: dict[str, str] = {}
    for pair in text:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            routing[pair[0]] = pair[1] if isinstance(pair[1], str) else "<not text>"
    return routing


def db_values(config: LLMConfig, dialect: str) -> dict[str, Any]:
    """Return the column values to write for a config."""
    values = {name: getattr(config, name) for name in COLUMNS}
    if dialect != "postgresql":
        values["auth_meta"] = json.dumps(config.auth_meta, sort_keys=True)
        values["config"] = json.dumps(config.config, sort_keys=True)
        for name in ("created_at", "updated_at"):
            if values[name] is not None:
                values[name] = values[name].astimezone(timezone.utc).replace(tzinfo=None)
    return values


def audit_values(
    *,
    llm_id: str,
    actor: str,
    action: str,
    before: LLMConfig | None,
    after: LLMConfig | None,
    dialect: str,
) -> dict[str, Any]:
    """Return the values of one audit row (configs hold references only, never secrets)."""

    def dump(config: LLMConfig | None) -> Any:
        if config is None:
            return None
        data = config.model_dump(mode="json")
        return data if dialect == "postgresql" else json.dumps(data, sort_keys=True)

    now = datetime.now(timezone.utc)
    return {
        "llm_id": llm_id,
        "actor": actor,
        "action": action,
        "before": dump(before),
        "after": dump(after),
        "at": now if dialect == "postgresql" else now.replace(tzinfo=None),
    }


def raw_audit_values(
    *,
    llm_id: str,
    actor: str,
    action: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    dialect: str,
) -> dict[str, Any]:
    """Return the values of one audit row whose before and after are plain JSON objects (a
    scope's routing change)."""

    def dump(value: Mapping[str, Any] | None) -> Any:
        if value is None:
            return None
        return dict(value) if dialect == "postgresql" else json.dumps(dict(value), sort_keys=True)

    now = datetime.now(timezone.utc)
    return {
        "llm_id": llm_id,
        "actor": actor,
        "action": action,
        "before": dump(before),
        "after": dump(after),
        "at": now if dialect == "postgresql" else now.replace(tzinfo=None),
    }


def audit_entry(row: Mapping[Any, Any]) -> AuditEntry:
    """Return an audit row as an `AuditEntry`."""

    def load(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    return AuditEntry(
        id=int(row["id"]),
        llm_id=str(row["llm_id"]),
        actor=row["actor"],
        action=row["action"],
        before=load(row["before"]),
        after=load(row["after"]),
        at=_aware(row["at"]),
    )
