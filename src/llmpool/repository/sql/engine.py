"""Where the database is and how to connect to it.

The URL comes from, in order: an explicit URL or engine; ``LLMPOOL_DATABASE_URL``;
``DATABASE_URL`` (the variable the seed's services already set); else an embedded SQLite file,
``./llmpool.sqlite3`` or the path in ``LLMPOOL_SQLITE_PATH``. ``postgresql://``, ``postgres://``
and ``postgresql+psycopg://`` all mean psycopg 3.

Every wait on an engine llmpool makes is bounded: see `llmpool.repository.sql.bounds`.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from llmpool.errors import DatabaseError
from llmpool.repository.sql.bounds import (
    ENGINE_BOUNDS,
    SQLITE_BOUNDS,
    SQLITE_BUSY_TIMEOUT,
    install_bounds,
    postgres_settings,
)
from llmpool.repository.sql.url import SUPPORTED_SCHEMES, mask_url, resolve_database_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "create_async_engine",
    "create_engine",
    "hold_in_transaction",
    "write_transaction",
]


logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={round(SQLITE_BUSY_TIMEOUT * 1000)}")
    # Switching a new database file to WAL needs a lock that the busy timeout does not always
    # wait for (several processes opening one new file at once): retry for a few seconds.
    deadline = time.monotonic() + 10
    while True:
        try:
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()
            if mode and str(mode[0]).lower() in ("wal", "memory"):
                break
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    cursor.close()


def _sqlite_begin(conn: Any) -> None:
    # pysqlite's own transaction handling is off (isolation_level=None below); begin explicitly
    # so that SQLAlchemy's transaction is a real SQLite transaction. Writers take the write lock
    # at BEGIN (IMMEDIATE), so concurrent writers queue on busy_timeout instead of failing on a
    # lock upgrade halfway through.
    immediate = conn.info.pop("llmpool_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(conn: Connection) -> Iterator[Connection]:
    """Run the block in one write transaction (``BEGIN IMMEDIATE`` on SQLite).

    Args:
        conn: A connection with no transaction in progress.

    Yields:
        The connection; the transaction commits when the block ends, rolls back on error.
    """
    if conn.dialect.name == "sqlite":
        conn.info["llmpool_immediate"] = True
    with conn.begin():
        yield conn


def hold_in_transaction(conn: Connection) -> None:
    """Make sure the database itself has begun the connection's transaction.

    pysqlite's default mode begins a transaction only before INSERT/UPDATE/DELETE: a CREATE
    TABLE or a SAVEPOINT before any of them runs outside one (a SAVEPOINT then commits when
    released). On such a connection this emits ``BEGIN``, so that the caller's commit or
    rollback covers everything that follows. Other drivers, and a SQLite connection already
    in a transaction (or in ``autocommit=True`` mode, whose commit does nothing), are left
    alone.

    Args:
        conn: A connection; the caller commits or rolls back its transaction.
    """
    if conn.dialect.name != "sqlite":
        return
    # The first statement makes SQLAlchemy begin its own transaction (where llmpool's engines
    # emit their BEGIN) before the driver's state is read.
    conn.exec_driver_sql("SELECT 1")
    driver = conn.connection.dbapi_connection
    if (
        driver is not None
        and not getattr(driver, "in_transaction", True)
        and getattr(driver, "autocommit", -1) is not True
    ):
        conn.exec_driver_sql("BEGIN")


def create_engine(
    url_or_engine: Engine | str | URL | None = None,
    *,
    statement_timeout: float | None = None,
    client_timeout: float | None = None,
    **kwargs: Any,
) -> Engine:
    """Return an engine for llmpool's database; an `Engine` passes through unchanged.

    PostgreSQL gets bounded waits (see the module docstring: connect timeout, server-side
    statement, lock and idle-in-transaction timeouts, keepalives, a client-side bound per round
    trip) and pre-ping; SQLite gets WAL, a busy timeout and foreign keys.

    Args:
        url_or_engine: An engine, a URL, or ``None`` for the configured database.
        statement_timeout: Seconds a PostgreSQL statement may run (a wait for a lock: two
            thirds of it); ``0`` sets no server-side timeout. Default:
            ``llmpool_statement_timeout`` in the URL, else what the URL's ``options`` set, else
            `STATEMENT_TIMEOUT`.
        client_timeout: Seconds one round trip may wait before llmpool shuts the connection
            down; ``0`` for no such bound. Default: ``llmpool_client_timeout`` in the URL, else
            the statement timeout plus `CLIENT_TIMEOUT_MARGIN`.
        **kwargs: Passed to `sqlalchemy.create_engine`.

    Returns:
        The engine. No connection is opened yet.

    Raises:
        DatabaseError: The URL is not supported, or a timeout is not a number of seconds.

    Example:
        >>> create_engine("sqlite://").dialect.name
        'sqlite'
    """
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    url = resolve_database_url(url_or_engine)
    with _driver_errors(url):
        if url.get_backend_name() == "postgresql":
            bounds, connect_args = postgres_settings(
                url, kwargs.pop("connect_args", {}), statement_timeout, client_timeout
            )
            kwargs.setdefault("pool_pre_ping", True)
            engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
            install_bounds(engine, bounds)
            return engine
        connect_args = {"isolation_level": None, **kwargs.pop("connect_args", {})}
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        ENGINE_BOUNDS[engine] = SQLITE_BOUNDS
        return engine


@contextmanager
def _driver_errors(url: URL) -> Iterator[None]:
    # A driver that is not installed (asyncpg, aiosqlite...) or not a sync/async driver where
    # one is needed: a typed error naming the scheme, never a ModuleNotFoundError.
    try:
        yield
    except (ImportError, exc.NoSuchModuleError, exc.InvalidRequestError) as error:
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        msg = (
            f"Cannot use database URL scheme {url.drivername!r} ({mask_url(url)}): its driver "
            f"cannot be loaded ({detail}); llmpool supports {SUPPORTED_SCHEMES}"
        )
        raise DatabaseError(msg) from error


def create_async_engine(
    url_or_engine: AsyncEngine | str | URL | None = None,
    *,
    statement_timeout: float | None = None,
    client_timeout: float | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """Return an async engine (psycopg 3 async for PostgreSQL, aiosqlite for SQLite).

    Its waits are bounded as `create_engine`'s are.

    Args:
        url_or_engine: An async engine, a URL, or ``None`` for the configured database.
        statement_timeout: As for `create_engine`.
        client_timeout: As for `create_engine`.
        **kwargs: Passed to `sqlalchemy.ext.asyncio.create_async_engine`.

    Returns:
        The async engine.

    Example:
        >>> create_async_engine("sqlite://").dialect.driver
        'aiosqlite'
    """
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.ext.asyncio import create_async_engine as _create

    if isinstance(url_or_engine, AsyncEngine):
        return url_or_engine
    url = resolve_database_url(url_or_engine)
    with _driver_errors(url):
        if url.get_backend_name() == "postgresql":
            bounds, connect_args = postgres_settings(
                url, kwargs.pop("connect_args", {}), statement_timeout, client_timeout
            )
            kwargs.setdefault("pool_pre_ping", True)
            engine = _create(url, connect_args=connect_args, **kwargs)
            install_bounds(engine.sync_engine, bounds)
            return engine
        url = url.set(drivername="sqlite+aiosqlite")
        engine = _create(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        ENGINE_BOUNDS[engine.sync_engine] = SQLITE_BOUNDS
        return engine
