"""Candidates and the decision core that walks them, shared by every fallback shell.

`Candidate` is one row turned into a chat model (or the reason it could not be). `Walk` is one
call's walk through the candidates: which one next, whether its breaker lets it through,
whether an error is retried, skipped past or raised, and what the answer's metadata says. The
sync and async shells in `llmpool.fallback.model` only run what it decides.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

# Runtime imports: pydantic resolves Candidate's fields when FallbackChatModel is defined.
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

# Whether LangSmith tracing is on: the same check LangChain's callback manager makes.
from langchain_core.tracers.context import _tracing_v2_is_enabled

from llmpool.errors import (
    AllLLMsFailedError,
    AllLLMsFailedToInitializeError,
    CandidateFailure,
    MidStreamError,
)
from llmpool.fallback.breakers import Admission
from llmpool.fallback.policy import Outcome, describe_error
from llmpool.models import LLMConfig

if TYPE_CHECKING:
    from langchain_core.runnables import Runnable, RunnableConfig

    from llmpool.fallback.model import FallbackChatModel

__all__ = [
    "Candidate",
    "Walk",
    "answered",
    "callbacks_active",
    "ensure_buildable",
    "tag",
]


@dataclass(frozen=True)
class Candidate:
    """One row, turned into a chat model, or the reason it could not be.

    Attributes:
        config: The row.
        model: Its chat model, when it could be built.
        error: Why it could not be built (missing secret, missing package, bad config).
    """

    config: LLMConfig
    model: BaseChatModel | None = None
    error: BaseException | None = None

    @cached_property
    def key(self) -> str:
        """The circuit breaker key: the row's id (read once: the fast path reads it per call)."""
        return self.config.id

    @cached_property
    def client_timeout(self) -> float:
        """Seconds its client may wait for one answer, read once (`streaming.client_timeout`)."""
        from llmpool.fallback.streaming import client_timeout

        return math.inf if self.model is None else client_timeout(self.model)

    @classmethod
    def from_model(cls, model: BaseChatModel, *, name: str | None = None) -> Candidate:
        """Wrap a model supplied in code (no row), e.g. an environment-configured Ollama.

        Example:
            >>> from llmpool.providers.fake import FakeChatModel
            >>> Candidate.from_model(FakeChatModel(model="local")).config.name
            'code:FakeChatModel(local)'
        """
        label = getattr(model, "model", None) or getattr(model, "model_name", None)
        name = name or f"code:{type(model).__name__}" + (f"({label})" if label else "")
        config = LLMConfig(
            id=name, name=name, provider="code", model_name=str(label or type(model).__name__)
        )
        return cls(config=config, model=model)


def ensure_buildable(candidates: Sequence[Candidate], *, scope: str | None = None) -> None:
    """Raise when no candidate could be built.

    Raises:
        AllLLMsFailedToInitializeError: "All LLMs failed to initialize", listing every row
            with its reason.
    """
    if any(candidate.model is not None for candidate in candidates):
        return
    failures = [
        CandidateFailure(
            c.config.id, c.config.name, c.config.provider, describe_error(c.error), c.error
        )
        for c in candidates
        if c.error is not None
    ]
    error = AllLLMsFailedToInitializeError(failures, scope=scope)
    if failures and failures[-1].error is not None:
        raise error from failures[-1].error
    raise error


def callbacks_active(config: RunnableConfig | None) -> bool:
    # The fast path skips LangChain's callback machinery entirely when nobody listens.
    if config and config.get("callbacks"):
        return True
    return bool(_tracing_v2_is_enabled())


@dataclass(slots=True)
class Attempt:
    candidate: Candidate
    runner: Runnable[Any, Any]
    number: int
    delay: float
    config: RunnableConfig | None
    probe: bool = False  # holds the candidate's half-open probe slot
    # When the call's deadline must cut this attempt short (monotonic time): set only when
    # its client could wait longer than the deadline leaves.
    ends_at: float | None = None


