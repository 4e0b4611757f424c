"""The `llms` table through SQLAlchemy 2 Core, on PostgreSQL (psycopg 3) and SQLite.

`SQLStore` is the admin API: every write is one transaction that also appends its audit row,
and when any part fails nothing is written; once it is committed, the store's commit listeners
are told. `AsyncSQLRepository` (in ``async_store``) is the async read side; the store makes
one on demand and owns what it made (``lifecycle``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from llmpool.errors import describe_row
from llmpool.repository import DEFAULT_ACTOR, BulkWrites, CommitListeners, Snapshot
from llmpool.repository.rules import (
    as_id_list,
    default_move_conflict,
    default_rule,
    doing,
    item_label,
    new_config,
    new_configs,
    updated_config,
)
from llmpool.repository.sql.engine import write_transaction
from llmpool.repository.sql.errors import db_errors
from llmpool.repository.sql.lifecycle import DatabaseResources
from llmpool.repository.sql.schema import (
    RowParser,
    audit,
    audit_entry,
    audit_values,
    db_values,
    default_config,
    llms,
    one_config,
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
    from llmpool.repository import CommitListener, ConfigValidator

__all__ = ["SQLStore"]


class _Doing:
    """What a write is doing, for its error messages; refined once the row has been read."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self) -> str:
        return self.text


