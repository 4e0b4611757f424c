"""``llmpool top``: one frame (``--once``) of what ``chain`` reads, the live loop, and the
``tui`` extra it draws with."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from cli_runner import run_cli, script_environ
from helpers import fake

from llmpool.fallback.policy import FallbackPolicy
from llmpool.pool.facade import LLMPool
from llmpool.repository.sql.store import SQLStore

REDIS_URL = f"redis://127.0.0.1:6379/{int(os.environ.get('LLMPOOL_TEST_REDIS_DB', '15'))}"


def frame_rows(text: str) -> tuple[str, dict[str, dict[str, str]]]:
    """Split a printed frame into its caption and its rows by name (cells by column)."""
    caption, header, _rule, *lines = text.splitlines()
    starts = [i for i, c in enumerate(header) if c != " " and (i == 0 or header[i - 1] == " ")]
    names = header.split()
    # Right-aligned numbers end under their header's end, text starts under its start: cut
    # each line at the gaps between the headers' ends and the next headers' starts.
    ends = [start + len(name) for start, name in zip(starts, names, strict=True)]
    rows = {}
    for line in lines:
        cells, left = {}, 0
        for index, name in enumerate(names):
            right = starts[index + 1] if index + 1 < len(names) else len(line)
            if index + 1 < len(names) and header[ends[index] :].startswith(" "):
                # a right-aligned column's value may start before its header: cut at its end
                right = max(ends[index], starts[index + 1] - 1)
            cells[name] = line[left:right].strip()
            left = right
        rows[cells["NAME"]] = cells
    return caption, rows


def rows() -> list[dict[str, Any]]:
    """A row that always fails, a limited backup, and one whose key is missing here."""
    return [
        fake("Flaky", 1, "never", config={"error": "down"}),
        fake("Steady", 2, "steady", rpm=600),
        {"name": "Keyless", "provider": "openai", "model_name": "gpt-4o", "priority": 3,
         "auth_meta": {"api_key_env": "OPENAI_API_KEY"}},
    ]  # fmt: skip


def test_top_once_shows_the_fleets_calls_errors_breakers_and_latency(
    migrated_url: str, redis_keys: tuple[Any, str]
) -> None:
    """After three calls through a serving pool, a frame read through Redis shows each row's
    breaker, calls per minute, errors, latency, calls in flight and limit window."""
    _client, prefix = redis_keys
    store = SQLStore(migrated_url)
    store.add_many(rows())
    store.close()
    fleet = {"redis": REDIS_URL, "redis_prefix": prefix, "redis_sync_interval": 0.05}
    policy = FallbackPolicy(attempts=1, failure_threshold=3, cooldown=60)
    with LLMPool(migrated_url, policy=policy, poll_interval=0, **fleet) as pool:
        model = pool.get_llm_with_fallback()
        assert [model.invoke("hi").content for _ in range(3)] == ["steady"] * 3
        deadline = time.monotonic() + 10
        while pool.status()["rows"][1]["attempts"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # the pool's sync thread publishes every 0.05 s
        db = ("--database-url", migrated_url, "--redis", REDIS_URL, "--redis-prefix", prefix)
        text = run_cli("top", "--once", *db)
        data = run_cli("top", "--once", "--json", *db)
    assert text.code == data.code == 0, text.err + data.err
    caption, shown = frame_rows(text.out)
    assert caption.startswith("scope 'global' (priority): Steady answers now · breakers: shared")
    assert "statistics: fleet · replicas live: 1" in caption
    flaky, steady, keyless = shown["Flaky"], shown["Steady"], shown["Keyless"]
    assert flaky["BREAKER"].startswith("open (")
    assert (flaky["CALLS/MIN"], flaky["ERRORS"], flaky["P50_MS"]) == ("3.0", "3", "-")
    assert flaky["STATUS"] == "cooling down after repeated failures"
    assert (steady["BREAKER"], steady["CALLS/MIN"], steady["ERRORS"]) == ("closed", "3.0", "0")
    assert float(steady["P50_MS"]) > 0 and float(steady["P95_MS"]) >= float(steady["P50_MS"])
    assert (steady["IN_FLIGHT"], steady["LIMITS"]) == ("0", "rpm 3/600")
    assert steady["STATUS"] == "answers now"
    assert keyless["STATUS"] == "missing environment variable OPENAI_API_KEY"
    assert "no Redis configured" not in text.err
    frame = json.loads(data.out)
    assert (frame["stats"], frame["answering"]["name"]) == ("fleet", "Steady")
    by_name = {row["name"]: row for row in frame["rows"]}
    assert (by_name["Flaky"]["calls_per_min"], by_name["Flaky"]["errors"]) == (3.0, 3)
    assert by_name["Steady"]["p95_ms"] == float(steady["P95_MS"])


def test_top_without_redis_shows_this_shells_own_numbers_and_exits_1_when_none_answers(
    migrated_url: str,
) -> None:
    """Without Redis the frame counts this shell's attempts (CALLS, no rate) and says so; with
    no row able to answer it exits 1, naming why in the caption; --interval has a floor."""
    store = SQLStore(migrated_url)
    store.add(rows()[2])
    store.close()
    result = run_cli("top", "--once", "--database-url", migrated_url)
    assert result.code == 1
    assert "no Redis configured" in result.err
    caption, shown = frame_rows(result.out)
    assert caption.startswith("scope 'global' (priority): no row can answer (")
    assert "statistics: local" in caption and "replicas" not in caption
    assert (shown["Keyless"]["CALLS"], shown["Keyless"]["BREAKER"]) == ("0", "closed")
    env = {"OPENAI_API_KEY": "sk-top-test-key-0000"}
    assert run_cli("top", "--once", "--database-url", migrated_url, env=env).code == 0
    fast = run_cli("top", "--interval", "0", "--database-url", migrated_url)
    assert (fast.code, fast.err.strip()) == (
        2, "llmpool: error: --interval must be at least 0.1 seconds, not 0",
    )  # fmt: skip


def test_top_without_rich_names_the_extra_and_json_needs_none(
    migrated_sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without rich, top exits 1 with one line saying what to install; --json draws nothing,
    so it still prints the frame."""
    store = SQLStore(migrated_sqlite_url)
    store.add(rows()[1])
    store.close()
    monkeypatch.setitem(sys.modules, "rich", None)  # import rich raises ImportError
    db = ("--database-url", migrated_sqlite_url)
    result = run_cli("top", "--once", *db)
    assert (result.code, result.out) == (1, "")
    (line,) = result.err.splitlines()
    assert line == "llmpool: error: llmpool top needs rich, which is not installed: " + (
        "pip install 'llmpool[tui]'"
    )
    data = run_cli("top", "--json", *db)
    assert data.code == 0, data.err
    assert [row["name"] for row in json.loads(data.out)["rows"]] == ["Steady"]


