"""A fleet through ``redis=``: replicas share their rows' statistics and heartbeats, and rate
limits degrade as configured while Redis is down (real Redis: the test database of
``LLMPOOL_TEST_REDIS_DB`` under a fresh prefix, or a private ``redis-server`` this file stops).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import fake
from servers import Hang, OpenAIServer, Status

from llmpool.chain.stats import RowStats
from llmpool.errors import AllLLMsFailedError, InvalidOptionError
from llmpool.fallback.policy import FallbackPolicy
from llmpool.limits.redis import CLOSED
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

DB = int(os.environ.get("LLMPOOL_TEST_REDIS_DB", "15"))
REDIS_URL = f"redis://127.0.0.1:6379/{DB}"
HELD = "00000000-0000-4000-8000-0000000000f1"
TICK = 0.05  # the sync interval of every pool here


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh key prefix in the test database, whose keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    fresh = f"llmpool-test:{uuid.uuid4().hex}:"
    yield fresh
    for key in client.scan_iter(fresh + "*"):
        client.delete(key)
    client.close()


def replica(rows: Any, prefix: str, url: str = REDIS_URL, **settings: Any) -> LLMPool:
    """A pool standing for one replica of a fleet on ``url``."""
    fleet = {"redis": url, "redis_prefix": prefix, "redis_sync_interval": TICK}
    return LLMPool(rows, poll_interval=0, **fleet, **settings)


def until(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``condition`` until it is true; return it (fail after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


def _name(answer: Any) -> str:
    return str(answer.response_metadata["llmpool"]["name"])


def _openai(name: str, url: str, **values: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai", "model_name": "m", "priority": 1,
            "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            "config": {"base_url": url + "/v1", "max_retries": 0}, **values}  # fmt: skip


def test_replica_b_routes_away_from_the_row_replica_a_keeps_busy(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``least_busy``: a call A holds in flight makes B send every call to the idle sibling."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with OpenAIServer() as held:
        held.script(Hang(30))
        row = _openai("Held", held.url, id=HELD)
        both = InMemoryStore([row, fake("Idle", 1, "idle")])
        both.set_routing("global", "least_busy")
        a, b = replica(InMemoryStore([row]), prefix), replica(both, prefix)
        held_llm = a.get_llm_with_fallback()

        def hold() -> None:  # until the server closes, failing the call: its outcome is moot
            with contextlib.suppress(AllLLMsFailedError):
                held_llm.invoke("hi")

        call = threading.Thread(target=hold)
        try:
            call.start()
            held.wait_for_requests(1)
            llm = b.get_llm_with_fallback()
            held_row = b.chains.get("global").candidates[0]
            until(lambda: b.stats.in_flight(held_row) == 1)
            names = {_name(llm.invoke("hi")) for _ in range(10)}
            status = b.status()
        finally:
            a.close()
            b.close()
    call.join()
    assert names == {"Idle"}
    assert [(r["name"], r["in_flight"]) for r in status["rows"]] == [("Held", 1), ("Idle", 0)]
    assert status["replicas"] == 2


def test_replica_b_routes_by_the_latency_replica_a_measured(prefix: str) -> None:
    """``latency``: B, which measured nothing, puts first the row A found fast."""
    store = InMemoryStore([fake("A-slow", 1, "slow", config={"responses": ["slow"],
                                                             "sleep": 0.05}),
                           fake("B-quick", 1, "quick")])  # fmt: skip
    store.set_routing("global", "latency")
    a, b = replica(store, prefix, routing_seed=1), replica(store, prefix, routing_seed=1)
    try:
        llm = a.get_llm_with_fallback()
        assert {_name(llm.invoke("hi")) for _ in range(3)} == {"A-slow", "B-quick"}
        rows = b.chains.get("global").candidates
        until(lambda: all(b.stats.fleet_row(c) for c in rows))
        first = _name(b.get_llm_with_fallback().invoke("hi"))
        status = b.status()
    finally:
        a.close()
        b.close()
    assert first == "B-quick"
    slow = status["rows"][0]
    assert (slow["name"], slow["attempts"], slow["latency"]["samples"]) == ("A-slow", 1, 1)
    assert 45 <= slow["latency"]["p50_ms"] <= 80


def test_replica_b_status_shows_replica_a_errors_and_latency(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's failed and answered calls to a local server show in B's status: error rate, last
    error, latency percentiles over the fleet; every key expires; close() stops the syncs."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    policy = FallbackPolicy(attempts=1, failure_threshold=100)
    with OpenAIServer() as server:
        server.script(Status(500), Status(500))
        store = InMemoryStore([_openai("Primary", server.url, id=HELD)])
        a, b = replica(store, prefix, policy=policy), replica(store, prefix, policy=policy)
        try:
            llm = a.get_llm_with_fallback()
            for _ in range(2):
                with pytest.raises(AllLLMsFailedError):
                    llm.invoke("hi")
            for _ in range(3):
                llm.invoke("hi")
            # A's own samples (its `latencies` would read its last sync, maybe before the 3rd).
            mine = RowStats.latencies(a.stats, a.chains.get("global").candidates[0])
            status = until(lambda: (s := b.status())["rows"][0]["attempts"] == 5 and s)
            ttls = {k.decode(): client.pttl(k) for k in client.scan_iter(prefix + "*")}
        finally:
            a.close()
            b.close()
    client.close()
    assert not [t for t in threading.enumerate() if t.name == "llmpool-fleet"]  # close() stops
    fleet = prefix + "fleet:"
    # The breaker keeps the two failures in its failure-rate window: one key more, expiring too.
    breaker = prefix + "breaker:" + HELD
    assert set(ttls) == {
        fleet + "replicas",
        fleet + "row:" + HELD,
        fleet + "error:" + HELD,
        breaker,
    }
    assert all(0 < ttl <= 86_400_000 for ttl in ttls.values()), ttls
    row = status["rows"][0]
    assert (row["error_rate"], row["last_error"]["error_class"]) == (0.4, "OpenAIAPIError")
    assert row["latency"]["samples"] == 3
    assert mine is not None
    assert row["latency"]["p95_ms"] == pytest.approx(mine["p95_ms"], rel=0.05)
    assert (status["stats"], status["replicas"]) == ("fleet", 1)  # B only reads: not a replica


_DYING = textwrap.dedent(
    """
    import sys, threading, time
    from llmpool.pool.facade import LLMPool
    from llmpool.repository.memory import InMemoryStore
    url, prefix, held = sys.argv[1:4]
    row = {"id": held, "name": "Held", "provider": "fake", "model_name": "m",
           "config": {"responses": ["late"], "sleep": 60}}
    pool = LLMPool(InMemoryStore([row]), poll_interval=0, redis=url, redis_prefix=prefix,
                   redis_sync_interval=0.05)
    threading.Thread(target=pool.get_llm_with_fallback().invoke, args=("hi",)).start()
    time.sleep(60)
    """
)


def test_calls_in_flight_of_a_replica_that_died_vanish_with_its_heartbeat(prefix: str) -> None:
    """A killed replica's call in flight counts while its heartbeat is live, then not at all."""
    store = InMemoryStore([fake("Held", 1, "late", id=HELD)])
    child = subprocess.Popen([sys.executable, "-c", _DYING, REDIS_URL, prefix, HELD])
    b = replica(store, prefix)
    try:
        until(lambda: b.status()["rows"][0]["in_flight"] == 1, timeout=90)  # the child starts
        assert b.stats.view is not None and len(b.stats.view.replicas) == 1
        child.kill()
        killed = time.monotonic()
        until(lambda: b.status()["rows"][0]["in_flight"] == 0)
        gone = time.monotonic() - killed
    finally:
        child.kill()
        child.wait()
        b.close()
    assert gone < 3 * TICK + 0.5 + 0.5  # its heartbeat's lease, and a little
    assert b.stats.view is not None and b.stats.view.replicas == ()


