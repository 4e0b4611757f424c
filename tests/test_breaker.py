"""Circuit breakers inside the fallback walk: probe slots, cooldown growth, open means no call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
from pydantic import Field
from servers import OpenAIServer, Reply, Status

from llmpool.errors import AllLLMsFailedError
from llmpool.fallback.breakers import Admission, BreakerBoard
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.providers.fake import FakeChatModel

ONE_STRIKE = FallbackPolicy(attempts=1, failure_threshold=1, cooldown=10)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def row(name: str) -> LLMConfig:
    """A fake row whose id is ``id-<name>``."""
    return LLMConfig(id=f"id-{name}", name=name, provider="fake", model_name="m")


class Scripted(FakeChatModel):
    """Raises the next exception of ``errors`` (None: answer); counts its calls."""

    errors: list[Any] = Field(default_factory=list)
    calls: int = 0

    def _attempts(self) -> tuple[float, Exception | None]:
        self.calls += 1
        return 0.0, self.errors.pop(0) if self.errors else None


class ContextTooLong(Exception):
    """A provider's context-length error (classified by its name and status)."""

    status_code = 400

    def __init__(self) -> None:
        super().__init__("This model's maximum context length is 8192 tokens")


def opened(board: BreakerBoard, clock: Clock, key: str) -> None:
    """Open ``key``'s breaker with one failure and move past its cooldown."""
    board.failure(key, threshold=1, cooldown=lambda trips: 10.0)
    assert board.admit(key) is Admission.OPEN
    clock.now += 11


@pytest.mark.parametrize(
    "error", [TypeError("a bug in the caller"), ContextTooLong()], ids=["bug", "context-length"]
)
def test_a_probe_without_a_verdict_gives_its_slot_back(error: Exception) -> None:
    """A half-open probe that ends in a bug or a context-length error frees the slot at once."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    opened(board, clock, "id-a")
    primary = Scripted(errors=[error])
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), primary), Candidate(row("b"), FakeChatModel())],
        policy=ONE_STRIKE,
        breakers=board,
    )
    with contextlib.suppress(TypeError):
        llm.invoke("hi")
    assert primary.calls == 1
    assert board.admit("id-a") is Admission.PROBE  # not locked out for the probe lease


async def test_a_cancelled_probe_gives_its_slot_back() -> None:
    """Cancelling a call that holds the probe slot frees it for the next caller."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    opened(board, clock, "id-a")
    started = asyncio.Event()

    class Slow(FakeChatModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            started.set()
            await asyncio.sleep(30)

    second = Scripted()
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), Slow()), Candidate(row("b"), second)],
        policy=ONE_STRIKE,
        breakers=board,
    )
    task = asyncio.create_task(llm.ainvoke("hi"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert second.calls == 0
    assert board.admit("id-a") is Admission.PROBE


def test_failures_of_calls_already_in_flight_do_not_grow_the_cooldown() -> None:
    """Failures landing on an open breaker keep its first cooldown; a failed probe doubles it."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    policy = FallbackPolicy(failure_threshold=2, cooldown=30)
    for _ in range(10):
        board.failure("k", threshold=2, cooldown=policy.cooldown_for)
    assert board.reopens_at("k") == clock.now + 30
    clock.now += 31
    assert board.admit("k") is Admission.PROBE
    board.failure("k", threshold=2, cooldown=policy.cooldown_for, probe=True)
    assert board.reopens_at("k") == clock.now + 60


def test_when_every_cooldown_ends_concurrent_callers_send_one_probe_each() -> None:
    """Twenty callers while both candidates cool send nothing; once the cooldowns end, exactly
    one probe per candidate goes out and the other callers fail at once."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    for key in ("id-a", "id-b"):
        board.failure(key, threshold=1, cooldown=lambda trips: 10.0)
    gate = threading.Event()

    class Held(Scripted):
        def _fail(self) -> None:
            self.calls += 1
            gate.wait(5)
            raise ConnectionError("still down")

    a, b = Held(), Held()
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), a), Candidate(row("b"), b)],
        policy=ONE_STRIKE,
        breakers=board,
    )
    errors: list[BaseException] = []

    def call() -> None:
        try:
            llm.invoke("hi")
        except AllLLMsFailedError as error:
            errors.append(error)

    for _ in range(20):
        call()
    assert (a.calls, b.calls, len(errors)) == (0, 0, 20)
    clock.now += 11
    errors.clear()
    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads[:18]:  # the callers without a probe slot fail at once
        thread.join(0.01)
    gate.set()
    for thread in threads:
        thread.join(10)
    assert (a.calls, b.calls) == (1, 1)
    assert len(errors) == 20


