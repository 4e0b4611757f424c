"""Experiments (migration 0009): a scope's arms of rows with weights, the arm of each call in
its answer, its usage and its span, sticky per session or tag; feedback for a call written off
the call path; the report per arm. Real OpenAI clients against servers on 127.0.0.1, on SQLite
and PostgreSQL, and Redis for feedback given on another replica."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from cli_runner import run_cli
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import OpenAIServer, Status

from llmpool.errors import InvalidConfigError, InvalidOptionError
from llmpool.fallback.policy import FallbackPolicy
from llmpool.observe.otel import OpenTelemetryObserver
from llmpool.pool.facade import LLMPool
from llmpool.repository.declarative import apply, export_rows
from llmpool.repository.experiments import check_experiment
from llmpool.repository.memory import InMemoryStore
from llmpool.repository.sql.store import SQLStore
from llmpool.usage.experiments import interval, thompson_weights
from llmpool.usage.feedback import MetricSums

REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('LLMPOOL_TEST_REDIS_DB', '15')}"
ONCE = FallbackPolicy(attempts=1)
ARMS = {"control": {"rows": ["A"], "weight": 3}, "candidate": {"rows": ["B"], "weight": 1}}


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    """A's server and B's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with OpenAIServer() as a, OpenAIServer() as b:
        yield a, b


def rows(a: OpenAIServer, b: OpenAIServer) -> list[dict[str, Any]]:
    """A (priority 1) and B (priority 2), OpenAI rows on the two servers, ids fixed."""
    return [
        {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "name": name, "provider": "openai",
         "model_name": "local",
         "priority": priority, "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
         "config": {"base_url": server.url + "/v1", "max_retries": 0,
                    "input_cost_per_million_tokens": 1_000_000}}
        for name, priority, server in (("A", 1, a), ("B", 2, b))
    ]  # fmt: skip


def meta(answer: Any) -> dict[str, Any]:
    return dict(answer.response_metadata["llmpool"])


def test_each_call_is_served_by_an_arm_drawn_by_weight_and_counted_per_arm(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer]
) -> None:
    """Arms control (A, weight 3) and candidate (B, weight 1): of 80 calls about 3 in 4 go to
    control; each answer names its arm and a fresh call_id and lists the arm among its tags;
    the usage by tag ``arm`` and the report count each arm's calls and cost as the answers
    did."""
    store = SQLStore(migrated_url)
    store.add_many(rows(*servers))
    store.set_experiment("global", {"arms": ARMS})
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0, routing_seed=3)
    llm = pool.get_llm_with_fallback()
    answers = [meta(llm.invoke("hi")) for _ in range(80)]
    served = Counter((m["arm"], m["name"]) for m in answers)
    assert set(served) == {("control", "A"), ("candidate", "B")}
    assert 48 <= served[("control", "A")] <= 72
    assert all(m["tags"] == {"arm": m["arm"]} for m in answers)
    assert len({m["call_id"] for m in answers}) == 80
    by_arm = {line.tag: line.calls for line in pool.usage(since=None, by="tag:arm")}
    assert by_arm == {"control": served[("control", "A")], "candidate": served[("candidate", "B")]}
    report = {r.arm: r for r in pool.experiment_report("global", since=None)}
    assert [r.arm for r in pool.experiment_report("global", since=None)] == ["control", "candidate"]
    assert report["control"].calls == served[("control", "A")]
    assert report["control"].weight == 3 and report["control"].error_rate == 0
    assert report["candidate"].cost > 0 and report["candidate"].p95_ms is not None
    pool.close()
    store.engine.dispose()


