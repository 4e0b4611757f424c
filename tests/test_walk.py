"""The decision core driven on its own: plain callables as runners, no fallback chat model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.runnables import RunnableGenerator, RunnableLambda

from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.breakers import Admission, BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.routing import PriorityRouting
from llmpool.fallback.walk import Candidate, Walk
from llmpool.models import LLMConfig
from llmpool.providers.fake import FakeChatModel

QUICK = FallbackPolicy(attempts=2, backoff_initial=0.0, backoff_max=0.0, backoff_jitter=0.0)


def candidate(name: str, priority: int = 10, version: int = 1) -> Candidate:
    """A buildable candidate whose runner comes from the walk's runner lookup."""
    config = LLMConfig(
        id=f"id-{name}",
        name=name,
        provider="fake",
        model_name="m",
        priority=priority,
        version=version,
    )
    return Candidate(config, FakeChatModel())


def lookup(runners: dict[str, Callable[[Any], Any]]) -> Callable[[Candidate], Any]:
    """A runner lookup: each candidate's plain callable, as a runnable."""
    return lambda c: RunnableLambda(runners[c.config.name])


def drive(walk: Walk, input: Any = "hi") -> Any:
    """The sync shell's loop."""
    for attempt in walk:
        with attempt:
            return walk.answer(attempt, attempt.runner.invoke(input, attempt.config))
    raise walk.error()


def down(message: str = "connection refused") -> Callable[[Any], Any]:
    """A runner that fails as an unreachable provider does."""

    def run(_input: Any) -> Any:
        raise ConnectionError(message)

    return run


def test_priority_routing_orders_by_priority_then_name_and_keeps_an_ordered_input() -> None:
    """The walk tries candidates in the routed order; an ordered input is returned as is."""
    chain = (candidate("b", 5), candidate("a", 5), candidate("c", 1))
    walk = Walk(chain, policy=QUICK, breakers=BreakerBoard(), routing=PriorityRouting())
    assert [c.config.name for c in walk.candidates] == ["c", "a", "b"]
    ordered = tuple(walk.candidates)
    assert PriorityRouting().order(ordered) is ordered


def test_a_retry_then_a_fallback_answers_from_the_next_candidate() -> None:
    """A transient error is retried on its candidate, then the walk falls back to the next."""
    calls: list[str] = []

    def failing(_input: Any) -> Any:
        calls.append("a")
        raise ConnectionError("connection refused")

    def answering(_input: Any) -> str:
        calls.append("b")
        return "from b"

    walk = Walk(
        [candidate("a"), candidate("b")],
        policy=QUICK,
        breakers=BreakerBoard(),
        runner=lookup({"a": failing, "b": answering}),
    )
    assert drive(walk) == "from b"
    assert calls == ["a", "a", "b"]
    assert [a["outcome"] for a in walk.attempts] == ["error", "error", "ok"]


def test_an_open_breaker_is_skipped_without_a_call() -> None:
    """A candidate whose breaker is open is skipped and never called."""
    board = BreakerBoard()
    first = candidate("a")
    board.failure(first.key, threshold=1, cooldown=lambda trips: 60.0)
    walk = Walk(
        [first, candidate("b")],
        policy=QUICK,
        breakers=board,
        runner=lookup({"a": down(), "b": lambda _input: "from b"}),
    )
    assert drive(walk) == "from b"
    assert walk.attempts[0]["outcome"] == "skipped"


def test_an_edited_row_starts_with_a_clean_breaker() -> None:
    """A row's new version has its own board key, so the old version's open breaker is gone."""
    board = BreakerBoard()
    old, new = candidate("a", version=1), candidate("a", version=2)
    board.failure(old.key, threshold=1, cooldown=lambda trips: 60.0)
    assert old.key != new.key
    assert board.admit(new.key) is Admission.CLOSED


