"""The decision core driven on its own: plain callables as calls, no fallback chat model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from llmpool.chain.builder import ScopeChain
from llmpool.chain.routing import PriorityRouting
from llmpool.contracts import Candidate
from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.breakers import Admission, BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.walk import Plan, Walk
from llmpool.models import LLMConfig
from llmpool.providers.fake import FakeChatModel

QUICK = FallbackPolicy(attempts=2, backoff_initial=0.0, backoff_max=0.0, backoff_jitter=0.0)


def candidate(name: str, priority: int = 10, version: int = 1) -> Candidate:
    """A buildable candidate whose call comes from the walk's lookup."""
    config = LLMConfig(
        id=f"id-{name}",
        name=name,
        provider="fake",
        model_name="m",
        priority=priority,
        version=version,
    )
    return Candidate(config, FakeChatModel())


class Call:
    """A plain callable as an attempt's call, with the timeout its client would have."""

    def __init__(self, run: Callable[[Any], Any], timeout: float = 1.0) -> None:
        self.run = run
        self.timeout = timeout

    def generate(self, request: Any) -> Any:
        return self.run(request)

    def stream(self, request: Any) -> Iterator[Any]:
        return self.run(request)  # type: ignore[no-any-return]


def walk_of(
    candidates: list[Candidate],
    runs: dict[str, Callable[[Any], Any]],
    policy: FallbackPolicy = QUICK,
    breakers: BreakerBoard | None = None,
    **options: Any,
) -> Walk:
    """A walk over a static chain, each candidate calling its plain callable."""
    calls = {name: Call(run) for name, run in runs.items()}
    chain = ScopeChain(None, "chat", 0, tuple(candidates), options.pop("routing", None))
    plan = Plan(chain, policy, breakers or BreakerBoard(), lambda c: calls[c.config.name])
    return Walk(plan, **options)


def drive(walk: Walk, request: Any = "hi") -> tuple[Any, dict[str, Any]]:
    """The sync shell's loop: the answer and its metadata."""
    for attempt in walk:
        with attempt:
            answer = attempt.call.generate(request)
            return answer, walk.answer(attempt)
    raise walk.error()


def down(message: str = "connection refused") -> Callable[[Any], Any]:
    """A call that fails as an unreachable provider does."""

    def run(_request: Any) -> Any:
        raise ConnectionError(message)

    return run


def test_priority_routing_orders_by_priority_then_name_and_keeps_an_ordered_input() -> None:
    """The walk tries candidates in the routed order; an ordered input is returned as is."""
    chain = [candidate("b", 5), candidate("a", 5), candidate("c", 1)]
    walk = walk_of(chain, {}, routing=PriorityRouting())
    assert [c.config.name for c in walk.candidates] == ["c", "a", "b"]
    ordered = tuple(walk.candidates)
    assert PriorityRouting().order(ordered) is ordered


def test_a_retry_then_a_fallback_answers_from_the_next_candidate() -> None:
    """A transient error is retried on its candidate, then the walk falls back to the next."""
    calls: list[str] = []

    def failing(_request: Any) -> Any:
        calls.append("a")
        raise ConnectionError("connection refused")

    def answering(_request: Any) -> str:
        calls.append("b")
        return "from b"

    walk = walk_of([candidate("a"), candidate("b")], {"a": failing, "b": answering})
    answer, metadata = drive(walk)
    assert answer == "from b"
    assert calls == ["a", "a", "b"]
    assert [a["outcome"] for a in metadata["attempts"]] == ["error", "error", "ok"]


def test_an_open_breaker_is_skipped_without_a_call() -> None:
    """A candidate whose breaker is open is skipped and never called."""
    board = BreakerBoard()
    first = candidate("a")
    board.failure(first.key, threshold=1, cooldown=lambda trips: 60.0)
    walk = walk_of([first, candidate("b")], {"a": down(), "b": lambda _r: "from b"}, breakers=board)
    answer, metadata = drive(walk)
    assert answer == "from b"
    assert metadata["attempts"][0]["outcome"] == "skipped"


