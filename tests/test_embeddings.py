"""Embedding rows: kinds and defaults in every store, the pool's embeddings, vector spaces."""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import fake

from llmpool.contracts import Candidate
from llmpool.errors import (
    AllLLMsFailedError,
    AllLLMsFailedToInitializeError,
    ConflictError,
    DatabaseError,
    InvalidConfigError,
    LLMNotFoundError,
    MixedSpacesError,
    NoDefaultLLMError,
    ProviderError,
    WrongKindError,
)
from llmpool.fallback.embeddings import FallbackEmbeddings, Vectors
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers import ProviderRegistry
from llmpool.providers.fake import FakeEmbeddings
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.spaces import one_space, space_of

FAST = FallbackPolicy(attempts=1, backoff_initial=0.001, backoff_jitter=0)


def vectors_row(name: str, priority: int, **values: Any) -> dict[str, Any]:
    """A ``fake`` embedding row of model ``m``; keywords override its fields."""
    return {
        "name": name,
        "provider": "fake",
        "model_name": "m",
        "kind": "embedding",
        "priority": priority,
        **values,
    }


def seed_rows() -> list[dict[str, Any]]:
    """The usage guide's chain as fake chat rows, with embedding rows ahead of them all."""
    return [
        fake("OpenAI GPT-4", 10, "gpt-4 answers"),
        fake("OpenAI GPT-3.5", 20, "gpt-3.5 answers"),
        fake("Ollama Llama2", 80, "llama answers", is_default=True),
        fake("Claude 3 Opus", 42, "claude answers", enabled=False),
        vectors_row("Vectors First", 1, is_default=True),
        vectors_row("Vectors Second", 2),
    ]


def test_the_seed_functions_behave_as_before_with_embedding_rows_present(store: Any) -> None:
    """Chat functions never see embedding rows: listing, default, by id, fallback, instances."""
    store.add_many(seed_rows())
    pool = LLMPool(repository=store, poll_interval=0)
    assert [c.name for c in pool.get_llms_from_db()] == [
        "OpenAI GPT-4",
        "OpenAI GPT-3.5",
        "Ollama Llama2",
    ]
    assert [c["name"] for c in pool.get_llms_from_db(enabled_only=False)][-1] == "Ollama Llama2"
    assert pool.get_default_llm_config()["name"] == "Ollama Llama2"
    assert pool.get_llm().invoke("Hello, how are you?").content == "llama answers"
    answer = pool.get_llm_with_fallback().invoke("Explain machine learning")
    assert answer.content == "gpt-4 answers"
    assert answer.response_metadata["llmpool"]["name"] == "OpenAI GPT-4"
    gpt35 = pool.get_llms_from_db()[1]
    assert pool.create_llm_instance(gpt35).invoke("hi").content == "gpt-3.5 answers"
    assert pool.get_llm(llm_id=gpt35.id).invoke("What is Python?").content == "gpt-3.5 answers"
    assert [step.name for step in pool.explain()] == [
        "OpenAI GPT-4",
        "OpenAI GPT-3.5",
        "Claude 3 Opus",
        "Ollama Llama2",
    ]
    assert [step.name for step in pool.explain(kind="embedding")] == [
        "Vectors First",
        "Vectors Second",
    ]
    pool.close()


def test_the_async_seed_functions_never_see_embedding_rows() -> None:
    """The async twins serve the same chat rows as before."""
    pool = LLMPool(InMemoryStore(seed_rows()), poll_interval=0)

    async def run() -> tuple[list[str], str, str]:
        rows = await pool.aget_llms_from_db()
        default = await pool.aget_default_llm_config()
        llm = await pool.aget_llm_with_fallback()
        return [r.name for r in rows], default.name, (await llm.ainvoke("hi")).content

    names, default, answer = asyncio.run(run())
    assert names == ["OpenAI GPT-4", "OpenAI GPT-3.5", "Ollama Llama2"]
    assert (default, answer) == ("Ollama Llama2", "gpt-4 answers")
    pool.close()


