"""Routing strategies per scope: priority, weighted, latency, least_busy, stored and live."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from admin_rows import set_routing_raw
from helpers import fake
from servers import OpenAIServer

from llmpool import LLMPool
from llmpool.chain.routing import (
    LatencyRouting,
    LeastBusyRouting,
    PriorityRouting,
    WeightedRouting,
    make_routing,
)
from llmpool.chain.stats import RowStats
from llmpool.contracts import Candidate, CheckBase
from llmpool.errors import InvalidConfigError
from llmpool.fallback.model import FallbackChatModel
from llmpool.models import LLMConfig
from llmpool.providers.fake import FakeChatModel
from llmpool.repository.memory import InMemoryStore
from llmpool.tags import Tags


def _name(answer: Any) -> str:
    return str(answer.response_metadata["llmpool"]["name"])


def _pool(store: Any, **settings: Any) -> LLMPool:
    return LLMPool(store, poll_interval=0, **settings)


def _candidate(name: str, priority: int = 1, **values: Any) -> Candidate:
    config = LLMConfig(
        id=name, name=name, provider="fake", model_name="m", priority=priority, **values
    )
    return Candidate(config, FakeChatModel(responses=[name]))


def test_a_scope_without_a_routing_row_routes_by_priority(store: Any) -> None:
    """With no llm_scopes row a scope routes by priority, the seed's behaviour."""
    store.add_many([fake("B", 1, "b"), fake("A", 1, "a"), fake("C", 0, "c")])
    assert store.get_routing("global") == "priority"
    pool = _pool(store)
    try:
        answer = pool.get_llm_with_fallback().invoke("hi")
        assert _name(answer) == "C"
        assert answer.response_metadata["llmpool"]["order"] == ["C", "A", "B"]
        assert pool.routing_of() == "priority"
    finally:
        pool.close()


def test_weighted_three_to_one_over_10000_calls_lands_within_two_percent() -> None:
    """Weights 3:1 among equal priority spread 10,000 calls within ±2 % of 75/25."""
    store = InMemoryStore([fake("A", 1, "a", weight=3), fake("B", 1, "b", weight=1)])
    store.set_routing("global", "weighted", actor="admin")
    pool = _pool(store, routing_seed=15)
    try:
        llm = pool.get_llm_with_fallback()
        counts = Counter(_name(llm.invoke("hi")) for _ in range(10_000))
    finally:
        pool.close()
    assert abs(counts["A"] / 10_000 - 0.75) <= 0.02, counts
    assert counts["A"] + counts["B"] == 10_000


def test_weighted_with_one_row_failing_every_call_is_answered(store: Any) -> None:
    """A failing weighted row falls back to its sibling, so every call is answered."""
    store.add_many(
        [
            fake("A", 1, "a", weight=3, config={"error": "connection refused"}),
            fake("B", 1, "b", weight=1),
            fake("Z", 2, "z"),
        ]
    )
    store.set_routing("global", "weighted")
    pool = _pool(store, routing_seed=3)
    try:
        llm = pool.get_llm_with_fallback()
        names = Counter(_name(llm.invoke("hi")) for _ in range(500))
    finally:
        pool.close()
    assert names == {"B": 500}


def test_weighted_failing_group_falls_back_to_the_next_priority() -> None:
    """When every row of the first priority fails, the next priority answers."""
    down = {"config": {"error": "connection refused"}}
    store = InMemoryStore([fake("A", 1, "a", **down), fake("B", 1, "b", **down), fake("Z", 2, "z")])
    store.set_routing("global", "weighted")
    pool = _pool(store)
    try:
        answer = pool.get_llm_with_fallback().invoke("hi")
    finally:
        pool.close()
    meta = answer.response_metadata["llmpool"]
    assert meta["name"] == "Z"
    assert meta["order"][2] == "Z"
    assert sorted(meta["order"][:2]) == ["A", "B"]


def test_weighted_order_is_a_weighted_permutation_and_weight_zero_comes_last() -> None:
    """Three or more rows: the first is drawn by weight, a weight-0 row is never first."""
    routing = WeightedRouting(random.Random(1))
    chain = (_candidate("a", weight=2), _candidate("b", weight=1), _candidate("c", weight=0))
    firsts = Counter(routing.order(chain)[0].config.name for _ in range(6000))
    assert firsts["c"] == 0
    assert abs(firsts["a"] / 6000 - 2 / 3) < 0.03
    assert all(routing.order(chain)[-1].config.name == "c" for _ in range(100))


def test_strategies_keep_priority_groups_in_order() -> None:
    """Every strategy reorders only within a priority; the groups stay in priority order."""
    stats = RowStats()
    chain = (_candidate("x", 2), _candidate("a", 1), _candidate("b", 1), _candidate("y", 3))
    for name in ("priority", "weighted", "latency", "least_busy"):
        ordered = [c.config.name for c in make_routing(name, stats).order(chain)]
        assert sorted(ordered[:2]) == ["a", "b"]
        assert ordered[2:] == ["x", "y"]


