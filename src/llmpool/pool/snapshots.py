"""The pool's snapshot of the ``llms`` table: loaded once, then kept current without a restart.

`SnapshotKeeper` loads every row once (sync, or async through the store's async reader), and
starts a `llmpool.pool.watch.Watcher` that reloads it when the table changes (PostgreSQL
LISTEN/NOTIFY through the store's engine, else polling). What the database needs (its engine,
its async reader, its migration) is the store's: the keeper only asks for it. Readers take the
current snapshot without a lock: a reload swaps it in one assignment, and a slower reload of an
older generation never replaces a newer one. While the database is down the last good snapshot
is served. A committed write reloads it at once: the pool subscribes `refresh_after_write` to
its store.

The first load is shared: however many threads (or tasks of one event loop) ask for the
snapshot before it is loaded, one load runs, and its result or its error reaches them all at
once. A caller arriving after a failed load starts a new one. Each load is bounded by the
database's own bounds (`llmpool.repository.sql.bounds.DatabaseBounds`), so no caller waits
longer than one load takes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.engine import Engine

    from llmpool.pool.watch import Watcher
    from llmpool.repository import AsyncLLMRepository, LLMRepository, Snapshot

__all__ = ["SnapshotKeeper"]

logger = logging.getLogger(__name__)


@runtime_checkable
class DatabaseStore(Protocol):
    """A repository over a SQL database that owns its engine, async reader and migration."""

    @property
    def engine(self) -> Engine:
        """The engine rows are read through (LISTENed through on PostgreSQL)."""
        ...

    @property
    def schema_pending(self) -> bool:
        """Whether a migration is still to run on first use."""
        ...

    def async_reader(self) -> AsyncLLMRepository | None:
        """The async read side, or ``None`` when async reads must run the sync engine."""
        ...


#: What a commit listener lets through: the interpreter shutting down or the user interrupting.
_FATAL = (KeyboardInterrupt, SystemExit)


class _InterruptedLoadError(Exception):
    """The thread running the first load was interrupted (KeyboardInterrupt, SystemExit)."""


class SnapshotKeeper:
    """The current snapshot of a repository, and the watcher that keeps it current.

    Args:
        repository: Where rows are read; a `DatabaseStore` lends its engine to the watcher
            and its async reader to `aget`.
        on_refresh: Called with the installed snapshot after each reload (under the load
            lock), e.g. to drop models of deleted rows.
        poll_interval: Seconds between change checks; ``0`` to never look.
        listen: LISTEN/NOTIFY on PostgreSQL.
        listen_retry: First delay before reopening a lost LISTEN connection.
    """

    def __init__(
        self,
        repository: LLMRepository,
        on_refresh: Callable[[Snapshot], None],
        *,
        poll_interval: float = 1.0,
        listen: bool = True,
        listen_retry: float = 1.0,
    ) -> None:
        self.repository = repository
        self.on_refresh = on_refresh
        self.poll_interval = poll_interval
        self.listen_retry = listen_retry
        self._database = repository if isinstance(repository, DatabaseStore) else None
        self._listen = listen
        self._snapshot: Snapshot | None = None
        self._load_lock = threading.Lock()
        self._first_guard = threading.Lock()
        self._first_load: Future[Snapshot] | None = None
        self._watcher: Watcher | None = None
        self._closed = False
        self._refresh_failing = False
        self._async_loads: dict[asyncio.AbstractEventLoop, asyncio.Task[Snapshot]] = {}
        self._async_guard = threading.Lock()

    @property
    def current(self) -> Snapshot | None:
        """The loaded snapshot, or ``None`` before the first load."""
        return self._snapshot

    @property
    def watcher(self) -> Watcher | None:
        """The running watcher, if any."""
        return self._watcher

    def get(self) -> Snapshot:
        """Return the current snapshot of the table, loading it on first use.

        Callers that arrive while the first load runs wait for it and get its snapshot, or its
        error, together; one arriving after it failed starts a new load.
        """
        while True:
            snapshot = self._snapshot
            if snapshot is not None:
                return snapshot
            with self._first_guard:
                if self._snapshot is not None:
                    return self._snapshot
                load = self._first_load
                leading = load is None
                if load is None:
                    load = self._first_load = Future()
            if leading:
                return self._load_first(load)
            try:
                return load.result()
            except _InterruptedLoadError:
                continue  # the loading thread was interrupted, not the load refused: load again

    def _load_first(self, load: Future[Snapshot]) -> Snapshot:
        try:
            snapshot = self._adopt(self.repository.snapshot())
        except Exception as error:
            self._forget_first_load(load)
            load.set_exception(error)
            raise
        except BaseException:
            self._forget_first_load(load)
            load.set_exception(_InterruptedLoadError())
            raise
        self._forget_first_load(load)
        load.set_result(snapshot)
        return snapshot

    def _forget_first_load(self, load: Future[Snapshot]) -> None:
        # Forgotten before it is settled: a caller arriving after a failure starts afresh
        # instead of receiving an error that is already old.
        with self._first_guard:
            if self._first_load is load:
                self._first_load = None

    def refresh(self) -> Snapshot:
        """Reload the snapshot now (the watcher does this on every change).

        Returns:
            The pool's snapshot after the reload: the one just read, unless a newer one was
            installed meanwhile.
        """
        snapshot = self.repository.snapshot()
        with self._load_lock:
            current = self._snapshot
            if current is None or snapshot.generation >= current.generation:
                self._snapshot = current = snapshot
            self.on_refresh(current)
        return current

    def _on_change(self, generation: int) -> None:
        self.refresh()

    def refresh_after_write(self, action: str = "write") -> None:
        """Reload after a committed write (a commit listener); a failure is logged once.

        The table's change counter is read first: when the snapshot already shows the write
        (the watcher was faster), or the table cannot be read, nothing is reloaded here.
        """
        # The write is committed: a failed reload must not turn it into an error.
        current = self._snapshot
        if current is None:
            return
        try:
            if self.repository.generation() != current.generation:
                self.refresh()
        except _FATAL:
            raise
        except BaseException as error:  # a reload raising anything leaves the write committed
            if not self._refresh_failing:
                self._refresh_failing = True
                after = "the watcher will catch up" if self._watcher else "call refresh()"
                logger.warning(
                    "llmpool saved the change but could not reload its snapshot (%s); %s",
                    type(error).__name__,
                    after,
                    extra=log_fields("refresh_failed", error_class=type(error).__name__),
                )
            return
        self._refresh_failing = False

    def _start_watcher(self, generation: int) -> None:
        # Called with `_load_lock` held, so `close` cannot slip in between.
        if self._closed or self.poll_interval <= 0:
            return
        from llmpool.pool.watch import Watcher

        self._watcher = Watcher(
            self.repository,
            self._on_change,
            poll_interval=self.poll_interval,
            engine=self._database.engine if self._database and self._listen else None,
            listen_retry=self.listen_retry,
        )
        self._watcher.start(generation)

    def close(self) -> None:
        """Stop watching the table (the store's connections are the store's to release).

        Returns promptly: the watcher closes its LISTEN connection and ends within a fraction
        of a second, whatever ``poll_interval`` is.
        """
        with self._load_lock:
            self._closed = True
            watcher = self._watcher
        if watcher is not None:
            watcher.stop()

    async def aget(self) -> Snapshot:
        """Async twin of `get`: one load in flight per event loop, on the async engine.

        Its result or its error reaches every task waiting for it at once; a task arriving
        after it failed starts a new load.
        """
        snapshot = self._snapshot
        if snapshot is not None:
            return snapshot
        import asyncio

        # One load in flight per event loop, shielded: a cancelled caller leaves it running
        # for the others.
        loop = asyncio.get_running_loop()
        with self._async_guard:
            task = self._async_loads.get(loop)
            if task is None or task.done():  # done: failed, and not yet forgotten
                task = loop.create_task(self._aload())
                self._async_loads[loop] = task
                task.add_done_callback(self._aload_done)
        return await asyncio.shield(task)

    def _aload_done(self, task: asyncio.Task[Snapshot]) -> None:
        with self._async_guard:
            if self._async_loads.get(task.get_loop()) is task:
                del self._async_loads[task.get_loop()]
        if not task.cancelled():
            task.exception()  # retrieved: its waiters got it, even if they were all cancelled

    async def _aload(self) -> Snapshot:
        import asyncio

        database = self._database
        repo = None if database is None or database.schema_pending else database.async_reader()
        if repo is None:
            return await asyncio.to_thread(self.get)
        snapshot = await repo.snapshot()
        return await asyncio.to_thread(self._adopt, snapshot)

    def _adopt(self, snapshot: Snapshot) -> Snapshot:
        with self._load_lock:
            if self._snapshot is None:
                self._snapshot = snapshot
                self._start_watcher(snapshot.generation)
            return self._snapshot
