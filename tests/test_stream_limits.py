"""Stream limits (``ttft_timeout``, ``stall_timeout``) with real clients against local servers
that stall before the first chunk, trickle, stall mid-answer and cut the connection."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from servers import Cut, Hang, OpenAIServer, Reply, Stall, Trickle

from llmpool.errors import InvalidConfigError, InvalidOptionError, MidStreamError
from llmpool.fallback.bounded import StreamStalledError
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.observe import Observer
from llmpool.pool.facade import LLMPool
from llmpool.providers import ConfigKeysCheck
from llmpool.repository.sql.store import SQLStore

FAST = FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0)
ANSWER = "streamed answer from secondary"


@pytest.fixture
def servers() -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    """A primary's and a secondary's OpenAI servers."""
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        secondary.script(Reply(ANSWER))
        yield primary, secondary


def _pair(primary: OpenAIServer, secondary: OpenAIServer) -> list[Candidate]:
    from langchain_openai import ChatOpenAI

    return [
        Candidate(
            LLMConfig(id=name[0].lower(), name=name, provider="openai", model_name="m"),
            ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
        )
        for name, server in (("Primary", primary), ("Secondary", secondary))
    ]


def _text(chunks: list[Any]) -> str:
    return "".join(str(chunk.content) for chunk in chunks)


class _Attempts(Observer):
    """Keeps every attempt event."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_attempt(self, event: Any) -> None:
        self.events.append(event)

    def stalled(self, limit: str) -> Any:
        """The primary's one attempt: stopped by ``limit`` long before the server's 30 s."""
        first = self.events[0]
        outcome = (first.llm_name, first.error_class, first.action)
        assert outcome == ("Primary", "StreamStalledError", "fallback")
        assert limit in (first.reason or "")
        assert first.latency < 2.5
        assert [e.llm_name for e in self.events] == ["Primary", "Secondary"]  # never retried
        return first


def _watched(**limits: Any) -> tuple[FallbackPolicy, _Attempts]:
    seen = _Attempts()
    policy = FallbackPolicy(attempts=2, backoff_initial=0.001, observers=[seen], **limits)
    return policy, seen


def test_row_ttft_timeout_falls_back_from_a_server_that_never_answers(
    migrated_url: str,
    servers: tuple[OpenAIServer, OpenAIServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row's config.ttft_timeout, stored in the table, ends a stream with no byte at all:
    the next row answers."""
    primary, secondary = servers
    primary.script(Hang(30))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = [
        {"name": name, "provider": "openai", "model_name": "m", "priority": priority,
         "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": server.url + "/v1", "ttft_timeout": 0.3}}
        for name, priority, server in (("Primary", 1, primary), ("Secondary", 2, secondary))
    ]  # fmt: skip
    policy, seen = _watched()
    store = SQLStore(migrated_url)
    try:
        store.add_many(rows)
    finally:
        store.close()
    pool = LLMPool(migrated_url, policy=policy, poll_interval=0, listen=False)
    try:
        chunks = list(pool.get_llm_with_fallback().stream("hi"))
    finally:
        pool.close()
    assert _text(chunks) == ANSWER
    assert chunks[0].response_metadata["llmpool"]["name"] == "Secondary"
    seen.stalled("0.3s ttft_timeout")


def test_call_stall_timeout_falls_back_when_the_stream_stops_before_content(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """The opening chunk, then silence: a call's stall_timeout falls back, unseen."""
    primary, secondary = servers
    primary.script(Stall(after=0, seconds=30))
    policy, seen = _watched()
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=policy)
    chunks = list(llm.stream("hi", stall_timeout=0.3))
    assert _text(chunks) == ANSWER
    seen.stalled("no chunk for 0.3s (its stall_timeout)")


async def test_astream_stall_timeout_falls_back_before_content(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """The async stream falls back on a stall before content, as the sync one does."""
    primary, secondary = servers
    primary.script(Stall(after=0, seconds=30))
    policy, seen = _watched()
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=policy)
    chunks = [chunk async for chunk in llm.astream("hi", stall_timeout=0.3)]
    assert _text(chunks) == ANSWER
    seen.stalled("stall_timeout")


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_ttft_timeout_catches_a_trickle_the_stall_timeout_lets_through(
    servers: tuple[OpenAIServer, OpenAIServer], asynchronous: bool
) -> None:
    """Empty chunks every 0.1 s keep a stall limit quiet; the first-content limit ends them."""
    primary, secondary = servers
    primary.script(Trickle(every=0.1, idle=300))
    policy, seen = _watched(ttft_timeout=0.5, stall_timeout=1.0)
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=policy)
    if asynchronous:
        chunks = [chunk async for chunk in llm.astream("hi")]
    else:
        chunks = list(llm.stream("hi"))
    assert _text(chunks) == ANSWER
    seen.stalled("0.5s ttft_timeout")


