"""Seeing changes to the `llms` table without a restart.

On PostgreSQL a daemon thread LISTENs on ``llmpool_changes`` (the migrations' trigger sends a
NOTIFY for every INSERT, UPDATE and DELETE, with the schema in its payload) and reloads as soon
as a NOTIFY for its own schema arrives. A safety-net poll of the repository's cheap
``generation()`` query runs on its own timer every ``poll_interval`` seconds, so a missed NOTIFY
is still seen; where NOTIFY is unavailable (SQLite, an in-memory repository, a proxy that drops
it, a lost connection) that poll is all there is.

Each state is tracked and each change of state is logged once:

* the table cannot be read (the database is down): the pool keeps serving its last good
  snapshot, and the first successful poll after the outage refreshes it;
* the table can be read but reloading it fails (a row the parser cannot handle, a failing
  ``on_change``): the last good snapshot is served, and the reload is retried at each poll;
* LISTEN is unavailable while the table can be read: the watcher polls, and reconnects with a
  backoff that doubles from ``listen_retry`` up to ``listen_retry_max`` seconds;
* all are fine again.

Nothing a poll, a reload or a NOTIFY raises stops the thread (only `Watcher.stop` does): a
running pool keeps seeing changes once the cause is gone.

The LISTEN connection is opened through the engine (`Engine.raw_connection`, then detached from
its pool), so a ``creator`` or ``connect_args`` the application gave its engine apply to it as
well. It needs the psycopg 3 driver. The thread waits for notifications in short slices, so
`Watcher.stop` returns promptly, and it closes the LISTEN connection on its way out. Setting
LISTEN up is bounded like any other round trip (`llmpool.repository.sql.bounds.bounded_round_trip`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from llmpool.repository import LLMRepository

__all__ = ["CHANNEL", "Watcher"]

logger = logging.getLogger(__name__)

#: The NOTIFY channel the migrations' trigger uses.
CHANNEL = "llmpool_changes"

#: Longest uninterrupted wait for a NOTIFY: bounds how long `Watcher.stop` takes.
NOTIFY_SLICE = 0.2

#: What the thread lets through: the interpreter shutting down or the user interrupting it.
_FATAL = (KeyboardInterrupt, SystemExit)


class _ListenUnsupportedError(Exception):
    """The engine's driver cannot LISTEN (not psycopg 3): poll for good, do not retry."""


