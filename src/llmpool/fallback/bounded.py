"""An attempt cut short: at the call's deadline, and a stream at its limits.

`Bounded` wraps a `ChatCall` or an `EmbeddingCall` whose client could wait past the deadline,
or a stream with a ``ttft_timeout`` (no content within it) or a ``stall_timeout`` (no chunk for
that long): an async attempt is cancelled, a sync one runs in a daemon thread left to finish on
its own. A stream stopped at a limit raises `StreamStalledError`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from llmpool.contracts import log_fields
from llmpool.fallback.calls import has_content

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable

    from llmpool.models import LLMConfig

T = TypeVar("T")

__all__ = ["Bounded", "StreamStalledError"]

# The deadline's record keeps the logger name it had when this lived in `calls`.
logger = logging.getLogger("llmpool.fallback.calls")


class Bounded:
    """A `ChatCall` or `EmbeddingCall` cut short at ``ends_at`` (`time.monotonic`); a stream's
    also when its first content takes over ``ttft`` seconds, or any chunk over ``stall``."""

    __slots__ = ("call", "config", "deadline", "ends_at", "stall", "timeout", "ttft")

    def __init__(
        self,
        call: Any,
        ends_at: float,
        deadline: float | None,
        config: LLMConfig,
        *,
        ttft: float | None = None,
        stall: float | None = None,
    ) -> None:
        self.call = call
        self.ends_at = ends_at
        self.deadline = deadline
        self.config = config
        self.ttft = ttft
        self.stall = stall
        self.timeout = call.timeout

    @property
    def parser(self) -> Runnable[Any, Any] | None:
        """The bounded `ChatCall`'s parser."""
        return getattr(self.call, "parser", None)

    def _left(self) -> float:
        return max(0.0, self.ends_at - time.monotonic())

    def _wait(self, first_by: float | None, stall: float | None) -> tuple[float | None, int]:
        # Seconds to wait for the next chunk, and the limit that ends the wait: the deadline,
        # the first content's (``first_by``, monotonic) or a stall's.
        now = time.monotonic()
        wait, limit = self.ends_at - now, _DEADLINE
        if first_by is not None and first_by - now < wait:
            wait, limit = first_by - now, _TTFT
        if stall is not None and stall < wait:
            wait, limit = stall, _STALL
        return (None if wait == math.inf else max(0.0, wait)), limit

    def _lapsed(self, limit: int) -> Exception:
        # The wait for a chunk ran out at ``limit``.
        if limit == _DEADLINE:
            return self._expired()
        text = (
            f"no content within its {self.ttft}s ttft_timeout"
            if limit == _TTFT
            else f"no chunk for {self.stall}s (its stall_timeout)"
        )
        return StreamStalledError(f"{self.config.describe()} sent {text}; abandoned")

    def _expired(self) -> TimeoutError:
        c = self.config
        row = {"scope": c.scope, "llm_id": c.id, "llm_name": c.name, "provider": c.provider}
        text = "llmpool stopped waiting for %s at the call's %ss deadline"
        logger.warning(
            text,
            c.describe(),
            self.deadline,
            extra=log_fields("deadline", **row, model=c.model_name, deadline=self.deadline),
        )
        return TimeoutError(f"no answer within the call's {self.deadline}s deadline; abandoned")

    def _first_by(self) -> float | None:
        return None if self.ttft is None else time.monotonic() + self.ttft

    def generate(self, *args: Any) -> Any:
        """The call's ``generate`` in a daemon thread, waited for until the deadline."""
        call = partial(self.call.generate, *args)
        return next(self._read(lambda: iter((call(),)), guarded=False))

    async def agenerate(self, *args: Any) -> Any:
        """The call's ``agenerate``, cancelled at the deadline."""
        return await self._awithin(self.call.agenerate(*args), *self._wait(None, None))

    def stream(self, *args: Any) -> Iterator[Any]:
        """`ChatCall.stream` read in a daemon thread, each chunk waited for until the deadline
        (and the stream's ``ttft`` and ``stall`` limits)."""
        return self._read(partial(self.call.stream, *args), guarded=True)

    def _read(self, start: Callable[[], Iterator[Any]], *, guarded: bool) -> Iterator[Any]:
        if self._left() <= 0.0:  # a retry that would start at the deadline: send nothing
            raise self._expired()
        first_by, stall = (self._first_by(), self.stall) if guarded else (None, None)
        feed = _Feed(start)
        try:
            while True:
                wait, limit = self._wait(first_by, stall)
                try:
                    kind, value = feed.queue.get(timeout=wait)
                except queue.Empty:
                    raise self._lapsed(limit) from None
                if kind == _CHUNK:
                    if first_by is not None and has_content(value):
                        first_by = None
                    yield value
                elif kind == _END:
                    return
                else:
                    try:
                        raise value
                    finally:
                        del value  # no cycle through this frame: the error's traceback holds it
        finally:
            feed.stop()

    async def astream(self, *args: Any) -> AsyncIterator[Any]:
        """`ChatCall.astream`, the wait for each chunk cancelled at the deadline (and the
        stream's ``ttft`` and ``stall`` limits)."""
        iterator = self.call.astream(*args).__aiter__()
        first_by, stall = self._first_by(), self.stall
        while True:
            try:
                chunk = await self._awithin(iterator.__anext__(), *self._wait(first_by, stall))
            except StopAsyncIteration:
                return
            if first_by is not None and has_content(chunk):
                first_by = None
            yield chunk

    async def _awithin(self, awaitable: Awaitable[T], wait: float | None, limit: int) -> T:
        if sys.version_info >= (3, 11):
            scope = asyncio.timeout(wait)
            try:
                async with scope:
                    return await awaitable
            except TimeoutError:
                if scope.expired():
                    raise self._lapsed(limit) from None
                raise
        began = time.monotonic()
        try:
            return await asyncio.wait_for(awaitable, wait)
        except asyncio.TimeoutError:
            if wait is not None and time.monotonic() - began >= wait:
                raise self._lapsed(limit) from None
            raise


