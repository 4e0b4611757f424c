"""A store owns its lifecycle: commit listeners, its engine, its async reader, its migration."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake

from llmpool import PoolOptions
from llmpool.pool.facade import LLMPool
from llmpool.repository import CommitNotifier
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.engine import create_async_engine, create_engine
from llmpool.repository.sql.migrate import migrate
from llmpool.repository.sql.store import SQLStore


def every_write(store: Any) -> list[str]:
    """Run every write method of the admin API once; return their names in order."""
    a = store.add(fake("A", 1, "a"))
    b, c = store.add_many([fake("B", 2, "b"), fake("C", 3, "c")])
    store.update(a.id, {"priority": 5})
    store.set_default(a.id)
    store.disable([b.id, c.id])
    store.enable(b.id)
    store.delete(c.id)
    return ["add", "add_many", "update", "set_default", "disable", "enable", "delete"]


def test_every_write_method_tells_the_listeners_after_its_commit(store: Any) -> None:
    """Each write method, on every store, notifies once with its name, and the listener already
    sees the committed rows."""
    seen: list[tuple[str, int]] = []
    assert isinstance(store, CommitNotifier)
    store.subscribe(lambda action: seen.append((action, len(store.list_llms(scope=None)))))
    expected = every_write(store)
    assert [action for action, _ in seen] == expected
    assert [count for _, count in seen] == [1, 3, 3, 3, 3, 3, 2]


def test_a_failed_write_tells_no_listener(store: Any) -> None:
    """A write that is refused (nothing committed) notifies no one."""
    seen: list[str] = []
    store.subscribe(seen.append)
    with pytest.raises(Exception, match="No LLM with id"):
        store.update("0b0e0000-0000-4000-8000-00000000dead", {"priority": 2})
    assert seen == []


def test_a_listener_that_raises_leaves_the_write_committed_and_logged(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing listener is logged; the write returns its result, stays committed, and the
    other listeners still hear of it."""
    seen: list[str] = []

    def broken(action: str) -> None:
        raise RuntimeError("listener bug")

    store.subscribe(broken)
    store.subscribe(seen.append)
    with caplog.at_level(logging.WARNING, logger="llmpool.repository"):
        added = store.add(fake("A", 1, "a"))
    assert store.get(added.id).name == "A"
    assert seen == ["add"]
    assert "a commit listener failed (RuntimeError)" in caplog.text


def test_unsubscribe_stops_the_notifications() -> None:
    """The call `subscribe` returns removes the listener."""
    seen: list[str] = []
    store = InMemoryStore()
    unsubscribe = store.subscribe(seen.append)
    store.add(fake("A", 1, "a"))
    unsubscribe()
    store.add(fake("B", 2, "b"))
    assert seen == ["add"]


def test_on_commit_argument_subscribes_at_construction(sqlite_url: str) -> None:
    """``on_commit=`` is the same as calling `subscribe` at once, for both stores."""
    seen: list[str] = []
    InMemoryStore(on_commit=seen.append).add(fake("A", 1, "a"))
    migrate(sqlite_url)
    sql = SQLStore(sqlite_url, on_commit=seen.append)
    sql.add(fake("A", 1, "a"))
    sql.close()
    assert seen == ["add", "add"]


def watch_dispose(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record calls to the engine's ``dispose``."""
    calls: list[bool] = []
    original = engine.dispose
    monkeypatch.setattr(engine, "dispose", lambda *a, **k: (calls.append(True), original())[1])
    return calls


def test_an_engine_the_store_made_is_disposed_on_close(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made from a URL releases its engine on close."""
    store = SQLStore(sqlite_url)
    calls = watch_dispose(store.engine, monkeypatch)
    store.close()
    assert calls == [True]


def test_an_engine_given_to_the_store_stays_open(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store (and a pool) given an engine leave it to its owner."""
    engine = create_engine(sqlite_url)
    calls = watch_dispose(engine, monkeypatch)
    SQLStore(engine).close()
    LLMPool(engine, poll_interval=0).close()
    assert calls == []
    engine.dispose()


def test_a_pool_closes_the_store_it_made_and_leaves_a_given_one_open(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LLMPool(url)` owns its store; `LLMPool(store)` does not."""
    pool = LLMPool(sqlite_url, poll_interval=0)
    calls = watch_dispose(pool.store.engine, monkeypatch)  # type: ignore[attr-defined]
    pool.close()
    assert calls == [True]
    store = SQLStore(sqlite_url)
    given = watch_dispose(store.engine, monkeypatch)
    LLMPool(store, poll_interval=0).close()
    assert given == []
    store.close()


async def test_the_async_reader_is_made_from_the_store_url_and_closed_by_aclose(
    sqlite_url: str,
) -> None:
    """The async reader is made once, on first use, and its engine disposed by ``aclose``."""
    migrate(sqlite_url)
    store = SQLStore(sqlite_url)
    store.add(fake("A", 1, "a"))
    reader = store.async_reader()
    assert reader is not None and reader is store.async_reader()
    assert [c.name for c in await reader.list_llms()] == ["A"]
    pool = reader.engine.sync_engine.pool
    assert pool.checkedin() == 1
    await store.aclose()
    assert reader.engine.sync_engine.pool is not pool  # disposed: a fresh, empty pool


async def test_a_given_engine_has_no_async_reader_and_a_given_async_engine_stays_open(
    sqlite_url: str,
) -> None:
    """A store given an `Engine` cannot copy it into an async one; an async engine given
    is read through and left open by ``aclose``."""
    migrate(sqlite_url)
    engine = create_engine(sqlite_url)
    assert SQLStore(engine).async_reader() is None
    async_engine = create_async_engine(sqlite_url)
    store = SQLStore(engine, async_engine=async_engine)
    reader = store.async_reader()
    assert reader is not None and reader.engine is async_engine
    await store.aclose()
    async with async_engine.connect() as conn:  # still usable
        assert (await conn.execute(sa.text("SELECT 1"))).scalar_one() == 1
    await async_engine.dispose()
    engine.dispose()


def test_an_embedded_sqlite_store_migrates_on_first_use(sqlite_url: str) -> None:
    """``auto_migrate=None`` migrates SQLite before the first read or write, once."""
    store = SQLStore(sqlite_url, auto_migrate=None)
    assert store.schema_pending
    assert store.list_llms() == []
    assert not store.schema_pending
    store.close()


def test_the_pool_store_is_the_store_and_direct_writes_refresh_the_pool() -> None:
    """`pool.store` returns the store itself; a write made straight to it is seen at once."""
    store = InMemoryStore()
    with LLMPool(store, options=PoolOptions(poll_interval=0)) as pool:
        assert pool.store is store
        assert pool.get_llms_from_db() == []
        store.add(fake("A", 1, "a"))
        assert [c.name for c in pool.get_llms_from_db()] == ["A"]
    store.add(fake("B", 2, "b"))  # a closed pool no longer listens
    assert len(store._listeners) == 0


def test_keyword_settings_are_folded_into_the_options() -> None:
    """The pool's keyword arguments override the fields of ``options``."""
    options = PoolOptions(poll_interval=3.0, listen=False)
    with LLMPool(InMemoryStore(), options=options, poll_interval=0) as pool:
        assert pool.options == PoolOptions(poll_interval=0, listen=False)
