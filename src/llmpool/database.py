"""Where the database is, how to connect to it, and how its errors read.

The URL comes from, in order: an explicit URL or engine; ``LLMPOOL_DATABASE_URL``;
``DATABASE_URL`` (the variable the seed's services already set); else an embedded SQLite file,
``./llmpool.sqlite3`` or the path in ``LLMPOOL_SQLITE_PATH``. ``postgresql://``, ``postgres://``
and ``postgresql+psycopg://`` all mean psycopg 3.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from llmpool.errors import ConflictError, DatabaseError, DatabaseUnavailableError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CONNECT_TIMEOUT",
    "SUPPORTED_SCHEMES",
    "create_async_engine",
    "create_engine",
    "db_errors",
    "mask_url",
    "resolve_database_url",
    "write_transaction",
]

#: Seconds to wait for a PostgreSQL connection before `DatabaseUnavailableError`.
CONNECT_TIMEOUT = 5

#: What `resolve_database_url` accepts, as messages say it.
SUPPORTED_SCHEMES = (
    "postgresql:// (also postgres://, postgresql+psycopg://; psycopg 3) and sqlite:// "
    "(embedded; sqlite+aiosqlite:// for async)"
)

_UNIQUE_RULES = {
    "uq_llms_default_per_scope": "only one default LLM per scope",
    "uq_llms_scope_name": "LLM names are unique within a scope",
}


def resolve_database_url(url: str | URL | None = None) -> URL:
    """Return the database URL llmpool uses, normalized to a SQLAlchemy `URL`.

    Args:
        url: An explicit URL; when ``None``, the environment decides (see the module docstring).

    Returns:
        The URL, with PostgreSQL URLs set to the psycopg 3 driver.

    Raises:
        DatabaseError: The URL cannot be parsed (the message never shows its password).

    Example:
        >>> resolve_database_url("postgresql://u:p@db/app").drivername
        'postgresql+psycopg'
    """
    if url is None:
        url = (
            os.environ.get("LLMPOOL_DATABASE_URL")
            or os.environ.get("DATABASE_URL")
            or "sqlite:///" + os.environ.get("LLMPOOL_SQLITE_PATH", "llmpool.sqlite3")
        )
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        msg = "Could not parse the database URL; expected e.g. postgresql://user:pass@host/db"
        raise DatabaseError(msg) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        scheme = parsed.drivername
        msg = (
            f"Unsupported database URL scheme {scheme!r} ({mask_url(parsed)}): llmpool "
            f"supports {SUPPORTED_SCHEMES}"
        )
        raise DatabaseError(msg)
    return parsed


def mask_url(url: str | URL | Engine) -> str:
    """Render a URL with its password replaced by ``***``.

    Example:
        >>> mask_url("postgresql://app:hunter2@db:5432/app")
        'postgresql://app:***@db:5432/app'
    """
    if isinstance(url, Engine):
        url = url.url
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "<unparseable database URL>"
    return parsed.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
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


def create_engine(url_or_engine: Engine | str | URL | None = None, **kwargs: Any) -> Engine:
    """Return an engine for llmpool's database; an `Engine` passes through unchanged.

    PostgreSQL gets a bounded connect timeout (`CONNECT_TIMEOUT`) and pre-ping; SQLite gets
    WAL, a busy timeout and foreign keys.

    Args:
        url_or_engine: An engine, a URL, or ``None`` for the configured database.
        **kwargs: Passed to `sqlalchemy.create_engine`.

    Returns:
        The engine. No connection is opened yet.

    Example:
        >>> create_engine("sqlite://").dialect.name
        'sqlite'
    """
    if isinstance(url_or_engine, Engine):
        return url_or_engine
    url = resolve_database_url(url_or_engine)
    with _driver_errors(url):
        if url.get_backend_name() == "postgresql":
            connect_args = {"connect_timeout": CONNECT_TIMEOUT, **kwargs.pop("connect_args", {})}
            kwargs.setdefault("pool_pre_ping", True)
            return sa.create_engine(url, connect_args=connect_args, **kwargs)
        connect_args = {"isolation_level": None, **kwargs.pop("connect_args", {})}
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
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
    url_or_engine: AsyncEngine | str | URL | None = None, **kwargs: Any
) -> AsyncEngine:
    """Return an async engine (psycopg 3 async for PostgreSQL, aiosqlite for SQLite).

    Args:
        url_or_engine: An async engine, a URL, or ``None`` for the configured database.
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
            connect_args = {"connect_timeout": CONNECT_TIMEOUT, **kwargs.pop("connect_args", {})}
            kwargs.setdefault("pool_pre_ping", True)
            return _create(url, connect_args=connect_args, **kwargs)
        url = url.set(drivername="sqlite+aiosqlite")
        engine = _create(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine


def _constraint_rule(error: exc.IntegrityError) -> str | None:
    text = str(error.orig)
    for name, rule in _UNIQUE_RULES.items():
        if name in text:
            return rule
    # SQLite names the columns, not the index: (scope, name) is the name rule, and the partial
    # index on (scope) WHERE is_default reads "UNIQUE constraint failed: llms.scope".
    if "llms.scope, llms.name" in text:
        return _UNIQUE_RULES["uq_llms_scope_name"]
    first = (text.strip().splitlines() or [""])[0]
    if re.search(r"llms\.scope(, llms\.is_default)?\s*$", first):
        return _UNIQUE_RULES["uq_llms_default_per_scope"]
    return None


@contextmanager
def db_errors(engine: Engine | URL | str, what: str | Callable[[], str]) -> Iterator[None]:
    """Translate driver errors raised inside the block into llmpool's errors.

    Args:
        engine: The engine (or URL) in use, named in messages with its password masked.
        what: What was being done, e.g. ``"set the default LLM"``; a callable is asked when an
            error happens, so a write can name its row once it has read it.

    Raises:
        DatabaseUnavailableError: The database could not be reached.
        ConflictError: A uniqueness rule was broken or the write lost a race.
        DatabaseError: Any other database failure, including a refused login or a missing
            database (named, with the driver's first message line and the password masked).
    """
    try:
        yield
    except exc.IntegrityError as error:
        doing = _doing(what)
        rule = _constraint_rule(error)
        if rule is None:
            msg = f"Could not {doing}: the database refused it ({_describe(error)})"
            raise DatabaseError(msg) from error
        msg = f"Could not {doing}: {rule}"
        raise ConflictError(msg) from error
    except exc.OperationalError as error:
        doing = _doing(what)
        text = str(error.orig).lower()
        if any(word in text for word in ("deadlock", "could not serialize", "database is locked")):
            msg = f"Could not {doing}: it conflicted with a concurrent write; retry"
            raise ConflictError(msg) from error
        if _is_refusal(text):
            refused, leaked = _refused(engine, doing, error)
            # Keep the driver's error as the cause, unless its text holds the password.
            if leaked:
                raise refused from None
            raise refused from error
        if error.connection_invalidated or _is_connect_error(text):
            raise _unreachable(engine, doing, text) from None
        if "no such table" in text:
            raise _missing_tables(doing) from error
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.ProgrammingError as error:
        doing = _doing(what)
        if "does not exist" in str(error.orig) and "relation" in str(error.orig):
            raise _missing_tables(doing) from error
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.DBAPIError as error:
        doing = _doing(what)
        if error.connection_invalidated:
            raise _unreachable(engine, doing, "") from None
        msg = f"Could not {doing}: {_describe(error)}"
        raise DatabaseError(msg) from error
    except exc.SQLAlchemyError as error:
        doing = _doing(what)
        msg = f"Could not {doing}: {type(error).__name__}: {str(error).strip()[:200]}"
        raise DatabaseError(msg) from error


# libpq / psycopg texts of a server that answered and refused: wrong password, unknown role,
# unknown database, pg_hba.conf. Reachable, so not DatabaseUnavailableError, and no retry helps.
_REFUSALS = (
    "password authentication failed",
    "authentication failed",
    "no password supplied",
    "pg_hba.conf",
    "does not exist",
    "permission denied for database",
)


def _is_refusal(text: str) -> bool:
    at_connect = "connection to server" in text or "connection failed" in text
    return at_connect and any(word in text for word in _REFUSALS)


def _refused(
    engine: Engine | URL | str, doing: str, error: exc.DBAPIError
) -> tuple[DatabaseError, bool]:
    url = _url_of(engine)
    password = _password_of(url)
    first = (str(error.orig).strip().splitlines() or [""])[0]
    # "connection failed: connection to server at "h", port 5432 failed: FATAL:  database "x"
    # does not exist": the part after FATAL is what the admin needs.
    reason = re.split(r"FATAL:\s*", first)[-1].strip() or type(error.orig).__name__
    leaked = bool(password and password in str(error))
    if password:
        reason = reason.replace(password, "***")
    msg = f"Could not {doing}: database {mask_url(url)} refused the connection: {reason}"
    return DatabaseError(msg), leaked


def _unreachable(engine: Engine | URL | str, doing: str, text: str) -> DatabaseUnavailableError:
    url = _url_of(engine)
    hint = ""
    if "unable to open database" in text:
        hint = " (unable to open the database file: does its directory exist, and is it a file?)"
    msg = f"Could not {doing}: database {mask_url(url)} is unreachable{hint}"
    return DatabaseUnavailableError(msg)


def _password_of(url: URL | str) -> str | None:
    try:
        return make_url(url).password
    except exc.ArgumentError:
        return None


def _doing(what: str | Callable[[], str]) -> str:
    return what() if callable(what) else what


def _missing_tables(what: str) -> DatabaseError:
    return DatabaseError(
        f"Could not {what}: llmpool's tables are missing; run `llmpool migrate` "
        "(or llmpool.migrate()) against this database first"
    )


def _url_of(engine: Engine | URL | str) -> URL | str:
    return engine.url if isinstance(engine, Engine) else engine


def _describe(error: exc.DBAPIError) -> str:
    cause: BaseException = error.orig or error
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _is_connect_error(text: str) -> bool:
    return any(
        word in text
        for word in (
            "connection refused",
            "could not connect",
            "connection failed",
            "timeout expired",
            "timed out",
            "server closed the connection",
            "unable to open database",
            "connection is closed",
            "terminating connection",
            "no route to host",
            "name or service not known",
        )
    )