def test_an_unknown_strategy_is_refused_naming_the_field(store: Any) -> None:
    """set_routing refuses a strategy it does not know, naming the routing field."""
    with pytest.raises(InvalidConfigError) as caught:
        store.set_routing("global", "fastest")
    assert caught.value.field == "routing"
    assert "least_busy" in str(caught.value)
    assert store.get_routing("global") == "priority"
    with pytest.raises(ValueError, match="unknown routing strategy"):
        make_routing("fastest", RowStats())


def test_set_routing_is_audited_and_seen_live_by_a_running_pool(store: Any) -> None:
    """A routing change is audited and switches a running pool's strategy without a rebuild."""
    store.add_many([fake("A", 1, "a", weight=1), fake("B", 1, "b", weight=0)])
    pool = _pool(store)
    try:
        llm = pool.get_llm_with_fallback()
        assert _name(llm.invoke("hi")) == "A"
        store.set_routing("global", "weighted", actor="ops")
        assert pool.routing_of() == "weighted"
        assert {_name(llm.invoke("hi")) for _ in range(50)} == {"A"}  # B has weight 0
        store.update(store.list_llms()[0].id, {"weight": 0})
        store.update(store.list_llms()[1].id, {"weight": 5})
        assert {_name(llm.invoke("hi")) for _ in range(50)} == {"B"}
        store.set_routing("global", "priority")
        assert _name(llm.invoke("hi")) == "A"
    finally:
        pool.close()
    entries = [e for e in store.audit_log() if e.action == "set_routing"]
    assert entries[-1].actor == "ops"
    assert entries[-1].before == {"scope": "global", "routing": "priority"}
    assert entries[-1].after == {"scope": "global", "routing": "weighted"}


def test_routing_is_per_scope(store: Any) -> None:
    """Each scope keeps its own strategy."""
    store.add(fake("S", 1, "s", scope="support"))
    store.set_routing("support", "least_busy")
    assert store.get_routing("support") == "least_busy"
    assert store.get_routing("global") == "priority"
    assert store.snapshot().routing_of("support") == "least_busy"


def test_weight_and_limits_are_validated_and_stored(store: Any) -> None:
    """weight, rpm and tpm round-trip through the store and bad values name the field."""
    row = store.add(fake("A", 1, "a", weight=7, rpm=60, tpm=1000))
    assert (row.weight, row.rpm, row.tpm) == (7, 60, 1000)
    again = store.get(row.id)
    assert (again.weight, again.rpm, again.tpm) == (7, 60, 1000)
    for field, value in [("weight", -1), ("weight", 1_000_001), ("rpm", 0), ("tpm", -5)]:
        with pytest.raises(InvalidConfigError) as caught:
            store.update(row.id, {field: value})
        assert field in str(caught.value)
    assert store.get(row.id).weight == 7
    cleared = store.update(row.id, {"rpm": None})
    assert cleared.rpm is None


def test_least_busy_prefers_the_row_with_fewer_calls_in_flight() -> None:
    """least_busy sends a call to the row with the fewest calls in flight."""
    stats = RowStats()
    a, b = _candidate("a"), _candidate("b")
    routing = LeastBusyRouting(stats, random.Random(0))
    stats.admit(a, None)
    stats.admit(a, None)
    stats.admit(b, None)
    assert [c.config.name for c in routing.order((a, b))] == ["b", "a"]
    stats.record(a, None, ok=True, latency=0.1, usage=None)
    stats.release(a, None)
    assert [c.config.name for c in routing.order((a, b))] == ["a", "b"]
    assert stats.in_flight(a) == 0


def test_least_busy_spreads_concurrent_slow_calls(store: Any) -> None:
    """Under concurrency, least_busy spreads calls over the rows of equal priority."""
    slow = {"sleep": 0.1}
    store.add_many(
        [
            fake("A", 1, "a", config={"responses": ["aaa"], **slow}),
            fake("B", 1, "b", config={"responses": ["bbb"], **slow}),
        ]
    )
    store.set_routing("global", "least_busy")
    pool = _pool(store)
    names: list[str] = []
    try:
        llm = pool.get_llm_with_fallback()

        def call() -> None:  # a stream stays in flight while its characters trickle out
            chunks = list(llm.stream("hi"))
            names.append(_name(chunks[0]))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        pool.close()
    counts = Counter(names)
    assert counts["A"] >= 3 and counts["B"] >= 3, counts
    assert pool.chains.stats.in_flight(pool.chains.get("global").candidates[0]) == 0


