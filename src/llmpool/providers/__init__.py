"""The provider registry: a provider name in a row -> a LangChain chat model.

Providers are discovered from the entry-point group ``llmpool.providers`` on first use (never at
import) and cached. llmpool's own built-ins are declared there too, like any plugin. A plugin
that fails to load is recorded in `ProviderRegistry.load_errors` with its distribution name;
every other provider keeps working. ``LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1`` skips third-party
entry points (the built-ins still load).

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."llmpool.providers"]
    echo = "llmpool_echo:PROVIDER"

where ``PROVIDER`` is a `Provider` (for example a `ChatProvider`) or a zero-argument callable
returning one.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import ValidationError

from llmpool.errors import (
    ProviderLoadError,
    ProviderNotInstalledError,
    UnknownProviderError,
    UnsupportedParameterError,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.credentials import EnvAllowlist
    from llmpool.models import LLMConfig

__all__ = [
    "ALIASES",
    "ENTRY_POINT_GROUP",
    "ChatProvider",
    "FactoryProvider",
    "Provider",
    "ProviderRegistry",
    "get_registry",
    "register_provider",
    "set_registry",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "llmpool.providers"

#: The distribution whose entry points declare the built-ins.
OWN_DISTRIBUTION = "llmpool"

#: LangChain ``init_chat_model`` names (and common spellings) -> llmpool provider names.
ALIASES: Mapping[str, str] = {
    "azure": "azure_openai",
    "azure_chat_openai": "azure_openai",
    "google_vertexai": "vertexai",
    "vertex": "vertexai",
    "vertex_ai": "vertexai",
    "bedrock_converse": "bedrock",
    "aws_bedrock": "bedrock",
    "chat_anthropic": "anthropic",
    "fireworks_ai": "fireworks",
}

Factory = Callable[["LLMConfig", Mapping[str, Any]], "BaseChatModel"]


@runtime_checkable
class Provider(Protocol):
    """What a provider is: a name, how to install it, what it can do, and how to build a model.

    Attributes:
        name: The name rows use in their ``provider`` column.
        extra: The ``llmpool[...]`` extra that installs its package, if any.
        package: The distribution that provides the client class, if any.
        capabilities: What its models support: ``"tools"``, ``"streaming"``,
            ``"structured_output"``.
    """

    @property
    def name(self) -> str: ...

    @property
    def extra(self) -> str | None: ...

    @property
    def package(self) -> str | None: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return a chat model for ``config`` with the resolved ``auth``."""
        ...


ALL_CAPABILITIES = frozenset({"tools", "streaming", "structured_output"})


