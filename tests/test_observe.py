"""Logging, OpenTelemetry and custom observers of the walk, with real clients and fault scripts.

Log records are asserted by their ``extra`` fields (``record.event``, ``record.llm_name``...),
never by message text; OpenTelemetry data with the SDK's in-memory exporter and reader.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from embedding_servers import OpenAIEmbeddingServer
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import (
    AnthropicServer,
    Cut,
    Hang,
    OllamaServer,
    OpenAIServer,
    Reply,
    Status,
    closed_port_url,
)

from llmpool.errors import AllLLMsFailedError, MidStreamError
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.model import Candidate, FallbackChatModel
from llmpool.fallback.policy import FallbackPolicy
from llmpool.models import LLMConfig
from llmpool.observe import Observer
from llmpool.observe.otel import OpenTelemetryObserver
from llmpool.pool.facade import LLMPool
from llmpool.providers import ProviderRegistry, register_provider, set_registry
from llmpool.providers.fake import FakeChatModel
from llmpool.repository.memory import InMemoryStore

FAST = FallbackPolicy(attempts=2, backoff_initial=0.001, backoff_max=0.01, backoff_jitter=0)
MODES = ["invoke", "ainvoke", "stream", "astream"]


class Telemetry:
    """An OpenTelemetry SDK of the test's own: spans and metrics kept in memory."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.observer = OpenTelemetryObserver(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
        )

    def points(self, name: str) -> list[Any]:
        """Every data point of the metric ``name``."""
        data = self.reader.get_metrics_data()
        return [
            point
            for resource in (data.resource_metrics if data else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def telemetry() -> Telemetry:
    """An in-memory OpenTelemetry SDK, handed to llmpool as an observer."""
    return Telemetry()


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str, str | None, Any]]:
    """The llmpool records as (level, event, row name, error class)."""
    return [
        (r.levelno, r.event, getattr(r, "llm_name", None), getattr(r, "error_class", None))
        for r in caplog.records
        if r.name.startswith("llmpool") and hasattr(r, "event")
    ]


def call(llm: Any, mode: str) -> Any:
    """Invoke or stream ``llm`` in ``mode``; return the answer's text and its metadata."""
    if mode == "invoke":
        answer = llm.invoke("hi")
        return answer.content, answer.response_metadata["llmpool"]
    if mode == "ainvoke":
        answer = asyncio.run(llm.ainvoke("hi"))
        return answer.content, answer.response_metadata["llmpool"]
    if mode == "stream":
        chunks = list(llm.stream("hi"))
    else:

        async def collect() -> list[Any]:
            return [chunk async for chunk in llm.astream("hi")]

        chunks = asyncio.run(collect())
    meta = next(c.response_metadata["llmpool"] for c in chunks if "llmpool" in c.response_metadata)
    return "".join(str(c.content) for c in chunks), meta


def openai_row(name: str, priority: int, url: str, **config: Any) -> dict[str, Any]:
    """An ``openai`` row pointed at a local server."""
    return {
        "name": name,
        "provider": "openai",
        "model_name": name.lower().replace(" ", "-"),
        "priority": priority,
        "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
        "config": {"base_url": url + "/v1", **config},
    }


@pytest.fixture
def seed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[OpenAIServer, OpenAIServer, Any]]:
    """GPT-4's and GPT-3.5's servers, and Ollama's."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-observe-0123456789")
    with OpenAIServer() as gpt4, OpenAIServer() as gpt35, OllamaServer() as ollama:
        yield gpt4, gpt35, ollama


def seed_pool(servers: Any, **options: Any) -> LLMPool:
    """GPT-4, then GPT-3.5, then Ollama: the usage guide's chain on local servers."""
    gpt4, gpt35, ollama = servers
    rows = [
        openai_row("GPT-4", 10, gpt4.url),
        openai_row("GPT-3.5", 20, gpt35.url),
        {"name": "Ollama", "provider": "ollama", "model_name": "llama2", "priority": 80,
         "config": {"base_url": ollama.url}},
    ]  # fmt: skip
    return LLMPool(InMemoryStore(rows), policy=FAST, poll_interval=0, **options)


