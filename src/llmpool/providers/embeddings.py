"""Embedding rows -> LangChain ``Embeddings``: the built-in factories and the plugin hook.

A provider builds embeddings when it has an optional ``build_embeddings(config, auth)``
method (a plugin adds one to its provider object), or when it is one of llmpool's built-ins
listed in `BUILTIN_EMBEDDINGS`. Each built-in names its LangChain class as a ``"module:Class"``
string, imported on first build from the same partner package as the provider's chat model,
and turns a row into keyword arguments by the same rules as the chat model
(`llmpool.providers.ChatProvider`): the row's ``auth_meta`` is resolved exactly as for chat
(the same allowlist, the same variables), every key is checked against the class's fields, a
secret goes only to a parameter typed ``SecretStr``, SDK retries are off (``max_retries=0``:
llmpool's fallback retries) and a request waits at most `DEFAULT_TIMEOUT` seconds unless the
row says otherwise.

A plugin's provider may also declare ``embeddings_config``: the ``config`` keys its embedding
rows accept (checked when a row is written), as ``accepted_config`` does for chat rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from llmpool.errors import InvalidConfigError, LLMPoolError, ProviderError
from llmpool.providers.chat import DEFAULT_TIMEOUT, ChatProvider

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from llmpool.models import LLMConfig

__all__ = [
    "BUILTIN_EMBEDDINGS",
    "EmbeddingsClass",
    "EmbeddingsFactory",
    "embeddings_accepted_config",
    "embeddings_builder",
    "no_embeddings_error",
]

#: What builds an embedding row's client: ``(config, resolved auth) -> Embeddings``.
EmbeddingsFactory = Callable[["LLMConfig", Mapping[str, Any]], "Embeddings"]

_NO_SDK_RETRIES = {"max_retries": 0, "timeout": DEFAULT_TIMEOUT}


@dataclass(frozen=True)
class EmbeddingsClass:
    """A built-in provider's embeddings: one LangChain ``Embeddings`` class, ``"module:Class"``.

    Attributes:
        provider: The provider's registry name.
        embeddings_class: ``"module:Class"`` of the LangChain embeddings class.
        extra: The ``llmpool[...]`` extra that installs its package.
        package: The distribution that ships the class.
        model_param: The keyword that takes the row's ``model_name``.
        auth_names: Renames of resolved ``auth_meta`` keys (``region`` -> ``region_name``).
        defaults: Keyword arguments used when the row gives none (dropped when the class
            lacks them).
        deployment_from_model: Azure: the deployment defaults to the row's model name.
        prepare: Adapts the final keyword arguments before the parameter check.
        prepared_keys: ``config`` keys ``prepare`` consumes, accepted although not fields.

    Example:
        >>> fake = BUILTIN_EMBEDDINGS["fake"]
        >>> "dimensions" in fake.accepted_config
        True
    """

    provider: str
    embeddings_class: str
    extra: str | None
    package: str | None = None
    model_param: str = "model"
    auth_names: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=lambda: dict(_NO_SDK_RETRIES))
    deployment_from_model: bool = False
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    prepared_keys: frozenset[str] = frozenset()

    @cached_property
    def _arguments(self) -> ChatProvider:
        # The chat provider's rules apply unchanged to any pydantic client class: imported on
        # first use, keys checked against its fields, secrets only to SecretStr parameters.
        return ChatProvider(
            self.provider,
            self.embeddings_class,
            extra=self.extra,
            package=self.package,
            model_param=self.model_param,
            auth_names=self.auth_names,
            defaults=self.defaults,
            deployment_from_model=self.deployment_from_model,
            prepare=self.prepare,
            prepared_keys=self.prepared_keys,
        )

    @property
    def accepted_config(self) -> frozenset[str] | None:
        """The ``config`` keys an embedding row may set; ``None`` when the class is missing."""
        return self._arguments.accepted_config

    def __call__(self, config: LLMConfig, auth: Mapping[str, Any]) -> Embeddings:
        """Return the row's embeddings client.

        Raises:
            ProviderNotInstalledError: The package is missing (the message names the extra).
            UnsupportedParameterError: The class does not take a key, or refuses a value.
            EnvNotAllowedError: A secret would reach a parameter not typed ``SecretStr``.
        """
        return cast("Embeddings", self._arguments.build(config, auth))


def _bedrock_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """BedrockEmbeddings takes its timeouts and retries in a botocore ``Config``: SDK retries
    off, and a row's ``timeout`` (default `DEFAULT_TIMEOUT`) as its connect and read timeouts.
    """
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


def _ollama_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    from llmpool.providers.builtin import _ollama_arguments as chat_arguments

    return chat_arguments(kwargs)


#: The embeddings of llmpool's built-in providers, by provider name.
BUILTIN_EMBEDDINGS: Mapping[str, EmbeddingsClass] = {
    "openai": EmbeddingsClass(
        "openai",
        "langchain_openai:OpenAIEmbeddings",
        extra="openai",
        package="langchain-openai",
        auth_names={"api_base": "base_url", "openai_api_base": "base_url"},
    ),
    "azure_openai": EmbeddingsClass(
        "azure_openai",
        "langchain_openai:AzureOpenAIEmbeddings",
        extra="azure_openai",
        package="langchain-openai",
        auth_names={
            "api_base": "azure_endpoint",
            "azure_openai_api_base": "azure_endpoint",
            "endpoint": "azure_endpoint",
            "deployment_name": "azure_deployment",
            "deployment": "azure_deployment",
        },
        deployment_from_model=True,
    ),
    "bedrock": EmbeddingsClass(
        "bedrock",
        "langchain_aws:BedrockEmbeddings",
        extra="bedrock",
        package="langchain-aws",
        model_param="model_id",
        auth_names={
            "region": "region_name",
            "aws_region": "region_name",
            "access_key_id": "aws_access_key_id",
            "secret_access_key": "aws_secret_access_key",
            "session_token": "aws_session_token",
        },
        prepare=_bedrock_arguments,
        prepared_keys=frozenset({"timeout"}),
    ),
    "vertexai": EmbeddingsClass(
        "vertexai",
        "langchain_google_vertexai:VertexAIEmbeddings",
        extra="vertexai",
        package="langchain-google-vertexai",
        model_param="model_name",
        auth_names={"google_cloud_project": "project", "project_id": "project"},
    ),
    "fireworks": EmbeddingsClass(
        "fireworks",
        "langchain_fireworks:FireworksEmbeddings",
        extra="fireworks",
        package="langchain-fireworks",
    ),
    "ollama": EmbeddingsClass(
        "ollama",
        "langchain_ollama:OllamaEmbeddings",
        extra="ollama",
        package="langchain-ollama",
        auth_names={"api_base": "base_url", "host": "base_url"},
        prepare=_ollama_arguments,
        prepared_keys=frozenset({"timeout"}),
    ),
    "fake": EmbeddingsClass(
        "fake", "llmpool.providers.fake:FakeEmbeddings", extra=None, package="langchain-core"
    ),
}


def _is_builtin(provider: object) -> bool:
    from llmpool.providers.builtin import BUILTINS

    return any(provider is builtin for builtin in BUILTINS)


def embeddings_builder(provider: object) -> EmbeddingsFactory | None:
    """Return what builds a provider's embeddings, or ``None`` when it has none.

    A provider's own ``build_embeddings`` comes first; llmpool's built-ins have theirs in
    `BUILTIN_EMBEDDINGS` (only the built-in objects themselves: a plugin reusing a built-in's
    name gets nothing it did not declare).

    Example:
        >>> from llmpool.providers.builtin import ANTHROPIC, OPENAI
        >>> embeddings_builder(OPENAI) is not None, embeddings_builder(ANTHROPIC)
        (True, None)
    """
    own = getattr(provider, "build_embeddings", None)
    if callable(own):
        return cast("EmbeddingsFactory", own)
    name = getattr(provider, "name", None)
    if isinstance(name, str) and name in BUILTIN_EMBEDDINGS and _is_builtin(provider):
        return BUILTIN_EMBEDDINGS[name]
    return None


def no_embeddings_error(config: LLMConfig, provider: object) -> ProviderError:
    """Return the error for an embedding row whose provider builds no embeddings."""
    name = getattr(provider, "name", config.provider)
    msg = (
        f"{config.describe()}: provider {name!r} has no embeddings (its rows can only be chat "
        f"rows); built-in embeddings: {', '.join(sorted(BUILTIN_EMBEDDINGS))}, or a plugin "
        "provider with build_embeddings"
    )
    return ProviderError(msg)


def embeddings_accepted_config(config: LLMConfig, provider: object) -> frozenset[str] | None:
    """Return the ``config`` keys an embedding row of ``provider`` accepts (``None``: any).

    Raises:
        InvalidConfigError: The provider builds no embeddings; names the row and the field
            ``kind``.
    """
    builder = embeddings_builder(provider)
    if builder is None:
        error = no_embeddings_error(config, provider)
        raise InvalidConfigError(str(error), llm_name=config.name, llm_id=config.id, field="kind")
    try:
        declared = getattr(builder, "accepted_config", None)
        if declared is None:
            declared = getattr(provider, "embeddings_config", None)
    except LLMPoolError:  # its package is not installed here: checked when built
        return None
    if isinstance(declared, (set, frozenset, list, tuple)):
        return frozenset(item for item in declared if isinstance(item, str))
    return None
