"""What a provider says about itself (`llmpool.providers.Provider`), "nothing" by default, and
the write-time checks built on it."""

from __future__ import annotations

import difflib
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from llmpool.contracts import Served, log_fields
from llmpool.credentials.checks import REFERENCE_SUFFIXES, words
from llmpool.credentials.endpoints import declared_names, literal_endpoints, parse_endpoint
from llmpool.errors import InvalidConfigError, LLMPoolError, ProviderError, UnknownProviderError
from llmpool.providers.breaker_config import breaker_overrides
from llmpool.providers.fit import Fit, declared_fit
from llmpool.providers.prices import OWN_CONFIG_KEYS, usage_terms
from llmpool.providers.timeouts import stream_limits

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

    from llmpool.models import LLMConfig
    from llmpool.providers import ProviderRegistry

logger = logging.getLogger(__name__)

#: What a declared error may lead to, as `llmpool.fallback.policy.Outcome` values.
OUTCOMES = frozenset({"retry", "fallback", "fallback_keep_breaker", "propagate"})

#: What builds an embedding row's client: ``(config, resolved auth) -> Embeddings``.
EmbeddingsFactory = Callable[["LLMConfig", Mapping[str, Any]], "Embeddings"]


def declared_env(provider: object) -> tuple[frozenset[str], frozenset[str]]:
    """Return the ``(secret_env, plain_env)`` a provider declares; a name in both is secret."""
    secret = declared_names(getattr(provider, "secret_env", None)) or frozenset()
    return secret, (declared_names(getattr(provider, "plain_env", None)) or frozenset()) - secret


#: A row's ``config`` keys that are request parameters -> their name in the GenAI semantic
#: conventions (``gen_ai.request.<name>``), each provider's spelling of ``max_tokens`` included.
REQUEST_PARAMETERS: Mapping[str, str] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "max_output_tokens": "max_tokens",
    "max_tokens_to_sample": "max_tokens",
    "num_predict": "max_tokens",
    "frequency_penalty": "frequency_penalty",
    "presence_penalty": "presence_penalty",
    "seed": "seed",
    "stop": "stop_sequences",
    "stop_sequences": "stop_sequences",
}
_ENDPOINT_ENV = ("URL", "BASE", "ENDPOINT", "HOST")


def served_by(config: LLMConfig, provider: object = None) -> Served:
    """Return what telemetry says of a row's requests: its provider's declared ``genai_name``
    (else the row's provider), the server its ``config`` names or the provider's declared
    ``default_endpoint`` (``None`` when the row or an endpoint variable may send elsewhere), and
    the request parameters its ``config`` sets.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.providers.builtin import OPENAI
        >>> row = LLMConfig(id="1", name="A", provider="openai", model_name="gpt-4o",
        ...                 config={"base_url": "http://127.0.0.1:8000/v1", "temperature": 0})
        >>> served_by(row, OPENAI)[:3], dict(served_by(row, OPENAI).parameters)
        (('openai', '127.0.0.1', 8000), {'temperature': 0})
    """
    if provider is None:  # a candidate made by hand: the built-in of its name, if any
        from llmpool.providers.builtin import BUILTINS

        provider = next((p for p in BUILTINS if p.name == config.provider), None)
    name = getattr(provider, "genai_name", None)
    system = name if isinstance(name, str) and name else config.provider
    parameters: dict[str, Any] = {}
    for key, value in config.config.items():
        wanted = REQUEST_PARAMETERS.get(key)
        if wanted == "stop_sequences":
            value = [value] if isinstance(value, str) else value
            if isinstance(value, list) and all(isinstance(item, str) for item in value):
                parameters[wanted] = tuple(value)
        elif wanted and isinstance(value, (int, float)) and not isinstance(value, bool):
            parameters[wanted] = value
    endpoint = parse_endpoint(_endpoint(config, provider) or "")
    if endpoint is None:
        return Served(system, parameters=parameters)
    return Served(system, endpoint.host, endpoint.port, parameters)


