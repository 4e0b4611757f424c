"""A provider plugin for llmpool that answers with the prompt it was given, prefixed.

Everything llmpool needs to know about it is declared here, on the provider object: the
variable its rows may reference (``ECHO_API_KEY``, a secret), the key that names its server
(``gateway``), the ``config`` keys it accepts, and how its own error is handled
(``EchoOverloaded`` is transient: retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

#: Calls each model made, by its prefix: lets a test count retries.
CALLS: dict[str, int] = {}


class EchoOverloaded(Exception):
    """The echo server is busy; the same request may succeed a moment later."""


class EchoChatModel(BaseChatModel):
    """Answers ``{prefix}{last message}``, or raises `EchoOverloaded` when ``overloaded``."""

    prefix: str = "echo: "
    overloaded: bool = False
    authenticated: bool = False

    @property
    def _llm_type(self) -> str:
        return "echo"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        CALLS[self.prefix] = CALLS.get(self.prefix, 0) + 1
        if self.overloaded:
            raise EchoOverloaded("the echo server is overloaded")
        badge = "[key] " if self.authenticated else ""
        text = f"{badge}{self.prefix}{messages[-1].content}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class EchoProvider:
    """The provider object llmpool finds through the entry point."""

    name = "echo"
    extra = None
    package = "llmpool-echo-provider"
    capabilities = frozenset({"streaming"})
    secret_env = frozenset({"ECHO_API_KEY"})
    endpoint_keys = frozenset({"gateway"})
    accepted_config = frozenset({"prefix", "overloaded", "gateway"})
    error_outcomes = MappingProxyType({"llmpool_echo:EchoOverloaded": "retry"})

    def build(self, config: Any, auth: Mapping[str, Any]) -> BaseChatModel:
        key = auth.get("api_key")
        return EchoChatModel(
            prefix=config.config.get("prefix", "echo: "),
            overloaded=bool(config.config.get("overloaded", False)),
            authenticated=key is not None and bool(key.get_secret_value()),
        )


PROVIDER = EchoProvider()
