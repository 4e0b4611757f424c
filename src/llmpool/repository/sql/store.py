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

from llmpool.errors import InvalidConfigError, describe_row, shorten, visible
from llmpool.models import MAX_LENGTHS, check_argument
from llmpool.repository import DEFAULT_ACTOR, BulkWrites, CommitListeners, Snapshot
from llmpool.repository.rules import (
    as_id_list,
    default_move_conflict,
    default_rule,
    disabled_default_error,
    doing,
    item_label,
    name_taken_error,
    new_config,
    new_configs,
    updated_config,
)
from llmpool.repository.scopes import (
    check_routing,
    no_rows_error,
    routing_audit,
    usable_strategy,
)
from llmpool.repository.sql import repair
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
    parse_routing,
    parse_rows,
    raw_audit_values,
    scopes,
    select_generation,
    select_llms,
    select_routing,
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
            disposed by `close`; an `Engine` you pass stays yours. A `Connection` (Alembic's
            ``op.get_bind()``) is used for every read and write, inside its transaction, which
            the caller commits (see `llmpool.repository.sql.lifecycle`). The schema must be
            migrated (`llmpool.repository.sql.migrate.migrate`), or ``auto_migrate`` set.
        validators: Checks run on every row before it is written; by default the environment
            allowlist (`llmpool.credentials.allowlist.EnvAllowlist.from_env`), so that a row
            referencing ``DATABASE_URL`` is refused when written, not only when built, and the
            provider's accepted config keys (`llmpool.providers.ConfigKeysCheck`), so that a
            misspelt ``temprature`` is refused with a suggestion, and that the provider is
            known (`llmpool.providers.KnownProviderCheck`). ``()`` turns the checks off.
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
        engine: Engine | Connection | str | URL | None = None,
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
            from llmpool.providers import ConfigKeysCheck, KnownProviderCheck

            validators = (EnvAllowlist.from_env(), KnownProviderCheck(), ConfigKeysCheck())
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
        """Return rows in fallback order; invalid rows are skipped and reported (see module)."""
        stmt = select_llms(enabled_only=enabled_only, scope=scope, provider=provider, search=search)
        return self._parser.parse(self._rows(stmt, "list LLMs"))[0]

    def get(self, llm_id: str) -> LLMConfig:
        """Return one row; raise `LLMNotFoundError` when there is none."""
        return one_config(self._rows(select_llms(scope=None, llm_id=llm_id), "read an LLM"), llm_id)

    def get_default(self, scope: str = "global", *, kind: str = "chat") -> LLMConfig:
        """Return the scope's default of ``kind``; raise `NoDefaultLLMError` ("No default LLM
        configured")."""
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
        self.ensure_schema()
        with db_errors(self.engine, "read the change counter"), self.connect() as conn:
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
        self, conn: Connection, scope: str, keep: str, kind: str = "chat"
    ) -> Sequence[Mapping[Any, Any]]:
        # Defaults are per scope and kind (the partial unique index of 0003_kinds).
        stmt = select_llms(scope=scope).where(
            llms.c.is_default.is_(True), llms.c.id != keep, llms.c.kind == kind
        )
        if self._dialect == "postgresql":
            stmt = stmt.with_for_update()
        return conn.execute(stmt).mappings().all()

    def _clear_default(
        self, conn: Connection, scope: str, keep: str, actor: str, kind: str = "chat"
    ) -> None:
        previous_rows, bad = parse_rows(self._other_defaults(conn, scope, keep, kind))
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
        # listeners hear of the write only once it is committed (on a caller's Connection:
        # once its SAVEPOINT is released; see `lifecycle`).
        self.ensure_schema()
        with db_errors(self.engine, what), self.transaction() as conn:
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
        with self._write(what, "add_many" if numbered else "add") as conn:
            return [
                self._insert_in(conn, what, config, item_label(config, index, numbered), actor)
                for index, config in enumerate(configs)
            ]

    def _insert_in(
        self, conn: Connection, what: _Doing, config: LLMConfig, label: str, actor: str
    ) -> LLMConfig:
        what.text = doing("create", label)
        # Checked first so that the refusal names the row that has the name (not the refused
        # row's generated id); the unique index still decides a race.
        holder = conn.execute(
            sa.select(llms.c.id, llms.c.name).where(
                llms.c.scope == config.scope, llms.c.name == config.name
            )
        ).first()
        if holder is not None:
            raise name_taken_error(label, describe_row(holder.name, str(holder.id)), config.scope)
        if config.is_default:
            self._clear_default(conn, config.scope, config.id, actor, config.kind)
        row = (
            conn.execute(
                llms.insert().values(db_values(config, self._dialect)).returning(*llms.columns)
            )
            .mappings()
            .one()
        )
        stored = one_config([row], config.id)
        self._audit(conn, actor=actor, action="create", before=None, after=stored)
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
            return self._update_in(conn, what, llm_id, changes, actor)

    def _update_in(
        self, conn: Connection, what: _Doing, llm_id: str, changes: Mapping[str, Any], actor: str
    ) -> LLMConfig:
        try:
            current = self._locked(conn, llm_id)
        except InvalidConfigError as error:  # an invalid row (raw SQL): the repair path
            return self._repair_in(conn, what, llm_id, changes, actor, error)
        what.text = doing("update", current.describe())
        target = updated_config(current, changes, self.validators)
        rule = default_rule(current, target, changes)
        if rule == "take":
            self._clear_default(conn, target.scope, current.id, actor, target.kind)
        elif rule == "check":
            holders = self._other_defaults(conn, target.scope, current.id, target.kind)
            if holders:
                holder = describe_row(holders[0]["name"], str(holders[0]["id"]))
                raise default_move_conflict(current, target.scope, holder, target.kind)
        after = self._write_update(conn, current, changes, target)
        self._audit(conn, actor=actor, action="update", before=current, after=after)
        return after

    def _repair_in(
        self,
        conn: Connection,
        what: _Doing,
        llm_id: str,
        changes: Mapping[str, Any],
        actor: str,
        error: InvalidConfigError,
    ) -> LLMConfig:
        row = repair.locked_raw(conn, llm_id, self._dialect)
        if row is None:  # pragma: no cover - it was there a moment ago, under the same lock
            raise error
        target = repair.repaired(row, changes, self.validators, error)
        what.text = doing("update", describe_row(target.name, target.id))
        if target.is_default:
            self._clear_default(conn, target.scope, target.id, actor, target.kind)
        values = db_values(target, self._dialect)
        for name in ("id", "created_at"):
            values.pop(name)
        values["version"] = llms.c.version + 1
        conn.execute(llms.update().where(llms.c.id == target.id).values(values))
        after = self._locked(conn, target.id)
        repair.raw_audit(
            conn,
            llm_id=after.id,
            actor=actor,
            action="update",
            before=repair.summary(row),
            after=after,
            dialect=self._dialect,
        )
        return after

    def _bulk(self, llm_ids: str | Sequence[str], action: str, actor: str) -> list[LLMConfig]:
        ids = as_id_list(llm_ids)
        results: list[LLMConfig] = []
        what = _Doing(doing(action, f"{len(ids)} LLM(s)"))
        with self._write(what, action) as conn:
            for llm_id in ids:
                results.append(self._bulk_in(conn, what, llm_id, action, actor))
        return results

    def _bulk_in(
        self, conn: Connection, what: _Doing, llm_id: str, action: str, actor: str
    ) -> LLMConfig:
        try:
            current = self._locked(conn, llm_id)
        except InvalidConfigError as error:  # an invalid row: deleted or disabled as stored
            return self._bulk_raw(conn, what, llm_id, action, actor, error)
        what.text = doing(action, current.describe())
        if action == "delete":
            conn.execute(llms.delete().where(llms.c.id == current.id))
            self._audit(conn, actor=actor, action=action, before=current, after=None)
            return current
        after = self._write_update(conn, current, {"enabled": action == "enable"})
        self._audit(conn, actor=actor, action=action, before=current, after=after)
        return after

    def _bulk_raw(
        self,
        conn: Connection,
        what: _Doing,
        llm_id: str,
        action: str,
        actor: str,
        error: InvalidConfigError,
    ) -> LLMConfig:
        row = repair.locked_raw(conn, llm_id, self._dialect)
        if row is None:  # pragma: no cover - it was there a moment ago, under the same lock
            raise error
        before = repair.summary(row)
        what.text = doing(action, describe_row(error.llm_name, str(row["id"])))
        after: dict[str, Any] | None = None
        if action == "delete":
            conn.execute(llms.delete().where(llms.c.id == row["id"]))
        elif action == "disable":
            after = repair.summary(repair.disable_raw(conn, str(row["id"]), self._dialect))
        else:
            raise repair.refusal(action, row, error)
        repair.raw_audit(
            conn,
            llm_id=str(row["id"]),
            actor=actor,
            action=action,
            before=before,
            after=after,
            dialect=self._dialect,
        )
        # The row as stored, secrets hidden: it is invalid, so it is returned unvalidated.
        shown = after or before
        from llmpool.models import LLMConfig

        return LLMConfig.model_construct(
            **{k: v for k, v in shown.items() if k in LLMConfig.model_fields}
        )

    def set_default(self, llm_id: str, *, actor: str = DEFAULT_ACTOR) -> LLMConfig:
        """Make the row its scope's default, clearing the others in the same transaction.

        Raises:
            LLMNotFoundError: No such row.
            InvalidConfigError: The row fails validation (written by raw SQL), or is disabled
                (field ``enabled``); the message says what is wrong and the command that fixes
                it.
            ConflictError: A concurrent `set_default` on the same scope won the race.
        """
        what = _Doing(doing("set_default", f"LLM id {llm_id}"))
        with self._write(what, "set_default") as conn:
            try:
                current = self._locked(conn, llm_id)
            except InvalidConfigError as error:  # an invalid row: say how to repair it first
                row = repair.locked_raw(conn, llm_id, self._dialect)
                if row is None:  # pragma: no cover - it was there a moment ago
                    raise
                raise repair.refusal("set_default", row, error) from None
            what.text = doing("set_default", current.describe())
            if not current.enabled:
                raise disabled_default_error(current)
            self._clear_default(conn, current.scope, current.id, actor, current.kind)
            after = self._write_update(conn, current, {"is_default": True})
            self._audit(conn, actor=actor, action="set_default", before=current, after=after)
        return after

    # -- routing (llm_scopes, migration 0002) ---------------------------------------------------

    def get_routing(self, scope: str = "global") -> str:
        """Return how ``scope`` routes its calls (``"priority"`` when never set).

        Raises:
            ArgumentTooLongError: ``scope`` is longer than any scope could be.
        """
        check_argument("scope", scope, MAX_LENGTHS["scope"])
        stmt = sa.select(scopes.c.routing).where(scopes.c.scope == scope)
        rows = self._rows(stmt, f"read the routing of scope {shorten(visible(scope))!r}")
        return usable_strategy(scope, rows[0]["routing"]) if rows else "priority"

    def scope_routing(self) -> dict[str, str]:
        """Return every scope's routing as stored (``llm_scopes``), an invalid one included."""
        rows = self._rows(select_routing(), "read the scopes' routing")
        return dict(parse_routing(next(iter(rows[0].values()))))

    def set_routing(self, scope: str, strategy: str, *, actor: str = DEFAULT_ACTOR) -> str:
        """Set how ``scope`` routes its calls: one transaction with its audit entry.

        Every running pool on the table switches at once (NOTIFY) or at its next poll.

        Args:
            scope: The scope; it must have rows, unless ``strategy`` is ``priority``.
            strategy: ``priority``, ``weighted``, ``latency`` or ``least_busy``.
            actor: Recorded in the audit log.

        Returns:
            The strategy now in force.

        Raises:
            InvalidConfigError: An unknown strategy (field ``routing``); an empty scope, one
                holding a control character, or one without rows (field ``scope``).
        """
        scope, strategy = check_routing(scope, strategy)
        what = _Doing(f"set the routing of scope {shorten(scope)!r}")
        with self._write(what, "set_routing") as conn:
            self._routing_in(conn, scope, strategy, actor)
        return strategy

    def _routing_in(self, conn: Connection, scope: str, strategy: str, actor: str) -> None:
        # Upsert the scope's strategy and write its audit entry, in the caller's transaction.
        if strategy != "priority":
            rows = sa.select(llms.c.id).where(llms.c.scope == scope).limit(1)
            if conn.execute(rows).first() is None:
                raise no_rows_error(scope, strategy)
        found = conn.execute(
            sa.select(scopes.c.routing).where(scopes.c.scope == scope)
        ).scalar_one_or_none()
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(scopes).values(scope=scope, routing=strategy)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["scope"], set_={"routing": strategy})
        )
        llm_id, before, after = routing_audit(scope, found or "priority", strategy)
        conn.execute(
            audit.insert().values(
                raw_audit_values(
                    llm_id=llm_id,
                    actor=actor,
                    action="set_routing",
                    before=before,
                    after=after,
                    dialect=self._dialect,
                )
            )
        )

    def apply_changes(
        self,
        *,
        add: Sequence[Mapping[str, Any]] = (),
        update: Sequence[tuple[str, Mapping[str, Any]]] = (),
        delete: Sequence[str] = (),
        routing: Mapping[str, str] | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> list[LLMConfig]:
        """Delete, update and add rows in one transaction, all or none (see `declarative`).

        Deletes go first (a removed row frees its name), then updates in the order given,
        then inserts, then the scopes' strategies (``routing``: scope -> strategy); each row
        changed and each strategy set gets its audit entry. When anything is refused, nothing
        is written and no audit entry is kept.

        Returns:
            The rows updated and added, in that order.
        """
        configs = new_configs(add, self.validators, uuid_ids=self._dialect == "postgresql")
        strategies = [check_routing(scope, strategy) for scope, strategy in (routing or {}).items()]
        what = _Doing("apply changes")
        with self._write(what, "apply") as conn:
            for llm_id in delete:
                self._bulk_in(conn, what, llm_id, "delete", actor)
            changed = [self._update_in(conn, what, i, c, actor) for i, c in update]
            for index, config in enumerate(configs):
                label = item_label(config, index, True)
                changed.append(self._insert_in(conn, what, config, label, actor))
            for scope, strategy in strategies:
                self._routing_in(conn, scope, strategy, actor)
        return changed
