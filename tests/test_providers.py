"""The provider registry: entry points, aliases, built-ins, parameters and install hints."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel

from llmpool.errors import (
    ProviderNotInstalledError,
    UnknownProviderError,
    UnsupportedParameterError,
)
from llmpool.models import LLMConfig
from llmpool.providers import (
    ChatProvider,
    FactoryProvider,
    ProviderRegistry,
    get_registry,
    register_provider,
    set_registry,
)
from llmpool.providers.fake import FakeChatModel

BUILTIN_NAMES = {
    "openai",
    "azure_openai",
    "anthropic",
    "bedrock",
    "vertexai",
    "fireworks",
    "ollama",
    "fake",
}


def config(provider: str, model: str = "m", **values: Any) -> LLMConfig:
    """A row of ``provider``."""
    return LLMConfig(
        id="row-1", name=f"{provider} row", provider=provider, model_name=model, **values
    )


def test_builtins_come_from_llmpools_own_entry_points() -> None:
    """The seven built-ins and fake are declared as entry points of the llmpool distribution."""
    registry = ProviderRegistry()
    assert set(registry.names()) >= BUILTIN_NAMES
    for name in BUILTIN_NAMES:
        assert registry.distribution_of(name) == "llmpool"


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("azure", "azure_openai"),
        ("google_vertexai", "vertexai"),
        ("bedrock_converse", "bedrock"),
        ("OpenAI", "openai"),
    ],
)
def test_aliases_match_init_chat_model_names(alias: str, name: str) -> None:
    """LangChain's init_chat_model provider names resolve to llmpool's."""
    assert ProviderRegistry().get(alias).name == name


def test_unknown_provider_lists_the_known_ones() -> None:
    """An unknown provider is a LookupError naming the registered providers."""
    with pytest.raises(UnknownProviderError, match="openai") as info:
        ProviderRegistry().get("nope")
    assert isinstance(info.value, LookupError)


def test_missing_package_names_the_pip_install() -> None:
    """A provider whose package is missing says exactly what to install."""
    provider = ChatProvider(
        "ghost", "llmpool_no_such_pkg:Chat", extra="ghost", package="langchain-ghost"
    )
    with pytest.raises(ProviderNotInstalledError, match=r'pip install "llmpool\[ghost\]"'):
        provider.build(config("ghost"), {})


def test_injected_entry_points_load_and_broken_ones_are_reported() -> None:
    """Unit tests inject entry points; one that fails to import is reported, others work."""
    good = EntryPoint("fakeish", "llmpool.providers.builtin:FAKE", "llmpool.providers")
    broken = EntryPoint("broken", "llmpool_no_such_module:PROVIDER", "llmpool.providers")
    not_provider = EntryPoint("odd", "os:sep", "llmpool.providers")
    registry = ProviderRegistry(entry_points=[broken, good, not_provider])
    assert "fake" in registry
    assert "fakeish" in registry
    assert [provider.name for provider in registry] == ["fake"]  # one provider, two names
    errors = registry.load_errors
    assert [type(e.__cause__).__name__ for e in errors] == ["ModuleNotFoundError", "TypeError"]
    assert 'provider plugin "broken"' in str(errors[0])


def test_discovery_is_lazy_and_cached() -> None:
    """Nothing is scanned until first use; the scan runs once."""
    registry = ProviderRegistry()
    assert "not loaded yet" in repr(registry)
    registry.get("fake")
    assert "fake" in repr(registry)
    assert registry.get("fake") is registry.get("fake")


def test_register_provider_in_process() -> None:
    """register_provider adds a factory provider to the process-wide registry."""
    with set_registry(ProviderRegistry(entry_points=[])):
        register_provider("mine", lambda c, a: FakeChatModel(responses=[c.model_name]))
        model = get_registry().build(config("mine", model="from-row"))
        assert model.invoke("hi").content == "from-row"
        with pytest.raises(ValueError, match="already registered"):
            register_provider(FactoryProvider("mine", lambda c, a: FakeChatModel()))
    assert "mine" not in get_registry()


def test_config_reaches_the_client_and_retries_default_to_zero() -> None:
    """Row config is passed to the client; SDK retries are 0 unless the row says otherwise."""
    row = config(
        "openai",
        "gpt-4",
        auth_meta={"api_key_env": "OPENAI_API_KEY"},
        config={"temperature": 0.1, "timeout": 7},
    )
    model: Any = ProviderRegistry().build(row, environ={"OPENAI_API_KEY": "sk-test"})
    assert (model.model_name, model.temperature, model.request_timeout) == ("gpt-4", 0.1, 7)
    assert model.max_retries == 0
    row = row.model_copy(update={"config": {"max_retries": 3}})
    assert ProviderRegistry().build(row, environ={"OPENAI_API_KEY": "k"}).max_retries == 3


def test_unsupported_parameter_names_the_row_and_key() -> None:
    """A config key the client does not take is refused with the row's name."""
    row = config("openai", auth_meta={"api_key_env": "OPENAI_API_KEY"}, config={"temprature": 0.1})
    with pytest.raises(UnsupportedParameterError, match="openai row.*temprature"):
        ProviderRegistry().build(row, environ={"OPENAI_API_KEY": "k"})