def test_a_session_or_a_tag_value_keeps_its_arm_on_every_replica(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Sticky by session: each of 12 sessions gets one arm on every call, the same on a second
    replica, and both arms are used; sticky by tag ``user``: the same per user value, whatever
    the other tags."""
    pools = [
        LLMPool(InMemoryStore(rows(*servers)), poll_interval=0, track_usage=False) for _ in range(2)
    ]
    try:
        for pool in pools:
            pool.store.set_experiment("global", {"arms": ARMS, "sticky": "session"})
        arms: dict[str, set[str]] = {}
        for key in [f"conversation-{i}" for i in range(12)]:
            for pool in pools:
                for _ in range(2):
                    answer = pool.get_llm_with_fallback().invoke(
                        "hi", config={"metadata": {"session_key": key}}
                    )
                    arms.setdefault(key, set()).add(meta(answer)["arm"])
        assert all(len(found) == 1 for found in arms.values())
        assert {arm for found in arms.values() for arm in found} == {"control", "candidate"}

        for pool in pools:
            pool.store.set_experiment("global", {"arms": ARMS, "sticky": "tag:user"})
        by_user: dict[str, set[str]] = {}
        for i in range(12):
            for pool, feature in zip(pools, ("chat", "search"), strict=True):
                tags = {"user": f"u{i}", "feature": feature}
                answer = pool.get_llm_with_fallback().invoke(
                    "hi", config={"metadata": {"llmpool_tags": tags}}
                )
                assert meta(answer)["tags"] == {**tags, "arm": meta(answer)["arm"]}
                by_user.setdefault(f"u{i}", set()).add(meta(answer)["arm"])
        assert all(len(found) == 1 for found in by_user.values())
        assert len({arm for found in by_user.values() for arm in found}) == 2
    finally:
        for pool in pools:
            pool.close()


def test_an_arm_whose_rows_fail_falls_back_and_its_errors_count_for_the_arm(
    servers: tuple[OpenAIServer, OpenAIServer],
) -> None:
    """Every call goes to arm candidate (B); B fails once: that call is answered by A, still
    as arm candidate, and the report counts the failed attempt as the candidate arm's error.
    The call's span carries the arm and the call id."""
    a, b = servers
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    observer = OpenTelemetryObserver(tracer_provider=provider)
    store = InMemoryStore(rows(a, b))
    store.set_experiment("global", {"arms": {"candidate": {"rows": ["B"]}}})
    pool = LLMPool(store, poll_interval=0, policy=FallbackPolicy(attempts=1, observers=[observer]))
    b.script(Status(500))
    llm = pool.get_llm_with_fallback()
    first, second = meta(llm.invoke("hi")), meta(llm.invoke("hi"))
    assert (first["arm"], first["name"], second["name"]) == ("candidate", "A", "B")
    assert first["order"] == ["B", "A"]
    (report,) = pool.experiment_report("global", since=None)
    assert (report.arm, report.calls, report.errors, report.error_rate) == (
        "candidate", 3, 1, pytest.approx(1 / 3),
    )  # fmt: skip
    calls = [s for s in spans.get_finished_spans() if s.name == "llmpool global"]
    assert [s.attributes["llmpool.tag.arm"] for s in calls] == ["candidate", "candidate"]
    assert [s.attributes["llmpool.call_id"] for s in calls] == [
        first["call_id"], second["call_id"]
    ]  # fmt: skip
    pool.close()


def test_feedback_lands_in_llm_feedback_after_the_flush_and_a_new_value_replaces_the_old(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer]
) -> None:
    """Feedback is queued, never written on the call: the table is empty until the flush, then
    holds one row per call and metric with the call's scope, arm and row; a metric given
    again replaces its value. The report's means and intervals are those of the values."""
    store = SQLStore(migrated_url)
    store.add_many(rows(*servers))
    store.set_experiment("global", {"arms": ARMS})
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0, routing_seed=1)
    llm = pool.get_llm_with_fallback()
    answers = [llm.invoke("hi") for _ in range(10)]
    for i, answer in enumerate(answers):
        pool.feedback(answer, "thumbs_up", i < 8)
        pool.feedback(meta(answer)["call_id"], "score", i)
    pool.feedback(answers[0], "score", 100)  # replaces 0
    select = sa.text("SELECT call_id, metric, scope, arm, llm_id, value FROM llm_feedback")
    with store.engine.connect() as conn:
        assert conn.execute(select).all() == []
    assert pool.feedback_log.flush() is True
    with store.engine.connect() as conn:
        found = {(r.call_id, r.metric): r for r in conn.execute(select)}
    assert len(found) == 20
    first = found[(meta(answers[0])["call_id"], "score")]
    assert (first.scope, first.arm, first.llm_id, first.value) == (
        "global", meta(answers[0])["arm"], meta(answers[0])["llm_id"], 100.0,
    )  # fmt: skip
    arms = [meta(a)["arm"] for a in answers]
    report = {r.arm: r for r in pool.experiment_report("global", since=None)}
    for arm, line in report.items():
        ups = [1.0 if i < 8 else 0.0 for i, x in enumerate(arms) if x == arm]
        scores = [100.0 if i == 0 else float(i) for i, x in enumerate(arms) if x == arm]
        metrics = {m.metric: m for m in line.metrics}
        assert metrics["thumbs_up"].n == len(ups) and metrics["thumbs_up"].method == "wilson"
        assert metrics["thumbs_up"].mean == pytest.approx(sum(ups) / len(ups))
        assert metrics["score"].mean == pytest.approx(sum(scores) / len(scores))
        assert metrics["score"].method == "normal"
    pool.close()
    store.engine.dispose()