def test_a_failed_probe_lists_each_candidate_once_in_order() -> None:
    """Only b's cooldown ended: b alone is probed and fails; one entry per row, in order,
    chained from the probe."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    board.failure("id-b", threshold=1, cooldown=lambda trips: 5.0)  # reopens first
    for key in ("id-a", "id-c"):
        board.failure(key, threshold=1, cooldown=lambda trips: 50.0)
    clock.now += 6  # b's cooldown is over, a's and c's are not
    probe_error = ConnectionError("b is still down")
    b = Scripted(errors=[probe_error])
    llm = FallbackChatModel(
        candidates=[
            Candidate(row("a"), Scripted()),
            Candidate(row("b"), b),
            Candidate(row("c"), Scripted()),
            Candidate(row("broken"), error=ImportError("no package")),
        ],
        policy=ONE_STRIKE,
        breakers=board,
    )
    with pytest.raises(AllLLMsFailedError) as info:
        llm.invoke("hi")
    assert [f.name for f in info.value.failures] == ["a", "b", "c", "broken"]
    assert "b is still down" in info.value.failures[1].reason
    assert info.value.__cause__ is probe_error
    assert b.calls == 1


def test_an_open_breaker_sends_nothing_while_its_neighbour_is_rate_limited() -> None:
    """A cooling row next to a rate-limited one gets no request until its cooldown ends."""
    from llmpool.limits import RateLimiter

    clock = Clock()
    board = BreakerBoard(clock=clock)
    down = Scripted(errors=[ConnectionError("down")] * 50)
    limited = LLMConfig(id="id-b", name="b", provider="fake", model_name="m", rpm=1)
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), down), Candidate(limited, Scripted(responses=["b"]))],
        policy=ONE_STRIKE,
        breakers=board,
        admissions=[RateLimiter()],
    )
    assert llm.invoke("hi").content == "b"  # a fails and opens; b answers, its rpm now used
    for _ in range(5):
        with pytest.raises(AllLLMsFailedError, match="cooling down"):
            llm.invoke("hi")
    assert down.calls == 1
    clock.now += 11  # the cooldown ends: one probe, then cooling again
    for _ in range(3):
        with pytest.raises(AllLLMsFailedError):
            llm.invoke("hi")
    assert down.calls == 2


def test_with_every_row_down_each_row_is_probed_once_per_cooldown() -> None:
    """Calls while every breaker is open fail at once: one probe per row per cooldown."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    a = Scripted(errors=[ConnectionError("a down")] * 50)
    b = Scripted(errors=[ConnectionError("b down")] * 50)
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), a), Candidate(row("b"), b)],
        policy=ONE_STRIKE,
        breakers=board,
    )
    for _ in range(10):
        with pytest.raises(AllLLMsFailedError):
            llm.invoke("hi")
    assert (a.calls, b.calls) == (1, 1)
    clock.now += 11
    for _ in range(10):
        with pytest.raises(AllLLMsFailedError):
            llm.invoke("hi")
    assert (a.calls, b.calls) == (2, 2)


async def test_a_call_cancelled_in_its_retry_delay_gives_back_what_it_was_admitted() -> None:
    """Cancelled while it waits to retry, a call leaves no call counted in flight."""
    from llmpool.chain.stats import RowStats

    stats = RowStats()
    down = Scripted(errors=[ConnectionError("down")] * 5)
    llm = FallbackChatModel(
        candidates=[Candidate(row("a"), down)],
        policy=FallbackPolicy(attempts=2, backoff_initial=30, backoff_max=30, backoff_jitter=0),
        admissions=[stats],
    )
    task = asyncio.create_task(llm.ainvoke("hi"))
    for _ in range(500):  # until the first attempt failed and the retry waits
        await asyncio.sleep(0.01)
        if down.calls == 1 and stats.in_flight(llm.candidates[0]) == 1:
            break
    assert stats.in_flight(llm.candidates[0]) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stats.in_flight(llm.candidates[0]) == 0


def _openai_pair(primary: OpenAIServer, secondary: OpenAIServer) -> list[Candidate]:
    """ChatOpenAI rows ``Primary`` then ``Secondary`` against the two local servers."""
    from langchain_openai import ChatOpenAI

    return [
        Candidate(
            LLMConfig(id=f"id-{name}", name=name, provider="openai", model_name="m"),
            ChatOpenAI(model="m", api_key="k", base_url=server.url + "/v1", max_retries=0),
        )
        for name, server in (("Primary", primary), ("Secondary", secondary))
    ]