class _Delayed(OpenAIServer):
    """An OpenAI server that answers after ``delay`` seconds."""

    delay = 0.0

    def _respond(self, handler: Any, request: Any, behaviour: Any) -> None:
        time.sleep(self.delay)
        super()._respond(handler, request, behaviour)


@pytest.fixture
def two_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Delayed, _Delayed]]:
    """A fast (20 ms) and a slow (120 ms) local OpenAI server: 100 ms apart, more than a busy
    2-core machine's jitter on one call."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with _Delayed() as fast, _Delayed() as slow:
        fast.delay, slow.delay = 0.02, 0.12
        yield fast, slow  # type: ignore[misc]


def test_latency_sends_most_calls_to_the_fast_server_and_moves_when_it_slows(
    two_servers: tuple[_Delayed, _Delayed],
) -> None:
    """latency: ≥90 % to the 20 ms server after warm-up; moves within 50 calls at 200 ms."""
    fast, slow = two_servers
    key = {"api_key_env": "OPENAI_API_KEY"}
    rows = [
        {
            "name": name,
            "provider": "openai",
            "model_name": "gpt-4",
            "priority": 1,
            "auth_meta": key,
            "config": {"base_url": server.url + "/v1", "max_retries": 0},
        }
        for name, server in [("Fast", fast), ("Slow", slow)]
    ]
    store = InMemoryStore(rows)
    store.set_routing("global", "latency")
    pool = _pool(store, routing_seed=5)
    try:
        llm = pool.get_llm_with_fallback()
        for _ in range(10):  # warm-up: both measured
            llm.invoke("hi")
        names = Counter(_name(llm.invoke("hi")) for _ in range(60))
        assert names["Fast"] / 60 >= 0.9, names
        fast.delay = 0.2
        moved_after = None
        for i in range(50):
            if _name(llm.invoke("hi")) == "Slow":
                streak = all(_name(llm.invoke("hi")) == "Slow" for _ in range(3))
                if streak:
                    moved_after = i + 1
                    break
        assert moved_after is not None and moved_after <= 50
    finally:
        pool.close()


def test_latency_explores_so_a_recovered_row_is_noticed() -> None:
    """With exploration a row measured slow is still tried now and then, and wins when fast."""
    stats = RowStats(alpha=0.5)
    a, b = _candidate("a"), _candidate("b")
    stats.record(a, None, ok=True, latency=0.5, usage=None)
    stats.record(b, None, ok=True, latency=0.1, usage=None)
    routing = LatencyRouting(stats, explore=0.1, rng=random.Random(2))
    firsts = Counter(routing.order((a, b))[0].config.name for _ in range(2000))
    assert 20 < firsts["a"] < 200
    for _ in range(3):
        stats.record(a, None, ok=True, latency=0.01, usage=None)
    assert routing.order((a, b))[0].config.name in {"a", "b"}
    assert stats.latency(a) is not None and stats.latency(a) < 0.1  # type: ignore[operator]
    assert sum(routing.order((a, b))[0].config.name == "a" for _ in range(100)) > 80


def test_priority_routing_unchanged_for_a_fallback_model_without_routing() -> None:
    """A FallbackChatModel built by hand has no routing and reports no order."""
    llm = FallbackChatModel(candidates=[_candidate("a")])
    meta = llm.invoke("hi").response_metadata["llmpool"]
    assert "order" not in meta
    assert PriorityRouting().order([_candidate("a")])[0].config.name == "a"


class _Refuse(CheckBase):
    """Refuses one row by name; records what it is told."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[tuple[str, bool, Any]] = []
        self.released: list[str] = []

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        return "closed for the test" if candidate.config.name == self.name else None

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        self.released.append(candidate.config.name)

    def record(
        self, candidate: Candidate, tags: Tags | None, *, ok: bool, latency: float, usage: Any
    ) -> None:
        self.records.append((candidate.config.name, ok, usage))


def test_an_admission_check_of_yours_skips_a_row_with_its_reason(store: Any) -> None:
    """A check passed in the pool's options skips a row like a breaker, and hears each call."""
    store.add_many([fake("A", 1, "a"), fake("B", 2, "b")])
    check = _Refuse("A")
    pool = _pool(store, admissions=(check,))
    try:
        answer = pool.get_llm_with_fallback().invoke("hi")
    finally:
        pool.close()
    meta = answer.response_metadata["llmpool"]
    assert meta["name"] == "B"
    assert meta["attempts"][0] == {
        "llm_id": meta["attempts"][0]["llm_id"],
        "name": "A",
        "outcome": "skipped",
        "reason": "closed for the test",
    }
    usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}  # "Human: hi", "b"
    assert check.records == [("B", True, usage)]


