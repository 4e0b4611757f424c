"""A provider describes itself: its variables, endpoint keys, error outcomes and config keys."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel, FakeListChatModel

from llmpool.credentials.endpoints import declared_endpoint_keys, literal_endpoints
from llmpool.errors import EnvNotAllowedError, InvalidConfigError
from llmpool.fallback.policy import FallbackPolicy, Outcome, classify_error
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers import ConfigKeysCheck, FactoryProvider, ProviderRegistry, set_registry
from llmpool.providers.allowlist import EnvAllowlist
from llmpool.providers.builtin import ANTHROPIC, BEDROCK, BUILTINS, FAKE, OLLAMA, OPENAI
from llmpool.providers.declarations import accepted_config, declared_error_outcomes, served_by

FAST = FallbackPolicy(attempts=2, backoff_initial=0, backoff_max=0, backoff_jitter=0)


def row(provider: str, **config: Any) -> LLMConfig:
    """A row of ``provider`` with ``config``."""
    return LLMConfig(id="7", name="Row", provider=provider, model_name="m", config=config)


@pytest.fixture
def sql_store(migrated_sqlite_url: str) -> Iterator[Any]:
    """A migrated SQLite store with the default validators."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_sqlite_url)
    try:
        yield store
    finally:
        store.engine.dispose()


def test_builtins_declare_their_sdk_errors() -> None:
    """Each SDK's own error names are declared by the built-in providers that use it."""
    assert declared_error_outcomes(OPENAI)["RateLimitError"] == "retry"
    assert declared_error_outcomes(ANTHROPIC)["OverloadedError"] == "retry"
    assert declared_error_outcomes(BEDROCK)["NoCredentialsError"] == "fallback"
    assert declared_error_outcomes(FAKE)["ServiceUnavailableError"] == "retry"
    for provider in BUILTINS:
        assert "TransportError" not in declared_error_outcomes(provider)


def test_an_invalid_declared_outcome_fails_the_plugin_load() -> None:
    """A provider declaring an outcome that does not exist is a load error naming it."""
    bad = FactoryProvider(
        "bad-outcomes",
        lambda c, a: FakeListChatModel(responses=["x"]),
        error_outcomes={"BadError": "panic"},
    )
    registry = ProviderRegistry(entry_points=[])
    with pytest.raises(ValueError, match="'BadError' -> 'panic'"):
        registry.register(bad)
    assert "bad-outcomes" not in registry


def test_a_registered_provider_declares_how_its_errors_are_classified() -> None:
    """An error class a provider declares is classified as declared; its status code still wins."""

    class GatewaySaturated(Exception):
        pass

    class GatewayRejected(Exception):
        status_code = 429

    assert classify_error(GatewaySaturated()) is Outcome.PROPAGATE
    provider = FactoryProvider(
        "gateway-declared",
        lambda c, a: FakeListChatModel(responses=["x"]),
        error_outcomes={
            "GatewaySaturated": "fallback_keep_breaker",
            "GatewayRejected": "propagate",
        },
    )
    ProviderRegistry(entry_points=[]).register(provider)
    assert classify_error(GatewaySaturated()) is Outcome.FALLBACK_KEEP_BREAKER
    assert classify_error(GatewayRejected()) is Outcome.RETRY


@pytest.mark.usefixtures("provider_plugins")
def test_a_module_qualified_declaration_matches_its_class_and_subclasses() -> None:
    """A ``"module:Class"`` declaration names that class in its package and the classes under it."""
    from llmpool_echo import EchoOverloaded

    class BusierStill(EchoOverloaded):
        pass

    ProviderRegistry()  # declarations are recorded when the plugin loads
    assert "echo" in ProviderRegistry()
    assert classify_error(EchoOverloaded()) is Outcome.RETRY
    assert classify_error(BusierStill()) is Outcome.RETRY


