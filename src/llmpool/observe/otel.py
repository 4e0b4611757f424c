"""`OpenTelemetryObserver`: llmpool's events as OpenTelemetry spans and metrics (extra ``otel``).

Only the API package is needed (``pip install "llmpool[otel]"``); the SDK, its exporters and
where the data goes are the application's choice. Nothing is imported before the first event,
and while no tracer or meter provider is configured the observer asks for no event at all, so
a healthy call costs what it costs without OpenTelemetry.

Spans (made when the call ends, with the times it started and ended, under the span current in
the caller):

- one per call, ``chat {scope}``: ``gen_ai.operation.name=chat``, ``llmpool.scope``, and the
  answering row (``llmpool.row.id``, ``llmpool.row.name``, ``gen_ai.system``,
  ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``), or
  ``error.type`` and an error status; a skipped row is a span event ``llmpool.skip``;
- one per attempt, its child, ``chat {model}``: the same attributes for its row, plus
  ``llmpool.attempt`` and ``llmpool.outcome``, and ``error.type`` when it failed.

Metrics (meter ``llmpool``), each with the row's ``llmpool.row.id``, ``llmpool.row.name``,
``llmpool.scope``, ``gen_ai.system`` and ``gen_ai.request.model``:

- ``llmpool.attempts`` (counter; ``llmpool.outcome``, ``error.type``);
- ``llmpool.failovers`` (counter; the row failed over from);
- ``llmpool.breaker.transitions`` (counter; ``llmpool.breaker.state``);
- ``gen_ai.client.operation.duration`` (histogram, seconds, per attempt; ``error.type``);
- ``gen_ai.client.token.usage`` (histogram, tokens; ``gen_ai.token.type`` ``input`` or
  ``output``).

No attribute holds a secret or prompt text: errors are their class names.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import TYPE_CHECKING, Any

from llmpool.observe.hooks import Observer

if TYPE_CHECKING:
    from llmpool.observe.events import AttemptEvent, BreakerEvent, CallEvent, FailoverEvent

__all__ = ["OpenTelemetryObserver", "otel_installed"]

SCOPE_NAME = "llmpool"


def otel_installed() -> bool:
    """Whether the OpenTelemetry API is importable (without importing it)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except (ImportError, ValueError):
        return False


def _set_once(module: Any, name: str) -> Any:
    # The API's "a provider was set" flag (its `Once`): read without a call or an environment
    # lookup, so asking costs an attribute read.
    once = getattr(module, name, None)
    return once if once is not None and hasattr(once, "_done") else None


