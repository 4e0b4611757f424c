"""Every example runs, against local servers, and prints what the usage guide promises.

The examples run as scripts (``__main__``, their own ``sys.argv``, working directory and
environment, a fresh default pool) inside the test's process, which has already imported
LangChain: a subprocess would spend most of each test importing it again. One test still
starts the quickstart as a new interpreter, as a user would.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from servers import AnthropicServer, OllamaServer, OpenAIServer, Reply, Status

import llmpool.api

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
_FOREIGN = ("OPENAI", "OLLAMA", "ANTHROPIC", "LLMPOOL_DATABASE", "DATABASE_URL")


def _example_environ(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}
    return {
        **environ,
        "LLMPOOL_SQLITE_PATH": str(tmp_path / "example.sqlite3"),
        "LLMPOOL_DISABLE_PLUGIN_AUTOLOAD": "1",
        **env,
    }


@contextlib.contextmanager
def _as_script(
    name: str, environ: dict[str, str], cwd: Path, args: tuple[str, ...]
) -> Iterator[None]:
    """Run in the example's own environment, directory and argv, on a default pool of its own;
    restore everything after (the stand-in servers it started are shut down)."""
    saved = (dict(os.environ), sys.argv, list(sys.path), os.getcwd())
    servers: list[ThreadingHTTPServer] = []

    class Recorded(ThreadingHTTPServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            servers.append(self)

    os.environ.clear()
    os.environ.update(environ)
    sys.argv = [str(EXAMPLES / name), *args]
    sys.path.insert(0, str(EXAMPLES))
    os.chdir(cwd)
    for module in ("_setup", "_standins"):
        sys.modules.pop(module, None)
    import _standins  # type: ignore[import-not-found]

    _standins.ThreadingHTTPServer = Recorded
    previous = llmpool.api._pool
    llmpool.api.set_pool(None)
    try:
        yield
    finally:
        pool = llmpool.api._pool
        llmpool.api.set_pool(previous)
        if pool is not None and pool is not previous:
            pool.close()
        for server in servers:
            server.shutdown()
            server.server_close()
        for module in ("_setup", "_standins"):
            sys.modules.pop(module, None)
        os.environ.clear()
        os.environ.update(saved[0])
        sys.argv, sys.path[:] = saved[1], saved[2]
        os.chdir(saved[3])


def run_example(name: str, env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """Run examples/<name> as a script and return what it printed; fail if it raises."""
    return run_example_streams(name, env, tmp_path, *args)[0]


def run_example_streams(
    name: str, env: dict[str, str], tmp_path: Path, *args: str
) -> tuple[str, str]:
    """Run examples/<name> as a script and return its stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _as_script(name, _example_environ(tmp_path, env), tmp_path, args),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return out.getvalue(), err.getvalue()


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
    """With no provider configured, the quickstart answers from the embedded database, started
    as a user starts it: ``python examples/quickstart.py`` in a new interpreter."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        env=_example_environ(tmp_path, {}),
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
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
    with pytest.warns(DeprecationWarning, match=r"get_openai_llm\(\) is deprecated"):
        out, err = run_example_streams("legacy_migration.py", {}, tmp_path)
    assert "note: OPENAI_API_KEY is unset: openai answers from a local stand-in" in err
    assert out.strip() == "(offline stand-in for gpt-4) You said: Hello"


@pytest.mark.slow
def test_plugin_example_package_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example plugin, installed as a package, answers rows with provider "shout"."""
    from llmpool import InMemoryStore, LLMPool
    from llmpool.providers import set_registry

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
    # Found as a new process would find it: on the path, plugins on, the registry discovered.
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delenv("LLMPOOL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    rows = [{"name": "Loud", "provider": "shout", "model_name": "shout-1", "is_default": True}]
    with set_registry(None), LLMPool(repository=InMemoryStore(rows), poll_interval=0) as pool:
        assert pool.get_llm().invoke("hello plugin").content == "HELLO PLUGIN"


def test_alembic_revision_creates_llmpools_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An Alembic revision runs llmpool's SQL; llmpool migrate then finds nothing to do."""
    from alembic.config import main as alembic

    url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    monkeypatch.setenv("DATABASE_URL", url)
    ini = EXAMPLES / "alembic_integration" / "alembic.ini"
    alembic(["-c", str(ini), "upgrade", "head"])  # `alembic -c ... upgrade head`, in-process
    out = capsys.readouterr().out
    assert "llmpool migrations applied: ['0001_llms.sql'" in out
    assert "llmpool rows seeded: ['OpenAI GPT-4'" in out
    from llmpool.repository.sql.migrate import migrate
    from llmpool.repository.sql.store import SQLStore

    assert migrate(url) == []
    store = SQLStore(url)
    store.add({"name": "A", "provider": "fake", "model_name": "m"})
    assert "A" in [c.name for c in store.list_llms()]
    store.engine.dispose()


def test_experiment_example_reports_each_arm(tmp_path: Path) -> None:
    """The experiment example runs offline: 200 users split about 9 to 1 between the arms,
    each arm's thumbs-up rate with its Wilson interval."""
    out = run_example("experiment.py", {}, tmp_path)
    control, candidate = out.splitlines()
    assert control.startswith("control    weight 9  calls 178")
    assert "thumbs_up 0.74 (95 % CI 0.67 to 0.80, wilson)" in control
    assert candidate.startswith("candidate  weight 1  calls  22")
    assert "thumbs_up 1.00 (95 % CI 0.85 to 1.00, wilson)" in candidate
