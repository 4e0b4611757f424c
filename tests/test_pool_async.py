"""LLMPool's async API: how it connects, and one shared first load."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool.database import create_async_engine, create_engine
from llmpool.migrate import migrate
from llmpool.pool import LLMPool
from llmpool.repository import Snapshot
from llmpool.repository.memory import InMemoryStore


@pytest.fixture
def schema_url(postgres_url: str) -> tuple[str, dict[str, Any]]:
    """A migrated schema with two rows: a URL that does not name it, and the connect_args
    that do (as an application connecting through ``connect_args`` would have)."""
    migrate(postgres_url)
    with LLMPool(postgres_url, poll_interval=0) as writer:
        writer.store.add(fake("A", 2, "a", is_default=True))
        writer.store.add(fake("B", 1, "b"))
    parsed = sa.engine.make_url(postgres_url)
    options = parsed.query["options"]
    assert isinstance(options, str)
    bare = parsed.difference_update_query(["options"]).render_as_string(hide_password=False)
    return bare, {"options": options}


def is_snapshot_query(statement: str) -> bool:
    """Whether a SQL statement is the one-query snapshot of the table."""
    return "llmpool_state LEFT OUTER JOIN llms" in statement


async def test_async_api_connects_like_the_engine_passed_in(
    schema_url: tuple[str, dict[str, Any]],
) -> None:
    """aget_* read through a user's Engine (connect_args included), not a copy of its URL."""
    bare, connect_args = schema_url
    engine = create_engine(bare, connect_args=connect_args)
    pool = LLMPool(engine, poll_interval=0)
    try:
        assert [c.name for c in await pool.aget_llms_from_db()] == ["B", "A"]
        assert (await pool.aget_default_llm_config()).name == "A"
    finally:
        await pool.aclose()
        engine.dispose()


async def test_async_database_reads_through_the_async_engine_given(
    schema_url: tuple[str, dict[str, Any]],
) -> None:
    """async_database: the a* functions read through that AsyncEngine, not the sync engine;
    1,000 tasks on the cold pool issue one snapshot query."""
    bare, connect_args = schema_url
    engine = create_engine(bare, connect_args=connect_args)
    async_engine = create_async_engine(bare, connect_args=connect_args)
    sync_statements: list[str] = []
    async_statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *a: sync_statements.append(a[2]))
    sa.event.listen(
        async_engine.sync_engine, "before_cursor_execute", lambda *a: async_statements.append(a[2])
    )
    pool = LLMPool(engine, async_database=async_engine, poll_interval=0)
    try:
        results = await asyncio.gather(*(pool.aget_llms_from_db() for _ in range(1000)))
        assert {tuple(c.name for c in names) for names in results} == {("B", "A")}
        assert sum(is_snapshot_query(s) for s in async_statements) == 1
        assert sync_statements == []
    finally:
        await pool.aclose()
        async with async_engine.connect() as conn:  # the caller's engine is left usable
            assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
        await async_engine.dispose()
        engine.dispose()


class BlockingStore(InMemoryStore):
    """An in-memory store whose snapshot() waits until released, counting loads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.entered = threading.Event()
        self.release = threading.Event()
        self.loads = 0

    def snapshot(self) -> Snapshot:
        """Count, wait for the release, then load."""
        self.loads += 1
        self.entered.set()
        self.release.wait(5)
        return super().snapshot()


async def test_a_cancelled_waiter_leaves_the_shared_first_load_to_the_others() -> None:
    """Concurrent first calls share one load; cancelling one caller does not cancel it."""
    store = BlockingStore([fake("A", 1, "a")])
    pool = LLMPool(repository=store, poll_interval=0)
    tasks = [asyncio.create_task(pool.aget_llms_from_db()) for _ in range(3)]
    assert await asyncio.to_thread(store.entered.wait, 5)
    tasks[0].cancel()
    await asyncio.to_thread(wait_until, lambda: tasks[0].done())
    store.release.set()
    first, second = await asyncio.gather(tasks[1], tasks[2])
    assert [c.name for c in first] == [c.name for c in second] == ["A"]
    assert tasks[0].cancelled()
    assert store.loads == 1
    await pool.aclose()


async def test_a_failed_first_load_is_tried_again_by_the_next_call() -> None:
    """A shared load that failed is not kept: the next call loads afresh."""
    store = BlockingStore([fake("A", 1, "a")])
    store.release.set()
    original = store.snapshot
    calls = [0]

    def failing_once() -> Snapshot:
        calls[0] += 1
        if calls[0] == 1:
            msg = "the database is restarting"
            raise ConnectionError(msg)
        return original()

    store.snapshot = failing_once  # type: ignore[method-assign]
    pool = LLMPool(repository=store, poll_interval=0)
    with pytest.raises(ConnectionError):
        await pool.aget_llms_from_db()
    assert [c.name for c in await pool.aget_llms_from_db()] == ["A"]
    await pool.aclose()