class Walk:
    """The decision core of one call: which candidate next, retry or not, breaker or not."""

    __slots__ = (
        "attempts",
        "candidates",
        "config",
        "delay",
        "ends_at",
        "failures",
        "forced",
        "in_flight",
        "index",
        "last_exception",
        "model",
        "number",
        "policy",
        "probe",
        "run_manager",
        "started",
        "tried_any",
    )

    def __init__(
        self,
        model: FallbackChatModel,
        config: RunnableConfig | None,
        candidates: Sequence[Candidate] | None = None,
        *,
        started: float | None = None,
    ) -> None:
        self.model = model
        self.policy = model.policy
        self.config = config
        self.started = time.monotonic() if started is None else started
        deadline = self.policy.deadline
        self.ends_at = None if deadline is None else self.started + deadline
        self.candidates = model._current_candidates() if candidates is None else candidates
        self.index = 0
        self.number = 0  # attempt number of the current candidate
        self.delay = 0.0
        self.probe = False  # whether the next attempt of the current candidate holds a probe
        self.failures: list[CandidateFailure] = []
        self.attempts: list[dict[str, Any]] = []
        self.tried_any = False
        self.forced: str | None = None  # the key probed although every candidate was cooling
        self.in_flight: Attempt | None = None
        self.last_exception: BaseException | None = None
        self.run_manager: Any = None

    # -- choosing ------------------------------------------------------------------------------

    def _skip(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        c = candidate.config
        self.failures.append(CandidateFailure(c.id, c.name, c.provider, reason, error))
        self.attempts.append(
            {"llm_id": c.id, "name": c.name, "outcome": "skipped", "reason": reason}
        )

    def next_attempt(self) -> Attempt | None:
        """Return the next attempt to make, or ``None`` when every candidate is done."""
        while self.index < len(self.candidates):
            candidate = self.candidates[self.index]
            if self.number > 0:  # a retry of the current candidate
                return self._attempt(candidate)
            if candidate.model is None:
                self._skip(
                    candidate,
                    describe_error(candidate.error) if candidate.error else "could not be built",
                    candidate.error,
                )
                self.index += 1
                continue
            if self._past_deadline():
                self._skip(
                    candidate, f"not tried: the {self.policy.deadline}s deadline passed", None
                )
                self.index += 1
                continue
            runner = self.model._runner(candidate)
            if isinstance(runner, BaseException):
                self._skip(candidate, f"cannot do this: {describe_error(runner)}", runner)
                self.index += 1
                continue
            admission = self.model.breakers.admit(candidate.key)
            if admission is Admission.OPEN:
                self._skip(candidate, "skipped: cooling down after repeated failures", None)
                self.index += 1
                continue
            self.probe = admission is Admission.PROBE
            return self._attempt(candidate, runner)
        return self._forced_probe()

    def resume(self, first: Candidate) -> Attempt:
        """Account for a first attempt already made on ``first`` by the fast path."""
        self.number = 1
        self.tried_any = True
        return Attempt(first, first.model, 1, 0.0, self.config)  # type: ignore[arg-type]

    def _forced_probe(self) -> Attempt | None:
        # Every buildable candidate was cooling down: probe the one that reopens first
        # rather than fail without trying. Of concurrent callers in that state, one probes
        # each candidate; a caller that finds every probe slot taken fails at once.
        if self.tried_any or self.forced is not None:
            return None
        cooling = [
            c
            for c in self.candidates
            if c.model is not None and not isinstance(self.model._runner(c), BaseException)
        ]
        breakers = self.model.breakers
        for candidate in sorted(cooling, key=lambda c: breakers.reopens_at(c.key)):
            if breakers.force_probe(candidate.key):
                self.forced = candidate.key
                self.index = self.candidates.index(candidate)
                self.probe = True
                return self._attempt(candidate)
        if cooling:
            self.failures = [
                replace(f, reason=f"{f.reason}; another caller's probe is in flight")
                if f.reason.startswith("skipped: cooling")
                else f
                for f in self.failures
            ]
        return None

    def _attempt(self, candidate: Candidate, runner: Any = None) -> Attempt:
        self.number += 1
        self.tried_any = True
        if runner is None:
            runner = self.model._runner(candidate)
        config = self.config
        if self.run_manager is not None:
            config = {
                **(config or {}),
                "callbacks": self.run_manager.get_child(),
                "run_name": candidate.config.name,
            }
        delay, self.delay = self.delay, 0.0
        probe, self.probe = self.probe, False
        ends_at = self.ends_at
        if ends_at is not None and candidate.client_timeout <= ends_at - time.monotonic() - delay:
            ends_at = None  # its client gives up before the deadline: no bound needed
        attempt = Attempt(candidate, runner, self.number, delay, config, probe, ends_at)
        if probe:
            self.in_flight = attempt
        return attempt

    def abandon(self) -> None:
        """Give back a probe slot held by an attempt that ended without a verdict
        (cancelled, interrupted, or a bug in the caller)."""
        attempt, self.in_flight = self.in_flight, None
        if attempt is not None:
            self.model.breakers.release(attempt.candidate.key)

    def _past_deadline(self) -> bool:
        left = self._time_left()
        return left is not None and left <= 0.0

    def _time_left(self) -> float | None:
        deadline = self.policy.deadline
        return None if deadline is None else deadline - (time.monotonic() - self.started)

    # -- outcomes ------------------------------------------------------------------------------

    def succeeded(self, attempt: Attempt) -> dict[str, Any]:
        """Record a success; return the ``llmpool`` metadata for the response."""
        c = attempt.candidate.config
        self.in_flight = None
        # The metadata keeps descriptions, not exceptions: letting go of them here breaks the
        # exception -> traceback -> frame -> walk cycle, so a failover leaves no garbage for
        # the cyclic collector.
        self.failures.clear()
        self.last_exception = None
        self.model.breakers.success(attempt.candidate.key)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "ok"})
        return {
            "llm_id": c.id,
            "name": c.name,
            "provider": c.provider,
            "model_name": c.model_name,
            "attempts": self.attempts,
        }

    def failed(self, attempt: Attempt, error: Exception) -> None:
        """Record a failure and decide: retry, next candidate, or re-raise ``error``."""
        outcome = self.policy.classify(error)
        if outcome is Outcome.PROPAGATE:
            self.abandon()
            raise error
        self.in_flight = None
        self.last_exception = error
        key = attempt.candidate.key
        c = attempt.candidate.config
        reason = describe_error(error)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "error", "error": reason})
        breakers = self.model.breakers
        if outcome is Outcome.FALLBACK_KEEP_BREAKER:
            if attempt.probe:
                breakers.release(key)
        else:
            breakers.failure(
                key,
                threshold=self.policy.failure_threshold,
                cooldown=self.policy.cooldown_for,
                probe=attempt.probe,
            )
        if outcome is Outcome.RETRY and attempt.number < self.policy.attempts:
            delay = self.policy.retry_delay(attempt.number, error, self._time_left())
            if delay is not None:
                admission = breakers.admit(key)
                if admission is not Admission.OPEN:
                    self.delay = delay
                    self.probe = admission is Admission.PROBE
                    return
        failure = CandidateFailure(c.id, c.name, c.provider, reason, error)
        self.number = 0
        if self.forced == key:
            # The forced probe ends the walk; its failure replaces its "cooling down" entry.
            self.failures = [failure if f.llm_id == key else f for f in self.failures]
            self.index = len(self.candidates)
            return
        self.failures.append(failure)
        self.index += 1

    def failed_midstream(self, attempt: Attempt, error: Exception, text: str) -> MidStreamError:
        """Record a stream that broke after emitting chunks; return the error to raise."""
        if self.policy.classify(error) is Outcome.PROPAGATE:
            raise error
        c = attempt.candidate.config
        self.model.breakers.failure(
            attempt.candidate.key,
            threshold=self.policy.failure_threshold,
            cooldown=self.policy.cooldown_for,
            probe=attempt.probe,
        )
        msg = (
            f"{c.describe()} failed after streaming {len(text)} characters "
            f"({describe_error(error)}); not switching model mid-answer"
        )
        return MidStreamError(msg, partial_text=text, llm_id=c.id, llm_name=c.name)

    def error(self) -> AllLLMsFailedError:
        """Return the error for a call where every candidate failed."""
        cls = AllLLMsFailedError if self.tried_any else AllLLMsFailedToInitializeError
        return cls(self.failures, scope=self.model.scope)

    def last_error(self) -> BaseException | None:
        """Return the last original exception, to chain from, unless its text holds a secret.

        A provider's error body may echo the key it was sent; chained, it would print in the
        traceback. Such an exception stays reachable through ``failures[i].error``.
        """
        error = self.last_exception
        if error is None:
            for failure in reversed(self.failures):
                if failure.error is not None:
                    error = failure.error
                    break
        return None if error is None or _holds_secret(error) else error

    # -- callbacks -----------------------------------------------------------------------------

    def start_run(self, inputs: Any) -> None:
        """Open a chain run for this call when callbacks or tracing are active."""
        if not callbacks_active(self.config):
            return
        from langchain_core.runnables.config import ensure_config, get_callback_manager_for_config

        config = ensure_config(self.config)
        manager = get_callback_manager_for_config(config)
        self.run_manager = manager.on_chain_start(
            None,
            {"input": inputs},
            name=config.get("run_name") or self.model.get_name(),
            run_id=config.pop("run_id", None),
        )
        self.config = config

    async def astart_run(self, inputs: Any) -> None:
        """Async twin of `start_run`."""
        if not callbacks_active(self.config):
            return
        from langchain_core.runnables.config import (
            ensure_config,
            get_async_callback_manager_for_config,
        )

        config = ensure_config(self.config)
        manager = get_async_callback_manager_for_config(config)
        self.run_manager = await manager.on_chain_start(
            None,
            {"input": inputs},
            name=config.get("run_name") or self.model.get_name(),
            run_id=config.pop("run_id", None),
        )
        self.config = config

    def end_run(self, output: Any = None, error: BaseException | None = None) -> Any:
        """Close the chain run (sync or async run manager); return an awaitable if async."""
        if self.run_manager is None:
            return None
        if error is not None:
            return self.run_manager.on_chain_error(error)
        return self.run_manager.on_chain_end({"output": output})


def _holds_secret(error: BaseException) -> bool:
    from llmpool.credentials.redaction import redact

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # the chain printed with it
        seen.add(id(current))
        text = str(current)
        if redact(text) != text:
            return True
        current = current.__cause__ or current.__context__
    return False


def answered(candidate: Candidate) -> dict[str, Any]:
    c = candidate.config
    return {
        "llm_id": c.id,
        "name": c.name,
        "provider": c.provider,
        "model_name": c.model_name,
        "attempts": [{"llm_id": c.id, "name": c.name, "outcome": "ok"}],
    }


def tag(result: Any, metadata: dict[str, Any]) -> Any:
    if isinstance(result, BaseMessage):
        result.response_metadata["llmpool"] = metadata
    return result


async def maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
