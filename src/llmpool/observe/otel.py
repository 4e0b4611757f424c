"""`OpenTelemetryObserver`: llmpool's events as OpenTelemetry spans and metrics (extra ``otel``),
nothing imported until a tracer or meter provider is configured."""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmpool.contracts import Observer

if TYPE_CHECKING:
    from llmpool.observe.events import AttemptEvent, BreakerEvent, CallEvent, FailoverEvent

__all__ = ["OpenTelemetryObserver", "otel_installed"]


def otel_installed() -> bool:
    """Whether the OpenTelemetry API is importable (without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


#: The API's modules that keep whether a global provider was set (a `Once` each).
_TRACE, _METRICS = "opentelemetry.trace", "opentelemetry.metrics._internal"


_SCHEMA = "https://opentelemetry.io/schemas/1.37.0"


def _set(module: Any, flag: str) -> bool:
    # Whether a global provider flag is set (a flag missing is another API version: assume a
    # provider is configured).
    return bool(getattr(getattr(module, flag, None), "_done", True))


def _latest_only() -> bool:
    # The conventions' transition plan: this value drops the names they deprecated.
    opted = os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", "")
    return "gen_ai_latest_experimental" in {value.strip() for value in opted.split(",")}


def _tokens(usage: Mapping[str, Any] | None) -> dict[str, int]:
    found = {key: (usage or {}).get(key) for key in ("input_tokens", "output_tokens")}
    return {f"gen_ai.usage.{key}": n for key, n in found.items() if isinstance(n, int)}


def _row(event: Any, *row: Any) -> dict[str, Any]:
    # llmpool's own attributes of an event's row (``row``: a failover's, the row it left).
    row = row or (event.llm_id, event.llm_name, event.provider, event.model)
    llm_id, name, provider, model = row
    attributes = {
        "llmpool.scope": event.scope or "",
        "llmpool.row.id": llm_id,
        "llmpool.row.name": name or "",
        "llmpool.provider": provider or "",
        "gen_ai.request.model": model or "",
    }
    if getattr(event, "error_class", None):
        attributes["error.type"] = event.error_class
    return attributes


def _request(attempt: AttemptEvent, legacy: bool) -> dict[str, Any]:
    # The GenAI conventions' attributes of an attempt's request and of its answer's model.
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": attempt.operation,
        "gen_ai.provider.name": attempt.system or attempt.provider,
        "gen_ai.request.model": attempt.model,
    }
    if legacy:
        attributes["gen_ai.system"] = attributes["gen_ai.provider.name"]
    if attempt.server_address is not None:
        attributes["server.address"] = attempt.server_address
        if attempt.server_port is not None:
            attributes["server.port"] = attempt.server_port
    model = (attempt.response or {}).get("model")
    if model:
        attributes["gen_ai.response.model"] = model
    if attempt.error_class:
        attributes["error.type"] = attempt.error_class
    return attributes


class OpenTelemetryObserver(Observer):
    """Spans and metrics through the given providers, or the global ones.

    Example:
        >>> from llmpool import FallbackPolicy
        >>> from llmpool.observe.otel import OpenTelemetryObserver
        >>> policy = FallbackPolicy(observers=[OpenTelemetryObserver()])
    """

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._explicit = tracer_provider is not None or meter_provider is not None
        self._lock = threading.Lock()
        self._ready = False
        self._modules: tuple[Any, ...] | None = None  # the API's modules holding the flags

    @property
    def every_call(self) -> bool:  # type: ignore[override]
        """Whether a provider is given here or set globally since (nothing imported to know)."""
        if self._explicit:
            return True
        modules = self._modules
        if modules is None:  # until both are imported (asked at every call: kept once found)
            trace: Any = sys.modules.get(_TRACE)
            metrics: Any = sys.modules.get(_METRICS)
            if trace is None or metrics is None:
                return (trace is not None and _set(trace, "_TRACER_PROVIDER_SET_ONCE")) or (
                    metrics is not None and _set(metrics, "_METER_PROVIDER_SET_ONCE")
                )
            modules = self._modules = (trace, metrics)
        trace, metrics = modules
        try:  # read from the modules each time: a test may replace a flag
            return bool(
                trace._TRACER_PROVIDER_SET_ONCE._done or metrics._METER_PROVIDER_SET_ONCE._done
            )
        except AttributeError:  # another API version: assume a provider is configured
            return True

    def _active(self) -> bool:
        # Once a provider is configured it stays so: the first event recorded sets up.
        if self._ready or not self.every_call:
            return self._ready
        with self._lock:
            if not self._ready:
                self._set_up()
        return True

    def _set_up(self) -> None:
        from opentelemetry import metrics, trace

        from llmpool.version import __version__

        # The schema names the conventions' version the names follow.
        named = ("llmpool", __version__, _SCHEMA)
        self.tracer = (self._tracer_provider or trace.get_tracer_provider()).get_tracer(*named)
        meter = (self._meter_provider or metrics.get_meter_provider()).get_meter(*named)
        counter, histogram = meter.create_counter, meter.create_histogram
        self.attempts = counter("llmpool.attempts", "{attempt}", "Attempts by row and outcome")
        self.failovers = counter("llmpool.failovers", "{failover}", "Failovers away from a row")
        self.transitions = counter(
            "llmpool.breaker.transitions", "{transition}", "Circuit breaker state changes by row"
        )
        self.duration = histogram("gen_ai.client.operation.duration", "s", "Attempt latency")
        self.tokens = histogram("gen_ai.client.token.usage", "{token}", "Tokens per attempt")
        self._trace = trace
        self._legacy = not _latest_only()  # read once, as the rest of the set-up
        self._ready = True

    def on_attempt(self, event: AttemptEvent) -> None:
        """Count the attempt, its latency and its tokens."""
        if not self._active():
            return
        attributes = _row(event)
        self.attempts.add(1, {**attributes, "llmpool.outcome": event.outcome})
        if event.outcome == "skipped" or event.latency is None:
            return
        attributes.update(_request(event, self._legacy))
        self.duration.record(event.latency, attributes)
        for key, value in _tokens(event.usage).items():
            kind = key.removeprefix("gen_ai.usage.").removesuffix("_tokens")
            self.tokens.record(value, {**attributes, "gen_ai.token.type": kind})

    def on_failover(self, event: FailoverEvent) -> None:
        """Count the failover, on the row it left."""
        if self._active():
            left = (event.from_id, event.from_name, event.from_provider, event.from_model)
            self.failovers.add(1, _row(event, *left))

    def on_breaker_change(self, event: BreakerEvent) -> None:
        """Count the transition."""
        if self._active():
            self.transitions.add(1, {**_row(event), "llmpool.breaker.state": event.state})

    def on_call(self, event: CallEvent) -> None:
        """The call's span (``INTERNAL``: it is llmpool's walk, not a request), and one
        ``CLIENT`` span per request made, named ``{operation} {model}``, with their own times."""
        if not self._active():
            return
        trace = self._trace
        # No gen_ai.* attribute: a backend adding up model calls or tokens counts each once.
        attributes: dict[str, Any] = {"llmpool.scope": event.scope or ""}
        if event.llm_id is not None:
            attributes["llmpool.row.id"] = event.llm_id
            attributes["llmpool.row.name"] = event.llm_name or ""
        made = sum(1 for attempt in event.attempts if attempt.outcome != "skipped")
        attributes.update({"llmpool.streaming": event.streaming, "llmpool.attempts": made})
        for name, value in (event.tags or {}).items():  # an experiment's arm among them
            attributes[f"llmpool.tag.{name}"] = value
        if event.call_id is not None:
            attributes["llmpool.call_id"] = event.call_id
        span = self._span(f"llmpool {event.scope or 'call'}", attributes, event)
        context = trace.set_span_in_context(span)
        for attempt in event.attempts:
            if attempt.outcome == "skipped":
                skip = {"llmpool.row.id": attempt.llm_id, "llmpool.row.name": attempt.llm_name}
                skip["llmpool.reason"] = attempt.error_class or "skipped"
                span.add_event("llmpool.skip", skip, timestamp=int(attempt.started * 1e9))
                continue
            attributes = {**_row(attempt), **_request(attempt, self._legacy)}
            for key, value in (attempt.parameters or {}).items():
                attributes[f"gen_ai.request.{key}"] = value
            response = attempt.response or {}
            if response.get("id"):
                attributes["gen_ai.response.id"] = response["id"]
            if response.get("finish_reasons"):
                attributes["gen_ai.response.finish_reasons"] = response["finish_reasons"]
            attributes.update(_tokens(attempt.usage))
            attributes["llmpool.attempt"] = attempt.attempt
            attributes["llmpool.outcome"] = attempt.outcome
            attributes["llmpool.probe"] = attempt.probe
            name = f"{attempt.operation} {attempt.model}"
            self._span(name, attributes, attempt, context, trace.SpanKind.CLIENT)
        span.end(end_time=int(event.started * 1e9) + int(event.latency * 1e9))

    def _span(
        self,
        name: str,
        attributes: dict[str, Any],
        timed: Any,
        context: Any = None,
        kind: Any = None,
    ) -> Any:
        # A call's span (left open for its attempts), or an attempt's (ended here).
        trace = self._trace
        if timed.error_class:
            attributes["error.type"] = timed.error_class
        start = int(timed.started * 1e9)
        span = self.tracer.start_span(
            name,
            context=context,
            kind=kind or trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )
        if timed.error_class:
            span.set_status(trace.Status(trace.StatusCode.ERROR, timed.error_class))
        if context is not None:
            span.end(end_time=start + int((timed.latency or 0.0) * 1e9))
        return span
