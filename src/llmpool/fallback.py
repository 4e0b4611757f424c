"""The fallback chat model: candidates in priority order, the first that answers wins.

`FallbackChatModel` is a real `BaseChatModel`, so agent builders and anything that checks for
a chat model accept it (they reject LangChain's ``RunnableWithFallbacks``). Compared with
``Runnable.with_fallbacks`` it:

- writes the candidate loop once (`_Walk`, the decision core) and drives it from four thin
  shells (invoke, ainvoke, stream, astream; batch and abatch go through invoke and ainvoke);
- falls back only on provider errors (see `llmpool.policy`), so a `TypeError` stays a bug;
- raises one `AllLLMsFailedError` that lists every candidate and its error, in order;
- applies ``bind_tools`` / ``with_structured_output`` to every candidate explicitly, skipping
  (and recording) a candidate that cannot, instead of forwarding through ``__getattr__``;
- retries transient errors per candidate (bounded attempts and a total deadline), and skips a
  candidate whose circuit breaker is open with no network call;
- says which candidate answered: ``response_metadata["llmpool"]``.

When callbacks or tracing are active, the call is one chain run and each attempt a child run
named after its row; when they are not, no callback machinery runs at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig

# Whether LangSmith tracing is on: the same check LangChain's callback manager makes.
from langchain_core.tracers.context import _tracing_v2_is_enabled
from pydantic import ConfigDict, PrivateAttr

from llmpool.breaker import Admission, BreakerBoard
from llmpool.errors import (
    AllLLMsFailedError,
    AllLLMsFailedToInitializeError,
    CandidateFailure,
    MidStreamError,
)
from llmpool.models import LLMConfig
from llmpool.policy import FallbackPolicy, Outcome, describe_error

__all__ = ["Candidate", "FallbackChatModel", "FallbackPolicy", "ensure_buildable"]

_DEFAULT_POLICY = FallbackPolicy()


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

    @property
    def key(self) -> str:
        """The circuit breaker key: the row's id."""
        return self.config.id

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


def _callbacks_active(config: RunnableConfig | None) -> bool:
    # The fast path skips LangChain's callback machinery entirely when nobody listens.
    if config and config.get("callbacks"):
        return True
    return bool(_tracing_v2_is_enabled())


@dataclass
class _Attempt:
    candidate: Candidate
    runner: Runnable[Any, Any]
    number: int
    delay: float
    config: RunnableConfig | None


