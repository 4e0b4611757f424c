"""Every example runs, against local servers, and prints what the usage guide promises."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import AnthropicServer, OllamaServer, OpenAIServer, Reply, Status

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BIN = Path(sys.executable).parent


def run_example(name: str, env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """Run examples/<name> in a subprocess and return its output; fail on a non-zero exit."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI", "OLLAMA", "ANTHROPIC", "LLMPOOL_DATABASE"))
    }
    environ.pop("DATABASE_URL", None)
    environ.update(
        LLMPOOL_SQLITE_PATH=str(tmp_path / "example.sqlite3"),
        LLMPOOL_DISABLE_PLUGIN_AUTOLOAD="1",
        **env,
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def providers() -> Iterator[tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]]]:
    """Local OpenAI, Anthropic and Ollama servers and the variables that point at them."""
    with OpenAIServer() as openai, AnthropicServer() as anthropic, OllamaServer() as ollama:
        env = {
            "OPENAI_API_KEY": "sk-local",
            "OPENAI_API_BASE": openai.url + "/v1",
            "ANTHROPIC_API_KEY": "sk-ant-local",
            "ANTHROPIC_BASE_URL": anthropic.url,
            "OLLAMA_BASE_URL": ollama.url,
        }
        yield openai, anthropic, ollama, env


def test_quickstart_runs_offline(tmp_path: Path) -> None:
    """With no provider configured, the quickstart answers from the embedded database."""
    out = run_example("quickstart.py", {}, tmp_path)
    assert out.count("This answer comes from the local fake model.") == 3
    assert "answered by: Local Fake" in out


