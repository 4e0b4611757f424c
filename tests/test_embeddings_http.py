"""Embedding fallback with real OpenAIEmbeddings and OllamaEmbeddings against local servers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from embedding_servers import OllamaEmbeddingServer, OpenAIEmbeddingServer, vector

from llmpool.errors import AllLLMsFailedError, MixedSpacesError
from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

FAST = FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0)
KEY = {"api_key_env": "OPENAI_API_KEY"}


@pytest.fixture(autouse=True)
def _openai_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAI rows' key, a local placeholder."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local")


def openai_row(name: str, url: str, priority: int, **config: Any) -> dict[str, Any]:
    """An OpenAI embedding row served by ``url`` (no tokenizer download: offline)."""
    labels = {"space": config.pop("space")} if "space" in config else {}
    return {
        "name": name,
        "provider": "openai",
        "model_name": config.pop("model", "text-embedding-3-small"),
        "kind": "embedding",
        "priority": priority,
        "auth_meta": KEY,
        "config": {"base_url": url + "/v1", "check_embedding_ctx_length": False, **config},
        **labels,
    }


def ollama_row(name: str, url: str, priority: int, **values: Any) -> dict[str, Any]:
    """An Ollama embedding row served by ``url``."""
    return {
        "name": name,
        "provider": "ollama",
        "model_name": values.pop("model", "nomic-embed-text"),
        "kind": "embedding",
        "priority": priority,
        "config": {"base_url": url},
        **values,
    }


def pool_of(*rows: dict[str, Any]) -> LLMPool:
    """A pool over these rows with a fast retry policy."""
    return LLMPool(InMemoryStore(rows), poll_interval=0, policy=FAST)


@pytest.fixture
def two_openai() -> Iterator[tuple[OpenAIEmbeddingServer, OpenAIEmbeddingServer]]:
    """A primary and a secondary OpenAI embeddings server."""
    with OpenAIEmbeddingServer() as primary, OpenAIEmbeddingServer() as secondary:
        yield primary, secondary


def test_openai_primary_answering_500_falls_back_to_the_secondary_of_its_space(
    two_openai: tuple[OpenAIEmbeddingServer, OpenAIEmbeddingServer],
) -> None:
    """Real OpenAIEmbeddings: the primary's 500s fail over to the secondary of the same space."""
    primary, secondary = two_openai
    primary.fail_from(1)
    pool = pool_of(
        openai_row("Primary", primary.url, 1, dimensions=16),
        openai_row("Secondary", secondary.url, 2, dimensions=16),
    )
    vectors = pool.get_embeddings_with_fallback().embed_documents(["alpha", "beta"])
    meta = vectors.response_metadata["llmpool"]
    assert meta["name"] == "Secondary"
    assert meta["space"] == "openai/text-embedding-3-small@16"
    assert meta["dimensions"] == 16
    assert [a["outcome"] for a in meta["attempts"]] == ["error", "error", "ok"]
    assert list(vectors) == [vector("text-embedding-3-small", t, 16) for t in ("alpha", "beta")]
    assert primary.failed == [2, 2] and secondary.batches == [2]
    pool.close()


def test_ollama_primary_answering_500_falls_back_to_the_secondary_of_its_space() -> None:
    """Real OllamaEmbeddings: a 500 from the primary fails over to the secondary, query too."""
    with OllamaEmbeddingServer() as primary, OllamaEmbeddingServer() as secondary:
        primary.fail_from(1)
        pool = pool_of(
            ollama_row("Ollama A", primary.url, 1), ollama_row("Ollama B", secondary.url, 2)
        )
        query = pool.get_embeddings_with_fallback().embed_query("what is python?")
        assert query.response_metadata["llmpool"]["name"] == "Ollama B"
        assert query.response_metadata["llmpool"]["space"] == "ollama/nomic-embed-text"
        assert list(query) == vector("nomic-embed-text", "what is python?", 8)
        pool.close()