@dataclass(frozen=True)
class ChatProvider:
    """A provider backed by one LangChain chat model class, named as ``"module:Class"``.

    The class is imported on first build. Keyword arguments are, in order of precedence: the
    row's ``config``, the resolved ``auth_meta`` (renamed through ``auth_names``), the model
    name (as ``model_param``) and ``defaults`` (``max_retries=0``: llmpool's fallback retries,
    and SDK retries would multiply the time to fail over). Every key is checked against the
    class's pydantic fields and their aliases, and a field given under two names (``timeout``
    and ``request_timeout``) counts once, with the precedence above. A key the class does not
    accept is refused with `UnsupportedParameterError` naming the row and the key.

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
    defaults: Mapping[str, Any] = field(default_factory=lambda: {"max_retries": 0})
    deployment_from_model: bool = False
    prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None

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

    def arguments(
        self, config: LLMConfig, auth: Mapping[str, Any], cls: type[BaseChatModel]
    ) -> dict[str, Any]:
        """Return the keyword arguments for ``cls`` (see the class docstring).

        Raises:
            UnsupportedParameterError: A key of ``config`` or ``auth_meta`` is not a parameter
                of ``cls``; the message names the row and the key.
        """
        accepted = self.accepted_parameters(cls)
        merged: dict[str, Any] = {}
        origin: dict[str, str] = {}  # keyword -> the row field it came from, for errors

        def put(key: str, value: Any, source: str) -> None:
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
        for key, value in merged.items():
            if key not in accepted:
                self._refuse(config, cls, origin.get(key, f"config.{key}"))
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

    def build(self, config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        """Return ``factory(config, auth)``."""
        return self.factory(config, auth)


def _distribution(entry_point: EntryPoint) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else None


def _strip_suffix(key: str) -> str:
    for suffix in ("_env", "_file"):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


class ProviderRegistry:
    """Provider name -> provider, filled lazily from entry points.

    Args:
        entry_points: Entry points to load instead of the installed ones (tests inject
            `importlib.metadata.EntryPoint` objects here).
        autoload: Load third-party entry points; default: unless
            ``LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1``.

    Example:
        >>> registry = ProviderRegistry()
        >>> "openai" in registry, registry.get("azure").name
        (True, 'azure_openai')
    """

    def __init__(
        self,
        *,
        entry_points: Iterable[EntryPoint] | None = None,
        autoload: bool | None = None,
    ) -> None:
        self._injected = None if entry_points is None else list(entry_points)
        self._autoload = (
            os.environ.get("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD") != "1"
            if autoload is None
            else autoload
        )
        self._providers: dict[str, Provider] = {}
        self._manual: set[str] = set()
        self._distributions: dict[str, str] = {}
        self._errors: list[ProviderLoadError] = []
        self._failed: dict[str, ProviderLoadError] = {}
        self._loaded = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = ", ".join(sorted(self._providers)) if self._loaded else "not loaded yet"
        return f"<ProviderRegistry providers=[{state}] load_errors={len(self._errors)}>"

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            found = (
                self._injected
                if self._injected is not None
                else list(entry_points(group=ENTRY_POINT_GROUP))
            )
            # llmpool's own entry points first: a plugin may add providers, not shadow these.
            found.sort(key=lambda ep: _distribution(ep) != OWN_DISTRIBUTION)
            for entry_point in found:
                self._load(entry_point)
            self._loaded = True

    def _fail(self, entry_point: EntryPoint, dist: str | None, error: Exception) -> None:
        where = f" from distribution {dist!r}" if dist else ""
        msg = f'Error loading provider plugin "{entry_point.name}"{where}: {error}'
        failure = ProviderLoadError(msg, distribution=dist)
        failure.__cause__ = error
        self._errors.append(failure)
        self._failed[entry_point.name.lower()] = failure
        logger.warning(msg, extra={"provider": entry_point.name, "distribution": dist})
        logger.debug("provider plugin traceback", exc_info=error)

    def _load(self, entry_point: EntryPoint) -> None:
        dist = _distribution(entry_point)
        if dist != OWN_DISTRIBUTION and not self._autoload and self._injected is None:
            return
        try:
            obj = entry_point.load()
            provider = obj if isinstance(obj, Provider) else obj()
            if not isinstance(provider, Provider):
                msg = (
                    f"{entry_point.value} is a {type(provider).__name__}, not a Provider "
                    "(name, extra, package, capabilities, build)"
                )
                raise TypeError(msg)
        except Exception as error:  # a broken plugin must not break the others
            self._fail(entry_point, dist, error)
            return
        for name in dict.fromkeys((entry_point.name.lower(), provider.name)):
            existing = self._providers.get(name)
            if existing is not None and existing is not provider:
                if existing == provider:  # the same distribution seen twice on sys.path
                    continue
                owner = self._distributions.get(name)
                conflict = ValueError(
                    f"provider {name!r} is already provided by distribution {owner!r}"
                )
                self._fail(entry_point, dist, conflict)
                continue
            self._providers[name] = provider
            if dist:
                self._distributions[name] = dist

    @property
    def load_errors(self) -> list[ProviderLoadError]:
        """The plugins that failed to load, each naming its distribution."""
        self._ensure_loaded()
        return list(self._errors)

    def distribution_of(self, name: str) -> str | None:
        """Return the distribution that declared a provider, if it came from an entry point."""
        self._ensure_loaded()
        return self._distributions.get(self.canonical(name))

    def canonical(self, name: str) -> str:
        """Return the registered name for ``name``: case, ``-`` and aliases do not matter.

        Example:
            >>> ProviderRegistry(entry_points=[]).canonical("Azure-OpenAI")
            'azure_openai'
        """
        key = name.strip().lower()
        if key in self._providers:
            return key
        key = key.replace("-", "_")
        return key if key in self._providers else ALIASES.get(key, key)

    def register(self, provider: Provider, *, replace: bool = False) -> None:
        """Register a provider in this process.

        Raises:
            ValueError: A provider of that name exists and ``replace`` is false.
        """
        self._ensure_loaded()
        with self._lock:
            if provider.name in self._providers and not replace:
                msg = f"A provider named {provider.name!r} is already registered"
                raise ValueError(msg)
            self._providers[provider.name] = provider
            self._manual.add(provider.name)

    def get(self, name: str) -> Provider:
        """Return the provider called ``name`` (or an alias of it).

        Raises:
            UnknownProviderError: None is registered; the message lists those that are.
            ProviderLoadError: A plugin of that name is installed but failed to load; the
                message names its distribution and the cause is the original error.

        Example:
            >>> ProviderRegistry().get("bedrock_converse").extra
            'bedrock'
        """
        self._ensure_loaded()
        key = self.canonical(name)
        provider = self._providers.get(key)
        if provider is None:
            failure = self._failed.get(key) or self._failed.get(name.strip().lower())
            if failure is not None:
                # The plugin is installed but broken: say so, rather than "unknown".
                msg = f"Provider {name!r} is installed but failed to load: {failure}"
                raise ProviderLoadError(msg, distribution=failure.distribution) from (
                    failure.__cause__
                )
            known = ", ".join(sorted(self._providers)) or "none"
            msg = f"Unknown provider {name!r}; registered providers: {known}"
            if not self._autoload and self._injected is None:
                msg += " (plugins are off: LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1)"
            raise UnknownProviderError(msg)
        return provider

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        self._ensure_loaded()
        return self.canonical(name) in self._providers

    def __iter__(self) -> Iterator[Provider]:
        """Iterate over the providers by name, each once (however many names it has)."""
        self._ensure_loaded()
        unique = {id(p): p for _, p in sorted(self._providers.items(), reverse=True)}
        return iter(sorted(unique.values(), key=lambda p: p.name))

    def names(self) -> list[str]:
        """Return the registered provider names, sorted."""
        self._ensure_loaded()
        return sorted(self._providers)

    def build(
        self,
        config: LLMConfig,
        *,
        allowlist: EnvAllowlist | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> BaseChatModel:
        """Turn a row into a chat model: resolve its auth, then call its provider.

        Args:
            config: The row.
            allowlist: Which variables it may reference; from the environment by default.
            environ: Where variables are read; ``os.environ`` by default.

        Returns:
            A LangChain chat model.

        Raises:
            UnknownProviderError: No such provider.
            ProviderLoadError: The provider's plugin failed to load.
            ProviderNotInstalledError: Its package is missing.
            EnvNotAllowedError: A reference is outside the allowlist.
            MissingSecretError: A referenced variable is unset.
            UnsupportedParameterError: ``config`` has a key the client rejects.

        Example:
            >>> from llmpool.models import LLMConfig
            >>> row = LLMConfig(id="1", name="Fake", provider="fake", model_name="echo",
            ...                 config={"responses": ["hi"]})
            >>> ProviderRegistry().build(row).invoke("hello").content
            'hi'
        """
        from llmpool.credentials import resolve_auth

        provider = self.get(config.provider)
        auth = resolve_auth(config, allowlist=allowlist, environ=environ)
        return provider.build(config, auth)


_registry: ProviderRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """Return the process-wide registry, created on first use."""
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ProviderRegistry()
    return _registry


class _RegistryRestorer:
    """Returned by `set_registry`: as a context manager, puts the previous registry back."""

    def __init__(self, registry: ProviderRegistry | None, previous: ProviderRegistry | None):
        self.registry = registry
        self.previous = previous

    def __enter__(self) -> ProviderRegistry | None:
        return self.registry

    def __exit__(self, *exc: object) -> None:
        global _registry
        _registry = self.previous


def set_registry(registry: ProviderRegistry | None) -> _RegistryRestorer:
    """Replace the process-wide registry now; as a context manager, restore the previous one.

    ``None`` resets it: the next `get_registry` discovers entry points anew.

    Args:
        registry: The registry `get_registry` returns from now on.

    Returns:
        A context manager that restores the previous registry on exit.

    Example:
        >>> with set_registry(ProviderRegistry(entry_points=[])) as empty:
        ...     get_registry() is empty
        True
        >>> get_registry() is empty
        False
    """
    global _registry
    with _registry_lock:
        previous = _registry
        _registry = registry
    return _RegistryRestorer(registry, previous)


def register_provider(
    provider: Provider | str,
    factory: Factory | None = None,
    *,
    replace: bool = False,
    **kwargs: Any,
) -> Provider:
    """Register a provider in the process-wide registry.

    Args:
        provider: A `Provider`, or a name used with ``factory``.
        factory: ``(config, auth) -> BaseChatModel``, when ``provider`` is a name.
        replace: Replace a provider of the same name.
        **kwargs: ``extra``, ``package``, ``capabilities`` for a factory provider.

    Returns:
        The registered provider.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> p = register_provider("echo-doc", lambda c, a: FakeListChatModel(responses=["hi"]),
        ...                       replace=True)
    """
    if isinstance(provider, str):
        if factory is None:
            msg = "register_provider(name, factory): a factory is required with a name"
            raise TypeError(msg)
        registered: Provider = FactoryProvider(provider, factory, **kwargs)
    else:
        registered = provider
    get_registry().register(registered, replace=replace)
    return registered
