"""Failover with real clients against servers on 127.0.0.1 that fail in scripted ways."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
from servers import (
    AnthropicServer,
    Cut,
    Empty,
    Hang,
    OllamaServer,
    OpenAIServer,
    Reply,
    Status,
    closed_port_url,
)

from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

FAST = FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def servers() -> Iterator[tuple[OpenAIServer, OpenAIServer, OllamaServer, AnthropicServer]]:
    """GPT-4's, GPT-3.5's, Ollama's and Claude's servers."""
    with (
        OpenAIServer() as gpt4,
        OpenAIServer() as gpt35,
        OllamaServer() as ollama,
        AnthropicServer() as claude,
    ):
        yield gpt4, gpt35, ollama, claude


def seed_rows(gpt4: str, gpt35: str, ollama: str, claude: str) -> list[dict[str, Any]]:
    """The seed's Fallback Chain Example, pointed at local servers."""
    key = {"api_key_env": "OPENAI_API_KEY"}
    return [
        {
            "name": "Ollama Llama2",
            "provider": "ollama",
            "model_name": "llama2",
            "priority": 80,
            "is_default": True,
            "config": {"base_url": ollama},
        },
        {
            "name": "OpenAI GPT-4",
            "provider": "openai",
            "model_name": "gpt-4",
            "priority": 10,
            "auth_meta": key,
            "config": {"base_url": gpt4 + "/v1"},
        },
        {
            "name": "OpenAI GPT-3.5",
            "provider": "openai",
            "model_name": "gpt-3.5-turbo",
            "priority": 20,
            "auth_meta": key,
            "config": {"base_url": gpt35 + "/v1"},
        },
        {
            "name": "Claude 3 Opus",
            "provider": "anthropic",
            "model_name": "claude-3-opus",
            "priority": 42,
            "enabled": False,
            "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"},
            "config": {"base_url": claude},
        },
    ]


