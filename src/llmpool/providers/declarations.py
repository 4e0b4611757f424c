"""What a provider says about itself, read with safe defaults when it says nothing.

A `llmpool.providers.Provider` may declare, besides ``name`` and ``build``:

- ``secret_env`` / ``plain_env``: the environment variables its rows may reference
  (`declared_env`);
- ``endpoint_keys``: the config keys that name an endpoint, beyond the generic rules of
  `llmpool.credentials.allowlist` (`declared_endpoint_keys`);
- ``error_outcomes``: its client's error classes (a class name, or ``"module:Class"``) -> what
  the fallback loop does with them: ``"retry"``, ``"fallback"``, ``"fallback_keep_breaker"``,
  ``"propagate"`` (`declared_error_outcomes`; consulted by
  `llmpool.fallback.policy.classify_error` through `error_outcome`);
- ``accepted_config``: the ``config`` keys it accepts, or ``None`` when it cannot tell
  (`accepted_config`; checked when a row is written by `ConfigKeysCheck`, which also accepts
  and checks llmpool's own price and budget keys, `llmpool.usage.prices.USAGE_CONFIG_KEYS`).

Every reader here returns the "declares nothing" default for a provider without the attribute,
so a plugin written before an attribute existed keeps working.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from llmpool.errors import InvalidConfigError, LLMPoolError, UnknownProviderError
from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry

__all__ = [
    "OUTCOMES",
    "ConfigKeysCheck",
    "KnownProviderCheck",
    "accepted_config",
    "declared_endpoint_keys",
    "declared_env",
    "declared_error_outcomes",
    "error_outcome",
    "record_error_outcomes",
]

logger = logging.getLogger(__name__)

#: What a declared error may lead to, as `llmpool.fallback.policy.Outcome` values.
OUTCOMES = frozenset({"retry", "fallback", "fallback_keep_breaker", "propagate"})


def _names(provider: object, attribute: str) -> frozenset[str]:
    value = getattr(provider, attribute, None)
    if isinstance(value, (set, frozenset, list, tuple)):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()  # a bare string would otherwise declare its letters


def declared_env(provider: object) -> tuple[frozenset[str], frozenset[str]]:
    """Return the ``(secret_env, plain_env)`` a provider declares; empty sets when it does not.

    A name declared both ways counts as secret.

    Example:
        >>> from llmpool.providers import get_registry
        >>> secret, plain = declared_env(get_registry().get("openai"))
        >>> "OPENAI_API_KEY" in secret, "OPENAI_API_BASE" in plain
        (True, True)
    """
    secret = _names(provider, "secret_env")
    return secret, _names(provider, "plain_env") - secret


def declared_endpoint_keys(provider: object) -> frozenset[str]:
    """Return the config keys a provider says name an endpoint, lower-cased; empty if none.

    Example:
        >>> from llmpool.providers.builtin import AZURE_OPENAI
        >>> "azure_endpoint" in declared_endpoint_keys(AZURE_OPENAI)
        True
    """
    return frozenset(name.lower() for name in _names(provider, "endpoint_keys"))


def declared_error_outcomes(provider: object) -> dict[str, str]:
    """Return the error classes a provider declares -> their outcome; empty if none.

    Raises:
        ValueError: An outcome is not one of `OUTCOMES`; the message names the provider and
            the class.

    Example:
        >>> from llmpool.providers.builtin import ANTHROPIC
        >>> declared_error_outcomes(ANTHROPIC)["OverloadedError"]
        'retry'
    """
    value = getattr(provider, "error_outcomes", None)
    if not isinstance(value, Mapping):
        return {}
    declared: dict[str, str] = {}
    for name, outcome in value.items():
        if not isinstance(name, str) or outcome not in OUTCOMES:
            who = getattr(provider, "name", type(provider).__name__)
            msg = (
                f"provider {who!r} declares error {name!r} -> {outcome!r}; an outcome is one "
                f"of {', '.join(sorted(OUTCOMES))}"
            )
            raise ValueError(msg)
        declared[name] = str(outcome)
    return declared


def accepted_config(provider: object) -> frozenset[str] | None:
    """Return the ``config`` keys a provider accepts, or ``None`` when it cannot tell.

    ``None`` (no write-time check) when the provider has no ``accepted_config``, or its client
    class cannot be imported on this machine.

    Example:
        >>> from llmpool.providers.builtin import FAKE
        >>> "responses" in accepted_config(FAKE)
        True
    """
    try:
        value = getattr(provider, "accepted_config", None)
    except LLMPoolError:  # its package is not installed here
        return None
    if isinstance(value, (set, frozenset, list, tuple)):
        return frozenset(item for item in value if isinstance(item, str))
    return None


class _ErrorOutcomes:
    """Declared error class -> outcome, for every provider loaded in this process.

    The built-ins' declarations are read on first use, without loading any registry; a
    registry adds each provider it loads. The first declaration of a name wins: a plugin
    cannot change how a built-in's errors are handled.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}
        self._by_class: dict[type, str | None] = {}
        self._seeded = False
        self._lock = threading.Lock()

    def _seed(self) -> None:
        from llmpool.providers.builtin import BUILTINS

        with self._lock:
            if not self._seeded:
                self._seeded = True
                for provider in BUILTINS:
                    self._add(provider)

    def _add(self, provider: object) -> None:
        for name, outcome in declared_error_outcomes(provider).items():
            existing = self._by_name.setdefault(name, outcome)
            if existing != outcome:
                logger.warning(
                    "declared error outcome ignored: already declared otherwise",
                    extra=log_fields(
                        "error_outcome_ignored",
                        error_class=name,
                        provider=getattr(provider, "name", None),
                    ),
                )
        self._by_class.clear()

    def add(self, provider: object) -> None:
        if not self._seeded:
            self._seed()
        with self._lock:
            self._add(provider)

    def lookup(self, cls: type) -> str | None:
        try:
            return self._by_class[cls]
        except KeyError:
            pass
        if not self._seeded:
            self._seed()
        found: str | None = None
        for klass in cls.__mro__:  # the most specific declared class decides
            module = klass.__module__
            for name in (f"{module}:{klass.__qualname__}", klass.__name__):
                found = self._by_name.get(name)
                if found is not None:
                    break
            if found is None:
                # "openai:RateLimitError" also names openai._exceptions.RateLimitError
                for name, outcome in self._by_name.items():
                    where, _, qualname = name.partition(":")
                    if qualname == klass.__qualname__ and module.startswith(where + "."):
                        found = outcome
                        break
            if found is not None:
                break
        self._by_class[cls] = found
        return found


