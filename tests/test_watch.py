"""The watcher: LISTEN through the engine, what it logs, NOTIFY filtering, shutdown races."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool import watch
from llmpool.pool import LLMPool
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql import SQLStore
from llmpool.watch import Watcher


def split_schema(url: str) -> tuple[str, str]:
    """Return the URL without its ``options`` and the schema those options selected."""
    parsed = sa.engine.make_url(url)
    schema = parsed.query["options"]
    assert isinstance(schema, str)
    bare = parsed.difference_update_query(["options"])
    return bare.render_as_string(hide_password=False), schema.split("=", 1)[1]


class CountingSQLStore(SQLStore):
    """A SQL store that counts generation polls."""

    polls = 0

    def generation(self) -> int:
        """Count, then read."""
        self.polls += 1
        return super().generation()


@pytest.fixture
def counting_watcher(pg_url: str) -> Iterator[tuple[Watcher, CountingSQLStore]]:
    """A watcher LISTENing on the test schema that polls only every 30 s."""
    store = CountingSQLStore(pg_url)
    watcher = Watcher(store, lambda generation: None, poll_interval=30, engine=store.engine)
    watcher.start(store.generation())
    wait_until(lambda: watcher.listening)
    yield watcher, store
    watcher.stop()
    store.engine.dispose()


def test_listen_connects_through_the_engine_creator(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An engine that connects through a creator (its URL alone cannot) gets NOTIFY too."""
    caplog.set_level("WARNING", logger="llmpool")
    bare, schema = split_schema(pg_url)
    engine = sa.create_engine(
        "postgresql+psycopg://nobody@127.0.0.1:1/nowhere",
        creator=lambda: psycopg.connect(bare, options=f"-csearch_path={schema}"),
    )
    writer = LLMPool(pg_url, poll_interval=0)
    pool = LLMPool(engine, poll_interval=30)
    try:
        first = writer.store.add(fake("First", 1, "first"))
        writer.store.add(fake("Second", 2, "second"))
        live = pool.get_llm_with_fallback()
        wait_until(lambda: pool._watcher is not None and pool._watcher.listening)
        writer.store.disable(first.id)
        wait_until(lambda: live.invoke("x").content == "second", timeout=3)
    finally:
        pool.close()
        writer.close()
        engine.dispose()
    assert "llmpool" not in caplog.text


def test_listen_failures_are_logged_once_apart_from_outages_and_back_off(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """LISTEN failing while the table is readable logs "LISTEN unavailable" once (not an
    outage), retries with a doubling delay, and logs once when it works again."""
    caplog.set_level("WARNING", logger="llmpool")
    failing = threading.Event()
    failing.set()
    delays: list[float] = []
    real_open = Watcher._open_listener

    def open_listener(self: Watcher) -> Any:
        if failing.is_set():
            delays.append(self._retry_delay)
            msg = "LISTEN is not allowed through this proxy"
            raise OSError(msg)
        return real_open(self)

    monkeypatch.setattr(Watcher, "_open_listener", open_listener)
    store = SQLStore(pg_url)
    changes: list[int] = []
    watcher = Watcher(
        store,
        changes.append,
        poll_interval=0.05,
        engine=store.engine,
        listen_retry=0.01,
        listen_retry_max=0.04,
    )
    watcher.start(store.generation())
    try:
        wait_until(lambda: len(delays) >= 5)
        assert delays[:5] == [0.01, 0.02, 0.04, 0.04, 0.04]
        store.add(fake("A", 1, "a"))
        wait_until(lambda: bool(changes))  # polling still sees changes
        failing.clear()
        wait_until(lambda: watcher.listening)
    finally:
        watcher.stop()
        store.engine.dispose()
    assert caplog.text.count("LISTEN unavailable") == 1
    assert caplog.text.count("LISTEN works again") == 1
    assert "cannot read the LLM table" not in caplog.text


def test_an_irrelevant_notify_does_not_poll_and_a_relevant_one_polls_at_once(
    counting_watcher: tuple[Watcher, CountingSQLStore], pg_url: str
) -> None:
    """A NOTIFY from another schema is ignored; one from this schema polls without waiting
    for the 30 s safety net."""
    watcher, store = counting_watcher
    polls = store.polls
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("""NOTIFY llmpool_changes, '{"schema": "somewhere_else"}'""")
        wait_until(lambda: watcher.notifications == 1)
        assert store.polls == polls
        store.add(fake("A", 1, "a"))  # the trigger's NOTIFY names this schema
        wait_until(lambda: store.polls == polls + 1, timeout=3)


def test_close_racing_the_first_snapshot_leaves_no_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """close() called while the first load is starting the watcher stops that watcher."""
    entered = threading.Event()
    release = threading.Event()
    started: list[Watcher] = []

    class SlowWatcher(Watcher):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            entered.set()
            release.wait(5)
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(watch, "Watcher", SlowWatcher)
    pool = LLMPool(repository=InMemoryStore(), poll_interval=30)
    loader = threading.Thread(target=pool.snapshot)
    loader.start()
    assert entered.wait(5)
    closer = threading.Thread(target=pool.close)
    closer.start()
    closer.join(0.2)  # give close() its chance to run first; it must not miss the watcher
    release.set()
    loader.join(5)
    closer.join(5)
    assert not closer.is_alive()
    assert [w.alive for w in started] in ([], [False])