def test_a_slow_live_stream_within_its_limits_is_not_cut(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Chunks 0.05 s apart under a 1 s stall limit: the primary's whole answer, no switch."""
    primary, secondary = servers
    primary.script(Trickle(every=0.05, text="slow but steady words"))
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=FAST)
    chunks = list(llm.stream("hi", ttft_timeout=1.0, stall_timeout=1.0))
    assert _text(chunks) == "slow but steady words"
    assert secondary.count == 0


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_stall_after_content_raises_mid_stream_error(
    servers: tuple[OpenAIServer, OpenAIServer], asynchronous: bool
) -> None:
    """A stall after content raises MidStreamError with the text sent, from the stall."""
    primary, secondary = servers
    primary.script(Stall(after=2, seconds=30, text="one two three four five six"))
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=FAST)
    received: list[str] = []
    with pytest.raises(MidStreamError) as info:
        if asynchronous:
            async for chunk in llm.astream("hi", stall_timeout=0.3):
                received.append(str(chunk.content))
        else:
            for chunk in llm.stream("hi", stall_timeout=0.3):
                received.append(str(chunk.content))
    assert info.value.partial_text == "".join(received) == "one two three four "
    assert isinstance(info.value.__cause__, StreamStalledError)
    assert secondary.count == 0


def test_cut_before_content_falls_back_with_limits_set(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """A connection cut before content falls back under the limits as without them."""
    primary, secondary = servers
    primary.script(Cut(after=0), Cut(after=0))
    llm = FallbackChatModel(candidates=_pair(primary, secondary), policy=FAST)
    chunks = list(llm.stream("hi", ttft_timeout=2.0, stall_timeout=2.0))
    assert _text(chunks) == ANSWER


def test_limits_do_not_touch_invoke(servers: tuple[OpenAIServer, OpenAIServer]) -> None:
    """A call's stream limits are taken out of its keywords: invoke answers as before."""
    primary, _ = servers
    primary.script(Reply("plain"))
    llm = FallbackChatModel(candidates=_pair(*servers), policy=FAST)
    assert llm.invoke("hi", ttft_timeout=0.5, stall_timeout=0.5).content == "plain"


@pytest.mark.parametrize("value", [0, -1, float("inf"), "5", True])
def test_bad_limits_are_refused_naming_where_they_were_set(value: Any) -> None:
    """A bad limit is refused on the row (row and field named), the call and the policy."""
    row = LLMConfig(
        id="r1", name="Row", provider="openai", model_name="m", config={"ttft_timeout": value}
    )
    with pytest.raises(InvalidConfigError) as info:
        ConfigKeysCheck()(row)
    assert info.value.field == "config.ttft_timeout"
    assert "'Row'" in str(info.value) and "r1" in str(info.value)
    llm = FallbackChatModel(candidates=[])
    with pytest.raises(InvalidOptionError) as call_info:
        list(llm.stream("hi", stall_timeout=value))
    assert call_info.value.option == "stall_timeout"
    with pytest.raises(ValueError, match="FallbackPolicy.ttft_timeout"):
        FallbackPolicy(ttft_timeout=value)


def test_row_limits_pass_the_key_check_and_never_reach_the_client() -> None:
    """The limits are llmpool's keys: accepted for any provider, kept from its client."""
    from llmpool.providers import get_registry

    row = LLMConfig(
        id="r1", name="Row", provider="openai", model_name="m",
        auth_meta={"api_key_env": "OPENAI_API_KEY"},
        config={"ttft_timeout": 2, "stall_timeout": 1.5, "temperature": 0},
    )  # fmt: skip
    ConfigKeysCheck()(row)
    model = get_registry().build(row, environ={"OPENAI_API_KEY": "sk-x"})
    assert model.temperature == 0  # type: ignore[attr-defined]
