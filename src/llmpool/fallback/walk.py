"""Candidates and the decision core that walks them, shared by every fallback shell.

`Candidate` is one row turned into a chat model (or the reason it could not be). `Walk` is one
call's walk through the candidates: which one next, whether its breaker lets it through,
whether an error is retried, skipped past or raised, and what the answer's metadata says. It
takes its collaborators explicitly (candidates, routing, policy, breaker board, runner lookup),
so it runs without a chat model; the shells in `llmpool.fallback.model` drive it in one loop::

    for attempt in walk:              # `async for` in the async shells
        with attempt:                 # classifies, records, swallows what falls back
            return walk.answer(attempt, attempt.runner.invoke(input, attempt.config))
    raise walk.error()
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

# Runtime imports: pydantic resolves Candidate's fields when FallbackChatModel is defined.
from langchain_core.language_models import BaseChatModel

# Whether LangSmith tracing is on: the same check LangChain's callback manager makes.
from langchain_core.tracers.context import _tracing_v2_is_enabled

from llmpool.errors import (
    AllLLMsFailedError,
    AllLLMsFailedToInitializeError,
    CandidateFailure,
    MidStreamError,
)
from llmpool.fallback.admission import usage_of
from llmpool.fallback.breakers import Admission, BreakerBoard, breaker_key
from llmpool.fallback.policy import FallbackPolicy, Outcome, describe_error
from llmpool.fallback.streaming import Bounded, StreamGate, client_timeout, tag
from llmpool.models import LLMConfig
from llmpool.observe.recorder import CallRecorder, fast_answer

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from llmpool.fallback.admission import AdmissionCheck
    from llmpool.fallback.routing import Routing

__all__ = [
    "Attempt",
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
        """Its key on the breaker board (`breaker_key`; read once: the fast path reads it)."""
        return breaker_key(self.config.id, self.config.version)

    @cached_property
    def answer_fields(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Its part of an answer's metadata, and its "ok" attempt entry (read once)."""
        c = self.config
        head = {"llm_id": c.id, "name": c.name, "provider": c.provider, "model_name": c.model_name}
        return head, {"llm_id": c.id, "name": c.name, "outcome": "ok"}

    @cached_property
    def client_timeout(self) -> float:
        """Seconds its client may wait for one answer, read once (`streaming.client_timeout`)."""
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


