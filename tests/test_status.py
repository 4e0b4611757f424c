"""`LLMPool.status`, ``llmpool chain`` and ``check``: the operator's view, and a canary secret
that never shows in it (nor in logs at DEBUG, spans or metric labels)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from servers import OpenAIServer, Status
from test_observe import Telemetry

from llmpool.fallback.breakers import RedisBreakerStore
from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.memory import InMemoryStore

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"
ONE_STRIKE = FallbackPolicy(attempts=1, failure_threshold=1, cooldown=60)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A fresh key prefix in the test Redis database, whose keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    prefix = f"llmpool-test:{uuid.uuid4().hex}:"
    yield prefix
    for key in client.scan_iter(prefix + "*"):
        client.delete(key)
    client.close()


def rows(url: str) -> list[dict[str, Any]]:
    """A dead-able OpenAI row, a fake backup, a disabled row and a keyless one."""
    return [
        {"id": "00000000-0000-0000-0000-00000000000a", "name": "Primary", "provider": "openai",
         "model_name": "gpt-4", "priority": 1, "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": url + "/v1"}},
        {"name": "Backup", "provider": "fake", "model_name": "m", "priority": 2,
         "config": {"responses": ["backup"]}},
        {"name": "Off", "provider": "fake", "model_name": "m", "priority": 3, "enabled": False},
        {"name": "Keyless", "provider": "anthropic", "model_name": "claude", "priority": 4,
         "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"}},
    ]  # fmt: skip


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A unique API key in OPENAI_API_KEY (and no Anthropic key)."""
    value = f"sk-canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", value)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return value


def test_status_reports_each_row_its_breaker_latency_and_who_answers(key: str) -> None:
    """Per row in order: enabled, buildable or why not, breaker, last error, latency, rate."""
    with OpenAIServer() as server:
        server.script(Status(500))
        pool = LLMPool(InMemoryStore(rows(server.url)), policy=ONE_STRIKE, poll_interval=0)
        with pool:
            before = pool.status()
            llm = pool.get_llm_with_fallback()
            assert [llm.invoke("hi").content for _ in range(3)] == ["backup"] * 3
            after = pool.status()
    json.dumps(after)  # plain JSON
    assert (before["answering"]["name"], before["can_answer"]) == ("Primary", True)
    assert [(r["name"], r["status"], r["reason"]) for r in after["rows"]] == [
        ("Primary", "skipped", "cooling down after repeated failures"),
        ("Backup", "would be tried", None),
        ("Off", "skipped", "disabled"),
        ("Keyless", "skipped", "missing environment variable ANTHROPIC_API_KEY"),
    ]
    primary, backup, off, keyless = after["rows"]
    assert after["answering"] == {"id": backup["id"], "name": "Backup"}
    assert (primary["breaker"]["state"], primary["breaker"]["failures"]) == ("open", 1)
    assert 55 < primary["breaker"]["reopens_in"] <= 60
    assert primary["last_error"]["error_class"] == "OpenAIAPIError"
    assert (primary["error_rate"], primary["attempts"]) == (1.0, 1)
    assert (backup["error_rate"], backup["latency"]["samples"], backup["answers_now"]) == (
        0.0, 3, True,
    )  # fmt: skip
    assert (off["enabled"], off["buildable"], keyless["buildable"]) == (False, True, False)
    assert after["breakers"] == "local"


def test_astatus_is_status_for_async_code(key: str) -> None:
    """The async twin returns the same rows."""

    async def both() -> tuple[Any, Any]:
        pool = LLMPool(InMemoryStore(rows("http://127.0.0.1:9")), poll_interval=0)
        try:
            return await pool.astatus(), pool.status()
        finally:
            await pool.aclose()

    first, second = asyncio.run(both())
    assert [r["name"] for r in first["rows"]] == [r["name"] for r in second["rows"]]


