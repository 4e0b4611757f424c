"""Credentials: references resolved from the environment and secret files, within an allowlist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import row
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from llmpool.errors import EnvNotAllowedError, MissingSecretError
from llmpool.models import LLMConfig
from llmpool.providers import ProviderRegistry, declared_env
from llmpool.providers.allowlist import EnvAllowlist, resolve_auth
from llmpool.providers.builtin import BUILTINS

SEED_VARIABLES = {
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_API_BASE",
    "AZURE_OPENAI_DEPLOYMENT_NAME",
    "AZURE_OPENAI_API_VERSION",
    "ANTHROPIC_API_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "GOOGLE_CLOUD_PROJECT",
    "FIREWORKS_API_KEY",
    "OLLAMA_BASE_URL",
    "OPENAI_API_BASE",
}


#: Every variable a built-in provider declares: what rows may reference by default.
DEFAULT_ALLOWED_ENV = frozenset().union(*(s | p for s, p in map(declared_env, BUILTINS)))

ROW = {"id": "id-7", "name": "GPT-4", "provider": "openai", "model_name": "gpt-4"}


def config(auth_meta: dict[str, Any], **values: Any) -> LLMConfig:
    """An openai row with the given auth_meta."""
    return LLMConfig(
        id="id-7",
        name="GPT-4",
        provider="openai",
        model_name="gpt-4",
        auth_meta=auth_meta,
        **values,
    )


def test_env_reference_resolves_and_drops_the_suffix() -> None:
    """api_key_env -> api_key (a SecretStr); base_url_env -> base_url (plain)."""
    auth = resolve_auth(
        config({"api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_API_BASE"}),
        environ={"OPENAI_API_KEY": "sk-1", "OPENAI_API_BASE": "https://api.example/v1"},
    )
    assert isinstance(auth["api_key"], SecretStr)
    assert auth["api_key"].get_secret_value() == "sk-1"
    assert auth["base_url"] == "https://api.example/v1"


def test_missing_variable_names_variable_and_row_never_a_value() -> None:
    """A missing variable raises MissingSecretError naming it and the row."""
    with pytest.raises(MissingSecretError) as info:
        resolve_auth(config({"api_key_env": "OPENAI_API_KEY"}), environ={})
    assert info.value.variable == "OPENAI_API_KEY"
    assert "GPT-4" in str(info.value)
    assert "id-7" in str(info.value)


SEED_PROVIDERS = {
    "OPENAI_API_KEY": "openai",
    "OPENAI_API_BASE": "openai",
    "AZURE_OPENAI_API_KEY": "azure_openai",
    "AZURE_OPENAI_API_BASE": "azure_openai",
    "AZURE_OPENAI_DEPLOYMENT_NAME": "azure_openai",
    "AZURE_OPENAI_API_VERSION": "azure_openai",
    "ANTHROPIC_API_KEY": "anthropic",
    "AWS_ACCESS_KEY_ID": "bedrock",
    "AWS_SECRET_ACCESS_KEY": "bedrock",
    "AWS_REGION": "bedrock",
    "GOOGLE_CLOUD_PROJECT": "vertexai",
    "FIREWORKS_API_KEY": "fireworks",
    "OLLAMA_BASE_URL": "ollama",
}


def test_default_allowlist_covers_the_seed_variables_for_their_own_provider() -> None:
    """Every variable of the usage guide's list is allowed by default to its provider's rows."""
    assert SEED_VARIABLES <= DEFAULT_ALLOWED_ENV
    assert set(SEED_PROVIDERS) == SEED_VARIABLES
    allow = EnvAllowlist.from_env({})
    for name, provider in SEED_PROVIDERS.items():
        assert allow.allows(name, provider=provider), name


@pytest.mark.parametrize(
    ("provider", "variable"),
    [
        ("openai", "AWS_SECRET_ACCESS_KEY"),
        ("openai", "AWS_SESSION_TOKEN"),
        ("openai", "ANTHROPIC_API_KEY"),
        ("anthropic", "OPENAI_API_KEY"),
        ("ollama", "OPENAI_API_KEY"),
        ("fake", "OPENAI_API_KEY"),
        ("no_such_provider", "OPENAI_API_KEY"),
    ],
)
def test_a_row_may_not_reference_another_providers_variables(provider: str, variable: str) -> None:
    """An openai row cannot read the AWS secret key; an unknown provider gets the operator's."""
    row_config = LLMConfig(
        id="id-7",
        name="Row",
        provider=provider,
        model_name="m",
        auth_meta={"api_key_env": variable},
    )
    allow = EnvAllowlist.from_env({})
    assert not allow.allows(variable, provider=provider)
    with pytest.raises(EnvNotAllowedError, match=variable) as info:
        resolve_auth(row_config, allowlist=allow, environ={variable: "value-of-the-secret"})
    assert info.value.field == "auth_meta.api_key_env"
    assert repr(provider) in str(info.value)
    operator = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": variable})
    assert operator.allows(variable, provider=provider)