class Watcher:
    """Calls ``on_change`` when the table's generation moves.

    Args:
        repository: Read for the generation.
        on_change: Called (from the watcher thread) with the new generation.
        poll_interval: Seconds between safety-net generation polls.
        engine: A PostgreSQL engine to LISTEN through; ``None`` to poll only.
        listen_retry: Seconds before the first attempt to reopen a lost LISTEN connection.
        listen_retry_max: The reconnect delay doubles up to this many seconds.

    Attributes:
        listening: A LISTEN connection is open and has caught up.
        backend_pid: The PostgreSQL backend of the LISTEN connection, while it is open.
        notifications: NOTIFYs received so far, for this schema or not.
        polls: Generation polls made so far (safety net, catch-up, or after a NOTIFY).
    """

    def __init__(
        self,
        repository: LLMRepository,
        on_change: Callable[[int], None],
        *,
        poll_interval: float = 1.0,
        engine: Engine | None = None,
        listen_retry: float = 1.0,
        listen_retry_max: float = 30.0,
    ) -> None:
        self.repository = repository
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.engine = engine
        self.listen_retry = listen_retry
        self.listen_retry_max = max(listen_retry_max, listen_retry)
        self.generation: int | None = None
        self.listening = False
        self.backend_pid: int | None = None
        self.notifications = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmpool-watcher", daemon=True)
        self._conn: Any = None
        self._schema: str | None = None
        self._retry_delay = listen_retry
        self._down = False
        self._reload_failing = False
        self._listen_down = False
        self._unexpected: set[str] = set()

    def start(self, generation: int) -> None:
        """Start watching from ``generation`` (the one already loaded)."""
        self.generation = generation
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it; the thread closes its LISTEN connection."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The thread is running."""
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._loop()
                except _FATAL:
                    raise
                except BaseException as error:  # the thread must go on
                    # Unexpected here (each step handles its own failures): start over after
                    # a pause, with a fresh LISTEN connection.
                    self._close_listener()
                    self._report_broken(error)
                    self._stop.wait(max(self.poll_interval, NOTIFY_SLICE))
        finally:
            self._close_listener()

    def _loop(self) -> None:
        want_listen = self.engine is not None and self.engine.dialect.name == "postgresql"
        next_poll = time.monotonic() + self.poll_interval
        next_listen = 0.0
        while not self._stop.is_set():
            if want_listen and self._conn is None and time.monotonic() >= next_listen:
                try:
                    self._connect()
                except _ListenUnsupportedError as error:
                    want_listen = False
                    self._report_listen_down(str(error))
                except Exception as error:  # the watcher must never die; polling takes over
                    self._report_listen_down(type(error).__name__)
                    next_listen = time.monotonic() + self._backoff()
                else:
                    next_poll = time.monotonic() + self.poll_interval
                    continue
            now = time.monotonic()
            if now >= next_poll:
                self._poll_once()
                next_poll = time.monotonic() + self.poll_interval
                continue
            wait = next_poll - now
            if self._conn is None:
                if want_listen:
                    wait = min(wait, max(0.0, next_listen - now))
                self._stop.wait(wait)
                continue
            try:
                relevant = self._wait_for_notify(min(wait, NOTIFY_SLICE))
            except Exception as error:  # the connection was lost: reconnect after a delay
                self._close_listener()
                self._report_listen_down(type(error).__name__)
                next_listen = time.monotonic() + self._backoff()
                continue
            if relevant:
                self._poll_once()
                next_poll = time.monotonic() + self.poll_interval

    def _backoff(self) -> float:
        delay = self._retry_delay
        self._retry_delay = min(delay * 2, self.listen_retry_max)
        return delay

    def _poll_once(self) -> None:
        self.polls += 1
        try:
            generation = self.repository.generation()
        except _FATAL:
            raise
        except BaseException as error:  # the database is down: serve the snapshot
            self._report_down(error)
            return
        self._report_up()
        if generation != self.generation:
            self._changed(generation)

    def _changed(self, generation: int) -> None:
        try:
            self.on_change(generation)
        except _FATAL:
            raise
        except BaseException as error:  # retried at the next poll
            self._report_reload_failing(error)
            return
        self._report_reloaded()
        self.generation = generation

    # -- LISTEN --------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._conn = self._open_listener()
        self._retry_delay = self.listen_retry
        self._poll_once()  # a change may have landed before LISTEN: catch up once now
        self.listening = True
        self._report_listen_up()

    def _open_listener(self) -> Any:
        assert self.engine is not None
        try:
            import psycopg
        except ImportError:
            msg = "LISTEN needs the psycopg 3 driver, which is not installed"
            raise _ListenUnsupportedError(msg) from None
        from llmpool.repository.sql.bounds import bounded_round_trip, database_bounds

        raw = self.engine.raw_connection()
        try:
            conn = raw.driver_connection  # read before detach, which drops the pool record
            raw.detach()  # ours for good: the engine's pool forgets it
            if not isinstance(conn, psycopg.Connection):
                msg = f"LISTEN needs the psycopg 3 driver, not {self.engine.dialect.driver}"
                raise _ListenUnsupportedError(msg)
            with bounded_round_trip(conn, database_bounds(self.engine).client):
                conn.rollback()  # a pre-ping may have opened a transaction
                conn.autocommit = True
                row = conn.execute("SELECT current_schema(), pg_backend_pid()").fetchone()
                conn.execute(f"LISTEN {CHANNEL}")
        except BaseException:
            raw.close()
            raise
        self._schema = row[0] if row else None
        self.backend_pid = row[1] if row else None
        return conn

    def _wait_for_notify(self, timeout: float) -> bool:
        relevant = False
        for notify in self._conn.notifies(timeout=max(0.0, timeout), stop_after=1):
            self.notifications += 1
            relevant = self._relevant(notify.payload, self._schema) or relevant
        return relevant

    def _close_listener(self) -> None:
        conn, self._conn = self._conn, None
        self.listening = False
        self.backend_pid = None
        if conn is not None:
            try:
                conn.close()
            except Exception as error:  # closing a broken connection may fail; it is gone
                logger.debug(
                    "closing the LISTEN connection failed: %s",
                    type(error).__name__,
                    extra=log_fields("listen_close_failed", error_class=type(error).__name__),
                )

    @staticmethod
    def _relevant(payload: str, schema: Any) -> bool:
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):  # not llmpool's payload: look, to be safe
            return True
        return not isinstance(data, dict) or data.get("schema") in (None, schema)

    # -- logging each change of state once -----------------------------------------------------

    def _report_down(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "llmpool cannot read the LLM table; serving the last good snapshot: %s",
                type(error).__name__,
                extra=log_fields("database_down", error_class=type(error).__name__),
            )

    def _report_up(self) -> None:
        if self._down:
            self._down = False
            logger.warning("llmpool can read the LLM table again", extra=log_fields("database_up"))

    def _report_reload_failing(self, error: BaseException) -> None:
        if not self._reload_failing:
            self._reload_failing = True
            logger.warning(
                "llmpool cannot reload the LLM table; serving the last good snapshot and "
                "retrying at each change check: %s",
                type(error).__name__,
                extra=log_fields("reload_failing", error_class=type(error).__name__),
            )

    def _report_reloaded(self) -> None:
        if self._reload_failing:
            self._reload_failing = False
            logger.warning("llmpool reloads the LLM table again", extra=log_fields("reload_ok"))

    def _report_broken(self, error: BaseException) -> None:
        # Once per kind of error: a cause that persists would otherwise log at every restart.
        if type(error).__name__ not in self._unexpected:
            self._unexpected.add(type(error).__name__)
            logger.warning(
                "llmpool's change watcher hit an unexpected %s; it goes on",
                type(error).__name__,
                extra=log_fields("watcher_error", error_class=type(error).__name__),
            )

    def _report_listen_down(self, reason: str) -> None:
        # ``reason`` is an exception's type name or a fixed text: never a URL or a secret.
        if not self._listen_down:
            self._listen_down = True
            logger.warning(
                "llmpool LISTEN unavailable (%s); polling every %s s for changes",
                reason,
                self.poll_interval,
                extra=log_fields("listen_down", reason=reason, poll_interval=self.poll_interval),
            )

    def _report_listen_up(self) -> None:
        if self._listen_down:
            self._listen_down = False
            logger.warning(
                "llmpool LISTEN works again; changes are seen at once",
                extra=log_fields("listen_up"),
            )
