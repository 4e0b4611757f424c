"""LLMPool: caching, live reload across pools and processes, outages, replicas, concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from helpers import TcpProxy, fake, wait_until

from llmpool.api import get_llm, get_llm_with_fallback, set_pool
from llmpool.errors import (
    AllLLMsFailedToInitializeError,
    DatabaseUnavailableError,
    LLMNotFoundError,
    NoDefaultLLMError,
)
from llmpool.fallback.model import FallbackChatModel
from llmpool.pool.facade import LLMPool
from llmpool.providers import FactoryProvider, ProviderRegistry
from llmpool.providers.fake import FakeChatModel
from llmpool.repository import Snapshot
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.engine import create_engine


def test_seed_functions_on_a_pool() -> None:
    """get_llm, get_llm(llm_id=...), get_llms_from_db and get_default_llm_config."""
    store = InMemoryStore(
        [fake("A", 10, "a", is_default=True), fake("B", 5, "b"), fake("C", 1, "c", enabled=False)]
    )
    with LLMPool(repository=store, poll_interval=0) as pool:
        assert pool.get_llm().invoke("x").content == "a"
        b = next(c for c in pool.get_llms_from_db() if c.name == "B")
        assert pool.get_llm(llm_id=b.id).invoke("x").content == "b"
        assert [c.name for c in pool.get_llms_from_db()] == ["B", "A"]
        assert [c.name for c in pool.get_llms_from_db(enabled_only=False)] == ["C", "B", "A"]
        assert pool.get_default_llm_config()["name"] == "A"
        with pytest.raises(LLMNotFoundError):
            pool.get_llm(llm_id="abc-123-def-456")
        with pytest.raises(NoDefaultLLMError, match="No default LLM configured"):
            pool.get_default_llm_config(scope="other")


def test_nothing_buildable_fails_at_get_llm_with_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed's main.py catches "All LLMs failed to initialize" at startup."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = InMemoryStore(
        [
            {
                "name": "GPT-4",
                "provider": "openai",
                "model_name": "gpt-4",
                "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            }
        ]
    )
    with LLMPool(repository=store, poll_interval=0) as pool:
        with pytest.raises(AllLLMsFailedToInitializeError, match="OPENAI_API_KEY"):
            pool.get_llm_with_fallback()
        local = FakeChatModel(responses=["ollama from env"])
        llm = pool.get_llm_with_fallback(fallbacks=[local])
        assert llm.invoke("x").content == "ollama from env"


def test_module_functions_use_the_replaceable_default_pool() -> None:
    """set_pool swaps the default pool and restores the previous one."""
    store = InMemoryStore([fake("Only", 1, "only", is_default=True)])
    pool = LLMPool(repository=store, poll_interval=0)
    with set_pool(pool):
        assert get_llm().invoke("x").content == "only"
        assert isinstance(get_llm_with_fallback(), FallbackChatModel)
    pool.close()


def test_cached_get_llm_with_fallback_makes_no_database_round_trip(migrated_url: str) -> None:
    """After the first load, getting the chain and invoking it issues no SQL (SQLite and PG)."""
    engine = create_engine(migrated_url)
    pool = LLMPool(engine, poll_interval=0)
    try:
        pool.store.add(fake("A", 1, "a"))
        pool.get_llm_with_fallback()
        statements: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        for _ in range(100):
            assert pool.get_llm_with_fallback().invoke("x").content == "a"
        assert statements == []
    finally:
        pool.close()
        engine.dispose()


def test_models_are_cached_per_row_version() -> None:
    """A row's model is built once per version and rebuilt when the row changes."""
    builds: list[str] = []

    def factory(config: Any, auth: Any) -> FakeChatModel:
        builds.append(config.id)
        return FakeChatModel(responses=[str(config.config.get("answer"))])

    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("counting", factory))
    store = InMemoryStore(
        [{"name": "A", "provider": "counting", "model_name": "m", "config": {"answer": "v1"}}]
    )
    with LLMPool(repository=store, registry=registry, poll_interval=0) as pool:
        llm = pool.get_llm_with_fallback()
        for _ in range(10):
            assert llm.invoke("x").content == "v1"
        row = store.list_llms()[0]
        pool.store.update(row.id, {"config": {"answer": "v2"}})
        assert llm.invoke("x").content == "v2"
        assert len(builds) == 2


