"""The provider registry: a provider name in a row -> a LangChain chat model.

Providers, built-ins included, come from the entry-point group ``llmpool.providers`` on first
use: ``echo = "llmpool_echo:PROVIDER"``, a `Provider` or a callable returning one. A plugin that
fails to load is in `ProviderRegistry.load_errors` and breaks no other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmpool.contracts import log_fields
from llmpool.errors import ProviderLoadError, UnknownProviderError
from llmpool.providers.chat import DEFAULT_TIMEOUT, ChatProvider, Factory, FactoryProvider
from llmpool.providers.declarations import (
    ConfigKeysCheck,
    KnownProviderCheck,
    declared_env,
    embeddings_builder,
    no_embeddings_error,
    record_error_outcomes,
)
from llmpool.providers.prices import client_config

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from llmpool.models import LLMConfig
    from llmpool.providers.allowlist import EnvAllowlist

__all__ = [
    "ALIASES",
    "DEFAULT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "ChatProvider",
    "ConfigKeysCheck",
    "FactoryProvider",
    "KnownProviderCheck",
    "Provider",
    "ProviderRegistry",
    "declared_env",
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


@runtime_checkable
class Provider(Protocol):
    """What a provider is: the ``name`` rows write, the ``extra`` and ``package`` that install
    its client, what its models support (``capabilities``), and how to build one.

    Optional attributes: ``secret_env`` / ``plain_env`` (the variables its rows may reference,
    secret or plain), ``endpoint_keys`` (the row keys that say where requests go),
    ``genai_name`` (its ``gen_ai.provider.name`` in the GenAI semantic conventions: ``openai``,
    ``aws.bedrock``; its own name by default), ``default_endpoint`` (its client's default URL,
    for telemetry's ``server.address``),
    ``error_outcomes`` (error class name or ``"module:Class"`` -> an `Outcome` value),
    ``accepted_config`` (its ``config`` keys), ``build_embeddings(config, auth)`` and
    ``embeddings_config`` (it serves embedding rows).
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


def _key(name: str) -> str:
    # Provider names ignore case and treat "-" as "_": "Azure-OpenAI" is "azure_openai".
    return name.strip().lower().replace("-", "_")


def _distribution(entry_point: EntryPoint) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else None


class ProviderRegistry:
    """Provider name -> provider, filled on first use from ``entry_points`` (the installed
    ones), third-party ones only with ``autoload`` (``LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1``: off).

    Example:
        >>> registry = ProviderRegistry()
        >>> "openai" in registry, registry.get("azure").name
        (True, 'azure_openai')
    """

    def __init__(
        self, *, entry_points: Iterable[EntryPoint] | None = None, autoload: bool | None = None
    ) -> None:
        self._injected = None if entry_points is None else list(entry_points)
        if autoload is None:
            autoload = os.environ.get("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD") != "1"
        self._autoload = autoload
        self._providers: dict[str, Provider] = {}
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
            found = self._injected
            found = list(entry_points(group=ENTRY_POINT_GROUP)) if found is None else found
            # llmpool's own entry points first: a plugin may add providers, not shadow these.
            for entry_point in sorted(found, key=lambda ep: _distribution(ep) != OWN_DISTRIBUTION):
                self._load(entry_point)
            self._loaded = True

    def _fail(self, entry_point: EntryPoint, dist: str | None, error: Exception) -> None:
        where = f" from distribution {dist!r}" if dist else ""
        msg = f'Error loading provider plugin "{entry_point.name}"{where}: {error}'
        failure = ProviderLoadError(msg, distribution=dist)
        failure.__cause__ = error
        self._errors.append(failure)
        self._failed[_key(entry_point.name)] = failure
        ids = {"provider": entry_point.name, "distribution": dist}
        failed = type(error).__name__
        logger.warning(msg, extra=log_fields("plugin_load_failed", error_class=failed, **ids))
        logger.debug(
            "provider plugin traceback", exc_info=error, extra=log_fields("plugin_traceback", **ids)
        )

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
            record_error_outcomes(provider)
        except Exception as error:  # a broken plugin must not break the others
            self._fail(entry_point, dist, error)
            return
        for name in dict.fromkeys((_key(entry_point.name), _key(provider.name))):
            existing = self._providers.get(name)
            if existing is not None and existing is not provider:
                if existing != provider:  # not one distribution seen twice on sys.path
                    owner = self._distributions.get(name)
                    taken = f"provider {name!r} is already provided by distribution {owner!r}"
                    self._fail(entry_point, dist, ValueError(taken))
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
        """Return the distribution that declared a provider, if any."""
        self._ensure_loaded()
        return self._distributions.get(self.canonical(name))

    def canonical(self, name: str) -> str:
        """Return the registered name for ``name``: case, ``-`` and aliases do not matter."""
        key = _key(name)
        return key if key in self._providers else ALIASES.get(key, key)

    def register(self, provider: Provider, *, replace: bool = False) -> None:
        """Register a provider in this process (`ValueError`: the name is taken)."""
        self._ensure_loaded()
        with self._lock:
            key = _key(provider.name)
            if key in self._providers and not replace:
                msg = f"A provider named {provider.name!r} is already registered"
                raise ValueError(msg)
            record_error_outcomes(provider)
            self._providers[key] = provider

    def get(self, name: str) -> Provider:
        """Return the provider called ``name`` or an alias of it (`UnknownProviderError`)."""
        self._ensure_loaded()
        key = self.canonical(name)
        provider = self._providers.get(key)
        if provider is not None:
            return provider
        failure = self._failed.get(key) or self._failed.get(_key(name))
        if failure is not None:
            # The plugin is installed but broken: say so, rather than "unknown".
            msg = f"Provider {name!r} is installed but failed to load: {failure}"
            raise ProviderLoadError(msg, distribution=failure.distribution) from failure.__cause__
        known = ", ".join(sorted(self._providers)) or "none"
        msg = f"Unknown provider {name!r}; registered providers: {known}"
        if not self._autoload and self._injected is None:
            msg += " (plugins are off: LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1)"
        raise UnknownProviderError(msg)

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return isinstance(name, str) and self.canonical(name) in self._providers

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
        """Turn a row into a chat model, its auth resolved within ``allowlist``."""
        from llmpool.providers.allowlist import resolve_auth

        provider = self.get(config.provider)
        auth = resolve_auth(config, allowlist=allowlist, environ=environ, provider=provider)
        return provider.build(client_config(config), auth)

    def build_embeddings(
        self,
        config: LLMConfig,
        *,
        allowlist: EnvAllowlist | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Embeddings:
        """Turn an embedding row into a LangChain ``Embeddings``, as `build` does."""
        from llmpool.providers.allowlist import resolve_auth

        provider = self.get(config.provider)
        builder = embeddings_builder(provider)
        if builder is None:
            raise no_embeddings_error(config, provider)
        auth = resolve_auth(config, allowlist=allowlist, environ=environ, provider=provider)
        return builder(client_config(config), auth)


_registry: ProviderRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """Return the process-wide registry, created on first use.

    Example:
        >>> get_registry().get("google_vertexai").extra
        'vertexai'
    """
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = ProviderRegistry()
    return _registry


@contextlib.contextmanager
def _restoring(
    registry: ProviderRegistry | None, previous: ProviderRegistry | None
) -> Iterator[ProviderRegistry | None]:
    global _registry
    try:
        yield registry
    finally:
        _registry = previous


def set_registry(
    registry: ProviderRegistry | None,
) -> contextlib.AbstractContextManager[ProviderRegistry | None]:
    """Replace the process-wide registry now; as a context manager, restore the previous one."""
    global _registry
    with _registry_lock:
        previous, _registry = _registry, registry
    return _restoring(registry, previous)


def register_provider(
    provider: Provider | str,
    factory: Factory | None = None,
    *,
    replace: bool = False,
    **kwargs: Any,
) -> Provider:
    """Register and return a provider: a `Provider`, or a name with a ``factory``
    ``(config, auth) -> BaseChatModel`` and `FactoryProvider`'s fields.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> p = register_provider("echo-doc", lambda c, a: FakeListChatModel(responses=["hi"]),
        ...                       replace=True)
    """
    if isinstance(provider, str):
        if factory is None:
            msg = "register_provider(name, factory): a factory is required with a name"
            raise TypeError(msg)
        provider = FactoryProvider(provider, factory, **kwargs)
    get_registry().register(provider, replace=replace)
    return provider
