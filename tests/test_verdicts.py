"""Falling back on a bad answer (empty, filtered, unparsable, refused by the caller's rule), with
real clients against local servers; the rejected answer's usage still counted."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from servers import Empty, OpenAIServer, Reply

from llmpool.errors import AllLLMsFailedError, BadAnswerError, InvalidOptionError, MidStreamError
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.observe import Observer
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.store import SQLStore

FAST = FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0)
ANSWER = "an answer from the secondary"


class _Attempts(Observer):
    """Keeps every attempt event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_attempt(self, event: Any) -> None:
        self.events.append(event)


@pytest.fixture
def servers() -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    """A primary's and a secondary's OpenAI servers."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        secondary.script(Reply(ANSWER))
        yield primary, secondary


def _model(
    servers: tuple[OpenAIServer, OpenAIServer], **policy: Any
) -> tuple[FallbackChatModel, _Attempts]:
    from langchain_openai import ChatOpenAI

    seen = _Attempts()
    candidates = [
        Candidate(
            LLMConfig(id=name[0].lower(), name=name, provider="openai", model_name="m"),
            ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
        )
        for name, server in zip(("Primary", "Secondary"), servers, strict=True)
    ]
    llm = FallbackChatModel(
        candidates=candidates, policy=dataclasses.replace(FAST, observers=[seen], **policy)
    )
    return llm, seen


def _rejected(seen: _Attempts) -> Any:
    """The primary's one attempt: a rejected answer, never retried."""
    first = seen.events[0]
    assert (first.llm_name, first.error_class, first.action) == (
        "Primary",
        "BadAnswerError",
        "fallback",
    )
    assert [event.llm_name for event in seen.events] == ["Primary", "Secondary"]
    return first


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_empty_answer_falls_back_and_its_usage_is_reported(
    servers: tuple[OpenAIServer, OpenAIServer], asynchronous: bool
) -> None:
    """A 200 with no content and no tool call falls back; its event carries its tokens."""
    servers[0].script(Empty())
    llm, seen = _model(servers)
    answer = await llm.ainvoke("hi") if asynchronous else llm.invoke("hi")
    assert answer.content == ANSWER
    first = _rejected(seen)
    assert first.rejected == "empty"
    assert "empty answer" in (first.reason or "")
    assert first.usage["total_tokens"] == 8
    attempts = answer.response_metadata["llmpool"]["attempts"]
    assert [a["outcome"] for a in attempts] == ["error", "ok"]


def test_content_filter_finish_falls_back(servers: tuple[OpenAIServer, OpenAIServer]) -> None:
    """An answer a content filter stopped is not the caller's answer: the next row's is."""
    servers[0].script(Reply("Here is how to", finish="content_filter"))
    llm, seen = _model(servers)
    assert llm.invoke("hi").content == ANSWER
    assert _rejected(seen).rejected == "content_filter"