class SQLStore(DatabaseResources, BulkWrites):
    """Rows of the `llms` table, read and written through an `Engine`.

    Args:
        engine: An engine, a URL, or ``None`` for the configured database (see
            `llmpool.repository.sql.url.resolve_database_url`). An engine made here is
            disposed by `close`; an `Engine` you pass stays yours. The schema must be migrated
            (`llmpool.repository.sql.migrate.migrate`), or ``auto_migrate`` set.
        validators: Checks run on every row before it is written; by default the environment
            allowlist (`llmpool.credentials.allowlist.EnvAllowlist.from_env`), so that a row
            referencing ``DATABASE_URL`` is refused when written, not only when built, and the
            provider's accepted config keys (`llmpool.providers.ConfigKeysCheck`), so that a
            misspelt ``temprature`` is refused with a suggestion. ``()`` turns the checks off.
        async_engine: The async engine (or its URL) of `async_reader`; by default one on the
            store's URL when the store made its engine (see `lifecycle`).
        auto_migrate: Apply llmpool's migrations on first use; ``None`` for SQLite only.
        on_commit: Called after every committed write (see `subscribe`).

    Example:
        >>> from llmpool.repository.sql.migrate import migrate
        >>> store = SQLStore("sqlite://")  # doctest: +SKIP
    """

    def __init__(
        self,
        engine: Engine | str | URL | None = None,
        *,
        validators: Sequence[ConfigValidator] | None = None,
        async_engine: AsyncEngine | str | URL | None = None,
        auto_migrate: bool | None = False,
        on_commit: CommitListener | None = None,
    ) -> None:
        super().__init__(engine, async_engine=async_engine, auto_migrate=auto_migrate)
        self._listeners = CommitListeners(() if on_commit is None else (on_commit,))
        if validators is None:
            from llmpool.credentials.allowlist import EnvAllowlist
            from llmpool.providers import ConfigKeysCheck

            validators = (EnvAllowlist.from_env(), ConfigKeysCheck())
        self.validators = tuple(validators)
        self._dialect = self.engine.dialect.name
        self._parser = RowParser()

    def __repr__(self) -> str:
        from llmpool.repository.sql.url import mask_url

        return f"SQLStore({mask_url(self.engine)!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    def subscribe(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener`` with the write's name after every committed write.

        A listener that raises is logged; the write stays committed and returns its result.

        Returns:
            The call that unsubscribes ``listener``.
        """
        return self._listeners.subscribe(listener)

    # -- reads -------------------------------------------------------------------------------

    def _rows(self, stmt: sa.Select[Any], what: str) -> Sequence[Mapping[Any, Any]]:
        self.ensure_schema()
        with db_errors(self.engine, what), self.engine.connect() as conn:
            return conn.execute(stmt).mappings().all()

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
        return one_config(self._rows(select_llms(scope=None, llm_id=llm_id), "read an LLM"), llm_id)

    def get_default(self, scope: str = "global") -> LLMConfig:
        """Return the scope's default; raise `NoDefaultLLMError` ("No default LLM configured")."""
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True))
        return default_config(self._rows(stmt, "read the default LLM"), scope)

    def snapshot(self) -> Snapshot:
        """Return every row of every scope and the generation, read in one query."""
        return snapshot_from_rows(self._rows(select_snapshot(), "read the LLM table"), self._parser)

    def generation(self) -> int:
        """Return the table's change counter."""
        self.ensure_schema()
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
        return one_config(conn.execute(stmt).mappings().all(), llm_id)

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

    def _other_defaults(
        self, conn: Connection, scope: str, keep: str
    ) -> Sequence[Mapping[Any, Any]]:
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True), llms.c.id != keep)
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        return conn.execute(stmt).mappings().all()

    def _clear_default(self, conn: Connection, scope: str, keep: str, actor: str) -> None:
        previous_rows, bad = parse_rows(self._other_defaults(conn, scope, keep))
        for previous in previous_rows:
            after = self._write_update(conn, previous, {"is_default": False})
            self._audit(conn, actor=actor, action="update", before=previous, after=after)
        for row in bad:
            # A broken default (raw SQL) must not block choosing a new one. Its content is not
            # valid, and may hold the secret that made it invalid: audited without before/after.
            conn.execute(llms.update().where(llms.c.id == row.llm_id).values(is_default=False))
            conn.execute(
                audit.insert().values(
                    audit_values(
                        llm_id=row.llm_id,
                        actor=actor,
                        action="update",
                        before=None,
                        after=None,
                        dialect=self._dialect,
                    )
                )
            )

    def _write_update(
        self,
        conn: Connection,
        current: LLMConfig,
        changes: Mapping[str, Any],
        target: LLMConfig | None = None,
    ) -> LLMConfig:
        if target is None:
            target = updated_config(current, changes, self.validators)
        values = db_values(target, self._dialect)
        for name in ("id", "created_at"):
            values.pop(name)
        # Bumped here so RETURNING shows it; the triggers bump it for raw-SQL updates.
        values["version"] = llms.c.version + 1
        row = (
            conn.execute(
                llms.update().where(llms.c.id == current.id).values(values).returning(*llms.columns)
            )
            .mappings()
            .one()
        )
        return one_config([row], current.id)

    @contextmanager
    def _write(self, what: _Doing, action: str) -> Iterator[Connection]:
        # The one commit point: one connection and one transaction per admin call; errors
        # become llmpool errors, naming the row as `what` says once the row is known. The
        # listeners hear of the write only once it is committed.
        self.ensure_schema()
        with (
            db_errors(self.engine, what),
            self.engine.connect() as conn,
            write_transaction(conn),
        ):
            yield conn
        self._listeners.notify(action)

    def add(self, llm: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Insert a row and return it.

        Args:
            llm: Column values; ``id`` (a UUID) is generated when absent; ``auth_meta`` and
                ``config`` may be mappings or JSON text.
            actor: Recorded in the audit log.

        Returns:
            The row as stored.

        Raises:
            InvalidConfigError: A field is invalid (named with the row).
            ConflictError: The name is taken in the scope, or a concurrent default won.
        """
        config = new_config(llm, self.validators, uuid_ids=self._dialect == "postgresql")
        return self._insert([config], actor, numbered=False)[0]

    def add_many(
        self, llms: Sequence[Mapping[str, Any]], *, actor: str = DEFAULT_ACTOR
    ) -> list[LLMConfig]:
        """Insert several rows in one transaction, all or none, and return them.

        Every item is validated before anything is written; the database then checks names,
        ids and defaults as for `add`. A later default of a scope takes over from an earlier
        one, as successive `add` calls would.

        Raises:
            InvalidConfigError: An item is invalid (``item N: ...``); nothing is written.
            ConflictError: An item's name or id is taken (named with ``(item N)``); nothing
                is written.
        """
        configs = new_configs(llms, self.validators, uuid_ids=self._dialect == "postgresql")
        return self._insert(configs, actor, numbered=True)

    def _insert(
        self, configs: Sequence[LLMConfig], actor: str, *, numbered: bool
    ) -> list[LLMConfig]:
        what = _Doing("add LLMs")
        stored: list[LLMConfig] = []
        with self._write(what, "add_many" if numbered else "add") as conn:
            for index, config in enumerate(configs):
                what.text = doing("create", item_label(config, index, numbered))
                if config.is_default:
                    self._clear_default(conn, config.scope, config.id, actor)
                row = (
                    conn.execute(
                        llms.insert()
                        .values(db_values(config, self._dialect))
                        .returning(*llms.columns)
                    )
                    .mappings()
                    .one()
                )
                stored.append(one_config([row], config.id))
                self._audit(conn, actor=actor, action="create", before=None, after=stored[-1])
        return stored

    def update(
        self, llm_id: str, changes: Mapping[str, Any], *, actor: str = DEFAULT_ACTOR
    ) -> LLMConfig:
        """Apply a partial update and return the row after it.

        ``is_default=True`` clears the scope's other default in the same transaction. A default
        row moved to another scope (``{"scope": "b"}``) keeps being a default only when scope
        ``b`` has none: else the update is refused, naming both rows.

        Raises:
            LLMNotFoundError: No such row.
            InvalidConfigError: A field is read-only, unknown or invalid.
            ConflictError: A uniqueness rule was broken or a concurrent write won.
        """
        what = _Doing(doing("update", f"LLM id {llm_id}"))
        with self._write(what, "update") as conn:
            current = self._locked(conn, llm_id)
            what.text = doing("update", current.describe())
            target = updated_config(current, changes, self.validators)
            rule = default_rule(current, target, changes)
            if rule == "take":
                self._clear_default(conn, target.scope, current.id, actor)
            elif rule == "check":
                holders = self._other_defaults(conn, target.scope, current.id)
                if holders:
                    holder = describe_row(holders[0]["name"], str(holders[0]["id"]))
                    raise default_move_conflict(current, target.scope, holder)
            after = self._write_update(conn, current, changes, target)
            self._audit(conn, actor=actor, action="update", before=current, after=after)
        return after

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        ids = as_id_list(llm_ids)
        results: list[LLMConfig] = []
        what = _Doing(doing(action, f"{len(ids)} LLM(s)"))
        with self._write(what, action) as conn:
            for llm_id in ids:
                current = self._locked(conn, llm_id)
                what.text = doing(action, current.describe())
                if action == "delete":
                    conn.execute(llms.delete().where(llms.c.id == current.id))
                    self._audit(conn, actor=actor, action=action, before=current, after=None)
                    results.append(current)
                    continue
                after = self._write_update(conn, current, {"enabled": action == "enable"})
                self._audit(conn, actor=actor, action=action, before=current, after=after)
                results.append(after)
        return results

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others in the same transaction.

        Raises:
            LLMNotFoundError: No such row.
            ConflictError: A concurrent `set_default` on the same scope won the race.
        """
        what = _Doing(doing("set_default", f"LLM id {llm_id}"))
        with self._write(what, "set_default") as conn:
            current = self._locked(conn, llm_id)
            what.text = doing("set_default", current.describe())
            self._clear_default(conn, current.scope, current.id, actor)
            after = self._write_update(conn, current, {"is_default": True})
            self._audit(conn, actor=actor, action="set_default", before=current, after=after)
        return after