def test_a_provider_cannot_declare_the_database_url_or_llmpools_variables() -> None:
    """DATABASE_URL and LLMPOOL_* stay refused even when a plugin declares them."""
    from llmpool.providers import FactoryProvider

    greedy = FactoryProvider(
        "greedy",
        lambda config, auth: None,  # type: ignore[arg-type,return-value]
        secret_env=frozenset({"DATABASE_URL", "LLMPOOL_DATABASE_URL", "GREEDY_KEY"}),
    )
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "DATABASE_URL LLMPOOL_*"})
    assert allow.allows("GREEDY_KEY", provider=greedy)
    assert not allow.allows("DATABASE_URL", provider=greedy)
    assert not allow.allows("LLMPOOL_DATABASE_URL", provider=greedy)


@pytest.mark.parametrize("variable", ["DATABASE_URL", "LLMPOOL_DATABASE_URL", "HOME"])
def test_reference_outside_the_allowlist_is_refused_at_build(variable: str) -> None:
    """A row pointing api_key_env at DATABASE_URL is refused, naming row, field and variable."""
    row_config = config({"api_key_env": variable})
    with pytest.raises(EnvNotAllowedError) as info:
        ProviderRegistry().build(row_config, environ={variable: "postgresql://u:pw@db/app"})
    assert info.value.field == "auth_meta.api_key_env"
    assert variable in str(info.value)
    assert "GPT-4" in str(info.value)
    assert "pw@db" not in str(info.value)


def test_reference_outside_the_allowlist_is_refused_on_write(store: Any) -> None:
    """A store with the allowlist as validator refuses the write; nothing is stored."""
    store.validators = (EnvAllowlist.from_env({}),)
    with pytest.raises(EnvNotAllowedError, match="DATABASE_URL"):
        store.add(row(auth_meta={"api_key_env": "DATABASE_URL"}))
    assert store.list_llms() == []
    added = store.add(row())
    with pytest.raises(EnvNotAllowedError):
        store.update(added.id, {"auth_meta": {"api_key_env": "SECRET_SAUCE"}})


def test_allowlist_is_extended_by_code_and_environment_never_for_database_url() -> None:
    """LLMPOOL_ALLOWED_ENV and extend() add names and patterns; DATABASE_URL stays banned."""
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY, TEAM_* DATABASE_URL"})
    assert allow.allows("MYCO_KEY")
    assert allow.allows("TEAM_ANTHROPIC")
    assert not allow.allows("DATABASE_URL")
    assert not allow.allows("LLMPOOL_ALLOWED_ENV")
    assert EnvAllowlist.from_env({}).extend("OTHER").allows("OTHER")


def test_secret_file_reference_reads_an_allowed_directory(tmp_path: Path) -> None:
    """api_key_file reads a Docker/Kubernetes secret file inside an allowed directory."""
    secret = tmp_path / "openai_key"
    secret.write_text("sk-from-file\n")
    allow = EnvAllowlist.from_env({"LLMPOOL_SECRET_DIRS": str(tmp_path)})
    auth = resolve_auth(config({"api_key_file": str(secret)}), allowlist=allow, environ={})
    assert auth["api_key"].get_secret_value() == "sk-from-file"
    with pytest.raises(MissingSecretError, match="missing_key"):
        resolve_auth(
            config({"api_key_file": str(tmp_path / "missing_key")}), allowlist=allow, environ={}
        )


