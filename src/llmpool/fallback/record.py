"""The record of one call: what its answer's metadata says, what observers hear, why it failed
(made only once something is worth telling; otherwise `answered` gives the metadata)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmpool.credentials.redaction import scrubbed
from llmpool.errors import AllLLMsFailedError, BadAnswerError, CandidateFailure
from llmpool.observe.events import AttemptEvent, BreakerEvent, CallEvent, FailoverEvent
from llmpool.providers.declarations import served_by

if TYPE_CHECKING:
    from llmpool.chain.experiment import Trial
    from llmpool.contracts import Candidate
    from llmpool.fallback.breakers import BreakerChange
    from llmpool.fallback.walk import Attempt
    from llmpool.observe.hooks import Hooks
    from llmpool.tags import Tags

__all__ = ["CallRecord", "add_usage", "answered", "reply_of", "usage_of"]

#: Where an answer's ``response_metadata`` says which model answered, the response's id and
#: why it stopped, in the spellings of the providers' LangChain clients (the first one wins).
_REPLY_KEYS = (
    ("model_name", "model"),
    ("model", "model"),
    ("id", "id"),
    ("finish_reason", "finish_reasons"),
    ("stop_reason", "finish_reasons"),
    ("done_reason", "finish_reasons"),
    ("stopReason", "finish_reasons"),
)


def usage_of(result: Any) -> Mapping[str, Any] | None:
    """Return the ``usage_metadata`` of an answer (a message or a chunk), or ``None``.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> usage_of(AIMessage("hi", usage_metadata={
        ...     "input_tokens": 3, "output_tokens": 1, "total_tokens": 4}))["total_tokens"]
        4
    """
    usage = getattr(result, "usage_metadata", None)
    if usage is None or type(usage) is dict:  # the usual cases, without an ABC check
        return usage
    return usage if isinstance(usage, Mapping) else None


def reply_of(answer: Any, into: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Return what an answer (a ``ChatResult``, a stream's chunk) says of itself: the ``model``
    that answered, the response's ``id``, its ``finish_reasons``; a chunk adds to ``into``.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> from langchain_core.outputs import ChatGeneration, ChatResult
        >>> reply_of(ChatResult(generations=[ChatGeneration(message=AIMessage("hi"),
        ...     generation_info={"finish_reason": "stop"})], llm_output={"model_name": "gpt-4o"}))
        {'model': 'gpt-4o', 'finish_reasons': ('stop',)}
    """
    generations = getattr(answer, "generations", None)
    first = generations[0] if generations else answer
    # Clients keep it in the result's llm_output, a generation's info or the message's metadata.
    kept = (
        getattr(answer, "llm_output", None),
        getattr(first, "generation_info", None),
        getattr(getattr(first, "message", None), "response_metadata", None),
    )
    found: dict[str, Any] = {}
    for metadata in kept:
        if not metadata:
            continue
        for key, name in _REPLY_KEYS:
            value = metadata.get(key)
            if isinstance(value, str) and value and name not in found:
                found[name] = (value,) if name == "finish_reasons" else value
    if into is None or not found:
        return found or into
    into.update(found)
    return into


