"""The fallback chat model: candidates in priority order, the first that answers wins.

`FallbackChatModel` is a real `BaseChatModel`, so agent builders and anything that checks for
a chat model accept it (they reject LangChain's ``RunnableWithFallbacks``). Compared with
``Runnable.with_fallbacks`` it:

- writes the candidate loop once (`llmpool.fallback.walk.Walk`, the decision core) and drives
  it from four thin shells (invoke, ainvoke, stream, astream; batch and abatch go through
  invoke and ainvoke);
- falls back only on provider errors (see `llmpool.fallback.policy`), so a `TypeError` stays a bug;
- raises one `AllLLMsFailedError` that lists every candidate and its error, in order;
- applies ``bind_tools`` / ``with_structured_output`` to every candidate explicitly, skipping
  (and recording) a candidate that cannot, instead of forwarding through ``__getattr__``;
- retries transient errors per candidate (bounded attempts and a total deadline that also
  cuts short an attempt whose client would wait past it), and skips a candidate whose circuit
  breaker is open with no network call;
- says which candidate answered: ``response_metadata["llmpool"]``.

When callbacks or tracing are active, the call is one chain run and each attempt a child run
named after its row; when they are not, no callback machinery runs at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, PrivateAttr

from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.routing import Routing
from llmpool.fallback.walk import Candidate, Walk, ensure_buildable

__all__ = ["Candidate", "FallbackChatModel", "FallbackPolicy", "ensure_buildable"]

_DEFAULT_POLICY = FallbackPolicy()
_MAX_RUNNERS = 256  # bound models cached per fallback model (bind_tools, structured output)


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
        routing: Orders the candidates for each call (e.g. `PriorityRouting`; the pool passes
            its own); ``None`` tries them in the order given. The ``fallbacks`` follow them in
            their own order.

    Example:
        >>> from llmpool.models import LLMConfig
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
    routing: Routing | None = None
    candidate_transform: Callable[[BaseChatModel], Runnable[Any, Any]] | None = None

    _code_candidates: tuple[Candidate, ...] = PrivateAttr(default=())
    _runners: dict[int, tuple[BaseChatModel, Any]] = PrivateAttr(default_factory=dict)

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
        if self.routing is not None:
            base = self.routing.order(base)
        # `fallbacks` first: a pydantic private attribute costs microseconds to read.
        return (*base, *self._code_candidates) if self.fallbacks else base

    def _runner(self, candidate: Candidate) -> Any:
        model = candidate.model
        if self.candidate_transform is None or model is None:
            return model
        key = id(model)
        entry = self._runners.get(key)
        if entry is None:
            runner: Any
            try:
                runner = self.candidate_transform(model)
            except Exception as error:  # this candidate cannot do it; the others may
                runner = error
            if len(self._runners) >= _MAX_RUNNERS:
                # A live source replaces models as rows change: forget the oldest runners.
                for stale in list(self._runners)[: _MAX_RUNNERS // 2]:
                    self._runners.pop(stale, None)
            # the entry keeps the model alive, so its id() cannot be reused while cached
            entry = self._runners[key] = (model, runner)
        return entry[1]

    # -- the four shells -----------------------------------------------------------------------

    def _walk(self, config: RunnableConfig | None, inputs: Any, streaming: bool = False) -> Walk:
        base = self.source() if self.source is not None else self.candidates
        # By position (keywords cost measurably on the fast path), in the order of Walk's
        # arguments: candidates, policy, breakers, runner, routing, then, scope, name, config,
        # inputs, streaming. `fallbacks` is read first: a pydantic private attribute is slow.
        return Walk(
            base,
            self.policy,
            self.breakers,
            None if self.candidate_transform is None else self._runner,
            self.routing,
            self._code_candidates if self.fallbacks else (),
            self.scope,
            self.get_name,
            config,
            inputs,
            streaming,
        )

    def _quick(self, config: RunnableConfig | None) -> Candidate | None:
        """The candidate the fast path would call with no bookkeeping, or ``None``."""
        return self._walk(config, None).first_if_quick()

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Invoke the first candidate that answers (see the class docstring)."""
        walk = self._walk(config, input)
        for attempt in walk:
            with attempt:
                return walk.answer(attempt, attempt.runner.invoke(input, attempt.config, **kwargs))
        raise walk.error()

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        walk = self._walk(config, input)
        async for attempt in walk:
            async with attempt:
                result = await attempt.runner.ainvoke(input, attempt.config, **kwargs)
                return walk.answer(attempt, result)
        raise walk.error()

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Stream from the first candidate that starts answering.

        An error before the first content falls back; an error after it raises
        `MidStreamError` with the partial text (never a silent switch, never duplicated text).
        Leading chunks without content (a role header, empty deltas) are held back until the
        first content arrives, so a provider's error event right after them still falls back.
        """
        walk = self._walk(config, input, streaming=True)
        for attempt in walk:
            with attempt:
                gate = attempt.gate
                assert gate is not None  # a streaming walk gates every attempt
                for chunk in attempt.runner.stream(input, attempt.config, **kwargs):
                    yield from gate.push(chunk)
                yield from gate.finish()  # an empty stream is a valid answer
                return
        raise walk.error()

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        """Async twin of `stream`."""
        walk = self._walk(config, input, streaming=True)
        async for attempt in walk:
            async with attempt:
                gate = attempt.gate
                assert gate is not None  # a streaming walk gates every attempt
                async for chunk in attempt.runner.astream(input, attempt.config, **kwargs):
                    for out in gate.push(chunk):
                        yield out
                for out in gate.finish():
                    yield out
                return
        raise walk.error()

    # -- the BaseChatModel contract, for code that calls generate() ---------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        # generate() already opened an LLM run; the attempts are its children.
        config: RunnableConfig = {"callbacks": _child_of(run_manager)} if run_manager else {}
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
        config: RunnableConfig = {"callbacks": _child_of(run_manager)} if run_manager else {}
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
            routing=self.routing,
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


def _child_of(run_manager: Any) -> Any:
    # An LLM run manager has no get_child(); build the same child manager by hand, so that
    # the attempts nest under the run generate() opened.
    from langchain_core.callbacks import (
        AsyncCallbackManager,
        AsyncCallbackManagerForLLMRun,
        CallbackManager,
    )

    cls = (
        AsyncCallbackManager
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun)
        else CallbackManager
    )
    manager = cls(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    return manager
