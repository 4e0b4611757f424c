"""Literal secrets in a row: which keys and URLs are refused, at any depth, never echoed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from llmpool.credentials.checks import (
    MAX_DEPTH,
    check_config,
    is_secret_name,
    looks_like_secret,
    shown_reference,
    url_credential,
)
from llmpool.errors import InvalidConfigError, LiteralSecretError
from llmpool.models import LLMConfig

SECRET = "sk-proj-Zq8xT3vK9mW2pL7nR4sJ"
ROW = {"id": "r-1", "name": "GPT-4", "provider": "openai", "model_name": "gpt-4"}

REFUSED_KEYS = [
    "api_key",
    "apiKey",
    "APIKey",
    "x-api-key",
    "openai_api_key",
    "Authorization",
    "proxy_authorization",
    "bearer",
    "bearer_token",
    "access_token",
    "token",
    "auth",
    "basic_auth",
    "private_key",
    "privateKey",
    "client_secret",
    "secret",
    "password",
    "db_passwd",
    "credential",
    "credentials",
    "aws_secret_access_key",
    "aws_access_key_id",
    "subscription_key",
    "Cookie",
    "x-goog-api-key",
    "Proxy-Authorization",
]
ACCEPTED_KEYS = [
    "max_tokens",
    "max_new_tokens",
    "maxTokens",
    "auth_meta",
    "auth_type",
    "timeout",
    "temperature",
    "top_k",
    "keep_alive",
    "prompt_cache_key",
    "tokenizer",
    "pad_token_id",
    "token_limit",
    "key",
    "metadata",
    "author",
    "api_version",
    "base_url",
    "model_kwargs",
    "stop",
    "credentials_profile_name",
    "credentials_path",
    "token_type",
    "default_headers",
    "X-Title",
]


@pytest.mark.parametrize("key", REFUSED_KEYS)
def test_secret_key_names_are_recognised(key: str) -> None:
    """Keys whose name says they hold a credential are secret names, in any case or style."""
    assert is_secret_name(key)


@pytest.mark.parametrize("key", ACCEPTED_KEYS)
def test_ordinary_parameter_names_are_not_secret_names(key: str) -> None:
    """Model parameters such as max_tokens, timeout, auth_meta and prompt_cache_key pass."""
    assert not is_secret_name(key)
    assert LLMConfig.from_row({**ROW, "config": {key: 1, "model_kwargs": {key: "x"}}})


@given(st.lists(st.sampled_from(ACCEPTED_KEYS), min_size=1, max_size=3), st.data())
def test_keys_joined_from_ordinary_words_stay_accepted(words: list[str], data: Any) -> None:
    """Any nesting of ordinary parameter names is accepted in config."""
    value: Any = data.draw(st.integers() | st.text(alphabet="abc xyz", max_size=10))
    for word in reversed(words):
        value = {word: value}
    assert LLMConfig.from_row({**ROW, "config": {"model_kwargs": value}})


@given(
    st.lists(st.sampled_from(ACCEPTED_KEYS), max_size=3),
    st.sampled_from(REFUSED_KEYS),
    st.text(min_size=1, max_size=20),
)
def test_a_secret_key_at_any_depth_of_config_is_refused_without_echo(
    path: list[str], key: str, value: str
) -> None:
    """A credential key nested anywhere under config is refused, naming its path, not its value."""
    nested: Any = {key: value + SECRET}
    for word in reversed(path):
        nested = {word: nested}
    with pytest.raises(LiteralSecretError) as info:
        LLMConfig.from_row({**ROW, "config": {"model_kwargs": nested}})
    assert info.value.field == ".".join(["config", "model_kwargs", *path, key])
    assert SECRET not in str(info.value)
    assert "GPT-4" in str(info.value)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"config": {"model_kwargs": {"api_key": SECRET}}}, "config.model_kwargs.api_key"),
        (
            {"config": {"model_kwargs": {"extra_headers": {"Authorization": f"Bearer {SECRET}"}}}},
            "config.model_kwargs.extra_headers.Authorization",
        ),
        ({"config": {"fallbacks": [{"api_key": SECRET}]}}, "config.fallbacks[0].api_key"),
        ({"auth_meta": {"Authorization": f"Bearer {SECRET}"}}, "auth_meta.Authorization"),
        ({"auth_meta": {"base_url": f"https://user:{SECRET}@host.example"}}, "auth_meta.base_url"),
        ({"config": {"base_url": f"https://user:{SECRET}@host.example/v1"}}, "config.base_url"),
        ({"config": {"base_url": f"https://host.example/v1?key={SECRET}"}}, "config.base_url"),
        (
            {"config": {"model_kwargs": {"url": f"https://h.example/?api_key={SECRET}"}}},
            "config.model_kwargs.url",
        ),
        ({"auth_meta": {"endpoint": f"https://h.example/?token={SECRET}"}}, "auth_meta.endpoint"),
        ({"config": {"base_url": f"https://{SECRET}@host.example/v1"}}, "config.base_url"),
        ({"config": {"model_kwargs": {"x": f"Bearer {SECRET}"}}}, "config.model_kwargs.x"),
        ({"auth_meta": {"api_key_env": SECRET}}, "auth_meta.api_key_env"),
        ({"auth_meta": {"api_key_file": SECRET}}, "auth_meta.api_key_file"),
    ],
)
def test_hidden_secrets_are_refused_naming_the_field_never_the_value(
    values: dict[str, Any], field: str
) -> None:
    """Nested keys, header values, URLs with credentials and pasted references are refused."""
    with pytest.raises(LiteralSecretError) as info:
        LLMConfig.from_row({**ROW, **values})
    assert info.value.field == field
    assert SECRET not in str(info.value)
    assert "GPT-4" in str(info.value) and "r-1" in str(info.value)
    with pytest.raises(ValidationError) as direct:  # the constructor's own error hides input too
        LLMConfig(**{**ROW, **values})
    assert SECRET not in str(direct.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://127.0.0.1:11434",
        "https://myco.openai.azure.com/?api-version=2024-06-01",
        "not a url",
        "http://[::1",
    ],
)
def test_urls_without_credentials_are_accepted(url: str) -> None:
    """Endpoints, query settings and a plain user name are not credentials."""
    assert url_credential(url) is None
    assert LLMConfig.from_row({**ROW, "config": {"base_url": url}, "auth_meta": {"host": url}})


def test_reference_messages_say_what_is_wrong() -> None:
    """A pasted key is called a secret value; a non-name is called that; both ask for a name."""
    with pytest.raises(LiteralSecretError, match="looks like a secret value"):
        LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": SECRET}})
    with pytest.raises(InvalidConfigError, match="value is not a name") as info:
        LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": "my key"}})
    assert not isinstance(info.value, LiteralSecretError)
    assert looks_like_secret("AKIAIOSFODNN7EXAMPLE")
    assert not looks_like_secret("AZURE_OPENAI_DEPLOYMENT_NAME")


def test_headers_are_checked_by_name_not_refused_wholesale() -> None:
    """default_headers may carry X-Title; an Authorization or x-api-key header is refused."""
    ok = {"default_headers": {"X-Title": "my app", "HTTP-Referer": "https://example.com"}}
    assert LLMConfig.from_row({**ROW, "config": ok})
    for header in ("Authorization", "x-api-key"):
        with pytest.raises(LiteralSecretError, match=f"config.default_headers.{header}"):
            LLMConfig.from_row({**ROW, "config": {"default_headers": {header: "v"}}})


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"config": {"default_headers": {"X-Custom": SECRET}}}, "config.default_headers.X-Custom"),
        (
            {"config": {"default_headers": {"X-Custom": f"key={SECRET}"}}},
            "config.default_headers.X-Custom",
        ),
        (
            {"config": {"model_kwargs": {"user": "AKIAIOSFODNN7EXAMPLE"}}},
            "config.model_kwargs.user",
        ),
        ({"config": {"metadata": {"note": JWT}}}, "config.metadata.note"),
        ({"config": {"stop": ["ok", SECRET]}}, "config.stop[1]"),
        ({"auth_meta": {"organization": SECRET}}, "auth_meta.organization"),
        ({"auth_meta": {"region": JWT}}, "auth_meta.region"),
    ],
)
def test_keys_and_tokens_under_neutral_keys_are_refused_without_echo(
    values: dict[str, Any], field: str
) -> None:
    """An API key, AWS key id or JWT is refused wherever it sits in config or plain auth_meta."""
    with pytest.raises(LiteralSecretError) as info:
        LLMConfig.from_row({**ROW, **values})
    assert info.value.field == field
    for secret in (SECRET, "AKIAIOSFODNN7EXAMPLE", JWT):
        assert secret not in str(info.value)


@pytest.mark.parametrize(
    "value", ["sk-learn", "task-force-alpha", "hf_transfer", "eyJ", "AKIA", "gpt-4o-mini"]
)
def test_ordinary_values_that_share_a_key_prefix_pass(value: str) -> None:
    """Short words that start like a key prefix are not keys."""
    assert LLMConfig.from_row({**ROW, "config": {"metadata": {"note": value}}})


@pytest.mark.parametrize(
    "url",
    [
        "https://deploy@host.example/v1",
        "http://localhost@127.0.0.1:8080/v1",
        "http://api.example\\@127.0.0.1:8080/v1",
    ],
)
def test_urls_with_user_info_are_refused_anywhere(url: str) -> None:
    """user@host in a URL hides where requests go: refused in config and auth_meta alike."""
    for values, field in (
        ({"config": {"base_url": url}}, "config.base_url"),
        ({"config": {"client_kwargs": {"proxy": url}}}, "config.client_kwargs.proxy"),
        ({"auth_meta": {"azure_openai_api_base": url}}, "auth_meta.azure_openai_api_base"),
    ):
        with pytest.raises(InvalidConfigError, match="user info") as info:
            LLMConfig.from_row({**ROW, **values})
        assert info.value.field == field


HEX_KEYS = st.from_regex(r"\A[a-f][0-9a-f]{31}\Z")
ALNUM_KEYS = st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{19,80}\Z").filter(
    lambda v: any(ch.isdigit() for ch in v)
)


# A regex strategy filtered on digits draws slowly on a busy machine; the check, not the draw, is
# under test.
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(HEX_KEYS, ALNUM_KEYS))
def test_a_key_that_looks_like_a_variable_name_is_refused_as_a_secret(secret: str) -> None:
    """{"api_key_env": "<32 hex>"} (Azure's key format) is a pasted key, refused without echo."""
    with pytest.raises(LiteralSecretError) as info:
        LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": secret}})
    assert secret not in str(info.value)
    assert "looks like a secret" in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["OPENAI_API_KEY", "AZURE_OPENAI_DEPLOYMENT_NAME", "MYCO_LLM_KEY_2", "my_openai_key", "TEAM_A"],
)
def test_variable_names_are_not_mistaken_for_keys(name: str) -> None:
    """Conventional and lower-case variable names stay valid references."""
    assert not looks_like_secret(name)
    assert LLMConfig.from_row({**ROW, "auth_meta": {"api_key_env": name}})


def test_only_conventional_variable_names_are_shown() -> None:
    """Messages repeat UPPER_CASE names of up to 64 characters, nothing else."""
    assert shown_reference("OPENAI_API_KEY") == "OPENAI_API_KEY"
    for hidden in ("my_key", "X" * 65, "3f2a9c0e4b7d4e1f3f2a9c0e4b7d4e1f", None):
        assert shown_reference(hidden) != hidden


def test_hostile_nesting_is_refused_instead_of_recursed() -> None:
    """A config nested 600 levels deep raises InvalidConfigError, not RecursionError."""
    nested: Any = "leaf"
    for _ in range(600):
        nested = {"a": [nested]}
    with pytest.raises(InvalidConfigError, match=f"deeper than {MAX_DEPTH}") as info:
        check_config({"model_kwargs": nested})
    assert info.value.field == "config.model_kwargs"
    shallow: Any = "leaf"
    for _ in range(MAX_DEPTH // 2 - 2):
        shallow = {"a": [shallow]}
    check_config({"model_kwargs": shallow})
