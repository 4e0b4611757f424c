"""What a `SQLStore` owns: its engine, its async reader, and the migration of an embedded schema.

An engine the store made from a URL is disposed when the store closes; an `Engine` the caller
passed stays theirs. A `Connection` the caller passed (Alembic's ``op.get_bind()``) is used for
every read and write, inside the caller's transaction: a write runs in a SAVEPOINT, so that a
failed one is undone without ending the caller's transaction, and nothing is committed here (the
caller commits; Alembic does at the end of its revision or run).

The async reader (`AsyncSQLRepository`) is made on first use: from the async engine or URL the
caller gave, else from the store's own URL when the store made its engine (an `Engine` given by
the caller may carry a ``creator`` or ``connect_args`` an async engine could not copy: then
there is no async reader, and async reads run the sync engine in a worker thread; on a
`Connection` there is none either). An async engine made here is disposed by ``aclose``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa

from llmpool.repository.sql.engine import create_engine, hold_in_transaction, write_transaction

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.repository.sql.async_store import AsyncSQLRepository

__all__ = ["DatabaseResources"]


class DatabaseResources:
    """A store's engine, its lazily made async reader, and its pending migration.

    Args:
        engine: An engine (the caller's: never disposed here), a URL or ``None`` (the
            configured database: the engine made from it is disposed by `close`), or a
            `Connection` (the caller's, and so is its transaction: see the module).
        async_engine: The async engine or URL async reads go through; by default the
            engine's URL when the engine was made here.
        auto_migrate: Apply llmpool's migrations on first use; ``None`` for SQLite only
            (an embedded database nobody else migrates), and never on a `Connection`, whose
            schema its owner manages.
    """

    def __init__(
        self,
        engine: Engine | Connection | str | URL | None,
        *,
        async_engine: AsyncEngine | str | URL | None = None,
        auto_migrate: bool | None = False,
    ) -> None:
        self.connection: Connection | None = None
        if isinstance(engine, sa.Connection):
            self.connection, engine = engine, engine.engine
        self.owns_engine = not isinstance(engine, sa.Engine)
        self.engine = create_engine(engine)
        if auto_migrate is None:
            auto_migrate = self.engine.dialect.name == "sqlite" and self.connection is None
        self._migrate_pending = auto_migrate
        self._async_source = async_engine
        self._async_reader: AsyncSQLRepository | None = None
        self._owns_async_engine = False
        self._lock = threading.Lock()
        self._migrate_lock = threading.Lock()

    @property
    def schema_pending(self) -> bool:
        """Whether the migrations are still to be applied on first use."""
        return self._migrate_pending

    def ensure_schema(self) -> None:
        """Apply llmpool's migrations once, when auto-migration is on; then do nothing."""
        if not self._migrate_pending:
            return
        with self._migrate_lock:
            if self._migrate_pending:
                from llmpool.repository.sql.migrate import migrate, migrate_connection

                if self.connection is not None:
                    migrate_connection(self.connection)
                else:
                    migrate(self.engine)
                self._migrate_pending = False

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """Yield a connection for one read: the engine's, closed after; or the caller's."""
        if self.connection is not None:
            yield self.connection
            return
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Yield a connection in one write transaction, committed when the block ends.

        On the caller's `Connection`, a SAVEPOINT inside the caller's transaction instead:
        released (not committed) when the block ends, rolled back on error.
        """
        if self.connection is not None:
            hold_in_transaction(self.connection)
            with self.connection.begin_nested():
                yield self.connection
            return
        with self.engine.connect() as conn, write_transaction(conn):
            yield conn

    def async_reader(self) -> AsyncSQLRepository | None:
        """Return the async reader, made on first use; ``None`` when there can be none."""
        with self._lock:
            if self._async_reader is None:
                source = self._async_source
                if source is None and self.owns_engine and self.connection is None:
                    source = self.engine.url
                if source is None:
                    return None
                from sqlalchemy.ext.asyncio import AsyncEngine

                from llmpool.repository.sql.async_store import AsyncSQLRepository

                self._owns_async_engine = not isinstance(source, AsyncEngine)
                self._async_reader = AsyncSQLRepository(source)
            return self._async_reader

    def close(self) -> None:
        """Release the connections of the engine made here; a caller's engine is left open."""
        if self.owns_engine:
            self.engine.dispose()

    async def aclose(self) -> None:
        """`close` without blocking the event loop, and dispose of an async engine made here."""
        import asyncio

        await asyncio.to_thread(self.close)
        with self._lock:
            reader, owned = self._async_reader, self._owns_async_engine
            if owned:
                self._async_reader = None
        if reader is not None and owned:
            await reader.aclose()
