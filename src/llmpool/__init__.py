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

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

# The logging HOWTO's advice for libraries: records reach the application's own handlers, and
# an application that configured none is not written to by Python's last-resort handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

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
    from llmpool.contracts import AdmissionCheck as AdmissionCheck
    from llmpool.contracts import Candidate as Candidate
    from llmpool.contracts import Observer as Observer
    from llmpool.errors import AllLLMsFailedError as AllLLMsFailedError
    from llmpool.errors import AllLLMsFailedToInitializeError as AllLLMsFailedToInitializeError
    from llmpool.errors import AmbiguousNameError as AmbiguousNameError
    from llmpool.errors import ArgumentTooLongError as ArgumentTooLongError
    from llmpool.errors import BadAnswerError as BadAnswerError
    from llmpool.errors import CandidateFailure as CandidateFailure
    from llmpool.errors import ConflictError as ConflictError
    from llmpool.errors import DatabaseError as DatabaseError
    from llmpool.errors import DatabaseUnavailableError as DatabaseUnavailableError
    from llmpool.errors import EnvNotAllowedError as EnvNotAllowedError
    from llmpool.errors import InvalidConfigError as InvalidConfigError
    from llmpool.errors import InvalidDefaultLLMError as InvalidDefaultLLMError
    from llmpool.errors import InvalidOptionError as InvalidOptionError
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
    from llmpool.errors import QuotaExceededError as QuotaExceededError
    from llmpool.errors import RollbackError as RollbackError
    from llmpool.errors import UnknownProviderError as UnknownProviderError
    from llmpool.errors import UnsupportedParameterError as UnsupportedParameterError
    from llmpool.errors import WrongKindError as WrongKindError
    from llmpool.fallback.breakers import BreakerStore as BreakerStore
    from llmpool.fallback.breakers import LocalBreakerStore as LocalBreakerStore
    from llmpool.fallback.breakers import RedisBreakerStore as RedisBreakerStore
    from llmpool.fallback.embeddings import FallbackEmbeddings as FallbackEmbeddings
    from llmpool.fallback.embeddings import Vector as Vector
    from llmpool.fallback.embeddings import Vectors as Vectors
    from llmpool.fallback.model import FallbackChatModel as FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy as FallbackPolicy
    from llmpool.fallback.policy import Outcome as Outcome
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
    from llmpool.observe.logs import LoggingObserver as LoggingObserver
    from llmpool.observe.otel import OpenTelemetryObserver as OpenTelemetryObserver
    from llmpool.pool.facade import LLMPool as LLMPool
    from llmpool.pool.health import ScopeStatus as ScopeStatus
    from llmpool.pool.options import PoolOptions as PoolOptions
    from llmpool.providers import Provider as Provider
    from llmpool.providers import ProviderRegistry as ProviderRegistry
    from llmpool.providers import get_registry as get_registry
    from llmpool.providers import register_provider as register_provider
    from llmpool.providers.allowlist import EnvAllowlist as EnvAllowlist
    from llmpool.providers.allowlist import resolve_auth as resolve_auth
    from llmpool.repository import LLMRepository as LLMRepository
    from llmpool.repository import LLMStore as LLMStore
    from llmpool.repository import Snapshot as Snapshot
    from llmpool.repository.memory import InMemoryStore as InMemoryStore
    from llmpool.repository.spaces import space_of as space_of
    from llmpool.repository.sql.async_store import AsyncSQLRepository as AsyncSQLRepository
    from llmpool.repository.sql.migrate import migrate as migrate
    from llmpool.repository.sql.migrate import seed_starter_rows as seed_starter_rows
    from llmpool.repository.sql.store import SQLStore as SQLStore
    from llmpool.usage.report import UsageRow as UsageRow
    from llmpool.version import __version__ as __version__

# module -> the names it exports, resolved lazily by __getattr__ below.
_MODULES: dict[str, tuple[str, ...]] = {
    "llmpool.version": ("__version__",),
    "llmpool.api": (
        "get_llm",
        "get_llm_with_fallback",
        "get_llms_from_db",
        "get_default_llm_config",
        "create_llm_instance",
        "aget_llm",
        "aget_llm_with_fallback",
        "aget_llms_from_db",
        "aget_default_llm_config",
        "get_embeddings",
        "get_embeddings_with_fallback",
        "aget_embeddings",
        "aget_embeddings_with_fallback",
        "get_pool",
        "set_pool",
    ),
    "llmpool.fallback.embeddings": ("FallbackEmbeddings", "Vectors", "Vector"),
    "llmpool.repository.spaces": ("space_of",),
    "llmpool.pool.facade": ("LLMPool",),
    "llmpool.pool.options": ("PoolOptions",),
    "llmpool.pool.health": ("ScopeStatus",),
    "llmpool.usage.report": ("UsageRow",),
    "llmpool.legacy": ("get_openai_llm", "get_anthropic_llm", "get_ollama_llm"),
    "llmpool.models": ("LLMConfig", "AuditEntry", "BadRow"),
    "llmpool.repository": ("LLMRepository", "LLMStore", "Snapshot"),
    "llmpool.repository.memory": ("InMemoryStore",),
    "llmpool.repository.sql.store": ("SQLStore",),
    "llmpool.repository.sql.async_store": ("AsyncSQLRepository",),
    "llmpool.repository.sql.migrate": ("migrate", "seed_starter_rows"),
    "llmpool.providers.allowlist": ("EnvAllowlist", "resolve_auth"),
    "llmpool.providers": ("Provider", "ProviderRegistry", "get_registry", "register_provider"),
    "llmpool.fallback.model": ("FallbackChatModel",),
    "llmpool.fallback.policy": ("FallbackPolicy", "Outcome"),
    "llmpool.fallback.breakers": ("BreakerStore", "LocalBreakerStore", "RedisBreakerStore"),
    "llmpool.contracts": ("Candidate", "AdmissionCheck", "Observer"),
    "llmpool.limits": ("RateLimiter", "LocalLimits"),
    "llmpool.limits.redis": ("RedisLimits",),
    "llmpool.observe.events": (
        "AttemptEvent",
        "BreakerEvent",
        "BuildFailedEvent",
        "CallEvent",
        "FailoverEvent",
        "ReloadEvent",
    ),
    "llmpool.observe.logs": ("LoggingObserver",),
    "llmpool.observe.otel": ("OpenTelemetryObserver",),
    "llmpool.errors": (
        "LLMPoolError",
        "AllLLMsFailedError",
        "AllLLMsFailedToInitializeError",
        "AmbiguousNameError",
        "ArgumentTooLongError",
        "BadAnswerError",
        "CandidateFailure",
        "ConflictError",
        "DatabaseError",
        "DatabaseUnavailableError",
        "EnvNotAllowedError",
        "InvalidConfigError",
        "InvalidDefaultLLMError",
        "InvalidOptionError",
        "LiteralSecretError",
        "LLMNotFoundError",
        "MidStreamError",
        "MixedSpacesError",
        "MigrationChecksumError",
        "MigrationError",
        "MissingSecretError",
        "NoDefaultLLMError",
        "ProviderError",
        "ProviderLoadError",
        "ProviderNotInstalledError",
        "QuotaExceededError",
        "RollbackError",
        "UnknownProviderError",
        "UnsupportedParameterError",
        "WrongKindError",
    ),
}
# name -> the module that defines it.
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_EXPORTS)

# The usage guide's functions over the default pool: importing them opens nothing, and lets
# FallbackChatModel(scope=...) (a loaded serialized model) serve the default pool's scope.
import_module("llmpool.api")


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
