"""Rate limits per row (rpm, tpm): local windows, Redis-shared windows, Redis down."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import fake, forked
from servers import OpenAIServer

from llmpool import LLMPool
from llmpool.errors import AllLLMsFailedError
from llmpool.limits import LocalLimits, WindowUse
from llmpool.limits.redis import RedisLimits
from llmpool.repository.memory import InMemoryStore

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"
ROW_A = "00000000-0000-4000-8000-0000000000a1"


class Clock:
    """A settable clock for the windows."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _worst_window(times: list[float], window: float) -> int:
    # The most entries in any half-open window [t, t + window) starting at an entry.
    times = sorted(times)
    worst, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        worst = max(worst, end - start + 1)
    return worst


def _name(answer: Any) -> str:
    return str(answer.response_metadata["llmpool"]["name"])


def test_rpm_60_never_takes_more_than_60_in_any_window_and_overflow_goes_on() -> None:
    """rpm=60: at most 60 calls to the row in any 60 s; the rest go to the next row."""
    clock = Clock()
    store = InMemoryStore([fake("A", 1, "a", rpm=60), fake("B", 2, "b")])
    pool = LLMPool(store, poll_interval=0, limits=LocalLimits(clock=clock))
    to_a: list[float] = []
    try:
        llm = pool.get_llm_with_fallback()
        for _ in range(400):  # 100 s at 4 calls a second
            if _name(llm.invoke("hi")) == "A":
                to_a.append(clock.now)
            clock.now += 0.25
    finally:
        pool.close()
    assert _worst_window(to_a, 60.0) == 60
    assert len(to_a) == 120  # the window freed once: A answered again after 60 s
    assert to_a[60] >= to_a[0] + 60.0


def test_a_row_at_its_limit_is_skipped_with_the_reason_and_retried_when_free() -> None:
    """The skip reason says the limit and when the window frees; the row returns after it."""
    clock = Clock()
    store = InMemoryStore([fake("A", 1, "a", rpm=2), fake("B", 2, "b")])
    pool = LLMPool(store, poll_interval=0, limits=LocalLimits(clock=clock))
    try:
        llm = pool.get_llm_with_fallback()
        assert [_name(llm.invoke("hi")) for _ in range(2)] == ["A", "A"]
        clock.now += 48.2
        meta = llm.invoke("hi").response_metadata["llmpool"]
        assert meta["name"] == "B"
        assert meta["attempts"][0]["reason"] == "rate limited: rpm 2/2, frees in 12 s"
        clock.now += 12.0
        assert _name(llm.invoke("hi")) == "A"
    finally:
        pool.close()


def test_every_row_at_its_limit_raises_all_failed_listing_the_reasons() -> None:
    """When no row has room, the error lists each row as rate limited (no network call)."""
    store = InMemoryStore([fake("A", 1, "a", rpm=1), fake("B", 2, "b", rpm=1)])
    pool = LLMPool(store, poll_interval=0)
    try:
        llm = pool.get_llm_with_fallback()
        llm.invoke("hi")
        llm.invoke("hi")
        with pytest.raises(AllLLMsFailedError) as caught:
            llm.invoke("hi")
    finally:
        pool.close()
    reasons = [failure.reason for failure in caught.value.failures]
    assert all(reason.startswith("rate limited: rpm 1/1") for reason in reasons), reasons


class _Timed(OpenAIServer):
    """An OpenAI server that notes when each request arrived (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    def _record(self, request: Any) -> None:
        arrived = time.monotonic()
        with self._lock:
            self.arrivals.append(arrived)
        super()._record(request)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Timed]:
    """A local OpenAI server (its answers use 8 tokens)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with _Timed() as running:
        yield running  # type: ignore[misc]


def _openai(name: str, priority: int, url: str, **values: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "openai",
        "model_name": "gpt-4",
        "priority": priority,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"base_url": url + "/v1", "max_retries": 0},
        **values,
    }


def test_tpm_counts_the_answers_usage_metadata(server: OpenAIServer) -> None:
    """tpm counts each answer's tokens; a row past its tokens is skipped until they leave."""
    clock = Clock()
    store = InMemoryStore([_openai("A", 1, server.url, tpm=20), fake("B", 2, "b")])
    pool = LLMPool(store, poll_interval=0, limits=LocalLimits(clock=clock))
    try:
        llm = pool.get_llm_with_fallback()
        names = [_name(llm.invoke("hi")) for _ in range(4)]  # 8 + 8 + 8 tokens: 24 >= 20
        assert names == ["A", "A", "A", "B"]
        assert pool.limiter.use(pool.chains.get("global").candidates[0]).tokens == 24
        clock.now += 61
        assert _name(llm.invoke("hi")) == "A"
    finally:
        pool.close()
    assert server.count == 4