def listening(pool: LLMPool) -> bool:
    """Whether the pool's watcher holds an open LISTEN connection."""
    return pool._snapshots.watcher is not None and pool._snapshots.watcher.listening


# NOTIFY variants poll every 30 s, so only NOTIFY can deliver the change within the deadline.
WATCH_MODES = pytest.mark.parametrize(
    ("listen", "poll_interval"), [(True, 30.0), (False, 0.2)], ids=["notify", "polling"]
)


@WATCH_MODES
def test_a_change_through_one_pool_reaches_another(
    pg_url: str, listen: bool, poll_interval: float
) -> None:
    """Disable a row through pool A; pool B (own engine) stops using it, by NOTIFY or polling."""
    a = LLMPool(pg_url, poll_interval=0)
    b = LLMPool(pg_url, poll_interval=poll_interval, listen=listen)
    try:
        first = a.store.add(fake("First", 1, "first"))
        a.store.add(fake("Second", 2, "second"))
        live = b.get_llm_with_fallback()
        assert live.invoke("x").content == "first"
        if listen:
            wait_until(lambda: listening(b))
        a.store.disable(first.id)
        wait_until(lambda: live.invoke("x").content == "second", timeout=3)
        a.store.update(first.id, {"enabled": True, "priority": 3})
        wait_until(lambda: [c.name for c in b.get_llms_from_db()] == ["Second", "First"], 3)
    finally:
        a.close()
        b.close()


CHILD = """
import sys, time
from llmpool.pool.facade import LLMPool
url, listen, poll_interval, deadline = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), 5
pool = LLMPool(url, poll_interval=poll_interval, listen=listen)
names = [c.name for c in pool.get_llms_from_db()]
started = time.monotonic()
while listen and not pool._snapshots.watcher.listening and time.monotonic() - started < deadline:
    time.sleep(0.01)
print("ready", names, flush=True)
started = time.monotonic()
while [c.name for c in pool.get_llms_from_db()] != ["Second"]:
    if time.monotonic() - started > deadline:
        break
    time.sleep(0.01)
print("saw", [c.name for c in pool.get_llms_from_db()], flush=True)
pool.close()
"""


@WATCH_MODES
def test_a_change_reaches_another_process(pg_url: str, listen: bool, poll_interval: float) -> None:
    """A pool in another process sees a row disabled here within 5 s, by NOTIFY or polling."""
    with LLMPool(pg_url, poll_interval=0) as here:
        first = here.store.add(fake("First", 1, "first"))
        here.store.add(fake("Second", 2, "second"))
        args = [pg_url, "1" if listen else "0", str(poll_interval)]
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline().startswith("ready ['First', 'Second']")
        here.store.disable(first.id)
        out, _ = child.communicate(timeout=30)
    assert out.strip() == "saw ['Second']"


