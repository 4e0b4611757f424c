"""Every wait on the database has a bound: a stalled link or a silent server ends in a typed error.

A `StallingProxy` between llmpool and the local PostgreSQL forwards until it is told to hold,
then keeps every byte (the peers' kernels still acknowledge packets, keepalives included), as a
middlebox that stopped forwarding would. The bounds are made small through the URL's knobs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from helpers import StallingProxy, row

from llmpool.errors import ConflictError, DatabaseError, DatabaseUnavailableError
from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.async_store import AsyncSQLRepository
from llmpool.repository.sql.bounds import (
    IDLE_IN_TRANSACTION_TIMEOUT,
    KEEPALIVES,
    SQLITE_BUSY_TIMEOUT,
    STATEMENT_TIMEOUT,
    database_bounds,
)
from llmpool.repository.sql.engine import create_engine
from llmpool.repository.sql.errors import db_errors
from llmpool.repository.sql.store import SQLStore
from llmpool.repository.sql.url import mask_url, resolve_database_url

CONNECT = 2.0  # libpq's smallest connect timeout
STATEMENT = 0.5
CLIENT = 0.75
MARGIN = 1.0
PASSWORD = "s3cret-pw"


@pytest.fixture
def proxy(pg_url: str, postgres_server_url: str) -> Iterator[StallingProxy]:
    """A stalling proxy to the test PostgreSQL, stopped (freeing held sessions) before the
    test's schema is dropped."""
    server = sa.engine.make_url(postgres_server_url)
    stalling = StallingProxy(server.host or "127.0.0.1", server.port or 5432)
    yield stalling
    stalling.stop()


@pytest.fixture
def stalled_url(pg_url: str, proxy: StallingProxy) -> str:
    """The migrated test schema through the proxy, with a password (trust auth ignores it)
    and bounds small enough for a fast test."""
    url = sa.engine.make_url(pg_url).set(port=proxy.port, password=PASSWORD)
    url = url.update_query_dict(
        {
            "connect_timeout": str(int(CONNECT)),
            "llmpool_statement_timeout": str(STATEMENT),
            "llmpool_client_timeout": str(CLIENT),
        }
    )
    return url.render_as_string(hide_password=False)


