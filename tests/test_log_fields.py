"""Every log record llmpool emits carries the documented fields (`llmpool.observe.fields`)."""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from servers import OpenAIServer, Status

import llmpool
from llmpool.contracts import FIELDS
from llmpool.fallback.breakers import RedisBreakerStore
from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.providers import ProviderRegistry
from llmpool.repository.memory import InMemoryStore

SOURCES = Path(llmpool.__file__).parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
FORMAT = " ".join(f"%({field})s" for field in FIELDS)


def _loggers(tree: ast.Module) -> set[str]:
    """The module-level names bound to ``logging.getLogger(...)``."""
    return {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and "getLogger" in ast.unparse(node.value)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def logger_calls() -> Iterator[tuple[str, ast.Call]]:
    """Every ``<logger>.<level>(...)`` call in llmpool's sources, with where it is."""
    for path in sorted(SOURCES.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        names = _loggers(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            is_logger = (
                (isinstance(receiver, ast.Name) and receiver.id in names | {"logging"})
                or (isinstance(receiver, ast.Call) and "getLogger" in ast.unparse(receiver))
            )  # fmt: skip
            if node.func.attr in LEVELS and is_logger:
                yield f"{path.relative_to(SOURCES)}:{node.lineno}", node


def test_every_logger_call_builds_its_extra_with_log_fields() -> None:
    """Each logger call in src passes ``extra=log_fields(...)``, so no record lacks a field."""
    calls = list(logger_calls())
    assert len(calls) >= 30  # the scan finds the call sites, or this test would prove nothing
    missing = [
        where
        for where, call in calls
        if not any(
            k.arg == "extra"
            and isinstance(k.value, ast.Call)
            and ast.unparse(k.value.func).endswith("log_fields")
            for k in call.keywords
        )
    ]
    assert missing == []


class StrictHandler(logging.Handler):
    """Formats every record with all the documented fields; a missing one raises."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def handleError(self, record: logging.LogRecord) -> None:
        raise


@pytest.fixture
def strict() -> Iterator[StrictHandler]:
    """A `StrictHandler` on the ``llmpool`` logger at DEBUG, for the test."""
    logger = logging.getLogger("llmpool")
    handler, level = StrictHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_records_of_failures_format_with_every_documented_field(
    strict: StrictHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that fails to load, a row that cannot be built, a failover, a breaker opening,
    a reload and Redis down: each record formats with ``%(event)s %(scope)s %(llm_id)s ...``."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    broken = EntryPoint("broken", "no_such_module_here:Provider", "llmpool.providers")
    ProviderRegistry(entry_points=[broken]).names()
    policy = FallbackPolicy(attempts=1, failure_threshold=1, cooldown=60)
    with OpenAIServer() as server:
        server.script(Status(500))
        rows = [
            {"name": "Keyless", "provider": "anthropic", "model_name": "claude", "priority": 1,
             "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"}},
            {"name": "Dead", "provider": "openai", "model_name": "gpt-4", "priority": 2,
             "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
             "config": {"base_url": server.url + "/v1"}},
            {"name": "Fake", "provider": "fake", "model_name": "m", "priority": 3},
        ]  # fmt: skip
        store = RedisBreakerStore("redis://127.0.0.1:1/0", prefix="x:")
        pool = LLMPool(InMemoryStore(rows), policy=policy, poll_interval=0, breaker_store=store)
        with pool:
            assert pool.get_llm_with_fallback().invoke("hi").content
            pool.refresh()
    events = {line.split()[0] for line in strict.lines}
    expected = {"plugin_load_failed", "build_failed", "failover", "breaker_open", "reload"}
    assert expected | {"redis_down"} <= events
    assert all(len(line.split()) >= len(FIELDS) for line in strict.lines)