def test_secret_file_outside_the_allowed_directories_is_refused(tmp_path: Path) -> None:
    """A _file reference may not point anywhere on the machine."""
    target = tmp_path / "etc-passwd-like"
    target.write_text("root:x:0:0")
    with pytest.raises(EnvNotAllowedError, match="secret directories"):
        resolve_auth(config({"api_key_file": str(target)}), environ={})


def test_langchain_secret_dict_in_config_stays_plain_data() -> None:
    """{"lc": 1, "type": "secret", ...} in config is data, never resolved from the environment."""
    lc_secret = {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]}
    row_config = LLMConfig(
        id="f",
        name="Fake",
        provider="fake",
        model_name="echo",
        config={"responses": ["ok"], "metadata": {"key": lc_secret}},
    )
    model: Any = ProviderRegistry().build(row_config, environ={"OPENAI_API_KEY": "sk-real"})
    assert model.metadata["key"] == lc_secret
    assert "sk-real" not in repr(model)


@given(st.text(max_size=30))
def test_plain_auth_keys_with_secret_names_are_always_refused(value: str) -> None:
    """Any literal value under a secret-looking key is refused; the message never depends on it."""
    from llmpool.errors import LiteralSecretError

    def message(literal: str, key: str) -> str:
        with pytest.raises(LiteralSecretError) as info:
            LLMConfig.from_row(
                {
                    "id": "1",
                    "name": "n",
                    "provider": "openai",
                    "model_name": "m",
                    "auth_meta": {key: literal},
                }
            )
        return str(info.value)

    for key in ("api_key", "token", "client_secret", "password", "aws_secret_access_key"):
        assert message(value, key) == message("placeholder", key)


SECRET_VALUES = st.one_of(
    st.from_regex(r"\Ask-proj-[A-Za-z0-9_-]{16,48}\Z"),
    st.from_regex(r"\Aghp_[A-Za-z0-9]{36}\Z"),
    st.from_regex(r"\AAKIA[A-Z0-9]{16}\Z"),
    st.from_regex(r"\A[A-Za-z0-9+/]{30,40}\Z").filter(lambda v: "/" in v or "+" in v),
)


@given(SECRET_VALUES)
def test_secret_pasted_into_a_reference_is_refused_and_never_echoed(secret: str) -> None:
    """{"api_key_env": "sk-proj-..."}: refused as a secret, the message the same for any value."""
    from llmpool.errors import LiteralSecretError

    def refusal(value: str) -> str:
        with pytest.raises(LiteralSecretError) as info:
            LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": value}})
        assert info.value.field == "auth_meta.api_key_env"
        with pytest.raises(ValidationError) as direct:  # the constructor's own error
            config({"api_key_env": value})
        assert value not in str(direct.value)
        return str(info.value)

    text = refusal(secret)
    assert secret not in text
    assert "must name an environment variable" in text
    assert "looks like a secret" in text
    assert text == refusal("sk-proj-placeholder-value-0000")


@given(st.builds("{} {}".format, st.text(max_size=15), st.text(max_size=15)))
def test_reference_that_is_not_a_name_is_refused_without_echo(value: str) -> None:
    """Any non-name in a *_env reference gets one fixed message that never repeats the value."""
    from llmpool.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError) as info:
        LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": value}})
    with pytest.raises(InvalidConfigError) as fixed:
        LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": "not a name"}})
    assert str(info.value) == str(fixed.value)


def test_seed_and_allowlist_variable_names_never_look_like_secrets() -> None:
    """Every variable the allowlist admits is a valid reference, not mistaken for a secret."""
    for name in DEFAULT_ALLOWED_ENV | SEED_VARIABLES:
        assert config({"api_key_env": name}).auth_meta == {"api_key_env": name}