def test_quickstart_against_local_providers(
    providers: tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    """With providers configured, the default is Ollama and the fallback chain starts at GPT-4."""
    openai, _anthropic, ollama, env = providers
    ollama.script(Reply("I am fine, thanks."))
    openai.script(Reply("Machine learning is learning from data."))
    out = run_example("quickstart.py", env, tmp_path)
    assert "I am fine, thanks." in out
    assert "answered by: OpenAI GPT-4" in out


def test_fallback_example_walks_the_chain(
    providers: tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    """GPT-4 and GPT-3.5 fail, Ollama answers, Claude (disabled) is never contacted."""
    openai, anthropic, ollama, env = providers
    openai.script(*[Status(500)] * 4)
    ollama.script(Reply("Ollama explains machine learning."))
    out = run_example("fallback.py", env, tmp_path)
    assert "Ollama explains machine learning." in out
    assert "tried OpenAI GPT-4: error" in out
    assert "tried Ollama Llama2: ok" in out
    assert anthropic.count == 0


def test_listing_and_selection_example(
    providers: tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    """List, default config, instance from config and selection by provider all work."""
    openai, anthropic, _ollama, env = providers
    openai.script(Reply("test reply"), Reply("openai hi"))
    anthropic.script(Reply("claude hi"))
    out = run_example("listing_and_selection.py", env, tmp_path)
    assert "OpenAI GPT-4: openai - gpt-4" in out
    assert "  Priority: 10" in out
    assert "Default LLM: Ollama Llama2" in out
    assert "OpenAI GPT-4 says: test reply" in out
    assert "openai: openai hi" in out
    assert "anthropic: claude hi" in out


def test_multi_llm_service_example(
    providers: tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    """The MultiLLMService chats through the fallback chain and compares three LLMs."""
    openai, _anthropic, ollama, env = providers
    openai.script(Reply("Python is a language."), Reply("gpt-4 on quantum"), Status(401))
    ollama.script(Reply("llama on quantum"))
    out = run_example("multi_llm_service.py", env, tmp_path)
    assert "OpenAI GPT-4:\ngpt-4 on quantum" in out
    assert "OpenAI GPT-3.5:\nError:" in out
    assert "Ollama Llama2:\nllama on quantum" in out
    assert "chat: Python is a language." in out


def test_main_integration_example_falls_back_to_env_ollama(tmp_path: Path) -> None:
    """When the database has no usable row, the environment's Ollama is built and answers."""
    from llmpool.repository.sql.migrate import migrate

    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    migrate(empty)  # the seed's "database isn't seeded" case: llmpool's tables, no rows
    with OllamaServer() as ollama:
        ollama.script(Reply("env ollama answers"), Reply("env ollama again"))
        env = {
            "LLMPOOL_DATABASE_URL": empty,
            "OLLAMA_BASE_URL": ollama.url,
            "OLLAMA_CHAT_MODEL": "llama3",
        }
        out = run_example("main_integration.py", env, tmp_path)
        models = [request.body["model"] for request in ollama.requests]
    assert "Loaded LLM from database" not in out
    assert "⚠ Failed to load LLM from database: All LLMs failed to initialize" in out
    assert "⚠ Falling back to environment-configured Ollama: llama3" in out
    assert "llm: env ollama answers" in out
    assert "resilient: env ollama again" in out
    assert models == ["llama3", "llama3"]


def test_listing_and_selection_runs_offline_on_local_standins(tmp_path: Path) -> None:
    """Without provider keys, its OpenAI and Anthropic calls answer from local stand-ins."""
    out = run_example("listing_and_selection.py", {}, tmp_path)
    assert "OpenAI GPT-4 says: (offline stand-in for gpt-4) You said: Test message" in out
    assert "openai: (offline stand-in for gpt-4) You said: Hi" in out
    assert "anthropic: (offline stand-in for claude-3-opus-20240229) You said: Hi" in out
    assert (tmp_path / "example.sqlite3").exists()  # LLMPOOL_SQLITE_PATH, not examples/


def test_an_existing_llmpool_sqlite_path_database_is_used_as_it_is(tmp_path: Path) -> None:
    """A database at LLMPOOL_SQLITE_PATH that has rows is neither recreated nor seeded."""
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    url = f"sqlite:///{tmp_path / 'example.sqlite3'}"
    migrate(url)
    store = SQLStore(url)
    store.add({"name": "Mine", "provider": "fake", "model_name": "m", "priority": 1,
               "config": {"responses": ["my own row answers"]}})  # fmt: skip
    out = run_example("fallback.py", {}, tmp_path)
    assert "my own row answers" in out
    assert "tried Mine: ok" in out
    assert [c.name for c in store.list_llms(scope=None)] == ["Mine"]
    store.engine.dispose()


def test_legacy_example_warns_and_runs_offline(tmp_path: Path) -> None:
    """The legacy functions still work and warn; without OPENAI_API_KEY a stand-in answers."""
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI", "OLLAMA", "ANTHROPIC", "LLMPOOL_DATABASE", "DATABASE_URL"))
    }
    environ.update(
        LLMPOOL_SQLITE_PATH=str(tmp_path / "x.sqlite3"), LLMPOOL_DISABLE_PLUGIN_AUTOLOAD="1"
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "legacy_migration.py")],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "DeprecationWarning" in result.stderr
    assert "get_openai_llm() is deprecated" in result.stderr
    assert "note: OPENAI_API_KEY is unset: openai answers from a local stand-in" in result.stderr
    assert result.stdout.strip() == "(offline stand-in for gpt-4) You said: Hello"


@pytest.mark.slow
def test_plugin_example_package_is_found_through_its_entry_point(tmp_path: Path) -> None:
    """The example plugin, installed as a package, answers rows with provider "shout"."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "--target",
            str(target),
            str(EXAMPLES / "plugin_provider"),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "from llmpool import LLMPool, InMemoryStore;"
        "pool = LLMPool(repository=InMemoryStore([{'name': 'Loud', 'provider': 'shout',"
        " 'model_name': 'shout-1', 'is_default': True}]), poll_interval=0);"
        "print(pool.get_llm().invoke('hello plugin').content)"
    )
    environ = {**os.environ, "PYTHONPATH": str(target)}
    environ.pop("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True
    )
    assert result.stdout.strip() == "HELLO PLUGIN"


def test_alembic_revision_creates_llmpools_tables(tmp_path: Path) -> None:
    """An Alembic revision runs llmpool's SQL; llmpool migrate then finds nothing to do."""
    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    environ = {**os.environ, "DATABASE_URL": url}
    ini = EXAMPLES / "alembic_integration" / "alembic.ini"
    result = subprocess.run(
        [str(BIN / "alembic"), "-c", str(ini), "upgrade", "head"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "llmpool migrations applied: ['0001_llms.sql'" in result.stdout
    assert "llmpool rows seeded: ['OpenAI GPT-4'" in result.stdout
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    assert migrate(url) == []
    store = SQLStore(url)
    store.add({"name": "A", "provider": "fake", "model_name": "m"})
    assert "A" in [c.name for c in store.list_llms()]
    store.engine.dispose()
