"""Where the database is, how to connect to it, how long a wait on it may take, and how its
errors read.

The URL comes from, in order: an explicit URL or engine; ``LLMPOOL_DATABASE_URL``;
``DATABASE_URL`` (the variable the seed's services already set); else an embedded SQLite file,
``./llmpool.sqlite3`` or the path in ``LLMPOOL_SQLITE_PATH``. ``postgresql://``, ``postgres://``
and ``postgresql+psycopg://`` all mean psycopg 3.

Every wait on a database llmpool connects to is bounded (`DatabaseBounds`):

* connecting: libpq's ``connect_timeout`` (`CONNECT_TIMEOUT`);
* a statement on the PostgreSQL server: ``statement_timeout`` (`STATEMENT_TIMEOUT`),
  ``lock_timeout`` (two thirds of it, so that a wait for another session's lock ends first and
  reads as a conflict) and ``idle_in_transaction_session_timeout``
  (`IDLE_IN_TRANSACTION_TIMEOUT`), sent as libpq ``options``;
* a peer that vanished: TCP keepalives and ``tcp_user_timeout`` (`KEEPALIVES`);
* a link that stalls after connecting (a proxy or middlebox holding packets: the server never
  sees them, so its timeouts cannot fire, and the proxy's kernel answers keepalives): a
  watchdog shuts the connection's socket down when one round trip (a statement, a commit, a
  rollback, a pool pre-ping) has waited longer than the client timeout (the statement timeout
  plus `CLIENT_TIMEOUT_MARGIN`), so the wait ends in `DatabaseUnavailableError`;
* SQLite waits only for another connection's lock, and its busy timeout
  (`SQLITE_BUSY_TIMEOUT`) bounds that.

Each bound is set per engine by keyword (``create_engine(url, statement_timeout=2,
client_timeout=3)``) or in the URL (``?llmpool_statement_timeout=2&llmpool_client_timeout=3``,
and libpq's own ``connect_timeout``, ``keepalives_*`` and ``options``). What the URL or
``connect_args`` already set is kept. ``llmpool_statement_timeout=0`` sends no ``options`` at all
(for a pooler that refuses them, such as PgBouncer without ``ignore_startup_parameters =
options``: set the timeouts on the role instead) and, unless a client timeout is given, starts
no watchdog. An `Engine` passed in is used as it is.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from llmpool.errors import ConflictError, DatabaseError, DatabaseUnavailableError, LLMPoolError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CLIENT_TIMEOUT_MARGIN",
    "CONNECT_TIMEOUT",
    "IDLE_IN_TRANSACTION_TIMEOUT",
    "KEEPALIVES",
    "MIGRATION_TIMEOUT",
    "SQLITE_BUSY_TIMEOUT",
    "STATEMENT_TIMEOUT",
    "SUPPORTED_SCHEMES",
    "DatabaseBounds",
    "bounded_round_trip",
    "create_async_engine",
    "create_engine",
    "database_bounds",
    "db_errors",
    "longer_bounds",
    "mask_url",
    "resolve_database_url",
    "timeout_error",
    "write_transaction",
]

logger = logging.getLogger(__name__)

#: Seconds to wait for a PostgreSQL connection before `DatabaseUnavailableError` (libpq's
#: ``connect_timeout``, which counts values under 2 as 2).
CONNECT_TIMEOUT = 5

#: Seconds one statement may run on the PostgreSQL server; its waits for another session's
#: lock end at two thirds of it (``lock_timeout``).
STATEMENT_TIMEOUT = 15.0

#: Seconds the PostgreSQL server lets a session sit idle inside a transaction.
IDLE_IN_TRANSACTION_TIMEOUT = 60.0

#: Seconds added to the statement timeout for the client-side bound of one round trip, so that
#: the server's own cancellation, whose error is clearer, normally comes first.
CLIENT_TIMEOUT_MARGIN = 5.0

#: libpq settings that notice a vanished peer: probes after 10 s of silence, every 5 s, dead
#: after 3 unanswered; data unacknowledged for 30 s (``tcp_user_timeout``, in ms) too.
KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}

#: Seconds SQLite waits for another connection's lock (``busy_timeout``), its only wait.
SQLITE_BUSY_TIMEOUT = 30.0

#: Seconds each statement of a migration may take, waiting for another process's migration
#: included (see `longer_bounds`).
MIGRATION_TIMEOUT = 600.0

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
            bounds, connect_args = _postgres_settings(
                url, kwargs.pop("connect_args", {}), statement_timeout, client_timeout
            )
            kwargs.setdefault("pool_pre_ping", True)
            engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
            _install_bounds(engine, bounds)
            return engine
        connect_args = {"isolation_level": None, **kwargs.pop("connect_args", {})}
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        _BOUNDS[engine] = _SQLITE_BOUNDS
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
            bounds, connect_args = _postgres_settings(
                url, kwargs.pop("connect_args", {}), statement_timeout, client_timeout
            )
            kwargs.setdefault("pool_pre_ping", True)
            engine = _create(url, connect_args=connect_args, **kwargs)
            _install_bounds(engine.sync_engine, bounds)
            return engine
        url = url.set(drivername="sqlite+aiosqlite")
        engine = _create(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        _BOUNDS[engine.sync_engine] = _SQLITE_BOUNDS
        return engine


# -- bounds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseBounds:
    """The longest each wait on one database may take, in seconds; ``None`` where there is none.

    Attributes:
        connect: Opening a connection.
        statement: One statement on the server (PostgreSQL ``statement_timeout``; SQLite's
            busy timeout).
        lock: A wait for another session's lock (PostgreSQL ``lock_timeout``).
        client: One round trip as llmpool sees it (PostgreSQL): past it, llmpool shuts the
            connection's socket down and the wait ends in `DatabaseUnavailableError`.
    """

    connect: float | None
    statement: float | None
    client: float | None
    lock: float | None = None

    @property
    def operation(self) -> float | None:
        """The longest one read may take in all: a reconnect, then a pre-ping, the statement
        and the rollback, each within the client bound (SQLite: its busy timeout and a margin).
        """
        if self.client is not None:
            return (self.connect or 0.0) + 3 * self.client
        if self.statement is not None:
            return self.statement + CLIENT_TIMEOUT_MARGIN
        return None


_SQLITE_BOUNDS = DatabaseBounds(
    connect=None, statement=SQLITE_BUSY_TIMEOUT, client=None, lock=SQLITE_BUSY_TIMEOUT
)

#: The bounds of each engine llmpool made (an async engine under its ``sync_engine``).
_BOUNDS: weakref.WeakKeyDictionary[Engine, DatabaseBounds] = weakref.WeakKeyDictionary()

#: llmpool's URL query parameters: read by llmpool, never sent to libpq.
_KNOBS = ("llmpool_statement_timeout", "llmpool_client_timeout")


def database_bounds(engine: Engine | AsyncEngine | URL | str) -> DatabaseBounds:
    """Return the bounds on waits on this engine's database.

    Args:
        engine: An engine llmpool made (its bounds), another engine or a URL (the bounds
            llmpool would give an engine made from its URL).

    Returns:
        The bounds, in seconds.

    Example:
        >>> database_bounds("postgresql://db/app?llmpool_statement_timeout=2").client
        7.0
    """
    sync = _sync(engine)
    if isinstance(sync, Engine):
        known = _BOUNDS.get(sync)
        if known is not None:
            return known
        url = sync.url
    else:
        try:
            url = resolve_database_url(sync)
        except DatabaseError:
            return DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None)
    if url.get_backend_name() != "postgresql":
        return _SQLITE_BOUNDS
    try:
        return _postgres_settings(url, {}, None, None)[0]
    except DatabaseError:
        return DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None)


def _postgres_settings(
    url: URL,
    connect_args: dict[str, Any],
    statement_timeout: float | None,
    client_timeout: float | None,
) -> tuple[DatabaseBounds, dict[str, Any]]:
    # What the driver will be given (connect_args win over the URL's query), and the
    # connect_args that add llmpool's defaults to it.
    given: dict[str, Any] = {**url.query, **connect_args}
    args = dict(connect_args)
    if "connect_timeout" not in given:
        args["connect_timeout"] = CONNECT_TIMEOUT
    if url.get_driver_name() != "psycopg":
        # Another driver (given explicitly) has its own names for these: only the connect
        # timeout, as before, and no watchdog, which needs psycopg's socket.
        return DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None), args
    for key, value in KEEPALIVES.items():
        if key not in given:
            args[key] = value
    connect = _number(url, "connect_timeout", {**given, **args}["connect_timeout"])
    options = str(given.get("options") or "")
    knob = _number(url, "llmpool_statement_timeout", statement_timeout, _KNOBS[0])
    own_statement, statement = _option_seconds(options, "statement_timeout")
    own_lock, lock = _option_seconds(options, "lock_timeout")
    own_idle = _option_seconds(options, "idle_in_transaction_session_timeout")[0]
    settings: list[tuple[str, float]] = []
    if knob is not None:
        statement = knob or None
    elif not own_statement:
        statement = STATEMENT_TIMEOUT
    if statement is not None and (knob or not own_statement):
        settings.append(("statement_timeout", statement))
    if knob != 0:  # 0: no options at all
        if not own_lock:
            lock = statement * 2 / 3 if statement is not None else None
            if lock is not None:
                settings.append(("lock_timeout", lock))
        if not own_idle:
            settings.append(("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT))
    if settings:
        added = " ".join(f"-c {name}={max(1, round(value * 1000))}" for name, value in settings)
        args["options"] = f"{options} {added}".strip()
    client = _number(url, "llmpool_client_timeout", client_timeout, _KNOBS[1])
    if client is None:
        client = statement + CLIENT_TIMEOUT_MARGIN if statement is not None else None
    bounds = DatabaseBounds(
        connect=max(2.0, connect) if connect else None,
        statement=statement,
        client=client or None,
        lock=lock,
    )
    return bounds, args


def _number(url: URL, name: str, value: Any, query_key: str | None = None) -> float | None:
    if value is None and query_key is not None:
        value = url.query.get(query_key)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        msg = f"{name} must be a number of seconds, not {value!r} (database {mask_url(url)})"
        raise DatabaseError(msg)
    return seconds


_TIME_VALUE = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?$")
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _option_seconds(options: str, name: str) -> tuple[bool, float | None]:
    # A setting in libpq ``options`` ("-c statement_timeout=5s", "--statement-timeout=5000"):
    # whether it is there, and its seconds (None for 0, no timeout). The last one counts, as in
    # PostgreSQL; an unreadable value is taken as llmpool's default.
    pattern = r"(?:-c\s*|--)" + name.replace("_", "[-_]") + r"\s*=\s*(\S+)"
    found = re.findall(pattern, options)
    if not found:
        return False, None
    match = _TIME_VALUE.match(found[-1].strip("'\""))
    if match is None:
        return True, STATEMENT_TIMEOUT
    return True, float(match[1]) * _TIME_UNITS[match[2] or ""] or None


def _install_bounds(engine: Engine, bounds: DatabaseBounds) -> None:
    _BOUNDS[engine] = bounds
    event.listen(engine, "do_connect", _drop_knobs)
    if bounds.client is not None:
        _bound_round_trips(engine.dialect, bounds.client)


def _drop_knobs(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    for key in _KNOBS:
        cparams.pop(key, None)


#: The dialect methods through which every round trip of SQLAlchemy goes.
_ROUND_TRIPS = (
    "do_execute",
    "do_executemany",
    "do_execute_no_params",
    "do_commit",
    "do_rollback",
    "do_ping",
)


def _bound_round_trips(dialect: Any, seconds: float) -> None:
    # SQLAlchemy has no event after a commit, a rollback or a pool pre-ping, so the engine's own
    # dialect (one instance per engine) gets its round-trip methods wrapped: each runs under the
    # watchdog.
    for name in _ROUND_TRIPS:
        setattr(dialect, name, _bounded(getattr(dialect, name), seconds, dialect))


def _bounded(method: Callable[..., Any], seconds: float, dialect: Any) -> Callable[..., Any]:
    def bounded(target: Any, *args: Any, **kwargs: Any) -> Any:
        pgconn = _pgconn_of(target)
        if pgconn is None:
            return method(target, *args, **kwargs)
        limit = _LONGER.get(pgconn, seconds) if _LONGER else seconds
        _WATCHDOG.arm(pgconn, limit)
        try:
            return method(target, *args, **kwargs)
        except dialect.loaded_dbapi.Error as error:
            if _WATCHDOG.disarm(pgconn):
                raise dialect.loaded_dbapi.OperationalError(_stalled(limit)) from error
            raise
        finally:
            _WATCHDOG.disarm(pgconn)

    return bounded


@contextmanager
def bounded_round_trip(connection: Any, seconds: float | None) -> Iterator[None]:
    """Bound the waits on a psycopg connection used outside SQLAlchemy (a LISTEN connection).

    Args:
        connection: A psycopg connection (or SQLAlchemy's proxy of one).
        seconds: The bound; ``None`` for none.

    Yields:
        Nothing; past ``seconds`` the connection's socket is shut down and the blocked call
        raises the driver's ``OperationalError``, saying it had no answer in time.
    """
    pgconn = _pgconn_of(connection) if seconds is not None else None
    if pgconn is None or seconds is None:
        yield
        return
    import psycopg

    _WATCHDOG.arm(pgconn, seconds)
    try:
        yield
    except psycopg.Error as error:
        if _WATCHDOG.disarm(pgconn):
            raise psycopg.OperationalError(_stalled(seconds)) from error
        raise
    finally:
        _WATCHDOG.disarm(pgconn)


@contextmanager
def longer_bounds(conn: Connection, seconds: float) -> Iterator[Connection]:
    """Let each statement in the block take up to ``seconds`` (a migration, an advisory lock).

    On PostgreSQL the session's ``statement_timeout`` and ``lock_timeout`` are raised, and the
    client bound of its round trips with them; both are restored when the block ends (a
    connection that cannot be restored is invalidated, never pooled with the longer bounds).

    Args:
        conn: A connection with no transaction in progress.
        seconds: The bound for each statement.

    Yields:
        The connection.
    """
    if conn.dialect.name != "postgresql":
        yield conn
        return
    pgconn = _pgconn_of(conn.connection)
    ms = max(1, round(seconds * 1000))
    conn.exec_driver_sql(f"SET statement_timeout = {ms}")
    conn.exec_driver_sql(f"SET lock_timeout = {ms}")
    conn.commit()
    if pgconn is not None:
        _LONGER[pgconn] = seconds + CLIENT_TIMEOUT_MARGIN
    try:
        yield conn
    finally:
        if pgconn is not None:
            _LONGER.pop(pgconn, None)
        try:
            conn.rollback()
            conn.exec_driver_sql("RESET statement_timeout")
            conn.exec_driver_sql("RESET lock_timeout")
            conn.commit()
        except exc.SQLAlchemyError:
            conn.invalidate()


#: Round-trip bounds raised for one connection by `longer_bounds`.
_LONGER: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

_STALLED = "no answer from the database within"


def _stalled(seconds: float) -> str:
    return f"{_STALLED} {seconds:g} s (the link or the server stalled); llmpool closed it"


def _pgconn_of(target: Any) -> Any:
    # The libpq connection behind a psycopg connection or cursor, SQLAlchemy's pooled proxy of
    # one, or SQLAlchemy's async adapters of them.
    for _ in range(4):
        pgconn = getattr(target, "pgconn", None)
        if pgconn is not None:
            return pgconn
        target = (
            getattr(target, "driver_connection", None)
            or getattr(target, "_connection", None)
            or getattr(target, "connection", None)
        )
        if target is None:
            return None
    return None


class _Watchdog:
    """One daemon thread that shuts down the socket of a round trip past its deadline.

    Shutting the socket down (not closing it: the driver still owns the descriptor) wakes the
    thread or event loop blocked on it with an error, as a server that hung up would.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start afresh (also in a forked child, where the parent's thread and lock are gone)."""
        self._cond = threading.Condition(threading.Lock())
        self._armed: dict[Any, list[Any]] = {}  # pgconn -> [deadline, seconds, fired]
        self._wake_at: float | None = None  # when the thread wakes next; None: when notified
        self._thread: threading.Thread | None = None

    def arm(self, pgconn: Any, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._cond:
            self._armed[pgconn] = [deadline, seconds, False]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="llmpool-db-watchdog", daemon=True
                )
                self._thread.start()
            elif self._wake_at is None or deadline < self._wake_at:
                self._cond.notify()

    def disarm(self, pgconn: Any) -> bool:
        """Forget the round trip; return whether its socket was shut down."""
        with self._cond:
            entry = self._armed.pop(pgconn, None)
        return entry is not None and bool(entry[2])

    def _run(self) -> None:
        while True:
            closed: list[float] = []
            with self._cond:
                now = time.monotonic()
                nearest: float | None = None
                for pgconn, entry in self._armed.items():
                    if entry[2]:
                        continue
                    if entry[0] <= now:
                        # Under the lock: a round trip disarmed meanwhile is never shut down.
                        entry[2] = True
                        if _shut_down(pgconn):
                            closed.append(entry[1])
                    elif nearest is None or entry[0] < nearest:
                        nearest = entry[0]
                self._wake_at = nearest
                if not closed:
                    self._cond.wait(None if nearest is None else nearest - now)
            for seconds in closed:
                logger.warning(
                    "llmpool closed a database connection that had no answer for %g s",
                    seconds,
                    extra={"timeout": seconds},
                )


def _shut_down(pgconn: Any) -> bool:
    try:
        duplicate = os.dup(pgconn.socket)
    except Exception:  # already closed or broken: nothing is waiting on it
        return False
    with socket.socket(fileno=duplicate) as sock:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            return False
    return True


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset)


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
        DatabaseUnavailableError: The database could not be reached, did not answer within its
            bound ("timed out after N s"), or has too many connections.
        ConflictError: A uniqueness rule was broken, the write lost a race, or it waited for
            another session's lock past the lock timeout.
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
        waited = _waited_too_long(engine, doing, text)
        if waited is not None:
            raise waited from error
        if any(words in text for words in _TOO_MANY_CONNECTIONS):
            reason, leaked = _refusal_reason(engine, error)
            busy = DatabaseUnavailableError(
                f"Could not {doing}: database {mask_url(_url_of(engine))} has too many "
                f"connections and refused this one ({reason}); retry later, or raise its "
                "connection limit"
            )
            if leaked:
                raise busy from None
            raise busy from error
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


# A reachable server refusing because it is full (max_connections, a role's or a database's
# CONNECTION LIMIT, the slots reserved for superusers): transient, so DatabaseUnavailableError,
# which the watcher treats as an outage, but never called unreachable.
_TOO_MANY_CONNECTIONS = (
    "too many clients",
    "too many connections",
    "remaining connection slots are reserved",
)


def _waited_too_long(engine: Engine | URL | str, doing: str, text: str) -> LLMPoolError | None:
    where = f"database {mask_url(_url_of(engine))}"
    stalled = re.search(_STALLED + r" ([0-9.e+-]+) s", text)
    if stalled:
        return timeout_error(engine, doing, float(stalled[1]), "no answer; the link stalled")
    bounds = database_bounds(engine)
    if "timeout expired" in text:  # libpq / psycopg: the connect timeout
        return timeout_error(engine, doing, bounds.connect, "no answer while connecting")
    if "canceling statement due to statement timeout" in text:
        return timeout_error(engine, doing, bounds.statement, "the server cancelled the statement")
    if "canceling statement due to lock timeout" in text:
        after = f" for more than {bounds.lock:g} s" if bounds.lock else ""
        msg = (
            f"Could not {doing}: another session held a lock it needed{after} ({where}, "
            "lock_timeout); retry"
        )
        return ConflictError(msg)
    return None


def timeout_error(
    engine: Engine | AsyncEngine | URL | str,
    what: str | Callable[[], str],
    seconds: float | None,
    detail: str = "",
) -> DatabaseUnavailableError:
    """Return the error of a wait on the database that ran past its bound.

    Args:
        engine: The engine (or URL) in use, named with its password masked.
        what: What was being done, as for `db_errors`.
        seconds: The bound that ran out.
        detail: What was waited for.

    Returns:
        A `DatabaseUnavailableError` saying "timed out after N s".

    Example:
        >>> str(timeout_error("postgresql://app:pw@db/app", "list LLMs", 15))
        'Could not list LLMs: database postgresql://app:***@db/app timed out after 15 s'
    """
    url = _url_of(_sync(engine))
    after = f" after {seconds:g} s" if seconds else ""
    why = f" ({detail})" if detail else ""
    msg = f"Could not {_doing(what)}: database {mask_url(url)} timed out{after}{why}"
    return DatabaseUnavailableError(msg)


def _refused(
    engine: Engine | URL | str, doing: str, error: exc.DBAPIError
) -> tuple[DatabaseError, bool]:
    reason, leaked = _refusal_reason(engine, error)
    msg = (
        f"Could not {doing}: database {mask_url(_url_of(engine))} refused the connection: {reason}"
    )
    return DatabaseError(msg), leaked


def _refusal_reason(engine: Engine | URL | str, error: exc.DBAPIError) -> tuple[str, bool]:
    # The server's reason, with the password masked, and whether the driver's text held it.
    password = _password_of(_url_of(engine))
    first = (str(error.orig).strip().splitlines() or [""])[0]
    # "connection failed: connection to server at "h", port 5432 failed: FATAL:  database "x"
    # does not exist": the part after FATAL is what the admin needs.
    reason = re.split(r"FATAL:\s*", first)[-1].strip() or type(error.orig).__name__
    leaked = bool(password and password in str(error))
    if password:
        reason = reason.replace(password, "***")
    return reason, leaked


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
        "(or llmpool.repository.sql.migrate()) against this database first"
    )


def _sync(engine: Engine | AsyncEngine | URL | str) -> Engine | URL | str:
    return engine if isinstance(engine, (Engine, URL, str)) else engine.sync_engine


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
