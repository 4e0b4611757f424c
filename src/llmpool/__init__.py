"""llmpool: LLMs as rows of a SQL table, served as LangChain chat models with fallback.

The public API is what ``__all__`` lists. Names are resolved on first use, so ``import llmpool``
opens no database, scans no entry points and imports no provider package.

Example:
    >>> from llmpool import get_llm_with_fallback   # doctest: +SKIP
    >>> llm = get_llm_with_fallback()               # doctest: +SKIP
    >>> llm.invoke("Explain machine learning").content  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmpool.api import (
        aget_default_llm_config,
        aget_llm,
        aget_llm_with_fallback,
        aget_llms_from_db,
        create_llm_instance,
        get_default_llm_config,
        get_llm,
        get_llm_with_fallback,
        get_llms_from_db,
        get_pool,
        set_pool,
    )
    from llmpool.credentials.allowlist import EnvAllowlist, resolve_auth
    from llmpool.errors import (
        AllLLMsFailedError,
        AllLLMsFailedToInitializeError,
        ArgumentTooLongError,
        CandidateFailure,
        ConflictError,
        DatabaseError,
        DatabaseUnavailableError,
        EnvNotAllowedError,
        InvalidConfigError,
        LiteralSecretError,
        LLMNotFoundError,
        LLMPoolError,
        MidStreamError,
        MigrationChecksumError,
        MigrationError,
        MissingSecretError,
        NoDefaultLLMError,
        ProviderError,
        ProviderLoadError,
        ProviderNotInstalledError,
        UnknownProviderError,
        UnsupportedParameterError,
    )
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.legacy import get_anthropic_llm, get_ollama_llm, get_openai_llm
    from llmpool.models import AuditEntry, BadRow, LLMConfig
    from llmpool.pool.facade import LLMPool
    from llmpool.providers import Provider, ProviderRegistry, get_registry, register_provider
    from llmpool.repository import LLMRepository, LLMStore, Snapshot
    from llmpool.repository.memory import InMemoryStore
    from llmpool.repository.sql.engine import create_engine, mask_url, resolve_database_url
    from llmpool.repository.sql.migrate import migrate, seed_starter_rows
    from llmpool.repository.sql.store import AsyncSQLRepository, SQLStore

# name -> module that defines it. Resolved lazily by __getattr__ below.
_EXPORTS: dict[str, str] = {
    # the seed's functions
    "get_llm": "llmpool.api",
    "get_llm_with_fallback": "llmpool.api",
    "get_llms_from_db": "llmpool.api",
    "get_default_llm_config": "llmpool.api",
    "create_llm_instance": "llmpool.api",
    "aget_llm": "llmpool.api",
    "aget_llm_with_fallback": "llmpool.api",
    "aget_llms_from_db": "llmpool.api",
    "aget_default_llm_config": "llmpool.api",
    "LLMPool": "llmpool.pool.facade",
    "get_pool": "llmpool.api",
    "set_pool": "llmpool.api",
    # legacy, deprecated
    "get_openai_llm": "llmpool.legacy",
    "get_anthropic_llm": "llmpool.legacy",
    "get_ollama_llm": "llmpool.legacy",
    # rows
    "LLMConfig": "llmpool.models",
    "AuditEntry": "llmpool.models",
    "BadRow": "llmpool.models",
    "LLMRepository": "llmpool.repository",
    "LLMStore": "llmpool.repository",
    "Snapshot": "llmpool.repository",
    "InMemoryStore": "llmpool.repository.memory",
    "SQLStore": "llmpool.repository.sql.store",
    "AsyncSQLRepository": "llmpool.repository.sql.store",
    "create_engine": "llmpool.repository.sql.engine",
    "resolve_database_url": "llmpool.repository.sql.engine",
    "mask_url": "llmpool.repository.sql.engine",
    "migrate": "llmpool.repository.sql.migrate",
    "seed_starter_rows": "llmpool.repository.sql.migrate",
    # credentials and providers
    "EnvAllowlist": "llmpool.credentials.allowlist",
    "resolve_auth": "llmpool.credentials.allowlist",
    "Provider": "llmpool.providers",
    "ProviderRegistry": "llmpool.providers",
    "get_registry": "llmpool.providers",
    "register_provider": "llmpool.providers",
    # fallback
    "FallbackChatModel": "llmpool.fallback.model",
    "FallbackPolicy": "llmpool.fallback.policy",
    # errors
    "LLMPoolError": "llmpool.errors",
    "AllLLMsFailedError": "llmpool.errors",
    "AllLLMsFailedToInitializeError": "llmpool.errors",
    "ArgumentTooLongError": "llmpool.errors",
    "CandidateFailure": "llmpool.errors",
    "ConflictError": "llmpool.errors",
    "DatabaseError": "llmpool.errors",
    "DatabaseUnavailableError": "llmpool.errors",
    "EnvNotAllowedError": "llmpool.errors",
    "InvalidConfigError": "llmpool.errors",
    "LiteralSecretError": "llmpool.errors",
    "LLMNotFoundError": "llmpool.errors",
    "MidStreamError": "llmpool.errors",
    "MigrationChecksumError": "llmpool.errors",
    "MigrationError": "llmpool.errors",
    "MissingSecretError": "llmpool.errors",
    "NoDefaultLLMError": "llmpool.errors",
    "ProviderError": "llmpool.errors",
    "ProviderLoadError": "llmpool.errors",
    "ProviderNotInstalledError": "llmpool.errors",
    "UnknownProviderError": "llmpool.errors",
    "UnsupportedParameterError": "llmpool.errors",
}

__all__ = [
    "AllLLMsFailedError",
    "AllLLMsFailedToInitializeError",
    "ArgumentTooLongError",
    "AsyncSQLRepository",
    "AuditEntry",
    "BadRow",
    "CandidateFailure",
    "ConflictError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EnvAllowlist",
    "EnvNotAllowedError",
    "FallbackChatModel",
    "FallbackPolicy",
    "InMemoryStore",
    "InvalidConfigError",
    "LLMConfig",
    "LLMNotFoundError",
    "LLMPool",
    "LLMPoolError",
    "LLMRepository",
    "LLMStore",
    "LiteralSecretError",
    "MidStreamError",
    "MigrationChecksumError",
    "MigrationError",
    "MissingSecretError",
    "NoDefaultLLMError",
    "Provider",
    "ProviderError",
    "ProviderLoadError",
    "ProviderNotInstalledError",
    "ProviderRegistry",
    "SQLStore",
    "Snapshot",
    "UnknownProviderError",
    "UnsupportedParameterError",
    "aget_default_llm_config",
    "aget_llm",
    "aget_llm_with_fallback",
    "aget_llms_from_db",
    "create_engine",
    "create_llm_instance",
    "get_anthropic_llm",
    "get_default_llm_config",
    "get_llm",
    "get_llm_with_fallback",
    "get_llms_from_db",
    "get_ollama_llm",
    "get_openai_llm",
    "get_pool",
    "get_registry",
    "mask_url",
    "migrate",
    "register_provider",
    "resolve_auth",
    "resolve_database_url",
    "seed_starter_rows",
    "set_pool",
]


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
