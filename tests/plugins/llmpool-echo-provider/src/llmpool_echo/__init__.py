"""A provider plugin for llmpool that answers with the prompt it was given, prefixed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class EchoChatModel(BaseChatModel):
    """Answers ``{prefix}{last message}``."""

    prefix: str = "echo: "

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = f"{self.prefix}{messages[-1].content}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class EchoProvider:
    """The provider object llmpool finds through the entry point."""

    name = "echo"
    extra = None
    package = "llmpool-echo-provider"
    capabilities = frozenset({"streaming"})

    def build(self, config: Any, auth: Mapping[str, Any]) -> BaseChatModel:
        return EchoChatModel(prefix=config.config.get("prefix", "echo: "))


PROVIDER = EchoProvider()
