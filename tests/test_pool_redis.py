"""Circuit breakers shared through Redis by replicas (real Redis on 127.0.0.1:6379).

The database number comes from ``LLMPOOL_TEST_REDIS_DB`` (default 15, never the application's
usual 0), and each test deletes only the keys under its own fresh prefix.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

import pytest
from servers import OpenAIServer, Status

from llmpool.fallback.breakers import Admission, BreakerBoard, BreakerState, RedisBreakerStore
from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"


def test_replica_b_skips_a_candidate_whose_breaker_replica_a_opened(
    redis_keys: tuple[Any, str],
) -> None:
    """With Redis, A's failures open the breaker and B skips the candidate with no request."""
    _, prefix = redis_keys
    policy = FallbackPolicy(attempts=1, failure_threshold=2, cooldown=60)
    with OpenAIServer() as dead:
        dead.script(*[Status(500)] * 10)
        rows = [
            {
                "id": "11111111-0000-0000-0000-000000000001",
                "name": "Dead",
                "provider": "openai",
                "model_name": "m",
                "priority": 1,
                "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
                "config": {"base_url": dead.url + "/v1"},
            },
            {
                "name": "Backup",
                "provider": "fake",
                "model_name": "m",
                "priority": 2,
                "config": {"responses": ["backup"]},
            },
        ]
        replicas = [
            LLMPool(
                repository=InMemoryStore(rows),
                policy=policy,
                poll_interval=0,
                breaker_store=RedisBreakerStore(REDIS_URL, prefix=prefix),
            )
            for _ in range(2)
        ]
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OPENAI_API_KEY", "sk-x")
            a, b = (r.get_llm_with_fallback() for r in replicas)
            assert a.invoke("x").content == "backup"
            assert a.invoke("x").content == "backup"
            assert dead.count == 2
            answer = b.invoke("x")
        assert answer.content == "backup"
        assert dead.count == 2
        assert answer.response_metadata["llmpool"]["attempts"][0]["outcome"] == "skipped"
        for replica in replicas:
            replica.close()