def test_a_limit_set_live_applies_to_the_running_pool() -> None:
    """Setting rpm on a row of a running pool limits its next calls."""
    store = InMemoryStore([fake("A", 1, "a"), fake("B", 2, "b")])
    pool = LLMPool(store, poll_interval=0)
    try:
        llm = pool.get_llm_with_fallback()
        assert {_name(llm.invoke("hi")) for _ in range(5)} == {"A"}
        store.update(store.list_llms()[0].id, {"rpm": 1})
        assert [_name(llm.invoke("hi")) for _ in range(3)] == ["A", "B", "B"]
    finally:
        pool.close()


def test_the_limiter_is_left_out_of_chains_without_limits() -> None:
    """A chain whose rows have no limit carries no rate-limit check at all."""
    store = InMemoryStore([fake("A", 1, "a")])
    pool = LLMPool(store, poll_interval=0, track_usage=False)
    try:
        assert pool.limiter not in pool.chains.get("global").checks
        store.update(store.list_llms()[0].id, {"rpm": 5})
        assert pool.limiter in pool.chains.get("global").checks
    finally:
        pool.close()


def test_local_limits_give_back_an_unused_request() -> None:
    """give_back returns the newest request of the window."""
    limits = LocalLimits(clock=Clock())
    assert limits.take("k", 1, None) is None
    assert limits.take("k", 1, None) is not None
    limits.give_back("k")
    assert limits.take("k", 1, None) is None


def test_redis_limits_share_one_window_between_two_pools(redis_keys: tuple[Any, str]) -> None:
    """Two pools on one Redis share the row's window: together they take rpm calls."""
    _, prefix = redis_keys
    rows = [fake("A", 1, "a", rpm=3, id=ROW_A), fake("B", 2, "b")]
    pools = [
        LLMPool(InMemoryStore(rows), poll_interval=0, limits=RedisLimits(REDIS_URL, prefix=prefix))
        for _ in range(2)
    ]
    try:
        llms = [pool.get_llm_with_fallback() for pool in pools]
        names = [_name(llms[i % 2].invoke("hi")) for i in range(6)]
        use = pools[0].limiter.use(pools[0].chains.get("global").candidates[0])
    finally:
        for pool in pools:
            pool.close()
    assert names == ["A", "A", "A", "B", "B", "B"]
    assert use.requests == 3


def test_redis_tpm_and_give_back(redis_keys: tuple[Any, str]) -> None:
    """The Redis store counts tokens and gives a request back, like the local one."""
    _, prefix = redis_keys
    limits = RedisLimits(REDIS_URL, prefix=prefix)
    assert limits.take("k", 1, 10) is None
    refusal = limits.take("k", 1, 10)
    assert refusal is not None and refusal.startswith("rate limited: rpm 1/1, frees in")
    limits.give_back("k")
    limits.add_tokens("k", 12)
    assert limits.use("k") == WindowUse(0, 12)
    refusal = limits.take("k", 1, 10)
    assert refusal is not None and refusal.startswith("rate limited: tpm 12/10")


