"""Circuit breakers inside the fallback walk: probe slots, cooldown growth, open means no call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import pytest
from pydantic import Field

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