def test_every_candidate_cooling_forces_a_probe_of_the_first_to_reopen() -> None:
    """When every breaker is open, the candidate that reopens first is probed anyway."""
    board = BreakerBoard()
    a, b = candidate("a"), candidate("b")
    board.failure(a.key, threshold=1, cooldown=lambda trips: 60.0)
    board.failure(b.key, threshold=1, cooldown=lambda trips: 5.0)
    walk = Walk(
        [a, b],
        policy=QUICK,
        breakers=board,
        runner=lookup({"a": down(), "b": lambda _input: "probed b"}),
    )
    assert drive(walk) == "probed b"
    assert board.admit(b.key) is Admission.CLOSED


def test_the_deadline_cuts_an_attempt_in_flight_short() -> None:
    """An attempt that outlives the call's deadline is abandoned and the walk fails in time."""

    def hang(_input: Any) -> Any:
        time.sleep(5)

    # a model with no timeout of its own: the deadline must bound it
    slow = Candidate(candidate("slow").config, RunnableLambda(hang))  # type: ignore[arg-type]
    walk = Walk(
        [slow],
        policy=FallbackPolicy(attempts=1, deadline=0.3),
        breakers=BreakerBoard(),
        runner=lookup({"slow": hang}),
    )
    started = time.monotonic()
    with pytest.raises(AllLLMsFailedError, match="deadline"):
        drive(walk)
    assert time.monotonic() - started < 3


def test_a_bug_propagates_instead_of_falling_back() -> None:
    """A TypeError in a candidate is raised as is; the next candidate is never called."""
    called: list[str] = []

    def buggy(_input: Any) -> Any:
        raise TypeError("bad argument")

    walk = Walk(
        [candidate("a"), candidate("b")],
        policy=QUICK,
        breakers=BreakerBoard(),
        runner=lookup({"a": buggy, "b": lambda _input: called.append("b")}),
    )
    with pytest.raises(TypeError, match="bad argument"):
        drive(walk)
    assert called == []


def test_the_fast_path_calls_the_first_candidate_with_no_bookkeeping() -> None:
    """With no runner lookup and a healthy first candidate, one call answers the call."""
    first = Candidate.from_model(FakeChatModel(responses=["fast"]))
    walk = Walk([first], policy=QUICK, breakers=BreakerBoard())
    answer = drive(walk)
    assert answer.content == "fast"
    assert answer.response_metadata["llmpool"]["name"] == first.config.name
    assert [a["outcome"] for a in answer.response_metadata["llmpool"]["attempts"]] == ["ok"]


def stream_of(chunks: list[str], error: Exception | None) -> Callable[[Iterator[Any]], Any]:
    """A streaming runner: yields ``chunks``, then raises ``error`` if given."""

    def run(_input: Iterator[Any]) -> Iterator[str]:
        yield from chunks
        if error is not None:
            raise error

    return run


def drive_stream(walk: Walk) -> list[Any]:
    """The sync stream shell's loop."""
    out: list[Any] = []
    for attempt in walk:
        with attempt:
            assert attempt.gate is not None
            for chunk in attempt.runner.stream("hi", attempt.config):
                out.extend(attempt.gate.push(chunk))
            out.extend(attempt.gate.finish())
            return out
    raise walk.error()


def test_an_error_before_content_falls_back_and_after_it_raises_midstream() -> None:
    """The gate falls back on an error before content, and raises MidStreamError after it."""
    runners = {
        "a": RunnableGenerator(stream_of(["", ""], ConnectionError("reset"))),
        "b": RunnableGenerator(stream_of(["he", "llo"], ConnectionError("reset"))),
    }
    walk = Walk(
        [candidate("a"), candidate("b")],
        policy=FallbackPolicy(attempts=1),
        breakers=BreakerBoard(),
        runner=lambda c: runners[c.config.name],
        streaming=True,
    )
    with pytest.raises(MidStreamError) as info:
        drive_stream(walk)
    assert info.value.partial_text == "hello"
    assert info.value.llm_name == "b"