def test_feedback_given_on_another_replica_finds_its_call_through_redis(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer], redis_keys: tuple[Any, str]
) -> None:
    """Replica one answers; replica two is given the call's feedback: after one's flush has
    noted the call in Redis, two's flush finds its arm and row there."""
    client, prefix = redis_keys
    fleet = {"redis": REDIS_URL, "redis_prefix": prefix, "usage_flush_interval": 0}
    store = SQLStore(migrated_url)
    store.add_many(rows(*servers))
    store.set_experiment("global", {"arms": ARMS})
    other = SQLStore(migrated_url)
    one = LLMPool(store, poll_interval=0, **fleet)
    two = LLMPool(other, poll_interval=0, **fleet)
    try:
        answer = meta(one.get_llm_with_fallback().invoke("hi"))
        two.feedback(answer["call_id"], "thumbs_up", True)
        assert one.feedback_log.flush() is True  # notes the call in Redis
        assert [k.decode() for k in client.scan_iter(prefix + "call:*")] == [
            f"{prefix}call:{answer['call_id']}"
        ]
        assert two.feedback_log.flush() is True
        (line,) = [r for r in two.experiment_report("global", since=None) if r.metrics]
        assert (line.arm, line.metrics[0].n, line.metrics[0].mean) == (answer["arm"], 1, 1.0)
    finally:
        one.close()
        two.close()
        store.engine.dispose()
        other.engine.dispose()


