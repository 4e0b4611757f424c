"""The public surface is one export table: pinned here, so that a change to it is deliberate."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import llmpool

PUBLIC = [
    "__version__",
    "AttemptEvent",
    "BreakerEvent",
    "BuildFailedEvent",
    "CallEvent",
    "FailoverEvent",
    "LoggingObserver",
    "Observer",
    "OpenTelemetryObserver",
    "ReloadEvent",
    "ScopeStatus",
    "AdmissionCheck",
    "AllLLMsFailedError",
    "AllLLMsFailedToInitializeError",
    "AmbiguousNameError",
    "ArgumentTooLongError",
    "AsyncSQLRepository",
    "AuditEntry",
    "BadAnswerError",
    "BadRow",
    "BreakerStore",
    "Candidate",
    "CandidateFailure",
    "ConflictError",
    "DatabaseError",
    "DatabaseUnavailableError",
    "EnvAllowlist",
    "EnvNotAllowedError",
    "FallbackChatModel",
    "FallbackEmbeddings",
    "FallbackPolicy",
    "InMemoryStore",
    "InvalidConfigError",
    "InvalidDefaultLLMError",
    "InvalidOptionError",
    "LLMConfig",
    "LLMNotFoundError",
    "LLMPool",
    "LLMPoolError",
    "LLMRepository",
    "LLMStore",
    "LiteralSecretError",
    "LocalBreakerStore",
    "LocalLimits",
    "MidStreamError",
    "MixedSpacesError",
    "MigrationChecksumError",
    "MigrationError",
    "MissingSecretError",
    "NoDefaultLLMError",
    "Outcome",
    "PoolOptions",
    "Provider",
    "ProviderError",
    "ProviderLoadError",
    "ProviderNotInstalledError",
    "ProviderRegistry",
    "QuotaExceededError",
    "RateLimiter",
    "RedisBreakerStore",
    "RedisLimits",
    "RollbackError",
    "SQLStore",
    "Snapshot",
    "UnknownProviderError",
    "UnsupportedParameterError",
    "UsageRow",
    "Vector",
    "Vectors",
    "WrongKindError",
    "aget_default_llm_config",
    "aget_embeddings",
    "aget_embeddings_with_fallback",
    "aget_llm",
    "aget_llm_with_fallback",
    "aget_llms_from_db",
    "create_llm_instance",
    "get_anthropic_llm",
    "get_default_llm_config",
    "get_embeddings",
    "get_embeddings_with_fallback",
    "get_llm",
    "get_llm_with_fallback",
    "get_llms_from_db",
    "get_ollama_llm",
    "get_openai_llm",
    "get_pool",
    "get_registry",
    "migrate",
    "register_provider",
    "resolve_auth",
    "seed_starter_rows",
    "set_pool",
    "space_of",
]


def test_all_is_the_pinned_export_table() -> None:
    """``__all__`` is derived from the export table and lists exactly the pinned names."""
    assert llmpool.__all__ == sorted(llmpool._EXPORTS) == sorted(PUBLIC)


def test_every_exported_name_resolves_from_its_module() -> None:
    """Each name comes from the module the table names, and every public error is exported."""
    from llmpool import errors

    for name, module in llmpool._EXPORTS.items():
        assert getattr(llmpool, name) is getattr(importlib.import_module(module), name)
    public_errors = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
    }
    assert public_errors <= set(PUBLIC)


def test_type_checkers_see_the_same_table() -> None:
    """The TYPE_CHECKING imports re-export exactly the table's names from the table's modules."""
    tree = ast.parse(Path(llmpool.__file__).read_text())
    seen: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llmpool"):
            for alias in node.names:
                assert alias.asname == alias.name  # an explicit re-export
                seen[alias.name] = node.module
    assert seen == llmpool._EXPORTS


def test_internal_helpers_are_not_exported() -> None:
    """SQL engines, URL helpers and the decision core stay internal."""
    for name in ("create_engine", "mask_url", "resolve_database_url", "Walk", "SQLRepository"):
        assert name not in llmpool.__all__