class Attempt:
    """One call to one candidate: the runner to call, and the context that settles its outcome.

    ``with attempt:`` (``async with`` in the async shells) classifies an error raised inside,
    records it, and swallows it when the walk goes on (retry or next candidate); an error that
    must propagate (a bug, an interruption, a stream broken mid-answer) leaves it.
    """

    __slots__ = (
        "admitted",
        "began",
        "candidate",
        "config",
        "delay",
        "dirty",
        "ends_at",
        "fast",
        "gate",
        "number",
        "output",
        "probe",
        "runner",
        "started",
        "usage",
        "walk",
    )

    began: float  # (admitted attempts) when the call began, `time.perf_counter`
    started: float  # (observed attempts) when it started, `time.monotonic`
    usage: Mapping[str, Any] | None  # (admitted attempts) the answer's token usage

    def __init__(
        self,
        walk: Walk,
        candidate: Candidate,
        runner: Any,
        number: int,
        delay: float,
        config: RunnableConfig | None,
    ) -> None:
        self.walk = walk
        self.candidate = candidate
        self.runner = runner
        self.number = number
        self.delay = delay
        self.config = config
        self.probe = False  # holds the candidate's half-open probe slot
        # When the call's deadline cuts this attempt short (monotonic time): set only when its
        # client could wait longer than the deadline leaves.
        self.ends_at: float | None = None
        self.fast = False  # made by the fast path: no bookkeeping unless it fails
        self.dirty = False  # (fast path) its breaker holds failures to clear on success
        self.gate: StreamGate | None = None  # (streaming) holds chunks until the first content
        self.output: Any = None  # the answer, for the chain run
        # The admission checks that let this attempt through, told its outcome once (then
        # emptied); `began` and `usage` are set only when there are some.
        self.admitted: tuple[AdmissionCheck, ...] = ()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        walk = self.walk
        if self.admitted:
            walk.settle(self, error is None)
        if error is None:
            if self.gate is not None:
                walk.streamed(self)
            if walk.run_manager is not None:
                walk.end_run(self._output())
            return False
        escaping = self._verdict(error)
        if escaping is None:
            return True
        walk.end_run(error=escaping)
        if escaping is error:
            return False
        raise escaping

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        walk = self.walk
        if self.admitted:
            walk.settle(self, error is None)
        if error is None:
            if self.gate is not None:
                walk.streamed(self)
            if walk.run_manager is not None:
                await maybe_await(walk.end_run(self._output()))
            return False
        escaping = self._verdict(error)
        if escaping is None:
            return True
        await maybe_await(walk.end_run(error=escaping))
        if escaping is error:
            return False
        raise escaping

    def _output(self) -> Any:
        return self.gate.text if self.gate is not None else self.output

    def _verdict(self, error: BaseException) -> BaseException | None:
        # None: the walk goes on; otherwise the exception that ends the call.
        walk = self.walk
        if self.fast:
            walk._resume()
        if isinstance(error, Exception):
            gate = self.gate
            if gate is not None and gate.open:
                midstream = walk.failed_midstream(self, error, gate.text)
                if midstream is not None:
                    midstream.__cause__ = error
                    walk.abandon()
                    return midstream
            elif walk.failed(self, error):
                return None
        walk.abandon()
        return error