def test_bedrock_builds_with_region_credentials_and_endpoint() -> None:
    """bedrock builds ChatBedrockConverse with region, credentials and endpoint from the row."""
    row = config(
        "bedrock",
        "anthropic.claude-3-sonnet-20240229-v1:0",
        auth_meta={
            "region_name_env": "AWS_REGION",
            "aws_access_key_id_env": "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key_env": "AWS_SECRET_ACCESS_KEY",
        },
        config={"endpoint_url": "http://127.0.0.1:9", "temperature": 0.3},
    )
    env = {
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    model: Any = ProviderRegistry().build(row, environ=env)
    assert type(model).__name__ == "ChatBedrockConverse"
    assert model.model_id == "anthropic.claude-3-sonnet-20240229-v1:0"
    assert model.region_name == "eu-west-1"
    assert model.endpoint_url == "http://127.0.0.1:9"
    assert model.aws_access_key_id.get_secret_value() == "AKIDTEST"


@pytest.mark.xdist_group("vertexai")  # one worker imports the Google SDK
def test_vertexai_builds_with_project_and_location() -> None:
    """vertexai builds ChatVertexAI with the project from GOOGLE_CLOUD_PROJECT."""
    row = config(
        "google_vertexai",
        "gemini-1.5-pro",
        auth_meta={"project_env": "GOOGLE_CLOUD_PROJECT"},
        config={"location": "europe-west4", "temperature": 0},
    )
    model: Any = ProviderRegistry().build(row, environ={"GOOGLE_CLOUD_PROJECT": "my-project"})
    assert type(model).__name__ == "ChatVertexAI"
    assert (model.project, model.location, model.model_name) == (
        "my-project",
        "europe-west4",
        "gemini-1.5-pro",
    )
    assert model.max_retries == 0


def test_fireworks_and_azure_build_their_clients() -> None:
    """fireworks and azure_openai build their LangChain classes from the seed's variables."""
    registry = ProviderRegistry()
    fw: Any = registry.build(
        config(
            "fireworks",
            "accounts/fireworks/models/llama-v3",
            auth_meta={"api_key_env": "FIREWORKS_API_KEY"},
        ),
        environ={"FIREWORKS_API_KEY": "fw"},
    )
    assert type(fw).__name__ == "ChatFireworks"
    azure_row = config(
        "azure_openai",
        "gpt-4",
        auth_meta={
            "api_key_env": "AZURE_OPENAI_API_KEY",
            "azure_endpoint_env": "AZURE_OPENAI_API_BASE",
            "azure_deployment_env": "AZURE_OPENAI_DEPLOYMENT_NAME",
            "api_version_env": "AZURE_OPENAI_API_VERSION",
        },
    )
    env = {
        "AZURE_OPENAI_API_KEY": "k",
        "AZURE_OPENAI_API_BASE": "https://x.example",
        "AZURE_OPENAI_DEPLOYMENT_NAME": "prod-gpt4",
        "AZURE_OPENAI_API_VERSION": "2024-02-01",
    }
    az: Any = registry.build(azure_row, environ=env)
    assert (az.deployment_name, az.openai_api_version) == ("prod-gpt4", "2024-02-01")


def test_every_builtin_reports_extra_and_capabilities() -> None:
    """Each built-in names its extra (fake needs none) and its capabilities."""
    registry = ProviderRegistry()
    for name in BUILTIN_NAMES - {"fake"}:
        provider = registry.get(name)
        assert provider.extra == name
        assert "streaming" in provider.capabilities
    assert isinstance(registry.build(config("fake")), BaseChatModel)


def test_import_llmpool_loads_no_provider_and_no_database() -> None:
    """import llmpool loads no partner package, no SQL dialect, and scans no entry points."""
    code = (
        "import sys, llmpool; llmpool.get_llm; llmpool.LLMConfig;"
        "bad = [m for m in sys.modules if m.startswith(('langchain_openai', 'langchain_anthropic',"
        " 'sqlalchemy.dialects', 'psycopg'))];"
        "providers = sys.modules.get('llmpool.providers');"
        "bad += ['registry scanned'] if providers and providers._registry is not None else [];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_importing_the_usage_guides_functions_loads_no_pydantic_sqlalchemy_or_langchain() -> None:
    """from llmpool import get_llm_with_fallback defers every heavy import to the first call."""
    code = (
        "import sys; from llmpool import get_llm, get_llm_with_fallback, get_llms_from_db;"
        "print([m for m in ('pydantic', 'sqlalchemy', 'langchain_core') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_auth_reference_the_client_does_not_take_names_the_auth_meta_key() -> None:
    """A resolved auth_meta key the client has no parameter for is refused under its row name."""
    from llmpool.providers.allowlist import EnvAllowlist

    row = config("ollama", auth_meta={"api_key_env": "MYCO_KEY"})
    with pytest.raises(UnsupportedParameterError, match=r"auth_meta\.api_key_env.*ChatOllama"):
        ProviderRegistry().build(
            row, allowlist=EnvAllowlist().extend("MYCO_KEY"), environ={"MYCO_KEY": "k"}
        )


def test_a_field_given_under_alias_and_name_counts_once_config_winning() -> None:
    """config's deployment_name beats the row's model name for Azure's azure_deployment alias."""
    row = config(
        "azure",
        "gpt-4",
        auth_meta={"api_key_env": "AZURE_OPENAI_API_KEY"},
        config={
            "deployment_name": "prod",
            "azure_endpoint": "https://x.example",
            "api_version": "1",
        },
    )
    model: Any = ProviderRegistry().build(row, environ={"AZURE_OPENAI_API_KEY": "k"})
    assert model.deployment_name == "prod"


def test_refused_value_names_the_field_never_the_value() -> None:
    """A value of the wrong type is refused naming the field, without echoing the input."""
    row = config(
        "openai", auth_meta={"api_key_env": "OPENAI_API_KEY"}, config={"temperature": "hot"}
    )
    with pytest.raises(UnsupportedParameterError, match="temperature") as info:
        ProviderRegistry().build(row, environ={"OPENAI_API_KEY": "sk-never-shown"})
    assert "hot" not in str(info.value)
    assert "sk-never-shown" not in str(info.value)


def test_ollama_timeout_reaches_its_http_client() -> None:
    """ChatOllama has no timeout field: a row's timeout goes to its HTTP client."""
    model: Any = ProviderRegistry().build(config("ollama", "llama3", config={"timeout": 3}))
    assert model.client_kwargs == {"timeout": 3}
    assert model._client._client.timeout.read == 3


def test_bedrock_sdk_retries_are_off_and_timeout_is_whole_seconds() -> None:
    """Bedrock's botocore config gets max_attempts 0 and the row's timeout rounded up."""
    row = config(
        "bedrock",
        "anthropic.claude-3-sonnet-20240229-v1:0",
        auth_meta={"region_env": "AWS_REGION"},
        config={"timeout": 2.5, "endpoint_url": "http://127.0.0.1:9"},
    )
    model: Any = ProviderRegistry().build(row, environ={"AWS_REGION": "us-east-1"})
    effective = model._get_effective_config()
    assert effective.retries == {"max_attempts": 0}
    assert (effective.read_timeout, effective.connect_timeout) == (3, 3)


@pytest.mark.parametrize(
    ("provider", "auth", "read_timeout"),
    [
        ("openai", {"api_key_env": "OPENAI_API_KEY"}, lambda m: m.request_timeout),
        ("anthropic", {"api_key_env": "ANTHROPIC_API_KEY"}, lambda m: m.default_request_timeout),
        ("fireworks", {"api_key_env": "FIREWORKS_API_KEY"}, lambda m: m.request_timeout),
        ("ollama", {}, lambda m: m._client._client.timeout.read),
        ("bedrock", {"region_env": "AWS_REGION"}, lambda m: m._get_effective_config().read_timeout),
    ],
)
def test_a_row_without_timeout_gets_the_default_not_the_sdks_ten_minutes(
    provider: str, auth: dict[str, str], read_timeout: Any
) -> None:
    """Each request is bounded by DEFAULT_TIMEOUT unless the row sets its own timeout."""
    from llmpool.providers import DEFAULT_TIMEOUT

    environ = {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k", "FIREWORKS_API_KEY": "k"}
    environ["AWS_REGION"] = "us-east-1"
    registry = ProviderRegistry()
    model: Any = registry.build(config(provider, auth_meta=auth), environ=environ)
    assert read_timeout(model) == DEFAULT_TIMEOUT
    row = config(provider, auth_meta=auth, config={"timeout": 5})
    assert read_timeout(registry.build(row, environ=environ)) == 5


def test_a_provider_registered_under_a_mixed_case_name_is_found() -> None:
    """register() files a provider under its canonical name, so 'MyProv' finds it."""
    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("MyProv", lambda c, a: FakeChatModel()))
    assert registry.get("MyProv").name == "MyProv"
    assert "my-prov" not in registry
    assert "myprov" in registry


def test_provider_names_ignore_case_and_hyphens() -> None:
    """'Azure-OpenAI' and 'azure_openai' name the same provider."""
    assert ProviderRegistry().get("Azure-OpenAI").name == "azure_openai"


def test_looking_up_a_broken_plugin_says_it_failed_to_load() -> None:
    """A row naming a plugin that failed to import gets the load error, not 'unknown'."""
    from llmpool.errors import ProviderLoadError

    broken = EntryPoint("broken", "llmpool_no_such_module:PROVIDER", "llmpool.providers")
    registry = ProviderRegistry(entry_points=[broken])
    with pytest.raises(ProviderLoadError, match='failed to load.*"broken"') as info:
        registry.get("broken")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_a_plugin_cannot_shadow_a_provider_of_another_distribution() -> None:
    """The first provider of a name stays; a second one is reported as a load error."""
    first = EntryPoint("fake", "llmpool.providers.builtin:FAKE", "llmpool.providers")
    second = EntryPoint("fake", "llmpool.providers.builtin:OPENAI", "llmpool.providers")
    registry = ProviderRegistry(entry_points=[first, second])
    assert registry.get("fake").name == "fake"
    [error] = registry.load_errors
    assert "already provided" in str(error)


def test_set_registry_replaces_at_once_and_restores_as_a_context_manager() -> None:
    """set_registry works as a plain call (reset with None) and as a restoring block."""
    before = get_registry()
    mine = ProviderRegistry(entry_points=[])
    try:
        set_registry(mine)
        assert get_registry() is mine
    finally:
        set_registry(before)
    with set_registry(None):
        assert get_registry() is not before  # a fresh registry, discovered anew
    assert get_registry() is before


def test_builtins_declare_their_variables_and_together_make_the_default_list() -> None:
    """Each built-in declares its credentials and plain settings; their union is the old list."""
    from llmpool.providers import declared_env
    from llmpool.providers.builtin import BEDROCK, BUILTINS, OPENAI

    union: set[str] = set()
    for provider in BUILTINS:
        secret, plain = declared_env(provider)
        assert not secret & plain
        union |= secret | plain
    assert union == {
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_BASE_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AZURE_OPENAI_API_BASE",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_API_VERSION",
        "AZURE_OPENAI_DEPLOYMENT_NAME",
        "AZURE_OPENAI_ENDPOINT",
        "FIREWORKS_API_KEY",
        "GOOGLE_CLOUD_LOCATION",
        "GOOGLE_CLOUD_PROJECT",
        "OLLAMA_BASE_URL",
        "OPENAI_API_BASE",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORGANIZATION",
    }
    assert declared_env(OPENAI) == (
        {"OPENAI_API_KEY"},
        {"OPENAI_API_BASE", "OPENAI_BASE_URL", "OPENAI_ORGANIZATION"},
    )
    assert "AWS_SECRET_ACCESS_KEY" in declared_env(BEDROCK)[0]


def test_a_plugin_without_declarations_declares_nothing() -> None:
    """A provider object without secret_env/plain_env (or with a bare string) declares nothing."""
    from llmpool.providers import declared_env

    class Bare:
        name = "bare"
        secret_env = "OPENAI_API_KEY"  # a string, not a set: not read letter by letter

    assert declared_env(Bare()) == (frozenset(), frozenset())
    assert declared_env(FactoryProvider("f", lambda c, a: FakeChatModel())) == (
        frozenset(),
        frozenset(),
    )


@pytest.mark.parametrize(
    ("variable", "operator"),
    [("OPENAI_API_KEY", ""), ("MYCO_ORG_SECRET", "MYCO_ORG_SECRET")],
)
def test_a_secret_bound_to_a_plain_parameter_is_refused(variable: str, operator: str) -> None:
    """organization_env: OPENAI_API_KEY would put the key in repr: refused, naming all four."""
    from llmpool.errors import EnvNotAllowedError
    from llmpool.providers.allowlist import EnvAllowlist

    row = config(
        "openai",
        "gpt-4",
        auth_meta={"api_key_env": "OPENAI_API_KEY", "organization_env": variable},
    )
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": operator})
    environ = {"OPENAI_API_KEY": "sk-never-shown-1", variable: "sk-never-shown-2"}
    with pytest.raises(EnvNotAllowedError) as info:
        ProviderRegistry().build(row, allowlist=allow, environ=environ)
    text = str(info.value)
    assert info.value.field == "auth_meta.organization_env"
    for part in ("openai row", "row-1", "auth_meta.organization_env", variable, "organization"):
        assert part in text
    assert "sk-never-shown" not in text


def test_an_operator_variable_marked_plain_reaches_a_plain_parameter() -> None:
    """MYCO_ORG:plain may fill organization; the key still goes to the secret api_key."""
    from llmpool.providers.allowlist import EnvAllowlist

    row = config(
        "openai",
        "gpt-4",
        auth_meta={"api_key_env": "OPENAI_API_KEY", "organization_env": "MYCO_ORG"},
    )
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_ORG:plain"})
    environ = {"OPENAI_API_KEY": "sk-secret-key-0001", "MYCO_ORG": "org-myco"}
    model: Any = ProviderRegistry().build(row, allowlist=allow, environ=environ)
    assert model.openai_organization == "org-myco"
    assert "sk-secret-key-0001" not in repr(model)


@pytest.mark.parametrize(
    ("provider", "auth", "values", "read_timeout"),
    [
        (
            "openai",
            {"api_key_env": "OPENAI_API_KEY"},
            {"timeout": None},
            lambda m: m.request_timeout,
        ),
        (
            "openai",
            {"api_key_env": "OPENAI_API_KEY"},
            {"request_timeout": None},
            lambda m: m.request_timeout,
        ),
        (
            "anthropic",
            {"api_key_env": "ANTHROPIC_API_KEY"},
            {"default_request_timeout": None},
            lambda m: m.default_request_timeout,
        ),
        ("ollama", {}, {"timeout": None}, lambda m: m._client._client.timeout.read),
        (
            "ollama",
            {},
            {"client_kwargs": {"timeout": None}},
            lambda m: m._client._client.timeout.read,
        ),
    ],
)
def test_a_null_timeout_keeps_the_default(
    provider: str, auth: dict[str, str], values: dict[str, Any], read_timeout: Any
) -> None:
    """timeout: null in a row leaves DEFAULT_TIMEOUT in place; it never means "wait forever"."""
    from llmpool.providers import DEFAULT_TIMEOUT

    environ = {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"}
    model: Any = ProviderRegistry().build(
        config(provider, auth_meta=auth, config=values), environ=environ
    )
    assert read_timeout(model) == DEFAULT_TIMEOUT
