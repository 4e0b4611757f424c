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
returning one. A provider declares the environment variables its rows may reference
(``secret_env``, ``plain_env``); one that declares none gets only those the operator allows
(`llmpool.credentials.allowlist.EnvAllowlist`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from llmpool.errors import ProviderLoadError, UnknownProviderError
from llmpool.observe.fields import log_fields
from llmpool.providers.chat import (
    ALL_CAPABILITIES,
    DEFAULT_TIMEOUT,
    ChatProvider,
    Factory,
    FactoryProvider,
)
from llmpool.providers.declarations import (
    ConfigKeysCheck,
    KnownProviderCheck,
    accepted_config,
    declared_endpoint_keys,
    declared_env,
    declared_error_outcomes,
    record_error_outcomes,
)

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from llmpool.credentials.allowlist import EnvAllowlist
    from llmpool.models import LLMConfig

__all__ = [
    "ALIASES",
    "ALL_CAPABILITIES",
    "DEFAULT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "ChatProvider",
    "ConfigKeysCheck",
    "FactoryProvider",
    "KnownProviderCheck",
    "Provider",
    "ProviderRegistry",
    "accepted_config",
    "declared_endpoint_keys",
    "declared_env",
    "declared_error_outcomes",
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
    """What a provider is: a name, how to install it, what it can do, and how to build a model.

    Attributes:
        name: The name rows use in their ``provider`` column.
        extra: The ``llmpool[...]`` extra that installs its package, if any.
        package: The distribution that provides the client class, if any.
        capabilities: What its models support: ``"tools"``, ``"streaming"``,
            ``"structured_output"``.

    Optional attributes, what only the provider knows (read through
    `llmpool.providers.declarations`; a provider without one gets today's generic behaviour):

    - ``secret_env``: ``frozenset`` of the variables holding its credentials
      (``OPENAI_API_KEY``): its rows may reference them, and their values stay secret.
    - ``plain_env``: ``frozenset`` of the variables holding plain settings (a base URL, a
      region, an API version, a project): its rows may reference them, as plain values.
      Names are exact (no patterns); ``DATABASE_URL`` and ``LLMPOOL_*`` are never allowed,
      even when declared.
    - ``endpoint_keys``: ``frozenset`` of the ``config``/``auth_meta`` keys that say where
      requests go (``azure_endpoint``), checked against the allowed endpoints in addition to
      the generic rules (``*_url``, ``*api_base``, absolute URLs).
    - ``error_outcomes``: mapping of its client's error classes (``"RateLimitError"`` or
      ``"module:Class"``) to ``"retry"``, ``"fallback"``, ``"fallback_keep_breaker"`` or
      ``"propagate"``; consulted before the generic rules of
      `llmpool.fallback.policy.classify_error` (an HTTP status on the error still decides
      first).
    - ``accepted_config``: ``frozenset`` of the ``config`` keys it accepts, or ``None`` when it
      cannot tell; `ConfigKeysCheck` refuses other keys when a row is written.
    - ``build_embeddings(config, auth) -> Embeddings``: builds its embedding rows
      (``kind='embedding'``), with ``auth`` resolved as for chat; ``embeddings_config``: the
      ``config`` keys those rows accept. Without it, the provider serves chat rows only (the
      built-ins have theirs in `llmpool.providers.embeddings`).
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
        self._failed[_key(entry_point.name)] = failure
        fields = {"provider": entry_point.name, "distribution": dist}
        failed = type(error).__name__
        logger.warning(msg, extra=log_fields("plugin_load_failed", error_class=failed, **fields))
        logger.debug(
            "provider plugin traceback",
            exc_info=error,
            extra=log_fields("plugin_traceback", **fields),
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
        key = _key(name)
        return key if key in self._providers else ALIASES.get(key, key)

    def register(self, provider: Provider, *, replace: bool = False) -> None:
        """Register a provider in this process.

        Raises:
            ValueError: A provider of that name exists and ``replace`` is false, or it declares
                an error outcome that does not exist.
        """
        self._ensure_loaded()
        with self._lock:
            key = _key(provider.name)
            if key in self._providers and not replace:
                msg = f"A provider named {provider.name!r} is already registered"
                raise ValueError(msg)
            record_error_outcomes(provider)
            self._providers[key] = provider
            self._manual.add(key)

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
            failure = self._failed.get(key) or self._failed.get(_key(name))
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
            EnvNotAllowedError: A reference or an endpoint is outside the allowlist, or a
                secret would reach a client parameter that does not keep it secret.
            MissingSecretError: A referenced variable is unset.
            UnsupportedParameterError: ``config`` has a key the client rejects.
            InvalidConfigError: A price or budget key is invalid (`llmpool.usage.prices`;
                those keys are removed before the provider builds the client).

        Example:
            >>> from llmpool.models import LLMConfig
            >>> row = LLMConfig(id="1", name="Fake", provider="fake", model_name="echo",
            ...                 config={"responses": ["hi"]})
            >>> ProviderRegistry().build(row).invoke("hello").content
            'hi'
        """
        from llmpool.credentials.resolve import resolve_auth
        from llmpool.usage.prices import client_config

        provider = self.get(config.provider)
        auth = resolve_auth(config, allowlist=allowlist, environ=environ, provider=provider)
        # Prices and budget are llmpool's keys: the client never sees them.
        return provider.build(client_config(config), auth)

    def build_embeddings(
        self,
        config: LLMConfig,
        *,
        allowlist: EnvAllowlist | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Embeddings:
        """Turn an embedding row into a LangChain ``Embeddings``, resolving its auth as `build`.

        Raises:
            ProviderError: The provider builds no embeddings; and every error of `build`.

        Example:
            >>> from llmpool.models import LLMConfig
            >>> row = LLMConfig(id="1", name="Vectors", provider="fake", model_name="m",
            ...                 kind="embedding", config={"dimensions": 3})
            >>> len(ProviderRegistry().build_embeddings(row).embed_query("hello"))
            3
        """
        from llmpool.credentials.resolve import resolve_auth
        from llmpool.providers.embeddings import embeddings_builder, no_embeddings_error

        provider = self.get(config.provider)
        builder = embeddings_builder(provider)
        if builder is None:
            raise no_embeddings_error(config, provider)
        auth = resolve_auth(config, allowlist=allowlist, environ=environ, provider=provider)
        from llmpool.usage.prices import client_config

        return builder(client_config(config), auth)


_registry: ProviderRegistry | None = None
_registry_lock = threading.Lock()


def get_registry() -> ProviderRegistry:
    """Return the process-wide registry, created on first use.

    Example:
        >>> registry = get_registry()
        >>> "openai" in registry, registry.get("google_vertexai").extra
        (True, 'vertexai')
    """
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
        **kwargs: ``extra``, ``package``, ``capabilities``, ``secret_env``, ``plain_env``,
            ``endpoint_keys``, ``error_outcomes``, ``accepted_config`` for a factory provider.

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