def test_pool_b_and_llmpool_chain_see_what_pool_a_met(
    key: str, redis_prefix: str, tmp_path: Path
) -> None:
    """Sharing redis=: A's failure opens the breaker, which B's status() sees at once; B and
    ``chain`` (through LLMPOOL_REDIS_URL) then report A's error, error rate and latency."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    with OpenAIServer() as server:
        server.script(Status(500))
        url = f"sqlite:///{tmp_path / 'fleet.sqlite3'}"
        migrate(url)
        store = SQLStore(url)
        store.add_many(rows(server.url)[:2])
        store.close()
        fleet = {"redis": REDIS_URL, "redis_prefix": redis_prefix, "redis_sync_interval": 0.05}
        pools = [LLMPool(url, policy=ONE_STRIKE, poll_interval=0, **fleet) for _ in range(2)]
        a, b = pools
        try:
            assert b.status()["rows"][0]["breaker"]["state"] == "closed"
            assert a.get_llm_with_fallback().invoke("hi").content == "backup"
            at_once = b.status()  # every call reads the breakers from Redis: no wait
            deadline = time.monotonic() + 10.0
            seen = b.status()
            while 0 in (seen["rows"][0]["attempts"], seen["rows"][1]["attempts"]) or (
                seen["rows"][0]["last_error"] is None
            ):
                if time.monotonic() > deadline:
                    break
                seen = b.status()  # A's sync thread publishes every 0.05 s
            env = {"OPENAI_API_KEY": key, "LLMPOOL_REDIS_URL": REDIS_URL,
                   "LLMPOOL_REDIS_PREFIX": redis_prefix}  # fmt: skip
            chain = run_cli("chain", "--json", "--database-url", url, env=env)
            table = run_cli("chain", "--database-url", url, env=env)
        finally:
            for pool in pools:
                pool.close()
    assert (at_once["rows"][0]["breaker"]["state"], at_once["answering"]["name"]) == (
        "open", "Backup",
    )  # fmt: skip
    assert (seen["breakers"], seen["stats"], seen["replicas"]) == ("shared", "fleet", 1)
    assert chain.code == 0, chain.err
    shown = json.loads(chain.out)
    assert (shown["breakers"], shown["stats"], shown["replicas"]) == ("shared", "fleet", 1)
    for status in (seen, shown):
        primary, backup = status["rows"][:2]
        assert primary["breaker"]["state"] == "open"
        assert primary["reason"] == "cooling down after repeated failures"
        assert (primary["error_rate"], primary["attempts"]) == (1.0, 1)
        assert primary["last_error"]["error_class"] == "OpenAIAPIError"
        assert (backup["error_rate"], backup["attempts"], backup["latency"]["samples"]) == (
            0.0, 1, 1,
        )  # fmt: skip
    assert "this shell's own" not in chain.err
    assert "statistics: fleet; replicas live: 1" in table.out
    assert "OpenAIAPIError" in table.out and "1.0" in table.out


def test_chain_says_it_sees_only_this_shell_and_exits_1_when_nothing_can_answer(
    tmp_path: Path,
) -> None:
    """Without Redis it says so on stderr; with no row buildable here it exits 1."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp_path / 'shell.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add(rows("http://127.0.0.1:9")[0])
    store.close()
    result = run_cli("chain", "--database-url", url)
    assert result.code == 1
    assert "no Redis configured" in result.err
    table, _, footer = result.out.partition("\n\n")
    assert "missing environment variable OPENAI_API_KEY" in table
    assert footer.startswith("scope 'global': no row can answer now")
    assert run_cli("chain", "--database-url", url, env={"OPENAI_API_KEY": "sk-x" * 4}).code == 0


def test_check_reports_each_row_as_it_finishes_and_ready_needs_one_answer(
    tmp_path: Path,
) -> None:
    """Plain progress lines on stderr (not a terminal); --ready passes while one row answers."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp_path / 'check.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add_many(rows("http://127.0.0.1:9")[1:])
    store.close()
    plain = run_cli("check", "--database-url", url)
    ready = run_cli("check", "--ready", "--json", "--database-url", url)
    assert plain.code == 1  # Keyless fails
    progress = [line for line in plain.err.splitlines() if line.startswith("llmpool: check ")]
    assert len(progress) == 3
    assert any("Backup: ok in" in line for line in progress)
    assert any("Keyless: failed" in line for line in progress)
    assert ready.code == 0, ready.err
    assert [c["name"] for c in json.loads(ready.out)] == ["Backup", "Off", "Keyless"]


def test_a_canary_key_never_shows_in_logs_spans_metrics_status_or_the_cli(
    key: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The provider echoes the key in its errors: no record (nor its extra), span attribute,
    metric label, status() or ``chain``/``check`` output shows it, at DEBUG."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    telemetry = Telemetry()
    echo = f"Incorrect API key provided: {key}."
    with OpenAIServer() as server:
        server.script(Status(500, echo), *[Status(401, echo)] * 8)
        url = f"sqlite:///{tmp_path / 'canary.sqlite3'}"
        migrate(url)
        store = SQLStore(url)
        store.add_many(rows(server.url))
        store.close()
        policy = FallbackPolicy(attempts=2, failure_threshold=1, backoff_initial=0.001,
                                backoff_max=0.01, backoff_jitter=0)  # fmt: skip
        with (
            caplog.at_level(logging.DEBUG),
            LLMPool(url, policy=policy, poll_interval=0, observers=[telemetry.observer]) as pool,
        ):
            llm = pool.get_llm_with_fallback()
            assert llm.invoke("hi").content == "backup"
            list(llm.stream("hi"))
            status = pool.status()
        outputs = [
            run_cli(*args, "--database-url", url, env={"OPENAI_API_KEY": key})
            for args in (("chain",), ("chain", "--json"), ("check",), ("check", "--json"))
        ]
    records = [r for r in caplog.records if r.name.startswith("llmpool")]
    assert any(getattr(r, "event", None) == "breaker_open" for r in records)
    texts = [json.dumps(status)]
    texts += [f"{r.getMessage()} {r.__dict__!r}" for r in records]
    texts += [repr(dict(s.attributes or {})) + repr(s.events) for s in
              telemetry.spans.get_finished_spans()]  # fmt: skip
    data = telemetry.reader.get_metrics_data()
    texts.append(data.to_json() if data else "")
    texts += [result.out + result.err for result in outputs]
    assert "401" in outputs[2].out
    for text in texts:
        assert key not in text


def test_chain_says_it_sees_only_this_shell_once(tmp_path: Path) -> None:
    """Without Redis and with no row able to answer, the local-view note is printed once."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp_path / 'once.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add(rows("http://127.0.0.1:9")[0])
    store.close()
    result = run_cli("chain", "--database-url", url)
    assert result.code == 1
    assert (result.out + result.err).count("no Redis configured") == 1


