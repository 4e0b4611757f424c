"""The legacy functions still work from the seed's variables, and say they are deprecated."""

from __future__ import annotations

import pytest
from servers import AnthropicServer, OllamaServer, OpenAIServer, Reply

from llmpool import get_anthropic_llm, get_ollama_llm, get_openai_llm
from llmpool.errors import MissingSecretError


def test_get_openai_llm_warns_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_openai_llm builds ChatOpenAI from OPENAI_API_KEY and OPENAI_API_BASE."""
    with OpenAIServer() as server:
        server.script(Reply("legacy openai"))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-legacy")
        monkeypatch.setenv("OPENAI_API_BASE", server.url + "/v1")
        with pytest.warns(DeprecationWarning, match="get_llm_with_fallback"):
            llm = get_openai_llm(max_retries=0)
        assert llm.invoke("hi").content == "legacy openai"


def test_get_anthropic_llm_warns_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_anthropic_llm builds ChatAnthropic from ANTHROPIC_API_KEY."""
    with AnthropicServer() as server:
        server.script(Reply("legacy claude"))
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-legacy")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        with pytest.warns(DeprecationWarning, match="deprecated"):
            llm = get_anthropic_llm(max_retries=0)
        assert llm.invoke("hi").content == "legacy claude"


def test_get_ollama_llm_warns_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_ollama_llm builds ChatOllama from OLLAMA_BASE_URL and OLLAMA_CHAT_MODEL."""
    with OllamaServer() as server:
        server.script(Reply("legacy llama"))
        monkeypatch.setenv("OLLAMA_BASE_URL", server.url)
        monkeypatch.setenv("OLLAMA_CHAT_MODEL", "llama3")
        with pytest.warns(DeprecationWarning, match="deprecated"):
            llm = get_ollama_llm()
        assert llm.invoke("hi").content == "legacy llama"
        assert server.requests[0].body["model"] == "llama3"


def test_legacy_missing_key_is_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without OPENAI_API_KEY the legacy function names the variable."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with (
        pytest.warns(DeprecationWarning, match="deprecated"),
        pytest.raises(MissingSecretError, match="OPENAI_API_KEY"),
    ):
        get_openai_llm()
