"""Provider plugins installed as real distributions are found through their entry points."""

from __future__ import annotations

import pytest

from llmpool.pool.facade import LLMPool
from llmpool.providers import ProviderRegistry, set_registry
from llmpool.repository.memory import InMemoryStore

pytestmark = pytest.mark.usefixtures("provider_plugins")


def test_installed_plugin_answers_through_get_llm() -> None:
    """The echo plugin's entry point is discovered and its model answers through get_llm."""
    store = InMemoryStore(
        [
            {
                "name": "Echo",
                "provider": "echo",
                "model_name": "echo-1",
                "is_default": True,
                "config": {"prefix": "plugin says: "},
            }
        ]
    )
    with set_registry(ProviderRegistry()):
        pool = LLMPool(repository=store, poll_interval=0)
        assert pool.get_llm().invoke("hello").content == "plugin says: hello"
        assert pool.registry.distribution_of("echo") == "llmpool-echo-provider"


def test_installed_plugin_answers_through_module_get_llm_and_create_llm_instance(
    sqlite_url: str,
) -> None:
    """llmpool.get_llm() and create_llm_instance() serve a SQL row of the plugin's provider."""
    import llmpool
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    migrate(sqlite_url)
    store = SQLStore(sqlite_url)
    added = store.add(
        {
            "name": "Echo",
            "provider": "echo",
            "model_name": "echo-1",
            "is_default": True,
            "config": {"prefix": "from sql: "},
        }
    )
    try:
        with (
            set_registry(ProviderRegistry()),
            llmpool.set_pool(LLMPool(repository=store, poll_interval=0)),
        ):
            assert llmpool.get_llm().invoke("hi").content == "from sql: hi"
            assert llmpool.get_llm(llm_id=added.id).invoke("again").content == "from sql: again"
            rows = llmpool.get_llms_from_db()
            assert llmpool.create_llm_instance(rows[0]).invoke("x").content == "from sql: x"
    finally:
        store.engine.dispose()


def test_plugin_that_fails_to_import_is_reported_and_the_rest_work() -> None:
    """A plugin raising at import is reported with its distribution; every other one loads."""
    registry = ProviderRegistry()
    assert "echo" in registry
    assert "openai" in registry
    [error] = [e for e in registry.load_errors if e.distribution == "llmpool-broken-provider"]
    assert "broken" in str(error)
    assert "dependency is missing" in str(error.__cause__)


def test_autoload_switch_skips_third_party_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """LLMPOOL_DISABLE_PLUGIN_AUTOLOAD=1 loads only llmpool's own providers."""
    monkeypatch.setenv("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD", "1")
    registry = ProviderRegistry()
    assert "echo" not in registry
    assert "openai" in registry
    assert registry.load_errors == []
