"""The pool's snapshot of the ``llms`` table: loaded once, then kept current without a restart.

`SnapshotKeeper` loads every row once (sync, or async on an async engine), and starts a
`llmpool.pool.watch.Watcher` that reloads it when the table changes (PostgreSQL LISTEN/NOTIFY, else
polling). Readers take the current snapshot without a lock: a reload swaps it in one assignment,
and a slower reload of an older generation never replaces a newer one. While the database is
down the last good snapshot is served.

The first load is shared: however many threads (or tasks of one event loop) ask for the
snapshot before it is loaded, one load runs, and its result or its error reaches them all at
once. A caller arriving after a failed load starts a new one. Each load is bounded by the
database's own bounds (`llmpool.repository.sql.engine.DatabaseBounds`), so no caller waits
longer than one load takes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

    from llmpool.pool.watch import Watcher
    from llmpool.repository import AsyncLLMRepository, LLMRepository, Snapshot

__all__ = ["SnapshotKeeper"]

logger = logging.getLogger(__name__)


class _InterruptedLoadError(Exception):
    """The thread running the first load was interrupted (KeyboardInterrupt, SystemExit)."""


class SnapshotKeeper:
    """The current snapshot of a repository, and the watcher that keeps it current.

    Args:
        repository: Where rows are read.
        on_refresh: Called with the installed snapshot after each reload (under the load
            lock), e.g. to drop models of deleted rows.
        engine: The SQL engine behind ``repository``, if any: LISTENed through, migrated.
        database: What the caller passed for it (an engine they own is not disposed).
        async_database: The async engine or URL the async reads use (see `LLMPool`).
        poll_interval: Seconds between change checks; ``0`` to never look.
        listen: LISTEN/NOTIFY on PostgreSQL.
        listen_retry: First delay before reopening a lost LISTEN connection.
        auto_migrate: Apply the migrations before the first load.
    """

    def __init__(
        self,
        repository: LLMRepository,
        on_refresh: Callable[[Snapshot], None],
        *,
        engine: Engine | None = None,
        database: Engine | str | URL | None = None,
        async_database: AsyncEngine | str | URL | None = None,
        poll_interval: float = 1.0,
        listen: bool = True,
        listen_retry: float = 1.0,
        auto_migrate: bool = False,
    ) -> None:
        self.repository = repository
        self.on_refresh = on_refresh
        self.poll_interval = poll_interval
        self.listen_retry = listen_retry
        self._engine = engine
        self._database = database
        self._async_database = async_database
        self._listen = listen
        self._auto_migrate = auto_migrate
        self._snapshot: Snapshot | None = None
        self._load_lock = threading.Lock()
        self._first_guard = threading.Lock()
        self._first_load: Future[Snapshot] | None = None
        self._watcher: Watcher | None = None
        self._closed = False
        self._refresh_failing = False
        self._async_repository: AsyncLLMRepository | None = None
        self._owns_async_engine = False
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

    def ensure_schema(self) -> None:
        """Apply llmpool's migrations once, when this keeper is to (the embedded SQLite)."""
        if self._auto_migrate:
            with self._load_lock:
                if self._auto_migrate:
                    from llmpool.repository.sql.migrate import migrate

                    migrate(self._engine)
                    self._auto_migrate = False

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
            self.ensure_schema()
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

    def refresh_after_write(self) -> None:
        """Reload after a committed admin write; a failure is logged once, never raised."""
        # The write is committed: a failed reload must not turn it into an error.
        if self._snapshot is None:
            return
        try:
            self.refresh()
        except Exception as error:
            if not self._refresh_failing:
                self._refresh_failing = True
                after = "the watcher will catch up" if self._watcher else "call refresh()"
                logger.warning(
                    "llmpool saved the change but could not reload its snapshot (%s); %s",
                    type(error).__name__,
                    after,
                    extra={"error": type(error).__name__},
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
            engine=self._engine if self._listen else None,
            listen_retry=self.listen_retry,
        )
        self._watcher.start(generation)

    def close(self) -> None:
        """Stop watching the table and release the connections of an engine llmpool made.

        Returns promptly: the watcher closes its LISTEN connection and ends within a fraction
        of a second, whatever ``poll_interval`` is.
        """
        with self._load_lock:
            self._closed = True
            watcher = self._watcher
        if watcher is not None:
            watcher.stop()
        if self._engine is not None and self._database is not self._engine:
            self._engine.dispose()

    async def aclose(self) -> None:
        """`close` without blocking the event loop; also release an async engine llmpool made."""
        import asyncio

        await asyncio.to_thread(self.close)
        repository = self._async_repository
        if repository is not None and self._owns_async_engine and hasattr(repository, "aclose"):
            await repository.aclose()

    def _async_repo(self) -> AsyncLLMRepository | None:
        with self._async_guard:
            if self._async_repository is not None:
                return self._async_repository
            source = self._async_database
            if source is None and self._engine is not None and self._engine is not self._database:
                source = self._engine.url  # llmpool made the engine from this URL
            if source is None:
                return None
            from sqlalchemy.ext.asyncio import AsyncEngine

            from llmpool.repository.sql.async_store import AsyncSQLRepository

            self._owns_async_engine = not isinstance(source, AsyncEngine)
            self._async_repository = AsyncSQLRepository(source)
            return self._async_repository

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

        repo = None if self._auto_migrate else self._async_repo()
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