def test_a_later_refusal_releases_the_earlier_checks() -> None:
    """When a later check refuses, the earlier ones that admitted are released."""
    first, second = _Refuse("nobody"), _Refuse("a")
    llm = FallbackChatModel(
        candidates=[_candidate("a"), _candidate("b", 2)], admissions=(first, second)
    )
    assert _name(llm.invoke("hi")) == "b"
    assert first.released == ["a"]
    assert [r[0] for r in first.records] == ["b"]


def test_streams_tell_the_checks_at_their_end() -> None:
    """A stream's checks hear of it once, when it ends."""
    check = _Refuse("nobody")
    llm = FallbackChatModel(candidates=[_candidate("a")], admissions=(check,))
    text = "".join(str(chunk.content) for chunk in llm.stream("hi"))
    assert text == "a"
    assert [(name, ok) for name, ok, _ in check.records] == [("a", True)]


def test_async_calls_and_streams_go_through_the_checks() -> None:
    """ainvoke and astream are admitted and recorded like their sync twins."""
    import asyncio

    check = _Refuse("a")
    llm = FallbackChatModel(candidates=[_candidate("a"), _candidate("b", 2)], admissions=(check,))

    async def run() -> tuple[str, str]:
        answer = await llm.ainvoke("hi")
        chunks = [chunk async for chunk in llm.astream("hi")]
        return _name(answer), "".join(str(c.content) for c in chunks)

    name, text = asyncio.run(run())
    assert (name, text) == ("b", "b")
    assert [(n, ok) for n, ok, _ in check.records] == [("b", True), ("b", True)]


def test_a_scope_named_with_separators_cannot_rewrite_another_scopes_routing(
    sql_store: Any,
) -> None:
    """A stored scope holding the characters once used to join the snapshot's routing (raw
    SQL) is one scope among others: global still routes by priority and answers."""
    sql_store.add_many([fake("A", 1, "a"), fake("B", 2, "b")])
    set_routing_raw(sql_store, "x\x1eglobal\x1flatency", "weighted")
    snapshot = sql_store.snapshot()
    assert snapshot.routing_of("global") == "priority"
    assert snapshot.routing["x\x1eglobal\x1flatency"] == "weighted"
    pool = _pool(sql_store)
    try:
        assert _name(pool.get_llm_with_fallback().invoke("hi")) == "A"
    finally:
        pool.close()


def test_set_routing_refuses_a_scope_holding_control_characters(store: Any) -> None:
    """set_routing refuses a scope with control characters, naming the field; nothing is
    written, and no other scope's routing changes."""
    store.add(fake("A", 1, "a"))
    before = len(store.audit_log())
    with pytest.raises(InvalidConfigError) as caught:
        store.set_routing("x\x1eglobal\x1flatency", "weighted")
    assert caught.value.field == "scope"
    assert "U+001E" in str(caught.value)
    assert store.snapshot().routing == {}
    assert len(store.audit_log()) == before


@pytest.mark.parametrize("stored", ["garbage", "Weighted", " weighted "])
def test_a_stored_routing_that_is_no_strategy_serves_by_priority_with_one_warning(
    sql_store: Any, stored: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A strategy raw SQL wrote that is none of the four serves the scope by priority, with
    one warning per snapshot naming the scope (event ``invalid_routing``)."""
    sql_store.add_many([fake("B", 1, "b"), fake("A", 1, "a"), fake("C", 0, "c")])
    set_routing_raw(sql_store, "global", stored)
    pool = _pool(sql_store)
    try:
        with caplog.at_level(logging.WARNING, logger="llmpool"):
            llm = pool.get_llm_with_fallback()
            assert [_name(llm.invoke("hi")) for _ in range(3)] == ["C", "C", "C"]
            assert pool.routing_of() == "priority"
        warnings = [r for r in caplog.records if getattr(r, "event", "") == "invalid_routing"]
        assert len(warnings) == 1
        assert warnings[0].levelno == logging.WARNING
        assert (getattr(warnings[0], "scope", None), getattr(warnings[0], "routing", None)) == (
            "global",
            stored,
        )
        assert sql_store.get_routing("global") == "priority"
    finally:
        pool.close()


def test_routing_a_scope_without_rows_is_refused(store: Any) -> None:
    """A strategy other than priority is refused for a scope with no rows (a misspelt scope),
    naming the scope field and what to do; nothing is written. priority is always allowed."""
    store.add(fake("S", 1, "s", scope="support"))
    before = len(store.audit_log())
    with pytest.raises(InvalidConfigError) as caught:
        store.set_routing("suport", "weighted")
    assert caught.value.field == "scope"
    assert "'suport'" in str(caught.value) and "has no rows" in str(caught.value)
    assert store.get_routing("suport") == "priority"
    assert len(store.audit_log()) == before
    assert store.set_routing("suport", "priority") == "priority"
    assert store.set_routing("support", "weighted") == "weighted"
