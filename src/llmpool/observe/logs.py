"""`LoggingObserver`: llmpool's events as log records with `llmpool.contracts.FIELDS`; WARNING
alone says production is degraded."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from llmpool.contracts import FIELDS, Observer, log_fields

if TYPE_CHECKING:
    from llmpool.observe import events

__all__ = ["LoggingObserver"]

CALLS = logging.getLogger("llmpool.calls")
BREAKERS = logging.getLogger("llmpool.breakers")
POOL = logging.getLogger("llmpool.pool")

_MAX_BUILD_REPORTS = 4096

_BREAKER_TEXTS: dict[str, tuple[int, str]] = {
    "open": (logging.WARNING, "llmpool opened the circuit breaker of %s after %d failures"),
    "half_open": (logging.INFO, "llmpool probes %s (circuit breaker half-open%s)"),
    "closed": (logging.WARNING, "llmpool closed the circuit breaker of %s%s: it answers again"),
}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _fields(event: Any, *names: str, **extra: Any) -> dict[str, Any]:
    # The documented fields the event has (an attempt has them all), its `names`, `extra`.
    found = {name: getattr(event, name, None) for name in (*FIELDS[1:-1], *names)}
    return {**found, "latency_ms": _ms(getattr(event, "latency", None)), **extra}


class LoggingObserver(Observer):
    """Logs what goes wrong (and recovers); a healthy call logs nothing at any level."""

    every_call = False

    def __init__(self) -> None:
        self._builds: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def on_attempt(self, event: events.AttemptEvent) -> None:
        """A retry at INFO, a skip at DEBUG, an answer after a retry at INFO."""
        detail = event.reason or event.error_class or ""
        if event.outcome == "error" and event.action == "retry":
            level, kind, text = logging.INFO, "retry", "llmpool retries %s after %s"
        elif event.outcome == "skipped":
            level, kind, text = logging.DEBUG, "skip", "llmpool skipped %s: %s"
        elif event.outcome == "ok" and event.attempt > 1:  # a failover has its own record
            level, kind, text = logging.INFO, "answered", "llmpool got its answer from %s%s"
            detail = f" at attempt {event.attempt}"
        else:  # a healthy answer, or an error the failover or all-failed record tells
            return
        if CALLS.isEnabledFor(level):
            CALLS.log(level, text, event.llm_name, detail, extra=log_fields(kind, **_fields(event)))

    def on_failover(self, event: events.FailoverEvent) -> None:
        """A failover at WARNING (to no row: the all-failed record says it)."""
        if event.to_id is None:
            return
        fields = _fields(event, "to_id", "to_name", attempt=event.attempts, outcome="error")
        row = (event.from_id, event.from_name, event.from_provider, event.from_model)
        fields.update(zip(("llm_id", "llm_name", "provider", "model"), row, strict=True))
        text, reason = "llmpool failed over from %s to %s: %s", event.reason or event.error_class
        CALLS.warning(
            text, event.from_name, event.to_name, reason, extra=log_fields("failover", **fields)
        )

    def on_call(self, event: events.CallEvent) -> None:
        """A call that failed at ERROR (every row) or WARNING (a stream broken mid-answer)."""
        if event.outcome == "ok":
            return
        last = next((a for a in reversed(event.attempts) if a.outcome == "error"), None)
        midstream = event.error_class == "MidStreamError"
        if midstream:
            text = "llmpool: a stream broke after sending text; not switching model mid-answer"
        else:
            failed = sum(1 for a in event.attempts if a.outcome == "error")
            text = f"llmpool: every LLM of the chain failed ({failed} attempts)"
        fields = _fields(last, latency_ms=_ms(event.latency)) if last else _fields(event, attempt=0)
        level, kind = (logging.WARNING, "midstream") if midstream else (logging.ERROR, "all_failed")
        CALLS.log(level, text, extra=log_fields(kind, **fields))

    def on_breaker_change(self, event: events.BreakerEvent) -> None:
        """Open and closed at WARNING, a half-open probe at INFO."""
        state = event.state if event.state in _BREAKER_TEXTS else "closed"
        level, text = _BREAKER_TEXTS[state]
        forced = ", forced: every LLM is cooling down" if event.forced else ""
        value = event.failures if state == "open" else forced if state == "half_open" else ""
        fields = _fields(event, "state", "previous", "failures", "trips", "reopens_at")
        BREAKERS.log(
            level, text, event.llm_name, value, extra=log_fields(f"breaker_{state}", **fields)
        )

    def on_reload(self, event: events.ReloadEvent) -> None:
        """A reload at INFO."""
        text = "llmpool reloaded the LLM table: generation %s, %d rows"
        fields = _fields(event, "generation", "previous", "rows", "bad_rows")
        POOL.info(text, event.generation, event.rows, extra=log_fields("reload", **fields))

    def on_build_failure(self, event: events.BuildFailedEvent) -> None:
        """WARNING the first time a row version fails to build for a reason, then DEBUG."""
        key = (event.llm_id, event.error_class, event.reason)
        with self._lock:
            first = key not in self._builds
            if len(self._builds) >= _MAX_BUILD_REPORTS:  # bounded: a flood reports again
                self._builds.clear()
            self._builds.add(key)
        level = logging.WARNING if first else logging.DEBUG
        text = "llmpool skips %s: it cannot be built: %s"
        fields = _fields(event, attempt=0, outcome="skipped")
        POOL.log(
            level, text, event.llm_name, event.reason, extra=log_fields("build_failed", **fields)
        )
