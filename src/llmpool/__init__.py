"""llmpool: LLMs as rows of a SQL table, served as LangChain chat models with fallback.

The public API is the export table below (``__all__`` is derived from it); every other module
may change. Names are resolved on first use, so ``import llmpool`` opens no database, scans no
entry points and imports no provider package.

Example:
    >>> from llmpool import get_llm_with_fallback   # doctest: +SKIP
    >>> llm = get_llm_with_fallback()               # doctest: +SKIP
    >>> llm.invoke("Explain machine learning").content  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same table, for type checkers (explicit re-exports)
    from llmpool.api import aget_default_llm_config as aget_default_llm_config
    from llmpool.api import aget_embeddings as aget_embeddings
    from llmpool.api import aget_embeddings_with_fallback as aget_embeddings_with_fallback
    from llmpool.api import aget_llm as aget_llm
    from llmpool.api import aget_llm_with_fallback as aget_llm_with_fallback
    from llmpool.api import aget_llms_from_db as aget_llms_from_db
    from llmpool.api import create_llm_instance as create_llm_instance
    from llmpool.api import get_default_llm_config as get_default_llm_config
    from llmpool.api import get_embeddings as get_embeddings
    from llmpool.api import get_embeddings_with_fallback as get_embeddings_with_fallback
    from llmpool.api import get_llm as get_llm
    from llmpool.api import get_llm_with_fallback as get_llm_with_fallback
    from llmpool.api import get_llms_from_db as get_llms_from_db
    from llmpool.api import get_pool as get_pool
    from llmpool.api import set_pool as set_pool
    from llmpool.credentials.allowlist import EnvAllowlist as EnvAllowlist
    from llmpool.credentials.resolve import resolve_auth as resolve_auth
    from llmpool.embeddings.model import FallbackEmbeddings as FallbackEmbeddings
    from llmpool.embeddings.model import Vector as Vector
    from llmpool.embeddings.model import Vectors as Vectors
    from llmpool.embeddings.space import space_of as space_of
    from llmpool.errors import AllLLMsFailedError as AllLLMsFailedError
    from llmpool.errors import AllLLMsFailedToInitializeError as AllLLMsFailedToInitializeError
    from llmpool.errors import AmbiguousNameError as AmbiguousNameError
    from llmpool.errors import ArgumentTooLongError as ArgumentTooLongError
    from llmpool.errors import CandidateFailure as CandidateFailure
    from llmpool.errors import ConflictError as ConflictError
    from llmpool.errors import DatabaseError as DatabaseError
    from llmpool.errors import DatabaseUnavailableError as DatabaseUnavailableError
    from llmpool.errors import EnvNotAllowedError as EnvNotAllowedError
    from llmpool.errors import InvalidConfigError as InvalidConfigError
    from llmpool.errors import InvalidDefaultLLMError as InvalidDefaultLLMError
    from llmpool.errors import LiteralSecretError as LiteralSecretError
    from llmpool.errors import LLMNotFoundError as LLMNotFoundError
    from llmpool.errors import LLMPoolError as LLMPoolError
    from llmpool.errors import MidStreamError as MidStreamError
    from llmpool.errors import MigrationChecksumError as MigrationChecksumError
    from llmpool.errors import MigrationError as MigrationError
    from llmpool.errors import MissingSecretError as MissingSecretError
    from llmpool.errors import MixedSpacesError as MixedSpacesError
    from llmpool.errors import NoDefaultLLMError as NoDefaultLLMError
    from llmpool.errors import ProviderError as ProviderError
    from llmpool.errors import ProviderLoadError as ProviderLoadError
    from llmpool.errors import ProviderNotInstalledError as ProviderNotInstalledError
    from llmpool.errors import UnknownProviderError as UnknownProviderError
    from llmpool.errors import UnsupportedParameterError as UnsupportedParameterError
    from llmpool.errors import WrongKindError as WrongKindError
    from llmpool.fallback.admission import AdmissionCheck as AdmissionCheck
    from llmpool.fallback.breakers import BreakerStore as BreakerStore
    from llmpool.fallback.breakers import LocalBreakerStore as LocalBreakerStore
    from llmpool.fallback.breakers_redis import RedisBreakerStore as RedisBreakerStore
    from llmpool.fallback.model import FallbackChatModel as FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy as FallbackPolicy
    from llmpool.fallback.policy import Outcome as Outcome
    from llmpool.fallback.walk import Candidate as Candidate
    from llmpool.legacy import get_anthropic_llm as get_anthropic_llm
    from llmpool.legacy import get_ollama_llm as get_ollama_llm
    from llmpool.legacy import get_openai_llm as get_openai_llm
    from llmpool.limits import LocalLimits as LocalLimits
    from llmpool.limits import RateLimiter as RateLimiter
    from llmpool.limits.redis import RedisLimits as RedisLimits
    from llmpool.models import AuditEntry as AuditEntry
    from llmpool.models import BadRow as BadRow
    from llmpool.models import LLMConfig as LLMConfig
    from llmpool.observe.events import AttemptEvent as AttemptEvent
    from llmpool.observe.events import BreakerEvent as BreakerEvent
    from llmpool.observe.events import BuildFailedEvent as BuildFailedEvent
    from llmpool.observe.events import CallEvent as CallEvent
    from llmpool.observe.events import FailoverEvent as FailoverEvent
    from llmpool.observe.events import ReloadEvent as ReloadEvent
    from llmpool.observe.hooks import Observer as Observer
    from llmpool.observe.logs import LoggingObserver as LoggingObserver
    from llmpool.observe.otel import OpenTelemetryObserver as OpenTelemetryObserver
    from llmpool.pool.facade import LLMPool as LLMPool
    from llmpool.pool.options import PoolOptions as PoolOptions
    from llmpool.pool.status import ScopeStatus as ScopeStatus
    from llmpool.providers import Provider as Provider
    from llmpool.providers import ProviderRegistry as ProviderRegistry
    from llmpool.providers import get_registry as get_registry
    from llmpool.providers import register_provider as register_provider
    from llmpool.repository import LLMRepository as LLMRepository
    from llmpool.repository import LLMStore as LLMStore
    from llmpool.repository import Snapshot as Snapshot
    from llmpool.repository.memory import InMemoryStore as InMemoryStore
    from llmpool.repository.sql.async_store import AsyncSQLRepository as AsyncSQLRepository
    from llmpool.repository.sql.migrate import migrate as migrate
    from llmpool.repository.sql.migrate import seed_starter_rows as seed_starter_rows
    from llmpool.repository.sql.store import SQLStore as SQLStore
    from llmpool.usage.report import UsageRow as UsageRow
    from llmpool.version import __version__ as __version__

# name -> the module that defines it; resolved lazily by __getattr__ below.
_EXPORTS: dict[str, str] = {
    # the installed version, from the package metadata
    "__version__": "llmpool.version",
    # the usage guide's functions
    "get_llm": "llmpool.api",
    "get_llm_with_fallback": "llmpool.api",
    "get_llms_from_db": "llmpool.api",
    "get_default_llm_config": "llmpool.api",
    "create_llm_instance": "llmpool.api",
    "aget_llm": "llmpool.api",
    "aget_llm_with_fallback": "llmpool.api",
    "aget_llms_from_db": "llmpool.api",
    "aget_default_llm_config": "llmpool.api",
    "get_pool": "llmpool.api",
    "set_pool": "llmpool.api",
    # embeddings
    "get_embeddings": "llmpool.api",
    "get_embeddings_with_fallback": "llmpool.api",
    "aget_embeddings": "llmpool.api",
    "aget_embeddings_with_fallback": "llmpool.api",
    "FallbackEmbeddings": "llmpool.embeddings.model",
    "Vectors": "llmpool.embeddings.model",
    "Vector": "llmpool.embeddings.model",
    "space_of": "llmpool.embeddings.space",
    # the pool
    "LLMPool": "llmpool.pool.facade",
    "PoolOptions": "llmpool.pool.options",
    # usage and spend
    "UsageRow": "llmpool.usage.report",
    # legacy, deprecated
    "get_openai_llm": "llmpool.legacy",
    "get_anthropic_llm": "llmpool.legacy",
    "get_ollama_llm": "llmpool.legacy",
    # rows
    "LLMConfig": "llmpool.models",
    "AuditEntry": "llmpool.models",
    "BadRow": "llmpool.models",
    # repositories and stores
    "LLMRepository": "llmpool.repository",
    "LLMStore": "llmpool.repository",
    "Snapshot": "llmpool.repository",
    "InMemoryStore": "llmpool.repository.memory",
    "SQLStore": "llmpool.repository.sql.store",
    "AsyncSQLRepository": "llmpool.repository.sql.async_store",
    "migrate": "llmpool.repository.sql.migrate",
    "seed_starter_rows": "llmpool.repository.sql.migrate",
    # credentials
    "EnvAllowlist": "llmpool.credentials.allowlist",
    "resolve_auth": "llmpool.credentials.resolve",
    # providers
    "Provider": "llmpool.providers",
    "ProviderRegistry": "llmpool.providers",
    "get_registry": "llmpool.providers",
    "register_provider": "llmpool.providers",
    # fallback
    "FallbackChatModel": "llmpool.fallback.model",
    "Candidate": "llmpool.fallback.walk",
    "FallbackPolicy": "llmpool.fallback.policy",
    "Outcome": "llmpool.fallback.policy",
    "BreakerStore": "llmpool.fallback.breakers",
    "LocalBreakerStore": "llmpool.fallback.breakers",
    "RedisBreakerStore": "llmpool.fallback.breakers_redis",
    "AdmissionCheck": "llmpool.fallback.admission",
    # routing and limits
    "RateLimiter": "llmpool.limits",
    "LocalLimits": "llmpool.limits",
    "RedisLimits": "llmpool.limits.redis",
    # observability: hooks, their events, the built-in observers, the health report
    "Observer": "llmpool.observe.hooks",
    "AttemptEvent": "llmpool.observe.events",
    "BreakerEvent": "llmpool.observe.events",
    "BuildFailedEvent": "llmpool.observe.events",
    "CallEvent": "llmpool.observe.events",
    "FailoverEvent": "llmpool.observe.events",
    "ReloadEvent": "llmpool.observe.events",
    "LoggingObserver": "llmpool.observe.logs",
    "OpenTelemetryObserver": "llmpool.observe.otel",
    "ScopeStatus": "llmpool.pool.status",
    # errors
    "LLMPoolError": "llmpool.errors",
    "AllLLMsFailedError": "llmpool.errors",
    "AllLLMsFailedToInitializeError": "llmpool.errors",
    "AmbiguousNameError": "llmpool.errors",
    "ArgumentTooLongError": "llmpool.errors",
    "CandidateFailure": "llmpool.errors",
    "ConflictError": "llmpool.errors",
    "DatabaseError": "llmpool.errors",
    "DatabaseUnavailableError": "llmpool.errors",
    "EnvNotAllowedError": "llmpool.errors",
    "InvalidConfigError": "llmpool.errors",
    "InvalidDefaultLLMError": "llmpool.errors",
    "LiteralSecretError": "llmpool.errors",
    "LLMNotFoundError": "llmpool.errors",
    "MidStreamError": "llmpool.errors",
    "MixedSpacesError": "llmpool.errors",
    "MigrationChecksumError": "llmpool.errors",
    "MigrationError": "llmpool.errors",
    "MissingSecretError": "llmpool.errors",
    "NoDefaultLLMError": "llmpool.errors",
    "ProviderError": "llmpool.errors",
    "ProviderLoadError": "llmpool.errors",
    "ProviderNotInstalledError": "llmpool.errors",
    "UnknownProviderError": "llmpool.errors",
    "UnsupportedParameterError": "llmpool.errors",
    "WrongKindError": "llmpool.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'llmpool' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