def test_a_chat_function_given_an_embedding_row_and_back_says_which_function_to_use() -> None:
    """get_llm of an embedding row and get_embeddings of a chat row are refused, naming it."""
    pool = LLMPool(InMemoryStore(seed_rows()), poll_interval=0)
    configs = pool.snapshot().configs
    vectors = next(c for c in configs if c.name == "Vectors First")
    chat = next(c for c in configs if c.name == "OpenAI GPT-4")
    with pytest.raises(WrongKindError, match="get_embeddings") as caught:
        pool.get_llm(llm_id=vectors.id)
    assert isinstance(caught.value, LookupError) and vectors.id in str(caught.value)
    with pytest.raises(WrongKindError, match="is an embedding row"):
        pool.create_llm_instance(vectors)
    with pytest.raises(WrongKindError, match="get_llm"):
        pool.get_embeddings(llm_id=chat.id)
    pool.close()


def test_get_embeddings_serves_the_default_embedding_row_or_one_by_id() -> None:
    """The scope's default embedding row, or any embedding row by id, as its client."""
    pool = LLMPool(InMemoryStore(seed_rows()), poll_interval=0)
    first = pool.get_embeddings()
    assert isinstance(first, FakeEmbeddings)
    second = next(c for c in pool.snapshot().configs if c.name == "Vectors Second")
    assert pool.get_embeddings(llm_id=second.id) is not first
    assert pool.get_embeddings() is first  # cached per row version
    with pytest.raises(NoDefaultLLMError, match="No default embedding model configured"):
        pool.get_embeddings(scope="other")
    with pytest.raises(LLMNotFoundError):
        pool.get_embeddings(llm_id="no-such-row")
    pool.close()


def test_defaults_are_per_scope_and_kind(store: Any) -> None:
    """A scope keeps a chat default and an embedding default; each kind replaces only its own."""
    chat, first, second = store.add_many(
        [
            {"name": "Chat", "provider": "fake", "model_name": "m", "is_default": True},
            vectors_row("First", 1, is_default=True),
            vectors_row("Second", 2),
        ]
    )
    assert store.get(chat.id).is_default and store.get(first.id).is_default
    store.set_default(second.id)
    assert store.get(chat.id).is_default
    assert not store.get(first.id).is_default
    assert store.get_default().id == chat.id
    assert store.get_default(kind="embedding").id == second.id
    with pytest.raises(ConflictError, match="already has a default embedding model"):
        store.update(chat.id, {"kind": "embedding"})
    assert store.get(chat.id).kind == "chat"


def test_the_database_enforces_one_default_per_scope_and_kind(sql_store: Any) -> None:
    """Raw SQL may set one default of each kind per scope, never two of one kind."""
    chat, vectors, other = sql_store.add_many(
        [fake("Chat", 1, "hi"), vectors_row("V1", 1), vectors_row("V2", 2)]
    )
    with sql_store.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE llms SET is_default = true WHERE id IN (:a, :b)"),
            {"a": chat.id, "b": vectors.id},
        )
    assert sql_store.get_default().id == chat.id
    with pytest.raises(sa.exc.IntegrityError), sql_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE llms SET is_default = true WHERE id = :c"), {"c": other.id})
    with pytest.raises(sa.exc.IntegrityError), sql_store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE llms SET kind = 'image' WHERE id = :c"), {"c": other.id})


def test_a_kind_outside_chat_and_embedding_is_refused_when_written(store: Any) -> None:
    """``kind`` is chat or embedding; anything else is refused naming the field."""
    with pytest.raises(InvalidConfigError, match="kind"):
        store.add(vectors_row("Images", 1, kind="image"))


def test_space_of_is_the_label_or_the_model_and_its_dimensions() -> None:
    """A row's space: its label, else its provider, model name and dimensions."""
    row = LLMConfig(id="1", name="A", provider="fake", model_name="m", kind="embedding")
    assert space_of(row) == "fake/m"
    assert space_of(row.model_copy(update={"config": {"dimensions": 64}})) == "fake/m@64"
    assert space_of(LLMConfig.from_row({**row.model_dump(), "space": "shared"})) == "shared"
    assert LLMConfig.from_row({**row.model_dump(), "space": "  "}).space is None


def test_rows_of_different_models_labelled_with_one_space_fail_over_to_each_other() -> None:
    """An admin's shared label lets two model names serve one chain."""
    pool = LLMPool(
        InMemoryStore(
            [
                vectors_row("Down", 1, model_name="a", space="s", config={"error": "refused"}),
                vectors_row("Up", 2, model_name="b", space="s"),
            ]
        ),
        poll_interval=0,
        policy=FAST,
    )
    vectors = pool.get_embeddings_with_fallback().embed_documents(["x"])
    assert isinstance(vectors, Vectors) and isinstance(vectors, list)
    assert vectors.response_metadata["llmpool"]["name"] == "Up"
    assert vectors.response_metadata["llmpool"]["space"] == "s"
    assert list(vectors) == FakeEmbeddings(model="b").embed_documents(["x"])
    pool.close()


