"""What llmpool tells its observers: one frozen dataclass per kind of event.

Every event names the row it is about by id, name, provider and model, and the scope of the
call, never a secret or prompt text: ``reason`` is a redacted one-line description of an error
(`llmpool.fallback.policy.describe_error`) or a skip reason. Times are wall-clock seconds
(`time.time`), latencies seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "AttemptEvent",
    "BreakerEvent",
    "BuildFailedEvent",
    "CallEvent",
    "FailoverEvent",
    "ReloadEvent",
]


class _Event:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True, slots=True)
class AttemptEvent(_Event):
    """One attempt of a call on one row: answered, failed, or skipped without a request.

    Attributes:
        scope: The scope of the call (``None`` for a chain built in code).
        llm_id: The row's id.
        llm_name: The row's name.
        provider: The row's provider (``gen_ai.system``).
        model: The row's model name.
        attempt: The attempt number on this row (1 for the first; 0 for a skip).
        outcome: ``"ok"``, ``"error"`` or ``"skipped"``.
        error_class: The error's class name (``None`` unless ``outcome`` is ``"error"``, or a
            skip caused by an error, e.g. a row that could not be built).
        reason: Why it failed (redacted), or why it was skipped. An open string: "cooling down
            after repeated failures", "rate limited", "could not be built: ...".
        action: After an error, what the call does next: ``"retry"`` (this row again),
            ``"fallback"`` (the next row), or ``"raise"`` (a stream broken mid-answer).
        latency: Seconds the attempt took (``None`` for a skip).
        usage: The answer's ``usage_metadata`` (input, output and total tokens) when the
            provider reported it; summed over the chunks of a stream.
        started: When the attempt started (wall clock).
        streaming: Whether the call streams.
        probe: Whether the attempt was a circuit breaker's half-open probe.
    """

    scope: str | None
    llm_id: str
    llm_name: str
    provider: str
    model: str
    attempt: int
    outcome: str
    error_class: str | None = None
    reason: str | None = None
    action: str | None = None
    latency: float | None = None
    usage: Mapping[str, Any] | None = None
    started: float = 0.0
    streaming: bool = False
    probe: bool = False


@dataclass(frozen=True, slots=True)
class FailoverEvent(_Event):
    """A call left a row that failed for another one (or for none: every row failed).

    Attributes:
        scope: The scope of the call.
        from_id: The row that failed.
        from_name: Its name.
        from_provider: Its provider.
        from_model: Its model.
        error_class: The class of its last error.
        reason: Its last error (redacted).
        to_id: The next row tried; ``None`` when no row was left to try.
        to_name: Its name.
        to_provider: Its provider.
        to_model: Its model.
        attempts: Attempts the call made so far.
    """

    scope: str | None
    from_id: str
    from_name: str
    from_provider: str
    from_model: str
    error_class: str | None
    reason: str | None
    to_id: str | None = None
    to_name: str | None = None
    to_provider: str | None = None
    to_model: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class BreakerEvent(_Event):
    """A row's circuit breaker changed state.

    Attributes:
        scope: The scope of the call that changed it.
        llm_id: The row's id.
        llm_name: The row's name.
        provider: The row's provider.
        model: The row's model.
        key: The breaker's key on the board (`llmpool.fallback.breakers.breaker_key`).
        previous: ``"closed"``, ``"open"`` or ``"half_open"``.
        state: The new state: ``"open"`` (cooling down), ``"half_open"`` (one probe in
            flight) or ``"closed"``.
        failures: Consecutive failures it counts.
        trips: Times in a row it opened.
        reopens_at: When its cooldown ends (wall clock), when open.
        forced: A probe taken before the cooldown ended because every row was cooling down.
    """

    scope: str | None
    llm_id: str
    llm_name: str
    provider: str
    model: str
    key: str
    previous: str
    state: str
    failures: int = 0
    trips: int = 0
    reopens_at: float | None = None
    forced: bool = False


@dataclass(frozen=True, slots=True)
class CallEvent(_Event):
    """One call of a fallback model, finished: answered by a row, or failed.

    Attributes:
        scope: The scope.
        outcome: ``"ok"`` or ``"error"``.
        llm_id: The row that answered (``None`` when none did).
        llm_name: Its name.
        provider: Its provider.
        model: Its model.
        error_class: The error the call raised (``AllLLMsFailedError``, ``MidStreamError``).
        attempts: Every attempt and skip, in order.
        latency: Seconds from the start of the call to its answer or error.
        started: When the call started (wall clock).
        streaming: Whether the call streamed.
    """

    scope: str | None
    outcome: str
    llm_id: str | None = None
    llm_name: str | None = None
    provider: str | None = None
    model: str | None = None
    error_class: str | None = None
    attempts: tuple[AttemptEvent, ...] = ()
    latency: float = 0.0
    started: float = 0.0
    streaming: bool = False


@dataclass(frozen=True, slots=True)
class ReloadEvent(_Event):
    """A pool reloaded its snapshot of the table.

    Attributes:
        generation: The table's change counter now.
        previous: The generation it replaced (``None`` when unknown).
        rows: Rows in the snapshot.
        bad_rows: Rows skipped because they failed validation.
    """

    generation: int
    previous: int | None
    rows: int
    bad_rows: int


@dataclass(frozen=True, slots=True)
class BuildFailedEvent(_Event):
    """A row could not be turned into a chat model: it is skipped until it can.

    Attributes:
        scope: The row's scope.
        llm_id: The row's id.
        llm_name: Its name.
        provider: Its provider.
        model: Its model.
        error_class: Why: ``MissingSecretError``, ``ProviderNotInstalledError``, ...
        reason: The error, one line (names the variable, never its value).
    """

    scope: str
    llm_id: str
    llm_name: str
    provider: str
    model: str
    error_class: str
    reason: str