def _endpoint(config: LLMConfig, provider: object) -> str | None:
    # The row's endpoint, not a proxy's; none when it reads one from a variable or a file.
    for field, value in literal_endpoints(config, provider):
        if words(field)[-1:] not in (["proxy"], ["proxies"]):
            return value
    for key in config.auth_meta:
        if key.endswith(REFERENCE_SUFFIXES) and _names_endpoint(key.rsplit("_", 1)[0]):
            return None
    # A client also reads its endpoint from the environment (OPENAI_BASE_URL, OLLAMA_HOST).
    plain = declared_names(getattr(provider, "plain_env", None)) or ()
    if any(os.environ.get(n) for n in plain if any(w in n for w in _ENDPOINT_ENV)):
        return None
    default = getattr(provider, "default_endpoint", None)
    return default if isinstance(default, str) else None


def _names_endpoint(key: str) -> bool:
    last = words(key)[-1:]
    return bool(last) and (last[0] in {"url", "endpoint", "host", "base"})


def declared_error_outcomes(provider: object) -> dict[str, str]:
    """Return the error classes a provider declares -> their outcome (checked)."""
    value = getattr(provider, "error_outcomes", None)
    if not isinstance(value, Mapping):
        return {}
    for name, outcome in value.items():
        if not isinstance(name, str) or outcome not in OUTCOMES:
            who = getattr(provider, "name", type(provider).__name__)
            msg = (
                f"provider {who!r} declares error {name!r} -> {outcome!r}; an outcome is one "
                f"of {', '.join(sorted(OUTCOMES))}"
            )
            raise ValueError(msg)
    return {name: str(outcome) for name, outcome in value.items()}


def accepted_config(provider: object, attribute: str = "accepted_config") -> frozenset[str] | None:
    """Return the ``config`` keys a provider accepts; ``None`` when it cannot tell."""
    try:
        return declared_names(getattr(provider, attribute, None))
    except LLMPoolError:  # its package is not installed here
        return None


def model_fit(config: LLMConfig, provider: object) -> Fit | None:
    """Return what the row's model can take: its ``config.model_info`` over the provider's
    ``models`` table (`llmpool.providers.fit`); `InvalidConfigError` names a bad field."""
    models = getattr(provider, "models", None)
    return declared_fit(config, models if isinstance(models, Mapping) else None)


def embeddings_builder(provider: object) -> EmbeddingsFactory | None:
    """Return a provider's ``build_embeddings``, or a built-in's ``embeddings`` builder."""
    own = getattr(provider, "build_embeddings", None)
    if callable(own):
        return cast("EmbeddingsFactory", own)
    embeddings = getattr(provider, "embeddings", None)
    build = getattr(embeddings, "build", None)
    return cast("EmbeddingsFactory", build) if callable(build) else None


def embeddings_config(config: LLMConfig, provider: object) -> frozenset[str] | None:
    """Return the ``config`` keys an embedding row of ``provider`` accepts (``None``: any)."""
    if embeddings_builder(provider) is None:
        error = no_embeddings_error(config, provider)
        raise InvalidConfigError(str(error), llm_name=config.name, llm_id=config.id, field="kind")
    if callable(getattr(provider, "build_embeddings", None)):
        return accepted_config(provider, "embeddings_config")
    return accepted_config(getattr(provider, "embeddings", None))


def no_embeddings_error(config: LLMConfig, provider: object) -> ProviderError:
    """Return the error for an embedding row whose provider builds no embeddings."""
    from llmpool.providers.builtin import BUILTINS

    builtins = ", ".join(sorted(p.name for p in BUILTINS if p.embeddings is not None))
    msg = (
        f"{config.describe()}: provider {getattr(provider, 'name', config.provider)!r} has no "
        f"embeddings (its rows can only be chat rows); built-in embeddings: {builtins}, or a "
        "plugin provider with build_embeddings"
    )
    return ProviderError(msg)


# Declared error class name -> outcome; the first wins (a plugin cannot change a built-in's).
_outcomes: dict[str, str] = {}
_outcomes_by_class: dict[type, str | None] = {}
_outcomes_lock = threading.Lock()