DOWN = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def test_status_with_redis_down_says_breakers_are_unknown_not_closed(key: str) -> None:
    """With the shared breaker store unreachable, each row's breaker reads "unknown" and the
    pool says "shared, unreachable"; the call order (and can_answer) is computed as before."""
    store = RedisBreakerStore(DOWN, prefix="x:")
    with LLMPool(InMemoryStore(rows("http://127.0.0.1:9")), poll_interval=0,
                 breaker_store=store) as pool:  # fmt: skip
        status = pool.status()
        answer = pool.get_llm_with_fallback().invoke("hi").content
    assert status["breakers"] == "shared, unreachable"
    assert {r["breaker"]["state"] for r in status["rows"]} == {"unknown"}
    assert (status["can_answer"], status["answering"]["name"]) == (True, "Primary")
    assert answer == "backup"  # the calls still fall back to this process's own breakers


def test_chain_with_redis_down_shows_unknown_breakers_warns_and_exits_1(
    key: str, tmp_path: Path
) -> None:
    """``chain --redis-url`` of an unreachable Redis: breakers "unknown" in the table and the
    JSON, one warning on stderr, exit code 1."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp_path / 'down.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add_many(rows("http://127.0.0.1:9")[1:3])
    store.close()
    args = ("chain", "--database-url", url, "--redis-url", DOWN)
    text, data = run_cli(*args), run_cli(*args, "--json")
    assert (text.code, data.code) == (1, 1)
    table, _, footer = text.out.partition("\n\n")
    assert [line.split()[-6] for line in table.splitlines()[1:]] == ["unknown", "unknown"]
    assert "breakers: shared, unreachable" in footer
    shown = json.loads(data.out)
    assert [r["breaker"]["state"] for r in shown["rows"]] == ["unknown", "unknown"]
    for result in (text, data):
        (warning,) = [line for line in result.err.splitlines() if "Redis" in line]
        assert warning.startswith("llmpool: warning: ") and "unknown" in warning


def test_status_and_chain_show_each_rows_breaker_policy_as_stored(migrated_url: str) -> None:
    """On SQLite and PostgreSQL: a row's ``config["breaker"]`` is read back with it; status
    and ``chain --json`` give every row its policy, and the table shows the row's own."""
    from llmpool.repository.sql.store import SQLStore

    store = SQLStore(migrated_url)
    try:
        store.add_many(
            [
                {
                    "name": "Strict",
                    "provider": "fake",
                    "model_name": "m",
                    "priority": 1,
                    "config": {
                        "responses": ["a"],
                        "breaker": {
                            "failure_rate": 0.25,
                            "min_calls": 20,
                            "cooldown": 120,
                            "errors": ["retry"],
                        },
                    },
                },
                {
                    "name": "Plain",
                    "provider": "fake",
                    "model_name": "m",
                    "priority": 2,
                    "config": {"responses": ["b"]},
                },
            ]
        )
    finally:
        store.close()
    with LLMPool(migrated_url, poll_interval=0) as pool:
        status = pool.status()
    strict, plain = (row["breaker"]["policy"] for row in status["rows"])
    assert strict == {
        "failure_threshold": 3, "failure_rate": 0.25, "min_calls": 20, "window": 60.0,
        "cooldown": 120, "errors": ["retry"],
        "overrides": ["failure_rate", "min_calls", "cooldown", "errors"],
    }  # fmt: skip
    assert (plain["failure_rate"], plain["cooldown"], plain["overrides"]) == (0.5, 30.0, [])
    shown = run_cli("chain", "--json", "--database-url", migrated_url)
    table = run_cli("chain", "--database-url", migrated_url)
    assert shown.code == 0, shown.err
    assert [r["breaker"]["policy"] for r in json.loads(shown.out)["rows"]] == [strict, plain]
    assert "BREAKER  POLICY" in table.out.splitlines()[0]
    assert "3 in a row or 25% of 20 in 60s; cooldown 120s; counts retry" in table.out
