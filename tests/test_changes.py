"""How changes reach a pool (`PoolOptions.changes`), directly and through PgBouncer in
transaction mode: writes, migrations and live reloads both ways; polling's jitter and sessions;
Redis fan-out, and its fall-back to polling while Redis is down (real Redis, database
``LLMPOOL_TEST_REDIS_DB``: the only keys written are the leases, given back on close)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import time
import uuid
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from helpers import fake, wait_until

from llmpool import InvalidOptionError
from llmpool.pool.facade import LLMPool
from llmpool.pool.fanout import follower_interval
from llmpool.pool.watch import JITTER, jittered
from llmpool.repository.sql.engine import create_engine
from llmpool.repository.sql.migrate import load_migrations, migrate
from llmpool.repository.sql.store import SQLStore

pytestmark = pytest.mark.postgres

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"


@pytest.fixture(params=["direct", "pgbouncer"])
def route(request: pytest.FixtureRequest) -> str:
    """Each test once on a direct PostgreSQL URL, once through PgBouncer in transaction mode."""
    return str(request.param)


@pytest.fixture
def url(route: str, pg_url: str, request: pytest.FixtureRequest) -> str:
    """A migrated schema's URL, by ``route``."""
    return (
        pg_url if route == "direct" else str(request.getfixturevalue("pgbouncer").url_for(pg_url))
    )


def direct(url: str) -> Any:
    """A psycopg connection to the test server itself (autocommit)."""
    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def test_engines_run_one_statement_many_times_from_two_clients(url: str) -> None:
    """llmpool's engines prepare no statement: past psycopg's default threshold (5 runs in one
    checkout, a migration's reads), one client's prepared statement would meet the other's on
    a server connection PgBouncer shares ("prepared statement already exists")."""
    engines = [create_engine(url), create_engine(url)]
    try:
        with engines[0].connect() as one, engines[1].connect() as two:
            for value in range(8):
                for conn in (one, two):
                    assert (
                        conn.execute(sa.text("SELECT :v + 1"), {"v": value}).scalar() == value + 1
                    )
                    conn.commit()
    finally:
        for engine in engines:
            engine.dispose()


def test_writes_and_reads_interleaved_from_two_stores_work(url: str) -> None:
    """Two stores writing and reading the same rows in turn see each other's writes."""
    one, two = SQLStore(url, validators=()), SQLStore(url, validators=())
    try:
        rows = {
            store: store.add(fake(f"Row {name}", 1, "x")) for store, name in ((one, 1), (two, 2))
        }
        for _ in range(8):
            for store, row in rows.items():
                assert store.get(row.id).name == row.name
                store.update(row.id, {"priority": store.get(row.id).priority + 1})
        assert [r.priority for r in one.list_llms()] == [9, 9]
    finally:
        one.close()
        two.close()


def test_a_write_by_one_pool_reaches_a_polling_pool(url: str) -> None:
    """A change committed through one pool is served by another, polling, pool."""
    writer = LLMPool(url, poll_interval=0)
    reader = LLMPool(url, changes="poll", poll_interval=0.05)
    try:
        first = writer.store.add(fake("First", 1, "first"))
        writer.store.add(fake("Second", 2, "second"))
        live = reader.get_llm_with_fallback()
        assert live.invoke("x").content == "first"
        writer.store.disable(first.id)
        wait_until(lambda: live.invoke("x").content == "second", timeout=3)
        assert reader.watcher is not None and reader.watcher.mode == "poll"
        assert reader.watcher.backend_pid is None and reader.watcher.polls > 0
    finally:
        reader.close()
        writer.close()


def test_migrate_applies_once_and_leaves_no_lock_behind(
    route: str, postgres_url: str, request: pytest.FixtureRequest
) -> None:
    """Migrating an empty schema applies every file, again nothing, and leaves no advisory lock
    or changed setting on any server connection."""
    url = postgres_url
    if route == "pgbouncer":
        url = request.getfixturevalue("pgbouncer").url_for(postgres_url)
    assert migrate(url) == [m.name for m in load_migrations("postgresql")]
    assert migrate(url) == []
    with direct(postgres_url) as conn:
        # A lock left behind is held by a session that is idle; another test's migration,
        # running meanwhile, holds its lock inside a transaction.
        locks = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND a.state = 'idle'"
        )
        assert locks.fetchone() == (0,)


