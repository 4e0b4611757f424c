"""Credentials: references resolved from the environment and secret files, within an allowlist."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import row
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from llmpool.credentials import DEFAULT_ALLOWED_ENV, EnvAllowlist, resolve_auth
from llmpool.errors import EnvNotAllowedError, MissingSecretError
from llmpool.models import LLMConfig
from llmpool.providers import ProviderRegistry

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


def test_default_allowlist_covers_the_seed_variables() -> None:
    """Every variable of the usage guide's list is allowed by default."""
    assert SEED_VARIABLES <= DEFAULT_ALLOWED_ENV
    allow = EnvAllowlist.from_env({})
    assert all(allow.allows(name) for name in SEED_VARIABLES)


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
