"""Whoever writes a row chooses a model: never reads another secret, never sends one elsewhere.

Each test writes a hostile row to a real database (SQLite and PostgreSQL): once through the store,
which must refuse it, and once with raw SQL, as another tool or an older version could have
written it, which the pool must refuse to build. A real provider client is pointed at a local
server standing in for the attacker's, and that server must receive nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import fake, row
from langchain_core.callbacks import BaseCallbackHandler
from servers import OllamaServer, OpenAIServer

from llmpool.errors import AllLLMsFailedError, EnvNotAllowedError, InvalidConfigError
from llmpool.pool.facade import LLMPool
from llmpool.providers.allowlist import EnvAllowlist
from llmpool.repository.sql.schema import llms

SECRETS = {
    "OPENAI_API_KEY": "openai",
    "AZURE_OPENAI_API_KEY": "azure",
    "AWS_SECRET_ACCESS_KEY": "aws",
    "MYCO_KEY": "myco",
}


@pytest.fixture
def canaries(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A unique value in each secret variable; no operator settings from the outer environment."""
    values = {name: f"{tag}-canary-{uuid.uuid4().hex}" for name, tag in SECRETS.items()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for name in ("LLMPOOL_ALLOWED_ENV", "LLMPOOL_ALLOWED_ENDPOINTS", "LLMPOOL_SECRET_DIRS"):
        monkeypatch.delenv(name, raising=False)
    return values


def insert_raw(store: Any, values: dict[str, Any]) -> str:
    """Insert a row with raw SQL, bypassing every check of the store; return its id."""
    now = datetime.now(timezone.utc)
    data: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "scope": "global",
        "enabled": True,
        "is_default": False,
        "auth_meta": {},
        "config": {},
        "created_at": now,
        "updated_at": now,
        "version": 1,
        **values,
    }
    if store.engine.dialect.name == "sqlite":  # as the store writes them: JSON text, naive UTC
        data["auth_meta"] = json.dumps(data["auth_meta"])
        data["config"] = json.dumps(data["config"])
        data["created_at"] = data["updated_at"] = now.replace(tzinfo=None)
    with store.engine.begin() as conn:
        conn.execute(llms.insert().values(data))
    return str(data["id"])


def served(store: Any, allow: EnvAllowlist) -> AllLLMsFailedError:
    """Serve the table through a pool and return the error of a call that no row answered."""
    pool = LLMPool(repository=store, allowlist=allow, poll_interval=0)
    try:
        with pytest.raises(AllLLMsFailedError) as info:
            pool.get_llm_with_fallback().invoke("hello")
    finally:
        pool.close()
    return info.value


def assert_never_sent(
    store: Any,
    server: Any,
    values: dict[str, Any],
    allow: EnvAllowlist,
    refused: type[Exception] = EnvNotAllowedError,
) -> AllLLMsFailedError:
    """The store refuses the row; written anyway, it is not built; the server hears nothing."""
    store.validators = (allow,)
    with pytest.raises(refused):
        store.add(row(**values))
    assert store.list_llms() == []
    insert_raw(store, row(**values))
    error = served(store, allow)
    assert server.count == 0
    return error


