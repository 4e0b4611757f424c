"""Running one attempt of the walk: the stream gate, and the deadline's bound on it.

A provider may send a role header or empty deltas before it fails (an error event at the start
of a stream). `StreamGate` holds such chunks back until the first content (text or a tool call)
arrives, so an error before it still falls back to the next candidate, and an error after it
becomes a `MidStreamError` carrying exactly the text the caller received.

The call's deadline (``FallbackPolicy.deadline``) also bounds the attempt in flight when its
client could wait longer than the deadline leaves (no timeout, or a longer one; see
`client_timeout`): `call_within` and `stream_within` run a sync attempt in a
daemon thread and stop waiting for it, or for its next chunk, at the deadline; `acall_within`
and `astream_within` cancel an async one. The abandoned attempt fails with a `TimeoutError`
(the candidate timed out), and a sync one is left to finish on its own: Python cannot stop a
thread blocked in a read. Attempts whose client gives up in time run as they are, at no cost.
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

from langchain_core.messages import BaseMessage

from llmpool.fallback.admission import add_usage, usage_of
from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from llmpool.fallback.walk import Attempt, Walk

__all__ = [
    "Bounded",
    "StreamGate",
    "acall_within",
    "astream_within",
    "call_within",
    "client_timeout",
    "has_content",
    "stream_within",
    "tag",
    "text_of",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
_FEED_SIZE = 64  # chunks a sync stream's thread may read ahead of its consumer


class StreamGate:
    """One streamed attempt's chunks: held back until the first content, then passed on.

    A provider may send a role header or empty deltas before it fails (an error event at the
    start of a stream). Those chunks carry nothing the caller could have used, so holding them
    back keeps the attempt switchable until real content (text or a tool call) is out.
    """

    def __init__(self, walk: Walk, attempt: Attempt) -> None:
        self.walk = walk
        self.attempt = attempt
        self.open = False
        self._held: list[Any] = []
        self._parts: list[str] = []

    @property
    def text(self) -> str:
        """The text passed on so far."""
        return "".join(self._parts)

    def push(self, chunk: Any) -> list[Any]:
        """Take one chunk; return the chunks to pass on now."""
        attempt = self.attempt
        # The checks and the observers hear the stream's token usage: its chunks' sum.
        if attempt.admitted or self.walk.rec is not None:
            attempt.usage = add_usage(getattr(attempt, "usage", None), usage_of(chunk))
        if self.open:
            self._parts.append(text_of(chunk))
            return [chunk]
        self._held.append(chunk)
        return self._release() if has_content(chunk) else []

    def finish(self) -> list[Any]:
        """The stream ended cleanly: return what is still held back (possibly nothing)."""
        if self.open:
            return []
        return self._release()

    def _release(self) -> list[Any]:
        self.open = True
        held, self._held = self._held, []
        metadata = self.walk.succeeded(self.attempt)
        if held:
            held[0] = tag(held[0], metadata)
        self._parts.extend(text_of(chunk) for chunk in held)
        return held


def tag(result: Any, metadata: dict[str, Any]) -> Any:
    """Put the ``llmpool`` metadata on a message, or on the raw message of a structured answer
    (``include_raw=True``); anything else passes unchanged."""
    if isinstance(result, BaseMessage):
        result.response_metadata["llmpool"] = metadata
    elif isinstance(result, dict) and isinstance(result.get("raw"), BaseMessage):
        result["raw"].response_metadata["llmpool"] = metadata
    return result


def has_content(chunk: Any) -> bool:
    """Whether a streamed chunk carries anything the caller could use."""
    content = getattr(chunk, "content", chunk)
    if content:
        return True
    return bool(
        getattr(chunk, "tool_call_chunks", None)
        or getattr(chunk, "additional_kwargs", None)
        or getattr(chunk, "invalid_tool_calls", None)
    )


def text_of(chunk: Any) -> str:
    content = getattr(chunk, "content", chunk)
    return content if isinstance(content, str) else str(content)


# -- the deadline's bound on an attempt in flight ---------------------------------------------


# The attributes a LangChain chat model keeps its request timeout in, most specific first:
# ChatOpenAI, AzureChatOpenAI and ChatFireworks (``request_timeout``), ChatAnthropic
# (``default_request_timeout``), ChatBedrockConverse and ChatVertexAI (``timeout``).
_TIMEOUT_FIELDS = ("request_timeout", "default_request_timeout", "timeout")
_FAKE_MODELS = "langchain_core.language_models.fake_chat_models"


def client_timeout(model: Any) -> float:
    """Return the seconds a chat model's client waits for an answer; ``inf`` if unbounded.

    Read from the model's own settings, without importing its package: ``request_timeout`` /
    ``default_request_timeout`` / ``timeout`` fields, ChatOllama's ``client_kwargs``, an
    ``httpx.Timeout`` or a ``(connect, read)`` pair (their longest wait). A timeout that is
    unset, or a model whose timeout cannot be found, is unbounded. LangChain's fake chat
    models do no I/O: they wait only for their ``sleep``.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> client_timeout(FakeListChatModel(responses=["hi"]))
        0.0
    """
    if any(cls.__module__ == _FAKE_MODELS for cls in type(model).__mro__):
        return _seconds(getattr(model, "sleep", None) or 0.0)
    for name in _TIMEOUT_FIELDS:
        value = getattr(model, name, _UNSET)
        if value is not _UNSET:
            return _seconds(value)
    shared = getattr(model, "client_kwargs", None)  # ChatOllama: its sync and async clients
    if not isinstance(shared, dict):
        return math.inf
    waits = []
    for own in (
        getattr(model, "sync_client_kwargs", None),
        getattr(model, "async_client_kwargs", None),
    ):
        settings = {**shared, **own} if isinstance(own, dict) else shared
        waits.append(_seconds(settings.get("timeout")))
    return max(waits)


_UNSET = object()


def _seconds(value: Any) -> float:
    if value is None:
        return math.inf
    if isinstance(value, (int, float)):
        return float(value)
    # a (connect, read) pair, or an httpx.Timeout: its longest wait; an unset one is unbounded
    parts = (
        value
        if isinstance(value, tuple)
        else tuple(getattr(value, name, None) for name in ("connect", "read", "write", "pool"))
    )
    return max((_seconds(part) for part in parts), default=math.inf)


def _left(attempt: Attempt) -> float:
    assert attempt.ends_at is not None  # only bounded attempts come here
    return max(0.0, attempt.ends_at - time.monotonic())


def _expired(walk: Walk, attempt: Attempt) -> TimeoutError:
    c = attempt.candidate.config
    deadline = walk.policy.deadline
    logger.warning(
        "llmpool stopped waiting for %s at the call's %ss deadline",
        c.describe(),
        deadline,
        extra=log_fields("deadline", llm_id=c.id, llm_name=c.name, deadline=deadline),
    )
    return TimeoutError(f"no answer within the call's {deadline}s deadline; attempt abandoned")


class Bounded:
    """A runner whose calls end at the attempt's deadline (`call_within` and its twins).

    The walk hands it out as ``attempt.runner`` when the candidate's client could wait longer
    than the deadline leaves, so a shell calls every runner the same way.
    """

    __slots__ = ("attempt", "runner", "walk")

    def __init__(self, walk: Walk, attempt: Attempt, runner: Any) -> None:
        self.walk = walk
        self.attempt = attempt
        self.runner = runner

    def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        """`Runnable.invoke` in a daemon thread, waited for until the deadline."""
        call = partial(self.runner.invoke, input, config, **kwargs)
        return call_within(self.walk, self.attempt, call)

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
        """`Runnable.ainvoke`, cancelled at the deadline."""
        pending = self.runner.ainvoke(input, config, **kwargs)
        return await acall_within(self.walk, self.attempt, pending)

    def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[Any]:
        """`Runnable.stream` read in a daemon thread, each chunk waited for until the deadline."""
        start = partial(self.runner.stream, input, config, **kwargs)
        return stream_within(self.walk, self.attempt, start)

    def astream(self, input: Any, config: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        """`Runnable.astream`, the wait for each chunk cancelled at the deadline."""
        chunks = self.runner.astream(input, config, **kwargs)
        return astream_within(self.walk, self.attempt, chunks)


def call_within(walk: Walk, attempt: Attempt, call: Callable[[], T]) -> T:
    """Run a sync attempt in a daemon thread; wait for it no later than its deadline.

    Raises:
        TimeoutError: The deadline came first; the thread is left to finish on its own.
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()
    context = contextvars.copy_context()  # callbacks and tracing follow the call

    def run() -> None:
        try:
            outcome.append((True, context.run(call)))
        except BaseException as error:  # handed over to the waiting thread
            outcome.append((False, error))
        finally:
            done.set()

    left = _left(attempt)
    if left <= 0.0:  # a retry that would start at the deadline: send nothing
        raise _expired(walk, attempt)
    name = f"llmpool-attempt-{attempt.candidate.config.id}"
    threading.Thread(target=run, name=name, daemon=True).start()
    if not done.wait(left):
        raise _expired(walk, attempt)
    answered, value = outcome.pop()
    if answered:
        return value  # type: ignore[no-any-return]
    try:
        raise value
    finally:
        del value  # no cycle through this frame: the error's traceback holds it