class _Walk:
    """The decision core of one call: which candidate next, retry or not, breaker or not."""

    def __init__(
        self,
        model: FallbackChatModel,
        config: RunnableConfig | None,
        candidates: Sequence[Candidate] | None = None,
    ) -> None:
        self.model = model
        self.policy = model.policy
        self.config = config
        self.started = time.monotonic()
        self.candidates = model._current_candidates() if candidates is None else candidates
        self.index = 0
        self.number = 0  # attempt number of the current candidate
        self.delay = 0.0
        self.failures: list[CandidateFailure] = []
        self.attempts: list[dict[str, Any]] = []
        self.tried_any = False
        self.probe_forced = False
        self.run_manager: Any = None

    # -- choosing ------------------------------------------------------------------------------

    def _skip(self, candidate: Candidate, reason: str, error: BaseException | None) -> None:
        c = candidate.config
        self.failures.append(CandidateFailure(c.id, c.name, c.provider, reason, error))
        self.attempts.append(
            {"llm_id": c.id, "name": c.name, "outcome": "skipped", "reason": reason}
        )

    def next_attempt(self) -> _Attempt | None:
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
            admission = self.model.breakers.admit(candidate.key)
            if admission is Admission.OPEN:
                self._skip(candidate, "skipped: cooling down after repeated failures", None)
                self.index += 1
                continue
            runner = self.model._runner(candidate)
            if isinstance(runner, BaseException):
                self._skip(candidate, f"cannot do this: {describe_error(runner)}", runner)
                self.index += 1
                continue
            return self._attempt(candidate, runner)
        return self._forced_probe()

    def resume(self, first: Candidate) -> _Attempt:
        """Account for a first attempt already made on ``first`` by the fast path."""
        self.number = 1
        self.tried_any = True
        return _Attempt(first, first.model, 1, 0.0, self.config)  # type: ignore[arg-type]

    def _forced_probe(self) -> _Attempt | None:
        # Every buildable candidate was cooling down: probe the one that reopens first
        # rather than fail without trying.
        if self.tried_any or self.probe_forced:
            return None
        self.probe_forced = True
        cooling = [
            c
            for c in self.candidates
            if c.model is not None and not isinstance(self.model._runner(c), BaseException)
        ]
        if not cooling:
            return None
        candidate = min(cooling, key=lambda c: self.model.breakers.reopens_at(c.key))
        self.model.breakers.force_probe(candidate.key)
        self.index = self.candidates.index(candidate)
        self.failures = [f for f in self.failures if f.llm_id != candidate.key]
        return self._attempt(candidate)

    def _attempt(self, candidate: Candidate, runner: Any = None) -> _Attempt:
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
        return _Attempt(candidate, runner, self.number, delay, config)

    def _past_deadline(self, extra: float = 0.0) -> bool:
        deadline = self.policy.deadline
        return deadline is not None and time.monotonic() - self.started + extra >= deadline

    # -- outcomes ------------------------------------------------------------------------------

    def succeeded(self, attempt: _Attempt) -> dict[str, Any]:
        """Record a success; return the ``llmpool`` metadata for the response."""
        c = attempt.candidate.config
        self.model.breakers.success(attempt.candidate.key)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "ok"})
        return {
            "llm_id": c.id,
            "name": c.name,
            "provider": c.provider,
            "model_name": c.model_name,
            "attempts": self.attempts,
        }

    def failed(self, attempt: _Attempt, error: Exception) -> None:
        """Record a failure and decide: retry, next candidate, or re-raise ``error``."""
        outcome = self.policy.classify(error)
        if outcome is Outcome.PROPAGATE:
            raise error
        c = attempt.candidate.config
        reason = describe_error(error)
        self.attempts.append({"llm_id": c.id, "name": c.name, "outcome": "error", "error": reason})
        if outcome is not Outcome.FALLBACK_KEEP_BREAKER:
            self.model.breakers.failure(
                attempt.candidate.key,
                threshold=self.policy.failure_threshold,
                cooldown=self.policy.cooldown_for,
            )
        if outcome is Outcome.RETRY and attempt.number < self.policy.attempts:
            delay = self.policy.wait(attempt.number, error)
            if not self._past_deadline(delay) and (
                self.model.breakers.admit(attempt.candidate.key) is not Admission.OPEN
            ):
                self.delay = delay
                return
        self.failures.append(CandidateFailure(c.id, c.name, c.provider, reason, error))
        self.index += 1
        self.number = 0

    def failed_midstream(self, attempt: _Attempt, error: Exception, text: str) -> MidStreamError:
        """Record a stream that broke after emitting chunks; return the error to raise."""
        if self.policy.classify(error) is Outcome.PROPAGATE:
            raise error
        c = attempt.candidate.config
        self.model.breakers.failure(
            attempt.candidate.key,
            threshold=self.policy.failure_threshold,
            cooldown=self.policy.cooldown_for,
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
        """Return the last original exception, to chain from."""
        for failure in reversed(self.failures):
            if failure.error is not None:
                return failure.error
        return None

    # -- callbacks -----------------------------------------------------------------------------

    def start_run(self, inputs: Any) -> None:
        """Open a chain run for this call when callbacks or tracing are active."""
        if not _callbacks_active(self.config):
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
        if not _callbacks_active(self.config):
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


def _answered(candidate: Candidate) -> dict[str, Any]:
    c = candidate.config
    return {
        "llm_id": c.id,
        "name": c.name,
        "provider": c.provider,
        "model_name": c.model_name,
        "attempts": [{"llm_id": c.id, "name": c.name, "outcome": "ok"}],
    }


def _tag(result: Any, metadata: dict[str, Any]) -> Any:
    if isinstance(result, BaseMessage):
        result.response_metadata["llmpool"] = metadata
    return result


def _text(chunk: Any) -> str:
    content = getattr(chunk, "content", chunk)
    return content if isinstance(content, str) else str(content)


class FallbackChatModel(BaseChatModel):
    """A chat model that tries its candidates in order until one answers.

    Args:
        candidates: Candidates in priority order (a static chain).
        source: Called at every call for the current candidates (a live chain, e.g. the pool's
            snapshot); used instead of ``candidates`` when given.
        fallbacks: Models supplied in code, tried after the database's candidates.
        policy: Retries, deadline and circuit breaker settings.
        breakers: Shared breaker state (every runnable of one pool shares one board).
        scope: The scope, for messages.

    Example:
        >>> from llmpool.providers.fake import FakeChatModel
        >>> row = LLMConfig(id="1", name="Fake", provider="fake", model_name="echo")
        >>> down = LLMConfig(id="0", name="Down", provider="fake", model_name="echo")
        >>> llm = FallbackChatModel(candidates=[
        ...     Candidate(down, FakeChatModel(error="connection refused")),
        ...     Candidate(row, FakeChatModel(responses=["hi"]))])
        >>> answer = llm.invoke("hello")
        >>> answer.content, answer.response_metadata["llmpool"]["name"]
        ('hi', 'Fake')
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    candidates: tuple[Candidate, ...] = ()
    source: Callable[[], Sequence[Candidate]] | None = None
    fallbacks: tuple[BaseChatModel, ...] = ()
    policy: FallbackPolicy = _DEFAULT_POLICY
    breakers: BreakerBoard = None  # type: ignore[assignment]
    scope: str | None = None
    candidate_transform: Callable[[BaseChatModel], Runnable[Any, Any]] | None = None

    _code_candidates: tuple[Candidate, ...] = PrivateAttr(default=())
    _runners: dict[int, Any] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Fill defaults that need an instance: the breaker board, the code candidates."""
        if self.breakers is None:
            object.__setattr__(self, "breakers", BreakerBoard())
        self._code_candidates = tuple(Candidate.from_model(m) for m in self.fallbacks)

    @property
    def _llm_type(self) -> str:
        return "llmpool-fallback"

    def _current_candidates(self) -> Sequence[Candidate]:
        base = self.source() if self.source is not None else self.candidates
        return (*base, *self._code_candidates) if self._code_candidates else base

    def _runner(self, candidate: Candidate) -> Any:
        model = candidate.model
        if self.candidate_transform is None:
            return model
        key = id(model)
        runner = self._runners.get(key)
        if runner is None:
            try:
                runner = self.candidate_transform(model)  # type: ignore[arg-type]
            except Exception as error:  # this candidate cannot do it; the others may
                runner = error
            # keep the model alive with its runner so the id() key cannot be reused
            self._runners[key] = runner
            self._runners[-key - 1] = model
        return runner

    # -- the four shells -----------------------------------------------------------------------

    def _quick(self, config: RunnableConfig | None) -> tuple[Sequence[Candidate], Candidate] | None:
        """The fast path's precondition: the first candidate is built and healthy, nobody
        listens to callbacks, no transform; then the call costs one candidate call."""
        if self.candidate_transform is not None or _callbacks_active(config):
            return None
        candidates = self._current_candidates()
        if not candidates:
            return None
        first = candidates[0]
        if first.model is None or self.breakers.store.get(first.key) is not None:
            return None
        return candidates, first

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Invoke the first candidate that answers (see the class docstring)."""
        quick = self._quick(config)
        if quick is not None:
            candidates, first = quick
            try:
                result = first.model.invoke(input, config, **kwargs)  # type: ignore[union-attr]
            except Exception as error:
                walk = _Walk(self, config, candidates)
                walk.failed(walk.resume(first), error)
            else:
                return _tag(result, _answered(first))
        else:
            walk = _Walk(self, config)
            walk.start_run(input)
        try:
            while (attempt := walk.next_attempt()) is not None:
                if attempt.delay:
                    time.sleep(attempt.delay)
                try:
                    result = attempt.runner.invoke(input, attempt.config, **kwargs)
                except Exception as error:
                    walk.failed(attempt, error)
                    continue
                result = _tag(result, walk.succeeded(attempt))
                walk.end_run(result)
                return result
            raise walk.error() from walk.last_error()
        except BaseException as error:
            walk.end_run(error=error)
            raise

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        quick = self._quick(config)
        if quick is not None:
            candidates, first = quick
            try:
                result = await first.model.ainvoke(input, config, **kwargs)  # type: ignore[union-attr]
            except Exception as error:
                walk = _Walk(self, config, candidates)
                walk.failed(walk.resume(first), error)
            else:
                return _tag(result, _answered(first))
        else:
            walk = _Walk(self, config)
            await walk.astart_run(input)
        try:
            while (attempt := walk.next_attempt()) is not None:
                if attempt.delay:
                    await asyncio.sleep(attempt.delay)
                try:
                    result = await attempt.runner.ainvoke(input, attempt.config, **kwargs)
                except Exception as error:
                    walk.failed(attempt, error)
                    continue
                result = _tag(result, walk.succeeded(attempt))
                await _maybe_await(walk.end_run(result))
                return result
            raise walk.error() from walk.last_error()
        except BaseException as error:
            await _maybe_await(walk.end_run(error=error))
            raise

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream from the first candidate that starts answering.

        An error before the first chunk falls back; an error after it raises `MidStreamError`
        with the partial text (never a silent switch, never duplicated text).
        """
        walk = _Walk(self, config)
        walk.start_run(input)
        try:
            while (attempt := walk.next_attempt()) is not None:
                if attempt.delay:
                    time.sleep(attempt.delay)
                parts: list[str] = []
                try:
                    for chunk in attempt.runner.stream(input, attempt.config, **kwargs):
                        if not parts:
                            metadata = walk.succeeded(attempt)
                            chunk = _tag(chunk, metadata)
                        parts.append(_text(chunk))
                        yield chunk
                except Exception as error:
                    if parts:
                        raise walk.failed_midstream(attempt, error, "".join(parts)) from error
                    walk.failed(attempt, error)
                    continue
                if not parts:  # an empty stream is a valid answer
                    walk.succeeded(attempt)
                walk.end_run("".join(parts))
                return
            raise walk.error() from walk.last_error()
        except BaseException as error:
            walk.end_run(error=error)
            raise

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `stream`."""
        walk = _Walk(self, config)
        await walk.astart_run(input)
        try:
            while (attempt := walk.next_attempt()) is not None:
                if attempt.delay:
                    await asyncio.sleep(attempt.delay)
                parts: list[str] = []
                try:
                    async for chunk in attempt.runner.astream(input, attempt.config, **kwargs):
                        if not parts:
                            chunk = _tag(chunk, walk.succeeded(attempt))
                        parts.append(_text(chunk))
                        yield chunk
                except Exception as error:
                    if parts:
                        raise walk.failed_midstream(attempt, error, "".join(parts)) from error
                    walk.failed(attempt, error)
                    continue
                if not parts:
                    walk.succeeded(attempt)
                await _maybe_await(walk.end_run("".join(parts)))
                return
            raise walk.error() from walk.last_error()
        except BaseException as error:
            await _maybe_await(walk.end_run(error=error))
            raise

    # -- the BaseChatModel contract, for code that calls generate() ---------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        # generate() already opened an LLM run; the attempts report to the same handlers.
        config: RunnableConfig = {"callbacks": run_manager.handlers} if run_manager else {}
        result = self.invoke(messages, config, stop=stop, **kwargs)
        message = result if isinstance(result, BaseMessage) else AIMessage(content=str(result))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        config: RunnableConfig = {"callbacks": run_manager.handlers} if run_manager else {}
        result = await self.ainvoke(messages, config, stop=stop, **kwargs)
        message = result if isinstance(result, BaseMessage) else AIMessage(content=str(result))
        return ChatResult(generations=[ChatGeneration(message=message)])

    # -- tools and structured output apply to every candidate ---------------------------------

    def _with_transform(self, step: Callable[[BaseChatModel], Runnable[Any, Any]]) -> Any:
        previous = self.candidate_transform
        if previous is not None:
            msg = "bind_tools/with_structured_output can be applied once per fallback model"
            raise ValueError(msg)
        return FallbackChatModel(
            candidates=self.candidates,
            source=self.source,
            fallbacks=self.fallbacks,
            policy=self.policy,
            breakers=self.breakers,
            scope=self.scope,
            candidate_transform=step,
        )

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Bind tools to every candidate; one that cannot is skipped and recorded.

        Returns:
            A fallback model whose candidates answer with tool calls.
        """
        return self._with_transform(lambda model: model.bind_tools(tools, **kwargs))

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        """Ask every candidate for structured output; one that cannot is skipped and recorded.

        Returns:
            A fallback runnable returning the parsed structure.
        """
        return self._with_transform(lambda model: model.with_structured_output(schema, **kwargs))


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value