def test_llmpool_experiment_set_show_report_and_adapt(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer]
) -> None:
    """``experiment set`` defines and routes the scope (audited), ``show`` prints it, ``report
    --json`` gives each arm's calls and metrics, ``--adapt`` sets weights by Thompson sampling
    favouring the arm whose thumbs are up; a row no arm can name is refused (exit 1)."""
    db = ("--database-url", migrated_url)
    store = SQLStore(migrated_url)
    store.add_many(rows(*servers))
    store.engine.dispose()
    out = run_cli(
        "experiment", "set", "global", "--arm", "control=A", "--arm", "candidate=B",
        "--weight", "control=3", "--sticky", "session", *db, "--actor", "ann",
    )  # fmt: skip
    assert out.code == 0, out.err
    assert json.loads(run_cli("experiment", "show", "global", "--json", *db).out)["experiment"] == {
        "arms": ARMS,
        "sticky": "session",
    }
    assert run_cli("routing", "global", *db).out.strip() == "scope 'global' routes by experiment"
    refused = run_cli("experiment", "set", "global", "--arm", "x=Nope", *db)
    assert refused.code == 1 and "'Nope', which is no row of the scope" in refused.err

    pool = LLMPool(migrated_url, poll_interval=0, usage_flush_interval=0)
    llm = pool.get_llm_with_fallback()
    for i in range(20):
        answer = llm.invoke("hi", config={"metadata": {"session_key": f"s{i}"}})
        pool.feedback(answer, "thumbs_up", meta(answer)["arm"] == "candidate")
    pool.close()
    data = json.loads(run_cli("experiment", "report", "global", "--json", *db).out)
    assert sum(arm["calls"] for arm in data["arms"]) == 20
    ups = {a["arm"]: a["metrics"][0]["mean"] for a in data["arms"]}
    assert ups == {"control": 0.0, "candidate": 1.0}
    adapt = ("--adapt", "thumbs_up", "--actor", "ann")
    adapted = run_cli("experiment", "report", "global", *adapt, *db)
    assert adapted.code == 0, adapted.err
    shown = json.loads(run_cli("experiment", "show", "global", "--json", *db).out)["experiment"]
    assert shown["arms"]["candidate"]["weight"] > 90 and shown["arms"]["control"]["weight"] == 1
    assert run_cli("routing", "global", "priority", *db).code == 0
    stopped = run_cli("experiment", "report", "global", *adapt, *db)
    assert stopped.code == 2 and "--adapt would start it" in stopped.err
    audit = json.loads(run_cli("audit", "--json", *db).out)
    assert any(e["action"] == "set_experiment" and e["actor"] == "ann" for e in audit)


def test_apply_defines_an_experiment_and_applying_the_export_changes_nothing(
    store: Any, servers: tuple[OpenAIServer, OpenAIServer]
) -> None:
    """A document's scope may carry its experiment and route by it; the export lists it, and
    applying the export again is no change."""
    document = {
        "llms": [{k: v for k, v in row.items() if k != "id"} for row in rows(*servers)],
        "scopes": {"global": {"routing": "experiment", "experiment": {"arms": ARMS}}},
    }
    planned = apply(store, document)
    assert [step.action for step in planned.steps][-2:] == ["experiment", "routing"]
    assert store.get_routing("global") == "experiment"
    exported = export_rows(store)
    assert exported["scopes"]["global"]["experiment"] == {"arms": ARMS, "sticky": None}
    assert apply(store, exported).empty


@pytest.mark.parametrize(
    ("experiment", "field"),
    [
        ({"arms": {}}, "experiment.arms"),
        ({"arms": {"a": {"rows": ["Nope"]}}}, "experiment.arms.a.rows"),
        ({"arms": {"a": {"rows": ["A"]}, "b": {"rows": ["A"]}}}, "experiment.arms.b.rows"),
        ({"arms": {"a": {"rows": ["A"], "weight": 0}}}, "experiment.arms.a.weight"),
        ({"arms": {"a": {"rows": ["A"], "weight": True}}}, "experiment.arms.a.weight"),
        ({"arms": {"A": {"rows": ["A"]}}}, "experiment.arms"),
        ({"arms": {"a": {"rows": ["A"]}}, "sticky": "user"}, "experiment.sticky"),
        ({"arms": {"a": {"rows": ["A"]}}, "stick": "session"}, "experiment.stick"),
    ],
)
def test_a_bad_experiment_is_refused_naming_the_field(
    store: Any, experiment: dict[str, Any], field: str
) -> None:
    """Arms must name rows of the scope, once each, with weights above 0; sticky is session or
    tag:NAME; nothing is written."""
    store.add({"name": "A", "provider": "fake", "model_name": "m"})
    with pytest.raises(InvalidConfigError) as info:
        store.set_experiment("global", experiment)
    assert info.value.field == field
    assert store.get_routing("global") == "priority" and store.get_experiment("global") is None


def test_routing_by_experiment_needs_a_definition(store: Any) -> None:
    """``set_routing(scope, "experiment")`` without arms is refused naming the experiment."""
    store.add({"name": "A", "provider": "fake", "model_name": "m"})
    with pytest.raises(InvalidConfigError) as info:
        store.set_routing("global", "experiment")
    assert info.value.field == "experiment"


