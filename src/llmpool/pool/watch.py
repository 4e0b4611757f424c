"""Seeing changes to the `llms` table without a restart.

How depends on ``mode`` (`PoolOptions.changes`): ``"notify"``: a daemon thread LISTENs (through
the engine, psycopg 3) for the NOTIFY the migrations' trigger sends for its schema, with a
safety-net poll of the cheap ``generation()`` every ``poll_interval`` seconds; ``"auto"``: the
same, but behind a connection pooler (whose server connections change hands between
transactions, so a LISTEN does not hold) it polls instead; ``"poll"``: the poll alone, one short
transaction each, no session kept; ``"redis"``: one replica polls and announces through Redis
(`llmpool.pool.fanout`). Every wait between polls is jittered by `JITTER` so that a fleet's
polls spread out. Each change of state (the table unreadable, a reload failing, LISTEN
unavailable, and back) is logged once; nothing but `Watcher.stop` ends the thread.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmpool.contracts import log_fields

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from llmpool.pool.fanout import RedisFanout
    from llmpool.repository import LLMRepository


logger = logging.getLogger(__name__)

#: The NOTIFY channel the migrations' trigger uses.
CHANNEL = "llmpool_changes"

#: Longest uninterrupted wait for a NOTIFY: bounds how long `Watcher.stop` takes.
NOTIFY_SLICE = 0.2

#: Each wait between two polls is ``poll_interval`` times a random factor in ``1 ± JITTER``.
JITTER = 0.2

#: What the thread lets through: the interpreter shutting down or the user interrupting it.
_FATAL = (KeyboardInterrupt, SystemExit)


class _ListenUnsupportedError(Exception):
    """The engine's driver cannot LISTEN (not psycopg 3), or (``"auto"``) a pooler sits in
    between: poll for good, do not retry."""


def jittered(interval: float, rng: random.Random | None = None) -> float:
    """Return ``interval`` times a random factor in ``[1 - JITTER, 1 + JITTER]``."""
    return interval * (rng or random).uniform(1 - JITTER, 1 + JITTER)


class Watcher:
    """Calls ``on_change`` (from its thread) when the table's generation moves, seen as
    ``mode`` says (``engine``: the one LISTENed through; ``fanout``: with ``"redis"``).
    ``generation``, ``listening``, ``backend_pid``, ``notifications`` (for any schema),
    ``polls`` and the fan-out's ``leading``/``claims``/``messages``/``published`` tell what it
    is doing."""

    def __init__(
        self,
        repository: LLMRepository,
        on_change: Callable[[int], object],
        *,
        poll_interval: float = 1.0,
        engine: Engine | None = None,
        listen_retry: float = 1.0,
        listen_retry_max: float = 30.0,
        mode: str = "notify",
        fanout: RedisFanout | None = None,
        database_name: Callable[[], str] | None = None,
    ) -> None:
        self.repository = repository
        self.mode = mode
        self.fanout = fanout
        self._database_name = database_name
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
        self._failing: set[str] = set()  # the events of the states that are not well now

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
                    self._fan_in() if self.fanout is not None else self._loop()
                except _FATAL:
                    raise
                except BaseException as error:  # the thread must go on
                    # Unexpected here (each step handles its own failures): start over after
                    # a pause, with a fresh LISTEN connection; logged once per kind of error.
                    self._close_listener()
                    name = type(error).__name__
                    message = "llmpool's change watcher hit an unexpected %s; it goes on"
                    self._once(
                        "watcher_error", message, name, key=f"error {name}", error_class=name
                    )
                    self._stop.wait(max(self.poll_interval, NOTIFY_SLICE))
        finally:
            self._close_listener()
            if self.fanout is not None:
                self.fanout.close()

    def _next_poll(self) -> float:
        return time.monotonic() + jittered(self.poll_interval)

    def _loop(self) -> None:
        want_listen = (
            self.mode in ("notify", "auto")
            and self.engine is not None
            and self.engine.dialect.name == "postgresql"
        )
        next_poll = self._next_poll()
        next_listen = 0.0
        while not self._stop.is_set():
            if want_listen and self._conn is None and time.monotonic() >= next_listen:
                try:
                    self._connect()
                except _ListenUnsupportedError as error:
                    want_listen = False
                    self._listen_down(str(error))
                except Exception as error:  # the watcher must never die; polling takes over
                    self._listen_down(type(error).__name__)
                    next_listen = time.monotonic() + self._backoff()
                else:
                    next_poll = self._next_poll()
                    continue
            now = time.monotonic()
            if now >= next_poll:
                self._poll_once()
                next_poll = self._next_poll()
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
                self._listen_down(type(error).__name__)
                next_listen = time.monotonic() + self._backoff()
                continue
            if relevant:
                self._poll_once()
                next_poll = self._next_poll()

    def _fan_in(self) -> None:
        # ``"redis"``: claim the lease every poll interval; poll at that pace while leading or
        # while Redis is down, else at the follower's; between, wait for an announcement.
        from llmpool.pool.fanout import follower_interval

        fanout = self.fanout
        assert fanout is not None
        if fanout.channel is None:
            assert self._database_name is not None
            try:
                fanout.bind(self._database_name())
            except Exception:  # the database is down: poll (and log) until it answers
                self._poll_once()
                self._stop.wait(jittered(self.poll_interval))
                return
        next_claim = next_poll = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_claim:
                fanout.claim()
                next_claim = self._next_poll()
            if now >= next_poll:
                self._poll_once()
                steady = fanout.leading or not fanout.reachable
                interval = self.poll_interval if steady else follower_interval(self.poll_interval)
                next_poll = time.monotonic() + jittered(interval)
            wait = max(0.0, min(next_claim, next_poll) - time.monotonic())
            heard = fanout.wait(min(wait, NOTIFY_SLICE))
            if heard is None:  # Redis is down: sleep instead, polling at the steady pace
                self._stop.wait(min(wait, NOTIFY_SLICE))
                next_poll = min(next_poll, time.monotonic() + jittered(self.poll_interval))
            elif heard:
                self._poll_once()

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
            name = type(error).__name__
            message = "llmpool cannot read the LLM table; serving the last good snapshot: %s"
            self._once("database_down", message, name, error_class=name)
            return
        self._over("database_down", "database_up", "llmpool can read the LLM table again")
        if generation != self.generation:
            if self.fanout is not None and self.fanout.leading:
                self.fanout.publish(generation)
            self._changed(generation)

    def _changed(self, generation: int) -> None:
        try:
            self.on_change(generation)
        except _FATAL:
            raise
        except BaseException as error:  # retried at the next poll
            name = type(error).__name__
            message = (
                "llmpool cannot reload the LLM table; serving the last good snapshot and "
                "retrying at each change check: %s"
            )
            self._once("reload_failing", message, name, error_class=name)
            return
        self._over("reload_failing", "reload_ok", "llmpool reloads the LLM table again")
        self.generation = generation

    # -- LISTEN --------------------------------------------------------------------------------

    def _connect(self) -> None:
        self._conn = self._open_listener()
        self._retry_delay = self.listen_retry
        self._poll_once()  # a change may have landed before LISTEN: catch up once now
        self.listening = True
        self._over(
            "listen_down", "listen_up", "llmpool LISTEN works again; changes are seen at once"
        )

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
                if self.mode == "auto" and row is not None and row[1] != conn.info.backend_pid:
                    # A pooler gave the client a process id of its own: LISTEN would be held
                    # by a server connection that the next transaction may not get.
                    msg = "a connection pooler is in between: set changes='poll' or 'redis'"
                    raise _ListenUnsupportedError(msg)
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

    def _once(self, event: str, message: str, *args: object, key: str = "", **fields: Any) -> None:
        # Logged when the state (``key``, else ``event``) starts; again only after `_over`.
        key = key or event
        if key not in self._failing:
            self._failing.add(key)
            logger.warning(message, *args, extra=log_fields(event, **fields))

    def _over(self, key: str, event: str, message: str) -> None:
        if key in self._failing:
            self._failing.discard(key)
            logger.warning(message, extra=log_fields(event))

    def _listen_down(self, reason: str) -> None:
        # ``reason`` is an exception's type name or a fixed text: never a URL or a secret.
        message = "llmpool LISTEN unavailable (%s); polling every %s s for changes"
        interval = self.poll_interval
        self._once("listen_down", message, reason, interval, reason=reason, poll_interval=interval)