@pytest.fixture
def seed_pool(
    servers: tuple[OpenAIServer, OpenAIServer, OllamaServer, AnthropicServer],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[LLMPool]:
    """A pool over the seed's four rows, every client pointed at its local server."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    gpt4, gpt35, ollama, claude = servers
    store = InMemoryStore(seed_rows(gpt4.url, gpt35.url, ollama.url, claude.url))
    pool = LLMPool(repository=store, policy=FAST, poll_interval=0)
    yield pool
    pool.close()


def test_seed_fallback_chain_example(
    seed_pool: LLMPool, servers: tuple[OpenAIServer, OpenAIServer, OllamaServer, AnthropicServer]
) -> None:
    """GPT-4 fails, GPT-3.5 fails, Ollama answers; the disabled Claude is never contacted."""
    gpt4, gpt35, ollama, claude = servers
    gpt4.script(Status(500), Status(500))
    gpt35.script(Status(503), Status(503))
    ollama.script(Reply("Machine learning is learning from data."))
    answer = seed_pool.get_llm_with_fallback().invoke("Explain machine learning")
    assert answer.content == "Machine learning is learning from data."
    meta = answer.response_metadata["llmpool"]
    assert meta["name"] == "Ollama Llama2"
    assert [(a["name"], a["outcome"]) for a in meta["attempts"]] == [
        ("OpenAI GPT-4", "error"),
        ("OpenAI GPT-4", "error"),
        ("OpenAI GPT-3.5", "error"),
        ("OpenAI GPT-3.5", "error"),
        ("Ollama Llama2", "ok"),
    ]
    assert (gpt4.count, gpt35.count, ollama.count, claude.count) == (2, 2, 1, 0)


def _failures(error: AllLLMsFailedError) -> list[tuple[str, str]]:
    return [(f.name, f.reason.split(":")[0]) for f in error.failures]


def test_same_fault_script_sync_and_async_gives_same_order_and_error(
    seed_pool: LLMPool, servers: tuple[OpenAIServer, OpenAIServer, OllamaServer, AnthropicServer]
) -> None:
    """invoke and ainvoke walk the same attempts and raise the same error."""
    gpt4, gpt35, ollama, _claude = servers
    script = ((Status(500), Status(500)), (Status(401),), (Status(429), Status(429)))
    results = []
    for mode in ("sync", "async"):
        for server, behaviours in zip((gpt4, gpt35, ollama), script, strict=True):
            server.requests.clear()
            server.script(*behaviours)
        llm = seed_pool.get_llm_with_fallback(policy=FAST)
        with pytest.raises(AllLLMsFailedError) as info:
            if mode == "sync":
                llm.invoke("hi")
            else:
                asyncio.run(llm.ainvoke("hi"))
        results.append((_failures(info.value), gpt4.count, gpt35.count, ollama.count))
        seed_pool.breakers = BreakerBoard()
        seed_pool._live.clear()
    assert results[0] == results[1]
    failures, *counts = results[0]
    assert failures == [
        ("OpenAI GPT-4", "OpenAIAPIError (HTTP 500)"),
        ("OpenAI GPT-3.5", "OpenAIAuthenticationError (HTTP 401)"),
        ("Ollama Llama2", "ResponseError (HTTP 429)"),
    ]
    assert counts == [2, 1, 2]
    assert str(info.value).startswith("All LLMs failed in scope 'global':")
    assert isinstance(info.value, RuntimeError)
    assert info.value.__cause__ is info.value.failures[-1].error


def test_attempts_are_policy_attempts_times_candidates_never_sdk_retries() -> None:
    """With 3 attempts and 2 failing candidates the servers see exactly 6 requests."""
    with OpenAIServer() as a, OpenAIServer() as b:
        a.script(*[Status(500)] * 10)
        b.script(*[Status(502)] * 10)
        pool = LLMPool(
            repository=InMemoryStore(
                [
                    {
                        "name": "A",
                        "provider": "openai",
                        "model_name": "m",
                        "priority": 1,
                        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                        "config": {"base_url": a.url},
                    },
                    {
                        "name": "B",
                        "provider": "openai",
                        "model_name": "m",
                        "priority": 2,
                        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                        "config": {"base_url": b.url},
                    },
                ]
            ),
            policy=FallbackPolicy(
                attempts=3, backoff_initial=0.001, backoff_jitter=0, failure_threshold=100
            ),
            poll_interval=0,
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "sk-x")
            with pytest.raises(AllLLMsFailedError):
                pool.get_llm_with_fallback().invoke("hi")
        assert (a.count, b.count) == (3, 3)


def _pair(primary_url: str, secondary: OpenAIServer, **config: Any) -> list[Candidate]:
    from langchain_openai import ChatOpenAI

    rows = [
        LLMConfig(id="p", name="Primary", provider="openai", model_name="m"),
        LLMConfig(id="s", name="Secondary", provider="openai", model_name="m"),
    ]
    return [
        Candidate(
            rows[0],
            ChatOpenAI(
                model="m", api_key="k", base_url=primary_url + "/v1", max_retries=0, **config
            ),
        ),
        Candidate(
            rows[1],
            ChatOpenAI(model="m", api_key="k", base_url=secondary.url + "/v1", max_retries=0),
        ),
    ]


def test_dead_primary_behind_an_open_breaker_costs_no_network_call() -> None:
    """After K failures the primary is skipped without a request; one probe after cooldown."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    policy = FallbackPolicy(attempts=1, failure_threshold=2, cooldown=30)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(*[Status(500)] * 3)
        llm = FallbackChatModel(
            candidates=_pair(primary.url, secondary), policy=policy, breakers=board
        )
        for _ in range(2):
            assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Secondary"
        assert primary.count == 2
        for _ in range(5):
            answer = llm.invoke("hi")
        assert primary.count == 2  # open: skipped with no network call
        assert answer.response_metadata["llmpool"]["attempts"][0]["outcome"] == "skipped"
        clock.now += 31
        llm.invoke("hi")  # the half-open probe fails: reopened, with a longer cooldown
        assert primary.count == 3
        clock.now += 31
        llm.invoke("hi")
        assert primary.count == 3  # the second cooldown is longer (60 s)
        clock.now += 30
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Primary"
        assert primary.count == 4
        llm.invoke("hi")
        assert primary.count == 5  # closed again


def test_every_candidate_cooling_fails_at_once_until_a_cooldown_ends() -> None:
    """When all breakers are open, a call sends nothing; once the primary's cooldown ends, its
    probe answers."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    policy = FallbackPolicy(attempts=1, failure_threshold=1, cooldown=30)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(500))
        secondary.script(Status(500))
        llm = FallbackChatModel(
            candidates=_pair(primary.url, secondary), policy=policy, breakers=board
        )
        with pytest.raises(AllLLMsFailedError):
            llm.invoke("hi")
        clock.now += 5
        with pytest.raises(AllLLMsFailedError, match="cooling down"):
            llm.invoke("hi")
        assert (primary.count, secondary.count) == (1, 1)
        clock.now += 30
        answer = llm.invoke("hi")
        assert answer.response_metadata["llmpool"]["name"] == "Primary"
        assert (primary.count, secondary.count) == (2, 1)


@pytest.mark.parametrize(
    ("fault", "requests"),
    [
        (Status(401), 1),  # auth: fall back without retrying
        (Status(403), 1),
        (Status(400, context_length=True), 1),  # context length: fall back at once
        (Status(429, headers={"retry-after": "0"}), 2),  # rate limit: retried, then fall back
        (Status(500), 2),
        (Hang(5), 2),  # per-attempt timeout from the row's config
    ],
)
def test_fault_kinds_retry_or_fall_back(fault: Any, requests: int) -> None:
    """Each kind of provider error is retried or not, then falls back to the next candidate."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(fault, fault)
        llm = FallbackChatModel(candidates=_pair(primary.url, secondary, timeout=0.3), policy=FAST)
        answer = llm.invoke("hi")
        assert answer.response_metadata["llmpool"]["name"] == "Secondary"
        assert primary.count == requests


def test_context_length_does_not_count_against_the_breaker() -> None:
    """A too-long prompt is the request's fault: the candidate's breaker stays closed."""
    board = BreakerBoard()
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(*[Status(400, context_length=True)] * 5)
        llm = FallbackChatModel(
            candidates=_pair(primary.url, secondary),
            policy=FallbackPolicy(attempts=1, failure_threshold=1),
            breakers=board,
        )
        for _ in range(3):
            llm.invoke("a very long prompt")
        assert primary.count == 3


def test_refused_connection_falls_back() -> None:
    """A real ChatOpenAI pointed at a closed port fails over to the next candidate."""
    with OpenAIServer() as secondary:
        llm = FallbackChatModel(candidates=_pair(closed_port_url(), secondary), policy=FAST)
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Secondary"


def test_stream_error_before_first_chunk_falls_back_transparently() -> None:
    """A stream that fails before any chunk switches to the next candidate, unseen."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(500), Status(500))
        secondary.script(Reply("streamed answer from secondary"))
        llm = FallbackChatModel(candidates=_pair(primary.url, secondary), policy=FAST)
        chunks = list(llm.stream("hi"))
        assert "".join(str(c.content) for c in chunks) == "streamed answer from secondary"
        first_meta = next(c for c in chunks if "llmpool" in c.response_metadata)
        assert first_meta.response_metadata["llmpool"]["name"] == "Secondary"


def test_stream_cut_after_chunks_raises_mid_stream_error_with_partial_text() -> None:
    """A stream cut after chunks raises MidStreamError; no switch, no duplicated text."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Cut(after=2, text="one two three four five six"))
        llm = FallbackChatModel(candidates=_pair(primary.url, secondary), policy=FAST)
        received: list[str] = []
        with pytest.raises(MidStreamError) as info:
            for chunk in llm.stream("hi"):
                received.append(str(chunk.content))
        assert info.value.partial_text == "".join(received)
        assert info.value.partial_text.startswith("one two")
        assert info.value.llm_name == "Primary"
        assert secondary.count == 0


async def test_astream_cut_and_empty_stream() -> None:
    """astream raises MidStreamError on a cut stream; an empty stream is a valid answer once
    the empty-answer verdict is off (by default it falls back: see test_verdicts)."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Cut(after=1), Empty())
        keep_empty = dataclasses.replace(FAST, reject=frozenset({"content_filter"}))
        llm = FallbackChatModel(candidates=_pair(primary.url, secondary), policy=keep_empty)
        with pytest.raises(MidStreamError):
            async for _chunk in llm.astream("hi"):
                pass
        text = "".join([str(c.content) async for c in llm.astream("hi")])
        assert text == ""
        assert secondary.count == 0
