"""How long a wait on the database may take, and what ends one that takes longer.

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
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine

from llmpool.errors import DatabaseError
from llmpool.repository.sql.url import mask_url, resolve_database_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "CLIENT_TIMEOUT_MARGIN",
    "CONNECT_TIMEOUT",
    "ENGINE_BOUNDS",
    "IDLE_IN_TRANSACTION_TIMEOUT",
    "KEEPALIVES",
    "MIGRATION_TIMEOUT",
    "SQLITE_BOUNDS",
    "SQLITE_BUSY_TIMEOUT",
    "STALLED",
    "STATEMENT_TIMEOUT",
    "DatabaseBounds",
    "bounded_round_trip",
    "database_bounds",
    "install_bounds",
    "longer_bounds",
    "postgres_settings",
    "sync_engine_of",
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


SQLITE_BOUNDS = DatabaseBounds(
    connect=None, statement=SQLITE_BUSY_TIMEOUT, client=None, lock=SQLITE_BUSY_TIMEOUT
)

#: The bounds of each engine llmpool made (an async engine under its ``sync_engine``).
ENGINE_BOUNDS: weakref.WeakKeyDictionary[Engine, DatabaseBounds] = weakref.WeakKeyDictionary()

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
    sync = sync_engine_of(engine)
    if isinstance(sync, Engine):
        known = ENGINE_BOUNDS.get(sync)
        if known is not None:
            return known
        url = sync.url
    else:
        try:
            url = resolve_database_url(sync)
        except DatabaseError:
            return DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None)
    if url.get_backend_name() != "postgresql":
        return SQLITE_BOUNDS
    try:
        return postgres_settings(url, {}, None, None)[0]
    except DatabaseError:
        return DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None)


def postgres_settings(
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


def install_bounds(engine: Engine, bounds: DatabaseBounds) -> None:
    ENGINE_BOUNDS[engine] = bounds
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

STALLED = "no answer from the database within"


def _stalled(seconds: float) -> str:
    return f"{STALLED} {seconds:g} s (the link or the server stalled); llmpool closed it"


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
                from llmpool.observe.fields import log_fields

                logger.warning(
                    "llmpool closed a database connection that had no answer for %g s",
                    seconds,
                    extra=log_fields("connection_closed", timeout=seconds),
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


def sync_engine_of(engine: Engine | AsyncEngine | URL | str) -> Engine | URL | str:
    return engine if isinstance(engine, (Engine, URL, str)) else engine.sync_engine