@pytest.mark.parametrize(
    ("metric", "value", "option"),
    [("Thumbs", 1, "metric"), ("", 1, "metric"), ("up", float("nan"), "value"),
     ("up", "yes", "value"), ("up", 1e13, "value")],
)  # fmt: skip
def test_bad_feedback_is_refused_naming_what(metric: str, value: Any, option: str) -> None:
    """A metric is a lower-case name, its value a finite number or a bool; an answer that was
    no experiment call, or an unknown call id, is refused naming ``call_id``."""
    store = InMemoryStore([{"name": "A", "provider": "fake", "model_name": "m"}])
    store.set_experiment("global", {"arms": {"a": {"rows": ["A"]}}})
    with LLMPool(store, poll_interval=0) as pool:
        answer = pool.get_llm_with_fallback().invoke("hi")
        with pytest.raises(InvalidOptionError) as info:
            pool.feedback(answer, metric, value)
        assert info.value.option == option
        with pytest.raises(InvalidOptionError) as info:
            pool.feedback("0" * 32, "up", 1)
        assert info.value.option == "call_id"
        store.set_routing("global", "priority")
        plain = pool.get_llm_with_fallback().invoke("hi")
        assert "arm" not in meta(plain) and "call_id" not in meta(plain)
        with pytest.raises(InvalidOptionError):
            pool.feedback(plain, "up", 1)


def test_afeedback_queues_as_feedback_does() -> None:
    """The async twin queues the value, which the flush writes."""
    import asyncio

    store = InMemoryStore([{"name": "A", "provider": "fake", "model_name": "m"}])
    store.set_experiment("global", {"arms": {"a": {"rows": ["A"]}}})
    with LLMPool(store, poll_interval=0) as pool:

        async def run() -> Any:
            answer = await pool.get_llm_with_fallback().ainvoke("hi")
            await pool.afeedback(answer, "up", 0.5)
            return await pool.aexperiment_report("global", since=None)

        (line,) = asyncio.run(run())
        assert [(m.metric, m.n, m.mean) for m in line.metrics] == [("up", 1, 0.5)]


def test_intervals_are_wilson_for_rates_and_normal_for_other_metrics() -> None:
    """8 of 10 up: Wilson's 95 % interval (0.490, 0.943); the values 1..5: mean 3 ± 1.96 *
    1.5811 / √5 = (1.614, 4.386); one value of a score: no interval."""
    low, high = interval(MetricSums("a", "up", 10, 8.0, 8.0, True))
    assert (round(low, 3), round(high, 3)) == (0.49, 0.943)  # type: ignore[arg-type]
    low, high = interval(MetricSums("a", "score", 5, 15.0, 55.0, False))
    assert (round(low, 3), round(high, 3)) == (1.614, 4.386)  # type: ignore[arg-type]
    assert interval(MetricSums("a", "score", 1, 4.0, 16.0, False)) == (None, None)


def test_thompson_weights_favour_the_better_arm_and_keep_exploring() -> None:
    """60 of 100 up against 40 of 100: the better arm wins almost every draw; the other keeps
    weight 1; a metric that is no rate is refused."""
    experiment = check_experiment("s", {"arms": {"a": {"rows": ["A"]}, "b": {"rows": ["B"]}}})
    sums = [
        MetricSums("a", "up", 100, 60.0, 60.0, True),
        MetricSums("b", "up", 100, 40.0, 40.0, True),
    ]
    weights = thompson_weights(experiment, sums, "up", rng=random.Random(7))
    assert weights["a"] > 97 and weights["b"] == 1
    with pytest.raises(ValueError, match="Thompson sampling needs a rate"):
        thompson_weights(experiment, [MetricSums("a", "up", 2, 3.0, 5.0, False)], "up")