def test_endpoint_outside_allowed_prefixes_is_refused_on_write_and_at_build(store: Any) -> None:
    """With LLMPOOL_ALLOWED_ENDPOINTS set, a row cannot send an allowed key to its own server."""
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENDPOINTS": "https://api.openai.com/"})
    store.validators = (allow,)
    evil = row(
        auth_meta={"api_key_env": "OPENAI_API_KEY"},
        config={"base_url": "https://collector.evil.example/v1"},
    )
    with pytest.raises(EnvNotAllowedError, match="collector.evil.example") as info:
        store.add(evil)
    assert info.value.field == "config.base_url"
    assert store.list_llms() == []
    good = store.add(row(config={"base_url": "https://api.openai.com/v1"}))
    assert good.config["base_url"] == "https://api.openai.com/v1"
    with pytest.raises(EnvNotAllowedError, match=r"auth_meta\.azure_endpoint"):
        ProviderRegistry().build(
            config({"api_key_env": "OPENAI_API_KEY", "azure_endpoint": "https://x.example"}),
            allowlist=allow,
            environ={"OPENAI_API_KEY": "sk"},
        )


def test_endpoints_are_unrestricted_by_default_and_referenced_ones_trusted() -> None:
    """Without prefixes any endpoint passes; a base_url read from an allowed variable is kept."""
    assert EnvAllowlist.from_env({}).allows_endpoint("http://127.0.0.1:1234/v1")
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENDPOINTS": "https://api.openai.com/"})
    auth = resolve_auth(
        config({"api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_API_BASE"}),
        allowlist=allow,
        environ={"OPENAI_API_KEY": "sk", "OPENAI_API_BASE": "http://proxy.internal/v1"},
    )
    assert auth["base_url"] == "http://proxy.internal/v1"


def test_default_secret_directories_are_llmpools_own() -> None:
    """Other Docker secrets and the Kubernetes service-account token are outside the defaults."""
    allow = EnvAllowlist.from_env({})
    assert allow.allows_file("/run/secrets/llmpool/openai_api_key")
    assert allow.allows_file("/var/run/secrets/llmpool/openai_api_key")
    assert not allow.allows_file("/run/secrets/db_password")
    assert not allow.allows_file("/run/secrets/llmpool-other/key")
    assert not allow.allows_file("/var/run/secrets/kubernetes.io/serviceaccount/token")
    assert not allow.allows_file("/run/secrets/llmpool/../db_password")
    extended = EnvAllowlist.from_env({"LLMPOOL_SECRET_DIRS": "/run/secrets"})
    assert extended.allows_file("/run/secrets/db_password")


def test_operator_variables_are_secrets_unless_marked_plain() -> None:
    """LLMPOOL_ALLOWED_ENV="MYCO_KEY MYCO_BASE_URL:plain": the key a SecretStr, the URL plain."""
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY, MYCO_BASE_URL:plain TEAM_*"})
    assert allow.kind("MYCO_KEY") == "secret"
    assert allow.kind("MYCO_BASE_URL") == "plain"
    assert allow.kind("TEAM_ANYTHING") == "secret"
    assert EnvAllowlist().extend("MYCO_REGION", plain=["MYCO_ZONE"]).kind("MYCO_ZONE") == "plain"
    assert EnvAllowlist().extend("MYCO_REGION:plain").kind("MYCO_REGION") == "plain"
    row_config = LLMConfig(
        id="id-7",
        name="Plugin row",
        provider="no_such_provider",
        model_name="m",
        auth_meta={"organization_env": "MYCO_KEY", "base_url_env": "MYCO_BASE_URL"},
    )
    environ = {"MYCO_KEY": "myco-secret-value-1234", "MYCO_BASE_URL": "http://myco.internal/v1"}
    auth = resolve_auth(row_config, allowlist=allow, environ=environ)
    assert isinstance(auth["organization"], SecretStr)  # the variable decides, not the key
    assert auth["base_url"] == "http://myco.internal/v1"
    with pytest.raises(ValueError, match="NAME:plain"):
        EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY:public"})


