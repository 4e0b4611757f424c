"""What a `SQLStore` owns: its engine, its async reader, and the migration of its schema.

An engine made from a URL is disposed when the store closes; an `Engine` the caller passed stays
theirs. On a caller's `Connection` (Alembic's ``op.get_bind()``) every read and write joins the
caller's transaction, each write in a SAVEPOINT. The async reader is made on first use, from the
async engine or URL given, else from the store's own URL when it made its engine.
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


class DatabaseResources:
    """A store's engine, its lazily made async reader, and its pending migration
    (``auto_migrate`` ``None``: SQLite only, never on a `Connection`, whose owner migrates)."""

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
        self.schema_pending = auto_migrate  # the migrations still to apply on first use
        self._async_source = async_engine
        self._async_reader: AsyncSQLRepository | None = None
        self._owns_async_engine = False
        self._lock = threading.Lock()
        self._migrate_lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Apply llmpool's migrations once, when auto-migration is on; then do nothing."""
        if not self.schema_pending:
            return
        with self._migrate_lock:
            if self.schema_pending:
                from llmpool.repository.sql.migrate import migrate, migrate_connection

                if self.connection is not None:
                    migrate_connection(self.connection)
                else:
                    migrate(self.engine)
                self.schema_pending = False

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
        """Yield a connection in one write transaction (a caller's `Connection`: a SAVEPOINT)."""
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
