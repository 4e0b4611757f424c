"""What an attempt calls: a candidate's client, bounded by the call's deadline, its stream gated.

`ChatCall` calls a chat model below LangChain's run machinery, so the fallback model is the one
run callbacks see. `StreamGate` holds chunks back until the first content: an error after it is
a `MidStreamError`. `Bounded` stops waiting at the deadline, and a stream at its limits (no
content within ``ttft_timeout``, no chunk for ``stall_timeout``: `StreamStalledError`): an
async attempt is cancelled, a sync one runs in a daemon thread left to finish on its own.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from llmpool.contracts import log_fields
from llmpool.fallback.record import add_usage, usage_of

if TYPE_CHECKING:
    from llmpool.fallback.walk import Attempt, Walk
    from llmpool.models import LLMConfig

T = TypeVar("T")

__all__ = [
    "Bounded",
    "ChatCall",
    "EmbeddingCall",
    "StreamGate",
    "StreamStalledError",
    "client_timeout",
    "has_content",
]

logger = logging.getLogger(__name__)


class StreamGate:
    """One streamed attempt's chunks: held back until the first content, then passed on (held
    to the end when a verdict needs the whole answer: `Walk.whole`)."""

    __slots__ = ("_held", "_parts", "_seen", "attempt", "open", "walk")

    def __init__(self, walk: Walk, attempt: Attempt) -> None:
        self.walk = walk
        self.attempt = attempt
        self.open = False
        self._held: list[ChatGenerationChunk] = []
        self._parts: list[str] = []
        # Every chunk, for the verdicts on the whole answer at its end.
        self._seen: list[ChatGenerationChunk] | None = [] if walk.judging else None

    @property
    def text(self) -> str:
        """The text passed on so far."""
        return "".join(self._parts)

    def push(self, chunk: ChatGenerationChunk) -> list[ChatGenerationChunk]:
        """Take one chunk; return the chunks to pass on now."""
        attempt = self.attempt
        # The checks and the observers hear the stream's token usage: its chunks' sum.
        if attempt.admitted or self.walk.record is not None:
            attempt.usage = add_usage(attempt.usage, usage_of(chunk.message))
        if self._seen is not None:
            self._seen.append(chunk)
        if self.open:
            self._parts.append(_text(chunk))
            return [chunk]
        self._held.append(chunk)
        return self._release() if has_content(chunk) and not self.walk.whole else []

    def finish(self) -> list[ChatGenerationChunk]:
        """The stream ended cleanly: judge the whole answer (`Walk.judge`: after content was
        passed on, a refusal breaks the stream), and return what is still held back (none:
        `EmptyStreamError`)."""
        if not self.open and not self._held:
            raise EmptyStreamError(_EMPTY)
        seen = self._seen
        if seen:
            whole = seen[0].message + [chunk.message for chunk in seen[1:]]
            # The client's chunks: what LangChain moves to the answer's metadata (OpenAI's
            # finish_reason) is still in their generation_info.
            info: dict[str, Any] = {}
            for chunk in seen:
                info.update(chunk.generation_info or ())
            self.walk.judge(self.attempt, whole, info)
        return [] if self.open else self._release()

    def _release(self) -> list[ChatGenerationChunk]:
        self.open = True
        held, self._held = self._held, []
        held[0].message.response_metadata["llmpool"] = self.walk.answer(self.attempt)
        self._parts.extend(_text(chunk) for chunk in held)
        return held


def has_content(chunk: Any) -> bool:
    """Whether a streamed chunk carries anything the caller could use."""
    message = getattr(chunk, "message", chunk)
    if getattr(message, "content", message):
        return True
    return bool(
        getattr(message, "tool_call_chunks", None)
        or getattr(message, "additional_kwargs", None)
        or getattr(message, "invalid_tool_calls", None)
    )


def _text(chunk: ChatGenerationChunk) -> str:
    content = chunk.message.content
    return content if isinstance(content, str) else str(content)


# Keys a binding carries for LangChain's run machinery, not for the provider's client.
_RUN_KEYS = frozenset({"ls_structured_output_format", "structured_output_format"})


class ChatCall:
    """A candidate's chat model, the arguments the call binds, and its answer's ``parser``."""

    __slots__ = ("astreams", "kwargs", "model", "parser", "streams", "timeout")

    def __init__(
        self,
        model: BaseChatModel,
        kwargs: Mapping[str, Any] | None = None,
        parser: Runnable[Any, Any] | None = None,
    ) -> None:
        self.model = model
        self.parser = parser
        self.kwargs = {k: v for k, v in (kwargs or {}).items() if k not in _RUN_KEYS}
        self.timeout = client_timeout(model)
        cls = type(model)
        self.streams = cls._stream is not BaseChatModel._stream
        self.astreams = self.streams or cls._astream is not BaseChatModel._astream

    def __repr__(self) -> str:
        return f"ChatCall({type(self.model).__name__}, {sorted(self.kwargs)})"

    def _args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {**self.kwargs, **kwargs} if self.kwargs else kwargs

    def generate(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatResult:
        """One answer."""
        return self.model._generate(messages, stop=stop, **self._args(kwargs))

    async def agenerate(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> ChatResult:
        """Async twin of `generate`."""
        return await self.model._agenerate(messages, stop=stop, **self._args(kwargs))

    def stream(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> Iterator[ChatGenerationChunk]:
        """The answer's chunks (one from a model that does not stream)."""
        if not self.streams:
            yield _chunk(self.generate(messages, stop, kwargs))
            return
        yield from self.model._stream(messages, stop=stop, **self._args(kwargs))

    async def astream(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Async twin of `stream`."""
        if not self.astreams:
            yield _chunk(await self.agenerate(messages, stop, kwargs))
            return
        async for chunk in self.model._astream(messages, stop=stop, **self._args(kwargs)):
            yield chunk


_EMPTY = "the stream ended without a single chunk: nothing the client could read"


class EmptyStreamError(Exception):
    """A candidate's stream ended without one chunk: it falls back at once."""


def _chunk(result: ChatResult) -> ChatGenerationChunk:
    generation = result.generations[0]
    message = generation.message
    if not isinstance(message, AIMessageChunk):
        data = message.model_dump(exclude={"type"})
        message = AIMessageChunk(
            **{k: v for k, v in data.items() if k in AIMessageChunk.model_fields}
        )
    return ChatGenerationChunk(message=message, generation_info=generation.generation_info)


#: ``("embed_documents" | "embed_query", input)``; the async twin is prefixed with ``a``.
EmbeddingRequest = tuple[str, Any]


class EmbeddingCall:
    """A candidate's ``Embeddings`` as an attempt calls it (``timeout``: `client_timeout`)."""

    __slots__ = ("embeddings", "timeout")

    def __init__(self, embeddings: Any) -> None:
        self.embeddings = embeddings
        self.timeout = client_timeout(embeddings)

    def __repr__(self) -> str:
        return f"EmbeddingCall({type(self.embeddings).__name__})"

    def generate(self, request: EmbeddingRequest) -> Any:
        """Make the request's call: ``embed_documents`` or ``embed_query``."""
        method, payload = request
        return getattr(self.embeddings, method)(payload)

    async def agenerate(self, request: EmbeddingRequest) -> Any:
        """Async twin of `generate`."""
        method, payload = request
        return await getattr(self.embeddings, "a" + method)(payload)


# Where chat models keep their request timeout (OpenAI and Fireworks, Anthropic, the others).
_TIMEOUT_FIELDS = ("request_timeout", "default_request_timeout", "timeout")
_FAKE_MODELS = "langchain_core.language_models.fake_chat_models"


def client_timeout(model: Any) -> float:
    """Return the seconds a model's client waits for an answer (``inf``: unbounded), read
    from its settings: a timeout field, ChatOllama's ``client_kwargs``, a fake model's ``sleep``.

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
    for side in ("sync", "async"):
        own = getattr(model, f"{side}_client_kwargs", None)
        settings = {**shared, **own} if isinstance(own, dict) else shared
        waits.append(_seconds(settings.get("timeout")))
    return max(waits)


_UNSET = object()


def _seconds(value: Any) -> float:
    if value is None:
        return math.inf
    if isinstance(value, (int, float)):
        return float(value)
    # a (connect, read) pair, or an httpx/httpx2 Timeout: its longest wait; unset is unbounded
    parts = (
        value
        if isinstance(value, tuple)
        else tuple(getattr(value, name, None) for name in ("connect", "read", "write", "pool"))
    )
    return max((_seconds(part) for part in parts), default=math.inf)


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
        return next(self._read(lambda: iter((call(),)), "attempt", guarded=False))

    async def agenerate(self, *args: Any) -> Any:
        """The call's ``agenerate``, cancelled at the deadline."""
        return await self._awithin(self.call.agenerate(*args), *self._wait(None, None))

    def stream(self, *args: Any) -> Iterator[Any]:
        """`ChatCall.stream` read in a daemon thread, each chunk waited for until the deadline
        (and the stream's ``ttft`` and ``stall`` limits)."""
        return self._read(partial(self.call.stream, *args), "stream", guarded=True)

    def _read(
        self, start: Callable[[], Iterator[Any]], what: str, *, guarded: bool
    ) -> Iterator[Any]:
        if self._left() <= 0.0:  # a retry that would start at the deadline: send nothing
            raise self._expired()
        first_by, stall = (self._first_by(), self.stall) if guarded else (None, None)
        feed = _Feed(start, f"llmpool-{what}-{self.config.id}")
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


class _Feed:
    """A sync stream (or one answer) read in a daemon thread through a bounded queue."""

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