def backend_exists(pg_url: str, pid: int) -> bool:
    """Whether a PostgreSQL backend with this pid is still LISTENing."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND query ILIKE 'LISTEN%%'",
            [pid],
        ).fetchone()
    return bool(row and row[0])


def test_a_dropped_listen_connection_catches_up_and_listens_again(pg_url: str) -> None:
    """After pg_terminate_backend, a change made meanwhile is seen, then NOTIFY works again."""
    import psycopg

    writer = LLMPool(pg_url, poll_interval=0)
    reader = LLMPool(pg_url, poll_interval=30, listen_retry=1.0)
    try:
        first = writer.store.add(fake("First", 1, "first"))
        writer.store.add(fake("Second", 2, "second"))
        live = reader.get_llm_with_fallback()
        watcher = reader._snapshots.watcher
        assert watcher is not None
        wait_until(lambda: watcher.listening)
        pid = watcher.backend_pid
        assert pid is not None and backend_exists(pg_url, pid)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        wait_until(lambda: not watcher.listening)
        writer.store.disable(first.id)
        assert not watcher.listening  # the change was made while the listener was away
        wait_until(lambda: live.invoke("x").content == "second")
        wait_until(lambda: watcher.listening)
        assert watcher.backend_pid != pid
        writer.store.enable(first.id)
        wait_until(lambda: live.invoke("x").content == "first", timeout=3)
    finally:
        writer.close()
        reader.close()


def test_close_stops_the_watcher_and_leaves_no_listen_backend(pg_url: str) -> None:
    """close() ends the watcher thread before returning, though it polls only every 30 s."""
    pool = LLMPool(pg_url, poll_interval=30)
    pool.get_llms_from_db()
    watcher = pool._snapshots.watcher
    assert watcher is not None
    wait_until(lambda: watcher.listening)
    pid = watcher.backend_pid
    assert pid is not None and backend_exists(pg_url, pid)
    pool.close()
    assert not watcher.alive
    wait_until(lambda: not backend_exists(pg_url, pid))


async def test_aclose_does_not_block_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """While aclose() stops the watcher, other coroutines keep running on the loop."""
    pool = LLMPool(repository=InMemoryStore(), poll_interval=30)
    await pool.aget_llms_from_db()
    watcher = pool._snapshots.watcher
    assert watcher is not None
    released = threading.Event()
    waited: list[bool] = []
    real_stop = watcher.stop

    def stop(timeout: float = 5.0) -> None:
        waited.append(released.wait(5))  # set by a coroutine: only if the loop is free
        real_stop(timeout)

    monkeypatch.setattr(watcher, "stop", stop)

    async def release() -> None:
        released.set()

    await asyncio.gather(pool.aclose(), release())
    assert waited == [True]
    assert not watcher.alive


def test_live_runnable_follows_a_priority_change(migrated_url: str) -> None:
    """A runnable obtained at startup follows the new order after a priority change."""
    with LLMPool(migrated_url, poll_interval=0.05) as pool:
        a = pool.store.add(fake("A", 1, "a"))
        pool.store.add(fake("B", 2, "b"))
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("x").content == "a"
        other = LLMPool(migrated_url, poll_interval=0)  # a write from elsewhere
        other.store.update(a.id, {"priority": 9})
        other.close()
        wait_until(lambda: llm.invoke("x").content == "b")


@pytest.mark.parametrize("listen", [False, True], ids=["polling", "notify"])
def test_database_down_serves_the_snapshot_and_writes_fail_loudly(
    pg_url: str, listen: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections refused mid-run: answers continue, writes raise, the outage is logged once,
    and after recovery changes are seen again."""
    caplog.set_level("WARNING", logger="llmpool")
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxied = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{proxy.port}")
    direct = LLMPool(pg_url, poll_interval=0)
    pool = LLMPool(proxied, poll_interval=0.1, listen=listen, listen_retry=0.05)
    try:
        first = direct.store.add(fake("First", 1, "first"))
        direct.store.add(fake("Second", 2, "second"))
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("x").content == "first"
        if listen:
            wait_until(lambda: listening(pool))
        proxy.stop()
        for _ in range(20):
            assert llm.invoke("x").content == "first"
        assert [c.name for c in pool.get_llms_from_db()] == ["First", "Second"]
        with pytest.raises(DatabaseUnavailableError):
            pool.store.disable(first.id)
        direct.store.disable(first.id)  # changed while the pool cannot see the database
        wait_until(lambda: "cannot read the LLM table" in caplog.text)
        watcher = pool._snapshots.watcher
        assert watcher is not None
        for _ in range(5):  # several failed polls (and reconnects) while it is down
            polls = watcher.polls
            wait_until(lambda polls=polls: watcher.polls > polls)
        proxy.start()
        wait_until(lambda: llm.invoke("x").content == "second", timeout=10)
        direct.store.enable(first.id)
        wait_until(lambda: llm.invoke("x").content == "first", timeout=10)
        if listen:
            wait_until(lambda: listening(pool), timeout=10)
    finally:
        pool.close()
        direct.close()
        proxy.stop()
    assert caplog.text.count("cannot read the LLM table") == 1
    assert caplog.text.count("can read the LLM table again") == 1
    assert caplog.text.count("LISTEN unavailable") == (1 if listen else 0)
    assert caplog.text.count("LISTEN works again") == (1 if listen else 0)