@functools.cache
def _builtin_outcomes() -> None:
    # The built-ins' declarations first, without loading any registry.
    from llmpool.providers.builtin import BUILTINS

    for provider in BUILTINS:
        _record(provider)


def _record(provider: object) -> None:
    declared = declared_error_outcomes(provider)
    with _outcomes_lock:
        for name, outcome in declared.items():
            if _outcomes.setdefault(name, outcome) != outcome:
                who = getattr(provider, "name", None)
                logger.warning(
                    "declared error outcome ignored: already declared otherwise",
                    extra=log_fields("error_outcome_ignored", error_class=name, provider=who),
                )
        _outcomes_by_class.clear()


def record_error_outcomes(provider: object) -> None:
    """Make the error outcomes ``provider`` declares known to `error_outcome`."""
    _builtin_outcomes()
    _record(provider)


def _declared_for(klass: type) -> str | None:
    module, qualname = klass.__module__, klass.__qualname__
    found = _outcomes.get(f"{module}:{qualname}") or _outcomes.get(klass.__name__)
    if found is not None:
        return found
    for name, outcome in _outcomes.items():
        # "openai:RateLimitError" also names openai._exceptions.RateLimitError
        where, _, declared = name.partition(":")
        if declared == qualname and module.startswith(where + "."):
            return outcome
    return None


def error_outcome(error_class: type) -> str | None:
    """Return the outcome a loaded provider declares for ``error_class`` (or a base), if any.

    Example:
        >>> class OverloadedError(Exception): ...
        >>> error_outcome(OverloadedError), error_outcome(KeyError)
        ('retry', None)
    """
    if error_class in _outcomes_by_class:
        return _outcomes_by_class[error_class]
    _builtin_outcomes()
    # The most specific declared class decides.
    found = next((o for o in map(_declared_for, error_class.__mro__) if o is not None), None)
    _outcomes_by_class[error_class] = found
    return found


def _registry(registry: ProviderRegistry | None) -> ProviderRegistry:
    from llmpool.providers import get_registry

    return registry if registry is not None else get_registry()


@dataclass(frozen=True)
class ConfigKeysCheck:
    """A store validator: a row's ``config`` keys must be ones its provider accepts, or
    llmpool's own price, budget, breaker, stream and ``model_info`` keys (an unknown provider
    is checked when built)."""

    registry: ProviderRegistry | None = None

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row whose ``config`` has a key its provider does not accept."""
        usage_terms(config)  # llmpool's own keys, checked for every provider
        breaker_overrides(config)
        stream_limits(config)
        declared_fit(config)
        try:
            provider = _registry(self.registry).get(config.provider)
        except LLMPoolError:  # unknown or broken: checked when built, if ever
            return
        embedding = getattr(config, "kind", "chat") == "embedding"
        accepted = embeddings_config(config, provider) if embedding else accepted_config(provider)
        if accepted is None:
            return
        for key in config.config:
            if key in accepted or key in OWN_CONFIG_KEYS:
                continue
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if not close and "model_kwargs" in accepted:
                hint = "; put provider-specific extras under 'model_kwargs'"
            name = getattr(provider, "name", config.provider)
            msg = f"{config.describe()}: config.{key} is not a parameter of provider {name!r}{hint}"
            raise InvalidConfigError(
                msg, llm_name=config.name, llm_id=config.id, field=f"config.{key}"
            )


@dataclass(frozen=True)
class KnownProviderCheck:
    """A store validator: a row's ``provider`` must be one this machine knows (a broken plugin
    counts), so ``openia`` is refused with the closest name."""

    registry: ProviderRegistry | None = None

    def __call__(self, config: LLMConfig) -> None:
        """Refuse a row whose provider is not registered, naming the closest name."""
        from llmpool.providers import ALIASES

        registry = _registry(self.registry)
        try:
            registry.get(config.provider)
            return
        except UnknownProviderError:
            pass
        except LLMPoolError:  # installed but broken: known, reported when built
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
