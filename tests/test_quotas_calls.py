"""Quotas enforced on calls: real OpenAI clients against a server on 127.0.0.1, on the in-memory
store, SQLite and PostgreSQL, and eight replicas sharing one tag budget through a real Redis
(database ``LLMPOOL_TEST_REDIS_DB``, default 15, keys under a fresh prefix)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from helpers import wait_until
from servers import OpenAIServer
from test_usage_budget import POLICY, GatedOpenAIServer

from llmpool import LLMPool, QuotaExceededError
from llmpool.chain.quotas import QuotaCheck
from llmpool.contracts import Candidate
from llmpool.errors import AllLLMsFailedError
from llmpool.limits import LocalLimits
from llmpool.models import LLMConfig
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.quotas import Quota
from llmpool.repository.sql.store import SQLStore
from llmpool.tags import tags_of
from llmpool.usage.meter import UsageMeter
from llmpool.usage.sql import SQLUsageTable
from llmpool.usage.table import MemoryUsageTable, UsageBucket

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"
ACME = {"metadata": {"llmpool_tags": {"tenant": "acme", "feature": "chat"}}}
OTHER = {"metadata": {"llmpool_tags": {"tenant": "other"}}}


def rows(url: str) -> list[dict[str, Any]]:
    """A (openai, 1.0 per answer: 5 output tokens at 200,000 per million) and B (a free fake)."""
    return [
        {
            "name": "A",
            "provider": "openai",
            "model_name": "gpt-4o",
            "priority": 1,
            "is_default": True,
            "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            "config": {"base_url": url + "/v1", "output_cost_per_million_tokens": 200_000},
        },
        {
            "name": "B",
            "provider": "fake",
            "model_name": "m",
            "priority": 2,
            "config": {"responses": ["B"]},
        },
    ]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as running:
        yield running


def pool_on(store: Any, **options: Any) -> LLMPool:
    return LLMPool(store, poll_interval=0, policy=POLICY, usage_flush_interval=0, **options)


def answered_by(llm: Any, config: Any = None) -> str:
    return str(llm.invoke("hi", config).response_metadata["llmpool"]["name"])


def test_a_tag_over_its_budget_is_refused_naming_it_and_when_it_resets(
    migrated_url: str, server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The tag's spend starts from llm_usage (its tag sets holding the pair); the call that
    would pass the budget is refused before any request, naming the quota, the spend and the
    next UTC midnight, logged once; other tenants and untagged calls go on."""
    store = SQLStore(migrated_url)
    a = store.add_many(rows(server.url))[0]
    store.set_quota("tag", "tenant=acme", budget=3, period="day")
    minute = int(time.time() // 60)
    earlier = UsageBucket(minute, a.id, "global", "A", "openai", "gpt-4o", 1, 0, 3, 5, 1.0)
    SQLUsageTable(store.engine).add([
        earlier._replace(tags="feature=chat,tenant=acme"),
        earlier._replace(tags="tenant=acmeish", cost=7.0),  # another value: not counted
    ])  # fmt: skip
    pool = pool_on(migrated_url)
    try:
        llm = pool.get_llm_with_fallback()
        assert [answered_by(llm, ACME) for _ in range(2)] == ["A", "A"]
        with (
            caplog.at_level(logging.WARNING, "llmpool"),
            pytest.raises(QuotaExceededError) as caught,
        ):
            llm.invoke("hi", ACME)
        with pytest.raises(QuotaExceededError):
            llm.invoke("hi", ACME)
        error = caught.value
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        assert (error.kind, error.target, error.limit) == ("tag", "tenant=acme", "budget")
        assert error.resets_at == midnight + timedelta(days=1)
        assert str(error).startswith(
            "Call refused by the quota on tag 'tenant=acme' (3 a day): over budget: spent 3 of "
            f"3 this day (UTC); it resets at {error.resets_at:%Y-%m-%d} 00:00:00 UTC (in "
        )
        assert server.count == 2
        assert [r.event for r in caplog.records if r.name == "llmpool.chain.quotas"] == [
            "quota_exceeded"
        ]
        assert answered_by(llm, OTHER) == answered_by(llm) == "A"
    finally:
        pool.close()
        store.close()


def test_a_scope_over_its_rpm_refuses_and_a_tag_over_its_tpm_too(server: OpenAIServer) -> None:
    """rpm and tpm on a scope or a tag are counted in the pool's limit store; the refusal says
    which limit and when its window frees; calls refused in ainvoke raise the same."""
    store = InMemoryStore(rows(server.url))
    store.set_quota("scope", "global", rpm=2)
    store.set_quota("tag", "tenant=other", tpm=8)  # one answer: 8 tokens
    pool = pool_on(store)
    try:
        llm = pool.get_llm_with_fallback()
        assert answered_by(llm, OTHER) == "A"
        with pytest.raises(QuotaExceededError) as caught:
            llm.invoke("hi", OTHER)
        assert (caught.value.kind, caught.value.limit) == ("tag", "tpm")
        assert answered_by(llm) == "A"
        with pytest.raises(QuotaExceededError) as caught:
            asyncio.run(llm.ainvoke("hi"))
        assert (caught.value.kind, caught.value.target, caught.value.limit) == (
            "scope", "global", "rpm",
        )  # fmt: skip
        assert caught.value.resets_at is not None
        assert caught.value.resets_at - datetime.now(timezone.utc) <= timedelta(seconds=61)
        assert "rate limited: rpm 2/2, frees in" in str(caught.value)
        assert server.count == 2
    finally:
        pool.close()


def test_a_provider_or_row_over_its_quota_is_skipped_and_the_call_falls_back(
    server: OpenAIServer,
) -> None:
    """A provider's or a row's quota skips the row with its reason, as a row's own limit does;
    the next row answers."""
    store = InMemoryStore(rows(server.url))
    store.set_quota("provider", "openai", rpm=1)
    pool = pool_on(store)
    try:
        llm = pool.get_llm_with_fallback()
        assert answered_by(llm) == "A"
        answer = llm.invoke("hi")
        meta = answer.response_metadata["llmpool"]
        assert meta["name"] == "B"
        reason = meta["attempts"][0]["reason"]
        assert reason.startswith("quota on provider 'openai': rate limited: rpm 1/1, frees in")
        status = pool.status()["rows"][0]  # health reads the same quota, taking nothing
        assert (status["status"], status["reason"]) == ("skipped", "quota on provider 'openai': "
                                                        "rate limited: rpm 1/1")  # fmt: skip
        store.delete_quota("provider", "openai")
        store.set_quota("row", "A", budget=1)  # no cost known: one call, then the budget is spent
        assert answered_by(llm) == "A"
        answer = llm.invoke("hi")
        assert answer.response_metadata["llmpool"]["name"] == "B"
        reason = answer.response_metadata["llmpool"]["attempts"][0]["reason"]
        assert reason.startswith("quota on row ") and "over budget: spent 1 of 1 this day" in reason
    finally:
        pool.close()


def test_every_row_skipped_by_its_quota_lists_the_reasons(server: OpenAIServer) -> None:
    """When each row's provider is over its quota, the call fails listing each reason."""
    store = InMemoryStore(rows(server.url))
    store.set_quota("provider", "openai", rpm=1)
    store.set_quota("provider", "fake", rpm=1)
    pool = pool_on(store)
    try:
        llm = pool.get_llm_with_fallback()
        assert answered_by(llm) == "A" and answered_by(llm) == "B"
        with pytest.raises(AllLLMsFailedError) as caught:
            llm.invoke("hi")
        reasons = [failure.reason for failure in caught.value.failures]
        assert [r.split(":")[0] for r in reasons] == [
            "quota on provider 'openai'", "quota on provider 'fake'",
        ]  # fmt: skip
    finally:
        pool.close()


def test_a_quota_change_reaches_the_running_pool(server: OpenAIServer) -> None:
    """A quota set, changed or deleted in the store is enforced by the pool's next call; a
    chain none of whose quotas apply leaves the check out (untagged calls cost nothing)."""
    store = InMemoryStore(rows(server.url))
    pool = pool_on(store)
    try:
        llm = pool.get_llm_with_fallback()

        def quota_checked() -> bool:
            return any(isinstance(c, QuotaCheck) for c in pool.chains.get("global").checks)

        assert answered_by(llm, ACME) == "A" and not quota_checked()
        store.set_quota("provider", "anthropic", rpm=1)  # no row of this chain
        assert not quota_checked()
        store.set_quota("tag", "tenant=acme", rpm=1)
        assert quota_checked()
        assert answered_by(llm, ACME) == "A"
        with pytest.raises(QuotaExceededError):
            llm.invoke("hi", ACME)
        store.set_quota("tag", "tenant=acme", rpm=100)
        assert answered_by(llm, ACME) == "A"
        store.delete_quota("tag", "tenant=acme")
        assert not quota_checked()
    finally:
        pool.close()


def test_eight_replicas_racing_one_tag_budget_spend_exactly_it(
    migrated_url: str, monkeypatch: pytest.MonkeyPatch, redis_keys: tuple[Any, str]
) -> None:
    """Eight pools sharing Redis race 40 tagged calls at a tag budget of 3 calls: with no cost
    known, one call at a time goes through fleet-wide (the others refused); once it answered,
    its cost (learnt by the fleet) lets exactly 2 more through: no overspend."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    client, prefix = redis_keys
    a = GatedOpenAIServer()
    with a:
        try:
            store = SQLStore(migrated_url)
            store.add_many(rows(a.url))
            store.set_quota("tag", "tenant=acme", budget=3, period="day")
            store.close()
            pools = [
                pool_on(migrated_url, redis=REDIS_URL, redis_prefix=prefix, budget_refresh=0)
                for _ in range(8)
            ]
            llms = [pool.get_llm_with_fallback() for pool in pools]
            assert race(llms, a) == 1
            assert race(llms, a) == 2
            assert a.count == 3
            period = f"{prefix}budget:quota:tag:tenant=acme:{int(time.time() // 86400 * 86400)}"
            assert float(client.hget(period, "settled") or 0) == 3.0
        finally:
            a.gate.set()
            for pool in pools:
                pool.close()


def race(llms: list[Any], a: GatedOpenAIServer, each: int = 5) -> int:
    """``each`` concurrent tagged calls per replica, A's answers held until every call is
    either refused or waiting at A; return how many A answered."""
    before = a.count
    a.gate.clear()
    answered: list[str] = []
    refused: list[QuotaExceededError] = []

    def call(llm: Any) -> None:
        try:
            answered.append(answered_by(llm, ACME))
        except QuotaExceededError as error:
            refused.append(error)

    threads = [threading.Thread(target=call, args=(llm,)) for llm in llms for _ in range(each)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(refused) + a.count - before == len(threads), timeout=30)
    finally:
        a.gate.set()
        for thread in threads:
            thread.join()
    assert set(answered) <= {"A"}
    return len(answered)


def test_a_released_call_gives_back_what_it_took_from_its_tags_budget() -> None:
    """`release`, given the call's tags, gives back the tag budget's reservation: a call whose
    cost is not known yet waits for the call in flight, and is admitted once that is released."""
    quotas = (Quota("tag", "tenant=acme", budget=10.0, period="day"),)
    meter = UsageMeter(MemoryUsageTable(), flush_interval=0, budget_refresh=0)
    check = QuotaCheck(lambda: quotas, limits=LocalLimits(), meter=meter)
    priced = {"output_cost_per_million_tokens": 1000.0}
    row = LLMConfig(id="1", name="A", provider="openai", model_name="m", config=priced)
    candidate = Candidate(row)
    acme = tags_of({"tenant": "acme", "feature": "chat"})
    assert check.applies_to([candidate])
    assert check.admit(candidate, acme) is None
    with pytest.raises(QuotaExceededError, match="1 call in flight of a cost not known yet"):
        check.admit(candidate, acme)
    assert check.admit(candidate, None) is None  # an untagged call meets no tag's budget
    check.release(candidate, None)
    check.release(candidate, acme)
    assert check.admit(candidate, acme) is None
    check.record(candidate, acme, ok=True, latency=0.1, usage={"output_tokens": 12_000})
    with pytest.raises(QuotaExceededError, match="spent 12 of 10"):
        check.admit(candidate, acme)