def test_a_rollback_puts_the_routing_back_and_keeps_the_definition(store: Any) -> None:
    """A scope routed weighted, then set as an experiment: rolling back to before puts
    weighted back; the definition stays, so ``set_routing(scope, "experiment")`` resumes it."""
    from llmpool.repository.history import changed_fields, rollback

    store.add({"name": "A", "provider": "fake", "model_name": "m"})
    store.set_routing("global", "weighted")
    point = store.audit_log(limit=1)[0].id
    store.set_experiment("global", {"arms": {"a": {"rows": ["A"]}}})
    changed = [changed_fields(e) for e in store.audit_log(limit=2)]
    assert {"experiment", "routing"} == {name for c in changed for name in c}
    rollback(store, point)
    assert store.get_routing("global") == "weighted"
    assert store.get_experiment("global") is not None
    store.set_routing("global", "experiment")
    assert store.get_routing("global") == "experiment"


def test_doctor_names_an_arm_whose_row_is_gone(sql_store: Any) -> None:
    """An arm's row renamed after the experiment was set: doctor warns naming the arm's field
    and the row, and the fix; a scope no longer routed by it is not reported."""
    from llmpool.pool.doctor import diagnose

    sql_store.add_many([{"name": n, "provider": "fake", "model_name": "m"} for n in "AB"])
    sql_store.set_experiment("global", {"arms": {"a": {"rows": ["A"]}, "b": {"rows": ["B"]}}})
    row = next(r for r in sql_store.list_llms() if r.name == "B")
    sql_store.update(row.id, {"name": "B2"})
    (found,) = [f for f in diagnose(sql_store) if f.kind == "invalid_experiment"]
    assert (found.severity, found.scope, found.field) == (
        "warning", "global", "experiment.arms.b.rows",
    )  # fmt: skip
    assert "'B', no enabled row" in found.problem and "llmpool experiment set" in found.fix
    sql_store.set_routing("global", "priority")
    assert not [f for f in diagnose(sql_store) if f.kind == "invalid_experiment"]


def test_a_failed_feedback_flush_keeps_its_values_for_the_next_one(
    migrated_url: str, servers: tuple[OpenAIServer, OpenAIServer], caplog: pytest.LogCaptureFixture
) -> None:
    """The table away: the flush writes nothing, says so in a WARNING and keeps the values;
    the table back: the next flush writes each value once."""
    store = SQLStore(migrated_url)
    store.add_many(rows(*servers))
    store.set_experiment("global", {"arms": ARMS})
    pool = LLMPool(store, poll_interval=0, usage_flush_interval=0)
    answer = pool.get_llm_with_fallback().invoke("hi")
    pool.feedback(answer, "thumbs_up", True)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE llm_feedback RENAME TO llm_feedback_away"))
    assert pool.feedback_log.flush() is False
    assert [r.event for r in caplog.records if hasattr(r, "event")] == ["feedback_not_flushed"]
    with store.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE llm_feedback_away RENAME TO llm_feedback"))
    assert pool.feedback_log.flush() is True
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT metric, value FROM llm_feedback")).all() == [
            ("thumbs_up", 1.0)
        ]
    pool.close()
    store.engine.dispose()


def test_feedback_for_a_call_no_replica_noted_is_dropped_after_three_flushes(
    redis_keys: tuple[Any, str], caplog: pytest.LogCaptureFixture
) -> None:
    """With Redis a call id is accepted at once (another replica may have made the call); when
    no replica noted it, three flushes later it is dropped with a WARNING naming the metric."""
    _, prefix = redis_keys
    fleet = {"redis": REDIS_URL, "redis_prefix": prefix, "usage_flush_interval": 0}
    with LLMPool(InMemoryStore([]), poll_interval=0, **fleet) as pool:
        pool.feedback("f" * 32, "thumbs_up", False)
        assert [pool.feedback_log.flush() for _ in range(3)] == [False, False, True]
    dropped = [r for r in caplog.records if getattr(r, "event", None) == "feedback_dropped"]
    assert len(dropped) == 1 and "'thumbs_up'" in dropped[0].getMessage()
