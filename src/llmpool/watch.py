"""Seeing changes to the `llms` table without a restart.

On PostgreSQL a daemon thread LISTENs on ``llmpool_changes`` (the migrations' trigger sends a
NOTIFY for every INSERT, UPDATE and DELETE, with the schema in its payload) and reacts within
milliseconds. Between notifications, and everywhere NOTIFY is unavailable (SQLite, an in-memory
repository, a PostgreSQL proxy that drops it), the thread polls the repository's cheap
``generation()`` query every ``poll_interval`` seconds.

When the database is down the watcher keeps going: the pool keeps serving its last good
snapshot, and the first successful poll after the outage refreshes it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from llmpool.repository import LLMRepository

__all__ = ["CHANNEL", "Watcher"]

logger = logging.getLogger(__name__)

#: The NOTIFY channel the migrations' trigger uses.
CHANNEL = "llmpool_changes"


class Watcher:
    """Calls ``on_change`` when the table's generation moves.

    Args:
        repository: Read for the generation.
        on_change: Called (from the watcher thread) with the new generation.
        poll_interval: Seconds between generation polls.
        engine: A PostgreSQL engine to LISTEN through; ``None`` to poll only.
    """

    def __init__(
        self,
        repository: LLMRepository,
        on_change: Callable[[int], None],
        *,
        poll_interval: float = 1.0,
        engine: Engine | None = None,
    ) -> None:
        self.repository = repository
        self.on_change = on_change
        self.poll_interval = poll_interval
        self.engine = engine
        self.generation: int | None = None
        self.listening = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="llmpool-watcher", daemon=True)
        self._down = False

    def start(self, generation: int) -> None:
        """Start watching from ``generation`` (the one already loaded)."""
        self.generation = generation
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.engine is not None and self.engine.dialect.name == "postgresql":
                try:
                    self._listen()
                except Exception as error:  # the listener must never die; polling takes over
                    self.listening = False
                    self._report_down(error)
                    self._poll_once()
                    self._stop.wait(self.poll_interval)
            else:
                self._poll_once()
                self._stop.wait(self.poll_interval)

    def _poll_once(self) -> None:
        try:
            generation = self.repository.generation()
        except Exception as error:  # the database is down: keep serving the snapshot
            self._report_down(error)
            return
        self._report_up()
        if generation != self.generation:
            self._changed(generation)

    def _changed(self, generation: int) -> None:
        try:
            self.on_change(generation)
        except Exception as error:
            self._report_down(error)
            return
        self.generation = generation

    def _report_down(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "llmpool cannot read the LLM table; serving the last good snapshot: %s",
                type(error).__name__,
                extra={"error": type(error).__name__},
            )

    def _report_up(self) -> None:
        if self._down:
            self._down = False
            logger.warning("llmpool can read the LLM table again")

    def _listen(self) -> None:
        import psycopg

        assert self.engine is not None
        url = self.engine.url.set(drivername="postgresql")
        conninfo = url.render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            schema = conn.execute("SELECT current_schema()").fetchone()
            my_schema = schema[0] if schema else None
            conn.execute(f"LISTEN {CHANNEL}")
            self.listening = True
            # A change may have landed between the snapshot and LISTEN: check once now.
            self._poll_once()
            while not self._stop.is_set():
                moved = False
                for notify in conn.notifies(timeout=self.poll_interval, stop_after=1):
                    moved = moved or self._relevant(notify.payload, my_schema)
                if moved:
                    self._poll_once()
                elif not self._stop.is_set():
                    self._poll_once()  # the safety net: a missed NOTIFY is seen within a poll

    @staticmethod
    def _relevant(payload: str, schema: Any) -> bool:
        try:
            data = json.loads(payload)
        except ValueError:
            return True
        return not isinstance(data, dict) or data.get("schema") in (None, schema)
