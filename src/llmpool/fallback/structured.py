"""Tools and structured output on every candidate, each in its provider's native way: `decompose`
takes a candidate's binding apart, `AnswerParser` reads each answer with its candidate's parser.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableLambda,
    RunnableMap,
    RunnablePassthrough,
    RunnableSequence,
)

from llmpool.fallback.calls import ChatCall

if TYPE_CHECKING:
    from llmpool.fallback.model import FallbackChatModel

__all__ = ["AnswerParser", "decompose", "structured"]


def decompose(runnable: Any) -> ChatCall:
    """Return a candidate's chat model, bound arguments and parser (`TypeError`: it has no
    chat model at its head).

    Example:
        >>> from llmpool.providers.fake import FakeChatModel
        >>> call = decompose(FakeChatModel().bind(stop=["x"]))
        >>> call.kwargs, call.parser
        ({'stop': ['x']}, None)
    """
    parser: Runnable[Any, Any] | None = None
    if isinstance(runnable, RunnableSequence):
        steps = runnable.steps
        runnable = steps[0]
        parser = steps[1] if len(steps) == 2 else RunnableSequence(*steps[1:])
    kwargs: dict[str, Any] = {}
    while isinstance(runnable, RunnableBinding):
        kwargs = {**runnable.kwargs, **kwargs}
        runnable = runnable.bound
    if not isinstance(runnable, BaseChatModel):
        msg = (
            f"its provider answered with a {type(runnable).__name__}, not a chat model with "
            "bound arguments, which llmpool cannot call as one chat-model run"
        )
        raise TypeError(msg)
    return ChatCall(runnable, kwargs, parser)


class AnswerParser(Runnable[Any, Any]):
    """Reads a fallback model's structured answers, each with its candidate's parser."""

    def __init__(self, model: FallbackChatModel) -> None:
        self.model = model

    def _parser(self, message: Any) -> Runnable[Any, Any]:
        meta = getattr(message, "response_metadata", {}).get("llmpool", {})
        parser = self.model._parser_of(meta.get("llm_id", ""))
        return parser if parser is not None else RunnableLambda(lambda answer: answer)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Parse one answer."""
        return self._parser(input).invoke(input, config)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        return await self._parser(input).ainvoke(input, config)

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Parse a stream of chunks (the first one names the candidate)."""
        first = next(iter(input), None)
        if first is None:
            return
        yield from self._parser(first).transform(chain([first], input), config)

    async def atransform(
        self, input: AsyncIterator[Any], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `transform`."""
        iterator = input.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            return

        async def chunks() -> AsyncIterator[Any]:
            yield first
            async for chunk in iterator:
                yield chunk

        async for out in self._parser(first).atransform(chunks(), config):
            yield out


def structured(
    model: FallbackChatModel, schema: Any, include_raw: bool, kwargs: dict[str, Any]
) -> Runnable[Any, Any]:
    """Return ``model`` asked for ``schema``, then its `AnswerParser` (as LangChain builds it)."""
    parser = AnswerParser(model)
    bound = model.bind(ls_structured_output_format={"kwargs": kwargs, "schema": schema})
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    none = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([none], exception_key="parsing_error")