def test_a_provider_declared_plain_setting_resolves_as_plain_text() -> None:
    """A built-in's plain settings (region, base URL) stay plain; its credentials are secrets."""
    row_config = LLMConfig(
        id="b",
        name="Bedrock",
        provider="bedrock",
        model_name="m",
        auth_meta={"region_env": "AWS_REGION", "aws_session_token_env": "AWS_SESSION_TOKEN"},
    )
    environ = {"AWS_REGION": "eu-west-1", "AWS_SESSION_TOKEN": "session-token-value"}
    auth = resolve_auth(row_config, environ=environ)
    assert auth["region"] == "eu-west-1"
    assert isinstance(auth["aws_session_token"], SecretStr)


def test_every_resolved_secret_is_redacted_from_llmpools_texts() -> None:
    """resolve_auth remembers each secret value, so describe_error and the CLI mask it."""
    from llmpool.credentials.redaction import redact

    value = "sk-remembered-by-resolve-auth-0c1d"
    resolve_auth(config({"api_key_env": "OPENAI_API_KEY"}), environ={"OPENAI_API_KEY": value})
    assert value not in redact(f"Incorrect API key provided: {value}")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.openai.com/v1", True),
        ("https://API.OpenAI.com./v1/", True),
        ("https://api.openai.com:443/v1/chat/completions", True),
        ("https://api.openai.com/v1/../v1/x", True),
        ("https://api.openai.com.evil.example/v1", False),
        ("https://api.openai.com:8443/v1", False),
        ("http://api.openai.com/v1", False),
        ("https://api.openai.com/v1evil", False),
        ("https://api.openai.com/v2", False),
        ("https://api.openai.com/v1/../v2", False),
        ("https://api.openai.com/v1/%2e%2e/v2", False),
        ("https://api.openai.com@evil.example/v1", False),
        ("https://api.openai.com\\@evil.example/v1", False),
        ("https://user:pw@api.openai.com/v1", False),
        ("https://evil.example/?https://api.openai.com/v1", False),
        ("api.openai.com/v1", True),
        ("http://localhost:8080/", True),
        ("http://localhost:80800/", False),
        ("http://localhost/", False),
    ],
)
def test_allowed_endpoints_compare_scheme_host_port_and_path_segments(
    url: str, allowed: bool
) -> None:
    """A URL passes only on the same scheme, host and port, under the path, on segment bounds."""
    allow = EnvAllowlist.from_env(
        {"LLMPOOL_ALLOWED_ENDPOINTS": "https://api.openai.com/v1 http://localhost:8080"}
    )
    assert allow.allows_endpoint(url) is allowed


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"config": {"openai_proxy": "http://collector.evil.example:3128"}}, "config.openai_proxy"),
        (
            {"config": {"client_kwargs": {"proxy": "http://collector.evil.example"}}},
            "config.client_kwargs.proxy",
        ),
        (
            {"config": {"model_kwargs": {"mirrors": ["https://collector.evil.example/v1"]}}},
            "config.model_kwargs.mirrors[0]",
        ),
        ({"config": {"base_url": "collector.evil.example/v1"}}, "config.base_url"),
        (
            {"auth_meta": {"azure_openai_api_base": "https://collector.evil.example"}},
            "auth_meta.azure_openai_api_base",
        ),
        ({"auth_meta": {"host": "collector.evil.example:11434"}}, "auth_meta.host"),
    ],
)
def test_every_endpoint_a_row_writes_is_checked(
    values: dict[str, Any], field: str, store: Any
) -> None:
    """Proxies, nested URLs, schemeless hosts and Azure's api base are all endpoints."""
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENDPOINTS": "https://api.openai.com/v1"})
    store.validators = (allow,)
    with pytest.raises(EnvNotAllowedError, match="collector.evil.example") as info:
        store.add(row(**values))
    assert info.value.field == field
    assert store.list_llms() == []