def test_tool_call_without_content_is_an_answer(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """A tool call with no text is not empty: the primary's call stands."""
    servers[0].script(Reply(tool_call=("lookup", {"q": "x"})))
    llm, _ = _model(servers)

    def lookup(q: str) -> str:
        """Look something up."""
        return q

    answer = llm.bind_tools([lookup]).invoke("hi")
    assert answer.tool_calls[0]["name"] == "lookup"  # type: ignore[attr-defined]
    assert servers[1].count == 0


def test_verdicts_off_keep_the_primarys_answer(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """With ``reject=()`` an empty or filtered answer is returned as it came."""
    servers[0].script(Empty(), Reply("cut", finish="content_filter"))
    llm, _ = _model(servers, reject=frozenset())
    assert llm.invoke("hi").content == ""
    assert llm.invoke("hi").response_metadata["finish_reason"] == "content_filter"
    assert servers[1].count == 0


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_stream_filtered_before_content_falls_back_unseen(
    servers: tuple[OpenAIServer, OpenAIServer], asynchronous: bool
) -> None:
    """A stream that ends filtered with nothing sent falls back; the caller sees one answer."""
    servers[0].script(Reply("", finish="content_filter"))
    llm, seen = _model(servers)
    if asynchronous:
        chunks = [chunk async for chunk in llm.astream("hi")]
    else:
        chunks = list(llm.stream("hi"))
    assert "".join(str(chunk.content) for chunk in chunks) == ANSWER
    assert _rejected(seen).rejected == "content_filter"


def test_stream_filtered_after_content_raises_mid_stream_error(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Text already sent, then a filter's finish: MidStreamError from the BadAnswerError."""
    servers[0].script(Reply("Here is how to", finish="content_filter"))
    llm, _ = _model(servers)
    received: list[str] = []
    with pytest.raises(MidStreamError) as info:
        for chunk in llm.stream("hi"):
            received.append(str(chunk.content))
    assert info.value.partial_text == "".join(received) == "Here is how to"
    assert isinstance(info.value.__cause__, BadAnswerError)
    assert info.value.__cause__.verdict == "content_filter"
    assert servers[1].count == 0


@pytest.mark.parametrize("streaming", [False, True])
def test_call_accept_falls_back_on_the_callers_rule(
    servers: tuple[OpenAIServer, OpenAIServer], streaming: bool
) -> None:
    """A call's ``accept=`` sees each whole answer; the one it refuses falls back."""
    servers[0].script(Reply("I cannot help with that."))
    llm, seen = _model(servers)

    def helpful(message: Any) -> bool:
        return "cannot" not in str(message.content)

    if streaming:
        text = "".join(str(c.content) for c in llm.stream("hi", accept=helpful))
    else:
        text = str(llm.invoke("hi", accept=helpful).content)
    assert text == ANSWER
    first = _rejected(seen)
    assert first.rejected == "accept"
    assert "accept=test_call_accept_falls_back_on_the_callers_rule.<locals>.helpful" in (
        first.reason or ""
    )


def test_scope_accept_is_replaced_by_the_calls(
    servers: tuple[OpenAIServer, OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get_llm_with_fallback(accept=)`` judges every call; a call's ``accept=`` replaces it."""
    primary, secondary = servers
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = [
        {"name": name, "provider": "openai", "model_name": "m", "priority": priority,
         "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": server.url + "/v1"}}
        for name, priority, server in (("Primary", 1, primary), ("Secondary", 2, secondary))
    ]  # fmt: skip
    primary.script(Reply("short"), Reply("short"))
    secondary.script(Reply(ANSWER))
    pool = LLMPool(repository=InMemoryStore(rows), policy=FAST, poll_interval=0)
    try:
        llm = pool.get_llm_with_fallback(accept=lambda message: len(message.content) > 10)
        assert llm.invoke("hi").content == ANSWER
        assert llm.invoke("hi", accept=lambda message: True).content == "short"
        assert pool.get_llm_with_fallback() is not llm  # the shared live model keeps no rule
    finally:
        pool.close()


def test_every_answer_rejected_lists_each_row_and_why() -> None:
    """When every row's answer is refused, the error lists each row with its verdict."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Empty())
        secondary.script(Reply("filtered", finish="content_filter"))
        llm, _ = _model((primary, secondary))
        with pytest.raises(AllLLMsFailedError) as info:
            llm.invoke("hi")
    text = str(info.value)
    assert "1. LLM 'Primary' (id p) [openai]: BadAnswerError: an empty answer: no" in text
    assert "2. LLM 'Secondary' (id s) [openai]: BadAnswerError: a filtered answer" in text


class Person(BaseModel):
    """A person."""

    name: str
    age: int


@pytest.mark.parametrize("streaming", [False, True])
def test_invalid_structured_output_falls_back_only_when_asked(streaming: bool) -> None:
    """An answer that fails the schema falls back with ``invalid_structured`` on; else raises."""
    bad, good = Reply('{"name": "Ada"}'), Reply(json.dumps({"name": "Ada", "age": 36}))
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(bad, bad)
        secondary.script(good)
        strict, seen = _model(
            (primary, secondary), reject=frozenset({"empty", "invalid_structured"})
        )
        asked = strict.with_structured_output(Person, method="json_mode")
        person = list(asked.stream("hi"))[-1] if streaming else asked.invoke("hi")
        assert person == Person(name="Ada", age=36)
        assert _rejected(seen).rejected == "invalid_structured"
        plain, _ = _model((primary, secondary))
        with pytest.raises(ValueError, match="age"):
            plain.with_structured_output(Person, method="json_mode").invoke("hi")


def test_bad_verdict_settings_are_refused() -> None:
    """An unknown verdict and a call's ``accept`` that is not a function are refused."""
    with pytest.raises(ValueError, match="unknown verdict 'emtpy'"):
        FallbackPolicy(reject=frozenset({"emtpy"}))
    llm = FallbackChatModel(candidates=[])
    with pytest.raises(InvalidOptionError) as info:
        llm.invoke("hi", accept="yes")
    assert info.value.option == "accept"


def test_rejected_answers_tokens_and_cost_are_counted(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The usage table counts a rejected answer as the answer it was: tokens, cost, no error."""
    primary, secondary = servers
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = [
        {"name": name, "provider": "openai", "model_name": "m", "priority": priority,
         "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": server.url + "/v1", "output_cost_per_million_tokens": 200_000}}
        for name, priority, server in (("A", 1, primary), ("B", 2, secondary))
    ]  # fmt: skip
    store = SQLStore(migrated_url)
    try:
        store.add_many(rows)
    finally:
        store.close()
    primary.script(Empty())
    pool = LLMPool(
        migrated_url, poll_interval=0, listen=False, policy=FAST, usage_flush_interval=0.02
    )
    try:
        assert pool.get_llm_with_fallback().invoke("hi").content == ANSWER
    finally:
        pool.close()
    engine = sa.create_engine(migrated_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            totals = conn.execute(
                sa.text(
                    "SELECT name, SUM(calls), SUM(errors), SUM(input_tokens), "
                    "SUM(output_tokens), SUM(cost) FROM llm_usage GROUP BY name ORDER BY name"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in totals] == [("A", 1, 0, 3, 5, 1.0), ("B", 1, 0, 3, 5, 1.0)]