def test_a_failure_rate_opens_a_breaker_that_no_failure_streak_would() -> None:
    """Failures interleaved with answers never make 3 in a row; at 50 % of 10 calls in the
    window it opens, counting the answers before the first failure too, and the window slides."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    policy = FallbackPolicy(attempts=1, failure_threshold=3, cooldown=30)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        llm = FallbackChatModel(
            candidates=_openai_pair(primary, secondary), policy=policy, breakers=board
        )

        def served_by() -> str:
            return str(llm.invoke("hi").response_metadata["llmpool"]["name"])

        for _ in range(10):  # answers only: counted in this process, no breaker state
            assert served_by() == "Primary"
        assert board.store.get("id-Primary") is None
        primary.script(*[Status(500), Reply()] * 5, Status(500))
        for _ in range(5):
            assert (served_by(), served_by()) == ("Secondary", "Primary")
        assert served_by() == "Secondary"  # 6 failed of 21: 29 %, not enough
        assert board.admit("id-Primary") is Admission.CLOSED
        clock.now += 61  # the window slides past all of it
        primary.script(*[Status(500), Reply()] * 4, Status(500))
        for _ in range(4):
            assert (served_by(), served_by()) == ("Secondary", "Primary")
        assert board.admit("id-Primary") is Admission.CLOSED  # 4 of 8: too few calls
        assert served_by() == "Secondary"  # 5 of 9
        assert board.admit("id-Primary") is Admission.CLOSED
        primary.script(Status(500))
        assert served_by() == "Secondary"  # 6 of 10: opens
        sent = primary.count
        assert served_by() == "Secondary"
        assert primary.count == sent  # open: skipped with no request
        assert 29 < board.reopens_at("id-Primary") - clock.now <= 30


def test_a_row_counts_only_the_error_classes_its_policy_names() -> None:
    """A row with ``errors: ["retry"]`` and threshold 1: 401s never open it, one 500 does."""
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.memory import InMemoryStore

    with OpenAIServer() as server:
        server.script(*[Status(401)] * 4, Status(500))
        rows = [
            {"name": "Guarded", "provider": "openai", "model_name": "m", "priority": 1,
             "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
             "config": {"base_url": server.url + "/v1", "max_retries": 0,
                        "breaker": {"failure_threshold": 1, "errors": ["retry"]}}},
            {"name": "Backup", "provider": "fake", "model_name": "m", "priority": 2,
             "config": {"responses": ["backup"]}},
        ]  # fmt: skip
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "sk-test")
            pool = LLMPool(repository=InMemoryStore(rows), policy=ONE_STRIKE, poll_interval=0)
            try:
                llm = pool.get_llm_with_fallback()
                for _ in range(4):
                    assert llm.invoke("hi").content == "backup"
                assert server.count == 4  # the 401s did not count: still tried each time
                assert llm.invoke("hi").content == "backup"  # the 500 opens it at once
                assert llm.invoke("hi").content == "backup"
                assert server.count == 5
                shown = pool.status()["rows"][0]["breaker"]
            finally:
                pool.close()
    assert shown["state"] == "open"
    assert shown["policy"] == {
        "failure_threshold": 1, "failure_rate": 0.5, "min_calls": 10, "window": 60.0,
        "cooldown": 10, "errors": ["retry"], "overrides": ["failure_threshold", "errors"],
    }  # fmt: skip


def test_retry_after_lengthens_a_cooldown_and_no_failure_shortens_one() -> None:
    """A 429 asking 120 s opens the breaker for 120 s, not the 10 s cooldown; a call already in
    flight that fails afterwards asking less changes nothing, asking more lengthens it."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(429, headers={"retry-after": "120"}))
        llm = FallbackChatModel(
            candidates=_openai_pair(primary, secondary), policy=ONE_STRIKE, breakers=board
        )
        assert llm.invoke("hi").response_metadata["llmpool"]["name"] == "Secondary"
    assert board.reopens_at("id-Primary") == clock.now + 120
    cooldown = ONE_STRIKE.cooldown_for
    clock.now += 50  # stragglers: a plain failure, then shorter and longer Retry-After
    for hint in (0.0, 5.0, 60.0):
        assert board.failure("id-Primary", threshold=1, cooldown=cooldown, hint=hint) is None
    assert board.reopens_at("id-Primary") == clock.now + 70
    board.failure("id-Primary", threshold=1, cooldown=cooldown, hint=100.0)
    assert board.reopens_at("id-Primary") == clock.now + 100
    assert board.seems_open("id-Primary")
    clock.now += 100
    assert board.admit("id-Primary") is Admission.PROBE
    change = board.failure("id-Primary", threshold=1, cooldown=cooldown, probe=True)
    assert change is not None
    assert change.reopens_at == clock.now + 20  # a failed probe: the grown cooldown


def test_a_retry_after_past_the_longest_cooldown_is_cut_to_it() -> None:
    """A Retry-After of a day opens the breaker for ``max_cooldown`` (600 s), no longer."""
    clock = Clock()
    board = BreakerBoard(clock=clock)
    with OpenAIServer() as primary, OpenAIServer() as secondary:
        primary.script(Status(503, headers={"retry-after": "86400"}))
        llm = FallbackChatModel(
            candidates=_openai_pair(primary, secondary), policy=ONE_STRIKE, breakers=board
        )
        llm.invoke("hi")
    assert board.reopens_at("id-Primary") == clock.now + 600


def test_a_pool_reload_forgets_the_counts_of_rows_gone() -> None:
    """Answers counted in the process for a row no longer in the table are dropped."""
    board = BreakerBoard()
    window = ONE_STRIKE.breaker_rule(Candidate(row("a"))).window
    assert window is not None
    for key in ("id-a", "id-b"):
        board.passed(key, window)
    board.forget({"id-a"})
    board.failure("id-b", threshold=5, cooldown=ONE_STRIKE.cooldown_for, window=window)
    board.failure("id-a", threshold=5, cooldown=ONE_STRIKE.cooldown_for, window=window)
    calls = {key: sum(board.store.get(key).calls) for key in ("id-a", "id-b")}  # type: ignore[union-attr]
    assert calls == {"id-a": 2, "id-b": 1}