# The limits that may end the wait for a stream's next chunk.
_DEADLINE, _TTFT, _STALL = range(3)


class StreamStalledError(Exception):
    """A candidate's stream sent no content within its ``ttft_timeout``, or no chunk for its
    ``stall_timeout``: before its first content it falls back at once, after it the stream
    raises `llmpool.MidStreamError`."""


_CHUNK, _END, _ERROR = range(3)
_FEED_SIZE = 64  # chunks a sync stream's thread may read ahead of its consumer


_IDLE = 30.0  # seconds a reader thread waits for its next read before it ends


class _Readers:
    """The daemon threads that read bounded attempts, kept for the next read: an idle one takes
    it, else one more starts (one left waiting on an abandoned call holds only itself)."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[Callable[[], object]]] = []
        self._lock = threading.Lock()

    def run(self, read: Callable[[], object]) -> None:
        """Run ``read`` in a reader thread."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(inbox,), name="llmpool-read", daemon=True
            ).start()
        inbox.put(read)

    def _serve(self, inbox: queue.SimpleQueue[Callable[[], object]]) -> None:
        read: Callable[[], object] | None = inbox.get()
        while read is not None:
            read()
            read = None  # nothing of the last read kept while idle
            with self._lock:
                self._idle.append(inbox)
            try:
                read = inbox.get(timeout=_IDLE)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # a queue equals only itself
                        self._idle.remove(inbox)
                        return
                read = inbox.get()  # taken as it timed out: its read is on the way


_readers = _Readers()


class _Feed:
    """A sync stream (or one answer) read in a daemon thread through a bounded queue."""

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self.queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=_FEED_SIZE)
        self._stopped = threading.Event()
        _readers.run(partial(contextvars.copy_context().run, self._pump, start))

    def _pump(self, start: Callable[[], Iterator[Any]]) -> None:
        try:
            chunks = start()
            try:
                for chunk in chunks:
                    self.queue.put((_CHUNK, chunk))
                    if self._stopped.is_set():
                        return
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        except BaseException as error:  # handed over to the consumer
            self._finish(_ERROR, error)
            return
        self._finish(_END, None)

    def _finish(self, kind: int, value: Any) -> None:
        # A consumer that stops while this put waits drains the queue in stop(): it completes.
        if not self._stopped.is_set():
            self.queue.put((kind, value))

    def stop(self) -> None:
        """Stop reading: the thread ends at its next chunk, and closes the stream."""
        self._stopped.set()
        try:
            while True:  # unblock a put waiting for room
                self.queue.get_nowait()
        except queue.Empty:
            pass