@pytest.mark.parametrize("mode", MODES)
def test_500_then_401_then_answer_logs_a_retry_and_two_failovers(
    mode: str, seed: Any, caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    """GPT-4 500s twice, GPT-3.5 401s, Ollama answers: a retry, two failovers, spans, metrics."""
    gpt4, gpt35, ollama = seed
    gpt4.script(Status(500), Status(500))
    gpt35.script(Status(401))
    ollama.script(Reply("from ollama"))
    with seed_pool(seed, observers=[telemetry.observer]) as pool, caplog.at_level(logging.DEBUG):
        text, meta = call(pool.get_llm_with_fallback(), mode)
    assert (text, meta["name"]) == ("from ollama", "Ollama")
    assert events(caplog) == [
        (logging.INFO, "retry", "GPT-4", "OpenAIAPIError"),
        (logging.WARNING, "failover", "GPT-4", "OpenAIAPIError"),
        (logging.WARNING, "failover", "GPT-3.5", "OpenAIAuthenticationError"),
    ]
    failovers = [r for r in caplog.records if getattr(r, "event", None) == "failover"]
    assert [(r.to_name, r.scope, r.provider) for r in failovers] == [
        ("GPT-3.5", "global", "openai"),
        ("Ollama", "global", "openai"),
    ]
    assert failovers[0].model == "gpt-4"
    (call_span,) = [s for s in telemetry.spans.get_finished_spans() if s.parent is None]
    children = [s for s in telemetry.spans.get_finished_spans() if s.parent is not None]
    assert (call_span.name, call_span.kind) == ("llmpool global", SpanKind.INTERNAL)
    assert call_span.attributes["llmpool.row.name"] == "Ollama"
    assert call_span.attributes["llmpool.attempts"] == 4
    assert not [key for key in call_span.attributes if key.startswith("gen_ai.")]
    assert [(s.name, s.kind) for s in children] == [
        ("chat gpt-4", SpanKind.CLIENT), ("chat gpt-4", SpanKind.CLIENT),
        ("chat gpt-3.5", SpanKind.CLIENT), ("chat llama2", SpanKind.CLIENT),
    ]  # fmt: skip
    assert [s.attributes["gen_ai.provider.name"] for s in children] == [
        "openai", "openai", "openai", "ollama",
    ]  # fmt: skip
    assert [
        (s.attributes["llmpool.row.name"], s.attributes["llmpool.attempt"],
         s.attributes.get("error.type"))
        for s in children
    ] == [
        ("GPT-4", 1, "OpenAIAPIError"), ("GPT-4", 2, "OpenAIAPIError"),
        ("GPT-3.5", 1, "OpenAIAuthenticationError"), ("Ollama", 1, None),
    ]  # fmt: skip
    assert all(s.parent.span_id == call_span.context.span_id for s in children)
    assert children[-1].attributes["gen_ai.request.model"] == "llama2"
    assert children[-1].attributes["gen_ai.usage.input_tokens"] == 3
    attempts = {
        (p.attributes["llmpool.row.name"], p.attributes["llmpool.outcome"]): p.value
        for p in telemetry.points("llmpool.attempts")
    }
    assert attempts == {("GPT-4", "error"): 2, ("GPT-3.5", "error"): 1, ("Ollama", "ok"): 1}
    failed_over = {p.attributes["llmpool.row.name"]: p.value for p in telemetry.points(
        "llmpool.failovers")}  # fmt: skip
    assert failed_over == {"GPT-4": 1, "GPT-3.5": 1}
    durations = {p.attributes["llmpool.row.name"] for p in telemetry.points(
        "gen_ai.client.operation.duration")}  # fmt: skip
    assert durations == {"GPT-4", "GPT-3.5", "Ollama"}
    tokens = {(p.attributes["gen_ai.token.type"], p.sum) for p in telemetry.points(
        "gen_ai.client.token.usage")}  # fmt: skip
    assert tokens == {("input", 3), ("output", 5)}


@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_429_with_retry_after_is_retried_and_logged_once(
    mode: str, seed: Any, caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    """A 429 asking to wait 0 s is retried on the same row: one INFO record, no failover."""
    gpt4, _, _ = seed
    gpt4.script(Status(429, headers={"retry-after": "0"}), Reply("second time"))
    with seed_pool(seed, observers=[telemetry.observer]) as pool, caplog.at_level(logging.DEBUG):
        text, meta = call(pool.get_llm_with_fallback(), mode)
    assert (text, meta["name"]) == ("second time", "GPT-4")
    assert events(caplog) == [
        (logging.INFO, "retry", "GPT-4", "OpenAIRateLimitError"),
        (logging.INFO, "answered", "GPT-4", None),
    ]
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "retry"]
    assert (record.attempt, record.outcome, record.latency_ms > 0) == (1, "error", True)
    outcomes = sorted(
        (p.attributes["llmpool.outcome"], p.attributes.get("error.type"), p.value)
        for p in telemetry.points("llmpool.attempts")
    )
    assert outcomes == [("error", "OpenAIRateLimitError", 1), ("ok", None, 1)]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize("fault", ["hang", "refused"])
def test_hang_and_refused_connection_fail_over(
    mode: str, fault: str, seed: Any, caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    """A server that never answers (client timeout) or a closed port: retried, then failover."""
    gpt4, gpt35, _ = seed
    gpt4.script(Hang(5), Hang(5))
    url = gpt4.url if fault == "hang" else closed_port_url()
    rows = [openai_row("GPT-4", 10, url, timeout=0.3), openai_row("GPT-3.5", 20, gpt35.url)]
    error_class = "OpenAITimeoutError" if fault == "hang" else "OpenAIConnectionError"
    pool = LLMPool(InMemoryStore(rows), policy=FAST, poll_interval=0, observers=[
        telemetry.observer])  # fmt: skip
    with pool, caplog.at_level(logging.DEBUG):
        _, meta = call(pool.get_llm_with_fallback(), mode)
    assert meta["name"] == "GPT-3.5"
    assert events(caplog) == [
        (logging.INFO, "retry", "GPT-4", error_class),
        (logging.WARNING, "failover", "GPT-4", error_class),
    ]
    errors = [s.attributes.get("error.type") for s in telemetry.spans.get_finished_spans()]
    assert errors.count(error_class) == 2


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_stream_cut_mid_answer_logs_a_warning_and_an_error_span(
    mode: str, seed: Any, caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    """A stream cut after content raises MidStreamError: one WARNING record, an error span."""
    gpt4, _, _ = seed
    gpt4.script(Cut(after=2))
    pool = seed_pool(seed, observers=[telemetry.observer])
    with pool, caplog.at_level(logging.DEBUG), pytest.raises(MidStreamError):
        call(pool.get_llm_with_fallback(), mode)
    # openai 3 wraps the broken read in APIConnectionError (langchain-openai: its
    # OpenAIConnectionError); openai 2 lets httpx's RemoteProtocolError through.
    import openai

    cut = (
        "OpenAIConnectionError"
        if int(openai.__version__.split(".")[0]) >= 3
        else "RemoteProtocolError"
    )
    assert events(caplog) == [(logging.WARNING, "midstream", "GPT-4", cut)]
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.parent is None]
    assert span.attributes["error.type"] == "MidStreamError"
    assert not span.status.is_ok


def test_every_row_failing_logs_an_error_record(
    seed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Every row failing ends with one ERROR record naming the last row that failed."""
    gpt4, gpt35, ollama = seed
    gpt4.script(Status(401))
    gpt35.script(Status(403))
    ollama.script(Status(404))
    pool = seed_pool(seed)
    with pool, caplog.at_level(logging.WARNING), pytest.raises(AllLLMsFailedError):
        pool.get_llm_with_fallback().invoke("hi")
    assert [e[:3] for e in events(caplog)] == [
        (logging.WARNING, "failover", "GPT-4"),
        (logging.WARNING, "failover", "GPT-3.5"),
        (logging.ERROR, "all_failed", "Ollama"),
    ]


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_open_half_open_and_closed_are_logged_and_counted(
    caplog: pytest.LogCaptureFixture, telemetry: Telemetry
) -> None:
    """Two failures open the breaker (WARNING), the probe is INFO, its success closes it."""
    clock = Clock()
    policy = FallbackPolicy(attempts=1, failure_threshold=2, cooldown=10,
                            observers=[telemetry.observer])  # fmt: skip
    flaky = FakeChatModel(error="connection refused")
    primary = Candidate(LLMConfig(id="p", name="Primary", provider="fake", model_name="m"), flaky)
    backup = Candidate(LLMConfig(id="b", name="Backup", provider="fake", model_name="m"),
                       FakeChatModel(responses=["backup"]))  # fmt: skip
    llm = FallbackChatModel(candidates=[primary, backup], policy=policy,
                            breakers=BreakerBoard(clock=clock))  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            llm.invoke("hi")  # the third skips the open breaker
        clock.now += 11
        object.__setattr__(primary, "model", FakeChatModel(responses=["primary again"]))
        assert llm.invoke("hi").content == "primary again"
    breaker = [e for e in events(caplog) if e[1].startswith("breaker")]
    assert breaker == [
        (logging.WARNING, "breaker_open", "Primary", None),
        (logging.INFO, "breaker_half_open", "Primary", None),
        (logging.WARNING, "breaker_closed", "Primary", None),
    ]
    assert (logging.DEBUG, "skip", "Primary", None) in events(caplog)
    states = sorted(p.attributes["llmpool.breaker.state"] for p in telemetry.points(
        "llmpool.breaker.transitions"))  # fmt: skip
    assert states == ["closed", "half_open", "open"]


@pytest.mark.parametrize("level", [logging.WARNING, logging.DEBUG])
def test_a_healthy_primary_logs_nothing_and_tells_no_idle_observer(
    level: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A healthy call emits no record at any level, and OpenTelemetry with no SDK asks nothing."""
    row = LLMConfig(id="1", name="Primary", provider="fake", model_name="m")
    llm = FallbackChatModel(candidates=[Candidate(row, FakeChatModel(responses=["ok"]))])
    with caplog.at_level(level):
        for _ in range(20):
            llm.invoke("hi")
            list(llm.stream("hi"))
    assert [r for r in caplog.records if r.name.startswith("llmpool")] == []
    assert not OpenTelemetryObserver().every_call  # no provider configured in this process
    assert not llm.policy.hooks.every_call


def test_custom_observer_on_a_pool_sees_attempts_with_usage_and_a_broken_one_is_harmless(
    seed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A pool's observers hear every attempt (with token usage); one that raises breaks nothing."""
    gpt4, _, _ = seed

    class Seen(Observer):
        def __init__(self) -> None:
            self.attempts: list[Any] = []
            self.calls: list[Any] = []

        def on_attempt(self, event: Any) -> None:
            self.attempts.append(event)

        def on_call(self, event: Any) -> None:
            self.calls.append(event)

    class Broken(Observer):
        def on_attempt(self, event: Any) -> None:
            raise RuntimeError("observer bug")

    seen = Seen()
    gpt4.script(Reply("fine"), Status(500), Reply("again"))
    with seed_pool(seed, observers=[Broken(), seen]) as pool, caplog.at_level(logging.WARNING):
        llm = pool.get_llm_with_fallback()
        assert llm.invoke("hi").content == "fine"
        assert llm.invoke("hi").content == "again"
    assert [(a.llm_name, a.attempt, a.outcome) for a in seen.attempts] == [
        ("GPT-4", 1, "ok"), ("GPT-4", 1, "error"), ("GPT-4", 2, "ok"),
    ]  # fmt: skip
    usage = seen.attempts[0].usage
    assert {k: usage[k] for k in ("input_tokens", "output_tokens", "total_tokens")} == {
        "input_tokens": 3, "output_tokens": 5, "total_tokens": 8,
    }  # fmt: skip
    assert seen.attempts[1].action == "retry"
    assert [(c.outcome, c.llm_name, len(c.attempts)) for c in seen.calls] == [
        ("ok", "GPT-4", 1), ("ok", "GPT-4", 2),
    ]  # fmt: skip
    reports = [r for r in caplog.records if getattr(r, "event", None) == "observer_error"]
    assert [(r.observer.rsplit(".", 1)[-1], r.error_class) for r in reports] == [
        ("Broken", "RuntimeError")
    ]


def test_reload_and_unbuildable_row_are_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A row missing its variable is a WARNING once (DEBUG after), a reload an INFO record."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    store = InMemoryStore([
        openai_row("Keyless", 1, "http://127.0.0.1:9"),
        {"name": "Fake", "provider": "fake", "model_name": "m", "priority": 2},
    ])  # fmt: skip
    pool = LLMPool(store, poll_interval=0, retry_failed_builds_after=0)
    with pool, caplog.at_level(logging.DEBUG):
        pool.get_llm_with_fallback().invoke("hi")
        pool.refresh()
        pool.get_llm_with_fallback().invoke("hi")
    builds = [(e[0], e[2], e[3]) for e in events(caplog) if e[1] == "build_failed"]
    assert builds[0] == (logging.WARNING, "Keyless", "MissingSecretError")
    assert len(builds) > 1
    assert set(builds[1:]) == {(logging.DEBUG, "Keyless", "MissingSecretError")}
    (reload,) = [r for r in caplog.records if getattr(r, "event", None) == "reload"]
    assert (reload.levelno, reload.rows, reload.bad_rows) == (logging.INFO, 2, 0)


def client_spans(telemetry: Telemetry) -> list[Any]:
    """The attempt spans, in the order they started."""
    spans = [s for s in telemetry.spans.get_finished_spans() if s.parent is not None]
    return sorted(spans, key=lambda s: s.start_time)


@pytest.mark.parametrize("mode", MODES)
def test_an_openai_attempt_span_carries_request_server_and_response_attributes(
    mode: str, seed: Any, telemetry: Telemetry
) -> None:
    """A real ChatOpenAI's attempt: a CLIENT span `chat {model}` with the conventions' names."""
    gpt4, _, _ = seed
    gpt4.script(Reply("hello"))
    row = openai_row("GPT-4o", 1, gpt4.url, temperature=0.2, max_tokens=64, top_p=0.9, stop="END")
    pool = LLMPool(InMemoryStore([row]), policy=FAST, poll_interval=0,
                   observers=[telemetry.observer])  # fmt: skip
    with pool:
        call(pool.get_llm_with_fallback(), mode)
    (span,) = client_spans(telemetry)
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",  # the deprecated name too, by default
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.max_tokens": 64,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.stop_sequences": ("END",),
        "server.address": "127.0.0.1",
        "server.port": int(gpt4.url.rsplit(":", 1)[1]),
        "gen_ai.response.model": "gpt-4o",
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert (span.name, span.kind) == ("chat gpt-4o", SpanKind.CLIENT)
    assert {key: span.attributes.get(key) for key in expected} == expected
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.37.0"
    if mode.endswith("invoke"):  # a stream's chunks carry neither the id nor the usage here
        assert span.attributes["gen_ai.response.id"] == "chatcmpl-local"
        assert span.attributes["gen_ai.usage.input_tokens"] == 3
        assert span.attributes["gen_ai.usage.output_tokens"] == 5
    (duration,) = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes["gen_ai.response.model"] == "gpt-4o"
    assert duration.attributes["server.address"] == "127.0.0.1"


@pytest.mark.parametrize("mode", ["invoke", "astream"])
def test_an_anthropic_attempt_span_names_its_provider_id_and_stop_reason(
    mode: str, monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry
) -> None:
    """A real ChatAnthropic's attempt: provider ``anthropic``, its message id and stop reason."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-observe-0123456789")
    with AnthropicServer() as server:
        server.script(Reply("hello"))
        row = {"name": "Claude", "provider": "anthropic", "model_name": "claude-sonnet-4-5",
               "auth_meta": {"api_key_env": "ANTHROPIC_API_KEY"},
               "config": {"base_url": server.url, "max_tokens": 256, "temperature": 0}}  # fmt: skip
        pool = LLMPool(InMemoryStore([row]), policy=FAST, poll_interval=0,
                       observers=[telemetry.observer])  # fmt: skip
        with pool:
            call(pool.get_llm_with_fallback(), mode)
    (span,) = client_spans(telemetry)
    assert (span.name, span.kind) == ("chat claude-sonnet-4-5", SpanKind.CLIENT)
    expected = {
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.temperature": 0,
        "gen_ai.response.model": "claude-sonnet-4-5",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "server.address": "127.0.0.1",
    }
    assert {key: span.attributes.get(key) for key in expected} == expected
    assert span.attributes.get("gen_ai.response.id") == ("msg_local" if mode == "invoke" else None)


def test_opting_in_to_the_latest_conventions_drops_the_deprecated_names(
    seed: Any, monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry
) -> None:
    """``OTEL_SEMCONV_STABILITY_OPT_IN`` with ``gen_ai_latest_experimental``: no gen_ai.system."""
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "http, gen_ai_latest_experimental")
    gpt4, _, _ = seed
    gpt4.script(Status(500), Reply("second time"))
    rows = [openai_row("GPT-4", 1, gpt4.url)]
    pool = LLMPool(InMemoryStore(rows), policy=FAST, poll_interval=0,
                   observers=[telemetry.observer])  # fmt: skip
    with pool:
        pool.get_llm_with_fallback().invoke("hi")
    failed, answered = client_spans(telemetry)
    assert [s.kind for s in (failed, answered)] == [SpanKind.CLIENT, SpanKind.CLIENT]
    assert failed.attributes["error.type"] == "OpenAIAPIError"
    assert not failed.status.is_ok
    assert "gen_ai.response.model" not in failed.attributes
    assert answered.attributes["gen_ai.provider.name"] == "openai"
    points = telemetry.points("gen_ai.client.operation.duration")
    assert len(points) == 2
    for attributes in [failed.attributes, answered.attributes, *(p.attributes for p in points)]:
        assert "gen_ai.system" not in attributes
        assert attributes["server.port"] == int(gpt4.url.rsplit(":", 1)[1])


def test_an_embeddings_attempt_span_is_named_for_its_operation(
    monkeypatch: pytest.MonkeyPatch, telemetry: Telemetry
) -> None:
    """A real OpenAIEmbeddings' attempt: a CLIENT span `embeddings {model}`."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-observe-0123456789")
    with OpenAIEmbeddingServer() as server:
        row = {
            "name": "Small",
            "provider": "openai",
            "model_name": "text-embedding-3-small",
            "kind": "embedding",
            "auth_meta": {"api_key_env": "OPENAI_API_KEY"},
            "config": {"base_url": server.url + "/v1", "check_embedding_ctx_length": False},
        }
        pool = LLMPool(InMemoryStore([row]), policy=FAST, poll_interval=0,
                       observers=[telemetry.observer])  # fmt: skip
        with pool:
            pool.get_embeddings_with_fallback().embed_query("hi")
    (span,) = client_spans(telemetry)
    assert (span.name, span.kind) == ("embeddings text-embedding-3-small", SpanKind.CLIENT)
    assert span.attributes["gen_ai.operation.name"] == "embeddings"
    assert span.attributes["gen_ai.provider.name"] == "openai"


def test_a_plugin_providers_declared_id_and_endpoint_name_its_attempt_spans(
    telemetry: Telemetry,
) -> None:
    """A provider registered with genai_name and default_endpoint: its spans carry them."""

    def build(config: LLMConfig, auth: Any) -> FakeChatModel:
        return FakeChatModel(responses=["bonjour"])

    row = {"name": "Mistral", "provider": "mistral", "model_name": "mistral-large"}
    with set_registry(ProviderRegistry(entry_points=[])):
        register_provider(
            "mistral", build, genai_name="mistral_ai", default_endpoint="https://api.mistral.ai"
        )
        pool = LLMPool(InMemoryStore([row]), poll_interval=0, observers=[telemetry.observer])
        with pool:
            assert pool.get_llm_with_fallback().invoke("hi").content == "bonjour"
    (span,) = client_spans(telemetry)
    assert span.name == "chat mistral-large"
    assert span.attributes["gen_ai.provider.name"] == "mistral_ai"
    assert (span.attributes["server.address"], span.attributes["server.port"]) == (
        "api.mistral.ai", 443,
    )  # fmt: skip