def _row(scope: str | None, llm_id: str, name: str, provider: str, model: str) -> dict[str, Any]:
    return {
        "llmpool.scope": scope or "",
        "llmpool.row.id": llm_id,
        "llmpool.row.name": name,
        "gen_ai.system": provider,
        "gen_ai.request.model": model,
        "gen_ai.operation.name": "chat",
    }


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class OpenTelemetryObserver(Observer):
    """Spans and metrics through the OpenTelemetry API (see the module docstring).

    Args:
        tracer_provider: A tracer provider; the global one by default.
        meter_provider: A meter provider; the global one by default.

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
        self._watch: tuple[Any, ...] | None = None

    @property
    def every_call(self) -> bool:  # type: ignore[override]
        """Whether a provider is configured: one given here, or a global one set since.

        Nothing is imported to find out: an application that configured OpenTelemetry has
        imported its API, and the API's "provider set" flags are read where they are.
        """
        if self._explicit:
            return True
        watch = self._watch
        if watch is None:
            watch = self._find()
            if watch is None:
                return False
        for once in watch:  # noqa: SIM110 (a loop costs less than any() on every call)
            if once._done:
                return True
        return False

    def _find(self) -> tuple[Any, ...] | None:
        trace = sys.modules.get("opentelemetry.trace")
        metrics = sys.modules.get("opentelemetry.metrics._internal")
        if trace is None or metrics is None:
            return None if trace is None and metrics is None else self._partial(trace, metrics)
        watch = (
            _set_once(trace, "_TRACER_PROVIDER_SET_ONCE"),
            _set_once(metrics, "_METER_PROVIDER_SET_ONCE"),
        )
        if None in watch:  # another API version: assume configured
            self._explicit = True
            return ()
        self._watch = watch
        return watch

    @staticmethod
    def _partial(*modules: Any) -> tuple[Any, ...]:
        # One of the two imported so far: watch it, and look for the other next time.
        names = ("_TRACER_PROVIDER_SET_ONCE", "_METER_PROVIDER_SET_ONCE")
        found = [_set_once(m, n) for m, n in zip(modules, names, strict=True) if m is not None]
        return tuple(once for once in found if once is not None)

    def _setup(self) -> None:
        with self._lock:
            if self._ready:
                return
            from opentelemetry import metrics, trace

            tracer_provider = self._tracer_provider or trace.get_tracer_provider()
            meter_provider = self._meter_provider or metrics.get_meter_provider()
            self.tracer = tracer_provider.get_tracer(SCOPE_NAME)
            meter = meter_provider.get_meter(SCOPE_NAME)
            self.attempts = meter.create_counter(
                "llmpool.attempts", unit="{attempt}", description="Attempts by row and outcome"
            )
            self.failovers = meter.create_counter(
                "llmpool.failovers", unit="{failover}", description="Failovers away from a row"
            )
            self.transitions = meter.create_counter(
                "llmpool.breaker.transitions",
                unit="{transition}",
                description="Circuit breaker state changes by row",
            )
            self.duration = meter.create_histogram(
                "gen_ai.client.operation.duration", unit="s", description="Attempt latency"
            )
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage", unit="{token}", description="Tokens per attempt"
            )
            self._status = trace.Status
            self._error = trace.StatusCode.ERROR
            self._in_context = trace.set_span_in_context
            self._ready = True

    def _active(self) -> bool:
        if not self.every_call:
            return False
        if not self._ready:
            self._setup()
        return True

    def on_attempt(self, event: AttemptEvent) -> None:
        """Count the attempt, its latency and its tokens."""
        if not self._active():
            return
        attributes = _row(event.scope, event.llm_id, event.llm_name, event.provider, event.model)
        attributes["llmpool.outcome"] = event.outcome
        if event.error_class:
            attributes["error.type"] = event.error_class
        self.attempts.add(1, attributes)
        if event.outcome == "skipped" or event.latency is None:
            return
        del attributes["llmpool.outcome"]
        self.duration.record(event.latency, attributes)
        usage = event.usage
        if usage:
            for key, kind in (("input_tokens", "input"), ("output_tokens", "output")):
                value = usage.get(key)
                if isinstance(value, int):
                    self.tokens.record(value, {**attributes, "gen_ai.token.type": kind})

    def on_failover(self, event: FailoverEvent) -> None:
        """Count the failover, on the row it left."""
        if not self._active():
            return
        attributes = _row(
            event.scope, event.from_id, event.from_name, event.from_provider, event.from_model
        )
        if event.error_class:
            attributes["error.type"] = event.error_class
        self.failovers.add(1, attributes)

    def on_breaker_change(self, event: BreakerEvent) -> None:
        """Count the transition."""
        if not self._active():
            return
        attributes = _row(event.scope, event.llm_id, event.llm_name, event.provider, event.model)
        attributes["llmpool.breaker.state"] = event.state
        self.transitions.add(1, attributes)

    def on_call(self, event: CallEvent) -> None:
        """The call's span and one child span per attempt, with their own times."""
        if not self._active():
            return
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "llmpool.scope": event.scope or "",
            "llmpool.streaming": event.streaming,
        }
        if event.llm_id is not None:
            attributes.update(
                _row(event.scope, event.llm_id, event.llm_name or "", event.provider or "",
                     event.model or "")
            )  # fmt: skip
        answer = event.attempts[-1] if event.outcome == "ok" and event.attempts else None
        if answer is not None and answer.usage:
            for key in ("input_tokens", "output_tokens"):
                value = answer.usage.get(key)
                if isinstance(value, int):
                    attributes[f"gen_ai.usage.{key}"] = value
        if event.error_class:
            attributes["error.type"] = event.error_class
        start = _ns(event.started)
        span = self.tracer.start_span(
            f"chat {event.scope or 'llmpool'}", attributes=attributes, start_time=start
        )
        if event.error_class:
            span.set_status(self._status(self._error, event.error_class))
        context = self._in_context(span)
        for attempt in event.attempts:
            if attempt.outcome == "skipped":
                span.add_event(
                    "llmpool.skip",
                    {
                        "llmpool.row.id": attempt.llm_id,
                        "llmpool.row.name": attempt.llm_name,
                        "llmpool.reason": attempt.error_class or "skipped",
                    },
                    timestamp=_ns(attempt.started),
                )
                continue
            self._attempt_span(attempt, context)
        span.end(end_time=start + _ns(event.latency))

    def _attempt_span(self, attempt: AttemptEvent, context: Any) -> None:
        attributes = _row(
            attempt.scope, attempt.llm_id, attempt.llm_name, attempt.provider, attempt.model
        )
        attributes["llmpool.attempt"] = attempt.attempt
        attributes["llmpool.outcome"] = attempt.outcome
        attributes["llmpool.probe"] = attempt.probe
        if attempt.error_class:
            attributes["error.type"] = attempt.error_class
        if attempt.usage:
            for key in ("input_tokens", "output_tokens"):
                value = attempt.usage.get(key)
                if isinstance(value, int):
                    attributes[f"gen_ai.usage.{key}"] = value
        start = _ns(attempt.started)
        child = self.tracer.start_span(
            f"chat {attempt.model}", context=context, attributes=attributes, start_time=start
        )
        if attempt.error_class:
            child.set_status(self._status(self._error, attempt.error_class))
        child.end(end_time=start + _ns(attempt.latency or 0.0))
