"""A model served alone (get_llm, create_llm_instance) retries through its own client."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from servers import AnthropicServer, OpenAIServer, ProviderServer, Reply, Status

import llmpool
from llmpool import LLMPool
from llmpool.providers.chat import STANDALONE_RETRIES

# The SDKs honour Retry-After: the retry comes at once instead of after their backoff.
FAIL_ONCE = Status(500, headers={"retry-after-ms": "1", "retry-after": "0"})

# The client classes by module and name: an SDK is imported only where its tests run.
PROVIDERS: dict[str, tuple[type[ProviderServer], str, dict[str, str]]] = {
    "openai": (
        OpenAIServer,
        "langchain_openai:ChatOpenAI",
        {"api_key_env": "OPENAI_API_KEY", "base_url_env": "OPENAI_API_BASE"},
    ),
    "anthropic": (
        AnthropicServer,
        "langchain_anthropic:ChatAnthropic",
        {"api_key_env": "ANTHROPIC_API_KEY", "base_url_env": "ANTHROPIC_BASE_URL"},
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def served(
    request: pytest.FixtureRequest, sql_store: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LLMPool, ProviderServer, type[Any], Any]]:
    """A pool over a SQL table (SQLite and PostgreSQL) whose default row is a real client of
    a local server, and that server."""
    server_class, class_path, auth_meta = PROVIDERS[request.param]
    module, _, name = class_path.partition(":")
    client_class = getattr(importlib.import_module(module), name)
    with server_class() as server:
        suffix = "/v1" if request.param == "openai" else ""
        monkeypatch.setenv("OPENAI_API_KEY", "sk-local")
        monkeypatch.setenv("OPENAI_API_BASE", server.url + suffix)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-local")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        row = sql_store.add(
            {
                "name": "Primary",
                "provider": request.param,
                "model_name": "model-1",
                "is_default": True,
                "auth_meta": auth_meta,
                "config": {"max_tokens": 64},
            }
        )
        with LLMPool(repository=sql_store, poll_interval=0) as pool:
            yield pool, server, client_class, row


def test_get_llm_retries_a_failure_then_answers(served: Any) -> None:
    """get_llm() is the provider's own client class, and a 500 followed by an answer gives
    the answer: the client retried once."""
    pool, server, client_class, _ = served
    server.script(FAIL_ONCE, Reply("answer after a retry"))
    llm = pool.get_llm()
    assert isinstance(llm, client_class)
    assert llm.max_retries == STANDALONE_RETRIES
    assert llm.invoke("hello").content == "answer after a retry"
    assert server.count == 2


def test_create_llm_instance_and_get_llm_by_id_retry(served: Any) -> None:
    """create_llm_instance(row) and get_llm(llm_id=...) retry the same way."""
    pool, server, _, row = served
    server.script(FAIL_ONCE, Reply("one"), FAIL_ONCE, Reply("two"))
    assert pool.create_llm_instance(pool.get_llms_from_db()[0]).invoke("x").content == "one"
    assert pool.get_llm(llm_id=row.id).invoke("x").content == "two"
    assert server.count == 4


async def test_async_get_llm_retries_a_failure_then_answers(served: Any) -> None:
    """aget_llm() gives a model whose ainvoke retries once and answers."""
    pool, server, _, _ = served
    server.script(FAIL_ONCE, Reply("async answer"))
    try:
        llm = await pool.aget_llm()
        assert (await llm.ainvoke("hello")).content == "async answer"
    finally:
        await pool.aclose()
        await pool.store.aclose()  # the async reader the pool made the store open
    assert server.count == 2


def test_module_get_llm_retries(served: Any) -> None:
    """The usage guide's llmpool.get_llm() serves the retrying client too."""
    pool, server, _, _ = served
    server.script(FAIL_ONCE, Reply("from the module function"))
    with llmpool.set_pool(pool):
        assert llmpool.get_llm().invoke("hello").content == "from the module function"
    assert server.count == 2


def test_retries_are_bounded(served: Any) -> None:
    """A server that keeps failing gets one request and STANDALONE_RETRIES retries, then the
    provider's error."""
    pool, server, _, _ = served
    server.script(*[FAIL_ONCE] * (STANDALONE_RETRIES + 2))
    with pytest.raises(Exception, match="500|Internal") as raised:
        pool.get_llm().invoke("hello")
    assert not isinstance(raised.value, llmpool.LLMPoolError)
    assert server.count == STANDALONE_RETRIES + 1


def test_a_rows_own_max_retries_wins(served: Any) -> None:
    """A row that sets max_retries: 0 gets no retries alone either."""
    pool, server, _, row = served
    pool.store.update(row.id, {"config": {"max_tokens": 64, "max_retries": 0}})
    pool.refresh()
    server.script(FAIL_ONCE, Reply("not reached"))
    with pytest.raises(Exception, match="500|Internal"):
        pool.get_llm().invoke("hello")
    assert server.count == 1


def test_the_fallback_chains_model_keeps_no_client_retries(served: Any) -> None:
    """The chain's model of the same row makes no client retries (the walk retries), and is
    a different client from the one served alone."""
    pool, _, _, _ = served
    alone = pool.get_llm()
    models = [candidate.model for candidate in pool.chains.get("global").candidates]
    assert [m.max_retries for m in models] == [0]
    assert alone is not models[0]