class CountingStore(InMemoryStore):
    """An in-memory store that counts snapshot loads."""

    loads = 0

    def snapshot(self) -> Snapshot:
        """Count, then load."""
        self.loads += 1
        return super().snapshot()


def is_snapshot_query(statement: str) -> bool:
    """Whether a SQL statement is the one-query snapshot of the table."""
    return "llmpool_state LEFT OUTER JOIN llms" in statement


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgres)])
def counting_pool(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[LLMPool, list[str], Callable[[], int]]]:
    """A cold pool (in memory, or on PostgreSQL through an engine passed in) whose provider
    counts builds; with a function returning how many snapshots it has loaded."""
    builds: list[str] = []
    lock = threading.Lock()

    def factory(config: Any, auth: Any) -> FakeChatModel:
        with lock:
            builds.append(config.name)
        return FakeChatModel(responses=[config.name])

    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("counting", factory))
    rows = [
        {"name": f"M{i}", "provider": "counting", "model_name": "m", "priority": i}
        | {"is_default": i == 0}
        for i in range(3)
    ]
    if request.param == "memory":
        store = CountingStore(rows)
        pool = LLMPool(repository=store, registry=registry, poll_interval=0)
        yield pool, builds, lambda: store.loads
        pool.close()
        return
    url: str = request.getfixturevalue("pg_url")
    with LLMPool(url, registry=registry, poll_interval=0) as writer:
        for row in rows:
            writer.store.add(row)
    engine = create_engine(url)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    pool = LLMPool(engine, registry=registry, poll_interval=30)
    yield pool, builds, lambda: sum(is_snapshot_query(s) for s in statements)
    pool.close()
    engine.dispose()


def test_200_threads_answer_and_each_model_is_built_once(
    counting_pool: tuple[LLMPool, list[str], Callable[[], int]],
) -> None:
    """A stampede of threads on a cold pool: every call answers, each row built once."""
    pool, builds, loads = counting_pool
    barrier = threading.Barrier(200)
    answers: list[str] = []

    def call() -> None:
        barrier.wait()
        answers.append(str(pool.get_llm_with_fallback().invoke("x").content))

    threads = [threading.Thread(target=call) for _ in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == ["M0"] * 200
    assert sorted(builds) == ["M0", "M1", "M2"]
    assert loads() == 1


async def test_1000_concurrent_tasks_answer_and_each_model_is_built_once(
    counting_pool: tuple[LLMPool, list[str], Callable[[], int]],
) -> None:
    """1,000 concurrent calls through the async API on a cold pool all answer; one snapshot
    is loaded and each model is built once."""
    pool, builds, loads = counting_pool

    async def call() -> str:
        llm = await pool.aget_llm_with_fallback()
        return str((await llm.ainvoke("x")).content)

    answers = await asyncio.gather(*(call() for _ in range(1000)))
    assert set(answers) == {"M0"}
    assert sorted(builds) == ["M0", "M1", "M2"]
    assert loads() == 1


async def test_async_api_reads_through_the_async_engine(migrated_url: str) -> None:
    """aget_* work on aiosqlite and psycopg async, with the seed's semantics."""
    writer = LLMPool(migrated_url, poll_interval=0)
    writer.store.add(fake("A", 2, "a", is_default=True))
    writer.store.add(fake("B", 1, "b"))
    writer.close()
    pool = LLMPool(migrated_url, poll_interval=0, auto_migrate=False)
    try:
        assert [c.name for c in await pool.aget_llms_from_db()] == ["B", "A"]
        assert (await pool.aget_default_llm_config()).name == "A"
        assert (await (await pool.aget_llm()).ainvoke("x")).content == "a"
        llm = await pool.aget_llm_with_fallback()
        assert (await llm.ainvoke("x")).content == "b"
    finally:
        await pool.aclose()
