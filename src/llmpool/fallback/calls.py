"""What an attempt calls: a candidate's client, bounded by the call's deadline, its stream gated.

`ChatCall` calls a chat model below LangChain's run machinery, so the fallback model is the one
run callbacks see. `StreamGate` holds chunks back until the first content: an error after it is
a `MidStreamError`. `llmpool.fallback.bounded` cuts an attempt short at the call's deadline
and a stream at its limits.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from llmpool.fallback.record import add_usage, reply_of, usage_of
from llmpool.providers.fit import call_needs

if TYPE_CHECKING:
    from llmpool.fallback.walk import Attempt, Walk

__all__ = ["ChatCall", "EmbeddingCall", "StreamGate", "client_timeout", "has_content"]


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
        attempt, record = self.attempt, self.walk.record
        # The checks and the observers hear the stream's token usage: its chunks' sum; the
        # observers also what its chunks say of the answer (model, finish reason).
        if attempt.admitted or record is not None:
            attempt.usage = add_usage(attempt.usage, usage_of(chunk.message))
            if record is not None:
                attempt.reply = reply_of(chunk, attempt.reply)
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
    """A candidate's chat model, the arguments the call binds, its answer's ``parser``, and what
    it ``needs`` of the model (`llmpool.providers.fit`)."""

    __slots__ = ("astreams", "kwargs", "model", "needs", "parser", "streams", "timeout")

    def __init__(
        self,
        model: BaseChatModel,
        kwargs: Mapping[str, Any] | None = None,
        parser: Runnable[Any, Any] | None = None,
    ) -> None:
        self.model = model
        self.parser = parser
        self.needs = call_needs(model, kwargs or {})
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
_FAKE_MODELS = ("langchain_core.language_models.fake_chat_models", "llmpool.providers.fake")


def client_timeout(model: Any) -> float:
    """Return the seconds a model's client waits for an answer (``inf``: unbounded), read
    from its settings: a timeout field, ChatOllama's ``client_kwargs``, a fake model's ``sleep``
    (each of its attempts bounded by its ``timeout``).

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> client_timeout(FakeListChatModel(responses=["hi"]))
        0.0
    """
    if any(cls.__module__ in _FAKE_MODELS for cls in type(model).__mro__):
        sleep, timeout = getattr(model, "sleep", None) or 0.0, getattr(model, "timeout", None)
        return min(_seconds(sleep), _seconds(timeout)) * (
            1 + (getattr(model, "max_retries", None) or 0)
        )
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