def test_a_live_chain_that_comes_to_mix_spaces_is_refused_at_the_call() -> None:
    """A row of another space added later makes the next call fail loudly, with no vectors."""
    store = InMemoryStore([vectors_row("A", 1)])
    pool = LLMPool(store, poll_interval=0)
    embeddings = pool.get_embeddings_with_fallback()
    assert embeddings.embed_query("x").response_metadata["llmpool"]["name"] == "A"
    added = store.add(vectors_row("B", 0, model_name="other"))
    with pytest.raises(MixedSpacesError, match=added.id):
        embeddings.embed_query("x")
    pool.close()


def test_live_embeddings_refuse_a_chain_that_moved_to_another_space() -> None:
    """Embeddings built for one space never answer from another after the rows change."""
    store = InMemoryStore([vectors_row("A", 1)])
    pool = LLMPool(store, poll_interval=0)
    embeddings = pool.get_embeddings_with_fallback()
    row = store.list_llms()[0]
    store.update(row.id, {"config": {"dimensions": 4}})
    with pytest.raises(MixedSpacesError, match="now in space 'fake/m@4'"):
        embeddings.embed_documents(["x"])
    fresh = pool.get_embeddings_with_fallback()
    assert fresh is not embeddings and fresh.space == "fake/m@4"
    assert len(fresh.embed_documents(["x"])[0]) == 4
    pool.close()


def test_a_named_space_serves_only_its_rows() -> None:
    """``space=`` picks one space's rows out of a scope that holds two."""
    pool = LLMPool(
        InMemoryStore([vectors_row("Old", 1), vectors_row("New", 2, model_name="n")]),
        poll_interval=0,
    )
    with pytest.raises(MixedSpacesError):
        pool.get_embeddings_with_fallback()
    vectors = pool.get_embeddings_with_fallback(space="fake/n").embed_documents(["x"])
    assert vectors.response_metadata["llmpool"]["name"] == "New"
    with pytest.raises(AllLLMsFailedToInitializeError, match="no enabled embedding rows"):
        pool.get_embeddings_with_fallback(space="missing")
    pool.close()


class _Short(FakeEmbeddings):
    """Answers one vector too few: a broken provider."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return super().embed_documents(texts)[:-1]


def _candidate(name: str, embeddings: Any, model: str = "m") -> Candidate:
    config = LLMConfig(id=name, name=name, provider="fake", model_name=model, kind="embedding")
    return Candidate(config, embeddings)


def test_an_answer_with_too_few_vectors_fails_over_whole() -> None:
    """A candidate answering fewer vectors than texts is a failed attempt, never half an answer."""
    embeddings = FallbackEmbeddings(
        candidates=[_candidate("Short", _Short()), _candidate("Whole", FakeEmbeddings())],
        policy=FAST,
    )
    vectors = embeddings.embed_documents(["a", "b", "c"])
    assert len(vectors) == 3
    meta = vectors.response_metadata["llmpool"]
    assert meta["name"] == "Whole"
    assert "2 vectors for 3 texts" in meta["attempts"][0]["error"]


def test_a_row_answering_another_length_than_its_space_falls_back_in_the_space() -> None:
    """A row of the space answering another length is a failed attempt: the next row answers."""
    down = FakeEmbeddings(dimensions=8)
    embeddings = FallbackEmbeddings(
        candidates=[
            _candidate("Eight", down),
            _candidate("Four", FakeEmbeddings(dimensions=4)),
            _candidate("Eight again", FakeEmbeddings(dimensions=8)),
        ],
        policy=FAST,
    )
    assert len(embeddings.embed_query("x")) == 8
    down.error = "refused"
    vector = embeddings.embed_query("x")
    assert len(vector) == 8
    meta = vector.response_metadata["llmpool"]
    assert meta["name"] == "Eight again"
    assert [a["outcome"] for a in meta["attempts"]] == ["error", "error", "ok"]
    assert "4 numbers" in meta["attempts"][1]["error"]
    assert "has 8" in meta["attempts"][1]["error"]


def test_a_static_chain_mixing_spaces_is_refused_when_built() -> None:
    """Built from candidates, the fallback refuses two spaces, naming both rows."""
    with pytest.raises(MixedSpacesError, match="LLM 'A' .*LLM 'B'"):
        FallbackEmbeddings(
            candidates=[_candidate("A", FakeEmbeddings()), _candidate("B", FakeEmbeddings(), "z")]
        )


def test_a_failing_row_opens_its_breaker_and_is_then_skipped_without_a_call() -> None:
    """Embeddings share the chat breakers' rules: after the threshold the row is skipped."""
    policy = FallbackPolicy(attempts=1, failure_threshold=2, cooldown=60)
    pool = LLMPool(
        InMemoryStore([vectors_row("Down", 1, config={"error": "refused"}), vectors_row("Up", 2)]),
        poll_interval=0,
        policy=policy,
    )
    embeddings = pool.get_embeddings_with_fallback()
    for _ in range(2):
        embeddings.embed_query("x")
    attempts = embeddings.embed_query("x").response_metadata["llmpool"]["attempts"]
    assert attempts[0]["outcome"] == "skipped" and "cooling down" in attempts[0]["reason"]
    pool.close()


