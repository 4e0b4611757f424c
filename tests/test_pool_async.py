"""LLMPool's async API: how it connects, and one shared first load (also across threads)."""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool.pool.facade import LLMPool
from llmpool.pool.snapshots import SnapshotKeeper
from llmpool.repository import Snapshot
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.engine import create_async_engine, create_engine


@pytest.fixture
def schema_url(pg_url: str) -> tuple[str, dict[str, Any]]:
    """A migrated schema with two rows: a URL that does not name it, and the connect_args
    that do (as an application connecting through ``connect_args`` would have)."""
    with LLMPool(pg_url, poll_interval=0) as writer:
        writer.store.add(fake("A", 2, "a", is_default=True))
        writer.store.add(fake("B", 1, "b"))
    parsed = sa.engine.make_url(pg_url)
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


def blocked_in(thread: threading.Thread, function: Any) -> bool:
    """Whether ``thread`` waits inside ``function``: in a threading wait below it, or on a lock
    taken in it."""
    frame = sys._current_frames().get(thread.ident or 0)
    if frame is None:
        return False
    if frame.f_code is function.__code__:
        return True
    if frame.f_code.co_filename != threading.__file__:
        return False
    while frame is not None:
        if frame.f_code is function.__code__:
            return True
        frame = frame.f_back
    return False


class FailingLoadStore(BlockingStore):
    """A blocking store whose first load, once released, fails."""

    def snapshot(self) -> Snapshot:
        """Count, wait for the release, then fail the first load only."""
        self.loads += 1
        self.entered.set()
        self.release.wait(5)
        if self.loads == 1:
            msg = "the database is restarting"
            raise ConnectionError(msg)
        return InMemoryStore.snapshot(self)


def test_threads_waiting_for_a_failed_first_load_all_get_its_error_at_once() -> None:
    """Ten threads asking a cold pool share one load; its failure reaches all of them, none
    loads again in turn, and a call after the failure starts a new load."""
    store = FailingLoadStore([fake("A", 1, "a")])
    pool = LLMPool(repository=store, poll_interval=0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            pool.get_llms_from_db()
        except ConnectionError as error:
            errors.append(error)

    threads = [threading.Thread(target=call) for _ in range(10)]
    for thread in threads:
        thread.start()
    assert store.entered.wait(5)
    wait_until(lambda: all(blocked_in(thread, SnapshotKeeper.get) for thread in threads))
    store.release.set()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 10
    assert store.loads == 1
    assert [c.name for c in pool.get_llms_from_db()] == ["A"]
    assert store.loads == 2
    pool.close()


async def test_tasks_waiting_for_a_failed_first_load_all_get_its_error() -> None:
    """Tasks asking a cold pool share one load, and its failure reaches every one of them."""
    store = FailingLoadStore([fake("A", 1, "a")])
    pool = LLMPool(repository=store, poll_interval=0)
    tasks = [asyncio.create_task(pool.aget_llms_from_db()) for _ in range(10)]
    assert await asyncio.to_thread(store.entered.wait, 5)
    store.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert store.loads == 1
    assert [c.name for c in await pool.aget_llms_from_db()] == ["A"]
    await pool.aclose()