def test_redis_down_falls_back_to_local_state(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable Redis degrades to per-replica state and says so once."""
    store = RedisBreakerStore("redis://127.0.0.1:1/0", prefix="x:")
    board = BreakerBoard(store)
    with caplog.at_level("WARNING", logger="llmpool.redis"):
        for _ in range(3):
            board.failure("k", threshold=3, cooldown=lambda trips: 30.0)
        assert board.admit("k").value == "open"
    assert caplog.text.count("cannot reach Redis") == 1


def test_eight_replicas_get_exactly_one_probe_after_the_cooldown(
    redis_keys: tuple[Any, str],
) -> None:
    """Eight replicas asking at once after a cooldown: exactly one probes, in every trial."""
    _, prefix = redis_keys
    boards = [BreakerBoard(RedisBreakerStore(REDIS_URL, prefix=prefix)) for _ in range(8)]
    probes_per_trial: list[int] = []
    for trial in range(40):
        key = f"row-{trial}"
        boards[0].failure(key, threshold=1, cooldown=lambda trips: 0.0)  # the cooldown is over
        barrier = threading.Barrier(len(boards))
        admissions: list[Admission] = []
        lock = threading.Lock()

        def ask(
            board: BreakerBoard,
            key: str = key,
            barrier: Any = barrier,
            lock: Any = lock,
            admissions: list[Admission] = admissions,
        ) -> None:
            barrier.wait()
            admission = board.admit(key)
            with lock:
                admissions.append(admission)

        threads = [threading.Thread(target=ask, args=(board,)) for board in boards]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        probes_per_trial.append(admissions.count(Admission.PROBE))
    assert probes_per_trial == [1] * 40


def test_a_sub_second_ttl_keeps_the_key_through_its_cooldown(
    redis_keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """ttl=0.5 is no EX 0 (which Redis refuses): the key outlives the breaker's cooldown."""
    client, prefix = redis_keys
    caplog.set_level("WARNING", logger="llmpool.redis")
    board = BreakerBoard(RedisBreakerStore(REDIS_URL, prefix=prefix, ttl=0.5))
    board.failure("row", threshold=1, cooldown=lambda trips: 30.0)
    assert 30 <= client.ttl(prefix + "row") <= 32
    assert board.admit("row") is Admission.OPEN
    assert caplog.text == ""


def test_a_key_without_a_cooldown_expires_after_the_ttl(redis_keys: tuple[Any, str]) -> None:
    """A failure count below the threshold lives ttl seconds (at least one)."""
    client, prefix = redis_keys
    store = RedisBreakerStore(REDIS_URL, prefix=prefix, ttl=0.2)
    store.update("row", lambda state: BreakerState(failures=1))
    assert client.ttl(prefix + "row") == 1


def test_losing_every_watch_race_applies_locally_and_says_so_once(
    redis_keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A replica that never wins the optimistic transaction changes its local state and
    logs that once."""
    client, prefix = redis_keys
    caplog.set_level("WARNING", logger="llmpool.redis")
    store = RedisBreakerStore(REDIS_URL, prefix=prefix)
    calls = [0]

    def change(state: BreakerState) -> BreakerState:
        calls[0] += 1
        rival = BreakerState(failures=calls[0])  # another replica writes in between, every time
        client.set(prefix + "row", json.dumps(rival._asdict()))
        return BreakerState(failures=99)

    assert store.update("row", change) == BreakerState(failures=99)
    store.update("row", change)
    assert calls[0] == 2 * (RedisBreakerStore.MAX_RACES + 1)
    assert store.local.get("row") == BreakerState(failures=99)
    assert caplog.text.count(f"lost {RedisBreakerStore.MAX_RACES} Redis races") == 1
    assert "cannot reach Redis" not in caplog.text


def test_two_pools_sharing_redis_trip_one_failure_rate_window_for_both(
    redis_keys: tuple[Any, str],
) -> None:
    """Through ``redis=``: A and B each answer 5 calls, then fail 5 each in turn; the row's own
    policy (rate 50 %, at least 20 calls, no streak trip) opens it at the fleet's 10th failure
    (10 of 20), for both, which neither replica's calls alone would reach."""
    _, prefix = redis_keys
    with OpenAIServer() as server:
        rows = [
            {"id": "11111111-0000-0000-0000-0000000000b1", "name": "Shared", "provider": "openai",
             "model_name": "m", "priority": 1, "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
             "config": {"base_url": server.url + "/v1", "max_retries": 0,
                        "breaker": {"failure_threshold": 100, "min_calls": 20}}},
            {"name": "Backup", "provider": "fake", "model_name": "m", "priority": 2,
             "config": {"responses": ["backup"]}},
        ]  # fmt: skip
        fleet = {"redis": REDIS_URL, "redis_prefix": prefix, "redis_sync_interval": 0.05}
        policy = FallbackPolicy(attempts=1)
        pools = [
            LLMPool(repository=InMemoryStore(rows), policy=policy, poll_interval=0, **fleet)
            for _ in range(2)
        ]
        try:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("OPENAI_API_KEY", "sk-x")
                a, b = (pool.get_llm_with_fallback() for pool in pools)
                for llm in (a, b):
                    for _ in range(5):
                        assert llm.invoke("x").response_metadata["llmpool"]["name"] == "Shared"
                server.script(*[Status(500)] * 10)
                for turn in range(10):
                    assert (a, b)[turn % 2].invoke("x").content == "backup"
                    states = [p.status()["rows"][0]["breaker"]["state"] for p in pools]
                    assert states == (["open"] * 2 if turn == 9 else ["closed"] * 2), turn
                assert server.count == 20
                assert a.invoke("x").content == b.invoke("x").content == "backup"
                assert server.count == 20  # open for both: no request
                policy_shown = pools[1].status()["rows"][0]["breaker"]["policy"]
        finally:
            for pool in pools:
                pool.close()
    assert (policy_shown["min_calls"], policy_shown["failure_threshold"]) == (20, 100)
