"""llmpool's tables in an application whose schema Alembic manages (see the README).

A revision runs llmpool's migrations (`upgrade`, `downgrade`) on its connection and inside its
transaction, which nothing here begins, commits or rolls back, so a failing revision leaves
nothing of llmpool behind; ``env.py`` passes `include_object` to keep autogenerate away from
llmpool's tables. Alembic itself is not imported. Offline mode (``--sql``) is not supported:
what to apply depends on what ``llmpool_migrations`` records.
"""

from __future__ import annotations

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


class Operations(Protocol):
    """What llmpool needs of Alembic's ``op``: the revision's connection."""

    def get_bind(self) -> Connection:
        """Return the connection the revision runs on."""


@lru_cache(maxsize=1)
def tables() -> frozenset[str]:
    """Return the names of the tables llmpool's migrations create, ``llmpool_migrations`` too.

    Example:
        >>> {"llms", "llm_audit", "llmpool_state", "llmpool_migrations"} <= tables()
        True
    """
    from llmpool.repository.sql.schema import metadata
    from llmpool.usage.sql import metadata as usage

    return frozenset({"llmpool_migrations", *metadata.tables, *usage.tables})


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's ``include_object`` hook: leave llmpool's tables, and their columns, indexes and
    constraints, out of autogenerate (combine it with yours: ``include_object(...) and
    mine(...)``).

    Example:
        >>> include_object(None, "llms", "table", True, None)
        False
        >>> include_object(None, "invoices", "table", True, None)
        True
    """
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table is None or table.lower() not in tables()


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: do not even reflect llmpool's tables (faster than
    `include_object` on a large database; the two may be used together).

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
    """Apply llmpool's pending migrations on the revision's connection, in its transaction, up
    to ``to`` (so the revision builds the same schema whichever llmpool release runs it; ``None``:
    all) and, with ``seed``, the usage guide's starter rows; return the files applied now
    (`MigrationError`: the revision's transaction should roll back).

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
    """Revert llmpool's migrations numbered above ``to`` (the ``to`` of the previous revision
    that called `upgrade`; ``0``: all) on the revision's connection, newest first; return them
    (``llmpool_migrations`` goes once no migration is left; `MigrationError`: one has no reverse
    script here, or failed)."""
    from llmpool.repository.sql.migrate import downgrade_connection

    return downgrade_connection(op.get_bind(), to=to)


def store(op: Operations, **options: Any) -> SQLStore:
    """Return a `SQLStore` (``options`` passed on) whose writes join the revision's transaction,
    each in a SAVEPOINT, and commit with it.

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
    """Insert the usage guide's starter rows that ``scope`` lacks, in the revision's transaction."""
    from llmpool.repository.sql import migrate

    return migrate.seed_starter_rows(store(op), scope=scope, actor=actor)
