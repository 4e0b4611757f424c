"""`LoggingObserver`: llmpool's events as records of the ``llmpool`` logger's children.

llmpool never configures handlers. Levels are chosen so that WARNING alone says whether
production is degraded, with no record for a healthy call:

========================  =======  ==========================================================
event                     level    ``record.event``
========================  =======  ==========================================================
attempt failed, retried   INFO     ``retry``
failover to another row   WARNING  ``failover``
every row failed          ERROR    ``all_failed``
stream broke mid-answer   WARNING  ``midstream``
breaker opened            WARNING  ``breaker_open``
breaker half-open probe   INFO     ``breaker_half_open``
breaker closed again      WARNING  ``breaker_closed``
row skipped at a call     DEBUG    ``skip``
retry answered            INFO     ``answered``
row cannot be built       WARNING  ``build_failed`` (once per row version and reason, then DEBUG)
table reloaded            INFO     ``reload``
========================  =======  ==========================================================

Each record carries its fields as ``extra`` (read them as ``record.llm_name``): ``event``,
``scope``, ``llm_id``, ``llm_name``, ``provider``, ``model``, ``attempt``, ``outcome``,
``error_class``, ``reason``, ``latency_ms``, ``None`` where one does not apply, as every record
of llmpool does (`llmpool.observe.fields`); failovers add ``to_id``/``to_name``; breaker
changes ``state``, ``previous``, ``reopens_at``. ``reason`` is redacted; prompts are never
logged.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from llmpool.observe.fields import log_fields
from llmpool.observe.hooks import Observer

if TYPE_CHECKING:
    from llmpool.observe.events import (
        AttemptEvent,
        BreakerEvent,
        BuildFailedEvent,
        CallEvent,
        FailoverEvent,
        ReloadEvent,
    )

__all__ = ["LoggingObserver"]

#: The loggers, one per kind of event, under ``llmpool``.
CALLS = logging.getLogger("llmpool.calls")
BREAKERS = logging.getLogger("llmpool.breakers")
POOL = logging.getLogger("llmpool.pool")

_MAX_BUILD_REPORTS = 4096


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _row(event: Any) -> dict[str, Any]:
    return {
        "scope": event.scope,
        "llm_id": event.llm_id,
        "llm_name": event.llm_name,
        "provider": event.provider,
        "model": event.model,
    }


class LoggingObserver(Observer):
    """Logs what goes wrong (and recovers); a healthy call logs nothing at any level."""

    every_call = False

    def __init__(self) -> None:
        self._builds: set[tuple[str, str, str]] = set()
        self._lock = threading.Lock()

    def on_attempt(self, event: AttemptEvent) -> None:
        """A retry at INFO, a skip at DEBUG, an answer after a retry at INFO."""
        if event.outcome == "error":
            if event.action == "retry":
                level, kind, text = logging.INFO, "retry", "llmpool retries %s after %s"
            else:
                return  # told by the failover, all-failed or mid-stream record
        elif event.outcome == "skipped":
            level, kind, text = logging.DEBUG, "skip", "llmpool skipped %s: %s"
        elif event.attempt > 1:  # a retry that worked (a failover has its own record)
            level, kind, text = logging.INFO, "answered", "llmpool got its answer from %s%s"
        else:
            return
        if not CALLS.isEnabledFor(level):
            return
        detail = event.reason or event.error_class or ""
        if kind == "answered":
            detail = f" at attempt {event.attempt}"
        CALLS.log(
            level,
            text,
            event.llm_name,
            detail,
            extra=log_fields(
                kind,
                **_row(event),
                attempt=event.attempt,
                outcome=event.outcome,
                error_class=event.error_class,
                reason=event.reason,
                latency_ms=_ms(event.latency),
            ),
        )

    def on_failover(self, event: FailoverEvent) -> None:
        """A failover at WARNING."""
        if event.to_id is None:
            return  # the all-failed record says it
        CALLS.warning(
            "llmpool failed over from %s to %s: %s",
            event.from_name,
            event.to_name,
            event.reason or event.error_class,
            extra=log_fields(
                "failover",
                scope=event.scope,
                llm_id=event.from_id,
                llm_name=event.from_name,
                provider=event.from_provider,
                model=event.from_model,
                to_id=event.to_id,
                to_name=event.to_name,
                attempt=event.attempts,
                outcome="error",
                error_class=event.error_class,
                reason=event.reason,
            ),
        )

    def on_call(self, event: CallEvent) -> None:
        """A call that failed at ERROR (every row) or WARNING (a stream broken mid-answer)."""
        if event.outcome == "ok":
            return
        last = next((a for a in reversed(event.attempts) if a.outcome == "error"), None)
        midstream = event.error_class == "MidStreamError"
        fields = _row(last) if last is not None else {"scope": event.scope}
        if midstream:
            text = "llmpool: a stream broke after sending text; not switching model mid-answer"
        else:
            failed = sum(1 for a in event.attempts if a.outcome == "error")
            text = f"llmpool: every LLM of the chain failed ({failed} attempts)"
        CALLS.log(
            logging.WARNING if midstream else logging.ERROR,
            text,
            extra=log_fields(
                "midstream" if midstream else "all_failed",
                **fields,
                attempt=last.attempt if last is not None else 0,
                outcome="error",
                error_class=last.error_class if last is not None else event.error_class,
                reason=last.reason if last is not None else None,
                latency_ms=_ms(event.latency),
            ),
        )

    def on_breaker_change(self, event: BreakerEvent) -> None:
        """Open and closed at WARNING, a half-open probe at INFO."""
        if event.state == "open":
            level, kind = logging.WARNING, "breaker_open"
            text = "llmpool opened the circuit breaker of %s after %d failures"
            value: Any = event.failures
        elif event.state == "half_open":
            level, kind = logging.INFO, "breaker_half_open"
            text = "llmpool probes %s (circuit breaker half-open%s)"
            value = ", forced: every LLM is cooling down" if event.forced else ""
        else:
            level, kind = logging.WARNING, "breaker_closed"
            text = "llmpool closed the circuit breaker of %s%s: it answers again"
            value = ""
        BREAKERS.log(
            level,
            text,
            event.llm_name,
            value,
            extra=log_fields(
                kind,
                **_row(event),
                state=event.state,
                previous=event.previous,
                failures=event.failures,
                trips=event.trips,
                reopens_at=event.reopens_at,
            ),
        )

    def on_reload(self, event: ReloadEvent) -> None:
        """A reload at INFO."""
        POOL.info(
            "llmpool reloaded the LLM table: generation %s, %d rows",
            event.generation,
            event.rows,
            extra=log_fields(
                "reload",
                generation=event.generation,
                previous=event.previous,
                rows=event.rows,
                bad_rows=event.bad_rows,
            ),
        )

    def on_build_failure(self, event: BuildFailedEvent) -> None:
        """WARNING the first time a row version fails to build for a reason, then DEBUG."""
        key = (event.llm_id, event.error_class, event.reason)
        with self._lock:
            first = key not in self._builds
            if first:
                if len(self._builds) >= _MAX_BUILD_REPORTS:
                    self._builds.clear()
                self._builds.add(key)
        POOL.log(
            logging.WARNING if first else logging.DEBUG,
            "llmpool skips %s: it cannot be built: %s",
            event.llm_name,
            event.reason,
            extra=log_fields(
                "build_failed",
                **_row(event),
                attempt=0,
                outcome="skipped",
                error_class=event.error_class,
                reason=event.reason,
            ),
        )
