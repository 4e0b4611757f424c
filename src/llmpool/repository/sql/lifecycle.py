"""What a `SQLStore` owns: its engine, its async reader, and the migration of an embedded schema.

An engine the store made from a URL is disposed when the store closes; an `Engine` the caller
passed stays theirs. The async reader (`AsyncSQLRepository`) is made on first use: from the
async engine or URL the caller gave, else from the store's own URL when the store made its
engine (an `Engine` given by the caller may carry a ``creator`` or ``connect_args`` an async
engine could not copy: then there is no async reader, and async reads run the sync engine in a
worker thread). An async engine made here is disposed by ``aclose``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import sqlalchemy as sa

from llmpool.repository.sql.engine import create_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.repository.sql.async_store import AsyncSQLRepository

__all__ = ["DatabaseResources"]


class DatabaseResources:
    """A store's engine, its lazily made async reader, and its pending migration.

    Args:
        engine: An engine (the caller's: never disposed here), a URL or ``None`` (the
            configured database: the engine made from it is disposed by `close`).
        async_engine: The async engine or URL async reads go through; by default the
            engine's URL when the engine was made here.
        auto_migrate: Apply llmpool's migrations on first use; ``None`` for SQLite only
            (an embedded database nobody else migrates).
    """

    def __init__(
        self,
        engine: Engine | str | URL | None,
        *,
        async_engine: AsyncEngine | str | URL | None = None,
        auto_migrate: bool | None = False,
    ) -> None:
        self.owns_engine = not isinstance(engine, sa.Engine)
        self.engine = create_engine(engine)
        if auto_migrate is None:
            auto_migrate = self.engine.dialect.name == "sqlite"
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
                from llmpool.repository.sql.migrate import migrate

                migrate(self.engine)
                self._migrate_pending = False

    def async_reader(self) -> AsyncSQLRepository | None:
        """Return the async reader, made on first use; ``None`` when there can be none."""
        with self._lock:
            if self._async_reader is None:
                source = self._async_source
                if source is None and self.owns_engine:
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
