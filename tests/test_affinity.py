"""Session affinity: a call's ``session_key`` goes first to the row that answered its session's
last call; real clients against servers on 127.0.0.1, and Redis for a fleet."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest
from servers import OpenAIServer, Status

from llmpool.chain.affinity import Affinity
from llmpool.errors import InvalidOptionError
from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('LLMPOOL_TEST_REDIS_DB', '15')}"
ONCE = FallbackPolicy(attempts=1)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    """A's server and B's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as a, OpenAIServer() as b:
        yield a, b


def rows(a: str, b: str) -> list[dict[str, Any]]:
    """A (priority 1) and B (priority 2), OpenAI rows on the two servers (ids fixed, as two
    replicas reading one table see them)."""
    return [
        {"id": f"row-{name}", "name": name, "provider": "openai", "model_name": "local",
         "priority": priority, "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": url + "/v1", "max_retries": 0}}
        for name, priority, url in (("A", 1, a), ("B", 2, b))
    ]  # fmt: skip


def session(key: str) -> dict[str, Any]:
    """The run config of a call in session ``key``."""
    return {"metadata": {"session_key": key}}


def answered_by(answer: Any) -> str:
    return str(answer.response_metadata["llmpool"]["name"])


def test_a_session_stays_on_the_row_that_answered_it_after_a_failover(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """A fails once and B answers session s1: s1's next calls go to B although A answers again;
    calls without a key, and another session, go to A by priority."""
    a, b = servers
    llm = LLMPool(InMemoryStore(rows(a.url, b.url)), poll_interval=0, track_usage=False,
                  policy=ONCE).get_llm_with_fallback()  # fmt: skip
    a.script(Status(500))
    assert answered_by(llm.invoke("hi", config=session("s1"))) == "B"
    assert answered_by(llm.invoke("again", config=session("s1"))) == "B"
    assert answered_by(llm.invoke("no key")) == "A"
    assert answered_by(llm.invoke("other", config=session("s2"))) == "A"
    assert answered_by(llm.with_config(metadata={"session_key": "s1"}).invoke("bound")) == "B"
    assert (a.count, b.count) == (3, 3)


def test_when_the_sessions_row_fails_the_call_falls_back_and_the_session_moves(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Pinned to B, B fails: A answers (no error for the caller) and s1 now stays on A."""
    a, b = servers
    llm = LLMPool(InMemoryStore(rows(a.url, b.url)), poll_interval=0, track_usage=False,
                  policy=ONCE).get_llm_with_fallback()  # fmt: skip
    a.script(Status(500))
    assert answered_by(llm.invoke("hi", config=session("s1"))) == "B"
    b.script(Status(503))
    assert answered_by(llm.invoke("hi", config=session("s1"))) == "A"
    b.script()
    assert answered_by(llm.invoke("hi", config=session("s1"))) == "A"
    assert b.count == 2


def test_streams_and_async_calls_keep_their_session(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """A stream that B answered pins its session; `ainvoke` and `astream` follow the pin."""
    a, b = servers
    llm = LLMPool(InMemoryStore(rows(a.url, b.url)), poll_interval=0, track_usage=False,
                  policy=ONCE).get_llm_with_fallback()  # fmt: skip
    a.script(Status(500))
    chunks = list(llm.stream("hi", config=session("s1")))
    assert "".join(str(c.content) for c in chunks) == "Hello from the local server."

    async def later() -> tuple[str, str]:
        answer = await llm.ainvoke("hi", config=session("s1"))
        streamed = [c async for c in llm.astream("hi", config=session("s1"))]
        return answered_by(answer), "".join(str(c.content) for c in streamed)

    assert asyncio.run(later()) == ("B", "Hello from the local server.")
    assert (a.count, b.count) == (1, 3)


def test_a_session_expires_ttl_seconds_after_its_last_call() -> None:
    """Each call renews the session; ttl seconds without one, it is gone; the oldest of more
    than ``size`` sessions is dropped."""
    now = [0.0]
    affinity = Affinity(ttl=10, size=2, clock=lambda: now[0])
    affinity.keep("s1", "B", None)
    now[0] = 9.0
    assert affinity.pinned("s1") == "B"  # renewed until 19
    now[0] = 18.0
    assert affinity.pinned("s1") == "B"
    now[0] = 28.5
    assert affinity.pinned("s1") is None
    for key in ("s2", "s3", "s4"):
        affinity.keep(key, "A", None)
    assert [affinity.pinned(k) for k in ("s2", "s3", "s4")] == [None, "A", "A"]


def test_replicas_share_sessions_through_redis_under_hashed_keys(
    servers: tuple[OpenAIServer, OpenAIServer], redis_keys: tuple[Any, str]
) -> None:
    """Replica 1's session s1 went to B: replica 2's call in s1 goes to B too. Redis holds the
    session under a hash, never the key itself, with the session's time to live."""
    a, b = servers
    client, prefix = redis_keys
    fleet = {"redis": REDIS_URL, "redis_prefix": prefix, "session_ttl": 30, "policy": ONCE}
    one = LLMPool(InMemoryStore(rows(a.url, b.url)), poll_interval=0, track_usage=False, **fleet)
    two = LLMPool(InMemoryStore(rows(a.url, b.url)), poll_interval=0, track_usage=False, **fleet)
    try:
        a.script(Status(500))
        assert (
            answered_by(one.get_llm_with_fallback().invoke("hi", config=session("user-42"))) == "B"
        )
        second = two.get_llm_with_fallback().invoke("hi", config=session("user-42"))
        assert answered_by(second) == "B"
        keys = [k.decode() for k in client.scan_iter(prefix + "session:*")]
        assert len(keys) == 1 and "user-42" not in keys[0]
        assert 0 < client.ttl(keys[0]) <= 30
    finally:
        one.close()
        two.close()


def test_a_bad_session_ttl_is_refused_naming_the_option() -> None:
    """``session_ttl`` must be a positive number of seconds."""
    with pytest.raises(InvalidOptionError) as info:
        LLMPool(InMemoryStore([]), poll_interval=0, session_ttl=0)
    assert info.value.option == "session_ttl"
