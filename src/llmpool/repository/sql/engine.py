"""Engines for llmpool's database: PostgreSQL (psycopg 3) with bounded waits (`bounds`) and
pre-ping; SQLite with WAL, a busy timeout, foreign keys and real transactions.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from llmpool.errors import DatabaseError
from llmpool.repository.sql.bounds import (
    SQLITE_BOUNDS,
    SQLITE_BUSY_TIMEOUT,
    install_bounds,
    postgres_settings,
)
from llmpool.repository.sql.url import SUPPORTED_SCHEMES, mask_url, resolve_database_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["create_async_engine", "create_engine", "hold_in_transaction", "write_transaction"]


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
    # pysqlite's transaction handling is off (isolation_level=None): begin explicitly. Writers
    # lock at BEGIN IMMEDIATE, so they queue on busy_timeout instead of failing halfway.
    immediate = conn.info.pop("llmpool_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(conn: Connection) -> Iterator[Connection]:
    """Run the block in one write transaction (``BEGIN IMMEDIATE`` on SQLite), committed when
    it ends and rolled back on error; ``conn`` has no transaction running."""
    if conn.dialect.name == "sqlite":
        conn.info["llmpool_immediate"] = True
    with conn.begin():
        yield conn


def hold_in_transaction(conn: Connection) -> None:
    """Make sure the database itself has begun the connection's transaction (pysqlite's
    default mode begins one only before INSERT/UPDATE/DELETE, not a CREATE TABLE)."""
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
    """Return an engine for llmpool's database (``None``: the configured one); an `Engine`
    passes through unchanged, ``kwargs`` go to `sqlalchemy.create_engine`.

    Args:
        statement_timeout: Seconds a PostgreSQL statement may run; ``0`` sets none (see
            `bounds`).
        client_timeout: Seconds one round trip may wait before llmpool shuts the connection
            down; ``0`` for none.

    Raises:
        DatabaseError: The URL is not supported, or a timeout is not a number of seconds.

    Example:
        >>> create_engine("sqlite://").dialect.name
        'sqlite'
    """
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    engine: Engine = _made(
        sa.create_engine, url_or_engine, statement_timeout, client_timeout, kwargs
    )
    return engine


def create_async_engine(
    url_or_engine: AsyncEngine | str | URL | None = None,
    *,
    statement_timeout: float | None = None,
    client_timeout: float | None = None,
    **kwargs: Any,
) -> AsyncEngine:
    """Return an async engine (psycopg 3 async, aiosqlite), bounded as `create_engine`'s are."""
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.ext.asyncio import create_async_engine as create

    if isinstance(url_or_engine, AsyncEngine):
        return url_or_engine
    engine: AsyncEngine = _made(create, url_or_engine, statement_timeout, client_timeout, kwargs)
    return engine


def _made(
    create: Callable[..., Any],
    url_or_engine: str | URL | None,
    statement_timeout: float | None,
    client_timeout: float | None,
    kwargs: dict[str, Any],
) -> Any:
    url = resolve_database_url(url_or_engine)
    is_async = create is not sa.create_engine
    sqlite = url.get_backend_name() != "postgresql"
    driver_url = url
    try:
        if sqlite:
            bounds = SQLITE_BOUNDS
            if is_async:
                driver_url = url.set(drivername="sqlite+aiosqlite")
            else:
                given = kwargs.pop("connect_args", {})
                kwargs["connect_args"] = {
                    "isolation_level": None,
                    "check_same_thread": False,
                    **given,
                }
        else:
            bounds, kwargs["connect_args"] = postgres_settings(
                url, kwargs.pop("connect_args", {}), statement_timeout, client_timeout
            )
            kwargs.setdefault("pool_pre_ping", True)
        engine = create(driver_url, **kwargs)
    except (ImportError, exc.NoSuchModuleError, exc.InvalidRequestError) as error:
        # A driver not installed (asyncpg, aiosqlite...), or not a sync/async one where one is
        # needed: a typed error naming the scheme, never a ModuleNotFoundError.
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        msg = (
            f"Cannot use database URL scheme {url.drivername!r} ({mask_url(url)}): its driver "
            f"cannot be loaded ({detail}); llmpool supports {SUPPORTED_SCHEMES}"
        )
        raise DatabaseError(msg) from error
    sync = engine.sync_engine if is_async else engine
    install_bounds(sync, bounds)
    if sqlite:
        event.listen(sync, "connect", _sqlite_pragmas)
        if not is_async:
            event.listen(sync, "begin", _sqlite_begin)
    return engine
