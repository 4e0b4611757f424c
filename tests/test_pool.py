"""LLMPool: caching, live reload across pools and processes, outages, replicas, concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from helpers import TcpProxy, wait_until
from servers import OpenAIServer, Status

from llmpool.breaker_redis import RedisBreakerStore
from llmpool.errors import (
    AllLLMsFailedToInitializeError,
    DatabaseUnavailableError,
    LLMNotFoundError,
    NoDefaultLLMError,
)
from llmpool.fallback import FallbackChatModel
from llmpool.functions import get_llm, get_llm_with_fallback, set_pool
from llmpool.migrate import migrate
from llmpool.policy import FallbackPolicy
from llmpool.pool import LLMPool
from llmpool.providers import FactoryProvider, ProviderRegistry
from llmpool.providers.fake import FakeChatModel
from llmpool.repository.memory import InMemoryStore


def fake(name: str, priority: int, answer: str, **values: Any) -> dict[str, Any]:
    """A fake row answering ``answer``."""
    return {
        "name": name,
        "provider": "fake",
        "model_name": "m",
        "priority": priority,
        "config": {"responses": [answer]},
        **values,
    }


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A migrated PostgreSQL schema."""
    migrate(postgres_url)
    return postgres_url


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


def test_cached_get_llm_with_fallback_makes_no_database_round_trip(sqlite_url: str) -> None:
    """After the first load, getting the chain and invoking it issues no SQL at all."""
    pool = LLMPool(sqlite_url, poll_interval=0)
    pool.store.add(fake("A", 1, "a"))
    pool.get_llm_with_fallback()
    statements: list[str] = []
    sa.event.listen(pool._engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    for _ in range(100):
        assert pool.get_llm_with_fallback().invoke("x").content == "a"
    assert statements == []
    pool.close()


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


@pytest.mark.parametrize("listen", [True, False], ids=["notify", "polling"])
def test_a_change_through_one_pool_reaches_another(pg_url: str, listen: bool) -> None:
    """Disable a row through pool A; pool B (own engine) stops using it, NOTIFY or polling."""
    a = LLMPool(pg_url, poll_interval=0.2)
    b = LLMPool(pg_url, poll_interval=0.2, listen=listen)
    try:
        first = a.store.add(fake("First", 1, "first"))
        a.store.add(fake("Second", 2, "second"))
        live = b.get_llm_with_fallback()
        assert live.invoke("x").content == "first"
        if listen:
            wait_until(lambda: b._watcher is not None and b._watcher.listening)
        a.store.disable(first.id)
        took = wait_until(lambda: live.invoke("x").content == "second", timeout=3)
        assert took < (1.0 if listen else 2.0)
        a.store.update(first.id, {"enabled": True, "priority": 3})
        wait_until(lambda: [c.name for c in b.get_llms_from_db()] == ["Second", "First"])
    finally:
        a.close()
        b.close()


def test_a_change_reaches_another_process(pg_url: str) -> None:
    """A pool in another process sees a row disabled here."""
    script = """
import sys, time
from llmpool.pool import LLMPool
pool = LLMPool(sys.argv[1], poll_interval=0.2)
print("ready", [c.name for c in pool.get_llms_from_db()], flush=True)
deadline = time.monotonic() + 20
while [c.name for c in pool.get_llms_from_db()] != ["Second"] and time.monotonic() < deadline:
    time.sleep(0.01)
print("saw", [c.name for c in pool.get_llms_from_db()], flush=True)
"""
    with LLMPool(pg_url, poll_interval=0) as here:
        first = here.store.add(fake("First", 1, "first"))
        here.store.add(fake("Second", 2, "second"))
        child = subprocess.Popen(
            [sys.executable, "-c", script, pg_url], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline().startswith("ready ['First', 'Second']")
        here.store.disable(first.id)
        out, _ = child.communicate(timeout=30)
    assert out.strip() == "saw ['Second']"


def test_live_runnable_follows_a_priority_change(sqlite_url: str) -> None:
    """A runnable obtained at startup follows the new order after a priority change."""
    with LLMPool(sqlite_url, poll_interval=0.05) as pool:
        a = pool.store.add(fake("A", 1, "a"))
        pool.store.add(fake("B", 2, "b"))
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("x").content == "a"
        other = LLMPool(sqlite_url, poll_interval=0)  # a write from elsewhere
        other.store.update(a.id, {"priority": 9})
        other.close()
        wait_until(lambda: llm.invoke("x").content == "b")


def test_database_down_serves_the_snapshot_and_writes_fail_loudly(pg_url: str) -> None:
    """Connections refused mid-run: answers continue, writes raise, recovery sees new changes."""
    parts = urlsplit(pg_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxied = pg_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{proxy.port}")
    direct = LLMPool(pg_url, poll_interval=0)
    pool = LLMPool(proxied, poll_interval=0.1, listen=False)
    try:
        first = direct.store.add(fake("First", 1, "first"))
        direct.store.add(fake("Second", 2, "second"))
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("x").content == "first"
        proxy.stop()
        for _ in range(20):
            assert llm.invoke("x").content == "first"
        assert [c.name for c in pool.get_llms_from_db()] == ["First", "Second"]
        with pytest.raises(DatabaseUnavailableError):
            pool.store.disable(first.id)
        direct.store.disable(first.id)  # changed while the pool cannot see the database
        proxy.start()
        wait_until(lambda: llm.invoke("x").content == "second", timeout=10)
    finally:
        pool.close()
        direct.close()
        proxy.stop()


def test_replica_b_skips_a_candidate_whose_breaker_replica_a_opened() -> None:
    """With Redis, A's failures open the breaker and B skips the candidate with no request."""
    import redis

    prefix = f"llmpool-test:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis on 127.0.0.1:6379 is required for this test")
    policy = FallbackPolicy(attempts=1, failure_threshold=2, cooldown=60)
    with OpenAIServer() as dead:
        dead.script(*[Status(500)] * 10)
        rows = [
            {
                "id": "11111111-0000-0000-0000-000000000001",
                "name": "Dead",
                "provider": "openai",
                "model_name": "m",
                "priority": 1,
                "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                "config": {"base_url": dead.url + "/v1"},
            },
            fake("Backup", 2, "backup"),
        ]
        replicas = [
            LLMPool(
                repository=InMemoryStore(rows),
                policy=policy,
                poll_interval=0,
                breaker_store=RedisBreakerStore(prefix=prefix),
            )
            for _ in range(2)
        ]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "sk-x")
            a, b = (r.get_llm_with_fallback() for r in replicas)
            assert a.invoke("x").content == "backup"
            assert a.invoke("x").content == "backup"
            assert dead.count == 2
            answer = b.invoke("x")
        assert answer.content == "backup"
        assert dead.count == 2
        assert answer.response_metadata["llmpool"]["attempts"][0]["outcome"] == "skipped"
        for replica in replicas:
            replica.close()
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    client.close()


def test_redis_down_falls_back_to_local_state(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable Redis degrades to per-replica state and says so once."""
    from llmpool.breaker import BreakerBoard

    store = RedisBreakerStore("redis://127.0.0.1:1/0", prefix="x:")
    board = BreakerBoard(store)
    with caplog.at_level("WARNING", logger="llmpool.breaker_redis"):
        for _ in range(3):
            board.failure("k", threshold=3, cooldown=lambda trips: 30.0)
        assert board.admit("k").value == "open"
    assert caplog.text.count("cannot reach Redis") == 1


@pytest.fixture
def counting_pool() -> Iterator[tuple[LLMPool, list[str]]]:
    """A pool whose provider counts builds."""
    builds: list[str] = []
    lock = threading.Lock()

    def factory(config: Any, auth: Any) -> FakeChatModel:
        with lock:
            builds.append(config.name)
        return FakeChatModel(responses=[config.name])

    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("counting", factory))
    store = InMemoryStore(
        [
            {
                "name": f"M{i}",
                "provider": "counting",
                "model_name": "m",
                "priority": i,
                "is_default": i == 0,
            }
            for i in range(3)
        ]
    )
    pool = LLMPool(repository=store, registry=registry, poll_interval=0)
    yield pool, builds
    pool.close()


def test_200_threads_answer_and_each_model_is_built_once(
    counting_pool: tuple[LLMPool, list[str]],
) -> None:
    """A stampede of threads on a cold pool: every call answers, each row built once."""
    pool, builds = counting_pool
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


async def test_1000_concurrent_tasks_answer_and_each_model_is_built_once(
    counting_pool: tuple[LLMPool, list[str]],
) -> None:
    """1,000 concurrent ainvoke calls through the async API all answer; builds happen once."""
    pool, builds = counting_pool

    async def call() -> str:
        llm = await pool.aget_llm_with_fallback()
        return str((await llm.ainvoke("x")).content)

    answers = await asyncio.gather(*(call() for _ in range(1000)))
    assert set(answers) == {"M0"}
    assert sorted(builds) == ["M0", "M1", "M2"]


async def test_async_api_reads_through_the_async_engine(database_url: str) -> None:
    """aget_* work on aiosqlite and psycopg async, with the seed's semantics."""
    migrate(database_url)
    writer = LLMPool(database_url, poll_interval=0)
    writer.store.add(fake("A", 2, "a", is_default=True))
    writer.store.add(fake("B", 1, "b"))
    writer.close()
    pool = LLMPool(database_url, poll_interval=0, auto_migrate=False)
    try:
        assert [c.name for c in await pool.aget_llms_from_db()] == ["B", "A"]
        assert (await pool.aget_default_llm_config()).name == "A"
        assert (await (await pool.aget_llm()).ainvoke("x")).content == "a"
        llm = await pool.aget_llm_with_fallback()
        assert (await llm.ainvoke("x")).content == "b"
    finally:
        await pool.aclose()
