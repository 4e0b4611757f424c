"""`CallRecorder`: turns one call's walk into events for its `Hooks`.

The walk makes one recorder when a call leaves its fast path (an attempt failed, a row was
skipped, callbacks or streaming are on) and tells it what happens; the recorder builds the
events and remembers the attempts for the call's `CallEvent`. A call answered at once by its
first row makes no recorder: `fast_answer` emits its two events only when an observer wants
every call.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmpool.fallback.admission import usage_of as answer_usage
from llmpool.observe.events import (
    AttemptEvent,
    BreakerEvent,
    CallEvent,
    FailoverEvent,
)

if TYPE_CHECKING:
    from llmpool.fallback.breakers import BreakerBoard, BreakerChange
    from llmpool.fallback.walk import Attempt, Candidate
    from llmpool.observe.hooks import Hooks

__all__ = ["CallRecorder", "fast_answer", "usage_of"]


def usage_of(result: Any) -> dict[str, Any] | None:
    """Return a message's ``usage_metadata`` as a plain dict (a copy), if it has one."""
    usage = answer_usage(result)
    return dict(usage) if usage else None


def fast_answer(
    hooks: Hooks, scope: str | None, candidate: Candidate, started: float, result: Any
) -> None:
    """Emit the attempt and call events of a call its first row answered at once.

    Args:
        hooks: The chain's hooks.
        scope: The call's scope.
        candidate: The row that answered.
        started: When the call started (`time.monotonic`).
        result: The answer.
    """
    now = time.monotonic()
    latency = now - started
    wall = time.time() - latency
    c = candidate.config
    attempt = AttemptEvent(
        scope, c.id, c.name, c.provider, c.model_name, 1, "ok",
        latency=latency, usage=usage_of(result), started=wall,
    )  # fmt: skip
    hooks.emit("on_attempt", attempt)
    hooks.emit(
        "on_call",
        CallEvent(
            scope, "ok", c.id, c.name, c.provider, c.model_name,
            attempts=(attempt,), latency=latency, started=wall,
        ),
    )  # fmt: skip


class CallRecorder:
    """The events of one call, built as its walk goes.

    Args:
        hooks: Where the events go.
        scope: The call's scope.
        streaming: Whether the call streams.
        started: When the call started (`time.monotonic`).
    """

    __slots__ = ("_offset", "attempts", "hooks", "leaving", "scope", "started", "streaming")

    def __init__(self, hooks: Hooks, scope: str | None, streaming: bool, started: float) -> None:
        self.hooks = hooks
        self.scope = scope
        self.streaming = streaming
        self.started = started
        self._offset = time.time() - time.monotonic()  # monotonic -> wall clock
        self.attempts: list[AttemptEvent] = []
        # The row the call is failing over from: (candidate, error class, reason).
        self.leaving: tuple[Candidate, str | None, str | None] | None = None

    def _event(self, event: AttemptEvent) -> None:
        self.attempts.append(event)
        self.hooks.emit("on_attempt", event)

    def begin(self, attempt: Attempt) -> None:
        """An attempt starts: note when, and report the failover that led to it."""
        attempt.started = time.monotonic() + attempt.delay
        self._flush(attempt.candidate)

    def _flush(self, to: Candidate | None) -> None:
        leaving = self.leaving
        if leaving is None or (to is not None and to is leaving[0]):
            return
        self.leaving = None
        src = leaving[0].config
        dst = to.config if to is not None else None
        self.hooks.emit(
            "on_failover",
            FailoverEvent(
                self.scope, src.id, src.name, src.provider, src.model_name, leaving[1],
                leaving[2],
                dst.id if dst else None, dst.name if dst else None,
                dst.provider if dst else None, dst.model_name if dst else None,
                sum(1 for a in self.attempts if a.outcome != "skipped"),
            ),
        )  # fmt: skip

    def skipped(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        """A row was skipped without a request (not buildable, cooling down, ...)."""
        c = candidate.config
        self._event(
            AttemptEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, 0, "skipped",
                type(error).__name__ if error is not None else None, reason,
                started=time.time(), streaming=self.streaming,
            )
        )  # fmt: skip

    def _started(self, attempt: Attempt) -> float:
        try:
            return float(attempt.started)
        except AttributeError:  # the fast path's attempt: it started with the call
            return self.started

    def failed(
        self,
        attempt: Attempt,
        error: BaseException,
        reason: str,
        action: str,
        change: BreakerChange | None,
    ) -> None:
        """An attempt failed; ``action`` is what the call does next."""
        c = attempt.candidate.config
        began = self._started(attempt)
        self._event(
            AttemptEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, attempt.number, "error",
                type(error).__name__, reason, action, time.monotonic() - began,
                None, began + self._offset, self.streaming, attempt.probe,
            )
        )  # fmt: skip
        if change is not None:
            self.breaker(attempt.candidate, change)
        if action == "fallback":
            self.leaving = (attempt.candidate, type(error).__name__, reason)

    def breaker(self, candidate: Candidate, change: BreakerChange, forced: bool = False) -> None:
        """A row's breaker changed state."""
        c = candidate.config
        self.hooks.emit(
            "on_breaker_change",
            BreakerEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, change.key,
                change.previous, change.state, change.failures, change.trips,
                change.reopens_at or None, forced,
            ),
        )  # fmt: skip

    def probing(self, candidate: Candidate, breakers: BreakerBoard, forced: bool = False) -> None:
        """A row's breaker lets this call's probe through: half-open."""
        _name, state = breakers.state(candidate.key)
        c = candidate.config
        self.hooks.emit(
            "on_breaker_change",
            BreakerEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, candidate.key, "open",
                "half_open", state.failures if state else 0, state.trips if state else 0,
                state.open_until if state else None, forced,
            ),
        )  # fmt: skip

    def answered(self, attempt: Attempt, usage: Any) -> None:
        """An attempt answered: the call is done."""
        self._flush(attempt.candidate)
        c = attempt.candidate.config
        began = self._started(attempt)
        now = time.monotonic()
        self._event(
            AttemptEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, attempt.number, "ok",
                None, None, None, now - began, dict(usage) if usage else None,
                began + self._offset, self.streaming,
                attempt.probe,
            )
        )  # fmt: skip
        self.hooks.emit(
            "on_call",
            CallEvent(
                self.scope, "ok", c.id, c.name, c.provider, c.model_name, None,
                tuple(self.attempts), now - self.started, self.started + self._offset,
                self.streaming,
            ),
        )  # fmt: skip

    def gave_up(self, error: BaseException) -> None:
        """The call raises ``error``: every row failed, or a stream broke mid-answer."""
        self._flush(None)
        self.hooks.emit(
            "on_call",
            CallEvent(
                self.scope, "error", error_class=type(error).__name__,
                attempts=tuple(self.attempts), latency=time.monotonic() - self.started,
                started=self.started + self._offset, streaming=self.streaming,
            ),
        )  # fmt: skip