class Walk:
    """The decision core of one call: which candidate next, retry or not, breaker or not.

    Iterate it for the attempts to make (``for`` in sync code, ``async for`` in async code; a
    retry's delay is slept before it is handed out), run each inside ``with attempt:``, and
    hand a result to `answer`. When the first candidate is built, its breaker closed, its
    client gives up before the deadline, nobody listens to callbacks and no runner lookup is
    given, the first attempt is made with no bookkeeping at all: the call costs one candidate
    call unless it fails.

    Args:
        candidates: The chain's candidates, ordered by ``routing``.
        policy: Retries, deadline and breaker settings.
        breakers: The breaker board.
        runner: Candidate -> what to call (e.g. the model with tools bound), or the exception
            saying why it cannot; ``None`` calls each candidate's model.
        routing: Orders ``candidates`` for this call; ``None`` keeps their order.
        then: Candidates tried after the routed ones, in their own order (models from code).
        scope: The scope, for messages.
        name: The chain run's name (a callable is asked only when a run is opened).
        config: The call's runnable config.
        inputs: The call's input, for the chain run.
        streaming: Whether the attempts stream (each gets a `StreamGate`; no fast path).
        started: When the call started (monotonic), if not now.
        admissions: Asked, in order, before each attempt of a candidate whether it may be
            called now, and told how it went (`llmpool.fallback.admission`); a refusal skips
            the candidate with its reason, like an open breaker.

    Example:
        >>> from llmpool.fallback.breakers import BreakerBoard
        >>> from llmpool.fallback.policy import FallbackPolicy
        >>> from llmpool.providers.fake import FakeChatModel
        >>> walk = Walk([Candidate.from_model(FakeChatModel(responses=["hi"]))],
        ...             policy=FallbackPolicy(), breakers=BreakerBoard())
        >>> for attempt in walk:
        ...     with attempt:
        ...         answer = walk.answer(attempt, attempt.runner.invoke("hello"))
        ...         break
        >>> answer.content
        'hi'
    """

    # The state of a walk that has not made an attempt yet, as class attributes: the fast path
    # (one attempt, no bookkeeping) then writes none of them.
    index = 0  # the current candidate
    number = 0  # attempt number of the current candidate
    delay = 0.0  # before the next attempt
    probe = False  # whether the next attempt of the current candidate holds a probe
    tried_any = False
    forced: str | None = None  # the key probed although every candidate was cooling
    in_flight: Attempt | None = None  # the attempt holding a probe slot
    last_exception: BaseException | None = None
    run_manager: Any = None
    final: AllLLMsFailedError | None = None
    fresh = True  # no attempt handed out yet
    rec: CallRecorder | None = None  # tells the policy's observers (made beyond the fast path)
    refused: tuple[Candidate, str] | None = None  # the fast path's first, refused admission
    refused_keys: frozenset[str] = frozenset()  # candidates an admission check skipped

    def __init__(
        self,
        candidates: Sequence[Candidate],
        policy: FallbackPolicy,
        breakers: BreakerBoard,
        runner: Callable[[Candidate], Any] | None = None,
        routing: Routing | None = None,
        then: Sequence[Candidate] = (),
        scope: str | None = None,
        name: str | Callable[[], str] = "FallbackChatModel",
        config: RunnableConfig | None = None,
        inputs: Any = None,
        streaming: bool = False,
        started: float | None = None,
        admissions: Sequence[AdmissionCheck] = (),
    ) -> None:
        # Every argument may be passed by position: a shell does, as keywords cost a call time.
        if routing is not None:
            candidates = routing.order(candidates)
        self.candidates = (*candidates, *then) if then else candidates
        self.policy = policy
        self.breakers = breakers
        self.runner = runner
        self.scope = scope
        self.name = name
        self.config = config
        self.inputs = inputs
        self.streaming = streaming
        self.started = time.monotonic() if started is None else started
        self.admissions = admissions
        self.routed = routing is not None  # the answer reports the order the routing chose

    def _begin(self) -> None:
        # The bookkeeping of a walk beyond its fast path (made only when it is needed).
        deadline = self.policy.deadline
        self.ends_at = None if deadline is None else self.started + deadline
        self.failures: list[CandidateFailure] = []
        self.attempts: list[dict[str, Any]] = []
        self.rec = CallRecorder(self.policy.hooks, self.scope, self.streaming, self.started)

    # -- the loop ------------------------------------------------------------------------------

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> Attempt:
        if self.fresh:
            self.fresh = False
            attempt = self._fast()
            if attempt is not None:
                return attempt
            self._begin()
            self.start_run(self.inputs)
        attempt = self.next_attempt()
        if attempt is None:
            self.end_run(error=self.error())
            raise StopIteration
        if attempt.delay:
            time.sleep(attempt.delay)
        return attempt

    def __aiter__(self) -> Walk:
        return self

    async def __anext__(self) -> Attempt:
        if self.fresh:
            self.fresh = False
            attempt = self._fast()
            if attempt is not None:
                return attempt
            self._begin()
            await self.astart_run(self.inputs)
        attempt = self.next_attempt()
        if attempt is None:
            await maybe_await(self.end_run(error=self.error()))
            raise StopAsyncIteration
        if attempt.delay:
            await asyncio.sleep(attempt.delay)
        return attempt

    def answer(self, attempt: Attempt, result: Any) -> Any:
        """Record that ``attempt`` answered ``result``; return it tagged with its metadata."""
        if attempt.admitted:
            attempt.usage = usage_of(result)
        if attempt.fast:
            if attempt.dirty:
                self.breakers.success(attempt.candidate.key)
            hooks = self.policy.hooks
            if hooks.every_call:  # else a healthy call tells no observer: it costs nothing
                fast_answer(hooks, self.scope, attempt.candidate, self.started, result)
            metadata = answered(attempt.candidate)
            if self.routed:
                metadata["order"] = self.order()
            return tag(result, metadata)
        result = attempt.output = tag(result, self.succeeded(attempt))
        if self.rec is not None:
            self.rec.answered(attempt, usage_of(result))
        return result

    def streamed(self, attempt: Attempt) -> None:
        """Record that a streamed ``attempt`` ended cleanly: its observers hear it now."""
        if self.rec is not None:
            self.rec.answered(attempt, getattr(attempt, "usage", None))

    # -- choosing ------------------------------------------------------------------------------

    def first_if_quick(self) -> Candidate | None:
        """Return the first candidate when the fast path may call it, else ``None``."""
        quick = self._quick()
        return None if quick is None else quick[0]

    def _quick(self) -> tuple[Candidate, bool] | None:
        # The first candidate, and whether its (closed) breaker holds failures to clear.
        if self.runner is not None or self.streaming or callbacks_active(self.config):
            return None
        candidates = self.candidates
        if not candidates:
            return None
        first = candidates[0]
        if first.model is None:
            return None
        deadline = self.policy.deadline
        if deadline is not None and first.client_timeout > deadline:
            return None  # the walk bounds an attempt that could outlive the deadline
        state = self.breakers.store.get(first.key)
        if state is not None and state.open_until != 0.0:  # open or half-open
            return None
        return first, state is not None

    def _fast(self) -> Attempt | None:
        quick = self._quick()
        if quick is None:
            return None
        first, dirty = quick
        attempt = Attempt(self, first, first.model, 1, 0.0, self.config)
        attempt.fast = True
        if dirty:
            attempt.dirty = True
        if self.admissions:
            admitted = self._admit(first)
            if isinstance(admitted, str):  # the full walk records the skip, not asking again
                self.refused = (first, admitted)
                return None
            attempt.admitted = admitted
            attempt.began = time.perf_counter()
        return attempt

    def _resume(self) -> None:
        # The fast attempt failed: keep the books from here on, counting that first attempt.
        self._begin()
        self.number = 1
        self.tried_any = True

    def _run(self, candidate: Candidate) -> Any:
        return candidate.model if self.runner is None else self.runner(candidate)

    def _skip(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        if self.rec is not None:
            self.rec.skipped(candidate, reason, error)
        c = candidate.config
        self.failures.append(CandidateFailure(c.id, c.name, c.provider, reason, error))
        self.attempts.append(
            {"llm_id": c.id, "name": c.name, "outcome": "skipped", "reason": reason}
        )

    def next_attempt(self) -> Attempt | None:
        """Return the next attempt to make, or ``None`` when every candidate is done."""
        while self.index < len(self.candidates):
            candidate = self.candidates[self.index]
            if self.number > 0:  # a retry of the current candidate: a new call to admit
                again = self._admit(candidate) if self.admissions else ()
                if isinstance(again, str):
                    if self.probe:
                        self.breakers.release(candidate.key)
                    self.probe, self.delay, self.number = False, 0.0, 0
                    self._refuse(candidate, again)
                    continue
                return self._admitted(self._attempt(candidate), again)
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
            runner = self._run(candidate)
            if isinstance(runner, BaseException):
                self._skip(candidate, f"cannot do this: {describe_error(runner)}", runner)
                self.index += 1
                continue
            admission = self.breakers.admit(candidate.key)
            if admission is Admission.OPEN:
                self._skip(candidate, "skipped: cooling down after repeated failures", None)
                self.index += 1
                continue
            admitted: tuple[AdmissionCheck, ...] | str = ()
            if self.admissions:
                refused = self.refused
                if refused is not None and refused[0] is candidate:
                    self.refused = None
                    admitted = refused[1]
                else:
                    admitted = self._admit(candidate)
            if isinstance(admitted, str):
                if admission is Admission.PROBE:
                    self.breakers.release(candidate.key)
                self._refuse(candidate, admitted)
                continue
            self.probe = admission is Admission.PROBE
            if self.probe and self.rec is not None:
                self.rec.probing(candidate, self.breakers)
            return self._admitted(self._attempt(candidate, runner), admitted)
        return self._forced_probe()

    # -- admission checks ----------------------------------------------------------------------

    def _admit(self, candidate: Candidate) -> tuple[AdmissionCheck, ...] | str:
        # Every check in turn: the ones that admitted, or the first refusal (the ones that
        # admitted before it are released: no call follows).
        checks = self.admissions
        if len(checks) == 1:  # the common case: no list, no tuple to build
            reason = checks[0].admit(candidate)
            return tuple(checks) if reason is None else reason
        admitted: list[AdmissionCheck] = []
        try:
            for check in self.admissions:
                reason = check.admit(candidate)
                if reason is not None:
                    for earlier in admitted:
                        earlier.release(candidate)
                    return reason
                admitted.append(check)
        except BaseException:
            for earlier in admitted:
                earlier.release(candidate)
            raise
        return tuple(admitted)

    def _refuse(self, candidate: Candidate, reason: str) -> None:
        self._skip(candidate, reason, None)
        self.refused_keys = self.refused_keys | {candidate.key}
        self.index += 1

    @staticmethod
    def _admitted(attempt: Attempt, admitted: tuple[AdmissionCheck, ...]) -> Attempt:
        if admitted:
            attempt.admitted = admitted
            attempt.began = time.perf_counter() + attempt.delay
        return attempt

    def settle(self, attempt: Attempt, ok: bool) -> None:
        """Tell the checks that admitted ``attempt`` how it went (once; then it has none)."""
        admitted, attempt.admitted = attempt.admitted, ()
        latency = time.perf_counter() - attempt.began
        usage = getattr(attempt, "usage", None) if ok else None
        candidate = attempt.candidate
        for check in admitted:
            check.record(candidate, ok=ok, latency=latency, usage=usage)

    def _forced_probe(self) -> Attempt | None:
        # Every buildable candidate was cooling down: probe the one that reopens first
        # rather than fail without trying. Of concurrent callers in that state, one probes
        # each candidate; a caller that finds every probe slot taken fails at once.
        if self.tried_any or self.forced is not None:
            return None
        refused = self.refused_keys
        cooling = [
            c
            for c in self.candidates
            if c.model is not None
            and c.key not in refused
            and not isinstance(self._run(c), BaseException)
        ]
        breakers = self.breakers
        for candidate in sorted(cooling, key=lambda c: breakers.reopens_at(c.key)):
            if breakers.force_probe(candidate.key):
                admitted = self._admit(candidate) if self.admissions else ()
                if isinstance(admitted, str):
                    breakers.release(candidate.key)
                    continue
                self.forced = candidate.key
                self.index = self.candidates.index(candidate)
                self.probe = True
                if self.rec is not None:
                    self.rec.probing(candidate, self.breakers, forced=True)
                return self._admitted(self._attempt(candidate), admitted)
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
            runner = self._run(candidate)
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
        attempt = Attempt(self, candidate, runner, self.number, delay, config)
        if self.rec is not None:
            self.rec.begin(attempt)
        if ends_at is not None:
            attempt.ends_at = ends_at
            attempt.runner = Bounded(self, attempt, runner)
        if self.streaming:
            attempt.gate = StreamGate(self, attempt)
        if probe:
            attempt.probe = True
            self.in_flight = attempt
        return attempt

    def abandon(self) -> None:
        """Give back a probe slot held by an attempt that ended without a verdict
        (cancelled, interrupted, or a bug in the caller)."""
        attempt, self.in_flight = self.in_flight, None
        if attempt is not None:
            self.breakers.release(attempt.candidate.key)

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
        change = self.breakers.success(attempt.candidate.key)
        if change is not None and self.rec is not None:
            self.rec.breaker(attempt.candidate, change)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "ok"})
        metadata = {
            "llm_id": c.id,
            "name": c.name,
            "provider": c.provider,
            "model_name": c.model_name,
            "attempts": self.attempts,
        }
        if self.routed:
            metadata["order"] = self.order()
        return metadata

    def order(self) -> list[str]:
        """The names of this call's candidates in the order the routing chose (the fallback
        order beyond the first)."""
        return [candidate.config.name for candidate in self.candidates]

    def failed(self, attempt: Attempt, error: Exception) -> bool:
        """Record a failure and decide: retry, next candidate, or propagate ``error``.

        Returns:
            Whether the walk goes on; ``False`` when ``error`` must propagate (a bug).
        """
        outcome = self.policy.classify(error)
        if outcome is Outcome.PROPAGATE:
            self.abandon()
            return False
        self.in_flight = None
        self.last_exception = error
        key = attempt.candidate.key
        c = attempt.candidate.config
        reason = describe_error(error)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "error", "error": reason})
        breakers = self.breakers
        change = None
        if outcome is Outcome.FALLBACK_KEEP_BREAKER:
            if attempt.probe:
                breakers.release(key)
        else:
            change = breakers.failure(
                key,
                threshold=self.policy.failure_threshold,
                cooldown=self.policy.cooldown_for,
                probe=attempt.probe,
            )
        retry = False
        if outcome is Outcome.RETRY and attempt.number < self.policy.attempts:
            delay = self.policy.retry_delay(attempt.number, error, self._time_left())
            if delay is not None:
                admission = breakers.admit(key)
                if admission is not Admission.OPEN:
                    self.delay = delay
                    self.probe = admission is Admission.PROBE
                    retry = True
        if self.rec is not None:
            self.rec.failed(attempt, error, reason, "retry" if retry else "fallback", change)
        if retry:
            return True
        failure = CandidateFailure(c.id, c.name, c.provider, reason, error)
        self.number = 0
        if self.forced == key:
            # The forced probe ends the walk; its failure replaces its "cooling down" entry.
            self.failures = [failure if f.llm_id == key else f for f in self.failures]
            self.index = len(self.candidates)
            return True
        self.failures.append(failure)
        self.index += 1
        return True

    def failed_midstream(
        self, attempt: Attempt, error: Exception, text: str
    ) -> MidStreamError | None:
        """Record a stream that broke after emitting chunks.

        Returns:
            The error to raise, or ``None`` when ``error`` itself must propagate (a bug).
        """
        if self.policy.classify(error) is Outcome.PROPAGATE:
            return None
        c = attempt.candidate.config
        change = self.breakers.failure(
            attempt.candidate.key,
            threshold=self.policy.failure_threshold,
            cooldown=self.policy.cooldown_for,
            probe=attempt.probe,
        )
        msg = (
            f"{c.describe()} failed after streaming {len(text)} characters "
            f"({describe_error(error)}); not switching model mid-answer"
        )
        midstream = MidStreamError(msg, partial_text=text, llm_id=c.id, llm_name=c.name)
        if self.rec is not None:
            self.rec.failed(attempt, error, describe_error(error), "raise", change)
            self.rec.gave_up(midstream)
        return midstream

    def error(self) -> AllLLMsFailedError:
        """Return the error for a call where every candidate failed (made once).

        It is chained from the last original exception (see `last_error`).
        """
        if self.final is None:
            cls = AllLLMsFailedError if self.tried_any else AllLLMsFailedToInitializeError
            final = cls(self.failures, scope=self.scope)
            final.__cause__ = self.last_error()  # as ``raise ... from``: no implicit context
            self.final = final
            if self.rec is not None:
                self.rec.gave_up(final)
        return self.final

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
            name=config.get("run_name") or self._name(),
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
            name=config.get("run_name") or self._name(),
            run_id=config.pop("run_id", None),
        )
        self.config = config

    def _name(self) -> str:
        return self.name if isinstance(self.name, str) else self.name()

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
    """The ``llmpool`` metadata of an answer from the first attempt (fresh dicts each time)."""
    head, ok = candidate.answer_fields
    return {**head, "attempts": [ok.copy()]}


async def maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
