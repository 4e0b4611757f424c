"""The usage guide's examples print exactly the same with embedding rows in the table."""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import AnthropicServer, OllamaServer, OpenAIServer, Reply, Status
from test_examples import providers, run_example

from llmpool.repository.sql.store import SQLStore

__all__ = ["providers"]  # the fixture, shared with the examples' own tests

EMBEDDING_ROWS = [
    {
        "name": "Vectors Default",
        "provider": "fake",
        "model_name": "m",
        "kind": "embedding",
        "priority": 1,
        "is_default": True,
    },
    {
        "name": "Vectors Backup",
        "provider": "fake",
        "model_name": "m",
        "kind": "embedding",
        "priority": 2,
    },
]


def add_embedding_rows(tmp_path: Path) -> None:
    """Add embedding rows, one a default and all ahead in priority, to the examples' database."""
    store = SQLStore(f"sqlite:///{tmp_path / 'example.sqlite3'}")
    assert store.list_llms(scope=None)  # the examples' rows are there
    store.add_many(EMBEDDING_ROWS)
    store.engine.dispose()


def test_the_quickstart_prints_the_same_with_embedding_rows(tmp_path: Path) -> None:
    """Offline quickstart: same output before and after embedding rows are added."""
    before = run_example("quickstart.py", {}, tmp_path)
    add_embedding_rows(tmp_path)
    after = run_example("quickstart.py", {}, tmp_path)
    assert after == before
    assert "answered by: Local Fake" in after


@pytest.mark.parametrize(
    ("example", "script"),
    [
        ("fallback.py", lambda o, a, ol: (o.script(*[Status(500)] * 4), ol.script(Reply("ok")))),
        (
            "listing_and_selection.py",
            lambda o, a, ol: (o.script(Reply("test reply"), Reply("hi")), a.script(Reply("hey"))),
        ),
    ],
)
def test_the_guides_examples_print_the_same_with_embedding_rows(
    providers: tuple[OpenAIServer, AnthropicServer, OllamaServer, dict[str, str]],
    tmp_path: Path,
    example: str,
    script: object,
) -> None:
    """Fallback and listing examples against local servers: same output with embedding rows."""
    openai, anthropic, ollama, env = providers
    script(openai, anthropic, ollama)  # type: ignore[operator]
    before = run_example(example, env, tmp_path)
    add_embedding_rows(tmp_path)
    script(openai, anthropic, ollama)  # type: ignore[operator]
    after = run_example(example, env, tmp_path)
    assert after == before
    assert "Vectors" not in after
