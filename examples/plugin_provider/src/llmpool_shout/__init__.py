"""An llmpool provider plugin: a chat model that answers in capitals.

A real plugin wraps a LangChain partner class the same way: `build` receives the row
(`LLMConfig`) and its resolved ``auth_meta`` (secrets as `SecretStr`) and returns a chat model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from llmpool.models import LLMConfig


class ShoutChatModel(BaseChatModel):
    """Answers with the last message, in capitals."""

    model: str = "shout-1"

    @property
    def _llm_type(self) -> str:
        return "shout"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = str(messages[-1].content).upper()
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class ShoutProvider:
    """What llmpool loads from the entry point: a name, an install hint, a factory."""

    name = "shout"
    extra = None
    package = "llmpool-shout"
    capabilities = frozenset({"streaming"})

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        return ShoutChatModel(model=config.model_name)


PROVIDER = ShoutProvider()