_outcomes = _ErrorOutcomes()


def record_error_outcomes(provider: object) -> None:
    """Make the error outcomes ``provider`` declares known to `error_outcome`.

    Raises:
        ValueError: It declares an outcome that is not one of `OUTCOMES`.
    """
    _outcomes.add(provider)


def error_outcome(error_class: type) -> str | None:
    """Return the outcome a loaded provider declares for ``error_class`` (or a base), if any.

    Example:
        >>> class OverloadedError(Exception): ...
        >>> error_outcome(OverloadedError), error_outcome(KeyError)
        ('retry', None)
    """
    return _outcomes.lookup(error_class)


class ConfigKeysCheck:
    """A write-time check: a row's ``config`` keys must be ones its provider accepts.

    Use it as a store validator, next to the environment allowlist. A row of an unknown
    provider, or of one whose client class cannot be imported here, is not checked (it is
    checked when the model is built).

    Args:
        registry: Where a row's provider is looked up; the process-wide registry by default.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="Fake", provider="fake", model_name="echo",
        ...                 config={"respones": ["hi"]})
        >>> ConfigKeysCheck()(row)
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: LLM 'Fake' (id 1): config.respones is not a \
parameter of provider 'fake'; did you mean 'responses'?
    """

    def __init__(self, registry: ProviderRegistry | None = None) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"ConfigKeysCheck(registry={self.registry!r})"

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row whose ``config`` has a key its provider does not accept.

        Raises:
            InvalidConfigError: The message names the row, the field and the closest
                accepted key.
        """
        from llmpool.providers import get_registry
        from llmpool.usage.prices import USAGE_CONFIG_KEYS, check_usage_config

        check_usage_config(config)  # prices and budget: llmpool's keys, for every provider
        registry = self.registry if self.registry is not None else get_registry()
        try:
            provider = registry.get(config.provider)
        except LLMPoolError:  # unknown or broken: checked when built, if ever
            return
        if getattr(config, "kind", "chat") == "embedding":  # its embeddings class's keys
            from llmpool.providers.embeddings import embeddings_accepted_config

            accepted = embeddings_accepted_config(config, provider)
        else:
            accepted = accepted_config(provider)
        if accepted is None:
            return
        for key in config.config:
            if key not in accepted and key not in USAGE_CONFIG_KEYS:
                raise _unknown_key(config, str(key), provider, accepted)


def _unknown_key(
    config: LLMConfig, key: str, provider: object, accepted: frozenset[str]
) -> InvalidConfigError:
    close = difflib.get_close_matches(key, sorted(accepted), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if not close and "model_kwargs" in accepted:
        hint = "; put provider-specific extras under 'model_kwargs'"
    name = getattr(provider, "name", config.provider)
    msg = f"{config.describe()}: config.{key} is not a parameter of provider {name!r}{hint}"
    return InvalidConfigError(msg, llm_name=config.name, llm_id=config.id, field=f"config.{key}")


class KnownProviderCheck:
    """A write-time check: a row's ``provider`` must be one this machine knows.

    A misspelt ``openia`` is refused when the row is written, with the closest name, instead
    of failing when a service builds the model. A provider whose plugin is installed but fails
    to load passes (it is known). For rows of a plugin not installed where the admin runs,
    leave the check out (``llmpool add --allow-unknown-provider``).

    Args:
        registry: Where providers are looked up; the process-wide registry by default.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="A", provider="openia", model_name="m")
        >>> KnownProviderCheck()(row)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        llmpool.errors.InvalidConfigError: LLM 'A' (id 1): provider 'openia' is not a ...
    """

    def __init__(self, registry: ProviderRegistry | None = None) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"KnownProviderCheck(registry={self.registry!r})"

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row whose provider is not registered.

        Raises:
            InvalidConfigError: Naming the row, the field ``provider`` and the closest name.
        """
        from llmpool.providers import ALIASES, get_registry

        registry = self.registry if self.registry is not None else get_registry()
        try:
            registry.get(config.provider)
        except UnknownProviderError:
            pass
        except LLMPoolError:  # installed but broken: known, reported when built
            return
        else:
            return
        known = sorted({*registry.names(), *ALIASES})
        close = difflib.get_close_matches(config.provider, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        msg = (
            f"{config.describe()}: provider {config.provider!r} is not a known provider{hint} "
            f"(known: {', '.join(registry.names())}; for a plugin not installed here, "
            "use --allow-unknown-provider)"
        )
        raise InvalidConfigError(msg, llm_name=config.name, llm_id=config.id, field="provider")