def test_header_values_and_settings_are_not_endpoints() -> None:
    """An HTTP-Referer header and a Bedrock base_model are not where requests go."""
    from llmpool.credentials.endpoints import literal_endpoints

    row_config = LLMConfig(
        id="1",
        name="x",
        provider="bedrock",
        model_name="m",
        config={
            "default_headers": {"HTTP-Referer": "https://myapp.example", "X-Title": "app"},
            "base_model": "anthropic.claude-3-sonnet",
            "endpoint_version": "v1",
        },
    )
    assert literal_endpoints(row_config) == []
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENDPOINTS": "https://api.openai.com/v1"})
    allow(row_config)


def test_user_info_in_an_endpoint_is_refused_without_an_allowlist() -> None:
    """user@host hides the real host: refused whether or not endpoints are configured."""
    allow = EnvAllowlist.from_env({})
    assert not allow.allows_endpoint("http://localhost@127.0.0.1:8080/v1")
    assert not allow.allows_endpoint("localhost@127.0.0.1:8080")
    with pytest.raises(EnvNotAllowedError, match="user info"):
        allow(LLMConfig(**ROW, auth_meta={"host": "api.openai.com@collector.evil.example"}))


@pytest.mark.parametrize(
    "auth_meta",
    [
        {"api_key_env": "MYCO_KEY"},
        {"api_key_file": "/run/secrets/llmpool/openai_api_key"},
    ],
)
def test_without_allowed_endpoints_a_foreign_credential_cannot_go_to_a_literal_endpoint(
    auth_meta: dict[str, str], store: Any
) -> None:
    """An operator's key or a secret file sent to a row's own base_url needs allowed endpoints."""
    allow = EnvAllowlist.from_env({"LLMPOOL_ALLOWED_ENV": "MYCO_KEY"})
    store.validators = (allow,)
    values = row(auth_meta=auth_meta, config={"base_url": "http://collector.evil.example/v1"})
    with pytest.raises(EnvNotAllowedError, match="LLMPOOL_ALLOWED_ENDPOINTS") as info:
        store.add(values)
    assert info.value.field == "config.base_url"
    assert store.list_llms() == []
    with pytest.raises(EnvNotAllowedError, match="LLMPOOL_ALLOWED_ENDPOINTS"):
        resolve_auth(
            LLMConfig(**{**ROW, "auth_meta": auth_meta, "config": values["config"]}),
            allowlist=allow,
            environ={"MYCO_KEY": "myco-secret-value"},
        )
    # the provider's own key, or no literal endpoint, or an allowed one: accepted
    store.add(row(config={"base_url": "http://collector.evil.example/v1"}))
    store.add(row("Mine", auth_meta=auth_meta) | {"config": {}})
    with_endpoints = allow.extend(endpoints=["http://collector.evil.example/v1"])
    with_endpoints(LLMConfig(**{**ROW, "auth_meta": auth_meta, "config": values["config"]}))


@pytest.mark.parametrize("name", ["my_key_name", "OpenAiKey", "X" * 65])
def test_a_reference_that_is_not_a_conventional_name_is_never_echoed(name: str) -> None:
    """Only UPPER_CASE names up to 64 characters are repeated in messages."""
    refused = LLMConfig(**{**ROW, "auth_meta": {"api_key_env": name}})
    with pytest.raises(EnvNotAllowedError) as denied:
        resolve_auth(refused, environ={})
    assert name not in str(denied.value)
    allow = EnvAllowlist().extend(name)
    with pytest.raises(MissingSecretError) as missing:
        resolve_auth(refused, allowlist=allow, environ={})
    assert name not in str(missing.value)
    assert name not in missing.value.variable


def test_sql_store_checks_the_allowlist_by_default(migrated_url: str) -> None:
    """SQLStore(url) refuses a row referencing DATABASE_URL; validators=() turns that off."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    try:
        with pytest.raises(EnvNotAllowedError, match="DATABASE_URL"):
            store.add(row(auth_meta={"api_key_env": "DATABASE_URL"}))
        assert store.list_llms() == []
    finally:
        store.engine.dispose()
    unchecked = SQLStore(migrated_url, validators=())
    try:
        assert unchecked.add(row(auth_meta={"api_key_env": "DATABASE_URL"})).name == "GPT-4"
    finally:
        unchecked.engine.dispose()