def test_an_allowed_endpoint_does_not_admit_a_url_it_is_a_prefix_of(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Allowing http://127.0.0.1:4512 does not allow http://127.0.0.1:45123 (nor a.com.evil)."""
    with OpenAIServer() as attacker:
        port = attacker.url.rsplit(":", 1)[1]
        monkeypatch.setenv("LLMPOOL_ALLOWED_ENDPOINTS", f"http://127.0.0.1:{port[:-1]}")
        values = {"config": {"base_url": attacker.url + "/v1"}}
        error = assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
    assert isinstance(error.failures[0].error, EnvNotAllowedError)


def test_user_info_cannot_disguise_the_host(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """http://localhost@127.0.0.1:PORT is not http://localhost: refused when written and read."""
    monkeypatch.setenv("LLMPOOL_ALLOWED_ENDPOINTS", "http://localhost")
    with OpenAIServer() as attacker:
        disguised = attacker.url.replace("http://", "http://localhost@") + "/v1"
        values = {"config": {"base_url": disguised}}
        assert_never_sent(
            sql_store, attacker, values, EnvAllowlist.from_env(), refused=InvalidConfigError
        )


def test_azure_openai_api_base_is_checked_as_the_endpoint_it_becomes(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """auth_meta.azure_openai_api_base (renamed azure_endpoint) is held to the allowed endpoints."""
    monkeypatch.setenv("LLMPOOL_ALLOWED_ENDPOINTS", "https://myco.openai.azure.com")
    with OpenAIServer() as attacker:
        values = {
            "provider": "azure_openai",
            "auth_meta": {
                "api_key_env": "AZURE_OPENAI_API_KEY",
                "azure_openai_api_base": attacker.url,
                "api_version": "2024-02-01",
            },
            "config": {},
        }
        assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())


def test_openai_proxy_is_checked_as_an_endpoint(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An allowed base_url with the row's own openai_proxy would hand the key to the proxy."""
    with OpenAIServer() as provider, OpenAIServer() as attacker:
        monkeypatch.setenv("LLMPOOL_ALLOWED_ENDPOINTS", provider.url + "/v1")
        values = {"config": {"base_url": provider.url + "/v1", "openai_proxy": attacker.url}}
        assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
        assert provider.count == 0


def test_a_url_nested_in_client_kwargs_is_checked(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """client_kwargs.proxy would route an allowed Ollama's traffic through the attacker."""
    with OllamaServer() as provider, OllamaServer() as attacker:
        monkeypatch.setenv("LLMPOOL_ALLOWED_ENDPOINTS", provider.url)
        values = {
            "provider": "ollama",
            "model_name": "llama3",
            "auth_meta": {},
            "config": {"base_url": provider.url, "client_kwargs": {"proxy": attacker.url}},
        }
        assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
        assert provider.count == 0


def test_an_openai_row_cannot_send_the_aws_secret_key(
    sql_store: Any, canaries: dict[str, str]
) -> None:
    """api_key_env: AWS_SECRET_ACCESS_KEY on an openai row is refused: not openai's variable."""
    with OpenAIServer() as attacker:
        values = {
            "auth_meta": {"api_key_env": "AWS_SECRET_ACCESS_KEY"},
            "config": {"base_url": attacker.url + "/v1"},
        }
        error = assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
    assert canaries["AWS_SECRET_ACCESS_KEY"] not in str(error)


def test_a_secret_file_outside_llmpools_directories_is_never_read(
    sql_store: Any, canaries: dict[str, str], tmp_path: Path
) -> None:
    """api_key_file pointing at another service's secret file is refused; nothing is sent."""
    password = tmp_path / "db_password"
    secret = f"db-canary-{uuid.uuid4().hex}"
    password.write_text(secret)
    with OpenAIServer() as attacker:
        values = {
            "auth_meta": {"api_key_file": str(password)},
            "config": {"base_url": attacker.url + "/v1"},
        }
        error = assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
    assert secret not in str(error)


class Recorder(BaseCallbackHandler):
    """Keeps the text of every callback payload."""

    def __init__(self) -> None:
        self.payloads: list[str] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        """Record the serialised model and its invocation parameters."""
        self.payloads.append(repr((serialized, messages, kwargs)))

    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        """Record the serialised model."""
        self.payloads.append(repr((serialized, prompts, kwargs)))

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        """Record the answer and its metadata."""
        self.payloads.append(repr((response, kwargs)))

    def on_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        """Record a chain's inputs."""
        self.payloads.append(repr((serialized, inputs, kwargs)))

    def on_chain_end(self, outputs: Any, **kwargs: Any) -> None:
        """Record a chain's outputs."""
        self.payloads.append(repr((outputs, kwargs)))


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"])
def test_a_secret_in_a_plain_parameter_never_reaches_repr_dumps_or_callbacks(
    sql_store: Any, canaries: dict[str, str], variable: str
) -> None:
    """organization_env naming a key is refused: no repr, dumps or callback payload shows it."""
    from langchain_core.load import dumps

    canary = canaries[variable]
    with OpenAIServer() as server:
        values = {
            "priority": 1,
            "auth_meta": {"api_key_env": "OPENAI_API_KEY", "organization_env": variable},
            "config": {"base_url": server.url + "/v1"},
        }
        insert_raw(sql_store, row("Leaky", **values))
        insert_raw(sql_store, fake("Backup", 2, "answered by the backup"))
        recorder = Recorder()
        pool = LLMPool(repository=sql_store, allowlist=EnvAllowlist.from_env(), poll_interval=0)
        try:
            model = pool.get_llm_with_fallback()
            answer = model.invoke("hello", config={"callbacks": [recorder]})
            with pytest.raises(EnvNotAllowedError) as refused:
                pool.registry.build(sql_store.list_llms()[0], allowlist=pool.allowlist)
        finally:
            pool.close()
        assert server.count == 0
    assert answer.content == "answered by the backup"
    assert refused.value.field == "auth_meta.organization_env"
    assert recorder.payloads
    texts = [repr(model), dumps(model), repr(answer), str(refused.value), *recorder.payloads]
    for text in texts:
        assert canary not in text


def test_an_operators_key_cannot_go_to_a_rows_own_endpoint_without_allowed_endpoints(
    sql_store: Any, canaries: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MYCO_KEY allowed by the operator, base_url written by the row: refused, sent nowhere."""
    monkeypatch.setenv("LLMPOOL_ALLOWED_ENV", "MYCO_KEY")
    with OpenAIServer() as attacker:
        values = {
            "auth_meta": {"api_key_env": "MYCO_KEY"},
            "config": {"base_url": attacker.url + "/v1"},
        }
        error = assert_never_sent(sql_store, attacker, values, EnvAllowlist.from_env())
    assert "LLMPOOL_ALLOWED_ENDPOINTS" in str(error.failures[0].error)
