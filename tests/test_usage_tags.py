"""Usage per tag set (migration 0007): calls counted per row and per their ``llmpool_tags``,
read back by a tag's value or only for some tags, in Python and with ``llmpool usage``; a real
OpenAI client against a server on 127.0.0.1, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from cli_runner import run_cli
from servers import OpenAIServer

from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.store import SQLStore
from llmpool.usage.sql import SQLUsageTable
from llmpool.usage.table import MemoryUsageTable, UsageBucket


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as server:
        yield server


def openai_row(server: OpenAIServer) -> dict[str, Any]:
    return {
        "name": "A", "provider": "openai", "model_name": "local",
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"base_url": server.url + "/v1", "max_retries": 0,
                   "input_cost_per_million_tokens": 1_000_000},
    }  # fmt: skip


def tagged(**tags: str) -> dict[str, Any]:
    return {"metadata": {"llmpool_tags": tags}}


def test_usage_by_a_tags_value_and_for_one_tag(migrated_url: str, server: OpenAIServer) -> None:
    """Two calls for acme (one with a second tag), one for beta, one untagged: by tag:tenant
    each tenant has its own line and the untagged calls one without a value; --tag keeps only
    acme's calls; the row's own total is every call."""
    store = SQLStore(migrated_url)
    store.add(openai_row(server))
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0)
    llm = pool.get_llm_with_fallback()
    llm.invoke("hi", tagged(tenant="acme"))
    llm.invoke("hi", tagged(tenant="acme", feature="chat"))
    llm.invoke("hi", tagged(tenant="beta"))
    llm.invoke("hi")
    lines = pool.usage(since=None, by="tag:tenant")
    assert [(line.tag, line.calls) for line in lines] == [("acme", 2), ("beta", 1), (None, 1)]
    assert lines[0].cost > 0
    acme = pool.usage(since=None, tags={"tenant": "acme"})
    assert [(line.name, line.calls) for line in acme] == [("A", 2)]
    assert [line.calls for line in pool.usage(since=None)] == [4]
    pool.close()

    db = ("--database-url", migrated_url)
    data = json.loads(run_cli("usage", "--by", "tag:feature", "--json", *db).out)
    assert [(r["tag"], r["calls"]) for r in data["rows"]] == [("chat", 1), (None, 3)]
    data = json.loads(run_cli("usage", "--tag", "tenant=acme", "--json", *db).out)
    assert data["tags"] == {"tenant": "acme"}
    assert data["total"]["calls"] == 2
    text = run_cli("usage", "--by", "tag:tenant", *db).out
    assert text.splitlines()[1].split()[:2] == ["acme", "2"]
    store.engine.dispose()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--by", "tag:Tenant"), "tag:NAME"),
        (("--by", "tenant"), "tag:NAME"),
        (("--tag", "tenant"), "NAME=VALUE"),
        (("--tag", "tenant=a,b"), "tag 'tenant' must be at most"),
        (("--chart", "--by", "tag:tenant"), "--chart draws over time"),
    ],
)
def test_usage_refuses_a_grouping_or_tag_it_cannot_read(
    argv: tuple[str, ...], says: str, sqlite_url: str
) -> None:
    result = run_cli("usage", *argv, "--database-url", sqlite_url)
    assert result.code == 2
    assert says in result.err


def test_a_tags_values_beyond_the_days_limit_are_counted_as_other(
    server: OpenAIServer, caplog: pytest.LogCaptureFixture, migrated_sqlite_url: str
) -> None:
    """With max_tag_values=2, a third and fourth user of the day are counted as 'other', said
    once in the log; the first two keep their own lines."""
    store = SQLStore(migrated_sqlite_url)
    store.add(openai_row(server))
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0, max_tag_values=2)
    llm = pool.get_llm_with_fallback()
    with caplog.at_level(logging.WARNING, logger="llmpool.usage"):
        for user in ("u1", "u2", "u3", "u4", "u1"):
            llm.invoke("hi", tagged(user=user))
    folded = [r for r in caplog.records if getattr(r, "event", None) == "tag_values_folded"]
    assert len(folded) == 1
    assert folded[0].tag == "user"  # type: ignore[attr-defined]
    lines = pool.usage(since=None, by="tag:user")
    assert [(line.tag, line.calls) for line in lines] == [("other", 2), ("u1", 2), ("u2", 1)]
    pool.close()
    store.engine.dispose()


def bucket(minute: int, tags: str, calls: int) -> UsageBucket:
    return UsageBucket(minute, "id-a", "global", "A", "fake", "m", calls, 0, 0, 0, 0.0, tags=tags)


@pytest.mark.parametrize("where", ["memory", "sql"])
def test_a_tag_filter_matches_whole_values_only(where: str, migrated_url: str) -> None:
    """tenant=a% matches the value 'a%' only (LIKE's wildcards are escaped), tenant=a matches
    neither 'ab' nor 'xa', and a filter on two tags needs both."""
    store = SQLStore(migrated_url)
    table: Any = SQLUsageTable(store.engine) if where == "sql" else MemoryUsageTable()
    minute = 29_000_000
    table.add([
        bucket(minute, "tenant=a%", 1), bucket(minute, "tenant=ab", 2),
        bucket(minute, "feature=x,tenant=a", 4), bucket(minute, "tenant=xa", 8),
        bucket(minute, "", 16),
    ])  # fmt: skip

    def calls(**tags: str) -> int:
        return sum(p.calls for p in table.parts(None, None, None, None, tags=tags))

    assert calls(tenant="a%") == 1
    assert calls(tenant="a") == 4
    assert calls(tenant="a", feature="x") == 4
    assert calls(tenant="ab", feature="x") == 0
    assert calls() == 31
    store.engine.dispose()


def test_reverting_0007_folds_each_rows_tag_sets_into_one_minute(migrated_url: str) -> None:
    """Down to 0006 a row's minutes with three tag sets become one with their sums (labels as
    they were); up again they are one untagged minute."""
    from llmpool.repository.sql.migrate import downgrade, migrate

    store = SQLStore(migrated_url)
    table = SQLUsageTable(store.engine)
    minute = 29_000_000
    table.add([bucket(minute, "tenant=a", 1), bucket(minute, "tenant=b", 2), bucket(minute, "", 4)])
    assert downgrade(store.engine, to=6)[-1] == "0007_usage_tags.sql"  # after those above it
    migrate(store.engine)
    parts = table.parts(None, None, None, None, per="minute")
    assert [(p.llm_id, p.name, p.calls, p.tags) for p in parts] == [("id-a", "A", 7, "")]
    store.engine.dispose()
