"""Providers backed by a LangChain model class (`ChatProvider`) or a factory (`FactoryProvider`)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from llmpool.credentials.checks import REFERENCE_SUFFIXES, shown_reference
from llmpool.errors import EnvNotAllowedError, ProviderNotInstalledError, UnsupportedParameterError
from llmpool.providers.declarations import accepted_config

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig

Factory = Callable[["LLMConfig", Mapping[str, Any]], "BaseChatModel"]

ALL_CAPABILITIES = frozenset({"tools", "streaming", "structured_output"})

#: Seconds one request may take when a row sets none (the SDKs' ten minutes outlast a deadline).
DEFAULT_TIMEOUT = 60.0

#: Keywords whose ``None`` would remove the request timeout: a row's ``null`` leaves the default.
TIMEOUT_KEYS = frozenset({"timeout", "request_timeout", "default_request_timeout"})

#: Retries a client makes when served alone (`LLMPool.get_llm`); in a chain the walk retries.
STANDALONE_RETRIES = 2


def _types_secret(annotation: Any, depth: int = 0) -> bool:
    # Whether a field annotation admits a SecretStr (``SecretStr | None``...).
    if annotation is SecretStr:
        return True
    return depth <= 8 and any(_types_secret(a, depth + 1) for a in typing.get_args(annotation))


@dataclass(frozen=True)
class ChatProvider:
    """A provider backed by one LangChain model class, named as ``"module:Class"``.

    Keyword arguments, by precedence: the row's ``config``, its resolved ``auth_meta`` (renamed
    through ``auth_names``), the model name (as ``model_param``), ``defaults`` (no SDK retries,
    `DEFAULT_TIMEOUT`), then ``prepare``. A key the class does not take is refused, and so is a
    secret bound to a parameter it does not type ``SecretStr`` (it would show in its repr).
    ``models`` declares what each model can take (`llmpool.providers.fit`).

    Example:
        >>> p = ChatProvider("fake", "llmpool.providers.fake:FakeChatModel", extra=None)
        >>> p.name, "tools" in p.capabilities, "responses" in p.accepted_config
        ('fake', True, True)
    """

    name: str
    chat_class: str
    extra: str | None
    package: str | None = None
    capabilities: frozenset[str] = ALL_CAPABILITIES
    model_param: str = "model"
    auth_names: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(
        default_factory=lambda: {"max_retries": 0, "timeout": DEFAULT_TIMEOUT}
    )
    deployment_from_model: bool = False
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    secret_env: frozenset[str] = frozenset()
    plain_env: frozenset[str] = frozenset()
    endpoint_keys: frozenset[str] = frozenset()
    genai_name: str | None = None
    default_endpoint: str | None = None
    error_outcomes: Mapping[str, str] = field(default_factory=dict)
    prepared_keys: frozenset[str] = frozenset()
    embeddings_class: str | None = None
    embeddings_options: Mapping[str, Any] = field(default_factory=dict)
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def embeddings(self) -> ChatProvider | None:
        """What builds its embedding rows: ``embeddings_class`` with ``embeddings_options``."""
        if self.embeddings_class is None:
            return None
        return dataclasses.replace(
            self, chat_class=self.embeddings_class, embeddings_class=None, **self.embeddings_options
        )

    @property
    def accepted_config(self) -> frozenset[str] | None:
        """The ``config`` keys a row may set; ``None`` when the class cannot be imported here."""
        try:
            cls = self.load_class()
        except (ProviderNotInstalledError, AttributeError):
            return None
        return frozenset(self.accepted_parameters(cls)) | self.prepared_keys

    def load_class(self) -> type[BaseChatModel]:
        """Import and return the model class; `ProviderNotInstalledError` says what to install."""
        module_name, _, class_name = self.chat_class.partition(":")
        try:
            module = import_module(module_name)
        except ImportError as error:
            package = self.package or module_name
            hint = f'"llmpool[{self.extra}]"' if self.extra else package
            msg = (
                f"Provider {self.name!r} needs the package {package}, "
                f"which is not installed ({error}); run: pip install {hint}"
            )
            raise ProviderNotInstalledError(msg) from error
        cls: type[BaseChatModel] = getattr(module, class_name)
        return cls

    def accepted_parameters(self, cls: type[BaseChatModel]) -> dict[str, str]:
        """Return every keyword the class takes -> its canonical form (pydantic's alias)."""
        names = {name: info.alias or name for name, info in cls.model_fields.items()}
        return names | {alias: alias for alias in names.values()}

    def arguments(
        self, config: LLMConfig, auth: Mapping[str, Any], cls: type[BaseChatModel]
    ) -> dict[str, Any]:
        """Return the keyword arguments for ``cls``."""
        accepted = self.accepted_parameters(cls)
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}  # keyword -> the row field it came from, for errors

        def put(key: str, value: Any, source: str) -> None:
            if value is None and key in TIMEOUT_KEYS:
                return  # null would mean "wait forever", not "the default"
            merged.pop(key, None)
            merged[key] = value
            origin[key] = source

        for key, value in self.defaults.items():
            if key in accepted:
                put(key, value, f"defaults.{key}")
        put(self.model_param, config.model_name, "model_name")
        references = {
            ref.rsplit("_", 1)[0]: ref
            for ref in config.auth_meta
            if ref.endswith(REFERENCE_SUFFIXES)
        }
        for key, value in auth.items():
            put(self.auth_names.get(key, key), value, f"auth_meta.{references.get(key, key)}")
        for key, value in config.config.items():
            put(key, value, f"config.{key}")
        if self.deployment_from_model and not {"azure_deployment", "deployment_name"} & set(merged):
            # Azure addresses a deployment; the row's model name is it unless the row names one.
            put("azure_deployment", config.model_name, "model_name")
        if self.prepare is not None:
            merged = self.prepare(merged)
        secrets = {
            info.alias or name
            for name, info in cls.model_fields.items()
            if _types_secret(info.annotation)
        }
        kwargs: dict[str, Any] = {}
        for key, value in merged.items():
            source = origin.get(key, f"config.{key}")
            if key not in accepted:
                hint = (
                    "; put provider-specific extras under 'model_kwargs'"
                    if source.startswith("config.") and "model_kwargs" in cls.model_fields
                    else ""
                )
                msg = (
                    f"{config.describe()}: {source} is not a parameter of {cls.__name__} "
                    f"(provider {self.name!r}){hint}"
                )
                raise UnsupportedParameterError(msg)
            if isinstance(value, SecretStr) and accepted[key] not in secrets:
                raise self._exposed_secret(config, cls, origin.get(key, f"auth_meta.{key}"), key)
            kwargs.pop(accepted[key], None)  # a later layer wins, under any of the names
            kwargs[accepted[key]] = value
        return kwargs

    def _exposed_secret(
        self, config: LLMConfig, cls: type[BaseChatModel], source: str, parameter: str
    ) -> EnvNotAllowedError:
        reference = source.partition(".")[2]
        what = (
            f"environment variable {shown_reference(config.auth_meta.get(reference))}"
            if reference.endswith("_env")
            else "a secret file"
        )
        msg = (
            f"{config.describe()}: {source} reads {what}, a secret, and would pass it to "
            f"{cls.__name__} parameter {parameter!r}, which does not keep it secret (it would "
            "show in the model's repr, serialisation and callbacks); reference secrets only "
            "from keys such as api_key_env, or mark an operator's variable NAME:plain in "
            "LLMPOOL_ALLOWED_ENV if it is not a secret"
        )
        return EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=source)

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return a model for ``config``."""
        cls = self.load_class()
        kwargs = self.arguments(config, auth, cls)
        try:
            return cls(**kwargs)
        except ValidationError as error:
            # Field names and messages only: inputs may be secrets.
            problems = "; ".join(
                f"{_field_of(config, item['loc']) or cls.__name__}: {item['msg']}"
                for item in error.errors(include_url=False, include_input=False)
            )
        except (TypeError, ValueError) as error:
            problems = str(error).splitlines()[0] if str(error) else type(error).__name__
        msg = f"{config.describe()}: {cls.__name__} refused its parameters: {problems}"
        raise UnsupportedParameterError(msg) from None


def _field_of(config: LLMConfig, loc: tuple[Any, ...]) -> str:
    # A refused keyword as the row names it: "config.error_rate", else the class's field.
    where = ".".join(str(part) for part in loc)
    return f"config.{where}" if loc and loc[0] in config.config else where


@dataclass(frozen=True)
class FactoryProvider:
    """A provider from a plain factory ``(config, auth) -> BaseChatModel``."""

    name: str
    factory: Factory
    extra: str | None = None
    package: str | None = None
    capabilities: frozenset[str] = frozenset({"streaming"})
    secret_env: frozenset[str] = frozenset()
    plain_env: frozenset[str] = frozenset()
    endpoint_keys: frozenset[str] = frozenset()
    genai_name: str | None = None
    default_endpoint: str | None = None
    error_outcomes: Mapping[str, str] = field(default_factory=dict)
    accepted_config: frozenset[str] | None = None

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return ``factory(config, auth)``."""
        return self.factory(config, auth)


def standalone_config(config: LLMConfig, provider: object) -> LLMConfig:
    """Return the row as built when served alone: with `STANDALONE_RETRIES` unless it sets some."""
    accepted = accepted_config(provider)
    if "max_retries" in config.config or accepted is None or "max_retries" not in accepted:
        return config
    retried = {**config.config, "max_retries": STANDALONE_RETRIES}
    return config.model_copy(update={"config": retried})