def hold_before(engine: sa.Engine, proxy: StallingProxy, prefix: str) -> list[float]:
    """Make the proxy hold just before ``engine`` sends a statement starting with ``prefix``
    (or commits, for ``"COMMIT"``); return the list the hold time is appended to."""
    held: list[float] = []

    def hold(*_args: Any) -> None:
        proxy.hold()
        held.append(time.monotonic())

    def hold_on(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.startswith(prefix):
            hold()

    if prefix == "COMMIT":
        sa.event.listen(engine, "commit", hold)
    else:
        sa.event.listen(engine, "before_cursor_execute", hold_on)
    return held


def assert_named_timeout(error: BaseException, seconds: float, url: str) -> None:
    """The error says what timed out after how long, naming the database at ``url`` without
    its password."""
    message = str(error)
    assert isinstance(error, DatabaseUnavailableError)
    assert f"timed out after {seconds:g} s" in message
    assert f"database {mask_url(resolve_database_url(url))} " in message and ":***@" in message
    assert PASSWORD not in message


@pytest.mark.postgres
@pytest.mark.parametrize("stall_at", ["INSERT INTO llms", "COMMIT"])
def test_admin_write_on_a_stalled_link_fails_within_the_client_bound(
    stalled_url: str, proxy: StallingProxy, pg_url: str, stall_at: str
) -> None:
    """A link that stalls during an admin write (its INSERT or its COMMIT) fails the write
    within the client bound, and nothing is written."""
    store = SQLStore(stalled_url)
    held = hold_before(store.engine, proxy, stall_at)
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            store.add(row())
        assert held and time.monotonic() - held[0] < CLIENT + MARGIN
        assert_named_timeout(info.value, CLIENT, stalled_url)
        assert "LLM 'GPT-4'" in str(info.value)
    finally:
        proxy.stop()
        store.engine.dispose()
    direct = SQLStore(pg_url)
    assert direct.list_llms() == []
    direct.engine.dispose()


@pytest.mark.postgres
def test_read_on_a_stalled_link_fails_within_the_client_bound(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """A link that stalls while a read waits for its rows fails it within the client bound."""
    store = SQLStore(stalled_url)
    held = hold_before(store.engine, proxy, "SELECT")
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            store.list_llms()
        assert time.monotonic() - held[0] < CLIENT + MARGIN
        assert_named_timeout(info.value, CLIENT, stalled_url)
    finally:
        store.engine.dispose()


@pytest.mark.postgres
def test_pooled_connection_on_a_stalled_link_fails_within_ping_and_connect_bounds(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """A link that stalled while its connection sat in the pool: the pre-ping gives up
    within the client bound, the reconnect within the connect timeout, and the read fails."""
    store = SQLStore(stalled_url)
    try:
        assert store.list_llms() == []
        proxy.hold()
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as info:
            store.list_llms()
        assert time.monotonic() - started < CLIENT + CONNECT + MARGIN
        assert_named_timeout(info.value, CONNECT, stalled_url)
    finally:
        store.engine.dispose()


@pytest.mark.postgres
async def test_async_read_on_a_stalled_link_fails_within_the_client_bound(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """The async read side is bounded the same way, with the same typed error."""
    repo = AsyncSQLRepository(stalled_url)
    held = hold_before(repo.engine.sync_engine, proxy, "SELECT")
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            await repo.list_llms()
        assert time.monotonic() - held[0] < CLIENT + MARGIN
        assert_named_timeout(info.value, CLIENT, stalled_url)
    finally:
        await repo.aclose()


@pytest.mark.postgres
def test_first_load_of_a_pool_on_a_stalled_link_fails_within_the_client_bound(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """A link that stalls during a pool's first load fails the caller within the bound."""
    pool = LLMPool(stalled_url, poll_interval=0)
    held = hold_before(pool.repository.engine, proxy, "SELECT")  # type: ignore[attr-defined]
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            pool.get_llms_from_db()
        assert time.monotonic() - held[0] < CLIENT + MARGIN
        assert_named_timeout(info.value, CLIENT, stalled_url)
    finally:
        pool.close()


@pytest.mark.postgres
def test_ten_cold_callers_on_a_stalled_link_fail_together(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """Ten threads asking a cold pool while the link holds from the start share one load:
    they fail at about the same time, within the connect timeout; the next call loads again."""
    proxy.hold()
    pool = LLMPool(stalled_url, poll_interval=0)
    failures: list[tuple[float, BaseException]] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            pool.get_llms_from_db()
        except Exception as error:
            with lock:
                failures.append((time.monotonic(), error))

    threads = [threading.Thread(target=call) for _ in range(10)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        times = [when for when, _ in failures]
        assert len(failures) == 10
        assert max(times) - min(times) < 1.0
        assert max(times) - started < CONNECT + MARGIN
        for _, error in failures:
            assert_named_timeout(error, CONNECT, stalled_url)
        proxy.release()
        assert pool.get_llms_from_db() == []
    finally:
        pool.close()


@pytest.mark.postgres
async def test_async_cold_callers_on_a_stalled_link_fail_together(
    stalled_url: str, proxy: StallingProxy
) -> None:
    """Tasks asking a cold pool through the async engine share one load and its failure."""
    proxy.hold()
    pool = LLMPool(stalled_url, poll_interval=0)
    failed: list[float] = []

    async def call() -> BaseException:
        try:
            await pool.aget_llms_from_db()
        except Exception as error:
            failed.append(time.monotonic())
            return error
        raise AssertionError("the read should fail")

    started = time.monotonic()
    try:
        errors = await asyncio.gather(*(call() for _ in range(10)))
        assert max(failed) - min(failed) < 0.5
        assert max(failed) - started < CONNECT + MARGIN
        for error in errors:
            assert_named_timeout(error, CONNECT, stalled_url)
        proxy.release()
        assert await pool.aget_llms_from_db() == []
    finally:
        await pool.aclose()


@pytest.mark.postgres
def test_sessions_carry_server_side_timeouts_and_keepalives(pg_url: str) -> None:
    """An engine llmpool makes sets statement, lock and idle-in-transaction timeouts on the
    server and TCP keepalives on the socket, keeping the URL's own options."""
    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            show: dict[str, str] = dict(
                conn.exec_driver_sql(
                    "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', "
                    "'lock_timeout', 'idle_in_transaction_session_timeout', 'search_path')"
                ).all()
            )
            parameters = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert show["statement_timeout"] == str(round(STATEMENT_TIMEOUT * 1000))
    assert show["lock_timeout"] == str(round(STATEMENT_TIMEOUT * 1000 * 2 / 3))
    idle = show["idle_in_transaction_session_timeout"]
    assert idle == str(int(IDLE_IN_TRANSACTION_TIMEOUT * 1000))
    assert show["search_path"].startswith("t_")
    for name, value in KEEPALIVES.items():
        assert parameters[name] == str(value)
    bounds = database_bounds(engine)
    assert bounds.statement == STATEMENT_TIMEOUT
    assert bounds.client is not None and bounds.client > STATEMENT_TIMEOUT


@pytest.mark.postgres
def test_the_callers_own_settings_are_kept(pg_url: str) -> None:
    """A statement timeout in the URL's options, a connect timeout in its query and a
    keepalive setting in connect_args are the caller's: llmpool keeps them, and its client
    bound follows the caller's statement timeout."""
    url = sa.engine.make_url(pg_url)
    options = f"{url.query['options']} -c statement_timeout=7s"
    mine = url.update_query_dict({"options": options, "connect_timeout": "3"})
    engine = create_engine(mine, connect_args={"keepalives_idle": 42})
    try:
        with engine.connect() as conn:
            timeout = conn.exec_driver_sql("SHOW statement_timeout").scalar_one()
            parameters = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    finally:
        engine.dispose()
    assert timeout == "7s"
    assert parameters["connect_timeout"] == "3" and parameters["keepalives_idle"] == "42"
    bounds = database_bounds(engine)
    assert (bounds.connect, bounds.statement) == (3.0, 7.0)
    assert bounds.client is not None and bounds.client > 7.0


@pytest.mark.postgres
def test_a_zero_statement_timeout_sends_no_options(pg_url: str) -> None:
    """``llmpool_statement_timeout=0`` (for a pooler that refuses ``options``) sets nothing on
    the server and, with no client timeout given, starts no watchdog."""
    url = sa.engine.make_url(pg_url).update_query_dict({"llmpool_statement_timeout": "0"})
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "0"
    finally:
        engine.dispose()
    assert database_bounds(engine).client is None


@pytest.mark.postgres
def test_a_statement_past_the_statement_timeout_is_cancelled_by_the_server(pg_url: str) -> None:
    """A statement running past the statement timeout is cancelled by the server and reported
    as a timeout of that many seconds."""
    engine = create_engine(pg_url, statement_timeout=STATEMENT, client_timeout=5)
    started = time.monotonic()
    try:
        with (
            pytest.raises(DatabaseUnavailableError) as info,
            db_errors(engine, "read the clock"),
            engine.connect() as conn,
        ):
            conn.exec_driver_sql("SELECT pg_sleep(5)")
    finally:
        engine.dispose()
    assert time.monotonic() - started < STATEMENT + MARGIN
    assert f"timed out after {STATEMENT:g} s (the server cancelled the statement)" in str(
        info.value
    )


@pytest.mark.postgres
def test_a_write_waiting_for_a_held_row_lock_gives_up_after_the_lock_timeout(
    pg_url: str,
) -> None:
    """A write waiting for a row another session keeps locked fails after the lock timeout
    with a ConflictError that says to retry, instead of waiting for that session."""
    store = SQLStore(pg_url)
    added = store.add(row())
    slow = SQLStore(
        sa.engine.make_url(pg_url).update_query_dict({"llmpool_statement_timeout": str(STATEMENT)})
    )
    blocker = psycopg.connect(
        sa.engine.make_url(pg_url)
        .render_as_string(hide_password=False)
        .replace("postgresql+psycopg://", "postgresql://")
    )
    release = threading.Timer(5, blocker.rollback)  # today's code waits this long, then fails
    try:
        blocker.execute("SELECT id FROM llms WHERE id = %s FOR UPDATE", (added.id,))
        release.start()
        started = time.monotonic()
        with pytest.raises(ConflictError, match="lock_timeout") as info:
            slow.disable(added.id)
        assert time.monotonic() - started < STATEMENT + MARGIN
        assert "retry" in str(info.value)
    finally:
        release.cancel()
        blocker.close()
        slow.engine.dispose()
        store.engine.dispose()


def test_a_timeout_knob_that_is_not_a_number_is_a_typed_error() -> None:
    """A knob that is not a number of seconds is refused, naming it, never the password."""
    with pytest.raises(DatabaseError, match="llmpool_client_timeout") as info:
        create_engine("postgresql://app:hunter2-pw@db/app?llmpool_client_timeout=soon")
    assert "hunter2-pw" not in str(info.value)


def test_sqlite_waits_are_bounded_by_its_busy_timeout(sqlite_url: str) -> None:
    """SQLite's only wait, for another connection's lock, is bounded by its busy timeout."""
    engine = create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one()
    finally:
        engine.dispose()
    assert busy == SQLITE_BUSY_TIMEOUT * 1000
    assert database_bounds(engine).statement == SQLITE_BUSY_TIMEOUT
