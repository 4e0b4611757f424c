"""Real LangChain clients, built from rows, answering through servers on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import json
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from servers import (
    AnthropicServer,
    Hang,
    OllamaServer,
    OpenAIServer,
    ProviderServer,
    Reply,
    Request,
    Status,
)

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


def _event(event_type: str, payload: dict[str, Any]) -> bytes:
    """One message of the AWS event-stream encoding that Bedrock's ConverseStream speaks."""
    headers = b""
    for name, value in (
        (":event-type", event_type),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        headers += bytes([len(name)]) + name.encode() + b"\x07"
        headers += struct.pack(">H", len(value)) + value.encode()
    body = json.dumps(payload).encode()
    prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


class BedrockServer(ProviderServer):
    """Bedrock Runtime's Converse (JSON) and ConverseStream (event-stream) on 127.0.0.1."""

    stream_type = "application/vnd.amazon.eventstream"

    def _respond(self, handler: Any, request: Request, behaviour: Any) -> None:
        # Bedrock says "stream" in the path, not in the body.
        streaming = request.path.endswith("/converse-stream")
        request = dataclasses.replace(request, body={**request.body, "stream": streaming})
        super()._respond(handler, request, behaviour)

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        """The Converse response body."""
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
            "metrics": {"latencyMs": 1},
        }

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        """The ConverseStream events."""
        yield _event("messageStart", {"role": "assistant"})
        for chunk in chunks:
            yield _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": chunk}})
        yield _event("contentBlockStop", {"contentBlockIndex": 0})
        yield _event("messageStop", {"stopReason": "end_turn"})
        yield _event(
            "metadata",
            {
                "usage": {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8},
                "metrics": {"latencyMs": 1},
            },
        )

    def error_body(self, status: Status) -> Any:
        """Bedrock's error body."""
        return {"message": status.message or "error"}


async def test_bedrock_answers_plain_and_streaming_over_http() -> None:
    """ChatBedrockConverse, built from a row, signs and sends Converse calls to a local server."""
    model_id = "anthropic.claude-3-sonnet-20240229-v1:0"
    with BedrockServer() as server:
        server.script(Reply(TEXT), Reply(TEXT))
        row = LLMConfig(
            id="b1",
            name="Claude on Bedrock",
            provider="bedrock_converse",
            model_name=model_id,
            auth_meta={
                "region_env": "AWS_REGION",
                "aws_access_key_id_env": "AWS_ACCESS_KEY_ID",
                "aws_secret_access_key_env": "AWS_SECRET_ACCESS_KEY",
            },
            config={"endpoint_url": server.url, "timeout": 5},
        )
        environ = {
            "AWS_REGION": "us-west-2",
            "AWS_ACCESS_KEY_ID": "AKIDLOCALTEST",
            "AWS_SECRET_ACCESS_KEY": "local-secret",
        }
        model = ProviderRegistry().build(row, environ=environ)
        assert _text(model.invoke("What is Python?").content) == TEXT
        assert "".join(_text(c.content) for c in model.stream("What is Python?")) == TEXT
        requests = server.wait_for_requests(2)
    assert [r.path.rsplit("/", 1)[-1] for r in requests] == ["converse", "converse-stream"]
    assert requests[0].path.startswith("/model/anthropic.claude-3-sonnet")
    headers = {key.lower(): value for key, value in requests[0].headers.items()}
    assert "Credential=AKIDLOCALTEST/" in headers["authorization"]
    assert "/us-west-2/bedrock/aws4_request" in headers["authorization"]
    assert requests[0].body["messages"][0]["content"][0]["text"] == "What is Python?"


class VertexServer(ProviderServer):
    """Vertex AI's REST generateContent (JSON) and streamGenerateContent (a JSON array)."""

    stream_type = "application/json"

    def _respond(self, handler: Any, request: Request, behaviour: Any) -> None:
        streaming = ":streamGenerateContent" in request.path
        request = dataclasses.replace(request, body={**request.body, "stream": streaming})
        super()._respond(handler, request, behaviour)

    def answer(self, request: Request, text: str, tool: Any) -> Any:
        """The generateContent response body."""
        return {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 5},
        }

    def stream_events(self, request: Request, chunks: list[str], tool: Any) -> Iterator[bytes]:
        """The streamed array, one candidate per chunk."""
        for index, chunk in enumerate(chunks):
            yield (b"[" if index == 0 else b",") + json.dumps(
                self.answer(request, chunk, None)
            ).encode()
        yield b"]" if chunks else b"[]"

    def error_body(self, status: Status) -> Any:
        """Google's error body."""
        return {"error": {"code": status.code, "message": status.message or "error"}}


@pytest.mark.xdist_group("vertexai")  # one worker imports the Google SDK
async def test_vertexai_answers_plain_and_streaming_over_http() -> None:
    """ChatVertexAI, built from a row, calls a local REST endpoint with the row's project.

    A row cannot carry Google credentials (only references), and the client needs some: in
    production they come from Application Default Credentials; here anonymous ones stand in.
    """
    from google.auth.credentials import AnonymousCredentials

    with VertexServer() as server:
        server.script(Reply(TEXT), Reply(TEXT))
        row = LLMConfig(
            id="v1",
            name="Gemini",
            provider="google_vertexai",
            model_name="gemini-1.5-pro",
            auth_meta={"project_env": "GOOGLE_CLOUD_PROJECT"},
            config={"base_url": server.url, "api_transport": "rest", "location": "europe-west4"},
        )
        model: Any = ProviderRegistry().build(row, environ={"GOOGLE_CLOUD_PROJECT": "proj-1"})
        model.credentials = AnonymousCredentials()
        assert _text(model.invoke("What is Python?").content) == TEXT
        assert "".join(_text(c.content) for c in model.stream("What is Python?")) == TEXT
        requests = server.wait_for_requests(2)
    prefix = "/v1beta1/projects/proj-1/locations/europe-west4/publishers/google/models/"
    assert requests[0].path.startswith(prefix + "gemini-1.5-pro:generateContent")
    assert requests[1].path.startswith(prefix + "gemini-1.5-pro:streamGenerateContent")
    assert requests[0].body["contents"][0]["parts"][0]["text"] == "What is Python?"


@pytest.mark.parametrize(
    ("defaults_timeout", "values"),
    [
        (0.5, {"timeout": None}),
        (60.0, {"timeout": 0.5, "request_timeout": None}),
    ],
)
def test_a_null_timeout_still_ends_a_hung_request(
    defaults_timeout: float, values: dict[str, Any]
) -> None:
    """A hung server is abandoned at the default (or the row's own) timeout despite a null."""
    import openai

    from llmpool.providers.builtin import OPENAI

    provider = dataclasses.replace(OPENAI, defaults={"max_retries": 0, "timeout": defaults_timeout})
    with OpenAIServer() as server:
        server.script(Hang(15))
        row = LLMConfig(
            id="h1",
            name="Hung",
            provider="openai",
            model_name="gpt-4",
            auth_meta={"api_key_env": "OPENAI_API_KEY"},
            config={"base_url": server.url + "/v1", **values},
        )
        model = provider.build(row, {"api_key": "sk-test"})
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            model.invoke("hello")
        elapsed = time.monotonic() - started
        server.wait_for_requests(1)
    assert elapsed < 5