@pytest.fixture
def own_redis() -> Iterator[tuple[str, Callable[[], None]]]:
    """A private redis-server on a free port: its URL, and a function that stops it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required for this test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/{DB}"

    def stop() -> None:
        server.terminate()
        server.wait()

    import redis

    client = redis.Redis.from_url(url)
    until(lambda: _pings(client))
    client.close()
    yield url, stop
    stop()


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # not listening yet
        return False


def test_redis_down_shares_each_rows_limits_among_the_replicas_last_seen(
    own_redis: tuple[str, Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas seen, then Redis stops: each counts ceil(rpm / 2) locally, said once."""
    url, stop = own_redis
    store = InMemoryStore([fake("Limited", 1, "x", rpm=3), fake("Spare", 2, "y")])
    a, b = replica(store, "fleet:", url), replica(store, "fleet:", url)
    try:
        llm = a.get_llm_with_fallback()
        b.get_llm_with_fallback()
        until(lambda: a.stats.replicas == 2)
        stop()
        with caplog.at_level("WARNING", logger="llmpool.redis"):
            names = [_name(llm.invoke("hi")) for _ in range(4)]
            status = until(lambda: (s := a.status())["stats"] == "fleet, unreachable" and s)
    finally:
        a.close()
        b.close()
    assert names == ["Limited", "Limited", "Spare", "Spare"]
    limited = status["rows"][0]
    assert limited["limits"] == {"rpm": 3, "tpm": None, "requests": 2, "tokens": 0, "share": 2}
    assert limited["reason"] == "rate limited: rpm 2/2"
    said = [r.getMessage() for r in caplog.records if "divided by" in r.getMessage()]
    assert said == [
        "llmpool counts rate limits in this replica while Redis is down: each row's rpm and "
        "tpm divided by 2 live replicas"
    ]