def test_a_provider_without_embeddings_is_refused_when_an_embedding_row_is_written() -> None:
    """An anthropic embedding row is refused on write, and unbuildable if written anyway."""
    from llmpool.providers import ConfigKeysCheck

    row = vectors_row("Claude vectors", 1, provider="anthropic")
    with pytest.raises(InvalidConfigError, match="has no embeddings") as caught:
        InMemoryStore(validators=[ConfigKeysCheck()]).add(row)
    assert caught.value.field == "kind"
    pool = LLMPool(InMemoryStore([row]), poll_interval=0)
    with pytest.raises(AllLLMsFailedToInitializeError, match="has no embeddings"):
        pool.get_embeddings_with_fallback()
    with pytest.raises(ProviderError, match="has no embeddings"):
        pool.get_embeddings(llm_id=pool.snapshot().configs[0].id)
    pool.close()


def test_an_embedding_row_is_checked_against_its_embeddings_class() -> None:
    """Its config keys are those of the embeddings class: dimensions yes, temperature no."""
    from llmpool.providers import ConfigKeysCheck

    store = InMemoryStore(validators=[ConfigKeysCheck()])
    store.add(vectors_row("Ok", 1, provider="openai", config={"dimensions": 256}))
    with pytest.raises(InvalidConfigError, match="config.temperature"):
        store.add(vectors_row("Bad", 2, provider="openai", config={"temperature": 0.2}))


class _EchoProvider:
    """A plugin provider that adds embeddings through ``build_embeddings``."""

    name = "echo-vectors"
    extra = None
    package = None
    capabilities = frozenset({"streaming"})
    embeddings_config = frozenset({"dimensions"})

    def build(self, config: LLMConfig, auth: Any) -> Any:
        raise NotImplementedError

    def build_embeddings(self, config: LLMConfig, auth: Any) -> FakeEmbeddings:
        return FakeEmbeddings(model="echo", dimensions=config.config.get("dimensions", 3))


def test_a_plugin_provider_adds_embeddings_with_build_embeddings() -> None:
    """A provider object with build_embeddings serves embedding rows; its keys are checked."""
    from llmpool.providers import ConfigKeysCheck

    registry = ProviderRegistry(entry_points=[])
    registry.register(_EchoProvider())
    row = vectors_row("Echo", 1, provider="echo-vectors", config={"dimensions": 5})
    with pytest.raises(InvalidConfigError, match="config.size"):
        ConfigKeysCheck(registry)(LLMConfig(id="1", **{**row, "config": {"size": 1}}))
    pool = LLMPool(InMemoryStore([row]), poll_interval=0, registry=registry)
    vectors = pool.get_embeddings_with_fallback().embed_documents(["x"])
    assert (
        len(vectors[0]) == 5 and vectors.response_metadata["llmpool"]["provider"] == "echo-vectors"
    )
    pool.close()


