"""The async read side of the `llms` table: psycopg 3 async on PostgreSQL, aiosqlite on SQLite;
each read is bounded in all by `DatabaseBounds.operation`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.repository.sql.bounds import database_bounds
from llmpool.repository.sql.engine import create_async_engine
from llmpool.repository.sql.errors import db_errors, timeout_error
from llmpool.repository.sql.schema import (
    RowParser,
    default_config,
    llms,
    one_config,
    select_generation,
    select_llms,
    select_snapshot,
    snapshot_from_rows,
)

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.models import LLMConfig
    from llmpool.repository import Snapshot


class AsyncSQLRepository:
    """The async reads of `SQLStore`, on an async engine, a URL, or the configured database."""

    def __init__(self, engine: AsyncEngine | str | URL | None = None) -> None:
        self.engine = create_async_engine(engine)
        self._parser = RowParser()
        self._timeout = database_bounds(self.engine).operation

    async def _rows(self, stmt: sa.Select[Any], what: str) -> Sequence[Mapping[Any, Any]]:
        async def fetch() -> Sequence[Mapping[Any, Any]]:
            async with self.engine.connect() as conn:
                rows: Sequence[Mapping[Any, Any]] = (await conn.execute(stmt)).mappings().all()
                return rows

        with db_errors(self.engine.sync_engine, what):
            try:
                return await asyncio.wait_for(fetch(), self._timeout)
            except asyncio.TimeoutError:
                raise timeout_error(self.engine, what, self._timeout) from None

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
        return one_config(rows, llm_id)

    async def get_default(self, scope: str = "global", *, kind: str = "chat") -> LLMConfig:
        """Return the scope's default of ``kind``, as `SQLStore.get_default`."""
        stmt = select_llms(scope=scope).where(llms.c.is_default.is_(True), llms.c.kind == kind)
        return default_config(await self._rows(stmt, "read the default LLM"), scope)

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
