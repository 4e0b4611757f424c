"""The `llms` table through SQLAlchemy 2 Core, on PostgreSQL (psycopg 3) and SQLite.

`SQLStore` is the admin API: every write is one transaction that also appends its audit row,
and when any part fails nothing is written. `AsyncSQLRepository` is the async read side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.database import create_async_engine, create_engine, db_errors, write_transaction
from llmpool.errors import InvalidConfigError, LLMNotFoundError, NoDefaultLLMError
from llmpool.repository import DEFAULT_ACTOR, Snapshot
from llmpool.repository.changes import as_id_list, new_config, updated_config
from llmpool.repository.schema import (
    RowParser,
    audit,
    audit_entry,
    audit_values,
    db_values,
    llms,
    parse_rows,
    select_generation,
    select_llms,
    select_snapshot,
    snapshot_from_rows,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.models import AuditEntry, LLMConfig
    from llmpool.repository import ConfigValidator

__all__ = ["AsyncSQLRepository", "SQLRepository", "SQLStore"]


def _not_found(llm_id: str) -> LLMNotFoundError:
    return LLMNotFoundError(f"No LLM with id {llm_id!r}")


def _no_default(scope: str) -> NoDefaultLLMError:
    return NoDefaultLLMError(
        f"No default LLM configured for scope {scope!r}: mark one with set_default() "
        "or `llmpool set-default ID`"
    )


def _one(rows: Sequence[Mapping[Any, Any]], llm_id: str) -> LLMConfig:
    if not rows:
        raise _not_found(llm_id)
    configs, bad = parse_rows(rows)
    if bad:
        raise InvalidConfigError(bad[0].error, llm_name=bad[0].name, llm_id=bad[0].llm_id)
    return configs[0]


def _default_of(configs: Sequence[LLMConfig], scope: str) -> LLMConfig:
    for config in configs:
        if config.is_default:
            return config
    raise _no_default(scope)


class SQLStore:
    """Rows of the `llms` table, read and written through an `Engine`.

    Args:
        engine: An engine, a URL, or ``None`` for the configured database (see
            `llmpool.database.resolve_database_url`). The schema must be migrated
            (`llmpool.migrate.migrate`).
        validators: Checks run on every row before it is written, such as the environment
            allowlist.

    Example:
        >>> from llmpool.migrate import migrate
        >>> store = SQLStore("sqlite://")  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine | str | URL | None = None,
        *,
        validators: Sequence[ConfigValidator] = (),
    ) -> None:
        self.engine = create_engine(engine)
        self.validators = tuple(validators)
        self._dialect = self.engine.dialect.name
        self._parser = RowParser()

    def __repr__(self) -> str:
        from llmpool.database import mask_url

        return f"SQLStore({mask_url(self.engine)!r})"

    # -- reads -------------------------------------------------------------------------------

    def _rows(self, stmt: sa.Select[Any], what: str) -> list[Mapping[Any, Any]]:
        with db_errors(self.engine, what), self.engine.connect() as conn:
            return list(conn.execute(stmt).mappings())

    def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order; invalid rows are skipped and reported (see module)."""
        stmt = select_llms(enabled_only=enabled_only, scope=scope, provider=provider, search=search)
        return self._parser.parse(self._rows(stmt, "list LLMs"))[0]

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row; raise `LLMNotFoundError` when there is none."""
        return _one(self._rows(select_llms(scope=None, llm_id=llm_id), "read an LLM"), llm_id)

    def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default; raise `NoDefaultLLMError` ("No default LLM configured")."""
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True))
        return _default_of(parse_rows(self._rows(stmt, "read the default LLM"))[0], scope)

    def snapshot(self) -> Snapshot:
        """Return every row of every scope and the generation, read in one query."""
        return snapshot_from_rows(self._rows(select_snapshot(), "read the LLM table"), self._parser)

    def generation(self) -> int:
        """Return the table's change counter."""
        with db_errors(self.engine, "read the change counter"), self.engine.connect() as conn:
            return int(conn.execute(select_generation()).scalar_one())

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
            stmt = stmt.where(audit.c.at >= self._param_time(since))
        if until is not None:
            stmt = stmt.where(audit.c.at < self._param_time(until))
        if limit is not None:
            stmt = stmt.limit(limit)
        return [audit_entry(row) for row in self._rows(stmt, "read the audit log")]

    def _param_time(self, value: datetime) -> datetime:
        from datetime import timezone

        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if self._dialect != "postgresql":
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    # -- writes ------------------------------------------------------------------------------

    def _locked(self, conn: Connection, llm_id: str) -> LLMConfig:
        stmt = select_llms(scope=None, llm_id=llm_id)
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        return _one(list(conn.execute(stmt).mappings()), llm_id)

    def _audit(
        self,
        conn: Connection,
        *,
        actor: str,
        action: str,
        before: LLMConfig | None,
        after: LLMConfig | None,
    ) -> None:
        llm_id = (after or before).id  # type: ignore[union-attr]
        conn.execute(
            audit.insert().values(
                audit_values(
                    llm_id=llm_id,
                    actor=actor,
                    action=action,
                    before=before,
                    after=after,
                    dialect=self._dialect,
                )
            )
        )

    def _clear_default(self, conn: Connection, scope: str, keep: str, actor: str) -> None:
        stmt = select_llms(scope=scope).where(
            llms.c.is_default.is_(True), sa.cast(llms.c.id, sa.String) != keep
        )
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        for previous in parse_rows(list(conn.execute(stmt).mappings()))[0]:
            after = self._write_update(conn, previous, {"is_default": False})
            self._audit(conn, actor=actor, action="update", before=previous, after=after)

    def _write_update(
        self, conn: Connection, current: LLMConfig, changes: Mapping[str, Any]
    ) -> LLMConfig:
        target = updated_config(current, changes, self.validators)
        values = db_values(target, self._dialect)
        for name in ("id", "created_at"):
            values.pop(name)
        # Bumped here so RETURNING shows it; the triggers bump it for raw-SQL updates.
        values["version"] = llms.c.version + 1
        row = (
            conn.execute(
                llms.update()
                .where(sa.cast(llms.c.id, sa.String) == current.id)
                .values(values)
                .returning(*llms.columns)
            )
            .mappings()
            .one()
        )
        return _one([row], current.id)

    @contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        # One connection and one transaction per admin call; errors become llmpool errors.
        with (
            db_errors(self.engine, what),
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            yield conn

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Insert a row and return it.

        Args:
            llm: Column values; ``id`` is generated when absent; ``auth_meta`` and ``config``
                may be mappings or JSON text.
            actor: Recorded in the audit log.

        Returns:
            The row as stored.

        Raises:
            InvalidConfigError: A field is invalid (named with the row).
            ConflictError: The name is taken in the scope, or a concurrent default won.
        """
        config = new_config(llm, self.validators)
        with self._write(f"add {config.describe()}") as conn:
            if config.is_default:
                self._clear_default(conn, config.scope, config.id, actor)
            row = (
                conn.execute(
                    llms.insert().values(db_values(config, self._dialect)).returning(*llms.columns)
                )
                .mappings()
                .one()
            )
            stored = _one([row], config.id)
            self._audit(conn, actor=actor, action="create", before=None, after=stored)
        return stored

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig:
        """Apply a partial update and return the row after it.

        ``is_default=True`` clears the scope's other default in the same transaction.

        Raises:
            LLMNotFoundError: No such row.
            InvalidConfigError: A field is read-only, unknown or invalid.
            ConflictError: A uniqueness rule was broken or a concurrent write won.
        """
        with self._write(f"update LLM id {llm_id}") as conn:
            current = self._locked(conn, llm_id)
            target = updated_config(current, changes, self.validators)
            if target.is_default and not current.is_default:
                self._clear_default(conn, target.scope, current.id, actor)
            after = self._write_update(conn, current, changes)
            self._audit(conn, actor=actor, action="update", before=current, after=after)
        return after

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        ids = as_id_list(llm_ids)
        results: list[LLMConfig] = []
        with self._write(f"{action} {len(ids)} LLM(s)") as conn:
            for llm_id in ids:
                current = self._locked(conn, llm_id)
                if action == "delete":
                    conn.execute(llms.delete().where(sa.cast(llms.c.id, sa.String) == llm_id))
                    self._audit(conn, actor=actor, action=action, before=current, after=None)
                    results.append(current)
                    continue
                after = self._write_update(conn, current, {"enabled": action == "enable"})
                self._audit(conn, actor=actor, action=action, before=current, after=after)
                results.append(after)
        return results

    def delete(self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR) -> int:
        """Delete one row or many, all or none; return how many were deleted."""
        return len(self._bulk(llm_ids, "delete", actor))

    def enable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Enable one row or many, all or none; return the rows after."""
        return self._bulk(llm_ids, "enable", actor)

    def disable(
        self, llm_ids: str | Sequence[str], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Disable one row or many, all or none; return the rows after."""
        return self._bulk(llm_ids, "disable", actor)

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others in the same transaction.

        Raises:
            LLMNotFoundError: No such row.
            ConflictError: A concurrent `set_default` on the same scope won the race.
        """
        with self._write(f"set the default LLM to id {llm_id}") as conn:
            current = self._locked(conn, llm_id)
            self._clear_default(conn, current.scope, current.id, actor)
            after = self._write_update(conn, current, {"is_default": True})
            self._audit(conn, actor=actor, action="set_default", before=current, after=after)
        return after


#: `SQLStore` satisfies the read protocol too; the name reads better where nothing is written.
SQLRepository = SQLStore


class AsyncSQLRepository:
    """The async read side of the `llms` table (psycopg 3 async, aiosqlite).

    Args:
        engine: An async engine, a URL, or ``None`` for the configured database.

    Example:
        >>> repo = AsyncSQLRepository("sqlite://")  # doctest: +SKIP
        >>> configs = await repo.list_llms()          # doctest: +SKIP
    """

    def __init__(self, engine: AsyncEngine | str | URL | None = None) -> None:
        self.engine = create_async_engine(engine)
        self._parser = RowParser()

    async def _rows(self, stmt: sa.Select[Any], what: str) -> list[Mapping[Any, Any]]:
        with db_errors(self.engine.sync_engine, what):
            async with self.engine.connect() as conn:
                return list((await conn.execute(stmt)).mappings())

    async def list_llms(
        self,
        *,
        enabled_only: bool = False,
        scope: str | None = "global",
        provider: str | None = None,
        search: str | None = None,
    ) -> list[LLMConfig]:
        """Return rows in fallback order, as `SQLStore.list_llms`."""
        stmt = select_llms(enabled_only=enabled_only, scope=scope, provider=provider, search=search)
        return self._parser.parse(await self._rows(stmt, "list LLMs"))[0]

    async def get(self, llm_id: str) -> LLMConfig:
        """Return one row, as `SQLStore.get`."""
        rows = await self._rows(select_llms(scope=None, llm_id=llm_id), "read an LLM")
        return _one(rows, llm_id)

    async def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default, as `SQLStore.get_default`."""
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True))
        rows = await self._rows(stmt, "read the default LLM")
        return _default_of(parse_rows(rows)[0], scope)

    async def snapshot(self) -> Snapshot:
        """Return every row and the generation, as `SQLStore.snapshot`."""
        return snapshot_from_rows(
            await self._rows(select_snapshot(), "read the LLM table"), self._parser
        )

    async def generation(self) -> int:
        """Return the table's change counter."""
        rows = await self._rows(select_generation(), "read the change counter")
        return int(next(iter(rows[0].values())))

    async def aclose(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()
