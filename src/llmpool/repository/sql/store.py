"""The `llms` table through SQLAlchemy 2 Core, on PostgreSQL (psycopg 3) and SQLite: reads,
and the primitives of the writes (`llmpool.repository.writes`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.errors import InvalidConfigError, describe_row, shorten
from llmpool.models import LLMConfig
from llmpool.repository import Snapshot
from llmpool.repository.quotas import Quota, check_quota
from llmpool.repository.rules import READ_ONLY_FIELDS, updated_config
from llmpool.repository.sql.errors import db_errors
from llmpool.repository.sql.lifecycle import DatabaseResources
from llmpool.repository.sql.schema import (
    COLUMNS,
    RowParser,
    audit,
    audit_entry,
    audit_values,
    db_time,
    db_values,
    default_config,
    llms,
    one_config,
    parse_experiments,
    parse_routing,
    quotas,
    row_mapping,
    scopes,
    select_generation,
    select_llms,
    select_routing,
    select_snapshot,
    snapshot_from_rows,
    spaces,
)
from llmpool.repository.sql.url import mask_url
from llmpool.repository.stored import safe_fields
from llmpool.repository.writes import Tx, Writes

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.models import AuditEntry
    from llmpool.repository import CommitListener, ConfigValidator


class SQLStore(DatabaseResources, Writes):
    """Rows of the `llms` table, read and written through an `Engine`.

    Args:
        engine: An engine, a URL, ``None`` for the configured database, or a `Connection`
            whose transaction every read and write joins (see `lifecycle`).
        validators: Checks run on every row before it is written; by default the environment
            allowlist, the known providers and their config keys. ``()`` turns them off.
        async_engine: The async engine (or its URL) of `async_reader`.
        auto_migrate: Apply llmpool's migrations on first use; ``None`` for SQLite only.
        on_commit: Called after every committed write (see `subscribe`).

    Example:
        >>> store = SQLStore("sqlite://", auto_migrate=True)
        >>> store.add({"name": "Local", "provider": "fake", "model_name": "echo"}).name
        'Local'
    """

    def __init__(
        self,
        engine: Engine | Connection | str | URL | None = None,
        *,
        validators: Sequence[ConfigValidator] | None = None,
        async_engine: AsyncEngine | str | URL | None = None,
        auto_migrate: bool | None = False,
        on_commit: CommitListener | None = None,
    ) -> None:
        super().__init__(engine, async_engine=async_engine, auto_migrate=auto_migrate)
        if validators is None:
            from llmpool.providers import ConfigKeysCheck, KnownProviderCheck
            from llmpool.providers.allowlist import EnvAllowlist

            validators = (EnvAllowlist.from_env(), KnownProviderCheck(), ConfigKeysCheck())
        Writes.__init__(self, validators, on_commit)
        self._dialect = self.engine.dialect.name
        self._uuid_ids = self._dialect == "postgresql"
        self._parser = RowParser()

    def __repr__(self) -> str:
        return f"SQLStore({mask_url(self.engine)!r})"

    def _rows(self, stmt: sa.Select[Any], what: str) -> Sequence[Mapping[Any, Any]]:
        self.ensure_schema()
        with db_errors(self.engine, what), self.connect() as conn:
            return conn.execute(stmt).mappings().all()

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order; an invalid row is skipped and logged."""
        stmt = select_llms(enabled_only=enabled_only, scope=scope, provider=provider, search=search)
        return self._parser.parse(self._rows(stmt, "list LLMs"))[0]

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row; raise `LLMNotFoundError` when there is none."""
        return one_config(self._rows(select_llms(scope=None, llm_id=llm_id), "read an LLM"), llm_id)

    def get_default(self, scope: str = "global", *, kind: str = "chat") -> LLMConfig:
        """Return the scope's default of ``kind``; raise `NoDefaultLLMError` when there is none."""
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True), llms.c.kind == kind)
        return default_config(self._rows(stmt, "read the default LLM"), scope)

    def snapshot(self) -> Snapshot:
        """Return every row of every scope and the generation, read in one query."""
        return snapshot_from_rows(self._rows(select_snapshot(), "read the LLM table"), self._parser)

    def raw_rows(self, *, scope: str | None = None) -> Sequence[Mapping[Any, Any]]:
        """Return the rows as stored, invalid ones included (see `llmpool.repository.stored`)."""
        return self._rows(select_llms(scope=scope), "read the LLM table")

    def generation(self) -> int:
        """Return the table's change counter."""
        return int(self._rows(select_generation(), "read the change counter")[0]["generation"])

    def audit_log(
        self,
        *,
        llm_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first, filtered by row and time."""
        stmt = sa.select(audit).order_by(audit.c.at.desc(), audit.c.id.desc())
        if llm_id is not None:
            stmt = stmt.where(audit.c.llm_id == llm_id)
        if since is not None:
            stmt = stmt.where(audit.c.at >= db_time(since, self._dialect))
        if until is not None:
            stmt = stmt.where(audit.c.at < db_time(until, self._dialect))
        if limit is not None:
            stmt = stmt.limit(limit)
        return [audit_entry(row) for row in self._rows(stmt, "read the audit log")]

    def scope_routing(self) -> dict[str, str]:
        """Return every scope's routing as stored, an invalid one included."""
        rows = self._rows(select_routing(), "read the scopes' routing")
        return dict(parse_routing(next(iter(rows[0].values()))))

    def scope_experiments(self) -> dict[str, Any]:
        """Return every scope's experiment as stored."""
        rows = self._rows(select_routing(), "read the scopes' experiments")
        return parse_experiments(next(iter(rows[0].values())))

    def list_quotas(self) -> list[Quota]:
        """Return every quota, by kind and target (with when it was set and last changed)."""
        stmt = sa.select(quotas).order_by(quotas.c.kind, quotas.c.target)
        return [_quota(row) for row in self._rows(stmt, "read the quotas")]

    def record_space(self, space: str, dimensions: int, llm_id: str) -> int:
        """Record a vector space's length unless one is; return the one recorded."""
        self.ensure_schema()
        values = {"space": space, "dimensions": dimensions, "llm_id": llm_id}
        stmt = self._upsert(spaces).values(values).on_conflict_do_nothing()
        what = f"record vector space {shorten(space)!r}"
        with db_errors(self.engine, what), self.transaction() as conn:
            conn.execute(stmt)
            found = sa.select(spaces.c.dimensions).where(spaces.c.space == space)
            return int(conn.execute(found).scalar_one())

    def _upsert(self, table: sa.Table) -> Any:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        return insert(table)

    @contextmanager
    def _transaction(self, tx: Tx) -> Iterator[None]:
        # Errors name the row as ``tx.what`` says once the row is known.
        self.ensure_schema()
        with db_errors(self.engine, lambda: tx.what), self.transaction() as conn:
            tx.handle = conn
            yield

    def _locked(self, tx: Tx, stmt: sa.Select[Any]) -> Sequence[Mapping[Any, Any]]:
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        conn: Connection = tx.handle
        return conn.execute(stmt).mappings().all()

    def _find(self, tx: Tx, llm_id: str) -> LLMConfig:
        return one_config(self._locked(tx, select_llms(scope=None, llm_id=llm_id)), llm_id)

    def _name_holder(self, tx: Tx, config: LLMConfig) -> str | None:
        stmt = sa.select(llms.c.id, llms.c.name)
        holder = tx.handle.execute(
            stmt.where(llms.c.scope == config.scope, llms.c.name == config.name)
        ).first()
        return None if holder is None else describe_row(holder.name, str(holder.id))

    def _other_defaults(self, tx: Tx, target: LLMConfig) -> Sequence[Mapping[Any, Any]]:
        # Defaults are per scope and kind (the partial unique index of 0003_kinds).
        stmt = select_llms(scope=target.scope).where(
            llms.c.is_default.is_(True), llms.c.id != target.id, llms.c.kind == target.kind
        )
        return self._locked(tx, stmt)

    def _clear_defaults(self, tx: Tx, target: LLMConfig) -> None:
        previous_rows, bad = RowParser().parse(self._other_defaults(tx, target))
        for previous in previous_rows:
            cleared = updated_config(previous, {"is_default": False}, self.validators)
            self._audit(tx, previous.id, "update", previous, self._update(tx, previous, cleared))
        for row in bad:
            # A broken default (raw SQL) must not block choosing a new one. Its content may hold
            # the secret that made it invalid: audited without before/after.
            tx.handle.execute(llms.update().where(llms.c.id == row.llm_id).values(is_default=False))
            self._audit(tx, row.llm_id, "update", None, None)

    def _insert(self, tx: Tx, config: LLMConfig) -> LLMConfig:
        stmt = llms.insert().values(db_values(config, self._dialect)).returning(*llms.columns)
        return one_config([tx.handle.execute(stmt).mappings().one()], config.id)

    def _update(self, tx: Tx, current: LLMConfig, target: LLMConfig) -> LLMConfig:
        values = db_values(target, self._dialect)
        for name in ("id", "created_at"):
            values.pop(name)
        # Bumped here so RETURNING shows it; the triggers bump it for raw-SQL updates.
        values["version"] = llms.c.version + 1
        stmt = llms.update().where(llms.c.id == current.id).values(values)
        row = tx.handle.execute(stmt.returning(*llms.columns)).mappings().one()
        return one_config([row], current.id)

    def _delete(self, tx: Tx, config: LLMConfig) -> None:
        tx.handle.execute(llms.delete().where(llms.c.id == config.id))

    def _audit(self, tx: Tx, llm_id: str, action: str, before: Any, after: Any) -> None:
        values = audit_values(llm_id, tx.actor, action, before, after, self._dialect)
        tx.handle.execute(audit.insert().values(values))

    def _has_rows(self, tx: Tx, scope: str) -> bool:
        stmt = sa.select(llms.c.id).where(llms.c.scope == scope).limit(1)
        return tx.handle.execute(stmt).first() is not None

    def _set_routing(self, tx: Tx, scope: str, strategy: str) -> str:
        conn: Connection = tx.handle
        stmt = sa.select(scopes.c.routing).where(scopes.c.scope == scope)
        before = conn.execute(stmt).scalar_one_or_none()
        upsert = self._upsert(scopes).values(scope=scope, routing=strategy)
        conn.execute(
            upsert.on_conflict_do_update(index_elements=["scope"], set_={"routing": strategy})
        )
        return before or "priority"

    def _set_experiment(self, tx: Tx, scope: str, definition: Any) -> Any:
        before = self._experiment(tx, scope)
        value = definition if self._dialect == "postgresql" else json.dumps(definition)
        upsert = self._upsert(scopes).values(scope=scope, experiment=value)
        conn: Connection = tx.handle
        conn.execute(
            upsert.on_conflict_do_update(index_elements=["scope"], set_={"experiment": value})
        )
        return before

    def _experiment(self, tx: Tx, scope: str) -> Any:
        stmt = sa.select(scopes.c.experiment).where(scopes.c.scope == scope)
        stored = tx.handle.execute(stmt).scalar_one_or_none()
        return json.loads(stored) if isinstance(stored, str) else stored

    def _row_names(self, tx: Tx, scope: str) -> set[str]:
        stmt = sa.select(llms.c.name).where(llms.c.scope == scope)
        return {str(name) for name in tx.handle.execute(stmt).scalars()}

    def _get_quota(self, tx: Tx, kind: str, target: str) -> Quota | None:
        stmt = sa.select(quotas).where(quotas.c.kind == kind, quotas.c.target == target)
        found = self._locked(tx, stmt)
        return _quota(found[0]) if found else None

    def _put_quota(self, tx: Tx, quota: Quota) -> Quota:
        now = db_time(None, self._dialect)
        values = {name: getattr(quota, name) for name in ("budget", "period", "rpm", "tpm")}
        upsert = self._upsert(quotas).values(
            kind=quota.kind, target=quota.target, created_at=now, updated_at=now, **values
        )
        stmt = upsert.on_conflict_do_update(
            index_elements=["kind", "target"], set_={**values, "updated_at": now}
        )
        return _quota(tx.handle.execute(stmt.returning(*quotas.columns)).mappings().one())

    def _drop_quota(self, tx: Tx, kind: str, target: str) -> None:
        tx.handle.execute(quotas.delete().where(quotas.c.kind == kind, quotas.c.target == target))

    def _repair(
        self,
        tx: Tx,
        llm_id: str,
        changes: Mapping[str, Any],
        action: str,
        error: InvalidConfigError,
    ) -> LLMConfig:
        # A row that fails validation (raw SQL put it there): updated when valid after it,
        # deleted or disabled as stored, refused for enable and set_default naming the command
        # that fixes it; its audit entries hide what may be a secret (`safe_fields`).
        row = dict(self._locked(tx, select_llms(scope=None, llm_id=llm_id))[0])
        before = safe_fields(row)
        if action == "update":
            target = _repaired(row, changes, self.validators, error)
            tx.what = f"update {describe_row(target.name, target.id)}"
            if target.is_default:
                self._clear_defaults(tx, target)
            after = self._update(tx, target, target)
            self._audit(tx, after.id, "update", before, after)
            tx.written.append(after)
            return after
        if action not in ("delete", "disable"):
            verb = {"set_default": "make it the default", "enable": "enable it"}[action]
            msg = (
                f"{error}; it cannot be used as it is. Fix it first (llmpool edit "
                f"{row['id']} --set FIELD=VALUE, or --unset FIELD; llmpool doctor says which), "
                f"then {verb}"
            )
            name = row["name"] if isinstance(row["name"], str) else None
            raise InvalidConfigError(
                msg, llm_name=name, llm_id=str(row["id"]), field=error.field
            ) from None
        tx.what = f"{action} {describe_row(error.llm_name, str(row['id']))}"
        shown: dict[str, Any] | None = None
        if action == "delete":
            tx.handle.execute(llms.delete().where(llms.c.id == row["id"]))
        else:
            stmt = llms.update().where(llms.c.id == row["id"])
            now = db_time(None, self._dialect)
            tx.handle.execute(
                stmt.values(enabled=False, version=llms.c.version + 1, updated_at=now)
            )
            shown = safe_fields(self._locked(tx, select_llms(scope=None, llm_id=llm_id))[0])
        self._audit(tx, str(row["id"]), action, before, shown)
        # The row as stored, secrets hidden: it is invalid, so it is returned unvalidated.
        fields = shown or before
        return LLMConfig.model_construct(
            **{k: v for k, v in fields.items() if k in LLMConfig.model_fields}
        )


def _quota(row: Mapping[str, Any]) -> Quota:
    # A stored quota, checked as a write is (raw SQL may have bypassed the checks).
    fields = {name: row[name] for name in ("budget", "period", "rpm", "tpm")}
    quota = check_quota(row["kind"], row["target"], **fields)
    return replace(
        quota, created_at=_aware(row["created_at"]), updated_at=_aware(row["updated_at"])
    )


def _aware(value: Any) -> datetime | None:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _readable(row: Mapping[str, Any]) -> dict[str, Any]:
    # The stored values, each read as well as it can be; unreadable ones left as stored.
    values = {name: row[name] for name in COLUMNS if name in row}
    values["id"] = str(row["id"])
    with contextlib.suppress(Exception):
        values.update(row_mapping(row))
    for name in ("auth_meta", "config"):
        value = values.get(name)
        if isinstance(value, str):
            with contextlib.suppress(ValueError, RecursionError):
                values[name] = json.loads(value)
    for name in ("created_at", "updated_at"):
        if not isinstance(values.get(name), datetime):
            values[name] = datetime.now(timezone.utc)
    return values


def _repaired(
    row: Mapping[str, Any],
    changes: Mapping[str, Any],
    validators: Sequence[ConfigValidator],
    error: InvalidConfigError,
) -> LLMConfig:
    """Return the invalid stored ``row`` with ``changes`` applied, validated."""
    name = row.get("name") if isinstance(row.get("name"), str) else None
    where = describe_row(name, str(row["id"]))
    values = _readable(row)
    if any(field in READ_ONLY_FIELDS or field not in LLMConfig.FIELDS for field in changes):
        # The ordinary rules word these refusals.
        return updated_config(LLMConfig.model_construct(**values), changes, validators)
    values.update(changes)
    values["updated_at"] = datetime.now(timezone.utc)
    try:
        target = LLMConfig.from_row(values)
    except InvalidConfigError as still:
        if str(still) == str(error):
            msg = (
                f"{error}; this change leaves it so: change {still.field or 'that field'} too "
                f"(`llmpool doctor` shows the command), or delete the row"
            )
        else:
            msg = f"{still} (after this change to {where}, which is invalid as stored)"
        raise InvalidConfigError(
            msg, llm_name=name, llm_id=str(row["id"]), field=still.field
        ) from None
    for validator in validators:
        validator(target)
    return target