@pytest.mark.parametrize(
    ("provider", "model", "auth", "config", "cls"),
    [
        (
            "openai",
            "text-embedding-3-small",
            {"api_key_env": "OPENAI_API_KEY"},
            {"dimensions": 256},
            "OpenAIEmbeddings",
        ),
        (
            "azure_openai",
            "te3-small",
            {"api_key_env": "AZURE_OPENAI_API_KEY"},
            {"azure_endpoint": "https://example.openai.azure.com", "api_version": "2024-02-01"},
            "AzureOpenAIEmbeddings",
        ),
        (
            "bedrock",
            "amazon.titan-embed-text-v2:0",
            {
                "aws_access_key_id_env": "AWS_ACCESS_KEY_ID",
                "aws_secret_access_key_env": "AWS_SECRET_ACCESS_KEY",
            },
            {"region_name": "us-east-1", "timeout": 2.5},
            "BedrockEmbeddings",
        ),
        (
            "fireworks",
            "nomic-ai/nomic-embed-text-v1.5",
            {"api_key_env": "FIREWORKS_API_KEY"},
            {},
            "FireworksEmbeddings",
        ),
        ("ollama", "nomic-embed-text", {}, {"base_url": "http://127.0.0.1:9"}, "OllamaEmbeddings"),
        pytest.param(
            "vertexai",
            "text-embedding-005",
            {"project_env": "GOOGLE_CLOUD_PROJECT"},
            {},
            "VertexAIEmbeddings",
            marks=pytest.mark.xdist_group("vertexai"),  # one worker imports the Google SDK
        ),
        ("fake", "m", {}, {"dimensions": 3}, "FakeEmbeddings"),
    ],
)
def test_each_builtin_provider_builds_its_partner_embeddings_class(
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
    model: str,
    auth: dict[str, str],
    config: dict[str, Any],
    cls: str,
) -> None:
    """Credentials resolve as for chat; SDK retries are off; secrets stay SecretStr."""
    for name in (
        "OPENAI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "FIREWORKS_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.setenv(name, f"secret-{name.lower()}")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "project")
    row = LLMConfig(
        id="1",
        name="V",
        provider=provider,
        model_name=model,
        kind="embedding",
        auth_meta=auth,
        config=config,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # VertexAIEmbeddings is deprecated
        built = ProviderRegistry().build_embeddings(row)
    assert type(built).__name__ == cls
    assert "secret-" not in repr(built)
    if hasattr(built, "max_retries"):
        assert built.max_retries == 0
    if provider == "bedrock":
        assert built.config.retries["total_max_attempts"] == 1  # no SDK retry
        assert built.config.read_timeout == 3


def test_an_embedding_row_may_not_read_another_providers_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same allowlist as chat: an ollama embedding row cannot read OPENAI_API_KEY."""
    from llmpool.errors import EnvNotAllowedError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    row = LLMConfig(
        id="1",
        name="V",
        provider="ollama",
        model_name="m",
        kind="embedding",
        auth_meta={"api_key_env": "OPENAI_API_KEY"},
    )
    with pytest.raises(EnvNotAllowedError):
        ProviderRegistry().build_embeddings(row)


def test_fake_embeddings_are_deterministic_per_model_and_text() -> None:
    """Same model and text, same vector; another model, another vector."""
    a = FakeEmbeddings(model="a", dimensions=4)
    assert a.embed_query("x") == FakeEmbeddings(model="a", dimensions=4).embed_query("x")
    assert a.embed_query("x") != FakeEmbeddings(model="b", dimensions=4).embed_query("x")
    assert asyncio.run(a.aembed_documents(["x"])) == [a.embed_query("x")]
    with pytest.raises(ConnectionError, match="down"):
        FakeEmbeddings(error="down").embed_documents(["x"])


def test_the_module_functions_serve_embeddings_from_the_default_pool() -> None:
    """get_embeddings and get_embeddings_with_fallback, and their async twins."""
    import llmpool

    pool = LLMPool(InMemoryStore(seed_rows()), poll_interval=0)
    with llmpool.set_pool(pool):
        assert len(llmpool.get_embeddings().embed_query("x")) == 8
        fallback = llmpool.get_embeddings_with_fallback()
        assert fallback.embed_query("x").response_metadata["llmpool"]["name"] == "Vectors First"

        async def run() -> str:
            embeddings = await llmpool.aget_embeddings_with_fallback()
            answer = await embeddings.aembed_query("x")
            await llmpool.aget_embeddings()
            return str(answer.response_metadata["llmpool"]["name"])

        assert asyncio.run(run()) == "Vectors First"
    pool.close()


def test_a_downgrade_of_the_kinds_migration_restores_one_default_per_scope(
    migrated_url: str,
) -> None:
    """The down script drops the embedding rows, the columns and the per-kind index."""
    from pathlib import Path

    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    store.add_many([fake("Chat", 1, "hi", is_default=True), vectors_row("V", 1, is_default=True)])
    dialect = store.engine.dialect.name
    root = Path(__file__).resolve().parents[1] / "migrations_sql" / dialect / "down"
    script = (root / "0003_kinds.sql").read_text()
    with store.engine.begin() as conn:
        for statement in [s for s in script.split(";") if s.strip(" \n-")]:
            lines = [line for line in statement.splitlines() if not line.startswith("--")]
            if "\n".join(lines).strip():
                conn.exec_driver_sql("\n".join(lines))
    with store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("llms")}
        names = conn.execute(sa.text("SELECT name FROM llms")).scalars().all()
    assert "kind" not in columns and "space" not in columns
    assert names == ["Chat"]
    store.engine.dispose()


def test_a_write_conflict_on_the_default_names_the_rule(sql_store: Any) -> None:
    """Two embedding defaults by raw SQL in one scope read as a conflict with the rule named."""
    from llmpool.repository.sql.errors import db_errors

    sql_store.add_many([vectors_row("V1", 1), vectors_row("V2", 2)])
    with (
        pytest.raises((ConflictError, DatabaseError), match="one default"),
        db_errors(sql_store.engine, "set defaults"),
        sql_store.engine.begin() as conn,
    ):
        conn.execute(sa.text("UPDATE llms SET is_default = true"))


def test_without_a_label_rows_of_two_providers_are_two_spaces() -> None:
    """The same model name at two providers is two spaces: no fallback between them."""
    openai = LLMConfig(id="1", name="A", provider="openai", model_name="m", kind="embedding")
    ollama = openai.model_copy(update={"id": "2", "name": "B", "provider": "ollama"})
    assert space_of(openai) != space_of(ollama)
    with pytest.raises(MixedSpacesError, match="LLM 'A'.*LLM 'B'"):
        one_space([openai, ollama])


def test_a_scope_whose_embedding_rows_mix_spaces_is_reported_unable_to_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The write that mixes spaces is warned, and status and explain say no call can answer."""
    store = InMemoryStore([vectors_row("A", 1)])
    with caplog.at_level(logging.WARNING, logger="llmpool"):
        store.add(vectors_row("B", 2, model_name="other"))
    warned = [r for r in caplog.records if getattr(r, "event", None) == "mixed_spaces"]
    assert warned and "2 vector spaces" in warned[0].getMessage()
    pool = LLMPool(store, poll_interval=0)
    status = pool.status("global", "embedding")
    assert status["can_answer"] is False and status["answering"] is None
    assert "2 vector spaces" in (status["note"] or "")
    assert all(step.status == "skipped" for step in pool.explain("global", "embedding"))
    with pytest.raises(MixedSpacesError):
        pool.get_embeddings_with_fallback()
    assert pool.status("global", "chat")["can_answer"] is False  # no chat rows either
    pool.close()


def test_a_space_answers_with_one_length_in_every_process(sqlite_url: str) -> None:
    """A row of a space answering another length than the space first had is refused, across
    pools on one database, as in one process."""
    from llmpool.repository.sql.migrate import migrate

    migrate(sqlite_url)
    pool_one = LLMPool(sqlite_url, poll_interval=0, policy=FAST)
    store = pool_one.store
    eight = store.add(vectors_row("Eight", 1, space="s", config={"dimensions": 8}))
    store.add(vectors_row("Four", 2, space="s", config={"dimensions": 4}))
    assert len(pool_one.get_embeddings_with_fallback().embed_query("x")) == 8
    store.update(eight.id, {"config": {"dimensions": 8, "error": "refused"}})
    pool_two = LLMPool(sqlite_url, poll_interval=0, policy=FAST)  # another process's view
    with pytest.raises(AllLLMsFailedError, match="4 numbers.*has 8"):
        pool_two.get_embeddings_with_fallback().embed_query("x")
    pool_one.close()
    pool_two.close()


def test_doctor_and_chain_say_a_scope_mixing_spaces_cannot_answer(
    migrated_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``llmpool doctor`` reports the mix (exit 1), and ``chain --kind embedding`` exits 1."""
    from llmpool.cli.main import main
    from llmpool.pool.doctor import diagnose
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    store.add(vectors_row("A", 1))
    store.add(vectors_row("B", 2, model_name="other"))
    assert [f.kind for f in diagnose(store)] == ["mixed_spaces"]
    store.close()
    db = ["--database-url", migrated_url]
    assert main(["doctor", *db]) == 1
    assert "mixed_spaces" in capsys.readouterr().out
    assert main(["chain", "--kind", "embedding", *db]) == 1
    assert "2 vector spaces" in capsys.readouterr().out
