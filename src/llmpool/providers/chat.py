"""Providers backed by a LangChain chat model class, or by a plain factory function.

`ChatProvider` names its class as a ``"module:Class"`` string, imported on first build, and
turns a row into the class's keyword arguments, checking every key against the class's fields.
`FactoryProvider` wraps a ``(config, auth) -> BaseChatModel`` function (`register_provider`).
Both satisfy `llmpool.providers.Provider`.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr, ValidationError

from llmpool.credentials.checks import shown_reference
from llmpool.errors import (
    EnvNotAllowedError,
    ProviderNotInstalledError,
    UnsupportedParameterError,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig

__all__ = [
    "ALL_CAPABILITIES",
    "DEFAULT_TIMEOUT",
    "STANDALONE_RETRIES",
    "ChatProvider",
    "Factory",
    "FactoryProvider",
    "standalone_config",
]

Factory = Callable[["LLMConfig", Mapping[str, Any]], "BaseChatModel"]

ALL_CAPABILITIES = frozenset({"tools", "streaming", "structured_output"})

#: Seconds one request may take when a row sets no ``timeout``. The SDKs' own default is ten
#: minutes, longer than the fallback deadline: one hung provider would use up the whole call.
DEFAULT_TIMEOUT = 60.0

#: Keywords whose ``None`` would remove the request timeout: a row's ``null`` leaves the default.
TIMEOUT_KEYS = frozenset({"timeout", "request_timeout", "default_request_timeout"})

#: Retries the client itself makes when its model is served alone (`LLMPool.get_llm`,
#: `LLMPool.create_llm_instance`): the openai and anthropic SDKs' own default. Models in a
#: fallback chain make none (``max_retries=0``), because the walk retries and fails over.
STANDALONE_RETRIES = 2


def _types_secret(annotation: Any, depth: int = 0) -> bool:
    """Return whether a field annotation admits a `SecretStr` (``SecretStr | None``...)."""
    if annotation is SecretStr:
        return True
    if depth > 8:
        return False
    return any(_types_secret(arg, depth + 1) for arg in typing.get_args(annotation))


def secret_parameters(cls: type[BaseChatModel]) -> frozenset[str]:
    """Return the keywords of ``cls`` (field names and aliases) typed to hold a `SecretStr`.

    Only these may receive a secret: the client keeps them out of its ``repr``, its
    serialisation and callback payloads.

    Example:
        >>> from langchain_openai import ChatOpenAI
        >>> sorted(secret_parameters(ChatOpenAI))
        ['api_key', 'openai_api_key']
    """
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        if _types_secret(info.annotation):
            names.add(name)
            if info.alias:
                names.add(info.alias)
    return frozenset(names)


@dataclass(frozen=True)
class ChatProvider:
    """A provider backed by one LangChain chat model class, named as ``"module:Class"``.

    The class is imported on first build. Keyword arguments are, in order of precedence: the
    row's ``config``, the resolved ``auth_meta`` (renamed through ``auth_names``), the model
    name (as ``model_param``) and ``defaults`` (``max_retries=0``: llmpool's fallback retries,
    and SDK retries would multiply the time to fail over; a model served alone gets them back,
    see `standalone_config`; ``timeout=DEFAULT_TIMEOUT``: a
    hung provider must fail over long before the SDK's ten minutes). Every key is checked
    against the class's pydantic fields and their aliases, and a field given under two names
    (``timeout`` and ``request_timeout``) counts once, with the precedence above. A key the
    class does not accept is refused with `UnsupportedParameterError` naming the row and the
    key.

    Attributes:
        name: The provider's registry name.
        chat_class: ``"module:Class"`` of the LangChain chat model.
        extra: The ``llmpool[...]`` extra that installs its package.
        package: The distribution that ships the class.
        capabilities: What its models support.
        model_param: The keyword that takes the row's ``model_name``.
        auth_names: Renames of resolved ``auth_meta`` keys (``region`` -> ``region_name``).
        defaults: Keyword arguments used when the row gives none (dropped when the class
            lacks them).
        deployment_from_model: Azure: the deployment defaults to the row's model name.
        prepare: Adapts the final keyword arguments (e.g. ChatOllama takes its timeout inside
            ``client_kwargs``); it runs before the parameter check.
        secret_env: Environment variables holding its credentials, which its rows may
            reference (see `llmpool.providers.Provider`).
        plain_env: Environment variables holding plain settings (base URL, region, version).
        endpoint_keys: Row keys that say where requests go, beyond the generic rules.
        error_outcomes: The client's error classes -> ``"retry"``, ``"fallback"``,
            ``"fallback_keep_breaker"`` or ``"propagate"`` (see `llmpool.providers.Provider`).
        prepared_keys: ``config`` keys that are not fields of the class but that ``prepare``
            consumes (ChatOllama's ``timeout``); they count as accepted.

    A resolved secret (a `SecretStr`) is passed only to a parameter the class types as
    ``SecretStr``; bound to any other, it would show in the model's ``repr``, serialisation
    and callbacks, so the row is refused with `EnvNotAllowedError`. A ``timeout`` (or
    ``request_timeout``) of ``None`` leaves the default in place rather than removing it.

    Example:
        >>> p = ChatProvider("fake", "llmpool.providers.fake:FakeChatModel", extra=None)
        >>> p.name, "tools" in p.capabilities
        ('fake', True)
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
    error_outcomes: Mapping[str, str] = field(default_factory=dict)
    prepared_keys: frozenset[str] = frozenset()

    @property
    def accepted_config(self) -> frozenset[str] | None:
        """The ``config`` keys a row may set: the class's fields and aliases, and
        ``prepared_keys``; ``None`` when the class cannot be imported here.

        Example:
            >>> p = ChatProvider("fake", "llmpool.providers.fake:FakeChatModel", extra=None)
            >>> "responses" in p.accepted_config
            True
        """
        try:
            cls = self.load_class()
        except (ProviderNotInstalledError, AttributeError):
            return None
        return frozenset(self.accepted_parameters(cls)) | self.prepared_keys

    def load_class(self) -> type[BaseChatModel]:
        """Import and return the chat model class.

        Raises:
            ProviderNotInstalledError: Its package is missing; the message names the
                ``pip install`` to run.

        Example:
            >>> ChatProvider("x", "llmpool_missing:Chat", extra="x").load_class()
            Traceback (most recent call last):
            ...
            llmpool.errors.ProviderNotInstalledError: Provider 'x' needs the package \
llmpool_missing, which is not installed (No module named 'llmpool_missing'); \
run: pip install "llmpool[x]"
        """
        module_name, _, class_name = self.chat_class.partition(":")
        try:
            module = import_module(module_name)
        except ImportError as error:
            hint = (
                f'pip install "llmpool[{self.extra}]"'
                if self.extra
                else "pip install " + (self.package or module_name)
            )
            msg = (
                f"Provider {self.name!r} needs the package {self.package or module_name}, "
                f"which is not installed ({error}); run: {hint}"
            )
            raise ProviderNotInstalledError(msg) from error
        cls: type[BaseChatModel] = getattr(module, class_name)
        return cls

    def accepted_parameters(self, cls: type[BaseChatModel]) -> dict[str, str]:
        """Return every keyword the class accepts (field names and aliases) -> its canonical form.

        The canonical form is the alias when the field has one (pydantic always validates by
        alias), else the field name.
        """
        names: dict[str, str] = {}
        for name, info in cls.model_fields.items():
            canonical = info.alias or name
            names[name] = canonical
            if info.alias:
                names[info.alias] = canonical
        return names

    def _refuse(self, config: LLMConfig, cls: type[BaseChatModel], source: str) -> None:
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

    def _refuse_secret(
        self, config: LLMConfig, cls: type[BaseChatModel], source: str, parameter: str
    ) -> None:
        reference = source.partition(".")[2]
        target = config.auth_meta.get(reference)
        what = (
            f"environment variable {shown_reference(target)}"
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
        raise EnvNotAllowedError(msg, llm_name=config.name, llm_id=config.id, field=source)

    def arguments(
        self, config: LLMConfig, auth: Mapping[str, Any], cls: type[BaseChatModel]
    ) -> dict[str, Any]:
        """Return the keyword arguments for ``cls`` (see the class docstring).

        Raises:
            UnsupportedParameterError: A key of ``config`` or ``auth_meta`` is not a parameter
                of ``cls``; the message names the row and the key.
            EnvNotAllowedError: A secret would reach a parameter not typed ``SecretStr``; the
                message names the row, the ``auth_meta`` key, the variable and the parameter.
        """
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
        references = {_strip_suffix(ref): ref for ref in config.auth_meta}
        for key, value in auth.items():
            put(self.auth_names.get(key, key), value, f"auth_meta.{references.get(key, key)}")
        for key, value in config.config.items():
            put(key, value, f"config.{key}")
        if self.deployment_from_model and not {"azure_deployment", "deployment_name"} & set(merged):
            # Azure addresses a deployment; the row's model name is it unless the row names one.
            put("azure_deployment", config.model_name, "model_name")
        if self.prepare is not None:
            merged = self.prepare(merged)
        kwargs: dict[str, Any] = {}
        secrets = secret_parameters(cls)
        for key, value in merged.items():
            if key not in accepted:
                self._refuse(config, cls, origin.get(key, f"config.{key}"))
            if isinstance(value, SecretStr) and key not in secrets:
                self._refuse_secret(config, cls, origin.get(key, f"auth_meta.{key}"), key)
            kwargs.pop(accepted[key], None)  # a later layer wins, under any of the names
            kwargs[accepted[key]] = value
        return kwargs

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return a chat model for ``config`` (see the class docstring for the arguments).

        Raises:
            ProviderNotInstalledError: The package is missing.
            UnsupportedParameterError: The class does not take a key, or refuses a value.
        """
        cls = self.load_class()
        kwargs = self.arguments(config, auth, cls)
        try:
            return cls(**kwargs)
        except ValidationError as error:
            # Field names and messages only: inputs may be secrets.
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc']) or cls.__name__}: {item['msg']}"
                for item in error.errors(include_url=False, include_input=False)
            )
            msg = f"{config.describe()}: {cls.__name__} refused its parameters: {problems}"
            raise UnsupportedParameterError(msg) from None
        except (TypeError, ValueError) as error:
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            msg = f"{config.describe()}: {cls.__name__} refused its parameters: {text}"
            raise UnsupportedParameterError(msg) from None


@dataclass(frozen=True)
class FactoryProvider:
    """A provider from a plain factory ``(config, auth) -> BaseChatModel``.

    ``secret_env`` and ``plain_env`` declare the environment variables its rows may reference,
    as `ChatProvider`'s do; by default none (only those the operator allows). The factory gets
    secrets as `SecretStr`. ``endpoint_keys``, ``error_outcomes`` and ``accepted_config``
    (``None``: any key) are described in `llmpool.providers.Provider`.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> p = FactoryProvider("echo", lambda config, auth: FakeListChatModel(responses=["hi"]))
        >>> p.name
        'echo'
    """

    name: str
    factory: Factory
    extra: str | None = None
    package: str | None = None
    capabilities: frozenset[str] = frozenset({"streaming"})
    secret_env: frozenset[str] = frozenset()
    plain_env: frozenset[str] = frozenset()
    endpoint_keys: frozenset[str] = frozenset()
    error_outcomes: Mapping[str, str] = field(default_factory=dict)
    accepted_config: frozenset[str] | None = None

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return ``factory(config, auth)``."""
        return self.factory(config, auth)


def standalone_config(config: LLMConfig, provider: object) -> LLMConfig:
    """Return the row as its model is built when served alone, outside a fallback chain.

    Alone, nothing retries for the model: its client gets its own retries back,
    ``max_retries=STANDALONE_RETRIES`` (the SDK's backoff, bounded, each attempt bounded by
    the request timeout), when its class takes ``max_retries`` and the row does not set it
    (a row's ``max_retries`` always wins). A client without retries of its own (ChatOllama,
    the fake model, a plugin that does not declare ``max_retries``) is built as it is; the
    row is returned unchanged, so its model is the one its fallback chain uses.

    Args:
        config: The row.
        provider: Its provider (``accepted_config`` says whether it takes ``max_retries``).

    Returns:
        ``config`` itself, or a copy whose ``config`` adds ``max_retries``.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.providers.builtin import FAKE, OPENAI
        >>> row = LLMConfig(id="1", name="GPT", provider="openai", model_name="gpt-4")
        >>> standalone_config(row, OPENAI).config
        {'max_retries': 2}
        >>> standalone_config(row, FAKE) is row
        True
    """
    from llmpool.providers.declarations import accepted_config

    if "max_retries" in config.config:
        return config
    accepted = accepted_config(provider)
    if accepted is None or "max_retries" not in accepted:
        return config
    retried = {**config.config, "max_retries": STANDALONE_RETRIES}
    return config.model_copy(update={"config": retried})


def _strip_suffix(key: str) -> str:
    for suffix in ("_env", "_file"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key
