"""llmpool's tables in an application whose schema Alembic manages.

llmpool's schema is plain SQL shipped in the wheel (``migrations_sql/<dialect>/NNNN_name.sql``,
each with a reverse script in ``down/``). An application on Alembic runs it from one of its own
revisions, on the revision's connection and inside its transaction, and keeps autogenerate
away from the tables it did not declare:

``env.py``::

    import llmpool.alembic

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=llmpool.alembic.include_object,
    )

a revision::

    from alembic import op
    import llmpool.alembic

    def upgrade() -> None:
        llmpool.alembic.upgrade(op, to=4)       # llmpool's migrations 0001..0004

    def downgrade() -> None:
        llmpool.alembic.downgrade(op)           # everything upgrade created, in reverse

Nothing here begins, commits or rolls back a transaction: every change is part of the
revision's, with ``transaction_per_migration`` true or false, on PostgreSQL and SQLite, so a
failing revision leaves nothing of llmpool behind. A later revision can read and write rows on
the same connection (`store`, `seed_starter_rows`). Alembic itself is not imported: this module
only needs the ``op`` a revision gets. Offline mode (``alembic upgrade --sql``) is not supported:
what to apply depends on what ``llmpool_migrations`` records; ``llmpool migrate`` or these
functions need a live connection.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from llmpool.models import LLMConfig
    from llmpool.repository.sql.store import SQLStore

__all__ = [
    "downgrade",
    "include_name",
    "include_object",
    "seed_starter_rows",
    "store",
    "tables",
    "upgrade",
]

_DIALECTS = ("postgresql", "sqlite")
_NAME = r"\"?([A-Za-z_][A-Za-z0-9_]*)\"?"
# What a migration does to the set of tables, statement by statement.
_TABLE_CHANGE = re.compile(
    rf"^\s*(?:CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}"
    rf"|DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}"
    rf"|ALTER\s+TABLE\s+{_NAME}\s+RENAME\s+TO\s+{_NAME})",
    re.IGNORECASE | re.MULTILINE,
)


class Operations(Protocol):
    """What llmpool needs of Alembic's ``op``: the revision's connection."""

    def get_bind(self) -> Connection:
        """Return the connection the revision runs on."""


@lru_cache(maxsize=1)
def tables() -> frozenset[str]:
    """Return the names of every table llmpool's migrations create, and ``llmpool_migrations``.

    Read from the shipped migration files of every dialect, in order (``CREATE TABLE``, then
    ``DROP TABLE`` and ``ALTER TABLE ... RENAME TO``), so a table a later migration adds is
    included without a change here, and a table rebuilt under a temporary name is not.

    Example:
        >>> {"llms", "llm_audit", "llmpool_state", "llmpool_migrations"} <= tables()
        True
    """
    from llmpool.repository.sql.migrate import load_migrations

    names = {"llmpool_migrations"}
    for dialect in _DIALECTS:
        present: set[str] = set()
        for migration in load_migrations(dialect):
            for created, dropped, old, new in _TABLE_CHANGE.findall(migration.sql):
                if created:
                    present.add(created.lower())
                elif dropped:
                    present.discard(dropped.lower())
                else:
                    present.discard(old.lower())
                    present.add(new.lower())
        names |= present
    return frozenset(names)


def _table_of(obj: Any, name: str | None, type_: str) -> str | None:
    if type_ == "table":
        return name
    table = getattr(obj, "table", None)
    return getattr(table, "name", None)


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook: leave llmpool's tables out of autogenerate.

    A table llmpool created, and its columns, indexes and constraints, are excluded; every
    other object is compared as usual. To combine it with your own filter, return
    ``llmpool.alembic.include_object(...) and mine(...)``.

    Args:
        obj: The schema item (Alembic passes it first).
        name: Its name.
        type_: ``"table"``, ``"column"``, ``"index"``, ``"unique_constraint"``, ...
        reflected: Whether it was read from the database.
        compare_to: The item it is compared with, if any.

    Returns:
        ``False`` for llmpool's objects.

    Example:
        >>> include_object(None, "llms", "table", True, None)
        False
        >>> include_object(None, "invoices", "table", True, None)
        True
    """
    table = _table_of(obj, name, type_)
    return table is None or table.lower() not in tables()


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: do not even reflect llmpool's tables.

    Faster than `include_object` on a large database (the tables are never read); the two may
    be used together.

    Example:
        >>> include_name("llm_audit", "table", {})
        False
    """
    if type_ == "table":
        return name is None or name.lower() not in tables()
    if type_ in ("column", "index", "unique_constraint", "foreign_key_constraint"):
        table = (parent_names or {}).get("table_name")
        return table is None or str(table).lower() not in tables()
    return True


def upgrade(op: Operations, *, to: int | None = None, seed: bool = False) -> list[str]:
    """Apply llmpool's pending migrations on the revision's connection, in its transaction.

    Args:
        op: Alembic's ``op`` (anything with ``get_bind()`` returning a `Connection`).
        to: Apply only the migrations numbered up to this one; ``None`` for all that this
            llmpool ships. Pinning it keeps the revision's schema the same whichever llmpool
            release runs it; a later revision raises it.
        seed: Also insert the usage guide's starter rows (`seed_starter_rows`).

    Returns:
        The migration files applied now.

    Raises:
        MigrationChecksumError: An applied file has changed since it was applied.
        MigrationError: A migration failed; the revision's transaction should roll back.

    Example:
        >>> import sqlalchemy as sa
        >>> class Op:  # what Alembic hands a revision, reduced to what llmpool uses
        ...     def __init__(self, conn): self.conn = conn
        ...     def get_bind(self): return self.conn
        >>> with sa.create_engine("sqlite://").begin() as conn:
        ...     upgrade(Op(conn), to=1)
        ...     downgrade(Op(conn))
        ['0001_llms.sql']
        ['0001_llms.sql']
    """
    from llmpool.repository.sql.migrate import migrate_connection

    applied = migrate_connection(op.get_bind(), to=to)
    if seed:
        seed_starter_rows(op)
    return applied


def downgrade(op: Operations, *, to: int = 0) -> list[str]:
    """Revert llmpool's migrations on the revision's connection, in its transaction.

    Runs the reverse script (``down/NNNN_name.sql``) of every applied migration numbered
    above ``to``, newest first: tables, indexes, PostgreSQL functions and triggers go, and so
    does ``llmpool_migrations`` once no migration is left, so a later `upgrade` starts from
    nothing.

    Args:
        op: Alembic's ``op``.
        to: Keep the migrations numbered up to this one (the ``to`` of the previous revision
            that called `upgrade`); ``0`` reverts them all.

    Returns:
        The migration files reverted now.

    Raises:
        MigrationError: An applied migration has no reverse script here, or one failed.
    """
    from llmpool.repository.sql.migrate import downgrade_connection

    return downgrade_connection(op.get_bind(), to=to)


def store(op: Operations, **options: Any) -> SQLStore:
    """Return a `SQLStore` on the revision's connection: its writes join the revision's
    transaction (each in a SAVEPOINT) and commit with it.

    Args:
        op: Alembic's ``op``.
        **options: Passed to `SQLStore` (``validators``...).

    Example:
        >>> import sqlalchemy as sa
        >>> class Op:
        ...     def __init__(self, conn): self.conn = conn
        ...     def get_bind(self): return self.conn
        >>> with sa.create_engine("sqlite://").begin() as conn:
        ...     _ = upgrade(Op(conn))
        ...     row = {"name": "Local", "provider": "fake", "model_name": "echo"}
        ...     store(Op(conn)).add(row).name
        'Local'
    """
    from llmpool.repository.sql.store import SQLStore

    return SQLStore(op.get_bind(), **options)


def seed_starter_rows(
    op: Operations, *, scope: str = "global", actor: str = "alembic"
) -> list[LLMConfig]:
    """Insert the usage guide's starter rows that are not there yet, in the revision's
    transaction (see `llmpool.repository.sql.migrate.seed_starter_rows`).

    Args:
        op: Alembic's ``op``.
        scope: The scope to seed.
        actor: Recorded in the audit log.

    Returns:
        The rows inserted now; empty when they were all there.
    """
    from llmpool.repository.sql import migrate

    return migrate.seed_starter_rows(store(op), scope=scope, actor=actor)
