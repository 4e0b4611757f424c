"""The decision core of one call: which candidate next, retry or not, breaker or not.

`Walk` takes one `ScopeChain`, the policy and the breaker board, and decides; it calls nothing
itself. The shells of the chat model and the embeddings drive it in stamina's shape::

    for attempt in walk:              # `async for` in the async shells
        with attempt:                 # classifies, records, swallows what falls back
            return walk.answer(attempt, attempt.call.generate(messages, stop, kwargs))
    raise walk.error()

Per candidate, in the order the chain's routing gives: skipped when it could not be built, the
deadline has passed, it refused what the call asks (tools), its circuit breaker is open, or an
admission check (rate limit, budget) refuses it; else called, and retried on a transient error
while attempts, the deadline and its breaker allow. An answer is judged before it counts
(`Walk.judge`: empty, filtered, the caller's ``accept``); one refused falls back as an error
does. A call whose first candidate answers at once, with nobody listening, makes no record at
all: that is the whole fast path.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llmpool.credentials.redaction import scrubbed
from llmpool.errors import (
    AllLLMsFailedError,
    AllLLMsFailedToInitializeError,
    BadAnswerError,
    MidStreamError,
)
from llmpool.fallback.bounded import Bounded
from llmpool.fallback.breakers import Admission, BreakerBoard, Window
from llmpool.fallback.calls import StreamGate
from llmpool.fallback.policy import FallbackPolicy, Outcome, describe_error, retry_after
from llmpool.fallback.record import CallRecord, answered, reply_of, usage_of
from llmpool.fallback.verdicts import rejection
from llmpool.providers.timeouts import stream_limits

if TYPE_CHECKING:
    from llmpool.chain.affinity import Session
    from llmpool.chain.builder import ScopeChain
    from llmpool.chain.experiment import Trial
    from llmpool.contracts import AdmissionCheck, Candidate
    from llmpool.providers.fit import Prompt
    from llmpool.tags import Tags

__all__ = ["Attempt", "Plan", "Walk"]

_NO_OPTIONS: Mapping[str, Any] = {}

#: Why a candidate whose breaker is open is skipped.
COOLING = "skipped: cooling down after repeated failures"


class Attempt:
    """One call to one ``candidate``: the ``call`` to make (`llmpool.fallback.calls`), and the
    context that settles its outcome.

    ``with attempt:`` (``async with``) classifies an error raised inside, records it, and
    swallows it when the walk goes on (a retry, or the next candidate); an error that must
    propagate (a bug, an interruption, a stream broken mid-answer) leaves it.
    """

    __slots__ = ("admitted", "began", "call", "candidate", "delay", "dirty", "gate", "number",
                 "probe", "reply", "usage", "walk")  # fmt: skip

    def __init__(
        self,
        walk: Walk,
        candidate: Candidate,
        call: Any,
        number: int,
        probe: bool,
        dirty: bool,
        admitted: tuple[AdmissionCheck, ...],
    ) -> None:
        self.walk = walk
        self.candidate = candidate
        self.call = call
        self.number = number
        self.probe = probe  # whether it is its candidate's half-open probe
        self.dirty = dirty  # whether its breaker holds state a success must clear
        self.delay = 0.0
        self.admitted = admitted  # the checks that admitted it: told the outcome once, then ()
        self.usage: Any = None  # the answer's token usage, for the admission checks
        self.reply: dict[str, Any] | None = None  # what a stream says of itself, for observers
        self.gate: StreamGate | None = None
        self.began = time.monotonic()

    def __enter__(self) -> Attempt:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        walk = self.walk
        if self.admitted:  # a refused answer is an answer: its row was up, and billed it
            walk.settle(self, error is None or isinstance(error, BadAnswerError))
        if error is None:
            if self.gate is not None:
                walk.streamed(self)
            return False
        escaping = walk.verdict(self, error)
        if escaping is None:
            return True
        if escaping is error:
            return False
        raise escaping

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> bool:
        return self.__exit__(kind, error, traceback)


class Plan:
    """What every walk of one chain shares, worked out once per chain: its candidates (the
    chain's, then ``then``: models from code), its checks, the policy's verdict settings, and
    each row's breaker window (`FallbackPolicy.breaker_rule`).

    Args:
        chain: The chain.
        policy: Retries, deadline and breaker settings.
        breakers: The breaker board.
        calls: Candidate -> what to call for it, or the exception saying why it cannot.
        then: Candidates tried after the chain's, in their own order (models from code).
    """

    __slots__ = ("breakers", "calls", "candidates", "chain", "checks", "names", "ordered",
                 "policy", "verdicts", "windows")  # fmt: skip

    def __init__(
        self,
        chain: ScopeChain,
        policy: FallbackPolicy,
        breakers: BreakerBoard,
        calls: Callable[[Candidate], Any],
        then: Sequence[Candidate] = (),
    ) -> None:
        self.chain = chain
        own, routing = chain.candidates, chain.routing
        # Whether each call orders the candidates its own way (routing, an experiment's arm);
        # a fixed routing's order is the plan's.
        self.ordered = routing is not None or chain.experiment is not None
        if self.ordered and chain.experiment is None and getattr(routing, "fixed", False):
            own, self.ordered = tuple(routing.order(own)), False  # type: ignore[union-attr]
        self.candidates = (*own, *then) if then else own
        #: The answer's ``order`` when the call keeps the plan's (``None``: no routing).
        self.names = None if routing is None else [c.config.name for c in self.candidates]
        self.checks = chain.checks
        self.policy = policy
        self.breakers = breakers
        self.calls = calls
        # accept, judging, whole: whether an answer may be refused, a stream held to its end
        self.verdicts = (policy.accept, policy.judging, policy.whole)
        self.windows: dict[str, Window | None] = {}

    def window(self, candidate: Candidate) -> Window | None:
        """The failure-rate window of ``candidate``'s breaker (``None``: it counts none), kept
        in ``windows`` (read there first)."""
        window = self.windows[candidate.key] = self.policy.breaker_rule(candidate).window
        return window


class Walk:
    """One call's walk through a chain (see the module).

    Args:
        plan: The chain in force when the call started, as its `Plan`.
        streaming: Whether the attempts stream (each gets a `StreamGate`).
        prompt: The call's messages, for the rows that declare what they can take (a row the
            call does not fit is skipped: `llmpool.providers.fit`).
        session: The call's session: its affinity, key and pinned row's id, tried first
            (`llmpool.chain.affinity`); the row that answers is kept as the session's.
        options: The call's own settings (``ttft_timeout``, ``stall_timeout`` over its rows'
            ``config`` and the policy's; ``accept`` instead of the policy's).
        tags: The call's tags (`llmpool.tags`): given to each admission check, and listed in
            the answer's metadata.

    Example:
        >>> from llmpool.chain.builder import ScopeChain
        >>> from llmpool.contracts import Candidate
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="A", provider="fake", model_name="m")
        >>> from llmpool.fallback.calls import ChatCall
        >>> from llmpool.providers.fake import FakeChatModel
        >>> chain = ScopeChain(None, "chat", 0, (Candidate(row, FakeChatModel()),))
        >>> plan = Plan(chain, FallbackPolicy(), BreakerBoard(), lambda c: ChatCall(c.model))
        >>> walk = Walk(plan)
        >>> for attempt in walk:
        ...     with attempt:
        ...         metadata = walk.answer(attempt)
        ...         break
        >>> metadata["name"], metadata["attempts"]
        ('A', [{'llm_id': '1', 'name': 'A', 'outcome': 'ok'}])
    """

    __slots__ = ("accept", "candidates", "in_flight", "index", "judging", "number", "options",
                 "plan", "prompt", "record", "retry", "session", "started",
                 "streaming", "tags", "trial", "whole")  # fmt: skip

    def __init__(
        self,
        plan: Plan,
        *,
        streaming: bool = False,
        prompt: Prompt | None = None,
        session: Session | None = None,
        options: Mapping[str, Any] | None = None,
        tags: Tags | None = None,
    ) -> None:
        self.plan = plan
        self.candidates: Sequence[Candidate] = plan.candidates
        self.trial: Trial | None = None
        if plan.ordered or session is not None:  # this call's order
            chain = plan.chain
            own: Sequence[Candidate] = chain.candidates
            if chain.experiment is not None:  # an arm's order, its tag and call id
                own, tags, self.trial = chain.experiment.route(own, session, tags)
            else:
                own = own if chain.routing is None else chain.routing.order(own)
                pinned = session[2] if session is not None else None
                own = own if pinned is None else _pinned_first(own, pinned)
            self.candidates = (*own, *plan.candidates[len(chain.candidates) :])
        self.streaming = streaming
        self.prompt = prompt
        self.session = session
        self.tags = tags
        # Whether `judge` may refuse, and whether a stream is held back to its end (a verdict
        # needs the whole answer): the policy's, unless the call has its own ``accept``.
        if options is None or options.get("accept") is None:
            self.options = _NO_OPTIONS if options is None else options
            self.accept, self.judging, self.whole = plan.verdicts
        else:
            self.options = options
            self.accept, self.judging, self.whole = options["accept"], True, True
        self.started = time.monotonic()
        self.index = 0  # the current candidate
        self.number = 0  # attempts made on it
        # A retry of the current candidate: its delay, and whether it holds the probe slot.
        self.retry: tuple[float, bool] | None = None
        self.in_flight: Attempt | None = None  # the attempt holding a probe slot
        self.record: CallRecord | None = None
        if plan.policy.hooks.every_call:
            self._rec()

    def _rec(self) -> CallRecord:
        record = self.record
        if record is None:
            record = self.record = CallRecord(
                self.plan.policy.hooks,
                self.plan.chain.scope,
                self.streaming,
                self.started,
                self.tags,
                self.trial,
            )
        return record

    # -- the loop ------------------------------------------------------------------------------

    def __iter__(self) -> Walk:
        return self

    def __next__(self) -> Attempt:
        attempt = self.next_attempt()
        if attempt is None:
            raise StopIteration
        if attempt.delay:
            try:
                time.sleep(attempt.delay)
            except BaseException:
                self._discard(attempt)
                raise
        return attempt

    def __aiter__(self) -> Walk:
        return self

    async def __anext__(self) -> Attempt:
        attempt = self.next_attempt()
        if attempt is None:
            raise StopAsyncIteration
        if attempt.delay:
            try:
                await asyncio.sleep(attempt.delay)
            except BaseException:  # cancelled in its retry delay: the attempt is never made
                self._discard(attempt)
                raise
        return attempt

    def _discard(self, attempt: Attempt) -> None:
        # An attempt handed out but never made: its admissions and probe slot go back.
        admitted, attempt.admitted = attempt.admitted, ()
        for check in admitted:
            check.release(attempt.candidate, self.tags)
        self.abandon()

    # -- choosing ------------------------------------------------------------------------------

    def next_attempt(self) -> Attempt | None:
        """Return the next attempt to make, or ``None`` when every candidate is done."""
        candidates = self.candidates
        while self.index < len(candidates):
            candidate = candidates[self.index]
            retry = self.retry  # a retry of the current candidate: a new call to admit
            if retry is not None:
                call, probe, dirty = self.plan.calls(candidate), retry[1], True
            else:
                if candidate.model is None:
                    error = candidate.error
                    reason = describe_error(error) if error else "could not be built"
                    self._skip(candidate, reason, error)
                    continue
                deadline = self.plan.policy.deadline
                if deadline is not None and time.monotonic() - self.started >= deadline:
                    self._skip(candidate, f"not tried: the {deadline}s deadline passed", None)
                    continue
                call = self.plan.calls(candidate)
                if isinstance(call, BaseException):
                    self._skip(candidate, f"cannot do this: {describe_error(call)}", call)
                    continue
                if candidate.fit is not None and self.prompt is not None:
                    unfit = candidate.fit.refusal(call.needs, self.prompt)
                    if unfit is not None:
                        self._skip(candidate, unfit, None)
                        continue
                admission, dirty = self.plan.breakers.check(candidate.key)
                if admission is Admission.OPEN:
                    self._skip(candidate, COOLING, None)
                    continue
                probe = admission is Admission.PROBE
            admitted: tuple[AdmissionCheck, ...] | str = (
                self._admit(candidate) if self.plan.checks else ()
            )
            if isinstance(admitted, str):
                if probe:
                    self.plan.breakers.release(candidate.key)
                self._skip(candidate, admitted, None)
                continue
            if probe and retry is None:
                self._rec().breaker(candidate, self.plan.breakers.probing(candidate.key))
            return self._attempt(candidate, call, probe, dirty, admitted)
        return None

    def _skip(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        self._rec().skipped(candidate, reason, error)
        self.index += 1
        self.number, self.retry = 0, None

    def _admit(self, candidate: Candidate) -> tuple[AdmissionCheck, ...] | str:
        # Every check in turn: all of them, or the first refusal (those that admitted before
        # it are released: no call follows).
        checks, tags = self.plan.checks, self.tags
        passed = 0
        try:
            for check in checks:
                reason = check.admit(candidate, tags)
                if reason is not None:
                    break
                passed += 1
            else:
                return checks
        except BaseException:
            for earlier in checks[:passed]:
                earlier.release(candidate, tags)
            raise
        for earlier in checks[:passed]:
            earlier.release(candidate, tags)
        return reason

    def _attempt(
        self,
        candidate: Candidate,
        call: Any,
        probe: bool,
        dirty: bool,
        admitted: tuple[AdmissionCheck, ...],
    ) -> Attempt:
        self.number += 1
        attempt = Attempt(self, candidate, call, self.number, probe, dirty, admitted)
        retry = self.retry
        if retry is not None:
            self.retry = None
            attempt.delay = retry[0]
            attempt.began += retry[0]
        if probe:
            self.in_flight = attempt
        deadline = self.plan.policy.deadline
        if deadline is not None or self.streaming:
            ends_at = math.inf if deadline is None else self.started + deadline
            ttft, stall = self._limits(candidate) if self.streaming else (None, None)
            if call.timeout > ends_at - attempt.began or ttft is not None or stall is not None:
                # Its client could wait past the deadline, or a stream past its limits: the
                # call is cut short at them.
                config = candidate.config
                attempt.call = Bounded(call, ends_at, deadline, config, ttft=ttft, stall=stall)
        if self.record is not None:
            self.record.begin(candidate)
        if self.streaming:
            attempt.gate = StreamGate(self, attempt)
        return attempt

    def _limits(self, candidate: Candidate) -> tuple[float | None, float | None]:
        # A stream's ttft and stall limits: the call's, else its row's, else the policy's.
        options, policy = self.options, self.plan.policy
        ttft, stall = stream_limits(candidate.config) if candidate.config.config else (None, None)
        return (
            options.get("ttft_timeout") or ttft or policy.ttft_timeout,
            options.get("stall_timeout") or stall or policy.stall_timeout,
        )

    # -- outcomes ------------------------------------------------------------------------------

    def answer(self, attempt: Attempt, usage: Any = None, result: Any = None) -> dict[str, Any]:
        """Record that ``attempt`` answered (a stream: its first content; `streamed` hears the
        end) with ``result``; return the answer's ``llmpool`` metadata."""
        if attempt.admitted:
            attempt.usage = usage
        self.in_flight = None
        candidate = attempt.candidate
        session = self.session
        if session is not None:
            session[0].keep(session[1], candidate.config.id, session[2])
        key, windows = candidate.key, self.plan.windows
        window = windows[key] if key in windows else self.plan.window(candidate)
        if attempt.dirty:  # a probe, or failures to clear
            change = self.plan.breakers.success(key, window)
            if change is not None:
                self._rec().breaker(candidate, change)
        elif window is not None:
            self.plan.breakers.passed(key, window)
        order = self.plan.names  # the answer says the order it chose
        if order is not None:
            candidates = self.candidates
            order = (
                order.copy()
                if candidates is self.plan.candidates
                else [c.config.name for c in candidates]
            )
        record = self.record
        if record is None:
            metadata = answered(candidate, order)
        else:
            metadata = record.metadata(candidate, order)
            if not self.streaming:
                record.answered(attempt, usage, reply_of(result))
        if self.tags is not None:
            metadata["tags"] = self.tags.as_dict()
            if (trial := self.trial) is not None:
                metadata["arm"], metadata["call_id"] = trial.arm, trial.call_id
                trial.served(candidate.config.id)
        return metadata

    def judge(self, attempt: Attempt, message: Any, info: Any = None) -> None:
        """Raise `BadAnswerError` when ``message``, ``attempt``'s answer (``info``: its
        ``generation_info``), is not one the caller can use (`llmpool.fallback.verdicts`);
        its usage still counts."""
        reject = self.plan.policy.reject
        parser = attempt.call.parser if "invalid_structured" in reject else None
        found = rejection(message, reject, self.accept, parser, info)
        if found is None:
            return
        verdict, why = found
        attempt.usage = usage_of(message)
        c = attempt.candidate.config
        msg = f"{c.describe()}: {why}"
        raise BadAnswerError(msg, verdict=verdict, llm_id=c.id, llm_name=c.name)

    def streamed(self, attempt: Attempt) -> None:
        """Record that a streamed ``attempt`` ended cleanly: its observers hear it now."""
        if self.record is not None:
            self.record.answered(attempt, attempt.usage, attempt.reply)

    def settle(self, attempt: Attempt, ok: bool) -> None:
        """Tell the checks that admitted ``attempt`` how it went (once)."""
        admitted, attempt.admitted = attempt.admitted, ()
        latency = time.monotonic() - attempt.began
        usage = attempt.usage if ok else None
        candidate, tags = attempt.candidate, self.tags
        for check in admitted:
            check.record(candidate, tags, ok=ok, latency=latency, usage=usage)

    def verdict(self, attempt: Attempt, error: BaseException) -> BaseException | None:
        """Settle an attempt that raised: ``None`` when the walk goes on, else what to raise.

        A failure is recorded and retried, or falls back to the next candidate; a stream that
        broke after its first content raises `MidStreamError` (never a switch mid-answer).
        """
        policy = self.plan.policy
        outcome = policy.classify(error) if isinstance(error, Exception) else Outcome.PROPAGATE
        if outcome is Outcome.PROPAGATE:
            self.abandon()
            return error
        self.in_flight = None
        gate = attempt.gate
        text = gate.text if gate is not None and gate.open else None
        candidate = attempt.candidate
        key = candidate.key
        breakers = self.plan.breakers
        change = None
        rule = policy.breaker_rule(candidate)
        # A stream broken mid-answer counts whatever the error; others as the row's rule says.
        if text is None and outcome.value not in rule.errors:
            if attempt.probe:
                breakers.release(key)
        else:
            hinted = retry_after(error)
            change = breakers.failure(
                key,
                threshold=rule.threshold,
                cooldown=rule.cooldown_for,
                probe=attempt.probe,
                window=rule.window,
                hint=0.0 if hinted is None else min(hinted, rule.max_cooldown),
            )
        action = "fallback" if text is None else "raise"
        if text is None and outcome is Outcome.RETRY and attempt.number < policy.attempts:
            deadline = policy.deadline
            left = None if deadline is None else deadline - (time.monotonic() - self.started)
            delay = policy.retry_delay(attempt.number, error, left)
            if delay is not None:
                admission = breakers.admit(key)
                if admission is not Admission.OPEN:
                    self.retry = (delay, admission is Admission.PROBE)
                    action = "retry"
        record = self._rec()
        record.last = error
        reason = describe_error(error)
        record.failed(attempt, error, reason, action)
        if change is not None:
            record.breaker(candidate, change)
        if text is not None:
            c = candidate.config
            msg = (
                f"{c.describe()} failed after streaming {len(text)} characters ({reason}); "
                "not switching model mid-answer"
            )
            midstream = MidStreamError(msg, partial_text=text, llm_id=c.id, llm_name=c.name)
            midstream.__cause__ = error
            record.gave_up(midstream)
            return midstream
        if action == "fallback":
            self.number = 0
            self.index += 1
        return None

    def abandon(self) -> None:
        """Give back a probe slot held by an attempt that ended without a verdict
        (cancelled, interrupted, or a bug in the caller)."""
        attempt, self.in_flight = self.in_flight, None
        if attempt is not None:
            self.plan.breakers.release(attempt.candidate.key)

    def error(self) -> AllLLMsFailedError:
        """Return the error of a call where every candidate failed (made once), chained from
        the last candidate's error (its secrets masked)."""
        record = self._rec()
        if record.final is None:
            tried = any(entry["outcome"] != "skipped" for entry in record.attempts)
            cls = AllLLMsFailedError if tried else AllLLMsFailedToInitializeError
            final = cls(record.failures, scope=self.plan.chain.scope)
            last = record.last or next(
                (f.error for f in reversed(record.failures) if f.error is not None), None
            )
            final.__cause__ = None if last is None else scrubbed(last)
            record.final = final
            record.gave_up(final)
        return record.final


def _pinned_first(candidates: Sequence[Candidate], llm_id: str) -> Sequence[Candidate]:
    # The session's row first, the others in their order; as they were when it is not there.
    for index, candidate in enumerate(candidates):
        if candidate.config.id == llm_id:
            return (
                (candidate, *candidates[:index], *candidates[index + 1 :]) if index else candidates
            )
    return candidates