def add_usage(
    total: Mapping[str, Any] | None, more: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """Add a chunk's ``usage_metadata`` to a stream's running total (either may be ``None``)."""
    if more is None or total is None:
        return total if more is None else more
    from langchain_core.messages.ai import add_usage as add

    return add(total, more)  # type: ignore[arg-type]


def answered(candidate: Candidate, order: list[str] | None = None) -> dict[str, Any]:
    """The ``llmpool`` metadata of an answer from a call's first attempt (fresh dicts)."""
    head, ok = candidate.answer_fields
    metadata = {**head, "attempts": [ok.copy()]}
    if order is not None:
        metadata["order"] = order
    return metadata


class CallRecord:
    """The attempts, failures and events of one call started at ``started`` (monotonic)."""

    __slots__ = ("_offset", "attempts", "call_id", "events", "failures", "final", "hooks",
                 "last", "leaving", "scope", "started", "streaming", "tags")  # fmt: skip

    def __init__(
        self,
        hooks: Hooks,
        scope: str | None,
        streaming: bool,
        started: float,
        tags: Tags | None = None,
        trial: Trial | None = None,
    ) -> None:
        self.hooks = hooks
        self.scope = scope
        self.streaming = streaming
        self.started = started
        self.tags = None if tags is None else tags.as_dict()  # with an experiment's arm
        self.call_id = None if trial is None else trial.call_id
        self._offset = time.time() - time.monotonic()  # monotonic -> wall clock
        self.attempts: list[dict[str, Any]] = []
        self.failures: list[CandidateFailure] = []
        self.events: list[AttemptEvent] = []
        # The row the call is failing over from: (candidate, error class, reason).
        self.leaving: tuple[Candidate, str | None, str | None] | None = None
        self.last: BaseException | None = None  # the last attempt's error, to chain from
        self.final: AllLLMsFailedError | None = None  # the error the call raises, made once

    def _request(self, candidate: Candidate) -> dict[str, Any]:
        # What an attempt's event says of its request (the candidate's part made once).
        served = candidate.served
        if served is None:  # a candidate made by hand, not by a chain
            served = candidate.served = served_by(candidate.config)
        return {
            "operation": "embeddings" if candidate.config.kind == "embedding" else "chat",
            "system": served.system,
            "server_address": served.address,
            "server_port": served.port,
            "parameters": served.parameters or None,
        }

    def _row(self, candidate: Candidate) -> tuple[str | None, str, str, str, str]:
        # The fields that name the call's scope and a row, first in every event.
        c = candidate.config
        return self.scope, c.id, c.name, c.provider, c.model_name

    def _emit(self, event: AttemptEvent) -> None:
        self.events.append(event)
        self.hooks.emit("on_attempt", event)

    def skipped(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        """A row was skipped without a request (not buildable, cooling down, refused, ...)."""
        c = candidate.config
        self.failures.append(CandidateFailure(c.id, c.name, c.provider, reason, error))
        self.attempts.append(
            {"llm_id": c.id, "name": c.name, "outcome": "skipped", "reason": reason}
        )
        self._emit(
            AttemptEvent(
                *self._row(candidate), 0, "skipped",
                type(error).__name__ if error is not None else None, reason,
                started=time.time(), streaming=self.streaming,
            )
        )  # fmt: skip

    def begin(self, candidate: Candidate) -> None:
        """An attempt of ``candidate`` starts: report the failover that led to it."""
        leaving = self.leaving
        if leaving is not None and leaving[0] is not candidate:
            self.leaving = None
            self._failover(leaving, candidate)

    def _failover(
        self, leaving: tuple[Candidate, str | None, str | None], to: Candidate | None
    ) -> None:
        src = leaving[0].config
        dst = to.config if to is not None else None
        made = sum(1 for event in self.events if event.outcome != "skipped")
        self.hooks.emit(
            "on_failover",
            FailoverEvent(
                self.scope, src.id, src.name, src.provider, src.model_name, leaving[1], leaving[2],
                dst.id if dst else None,
                dst.name if dst else None, dst.provider if dst else None,
                dst.model_name if dst else None, made,
            ),
        )  # fmt: skip

    def failed(self, attempt: Attempt, error: BaseException, reason: str, action: str) -> None:
        """An attempt failed; ``action`` is what the call does next (retry, fallback, raise)."""
        candidate, began = attempt.candidate, attempt.began
        c = candidate.config
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "error", "error": reason})
        rejected = error.verdict if isinstance(error, BadAnswerError) else None
        usage = attempt.usage if rejected else None  # a refused answer's, billed all the same
        self._emit(
            AttemptEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, attempt.number, "error",
                type(error).__name__, reason, action, time.monotonic() - began,
                dict(usage) if usage else None, began + self._offset, self.streaming,
                attempt.probe, rejected=rejected, **self._request(candidate),
            )
        )  # fmt: skip
        if action == "fallback":
            failure = CandidateFailure(c.id, c.name, c.provider, reason, scrubbed(error))
            self.failures.append(failure)
            self.leaving = (candidate, type(error).__name__, reason)

    def breaker(self, candidate: Candidate, change: BreakerChange) -> None:
        """A row's breaker changed state."""
        self.hooks.emit(
            "on_breaker_change",
            BreakerEvent(
                *self._row(candidate), change.key, change.previous, change.state,
                change.failures, change.trips, change.reopens_at or None,
            ),
        )  # fmt: skip

    def metadata(self, candidate: Candidate, order: list[str] | None) -> dict[str, Any]:
        """``candidate`` answered: return the answer's metadata, every attempt listed."""
        # Descriptions, not exceptions: no exception -> traceback -> walk cycle is left behind.
        self.failures.clear()
        head, ok = candidate.answer_fields
        self.attempts.append(ok.copy())
        metadata = {**head, "attempts": self.attempts}
        if order is not None:
            metadata["order"] = order
        return metadata

    def answered(
        self,
        attempt: Attempt,
        usage: Mapping[str, Any] | None,
        reply: Mapping[str, Any] | None = None,
    ) -> None:
        """An attempt answered (a stream: ended cleanly) with ``usage`` and ``reply`` (what the
        answer says of itself, `reply_of`): the call is done."""
        candidate, began = attempt.candidate, attempt.began
        self.begin(candidate)
        c = candidate.config
        now = time.monotonic()
        self._emit(
            AttemptEvent(
                self.scope, c.id, c.name, c.provider, c.model_name, attempt.number, "ok", None,
                None, None, now - began, dict(usage) if usage else None, began + self._offset,
                self.streaming, attempt.probe, **self._request(candidate), response=reply,
            )
        )  # fmt: skip
        self.hooks.emit(
            "on_call",
            CallEvent(
                self.scope, "ok", c.id, c.name, c.provider, c.model_name, None,
                tuple(self.events), now - self.started, self.started + self._offset,
                self.streaming, self.tags, self.call_id,
            ),
        )  # fmt: skip

    def gave_up(self, error: BaseException) -> None:
        """The call raises ``error``: every row failed, or a stream broke mid-answer."""
        if self.leaving is not None:
            leaving, self.leaving = self.leaving, None
            self._failover(leaving, None)
        self.hooks.emit(
            "on_call",
            CallEvent(
                self.scope, "error", error_class=type(error).__name__,
                attempts=tuple(self.events), latency=time.monotonic() - self.started,
                started=self.started + self._offset, streaming=self.streaming,
                tags=self.tags, call_id=self.call_id,
            ),
        )  # fmt: skip
