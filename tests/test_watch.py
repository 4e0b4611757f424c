"""The watcher: LISTEN through the engine, what it logs, NOTIFY filtering, shutdown races."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool.pool import watch
from llmpool.pool.facade import LLMPool
from llmpool.pool.watch import Watcher
from llmpool.repository import Snapshot
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.store import SQLStore


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
        wait_until(
            lambda: pool._snapshots.watcher is not None and pool._snapshots.watcher.listening
        )
        writer.store.disable(first.id)
        wait_until(lambda: live.invoke("x").content == "second", timeout=3)
    finally:
        pool.close()
        writer.close()
        engine.dispose()
    # Plugin discovery may warn about a broken plugin installed for its own tests.
    assert not [r.getMessage() for r in caplog.records if r.name != "llmpool.providers"]


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
    heard: list[tuple[str, bool]] = []
    batches: list[bool] = []
    judge, wait = watcher._relevant, watcher._wait_for_notify

    def relevant(payload: str, schema: Any) -> bool:
        heard.append((payload, judge(payload, schema)))
        return heard[-1][1]

    def wait_for_notify(timeout: float) -> bool:
        # Before each wait the watcher has polled for the batch before, if that batch asked.
        unasked.append(store.polls - sum(batches))
        batches.append(wait(timeout))
        return batches[-1]

    # Other xdist workers share the channel, and some of their payloads are relevant to every
    # listener (one without a schema): each batch holding one polls once, and nothing else may,
    # so the polls no batch asked for stay as many at every wait (a busy channel leaves no
    # moment to compare the two counts from outside).
    unasked: list[int] = []
    watcher._relevant = relevant  # type: ignore[method-assign]
    watcher._wait_for_notify = wait_for_notify  # type: ignore[method-assign]
    foreign = '{"schema": "somewhere_else"}'
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('llmpool_changes', %s)", (foreign,))
        wait_until(lambda: (foreign, False) in heard)
        store.add(fake("A", 1, "a"))  # the trigger's NOTIFY names this schema
        ours = f'"{watcher._schema}"'
        wait_until(lambda: any(r and ours in p for p, r in heard), timeout=3)
        waits = len(unasked)
        wait_until(lambda: len(unasked) > waits, timeout=3)  # its poll is done
    assert set(unasked) == {unasked[0]}, unasked


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


class FailingStore(InMemoryStore):
    """An in-memory store whose reloads (snapshot) or polls (generation) raise an exception of
    a chosen type while it is set, counting each call."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.snapshot_failure: type[BaseException] | None = None
        self.generation_failure: type[BaseException] | None = None
        self.snapshots = 0
        self.generations = 0

    def snapshot(self) -> Snapshot:
        """Count, then fail or read."""
        self.snapshots += 1
        if self.snapshot_failure is not None:
            raise self.snapshot_failure
        return super().snapshot()

    def generation(self) -> int:
        """Count, then fail or read."""
        self.generations += 1
        if self.generation_failure is not None:
            raise self.generation_failure
        return super().generation()


def watch_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the watcher logged."""
    return [r.getMessage() for r in caplog.records if r.name == "llmpool.pool.watch"]


@pytest.mark.parametrize("failure", [RecursionError, asyncio.CancelledError])
def test_a_reload_that_keeps_failing_is_logged_once_and_later_changes_are_seen(
    failure: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    """A reload raising anything (a RecursionError from a row, even a BaseException) is
    logged once, not at every poll; the watcher goes on and shows the change once it loads."""
    caplog.set_level("WARNING", logger="llmpool.pool.watch")
    store = FailingStore([fake("A", 1, "a")])
    pool = LLMPool(repository=store, poll_interval=0.01)
    try:
        assert [c.name for c in pool.get_llms_from_db()] == ["A"]
        store.snapshot_failure = failure
        store.add(fake("B", 2, "b"))
        wait_until(lambda: store.snapshots >= 6)  # five failed reloads
        store.snapshot_failure = None
        wait_until(lambda: [c.name for c in pool.get_llms_from_db()] == ["A", "B"])
    finally:
        pool.close()
    messages = watch_messages(caplog)
    assert sum("cannot reload the LLM table" in m for m in messages) == 1
    assert sum("reloads the LLM table again" in m for m in messages) == 1
    assert not any("cannot read" in m or "can read" in m for m in messages)


def test_a_poll_raising_any_exception_leaves_the_watcher_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Polls that raise, a BaseException included, are an outage logged once; the watcher
    goes on and sees the change made meanwhile."""
    caplog.set_level("WARNING", logger="llmpool.pool.watch")
    store = FailingStore([fake("A", 1, "a")])
    pool = LLMPool(repository=store, poll_interval=0.01)
    try:
        pool.get_llms_from_db()
        store.generation_failure = asyncio.CancelledError
        polls = store.generations
        wait_until(lambda: store.generations >= polls + 5)
        store.add(fake("B", 2, "b"))
        store.generation_failure = None
        wait_until(lambda: [c.name for c in pool.get_llms_from_db()] == ["A", "B"])
        assert pool._snapshots.watcher is not None and pool._snapshots.watcher.alive
    finally:
        pool.close()
    messages = watch_messages(caplog)
    assert sum("cannot read the LLM table" in m for m in messages) == 1
    assert sum("can read the LLM table again" in m for m in messages) == 1


def test_a_notify_nested_too_deep_for_json_keeps_listen_open(
    counting_watcher: tuple[Watcher, CountingSQLStore], pg_url: str
) -> None:
    """A NOTIFY payload nested past the JSON parser's depth counts as relevant (one poll); the
    LISTEN connection stays open. (Other workers' writes NOTIFY the same channel for their own
    schemas: those count as notifications, never as polls.)"""
    watcher, store = counting_watcher
    backend, polls = watcher.backend_pid, store.polls
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_notify('llmpool_changes', %s)", ("[" * 3000 + "]" * 3000,))
        wait_until(lambda: watcher.notifications >= 1 and store.polls == polls + 1, timeout=3)
    assert watcher.listening and watcher.backend_pid == backend