@pytest.mark.usefixtures("provider_plugins")
def test_declared_endpoint_keys_are_checked_as_endpoints() -> None:
    """A key the provider says names an endpoint is listed, though no generic rule matches it."""
    echo = ProviderRegistry().get("echo")
    assert declared_endpoint_keys(echo) == {"gateway"}
    config = row("echo", gateway="gw.example:9000")
    assert literal_endpoints(config, echo) == [("config.gateway", "gw.example:9000")]
    assert literal_endpoints(config) == []
    assert "azure_endpoint" in declared_endpoint_keys(ProviderRegistry().get("azure_openai"))


def test_accepted_config_is_read_from_the_client_class() -> None:
    """A ChatProvider accepts its class's fields and aliases, and what ``prepare`` consumes."""
    accepted = accepted_config(OPENAI)
    assert accepted is not None
    assert {"temperature", "max_tokens", "base_url", "openai_api_base"} <= accepted
    ollama = accepted_config(OLLAMA)
    assert ollama is not None and "timeout" in ollama
    missing = FactoryProvider("nothing-declared", lambda c, a: FakeListChatModel(responses=["x"]))
    assert accepted_config(missing) is None


def test_config_keys_check_suggests_the_closest_key() -> None:
    """A misspelt config key is refused naming the row, the field and the key it resembles."""
    with pytest.raises(InvalidConfigError, match="did you mean 'temperature'") as caught:
        ConfigKeysCheck()(row("openai", temprature=0.2))
    assert caught.value.field == "config.temprature"
    assert caught.value.llm_name == "Row" and caught.value.llm_id == "7"
    assert "LLM 'Row'" in str(caught.value)
    ConfigKeysCheck()(row("openai", temperature=0.2, model_kwargs={"top_k": 3}))


def test_config_keys_check_skips_what_it_cannot_know() -> None:
    """An unknown provider, or one whose class is not importable here, is not checked."""
    check = ConfigKeysCheck()
    check(row("no-such-provider", anything=1))
    with set_registry(ProviderRegistry(entry_points=[])) as registry:
        assert registry is not None
        from llmpool.providers import ChatProvider

        registry.register(ChatProvider("absent", "llmpool_absent_pkg:Chat", extra=None))
        ConfigKeysCheck()(row("absent", temprature=1))


@pytest.mark.usefixtures("provider_plugins")
def test_config_keys_check_refuses_a_misspelt_key_when_the_row_is_written(
    sql_store: Any,
) -> None:
    """As a store validator, the check refuses the write itself, before any model is built."""
    sql_store.validators = (*sql_store.validators, ConfigKeysCheck())
    with pytest.raises(InvalidConfigError, match="did you mean 'prefix'"):
        sql_store.add({"name": "E", "provider": "echo", "model_name": "e", "config": {"prefx": 1}})
    assert sql_store.add({"name": "Echo", "provider": "echo", "model_name": "e"}).name == "Echo"


