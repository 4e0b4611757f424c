"""``llmpool demo``: offline, on a temporary database, every feature the walk has."""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import run_cli
from test_cli import ok

PASSWORD = "hunter2-not-a-real-password"
NOTE = "llmpool: note: demo always uses a temporary SQLite database; --database-url is ignored"


def test_demo_shows_an_error_a_failover_a_breaker_a_rate_limit_and_a_budget() -> None:
    """Four calls: a 503 fails over, the breaker opens, the rpm limit and then the budget skip
    their rows; with provider keys set it still calls no real provider; each call is reported
    on stderr as it ends."""
    postgres = f"postgresql://demo:{PASSWORD}@127.0.0.1:9/production"
    keys = {"OPENAI_API_KEY": "sk-demo-must-not-use", "OLLAMA_BASE_URL": "http://127.0.0.1:9"}
    result = run_cli("--database-url", postgres, "demo", "--json", env=keys)
    data = json.loads(ok(result))
    assert data["database"].startswith("sqlite:///")
    assert data["database"].endswith("/demo.sqlite3")
    first, second, third, fourth = data["calls"]
    steps = {step["name"]: step for step in first["walk"]}
    assert "OPENAI_API_KEY" in steps["OpenAI GPT-4"]["detail"]  # hidden, so skipped: not called
    assert "OLLAMA_BASE_URL" in steps["Ollama Llama2"]["detail"]
    assert steps["Demo Flaky"]["outcome"] == "error"
    assert "ServiceUnavailableError (HTTP 503)" in steps["Demo Flaky"]["detail"]
    assert (first["answered_by"], second["answered_by"]) == ("Demo Fake", "Demo Fake")
    assert first["answer"] == "Machine learning is software that improves from examples."
    assert first["usage"] == {"input_tokens": 8, "output_tokens": 15, "total_tokens": 23}
    steps = {step["name"]: step for step in third["walk"]}
    assert steps["Demo Flaky"]["detail"] == "cooling down after repeated failures"
    assert steps["Demo Fake"]["detail"].startswith("rate limited: rpm 2/2")
    assert third["answered_by"] == "Demo Backup"
    assert fourth["answered_by"] is None
    budget = {step["name"]: step for step in fourth["walk"]}["Demo Backup"]["detail"]
    assert budget.startswith("over budget: spent 0.0003 of 0.0001 this day")
    chain = {row["name"]: row for row in data["chain"]}
    assert chain["Demo Flaky"]["breaker"].startswith("open")
    assert (chain["Demo Fake"]["limits"], chain["Demo Backup"]["spend"]) == (
        "rpm 2/2",
        "0.0003/0.0001 day",
    )
    assert result.err.splitlines() == [
        NOTE,
        "llmpool: demo 1/4: call 1: Demo Fake answered after Demo Flaky failed",
        "llmpool: demo 2/4: call 2: Demo Fake answered after Demo Flaky failed",
        "llmpool: demo 3/4: call 3: Demo Backup answered",
        "llmpool: demo 4/4: call 4: no row could answer",
    ]
    assert PASSWORD not in result.out + result.err


def test_demo_as_text_tells_each_call_and_shows_the_chain_after() -> None:
    """The table form: the walk of each call, the rows without keys once, the chain after."""
    text = ok(run_cli("demo"))
    assert text.startswith("database: sqlite:///")
    assert "(temporary, deleted on exit)" in text
    assert "answer from Demo Fake (8 in, 15 out): Machine learning is software" in text
    assert text.count("MissingSecretError") == 3  # call 1 only; later calls say so in one line
    assert "  (3 rows skipped as in call 1)" in text
    assert "Demo Backup      skipped: over budget: spent 0.0003 of 0.0001" in text
    assert "the chain after the calls (`llmpool chain`):" in text


def test_demo_takes_only_the_options_it_uses(tmp_path: Path) -> None:
    """demo has --json but no --database-url or --actor of its own: they would be ignored."""
    real = tmp_path / "real.sqlite3"
    for option in ("--database-url", "--actor"):
        result = run_cli("demo", option, f"sqlite:///{real}")
        assert result.code == 2
        assert f"unrecognized arguments: {option}" in result.err
    help_text = run_cli("demo", "--help").out
    assert "--json" in help_text
    assert "--database-url" not in help_text and "--actor" not in help_text
    assert not real.exists()
