"""The pool's snapshot of the ``llms`` table: loaded once, then kept current without a restart.

Readers take the current snapshot without a lock: a reload swaps it in one assignment, and a
slower reload of an older generation never replaces a newer one. The first load is shared: one
runs, however many threads (or tasks of one event loop) ask, and its result or its error reaches
them all at once; a caller arriving after a failed load starts a new one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from llmpool.contracts import log_fields
from llmpool.repository import CommitNotifier

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.engine import Engine

    from llmpool.pool.fanout import RedisFanout
    from llmpool.pool.options import PoolOptions
    from llmpool.pool.watch import Watcher
    from llmpool.repository import AsyncLLMRepository, LLMRepository, Snapshot


logger = logging.getLogger(__name__)


@runtime_checkable
class DatabaseStore(Protocol):
    """A repository over a SQL database that owns its engine, async reader and migration."""

    @property
    def engine(self) -> Engine: ...

    @property
    def schema_pending(self) -> bool:
        """Whether a migration is still to run on first use."""

    def async_reader(self) -> AsyncLLMRepository | None:
        """The async read side, or ``None`` when async reads must run the sync engine."""


#: What a commit listener lets through: the interpreter shutting down or the user interrupting.
_FATAL = (KeyboardInterrupt, SystemExit)


class _InterruptedLoadError(Exception):
    """The thread running the first load was interrupted (KeyboardInterrupt, SystemExit)."""


def change_mode(
    database: DatabaseStore | None, changes: str | None, redis: str | None, *, listen: bool
) -> str:
    """The watcher's mode for `PoolOptions.changes` on ``database`` (``None``: not a SQL store).

    ``None`` gives ``"auto"`` (LISTEN where it holds, else polling) unless ``listen`` is off;
    ``"notify"`` where LISTEN cannot work and ``"redis"`` without ``redis`` are refused.

    Raises:
        InvalidOptionError: ``changes`` cannot work with this database or these options.
    """
    from llmpool.errors import InvalidOptionError

    if changes is None:
        return "auto" if listen else "poll"
    if changes not in ("notify", "poll", "redis"):
        msg = f"changes must be 'notify', 'poll', 'redis' or None, not {changes!r}"
        raise InvalidOptionError(msg, option="changes")
    engine = database.engine if database is not None else None
    if changes == "notify" and (
        engine is None or engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg"
    ):
        where = f"a {engine.dialect.name} ({engine.dialect.driver}) database" if engine else "it"
        msg = (
            f"changes='notify' needs PostgreSQL through psycopg 3, which LISTENs; this pool reads "
            f"{where}: use changes='poll' (or leave changes unset)"
        )
        raise InvalidOptionError(msg, option="changes")
    if changes == "redis" and not redis:
        msg = "changes='redis' needs the redis option: the URL of the Redis every replica shares"
        raise InvalidOptionError(msg, option="changes")
    if changes == "redis" and engine is None:
        msg = "changes='redis' needs a SQL database as the pool's source; this one is in-process"
        raise InvalidOptionError(msg, option="changes")
    return changes


class SnapshotKeeper:
    """The current snapshot of a repository, kept current by a watcher and, on a store that
    tells of its commits, by every committed write, as ``options`` say (``poll_interval``,
    ``listen``, ``listen_retry``, ``changes``, ``redis``); ``on_refresh`` is called with each
    installed snapshot (under the load lock)."""

    def __init__(
        self,
        repository: LLMRepository,
        on_refresh: Callable[[Snapshot], None],
        options: PoolOptions,
    ) -> None:
        self.repository = repository
        self.on_refresh = on_refresh
        self.poll_interval = poll_interval = options.poll_interval
        self.listen_retry = options.listen_retry
        self._database = repository if isinstance(repository, DatabaseStore) else None
        redis = options.redis
        self.mode = change_mode(self._database, options.changes, redis, listen=options.listen)
        self._fanout: RedisFanout | None = None
        if self.mode == "redis" and redis and poll_interval > 0:
            from llmpool.pool.fanout import RedisFanout

            self._fanout = RedisFanout(redis, poll_interval=poll_interval)  # no redis: error now
        self.current: Snapshot | None = None
        """The loaded snapshot, or ``None`` before the first load."""
        self._load_lock = threading.Lock()
        self._first_guard = threading.Lock()
        self._first_load: Future[Snapshot] | None = None
        self.watcher: Watcher | None = None  # the running watcher, if any
        self._closed = False
        self._refresh_failing = False
        self._async_loads: dict[asyncio.AbstractEventLoop, asyncio.Task[Snapshot]] = {}
        self._async_guard = threading.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        if isinstance(repository, CommitNotifier):  # every committed write is seen at once
            self._unsubscribe = repository.subscribe(self.refresh_after_write)

    def get(self) -> Snapshot:
        """Return the current snapshot of the table, loading it on first use (shared)."""
        while True:
            snapshot = self.current
            if snapshot is not None:
                return snapshot
            with self._first_guard:
                if self.current is not None:
                    return self.current
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
        except BaseException as error:
            self._forget_first_load(load)
            # An interrupted thread's waiters load again rather than receive its interruption.
            load.set_exception(error if isinstance(error, Exception) else _InterruptedLoadError())
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
        """Reload the snapshot now and return it (or a newer one installed meanwhile)."""
        snapshot = self.repository.snapshot()
        with self._load_lock:
            current = self.current
            if current is None or snapshot.generation >= current.generation:
                self.current = current = snapshot
            self.on_refresh(current)
        return current

    def refresh_after_write(self, action: str = "write") -> None:
        """Reload after a committed write (a commit listener), unless the snapshot already shows
        it; a failure is logged once."""
        # The write is committed: a failed reload must not turn it into an error.
        current = self.current
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
                after = "the watcher will catch up" if self.watcher else "call refresh()"
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
        from llmpool.pool.fanout import database_name
        from llmpool.pool.watch import Watcher

        engine = self._database.engine if self._database else None
        fanout, self._fanout = self._fanout, None  # the watcher's now: it closes it
        self.watcher = Watcher(
            self.repository,
            lambda _generation: self.refresh(),
            poll_interval=self.poll_interval,
            engine=engine,
            listen_retry=self.listen_retry,
            mode=self.mode,
            fanout=fanout,
            database_name=(lambda: database_name(engine)) if engine is not None else None,
        )
        self.watcher.start(generation)

    def close(self) -> None:
        """Stop watching the table, promptly (the store's connections are the store's)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        with self._load_lock:
            self._closed = True
            watcher = self.watcher
            fanout, self._fanout = self._fanout, None
        if watcher is not None:
            watcher.stop()
        if fanout is not None:  # never started
            fanout.close()

    async def aget(self) -> Snapshot:
        """Async twin of `get`: one load in flight per event loop, on the async engine."""
        snapshot = self.current
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
            if self.current is None:
                self.current = snapshot
                self._start_watcher(snapshot.generation)
            return self.current
