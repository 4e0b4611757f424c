"""LLMPool's caches: refresh races, failed reloads after writes, rows that cannot be built."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from llmpool.errors import (
    AllLLMsFailedToInitializeError,
    InvalidConfigError,
    InvalidDefaultLLMError,
    NoDefaultLLMError,
    ProviderLoadError,
)
from llmpool.models import LLMConfig
from llmpool.pool.facade import LLMPool
from llmpool.providers import FactoryProvider, ProviderRegistry
from llmpool.providers.allowlist import EnvAllowlist
from llmpool.providers.fake import FakeChatModel
from llmpool.repository import Snapshot
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.schema import llms


def counting_registry(builds: list[str]) -> ProviderRegistry:
    """A registry whose ``counting`` provider answers with the row's name and counts builds."""

    def factory(config: Any, auth: Any) -> FakeChatModel:
        builds.append(config.name)
        return FakeChatModel(responses=[config.name])

    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("counting", factory))
    return registry


class InsertingDict(dict[Any, Any]):
    """A dict that gains a key while it is iterated, as when another thread builds a model."""

    def __iter__(self) -> Iterator[Any]:
        for key in super().__iter__():
            self[(uuid.uuid4().hex, 1)] = None
            yield key


def test_refresh_tolerates_models_built_while_it_prunes() -> None:
    """A model cached while refresh() prunes the cache does not break the refresh."""
    store = InMemoryStore([{"name": "A", "provider": "fake", "model_name": "m"}])
    with LLMPool(repository=store, poll_interval=0) as pool:
        pool.get_llm_with_fallback()
        pool.builder._built = InsertingDict(pool.builder._built)
        store.add({"name": "B", "provider": "fake", "model_name": "m"})
        assert [c.name for c in pool.refresh().configs] == ["A", "B"]


class ScriptedRepository(InMemoryStore):
    """A repository whose snapshot() returns the snapshots it is given, in order."""

    def __init__(self, snapshots: list[Snapshot]) -> None:
        super().__init__()
        self.snapshots = snapshots

    def snapshot(self) -> Snapshot:
        """Return the next scripted snapshot."""
        return self.snapshots.pop(0)


def test_a_refresh_that_lost_the_generation_race_keeps_the_newer_models() -> None:
    """A stale snapshot read by a slow refresh neither replaces the newer one nor evicts its
    models."""
    row = {"id": "r1", "name": "A", "provider": "counting", "model_name": "m"}
    newer = Snapshot(configs=(LLMConfig(**row, version=2),), generation=5)
    older = Snapshot(configs=(LLMConfig(**row, version=1),), generation=4)
    builds: list[str] = []
    repository = ScriptedRepository([newer, older])
    with LLMPool(
        repository=repository, registry=counting_registry(builds), poll_interval=0
    ) as pool:
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("x").content == "A"
        assert pool.refresh() is newer
        assert llm.invoke("x").content == "A"
        assert pool.get_llm(llm_id="r1").invoke("x").content == "A"
    assert builds == ["A"]


class FlakySnapshotStore(InMemoryStore):
    """An in-memory store whose snapshot() fails while ``failing`` is set."""

    failing = False

    def snapshot(self) -> Snapshot:
        """Fail like a database that just went away, or load."""
        if self.failing:
            msg = "the database went away"
            raise ConnectionError(msg)
        return super().snapshot()


def test_a_write_whose_reload_fails_returns_its_result_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A committed write never reports the failed reload after it as its own error; the
    watcher catches up."""
    caplog.set_level("WARNING", logger="llmpool.pool.facade")
    store = FlakySnapshotStore()
    with LLMPool(repository=store, poll_interval=0.05) as pool:
        assert pool.get_llms_from_db() == []
        store.failing = True
        added = pool.store.add({"name": "A", "provider": "fake", "model_name": "m"})
        assert added.name == "A"
        pool.store.disable(added.id)
        assert caplog.text.count("could not reload its snapshot") == 1
        store.failing = False
        wait_until_names(pool, enabled_only=False, names=["A"])
        assert pool.get_llms_from_db() == []


def wait_until_names(pool: LLMPool, *, enabled_only: bool, names: list[str]) -> None:
    """Wait until the pool's snapshot shows these rows."""
    from helpers import wait_until

    wait_until(lambda: [c.name for c in pool.get_llms_from_db(enabled_only)] == names)


BUGGY_ID = "0b0e0000-0000-4000-8000-000000000001"


def buggy_registry() -> ProviderRegistry:
    """A registry with a ``buggy`` provider whose factory raises a plain ValueError."""

    def factory(config: Any, auth: Any) -> FakeChatModel:
        msg = "unknown option 'temprature'\ndetails on the next line"
        raise ValueError(msg)

    registry = ProviderRegistry(entry_points=[])
    registry.register(FactoryProvider("buggy", factory))
    registry.register(FactoryProvider("okay", lambda config, auth: FakeChatModel(responses=["ok"])))
    return registry