def test_unset_changes_listen_directly_and_poll_behind_pgbouncer(
    route: str, url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``changes=None`` LISTENs on a direct URL, and behind PgBouncer polls (said once)."""
    caplog.set_level(logging.WARNING, logger="llmpool")
    pool = LLMPool(url, poll_interval=0.05)
    try:
        pool.snapshot()
        watcher = pool.watcher
        assert watcher is not None
        if route == "direct":
            wait_until(lambda: watcher.listening)
        else:
            wait_until(lambda: watcher.polls >= 3)
            assert not watcher.listening
            [record] = [r for r in caplog.records if getattr(r, "event", "") == "listen_down"]
            assert "pooler" in record.getMessage()
    finally:
        pool.close()


def test_poll_mode_holds_no_session_between_polls(route: str, url: str, pg_url: str) -> None:
    """Polling holds no session-level state on the server: no LISTEN backend, no session left
    inside a transaction, however many polls ran (while a notify pool's LISTEN shows)."""
    name = f"llmpool-{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in url else "?"
    pools = [
        LLMPool(f"{url}{sep}application_name={name}", changes="poll", poll_interval=0.1)
        for _ in "ab"
    ]
    try:
        for pool in pools:
            pool.snapshot()
        wait_until(lambda: all(p.watcher is not None and p.watcher.polls >= 3 for p in pools))
        with direct(pg_url) as conn:
            # A poll's own transaction is open for a moment: some sample must find none (on a
            # busy machine a poll's thread can be held inside one for a while).
            samples: list[Any] = []
            deadline = time.monotonic() + 5
            while (0, 0) not in samples and time.monotonic() < deadline:
                samples.append(
                    conn.execute(
                        "SELECT count(*) FILTER (WHERE query LIKE 'LISTEN%%'),"
                        " count(*) FILTER (WHERE state LIKE 'idle in%%') FROM pg_stat_activity"
                        " WHERE application_name = %s AND pid <> pg_backend_pid()",
                        (name,),
                    ).fetchone()
                )
                time.sleep(0.005)
        assert (0, 0) in samples and all(listen == 0 for listen, _ in samples)
    finally:
        for pool in pools:
            pool.close()


def test_poll_waits_stay_within_the_jitter_and_spread() -> None:
    """Every wait between polls lies within ``1 ± JITTER`` of the interval, and they spread."""
    rng = random.Random(7)
    waits = [jittered(2.0, rng) for _ in range(2000)]
    assert 2.0 * (1 - JITTER) <= min(waits) < 2.0 * (1 - JITTER / 2)
    assert 2.0 * (1 + JITTER / 2) < max(waits) <= 2.0 * (1 + JITTER)


def test_changes_options_that_cannot_work_are_refused(sqlite_url: str) -> None:
    """``changes='notify'`` on SQLite and ``changes='redis'`` without ``redis`` name the option."""
    with pytest.raises(InvalidOptionError, match="changes='notify' needs PostgreSQL") as info:
        LLMPool(sqlite_url, changes="notify")
    assert info.value.option == "changes"
    with pytest.raises(InvalidOptionError, match="needs the redis option"):
        LLMPool(sqlite_url, changes="redis")


@pytest.fixture
def redis_ready() -> None:
    """Fail unless the test Redis answers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.fail("Redis on 127.0.0.1:6379 is required for this test")
    finally:
        client.close()


def test_redis_fanout_reaches_a_follower_before_its_safety_net_poll(
    redis_ready: None, pg_url: str, pgbouncer: Any
) -> None:
    """Through PgBouncer, one pool leads; a write by a third store reaches the other pool
    through Redis pub/sub long before its slow safety-net poll, and the lease is given back."""
    url = pgbouncer.url_for(pg_url)
    pools = [LLMPool(url, changes="redis", redis=REDIS_URL, poll_interval=0.05) for _ in "ab"]
    writer = SQLStore(url, validators=())
    try:
        for pool in pools:
            pool.snapshot()
        watchers = [pool.watcher for pool in pools]
        fanouts = [w.fanout for w in watchers if w is not None and w.fanout is not None]
        wait_until(
            lambda: (
                sum(f.leading for f in fanouts) == 1
                and all(f.messages == 0 for f in fanouts)
                and all(w and w.polls for w in watchers)
            )
        )
        follower = next(p for p, f in zip(pools, fanouts, strict=True) if not f.leading)
        fanout = next(f for f in fanouts if not f.leading)
        polls = follower.watcher.polls if follower.watcher else 0
        before = follower.snapshot().generation
        writer.add(fake("New", 1, "new"))
        took = wait_until(lambda: follower.snapshot().generation != before, timeout=3)
        assert took < follower_interval(0.05) / 10
        assert fanout.messages >= 1 and sum(f.published for f in fanouts) >= 1
        assert follower.watcher is not None and follower.watcher.polls <= polls + 2
        lease = f"{fanout.channel}:leader"
    finally:
        writer.close()
        for pool in pools:
            pool.close()
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    assert not client.exists(lease)
    client.close()


def test_redis_down_every_replica_polls_and_says_so_once_each_way(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis unreachable, a write is seen by polling and ``redis_down`` is logged once;
    when Redis comes up on that port, ``redis_up`` is logged once and a replica leads."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    caplog.set_level(logging.WARNING, logger="llmpool")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = LLMPool(pg_url, changes="redis", redis=f"redis://127.0.0.1:{port}/0", poll_interval=0.05)
    writer = SQLStore(pg_url, validators=())
    redis_process: subprocess.Popen[bytes] | None = None
    try:
        before = pool.snapshot().generation
        writer.add(fake("New", 1, "new"))
        wait_until(lambda: pool.snapshot().generation != before, timeout=3)
        events = lambda name: [r for r in caplog.records if getattr(r, "event", "") == name]  # noqa: E731
        assert len(events("redis_down")) == 1
        redis_process = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        fanout = pool.watcher.fanout if pool.watcher else None
        assert fanout is not None
        wait_until(lambda: fanout.leading, timeout=5)
        assert len(events("redis_down")) == 1 and len(events("redis_up")) == 1
    finally:
        writer.close()
        pool.close()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(5)