def test_redis_down_with_closed_limits_refuses_rows_with_limits_saying_why(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``limits_when_redis_down="closed"``: a row with a limit is skipped with the reason, a row
    without one answers, and the log says so once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"redis://127.0.0.1:{sock.getsockname()[1]}/{DB}"
    store = InMemoryStore([fake("Limited", 1, "x", rpm=100), fake("Spare", 2, "y")])
    with caplog.at_level("WARNING", logger="llmpool.redis"):
        pool = replica(store, prefix, down, limits_when_redis_down="closed")
        try:
            llm = pool.get_llm_with_fallback()
            answers = [llm.invoke("hi") for _ in range(3)]
            status = pool.status()
        finally:
            pool.close()
    assert {_name(answer) for answer in answers} == {"Spare"}
    skipped = answers[0].response_metadata["llmpool"]["attempts"][0]
    assert (skipped["outcome"], skipped["reason"]) == ("skipped", CLOSED)
    assert (status["rows"][0]["reason"], status["answering"]["name"]) == (CLOSED, "Spare")
    closed = [r for r in caplog.records if "refuses rows with rate limits" in r.getMessage()]
    assert len(closed) == 1


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"redis": "http://127.0.0.1:6379"}, "redis= is not a Redis URL"),
     ({"redis": REDIS_URL, "redis_sync_interval": 0}, "redis_sync_interval must be a positive"),
     ({"redis": REDIS_URL, "limits_when_redis_down": "open"}, "limits_when_redis_down must")],
)  # fmt: skip
def test_a_bad_fleet_setting_is_refused_naming_it(settings: dict[str, Any], named: str) -> None:
    """A URL that is not Redis's, a sync interval that is not positive, an unknown fallback:
    an InvalidOptionError naming the setting, before anything connects."""
    with pytest.raises(InvalidOptionError, match=named) as refused:
        LLMPool(InMemoryStore([]), poll_interval=0, **settings)
    assert refused.value.option in settings