def test_redis_unavailable_counts_per_process_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis down, limits are counted in the process, a WARNING says so, calls flow."""
    limits = RedisLimits("redis://127.0.0.1:1/0", prefix="x:")
    store = InMemoryStore([fake("A", 1, "a", rpm=2), fake("B", 2, "b")])
    with caplog.at_level("WARNING", logger="llmpool.limits.redis"):
        pool = LLMPool(store, poll_interval=0, limits=limits)
        try:
            llm = pool.get_llm_with_fallback()
            names = [_name(llm.invoke("hi")) for _ in range(5)]
        finally:
            pool.close()
    assert names == ["A", "A", "B", "B", "B"]
    warnings = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelname == "WARNING"


_IMPORTS = """
import json, time
import langchain_openai  # the model each process builds, imported once before the fork
from llmpool import LLMPool
from llmpool.limits.redis import RedisLimits
from llmpool.repository.memory import InMemoryStore
"""

_WORKER = textwrap.dedent(
    """
    rows = [
        {{"id": {row!r}, "name": "A", "provider": "openai", "model_name": "gpt-4",
          "priority": 1, "rpm": {rpm}, "auth_meta": {{"api_key_env": "OPENAI_API_KEY"}},
          "config": {{"base_url": {url!r} + "/v1", "max_retries": 0}}}},
        {{"name": "B", "provider": "fake", "model_name": "m", "priority": 2,
          "config": {{"responses": ["b"]}}}},
    ]
    limits = RedisLimits({redis!r}, prefix={prefix!r}, window={window}, margin={margin})
    pool = LLMPool(InMemoryStore(rows), poll_interval=0, limits=limits, track_usage=False)
    llm = pool.get_llm_with_fallback()
    llm.invoke("warm")  # builds the models (B answers if A is full)
    open({ready!r} + str(_os.getpid()), "w").close()
    while not _os.path.exists({go!r}):
        time.sleep(0.01)
    end = time.monotonic() + {seconds}
    names = []
    while time.monotonic() < end:
        names.append(llm.invoke("hi").response_metadata["llmpool"]["name"])
        time.sleep(0.02)
    pool.close()
    _emit(names)
    """
)


def test_rpm_is_shared_by_4_processes_through_redis(
    redis_keys: tuple[Any, str], server: _Timed, tmp_path: Path
) -> None:
    """4 processes sharing Redis never send the row more than rpm requests in any window (each
    alone would send up to rpm)."""
    _, prefix = redis_keys
    rpm, window, seconds, processes = 10, 1.0, 2.0, 4
    body = _WORKER.format(
        row=ROW_A,
        rpm=rpm,
        url=server.url,
        redis=REDIS_URL,
        prefix=prefix,
        window=window,
        margin=0.1,
        ready=str(tmp_path / "ready-"),
        go=str(tmp_path / "go"),
        seconds=seconds,
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    workers = subprocess.Popen(
        [sys.executable, "-c", forked(_IMPORTS, body, processes)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("ready-*"))) < processes:
            assert time.monotonic() < deadline, "the workers did not start"
            assert workers.poll() is None, workers.communicate()[1][-2000:]
            time.sleep(0.05)
        warm = server.count
        started = time.monotonic()
        (tmp_path / "go").touch()
        out, err = workers.communicate(timeout=120)
    finally:
        if workers.poll() is None:
            workers.kill()
    import json

    assert workers.returncode == 0, err[-2000:]
    lists = [json.loads(line) for line in out.decode().splitlines()]
    assert len(lists) == processes
    names = [name for names in lists for name in names]
    arrivals = server.arrivals[warm:]
    worst = _worst_window(arrivals, window)
    print(f"{processes} processes, rpm {rpm} per {window} s: worst {worst}, calls {len(names)}")
    assert worst <= rpm
    assert names.count("A") == len(arrivals)
    assert names.count("A") >= rpm * (seconds / window - 1)  # the row was used to its limit
    assert len(names) > names.count("A")  # overflow answered by B, never an error
    assert time.monotonic() - started < 60


def test_a_retry_is_admitted_again_and_skipped_when_the_row_is_full() -> None:
    """A retry is a new request: with the row's window full it is skipped to the next row."""
    from llmpool.contracts import Candidate
    from llmpool.fallback.model import FallbackChatModel
    from llmpool.fallback.policy import FallbackPolicy
    from llmpool.limits import RateLimiter
    from llmpool.models import LLMConfig
    from llmpool.providers.fake import FakeChatModel

    def row(name: str, priority: int, **values: Any) -> LLMConfig:
        return LLMConfig(
            id=name, name=name, provider="fake", model_name="m", priority=priority, **values
        )

    limiter = RateLimiter(LocalLimits(clock=Clock()))
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("A", 1, rpm=1), FakeChatModel(error="connection refused")),
            Candidate(row("B", 2), FakeChatModel(responses=["b"])),
        ],
        policy=FallbackPolicy(attempts=3, backoff_initial=0.0, backoff_jitter=0.0),
        admissions=(limiter,),
    )
    attempts = llm.invoke("hi").response_metadata["llmpool"]["attempts"]
    assert [(a["name"], a["outcome"]) for a in attempts] == [
        ("A", "error"),
        ("A", "skipped"),
        ("B", "ok"),
    ]
    assert attempts[1]["reason"].startswith("rate limited: rpm 1/1")