def test_a_provider_raising_a_plain_exception_is_skipped_with_its_reason() -> None:
    """A factory's ValueError becomes a typed error naming the row; the chain moves on."""
    store = InMemoryStore(
        [
            {
                "id": BUGGY_ID,
                "name": "Buggy",
                "provider": "buggy",
                "model_name": "m",
                "priority": 1,
            },
            {"name": "Good", "provider": "okay", "model_name": "m", "priority": 2},
        ]
    )
    with LLMPool(repository=store, registry=buggy_registry(), poll_interval=0) as pool:
        answer = pool.get_llm_with_fallback().invoke("x")
        assert answer.content == "ok"
        [skipped, _] = answer.response_metadata["llmpool"]["attempts"]
        assert skipped["outcome"] == "skipped"
        assert "ValueError" in skipped["reason"]
        with pytest.raises(ProviderLoadError) as raised:
            pool.get_llm(llm_id=BUGGY_ID)
        text = str(raised.value)
        assert f"'Buggy' (id {BUGGY_ID})" in text and "'buggy'" in text
        assert "ValueError: unknown option 'temprature'" in text
        assert "details on the next line" not in text
        assert isinstance(raised.value.__cause__, ValueError)


def test_only_a_broken_plugin_row_fails_to_initialize_with_its_reason() -> None:
    """When the plugin's row is the only one, "All LLMs failed to initialize" names it."""
    store = InMemoryStore([{"name": "Buggy", "provider": "buggy", "model_name": "m"}])
    with (
        LLMPool(repository=store, registry=buggy_registry(), poll_interval=0) as pool,
        pytest.raises(AllLLMsFailedToInitializeError, match="Buggy.*ValueError"),
    ):
        pool.get_llm_with_fallback()


@pytest.fixture
def keyed_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LLMPool, list[float]]]:
    """A pool on a fake clock: row ``Keyed`` needs MYCO_LLM_TEST_KEY (unset), ``Backup`` not."""
    monkeypatch.delenv("MYCO_LLM_TEST_KEY", raising=False)
    registry = ProviderRegistry(entry_points=[])
    registry.register(
        FactoryProvider("named", lambda config, auth: FakeChatModel(responses=[config.name]))
    )
    store = InMemoryStore(
        [
            {
                "name": "Keyed",
                "provider": "named",
                "model_name": "m",
                "priority": 1,
                "auth_meta": {"api_key_env": "MYCO_LLM_TEST_KEY"},
            },
            {"name": "Backup", "provider": "named", "model_name": "m", "priority": 2},
        ]
    )
    now = [100.0]
    pool = LLMPool(
        repository=store,
        registry=registry,
        allowlist=EnvAllowlist.from_env({}).extend("MYCO_LLM_TEST_KEY"),
        poll_interval=0,
        clock=lambda: now[0],
    )
    yield pool, now
    pool.close()


def test_a_failed_build_is_retried_after_the_delay(
    keyed_pool: tuple[LLMPool, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row skipped for a missing variable is built once the variable is set and 5 s passed."""
    pool, now = keyed_pool
    llm = pool.get_llm_with_fallback()
    assert llm.invoke("x").content == "Backup"
    monkeypatch.setenv("MYCO_LLM_TEST_KEY", "k")
    now[0] += 4.9
    assert llm.invoke("x").content == "Backup"  # failures are cached for a while
    now[0] += 0.2
    assert llm.invoke("x").content == "Keyed"


def test_a_refresh_retries_a_failed_build_at_once(
    keyed_pool: tuple[LLMPool, list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """refresh() forgets build failures, so the next call builds the row again."""
    pool, _ = keyed_pool
    llm = pool.get_llm_with_fallback()
    assert llm.invoke("x").content == "Backup"
    monkeypatch.setenv("MYCO_LLM_TEST_KEY", "k")
    pool.refresh()
    assert llm.invoke("x").content == "Keyed"


def insert_raw(url: str, **values: Any) -> str:
    """Insert a row with raw SQL, bypassing validation; return its id."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    now = datetime.now(timezone.utc)
    row: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "provider": "openai",
        "model_name": "gpt-4",
        "scope": "global",
        "priority": 1,
        "enabled": True,
        "is_default": False,
        "auth_meta": {},
        "config": {},
        "created_at": now,
        "updated_at": now,
        "version": 1,
        **values,
    }
    if engine.dialect.name == "sqlite":  # as the store writes them: JSON text, naive UTC
        row["auth_meta"] = json.dumps(row["auth_meta"])
        row["config"] = json.dumps(row["config"])
        row["created_at"] = row["updated_at"] = now.replace(tzinfo=None)
    with engine.begin() as conn:
        conn.execute(llms.insert().values(row))
    engine.dispose()
    return str(row["id"])


def test_a_default_row_that_fails_validation_is_named(migrated_url: str) -> None:
    """get_default_llm_config names the scope's default row when it is invalid, and why;
    "No default LLM configured" stays for a scope that has none."""
    bad_id = insert_raw(
        migrated_url,
        name="Broken default",
        is_default=True,
        auth_meta={"api_key": "sk-literal-secret"},
    )
    insert_raw(migrated_url, name="Broken other", scope="other", auth_meta={"api_key": "sk-2"})
    with LLMPool(migrated_url, poll_interval=0) as pool:
        with pytest.raises(InvalidDefaultLLMError) as raised:
            pool.get_default_llm_config()
        assert isinstance(raised.value, NoDefaultLLMError)  # code written for the seed works
        assert isinstance(raised.value, InvalidConfigError)
        text = str(raised.value)
        assert f"'Broken default' (id {bad_id})" in text
        assert "auth_meta.api_key holds a literal secret" in text
        assert "sk-literal-secret" not in text
        assert raised.value.llm_id == bad_id
        with pytest.raises(NoDefaultLLMError, match="No default LLM configured"):
            pool.get_default_llm_config("other")