_CHUNK, _END, _ERROR = range(3)


class _Feed:
    """A sync stream read in a daemon thread, handed over through a bounded queue."""

    def __init__(self, start: Callable[[], Iterator[Any]], name: str) -> None:
        self.queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=_FEED_SIZE)
        self._stopped = threading.Event()
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(self._pump, start), name=name, daemon=True
        )
        thread.start()

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
        # A consumer that stopped reads nothing more. One that stops while this put waits for
        # room drains the queue in stop(), so the put completes and the thread ends.
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


def stream_within(
    walk: Walk, attempt: Attempt, start: Callable[[], Iterator[Any]]
) -> Iterator[Any]:
    """Read a sync stream in a daemon thread; wait for each chunk no later than the deadline.

    Raises:
        TimeoutError: The deadline came before the next chunk.
    """
    if _left(attempt) <= 0.0:  # a retry that would start at the deadline: send nothing
        raise _expired(walk, attempt)
    feed = _Feed(start, f"llmpool-stream-{attempt.candidate.config.id}")
    try:
        while True:
            try:
                kind, value = feed.queue.get(timeout=_left(attempt))
            except queue.Empty:
                raise _expired(walk, attempt) from None
            if kind == _CHUNK:
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


async def acall_within(walk: Walk, attempt: Attempt, awaitable: Awaitable[T]) -> T:
    """Await an async attempt; cancel it at its deadline.

    Raises:
        TimeoutError: The deadline came first; the attempt was cancelled.
    """
    if sys.version_info >= (3, 11):
        scope = asyncio.timeout(_left(attempt))
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                raise _expired(walk, attempt) from None
            raise
    try:
        return await asyncio.wait_for(awaitable, _left(attempt))
    except asyncio.TimeoutError:
        if _left(attempt) <= 0.0:
            raise _expired(walk, attempt) from None
        raise


async def astream_within(
    walk: Walk, attempt: Attempt, chunks: AsyncIterator[Any]
) -> AsyncIterator[Any]:
    """Iterate an async stream; cancel the wait for a chunk at the deadline.

    Raises:
        TimeoutError: The deadline came before the next chunk.
    """
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await acall_within(walk, attempt, iterator.__anext__())
        except StopAsyncIteration:
            return
        yield chunk
