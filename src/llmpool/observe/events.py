"""What llmpool tells its observers: one frozen dataclass per kind of event, never a secret or
prompt text (``reason`` is redacted); times are `time.time` seconds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


class _Event:
    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the event as a JSON-ready dict."""
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True, slots=True)
class AttemptEvent(_Event):
    """One attempt of a call on one row: ``outcome`` ``"ok"``, ``"error"`` (then ``action``
    ``"retry"``, ``"fallback"`` or ``"raise"``) or ``"skipped"`` (``attempt`` 0, no request);
    ``usage``: the answer's ``usage_metadata`` (a rejected answer's too); ``probe``: a circuit
    breaker's half-open probe; ``rejected``: the verdict that refused an answer (``"empty"``,
    ``"content_filter"``, ``"invalid_structured"``, ``"accept"``; ``reason`` says why).

    Of a request made: ``operation`` (``"chat"`` or ``"embeddings"``), ``system`` (the
    provider's id in the GenAI semantic conventions), the server's address and port when known,
    the request ``parameters`` the row sets (``temperature``, ``max_tokens``...), and
    ``response``: what the answer says of itself (``model``, ``id``, ``finish_reasons``).
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
    operation: str = "chat"
    system: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    parameters: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    rejected: str | None = None


@dataclass(frozen=True, slots=True)
class FailoverEvent(_Event):
    """A call left a failed row (``from_*``, its last error) for the next one (``to_*``), or
    for none (``to_id`` ``None``: every row failed); ``attempts`` made so far."""

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
    """A row's circuit breaker went from ``previous`` to ``state``: ``"open"`` (until
    ``reopens_at``), ``"half_open"`` (one probe; ``forced`` when every row was cooling down) or
    ``"closed"``; ``trips`` counts the times in a row it opened."""

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
    """One call of a fallback model, finished: ``outcome`` ``"ok"`` with the row that answered,
    or ``"error"`` with the error raised (``AllLLMsFailedError``, ``MidStreamError``); every
    attempt and skip in order; the call's ``tags`` (an experiment's ``arm`` among them) and an
    experiment call's ``call_id``."""

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
    tags: Mapping[str, str] | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReloadEvent(_Event):
    """A pool reloaded its snapshot of the table (``bad_rows``: skipped as invalid)."""

    generation: int
    previous: int | None
    rows: int
    bad_rows: int


@dataclass(frozen=True, slots=True)
class BuildFailedEvent(_Event):
    """A row could not be turned into a client (``MissingSecretError``, ...): it is skipped."""

    scope: str
    llm_id: str
    llm_name: str
    provider: str
    model: str
    error_class: str
    reason: str