def test_top_refreshes_in_place_until_interrupted(migrated_sqlite_url: str) -> None:
    """On a terminal, top redraws the frame every --interval and exits 0 on Ctrl-C; a row
    added meanwhile shows in a later frame."""
    import pty

    store = SQLStore(migrated_sqlite_url)
    store.add(rows()[1])
    main, child = pty.openpty()
    command = [sys.executable, "-m", "llmpool", "top", "--interval", "0.1",
               "--database-url", migrated_sqlite_url]  # fmt: skip
    env = script_environ(
        {"COLUMNS": "160", "LINES": "20", "TERM": "xterm", "PYTHONFAULTHANDLER": "1"}
    )
    # A shell's background job (`pytest &`) ignores Ctrl-C, and so would its children: top
    # starts with it as a terminal's foreground program has it.
    process = subprocess.Popen(
        command,
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(child)
    seen, added = b"", False
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline and b"Later" not in seen:
            try:
                seen += os.read(main, 65536)
            except OSError:
                break
            if not added and b"Steady" in seen:
                store.add(fake("Later", 5, "later"))
                added = True
        process.send_signal(signal.SIGINT)
        # Read on until it exits: leaving the screen writes to the terminal, and a terminal
        # nobody reads fills up and blocks the writer.
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                try:
                    seen += os.read(main, 65536)
                except OSError:  # the other end closed: it has exited
                    break
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # where it hangs: faulthandler's dump of every thread
            process.send_signal(signal.SIGABRT)
            time.sleep(2)
            while select.select([main], [], [], 0.5)[0]:
                try:
                    seen += os.read(main, 65536)
                except OSError:
                    break
            pytest.fail(f"top did not exit on Ctrl-C:\n{seen[-6000:].decode(errors='replace')}")
        assert code == 0
    finally:
        process.kill()
        os.close(main)
        store.close()
    assert seen.count(b"Steady answers now") >= 2
    assert b"Later" in seen