def test_async_openai_fallback_to_an_ollama_row_labelled_with_the_same_space() -> None:
    """Two providers serving the same vectors cross only because both rows say the same space."""
    with (
        OpenAIEmbeddingServer(space="shared") as openai,
        OllamaEmbeddingServer(space="shared") as ollama,
    ):
        openai.fail_from(1)
        pool = pool_of(
            openai_row("OpenAI", openai.url, 1, space="shared"),
            ollama_row("Ollama", ollama.url, 2, space="shared"),
        )

        async def embed() -> Any:
            embeddings = await pool.aget_embeddings_with_fallback()
            return await embeddings.aembed_documents(["one", "two", "three"])

        vectors = asyncio.run(embed())
        assert vectors.response_metadata["llmpool"]["name"] == "Ollama"
        assert vectors.response_metadata["llmpool"]["space"] == "shared"
        assert list(vectors) == [vector("shared", t, 8) for t in ("one", "two", "three")]
        pool.close()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"model": "text-embedding-3-small"}, {"model": "text-embedding-3-large"}),
        ({"dimensions": 256}, {"dimensions": 512}),
    ],
    ids=["model_name", "dimensions"],
)
def test_a_chain_differing_in_model_or_dimensions_without_a_shared_space_is_refused(
    two_openai: tuple[OpenAIEmbeddingServer, OpenAIEmbeddingServer],
    first: dict[str, Any],
    second: dict[str, Any],
) -> None:
    """Rows of different model names or dimensions are refused when built, both rows named."""
    primary, secondary = two_openai
    pool = pool_of(
        openai_row("Small", primary.url, 1, **first),
        openai_row("Other", secondary.url, 2, **second),
    )
    with pytest.raises(MixedSpacesError) as caught:
        pool.get_embeddings_with_fallback()
    text = str(caught.value)
    for row in pool.snapshot().configs:
        assert f"LLM {row.name!r} (id {row.id})" in text
    assert len(caught.value.spaces) == 2
    assert primary.requests == secondary.requests == 0
    pool.close()


def test_an_ollama_row_of_another_model_in_an_openai_chain_is_refused_with_both_named() -> None:
    """OpenAI's and Ollama's models are two spaces: no chain crosses them without a label."""
    with OpenAIEmbeddingServer() as openai, OllamaEmbeddingServer() as ollama:
        pool = pool_of(openai_row("OpenAI", openai.url, 1), ollama_row("Ollama", ollama.url, 2))
        with pytest.raises(MixedSpacesError, match="'OpenAI'.*'Ollama'"):
            pool.get_embeddings_with_fallback()
        chosen = pool.get_embeddings_with_fallback(space="ollama/nomic-embed-text")
        vectors = chosen.embed_documents(["x"])
        assert vectors.response_metadata["llmpool"]["name"] == "Ollama"
        assert openai.requests == 0
        pool.close()


def thousand() -> list[str]:
    """1,000 distinct documents."""
    return [f"document number {i}" for i in range(1000)]


def test_a_thousand_documents_fail_over_as_one_batch_when_the_primary_fails_on_the_third() -> None:
    """The primary fails from its third request on: every vector comes from the secondary."""
    with OpenAIEmbeddingServer() as primary, OpenAIEmbeddingServer() as secondary:
        primary.fail_from(3)
        pool = pool_of(
            openai_row("Primary", primary.url, 1, chunk_size=100),
            openai_row("Secondary", secondary.url, 2, chunk_size=100),
        )
        texts = thousand()
        vectors = pool.get_embeddings_with_fallback().embed_documents(texts)
        meta = vectors.response_metadata["llmpool"]
        assert (meta["name"], meta["space"]) == ("Secondary", "openai/text-embedding-3-small")
        assert len(vectors) == 1000
        assert list(vectors) == [vector("text-embedding-3-small", t, 8) for t in texts]
        assert primary.batches == [100, 100]  # answered, then thrown away with the batch
        assert secondary.batches == [100] * 10
        pool.close()


def test_a_thousand_documents_are_retried_whole_on_the_primary_when_one_request_fails() -> None:
    """One failed request retries the whole batch on the same row: never half from each."""
    with OpenAIEmbeddingServer() as primary, OpenAIEmbeddingServer() as secondary:
        primary.fail_on(3)
        pool = pool_of(
            openai_row("Primary", primary.url, 1, chunk_size=100),
            openai_row("Secondary", secondary.url, 2, chunk_size=100),
        )
        texts = thousand()
        vectors = pool.get_embeddings_with_fallback().embed_documents(texts)
        meta = vectors.response_metadata["llmpool"]
        assert meta["name"] == "Primary"
        assert [a["outcome"] for a in meta["attempts"]] == ["error", "ok"]
        assert list(vectors) == [vector("text-embedding-3-small", t, 8) for t in texts]
        assert primary.batches == [100] * 12 and primary.failed == [100]
        assert secondary.requests == 0
        pool.close()


def test_every_row_failing_names_each_row_and_its_error() -> None:
    """When both rows of the space fail, one error lists both."""
    with OllamaEmbeddingServer() as a, OllamaEmbeddingServer() as b:
        a.fail_from(1)
        b.fail_from(1)
        pool = pool_of(ollama_row("A", a.url, 1), ollama_row("B", b.url, 2))
        with pytest.raises(AllLLMsFailedError) as caught:
            pool.get_embeddings_with_fallback().embed_documents(["x"])
        assert [f.name for f in caught.value.failures] == ["A", "B"]
        pool.close()