@pytest.mark.usefixtures("provider_plugins")
def test_plugin_declared_variable_serves_a_sql_row(
    sql_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The echo plugin's own ECHO_API_KEY is allowed to its rows, and reaches its model."""
    monkeypatch.setenv("ECHO_API_KEY", "sk-echo-test")
    sql_store.add(
        {
            "name": "Echo",
            "provider": "echo",
            "model_name": "echo-1",
            "is_default": True,
            "auth_meta": {"api_key_env": "ECHO_API_KEY"},
            "config": {"prefix": "keyed: "},
        }
    )
    with set_registry(ProviderRegistry()):
        pool = LLMPool(repository=sql_store, poll_interval=0)
        assert pool.get_llm().invoke("hi").content == "[key] keyed: hi"
    assert EnvAllowlist().kind("ECHO_API_KEY", provider="echo") == "secret"
    assert not EnvAllowlist().allows("ECHO_API_KEY", provider="openai")
    with pytest.raises(EnvNotAllowedError, match="ECHO_API_KEY"):
        sql_store.add(
            {
                "name": "Stolen",
                "provider": "fake",
                "model_name": "m",
                "auth_meta": {"api_key_env": "ECHO_API_KEY"},
            }
        )


@pytest.mark.usefixtures("provider_plugins")
def test_plugin_declared_error_is_retried_then_falls_back_through_the_pool(
    sql_store: Any,
) -> None:
    """EchoOverloaded, declared retry by the plugin, is retried and then falls back on SQLite."""
    import llmpool_echo

    sql_store.add(
        {
            "name": "Busy echo",
            "provider": "echo",
            "model_name": "echo-1",
            "priority": 0,
            "is_default": True,
            "config": {"prefix": "busy: ", "overloaded": True},
        }
    )
    sql_store.add(
        {
            "name": "Backup",
            "provider": "fake",
            "model_name": "m",
            "priority": 1,
            "config": {"responses": ["from backup"]},
        }
    )
    llmpool_echo.CALLS.pop("busy: ", None)
    with set_registry(ProviderRegistry()):
        pool = LLMPool(repository=sql_store, poll_interval=0, policy=FAST)
        assert pool.get_llm_with_fallback().invoke("hi").content == "from backup"
    assert llmpool_echo.CALLS["busy: "] == FAST.attempts


def test_factory_provider_declarations_pass_through_register_provider() -> None:
    """register_provider forwards the declarations to the factory provider it makes."""

    def build(config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        return FakeListChatModel(responses=["x"])

    provider = FactoryProvider(
        "declaring",
        build,
        endpoint_keys=frozenset({"Server"}),
        accepted_config=frozenset({"responses"}),
    )
    assert declared_endpoint_keys(provider) == {"server"}
    assert accepted_config(provider) == {"responses"}


def test_served_by_reads_the_rows_endpoint_and_its_request_parameters() -> None:
    """The row's base_url gives the server (a proxy does not); numbers and stops are parameters."""
    config = {"base_url": "http://10.0.0.5:8080/v1", "openai_proxy": "http://proxy:3128",
              "temperature": 0.5, "max_completion_tokens": 99, "stop": ["a", "b"],
              "top_p": True, "seed": "7"}  # fmt: skip
    served = served_by(row("openai", **config), OPENAI)
    assert served[:3] == ("openai", "10.0.0.5", 8080)
    assert served.parameters == {"temperature": 0.5, "max_tokens": 99, "stop_sequences": ("a", "b")}


def test_served_by_falls_back_to_the_declared_default_endpoint_only_when_nothing_else_may_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No endpoint in the row: the provider's default, unless a variable may name another."""
    for name in OPENAI.plain_env:
        monkeypatch.delenv(name, raising=False)
    assert served_by(row("openai", openai_proxy="http://proxy:3128"), OPENAI)[1:3] == (
        "api.openai.com", 443,
    )  # fmt: skip
    assert served_by(row("anthropic"), ANTHROPIC)[:3] == ("anthropic", "api.anthropic.com", 443)
    assert served_by(row("bedrock"), BEDROCK)[:3] == ("aws.bedrock", None, None)
    referenced = LLMConfig(id="7", name="Row", provider="openai", model_name="m",
                           auth_meta={"base_url_env": "MY_GATEWAY_URL"})  # fmt: skip
    assert served_by(referenced, OPENAI)[1:3] == (None, None)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://gateway:4000/v1")
    assert served_by(row("openai"), OPENAI)[1:3] == (None, None)


def test_a_plugin_declares_its_genai_provider_name_and_default_endpoint() -> None:
    """A plugin's declared genai_name and default_endpoint are used; none: its own name."""

    def build(config: LLMConfig, auth: Mapping[str, Any]) -> BaseChatModel:
        return FakeListChatModel(responses=["x"])

    declared = FactoryProvider(
        "mistral", build, genai_name="mistral_ai", default_endpoint="https://api.mistral.ai/v1"
    )
    assert served_by(row("mistral"), declared)[:3] == ("mistral_ai", "api.mistral.ai", 443)
    assert served_by(row("echo"), FactoryProvider("echo", build))[:3] == ("echo", None, None)
    assert served_by(row("fake"))[:3] == ("fake", None, None)  # a built-in found by name
