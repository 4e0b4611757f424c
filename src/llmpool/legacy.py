"""The functions services used before llmpool: each builds its model from the environment
variables the services already set, and emits a `DeprecationWarning` pointing at
`llmpool.get_llm_with_fallback`."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

from llmpool.errors import MissingSecretError
from llmpool.providers.builtin import ANTHROPIC, OLLAMA, OPENAI

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.providers import ChatProvider


def _deprecated(name: str, provider: ChatProvider) -> type[BaseChatModel]:
    warnings.warn(
        f"{name}() is deprecated: keep your LLMs in the llms table and call "
        "llmpool.get_llm_with_fallback() (or get_llm()) instead",
        DeprecationWarning,
        stacklevel=3,
    )
    return provider.load_class()


def _required(variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise MissingSecretError(f"Environment variable {variable} is not set", variable=variable)
    return value


def get_openai_llm(**overrides: Any) -> BaseChatModel:
    """Return ``ChatOpenAI`` from ``OPENAI_API_KEY``, ``OPENAI_API_BASE`` and ``OPENAI_MODEL``.

    Example:
        >>> llm = get_openai_llm()  # needs OPENAI_API_KEY  # doctest: +SKIP
    """
    cls = _deprecated("get_openai_llm", OPENAI)
    kwargs: dict[str, Any] = {
        "model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "api_key": _required("OPENAI_API_KEY"),
        "temperature": 0.2,
    }
    if os.environ.get("OPENAI_API_BASE"):
        kwargs["base_url"] = os.environ["OPENAI_API_BASE"]
    return cls(**{**kwargs, **overrides})


def get_anthropic_llm(**overrides: Any) -> BaseChatModel:
    """Return ``ChatAnthropic`` from ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_MODEL``.

    Example:
        >>> llm = get_anthropic_llm()  # needs ANTHROPIC_API_KEY  # doctest: +SKIP
    """
    cls = _deprecated("get_anthropic_llm", ANTHROPIC)
    kwargs: dict[str, Any] = {
        "model": os.environ.get("ANTHROPIC_MODEL", "claude-3-5-sonnet-latest"),
        "api_key": _required("ANTHROPIC_API_KEY"),
        "temperature": 0.2,
    }
    if os.environ.get("ANTHROPIC_BASE_URL"):
        kwargs["base_url"] = os.environ["ANTHROPIC_BASE_URL"]
    return cls(**{**kwargs, **overrides})


def get_ollama_llm(**overrides: Any) -> BaseChatModel:
    """Return ``ChatOllama`` from ``OLLAMA_BASE_URL`` and ``OLLAMA_CHAT_MODEL``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     llm = get_ollama_llm(model="llama3")
        >>> llm.model, caught[0].category.__name__
        ('llama3', 'DeprecationWarning')
    """
    cls = _deprecated("get_ollama_llm", OLLAMA)
    kwargs: dict[str, Any] = {
        "model": os.environ.get("OLLAMA_CHAT_MODEL", "llama2"),
        "base_url": os.environ.get("OLLAMA_BASE_URL", "http://localhost:11434"),
        "temperature": 0.2,
    }
    return cls(**{**kwargs, **overrides})
