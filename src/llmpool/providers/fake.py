"""The ``fake`` provider: langchain-core's scripted chat model, for tests and demos.

A row scripts it through ``config``: ``responses`` (answers, cycled), ``sleep`` (seconds per
answer) and ``error`` (every call fails with `ConnectionError` carrying that text, like a
provider that is down, so a demo can show fallback).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import Field

__all__ = ["FakeChatModel"]


class FakeChatModel(FakeListChatModel):
    """A scripted chat model: answers from ``responses`` in turn, or fails with ``error``.

    Example:
        >>> FakeChatModel(model="echo", responses=["hi"]).invoke("hello").content
        'hi'
    """

    model: str = "fake"
    responses: list[str] = Field(default_factory=lambda: ["This is a fake answer."])
    error: str | None = None

    @property
    def _llm_type(self) -> str:
        return "llmpool-fake"

    def _fail(self) -> None:
        if self.error is not None:
            raise ConnectionError(self.error)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._fail()
        return super()._generate(messages, stop, run_manager, **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._fail()
        return await super()._agenerate(messages, stop, run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._fail()
        yield from super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._fail()
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Accept tools and ignore them: the scripted answers stay the same."""
        return self
