"""A row's own breaker policy in ``config["breaker"]``: checked when written, stored with the
row, merged over the pool's policy, never passed to the client."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import fake

from llmpool.contracts import Candidate
from llmpool.errors import InvalidConfigError
from llmpool.fallback.breakers import Window
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.providers import ConfigKeysCheck, get_registry
from llmpool.providers.breaker_config import breaker_overrides
from llmpool.providers.prices import client_config
from llmpool.repository.sql.store import SQLStore


def breaker_row(breaker: Any, llm_id: str = "r1", **config: Any) -> LLMConfig:
    """A fake row named Guarded whose ``config["breaker"]`` is ``breaker``."""
    return LLMConfig(
        id=llm_id, name="Guarded", provider="fake", model_name="m",
        config={"responses": ["ok"], **config, "breaker": breaker},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("breaker", "field"),
    [
        (5, "config.breaker"),
        ({"threshold": 5}, "config.breaker"),
        ({"failure_threshold": 0}, "config.breaker.failure_threshold"),
        ({"failure_threshold": True}, "config.breaker.failure_threshold"),
        ({"failure_rate": 1.5}, "config.breaker.failure_rate"),
        ({"failure_rate": "50%"}, "config.breaker.failure_rate"),
        ({"min_calls": 2.5}, "config.breaker.min_calls"),
        ({"window": 0}, "config.breaker.window"),
        ({"cooldown": -1}, "config.breaker.cooldown"),
        ({"cooldown": float("nan")}, "config.breaker.cooldown"),
        ({"errors": ["timeout"]}, "config.breaker.errors"),
        ({"errors": "retry"}, "config.breaker.errors"),
    ],
)
def test_an_invalid_breaker_policy_is_refused_naming_the_row_and_field(
    breaker: Any, field: str
) -> None:
    """Each bad key or value is an InvalidConfigError naming the row and the exact field."""
    with pytest.raises(InvalidConfigError) as info:
        breaker_overrides(breaker_row(breaker))
    assert info.value.field == field
    assert str(info.value).startswith(f"LLM 'Guarded' (id r1): {field} ")


def test_overrides_merge_over_the_pool_policy_and_null_turns_the_rate_off() -> None:
    """Keys a row sets win, the others are the pool's; ``failure_rate: null`` leaves only the
    consecutive count."""
    policy = FallbackPolicy(failure_threshold=4, cooldown=20, max_cooldown=100)
    own = {"min_calls": 20, "window": 30, "cooldown": 300, "errors": ["retry"]}
    rule = policy.breaker_rule(Candidate(breaker_row(own)))
    assert (rule.threshold, rule.window, rule.errors) == (
        4, Window(0.5, 20, 30.0), frozenset({"retry"}),
    )  # fmt: skip
    assert rule.cooldown_for(1) == 300  # a row's own cooldown may exceed the pool's longest
    assert rule.describe()["overrides"] == ["min_calls", "window", "cooldown", "errors"]
    off = policy.breaker_rule(Candidate(breaker_row({"failure_rate": None}, "r2")))
    assert off.window is None
    plain = policy.breaker_rule(Candidate(breaker_row(None, "r3")))
    assert (plain.window, plain.cooldown_for(2), plain.overrides) == (
        Window(0.5, 10, 60.0), 40, (),
    )  # fmt: skip


def test_the_client_never_sees_the_breaker_key_and_a_bad_one_cannot_be_built() -> None:
    """The breaker object is llmpool's: removed before the client is built, checked there."""
    good = breaker_row({"failure_threshold": 1})
    assert client_config(good).config == {"responses": ["ok"]}
    assert get_registry().build(good).invoke("hi").content == "ok"
    with pytest.raises(InvalidConfigError, match=r"config\.breaker\.min_calls"):
        get_registry().build(breaker_row({"min_calls": 0}))


def test_the_write_check_accepts_a_breaker_for_any_provider_and_checks_it() -> None:
    """ConfigKeysCheck takes ``breaker`` on an OpenAI row, and refuses a bad value in it."""
    row = LLMConfig(
        id="1", name="GPT", provider="openai", model_name="gpt-4o",
        config={"temperature": 0.1, "breaker": {"failure_rate": 0.25}},
    )  # fmt: skip
    ConfigKeysCheck()(row)
    bad = row.model_copy(update={"config": {"breaker": {"failure_rate": 0}}})
    with pytest.raises(InvalidConfigError, match=r"config\.breaker\.failure_rate"):
        ConfigKeysCheck()(bad)


def test_a_breaker_policy_is_stored_with_the_row_and_a_bad_one_writes_nothing(
    sql_store: SQLStore,
) -> None:
    """On SQLite and PostgreSQL: a bad policy is refused before anything is written; a good one
    is read back with the row, and an edit replaces it (a new version: a fresh breaker)."""
    with pytest.raises(InvalidConfigError, match=r"config\.breaker\.errors"):
        sql_store.add(fake("A", 1, "a", config={"responses": ["a"], "breaker": {"errors": [1]}}))
    assert sql_store.list_llms(scope=None) == []
    added = sql_store.add(
        fake("B", 1, "b", config={"responses": ["b"], "breaker": {"failure_threshold": 5}})
    )
    read = sql_store.get(added.id)
    assert read.config["breaker"] == {"failure_threshold": 5}
    edited = sql_store.update(
        added.id, {"config": {"responses": ["b"], "breaker": {"failure_rate": None}}}
    )
    assert edited.version == added.version + 1
    policy = FallbackPolicy()
    assert policy.breaker_rule(Candidate(read)).threshold == 5
    assert policy.breaker_rule(Candidate(edited)).window is None
    with pytest.raises(InvalidConfigError, match=r"config\.breaker\.cooldown"):
        sql_store.update(added.id, {"config": {"breaker": {"cooldown": "long"}}})
    assert sql_store.get(added.id).config == edited.config