def test_an_edited_row_starts_with_a_clean_breaker() -> None:
    """A row's new version has its own board key, so the old version's open breaker is gone."""
    board = BreakerBoard()
    old, new = candidate("a", version=1), candidate("a", version=2)
    board.failure(old.key, threshold=1, cooldown=lambda trips: 60.0)
    assert old.key != new.key
    assert board.admit(new.key) is Admission.CLOSED


def test_every_candidate_cooling_fails_at_once_without_a_call() -> None:
    """When every breaker is open, no candidate is called: the call fails, naming each."""
    board = BreakerBoard()
    a, b = candidate("a"), candidate("b")
    board.failure(a.key, threshold=1, cooldown=lambda trips: 60.0)
    board.failure(b.key, threshold=1, cooldown=lambda trips: 5.0)
    called: list[str] = []
    walk = walk_of([a, b], {"a": down(), "b": lambda _r: called.append("b")}, breakers=board)
    with pytest.raises(AllLLMsFailedError, match="cooling down") as info:
        drive(walk)
    assert [f.name for f in info.value.failures] == ["a", "b"]
    assert called == []


def test_the_deadline_cuts_an_attempt_in_flight_short() -> None:
    """An attempt that outlives the call's deadline is abandoned and the walk fails in time."""

    def hang(_request: Any) -> Any:
        time.sleep(5)

    slow = candidate("slow")
    chain = ScopeChain(None, "chat", 0, (slow,))
    walk = Walk(
        Plan(
            chain,
            FallbackPolicy(attempts=1, deadline=0.3),
            BreakerBoard(),
            lambda c: Call(hang, timeout=float("inf")),  # a client without a timeout
        )
    )
    started = time.monotonic()
    with pytest.raises(AllLLMsFailedError, match="deadline"):
        drive(walk)
    assert time.monotonic() - started < 3


def test_a_bug_propagates_instead_of_falling_back() -> None:
    """A TypeError in a candidate is raised as is; the next candidate is never called."""
    called: list[str] = []

    def buggy(_request: Any) -> Any:
        raise TypeError("bad argument")

    walk = walk_of(
        [candidate("a"), candidate("b")], {"a": buggy, "b": lambda _r: called.append("b")}
    )
    with pytest.raises(TypeError, match="bad argument"):
        drive(walk)
    assert called == []


def test_the_fast_path_calls_the_first_candidate_with_no_bookkeeping() -> None:
    """A healthy first candidate answers with one call and no record of the call."""
    walk = walk_of([candidate("a")], {"a": lambda _r: "fast"})
    answer, metadata = drive(walk)
    assert answer == "fast"
    assert metadata["name"] == "a"
    assert [a["outcome"] for a in metadata["attempts"]] == ["ok"]
    assert walk.record is None


def chunks_of(texts: list[str], error: Exception | None) -> Callable[[Any], Iterator[Any]]:
    """A streaming call: yields ``texts`` as chunks, then raises ``error`` if given."""

    def run(_request: Any) -> Iterator[Any]:
        for text in texts:
            yield ChatGenerationChunk(message=AIMessageChunk(content=text))
        if error is not None:
            raise error

    return run


def drive_stream(walk: Walk) -> list[Any]:
    """The sync stream shell's loop."""
    out: list[Any] = []
    for attempt in walk:
        with attempt:
            assert attempt.gate is not None
            for chunk in attempt.call.stream("hi"):
                out.extend(attempt.gate.push(chunk))
            out.extend(attempt.gate.finish())
            return out
    raise walk.error()


def test_an_error_before_content_falls_back_and_after_it_raises_midstream() -> None:
    """The gate falls back on an error before content, and raises MidStreamError after it."""
    walk = walk_of(
        [candidate("a"), candidate("b")],
        {
            "a": chunks_of(["", ""], ConnectionError("reset")),
            "b": chunks_of(["he", "llo"], ConnectionError("reset")),
        },
        policy=FallbackPolicy(attempts=1),
        streaming=True,
    )
    with pytest.raises(MidStreamError) as info:
        drive_stream(walk)
    assert info.value.partial_text == "hello"
    assert info.value.llm_name == "b"
