"""Real LangChain clients, built from rows, answering through servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from servers import AnthropicServer, OllamaServer, OpenAIServer, ProviderServer, Reply

from llmpool.models import LLMConfig
from llmpool.providers import ProviderRegistry

TEXT = "Python is a programming language."


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


CASES: dict[
    str, tuple[type[ProviderServer], Callable[[str], tuple[dict[str, Any], dict[str, str]]]]
]
CASES = {
    "openai": (
        OpenAIServer,
        lambda url: (
            {"auth_meta": {"api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_API_BASE"}},
            {"OPENAI_API_KEY": "sk-test", "OPENAI_API_BASE": url + "/v1"},
        ),
    ),
    "azure_openai": (
        OpenAIServer,
        lambda url: (
            {
                "auth_meta": {
                    "api_key_env": "AZURE_OPENAI_API_KEY",
                    "azure_endpoint_env": "AZURE_OPENAI_API_BASE",
                    "azure_deployment_env": "AZURE_OPENAI_DEPLOYMENT_NAME",
                    "api_version_env": "AZURE_OPENAI_API_VERSION",
                }
            },
            {
                "AZURE_OPENAI_API_KEY": "az",
                "AZURE_OPENAI_API_BASE": url,
                "AZURE_OPENAI_DEPLOYMENT_NAME": "gpt4-prod",
                "AZURE_OPENAI_API_VERSION": "2024-02-01",
            },
        ),
    ),
    "anthropic": (
        AnthropicServer,
        lambda url: (
            {"auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"}, "config": {"base_url": url}},
            {"ANTHROPIC_API_KEY": "sk-ant-test"},
        ),
    ),
    "ollama": (
        OllamaServer,
        lambda url: ({"auth_meta": {"base_url_env": "OLLAMA_BASE_URL"}}, {"OLLAMA_BASE_URL": url}),
    ),
    "fireworks": (
        OpenAIServer,
        lambda url: (
            {"auth_meta": {"api_key_env": "FIREWORKS_API_KEY"}, "config": {"base_url": url}},
            {"FIREWORKS_API_KEY": "fw-test"},
        ),
    ),
}


@pytest.mark.parametrize("provider", sorted(CASES))
async def test_provider_answers_plain_and_streaming_over_http(provider: str) -> None:
    """The row's real client answers invoke, stream, ainvoke and astream from a local server."""
    server_cls, setup = CASES[provider]
    with server_cls() as server:
        server.script(Reply(TEXT), Reply(TEXT), Reply(TEXT), Reply(TEXT))
        values, environ = setup(server.url)
        row = LLMConfig(
            id="r1", name=f"{provider} row", provider=provider, model_name="m-1", **values
        )
        model = ProviderRegistry().build(row, environ=environ)
        assert _text(model.invoke("What is Python?").content) == TEXT
        assert "".join(_text(c.content) for c in model.stream("What is Python?")) == TEXT
        assert _text((await model.ainvoke("hi")).content) == TEXT
        assert "".join([_text(c.content) async for c in model.astream("hi")]) == TEXT
        requests = server.wait_for_requests(4)
        aclose = getattr(model, "aclose", None)
        if aclose is not None:  # ChatFireworks owns an aiohttp session; close it on this loop
            await aclose()
    assert len(requests) == 4
    if provider != "ollama":  # ChatOllama streams even for invoke
        assert [r.stream for r in requests] == [False, True, False, True]
    if provider == "azure_openai":
        assert requests[0].path.startswith("/openai/deployments/gpt4-prod/chat/completions")
    if provider in ("openai", "fireworks", "anthropic"):
        assert requests[0].body["model"] == "m-1"
