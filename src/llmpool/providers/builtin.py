"""llmpool's built-in providers, declared through its own ``llmpool.providers`` entry points."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmpool.providers.chat import DEFAULT_TIMEOUT, ChatProvider

RETRY, FALLBACK = "retry", "fallback"


def _outcomes(retry: str, fallback: str) -> dict[str, str]:
    return {**dict.fromkeys(retry.split(), RETRY), **dict.fromkeys(fallback.split(), FALLBACK)}


#: The openai SDK's errors (also raised by clients built on it).
_OPENAI_ERRORS = _outcomes(
    "RateLimitError InternalServerError APIConnectionError APITimeoutError",
    "AuthenticationError PermissionDeniedError NotFoundError BadRequestError "
    "UnprocessableEntityError",
)
#: The anthropic SDK's errors: the openai SDK's names, and its 503 and 529.
_ANTHROPIC_ERRORS = {**_OPENAI_ERRORS, **_outcomes("ServiceUnavailableError OverloadedError", "")}
#: botocore's transport and credential errors (its ``ClientError`` is read by AWS error code).
_BOTOCORE_ERRORS = _outcomes(
    "EndpointConnectionError ConnectTimeoutError ReadTimeoutError ConnectionClosedError",
    "NoCredentialsError PartialCredentialsError",
)
#: google-api-core's and google-auth's errors.
_GOOGLE_ERRORS = _outcomes(
    "ServiceUnavailable TooManyRequests DeadlineExceeded ResourceExhausted",
    "Unauthenticated PermissionDenied DefaultCredentialsError",
)


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _builtin(name: str, chat_class: str, **declared: Any) -> ChatProvider:
    # Installed by the extra of its name, the package of its class's module.
    package = chat_class.partition(":")[0].replace("_", "-")
    return ChatProvider(name, chat_class, extra=name, package=package, **declared)


def _ollama_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    # ChatOllama's clients take the timeout in ``client_kwargs`` (None there: the default).
    timeout = kwargs.pop("timeout", DEFAULT_TIMEOUT)
    client_kwargs = kwargs.get("client_kwargs") or {}
    if isinstance(client_kwargs, Mapping):
        given = {k: v for k, v in client_kwargs.items() if not (k == "timeout" and v is None)}
        kwargs["client_kwargs"] = {"timeout": timeout, **given}
    return kwargs


def _bedrock_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    # ChatBedrockConverse takes whole seconds: a row's ``timeout: 2.5`` rounds up.
    timeout = kwargs.get("timeout")
    if isinstance(timeout, float):
        kwargs["timeout"] = math.ceil(timeout)
    return kwargs


def _bedrock_embeddings_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    # BedrockEmbeddings takes timeouts and retries in a botocore Config: no SDK retries.
    timeout = kwargs.pop("timeout", DEFAULT_TIMEOUT)
    if "config" not in kwargs:
        try:
            from botocore.config import Config  # type: ignore[import-untyped]
        except ImportError:  # the class import says which extra to install
            return kwargs
        seconds = math.ceil(timeout) if isinstance(timeout, (int, float)) else DEFAULT_TIMEOUT
        kwargs["config"] = Config(
            connect_timeout=seconds, read_timeout=seconds, retries={"max_attempts": 0}
        )
    return kwargs


def _models(*entries: tuple[str, int, int, str]) -> dict[str, dict[str, Any]]:
    # (names, context window, longest answer, capabilities): the providers' published figures.
    table: dict[str, dict[str, Any]] = {}
    for names, window, longest, capabilities in entries:
        entry = {"context_window": window, "max_output_tokens": longest,
                 "capabilities": sorted(capabilities.split())}  # fmt: skip
        table.update(dict.fromkeys(names.split(), entry))
    return table


_ALL = "tools structured_output vision streaming"

#: OpenAI's models (`llmpool.providers.fit.model_entry` also finds their dated snapshots).
_OPENAI_MODELS = _models(
    ("gpt-4.1 gpt-4.1-mini gpt-4.1-nano", 1_047_576, 32_768, _ALL),
    ("gpt-4o gpt-4o-mini", 128_000, 16_384, _ALL),
    ("gpt-4-turbo gpt-4-1106-preview gpt-4-0125-preview", 128_000, 4_096, _ALL),
    ("gpt-4", 8_192, 8_192, "tools structured_output streaming"),
    ("gpt-3.5-turbo", 16_385, 4_096, "tools structured_output streaming"),
    ("o1 o3 o4-mini", 200_000, 100_000, _ALL),
    ("o3-mini", 200_000, 100_000, "tools structured_output streaming"),
)
#: Anthropic's models.
_ANTHROPIC_MODELS = _models(
    ("claude-3-haiku claude-3-opus", 200_000, 4_096, _ALL),
    ("claude-3-5-haiku claude-3-5-sonnet", 200_000, 8_192, _ALL),
    ("claude-3-7-sonnet claude-sonnet-4", 200_000, 64_000, _ALL),
    ("claude-opus-4", 200_000, 32_000, _ALL),
)
#: Google's Gemini models on Vertex AI.
_GEMINI_MODELS = _models(
    ("gemini-1.5-pro", 2_097_152, 8_192, _ALL),
    ("gemini-1.5-flash gemini-2.0-flash gemini-2.0-flash-lite", 1_048_576, 8_192, _ALL),
    ("gemini-2.5-pro gemini-2.5-flash", 1_048_576, 65_536, _ALL),
)

OPENAI = _builtin(
    "openai",
    "langchain_openai:ChatOpenAI",
    auth_names={"api_base": "base_url", "openai_api_base": "base_url"},
    secret_env=_names("OPENAI_API_KEY"),
    plain_env=_names("OPENAI_API_BASE OPENAI_BASE_URL OPENAI_ORGANIZATION"),
    endpoint_keys=_names("base_url api_base openai_api_base openai_proxy"),
    genai_name="openai",
    default_endpoint="https://api.openai.com/v1",
    error_outcomes=_OPENAI_ERRORS,
    embeddings_class="langchain_openai:OpenAIEmbeddings",
    models=_OPENAI_MODELS,
)

AZURE_OPENAI = _builtin(
    "azure_openai",
    "langchain_openai:AzureChatOpenAI",
    auth_names={
        # the usage guide's AZURE_OPENAI_API_BASE / _DEPLOYMENT_NAME / _API_VERSION
        "api_base": "azure_endpoint",
        "azure_openai_api_base": "azure_endpoint",
        "endpoint": "azure_endpoint",
        "deployment_name": "azure_deployment",
        "deployment": "azure_deployment",
    },
    deployment_from_model=True,
    secret_env=_names("AZURE_OPENAI_API_KEY"),
    plain_env=_names(
        "AZURE_OPENAI_API_BASE AZURE_OPENAI_ENDPOINT AZURE_OPENAI_DEPLOYMENT_NAME "
        "AZURE_OPENAI_API_VERSION"
    ),
    endpoint_keys=_names(
        "azure_endpoint azure_openai_api_base endpoint api_base base_url openai_api_base "
        "openai_proxy"
    ),
    genai_name="azure.ai.openai",  # its endpoint is the row's own resource
    error_outcomes=_OPENAI_ERRORS,
    embeddings_class="langchain_openai:AzureOpenAIEmbeddings",
)

ANTHROPIC = _builtin(
    "anthropic",
    "langchain_anthropic:ChatAnthropic",
    secret_env=_names("ANTHROPIC_API_KEY"),
    plain_env=_names("ANTHROPIC_BASE_URL"),
    endpoint_keys=_names("base_url anthropic_api_url anthropic_proxy"),
    genai_name="anthropic",
    default_endpoint="https://api.anthropic.com",
    error_outcomes=_ANTHROPIC_ERRORS,
    models=_ANTHROPIC_MODELS,
)

BEDROCK = _builtin(
    "bedrock",
    "langchain_aws:ChatBedrockConverse",
    auth_names={
        "region": "region_name",
        "aws_region": "region_name",
        "access_key_id": "aws_access_key_id",
        "secret_access_key": "aws_secret_access_key",
        "session_token": "aws_session_token",
    },
    # max_retries=0 becomes botocore's retries={"max_attempts": 0}: no SDK retries.
    prepare=_bedrock_arguments,
    secret_env=_names("AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN"),
    plain_env=_names("AWS_REGION AWS_DEFAULT_REGION"),
    endpoint_keys=_names("endpoint_url base_url"),
    genai_name="aws.bedrock",  # its endpoint depends on the region
    error_outcomes=_BOTOCORE_ERRORS,
    embeddings_class="langchain_aws:BedrockEmbeddings",
    embeddings_options={
        "model_param": "model_id",
        "prepare": _bedrock_embeddings_arguments,
        "prepared_keys": frozenset({"timeout"}),
    },
)

VERTEXAI = _builtin(
    "vertexai",
    "langchain_google_vertexai:ChatVertexAI",
    auth_names={"google_cloud_project": "project", "project_id": "project"},
    plain_env=_names("GOOGLE_CLOUD_PROJECT GOOGLE_CLOUD_LOCATION"),
    endpoint_keys=_names("api_endpoint base_url"),
    genai_name="gcp.vertex_ai",  # its endpoint depends on the location
    error_outcomes=_GOOGLE_ERRORS,
    embeddings_class="langchain_google_vertexai:VertexAIEmbeddings",
    embeddings_options={"model_param": "model_name"},
    models=_GEMINI_MODELS,
)

FIREWORKS = _builtin(
    "fireworks",
    "langchain_fireworks:ChatFireworks",
    secret_env=_names("FIREWORKS_API_KEY"),
    endpoint_keys=_names("base_url fireworks_api_base"),
    genai_name="fireworks",  # not one of the conventions' well-known ids
    default_endpoint="https://api.fireworks.ai/inference/v1",
    # langchain-fireworks raises the openai SDK's error classes
    error_outcomes=_OPENAI_ERRORS,
    embeddings_class="langchain_fireworks:FireworksEmbeddings",
)

OLLAMA = _builtin(
    "ollama",
    "langchain_ollama:ChatOllama",
    capabilities=_names("tools streaming structured_output"),
    auth_names={"api_base": "base_url", "host": "base_url"},
    prepare=_ollama_arguments,
    prepared_keys=_names("timeout"),
    plain_env=_names("OLLAMA_BASE_URL"),
    endpoint_keys=_names("base_url host"),
    genai_name="ollama",  # not one of the conventions' well-known ids
    default_endpoint="http://localhost:11434",
    embeddings_class="langchain_ollama:OllamaEmbeddings",
)

FAKE = ChatProvider(
    "fake",
    "llmpool.providers.fake:FakeChatModel",
    extra=None,
    package="langchain-core",
    # its errors are named as the openai and anthropic SDKs' (and carry their status)
    error_outcomes=_ANTHROPIC_ERRORS,
    embeddings_class="llmpool.providers.fake:FakeEmbeddings",
)

BUILTINS = (OPENAI, AZURE_OPENAI, ANTHROPIC, BEDROCK, VERTEXAI, FIREWORKS, OLLAMA, FAKE)
