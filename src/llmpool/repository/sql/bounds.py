"""How long a wait on the database may take, and what ends one that takes longer; and the one
psycopg setting that keeps PostgreSQL engines working through a pooler in transaction mode
(``prepare_threshold=None``: no server-side prepared statements).

PostgreSQL gets connect, statement, lock (two thirds of it) and idle-in-transaction timeouts
(libpq ``options``), TCP keepalives, and a watchdog that shuts a stalled round trip's socket
down past the client timeout. SQLite waits only for a lock. Each is set by keyword or in the
URL (``?llmpool_statement_timeout=2&llmpool_client_timeout=3``); what the URL or
``connect_args`` set is kept, and ``llmpool_statement_timeout=0`` sends no ``options``.
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

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from llmpool.contracts import log_fields
from llmpool.errors import DatabaseError
from llmpool.repository.sql.url import mask_url, resolve_database_url

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

#: Seconds to wait for a PostgreSQL connection (libpq counts values under 2 as 2).
CONNECT_TIMEOUT = 5

#: Seconds one statement may run on the PostgreSQL server (its lock waits: two thirds of it).
STATEMENT_TIMEOUT = 15.0

#: Seconds the PostgreSQL server lets a session sit idle inside a transaction.
IDLE_IN_TRANSACTION_TIMEOUT = 60.0

#: Seconds added to the statement timeout for the client's bound of one round trip, so that
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

#: Seconds each statement of a migration may take, the wait for another process's included.
MIGRATION_TIMEOUT = 600.0


@dataclass(frozen=True)
class DatabaseBounds:
    """The longest each wait on one database may take, in seconds (``None``: no bound);
    ``client`` is one round trip as llmpool sees it (past it, the socket is shut down)."""

    connect: float | None
    statement: float | None
    client: float | None
    lock: float | None = None

    @property
    def operation(self) -> float | None:
        """The longest one read may take: a reconnect, a pre-ping, the statement, a rollback."""
        if self.client is not None:
            return (self.connect or 0.0) + 3 * self.client
        return self.statement + CLIENT_TIMEOUT_MARGIN if self.statement is not None else None


SQLITE_BOUNDS = DatabaseBounds(
    connect=None, statement=SQLITE_BUSY_TIMEOUT, client=None, lock=SQLITE_BUSY_TIMEOUT
)
_CONNECT_ONLY = DatabaseBounds(connect=CONNECT_TIMEOUT, statement=None, client=None)

#: The bounds of each engine llmpool made (an async engine under its ``sync_engine``).
_ENGINE_BOUNDS: weakref.WeakKeyDictionary[Engine, DatabaseBounds] = weakref.WeakKeyDictionary()

#: llmpool's URL query parameters: read by llmpool, never sent to libpq.
_KNOBS = ("llmpool_statement_timeout", "llmpool_client_timeout")


def database_bounds(engine: Engine | AsyncEngine | URL | str) -> DatabaseBounds:
    """Return the bounds of an engine llmpool made, or those it would give an engine of a URL."""
    sync = sync_engine_of(engine)
    if isinstance(sync, Engine) and sync in _ENGINE_BOUNDS:
        return _ENGINE_BOUNDS[sync]
    try:
        url = sync.url if isinstance(sync, Engine) else resolve_database_url(sync)
        if url.get_backend_name() != "postgresql":
            return SQLITE_BOUNDS
        return postgres_settings(url, {}, None, None)[0]
    except DatabaseError:
        return _CONNECT_ONLY


def postgres_settings(
    url: URL,
    connect_args: dict[str, Any],
    statement_timeout: float | None,
    client_timeout: float | None,
) -> tuple[DatabaseBounds, dict[str, Any]]:
    """Return an engine's bounds and its ``connect_args`` with llmpool's defaults added."""
    given: dict[str, Any] = {**url.query, **connect_args}
    args = dict(connect_args)
    if "connect_timeout" not in given:
        args["connect_timeout"] = CONNECT_TIMEOUT
    if url.get_driver_name() != "psycopg":
        # Another driver has its own names for these, and the watchdog needs psycopg's socket.
        return _CONNECT_ONLY, args
    if "prepare_threshold" not in given:
        # psycopg prepares a statement run 5 times on a connection; behind a pooler in
        # transaction mode the next transaction may get a server connection that lacks it.
        args["prepare_threshold"] = None
    args.update({key: value for key, value in KEEPALIVES.items() if key not in given})
    connect = _seconds(url, "connect_timeout", {**given, **args}["connect_timeout"])
    options = str(given.get("options") or "")
    knob = _seconds(url, _KNOBS[0], statement_timeout, knob=True)
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
        if not own_lock and statement is not None:
            lock = statement * 2 / 3
            settings.append(("lock_timeout", lock))
        if not own_idle:
            settings.append(("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION_TIMEOUT))
    if settings:
        added = " ".join(f"-c {name}={max(1, round(value * 1000))}" for name, value in settings)
        args["options"] = f"{options} {added}".strip()
    client = _seconds(url, _KNOBS[1], client_timeout, knob=True)
    if client is None and statement is not None:
        client = statement + CLIENT_TIMEOUT_MARGIN
    connect = max(2.0, connect) if connect else None
    bounds = DatabaseBounds(connect=connect, statement=statement, client=client or None, lock=lock)
    return bounds, args


def _seconds(url: URL, name: str, value: Any, *, knob: bool = False) -> float | None:
    if value is None and knob:
        value = url.query.get(name)
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
    # Whether libpq ``options`` set ``name`` ("-c statement_timeout=5s"), and its seconds (None
    # for 0); the last one counts, an unreadable value reads as llmpool's default.
    pattern = r"(?:-c\s*|--)" + name.replace("_", "[-_]") + r"\s*=\s*(\S+)"
    found = re.findall(pattern, options)
    if not found:
        return False, None
    match = _TIME_VALUE.match(found[-1].strip("'\""))
    if match is None:
        return True, STATEMENT_TIMEOUT
    return True, float(match[1]) * _TIME_UNITS[match[2] or ""] or None


def install_bounds(engine: Engine, bounds: DatabaseBounds) -> None:
    """Record an engine's bounds; past its client bound, each round trip's socket is shut."""
    _ENGINE_BOUNDS[engine] = bounds
    event.listen(engine, "do_connect", _drop_knobs)
    if bounds.client is not None:
        # SQLAlchemy has no event after a commit, a rollback or a pre-ping, so the engine's own
        # dialect (one per engine) gets each of its round-trip methods wrapped.
        dialect = engine.dialect
        for name in _ROUND_TRIPS:
            setattr(dialect, name, _bounded(getattr(dialect, name), bounds.client, dialect))


_ROUND_TRIPS = (
    "do_execute",
    "do_executemany",
    "do_execute_no_params",
    "do_commit",
    "do_rollback",
    "do_ping",
)


def _drop_knobs(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
    for key in _KNOBS:
        cparams.pop(key, None)


def _bounded(method: Callable[..., Any], seconds: float, dialect: Any) -> Callable[..., Any]:
    def bounded(target: Any, *args: Any, **kwargs: Any) -> Any:
        pgconn = _pgconn_of(target)
        if pgconn is None:
            return method(target, *args, **kwargs)
        with _watched(pgconn, _LONGER.get(pgconn, seconds), dialect.loaded_dbapi):
            return method(target, *args, **kwargs)

    return bounded


@contextmanager
def _watched(pgconn: Any, seconds: float, dbapi: Any) -> Iterator[None]:
    # Past ``seconds`` the watchdog shuts the socket down; the driver's error then says so.
    _WATCHDOG.arm(pgconn, seconds)
    try:
        yield
    except dbapi.Error as error:
        if _WATCHDOG.disarm(pgconn):
            msg = f"{STALLED} {seconds:g} s (the link or the server stalled); llmpool closed it"
            raise dbapi.OperationalError(msg) from error
        raise
    finally:
        _WATCHDOG.disarm(pgconn)


@contextmanager
def bounded_round_trip(connection: Any, seconds: float | None) -> Iterator[None]:
    """Bound the waits on a psycopg connection used outside SQLAlchemy (a LISTEN connection)."""
    pgconn = _pgconn_of(connection) if seconds is not None else None
    if pgconn is None or seconds is None:
        yield
        return
    import psycopg

    with _watched(pgconn, seconds, psycopg):
        yield


@contextmanager
def longer_bounds(conn: Connection, seconds: float) -> Iterator[Connection]:
    """Let each round trip in the block take up to ``seconds`` (a migration, an advisory lock)
    before the client gives up; the server's timeouts are each transaction's (`local_timeouts`)."""
    pgconn = _pgconn_of(conn.connection) if conn.dialect.name == "postgresql" else None
    if pgconn is not None:
        _LONGER[pgconn] = seconds + CLIENT_TIMEOUT_MARGIN
    try:
        yield conn
    finally:
        if pgconn is not None:
            _LONGER.pop(pgconn, None)


def local_timeouts(conn: Connection, seconds: float) -> None:
    """Let each statement of the running transaction, and its lock waits, take up to
    ``seconds`` on PostgreSQL (``SET LOCAL``: over at its end, so a pooler in transaction mode
    hands no changed session on)."""
    if conn.dialect.name == "postgresql":
        ms = max(1, round(seconds * 1000))
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ms}")


#: Round-trip bounds raised for one connection by `longer_bounds`.
_LONGER: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

#: How a round trip the watchdog ended starts its error (`errors` reads the seconds after it).
STALLED = "no answer from the database within"


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
    """One daemon thread that shuts down (not closes: the driver owns it) the socket of a round
    trip past its deadline, waking whatever is blocked on it."""

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
    """Return an async engine's sync engine; anything else as it is."""
    return engine if isinstance(engine, (Engine, URL, str)) else engine.sync_engine
