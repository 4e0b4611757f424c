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
  binding again replaces the tools, and tools every candidate refuses are refused when bound;
- behaves as the chat model that would answer first where LangChain asks which model this is
  (``model_name``, ``_llm_type``, ``_get_ls_params``, ``profile``, token counts), and forwards
  LangChain's standard constructor parameters to every candidate (`llmpool.fallback.forwarding`);
- retries transient errors per candidate (bounded attempts and a total deadline that also
  cuts short an attempt whose client would wait past it), and skips a candidate whose circuit
  breaker is open with no network call;
- says which candidate answered: ``response_metadata["llmpool"]``.

When callbacks or tracing are active, the call is one chain run and each attempt a child run
named after its row; when they are not, no callback machinery runs at all.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import (
    ChatGeneration,
    ChatGenerationChunk,
    ChatResult,
    LLMResult,
    RunInfo,
)
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict, PrivateAttr

from llmpool.errors import InvalidConfigError, LLMPoolError
from llmpool.fallback.admission import AdmissionCheck
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.forwarding import FORWARDED, CandidateStep, child_of
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.routing import Routing
from llmpool.fallback.walk import Candidate, Walk, ensure_buildable

__all__ = ["Candidate", "FallbackChatModel", "FallbackPolicy", "ensure_buildable"]

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks
    from langchain_core.language_models.base import LangSmithParams

_DEFAULT_POLICY = FallbackPolicy()
_Schema = TypeVar("_Schema", bound=BaseModel)
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
        admissions: Checks asked before each attempt whether its candidate may be called now
            (rate limits, budgets) and told how it went (`llmpool.fallback.admission`), or a
            callable returning them at every call (the pool's, which follow the table).

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
    admissions: tuple[AdmissionCheck, ...] | Callable[[], Sequence[AdmissionCheck]] = ()

    # LangChain's standard parameters, forwarded to every candidate (`llmpool.fallback.forwarding`)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    stop: list[str] | None = None
    streaming: bool | None = None

    _code_candidates: tuple[Candidate, ...] = PrivateAttr(default=())
    _runners: dict[int, tuple[BaseChatModel, Any]] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - _ACCEPTED)
        if unknown:
            msg = (
                f"FallbackChatModel got an unknown argument {unknown[0]!r}; it takes its "
                f"candidates' settings from their rows, and forwards only LangChain's standard "
                f"parameters ({', '.join(FORWARDED)}) to every candidate"
            )
            raise InvalidConfigError(msg, field=unknown[0])
        super().__init__(**values)

    def model_post_init(self, context: Any, /) -> None:
        """Fill defaults that need an instance: the breaker board, the code candidates.

        A model given only a ``scope`` (no ``candidates``, ``source`` or ``fallbacks``) is that
        scope's live chain on the default pool (`llmpool.get_pool`): what `load` makes of a
        serialized `get_llm_with_fallback` model.
        """
        given = self.model_fields_set
        if self.scope is not None and not given & {"candidates", "source", "fallbacks"}:
            from llmpool.api import get_pool

            live = get_pool().get_llm_with_fallback(self.scope)
            for name in ("source", "routing", "breakers", "policy", "admissions"):
                object.__setattr__(self, name, getattr(live, name))
        if self.breakers is None:
            object.__setattr__(self, "breakers", BreakerBoard())
        self._code_candidates = tuple(Candidate.from_model(m) for m in self.fallbacks)
        overrides = {k: getattr(self, k) for k in FORWARDED if k in self.model_fields_set}
        if overrides:  # every candidate is rebuilt with them, then given the step
            step = self.candidate_transform
            if isinstance(step, CandidateStep):
                step = step.step
            object.__setattr__(self, "candidate_transform", CandidateStep(overrides, step))

    # -- serialization: a reference to the scope's chain, never rows or secrets --------------

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """A live chain serializes as a reference (scope and forwarded parameters)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """Where `load` finds the class: ``llmpool.fallback.model``."""
        return ["llmpool", "fallback", "model"]

    def to_json(self) -> Any:
        """The model as LangChain's serialized form: its scope and forwarded parameters.

        Loading it (``langchain_core.load.load(..., valid_namespaces=["llmpool"])``) gives the
        scope's live chain on the default pool (`llmpool.get_pool`, configured by
        ``LLMPOOL_DATABASE_URL`` / ``DATABASE_URL``), as a serialized ``ChatOpenAI`` reads its
        key from the environment. No row, credential or endpoint is written. A model that
        cannot be described that way (candidates or fallback models given in code, tools or a
        structured output bound) serializes as "not implemented", as LangChain does for any
        object it cannot rebuild.
        """
        step = self.candidate_transform
        bound = step is not None and not (isinstance(step, CandidateStep) and step.step is None)
        if self.scope is None or self.source is None or self.fallbacks or bound:
            return self.to_json_not_implemented()
        kwargs: dict[str, Any] = {"scope": self.scope}
        kwargs.update({k: getattr(self, k) for k in FORWARDED if k in self.model_fields_set})
        return {
            "lc": 1,
            "type": "constructor",
            "id": [*self.get_lc_namespace(), type(self).__name__],
            "kwargs": kwargs,
        }

    # -- which model is this: the candidate that would answer first -------------------------

    def _first(self) -> Candidate | None:
        breakers = self.breakers
        for candidate in self._current_candidates():
            if candidate.model is not None and not breakers.is_open(candidate.key):
                return candidate
        return None

    def _first_model(self) -> BaseChatModel | None:
        """The model of the candidate that would answer first, with the forwarded parameters."""
        candidate = self._first()
        if candidate is None or candidate.model is None:
            return None
        step = self.candidate_transform
        return (
            step.configure(candidate.model) if isinstance(step, CandidateStep) else candidate.model
        )

    @property
    def _llm_type(self) -> str:
        model = self._first_model()
        return "llmpool-fallback" if model is None else model._llm_type

    @property
    def model_name(self) -> str | None:
        """The model id of the candidate that would answer first (``None`` if none can)."""
        candidate = self._first()
        return None if candidate is None else candidate.config.model_name

    def _resolve_model_profile(self) -> Any:
        # The profile of the candidate that would answer first when this model was made.
        model = self._first_model()
        return None if model is None else model.profile

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = self._first_model()
        if model is None:
            params = super()._get_ls_params(stop=stop, **kwargs)
            params["ls_provider"] = "llmpool"
            params.setdefault("ls_model_name", str(kwargs.get("model") or "none"))
            return params
        return model._get_ls_params(stop=stop, **kwargs)

    def get_token_ids(self, text: str) -> list[int]:
        """The token ids of ``text`` by the tokenizer of the candidate that would answer first."""
        model = self._first_model()
        return super().get_token_ids(text) if model is None else model.get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Tokens in ``text``, counted by the candidate that would answer first."""
        model = self._first_model()
        return super().get_num_tokens(text) if model is None else model.get_num_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens in ``messages`` (and ``tools``), counted by the candidate that would answer
        first, with its provider's tokenizer."""
        model = self._first_model()
        if model is None:
            return super().get_num_tokens_from_messages(messages, tools)
        return model.get_num_tokens_from_messages(messages, tools)

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
        checks = self.admissions
        admissions = checks if isinstance(checks, tuple) else checks()
        # By position (keywords cost measurably on the fast path), in the order of Walk's
        # arguments: candidates, policy, breakers, runner, routing, then, scope, name, config,
        # inputs, streaming, started, admissions. `fallbacks` is read first: a pydantic private
        # attribute is slow.
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
            None,
            admissions,
        )

    def _quick(self, config: RunnableConfig | None) -> Candidate | None:
        """The candidate the fast path would call with no bookkeeping, or ``None``."""
        return self._walk(config, None).first_if_quick()

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """Invoke the first candidate that answers (see the class docstring)."""
        walk = self._walk(config, input)
        for attempt in walk:
            with attempt:
                return walk.answer(  # type: ignore[no-any-return]
                    attempt, attempt.runner.invoke(input, attempt.config, **kwargs)
                )
        raise walk.error()

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AIMessage:
        """Async twin of `invoke`."""
        walk = self._walk(config, input)
        async for attempt in walk:
            async with attempt:
                result = await attempt.runner.ainvoke(input, attempt.config, **kwargs)
                return walk.answer(attempt, result)  # type: ignore[no-any-return]
        raise walk.error()

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[AIMessageChunk]:
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
        self, input: LanguageModelInput, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
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

    # -- the BaseChatModel contract, for code that calls generate() or streams events ---------

    def generate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Answer each prompt as `invoke` does: one run per prompt, the attempts its children.

        The answering candidate's own LLM run reports the answer and its token usage; an LLM
        run of this model around it would report the same usage a second time.
        """
        generations: list[list[Any]] = []
        runs: list[RunInfo] = []
        for i, prompt in enumerate(messages):
            config, run = _call_config(callbacks, tags, metadata, run_name, run_id, i)
            message = self.invoke(prompt, config, stop=stop, **kwargs)
            generations.append([ChatGeneration(message=message)])
            if run is not None:
                runs.append(RunInfo(run_id=run))
        return LLMResult(generations=generations, run=runs or None)

    async def agenerate(
        self,
        messages: list[list[BaseMessage]],
        stop: list[str] | None = None,
        callbacks: Callbacks = None,
        *,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        run_name: str | None = None,
        run_id: uuid.UUID | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Async twin of `generate`."""
        import asyncio

        calls = [
            _call_config(callbacks, tags, metadata, run_name, run_id, i)
            for i in range(len(messages))
        ]
        answers = await asyncio.gather(
            *(
                self.ainvoke(prompt, config, stop=stop, **kwargs)
                for prompt, (config, _run) in zip(messages, calls, strict=True)
            )
        )
        runs = [RunInfo(run_id=run) for _config, run in calls if run is not None]
        return LLMResult(
            generations=[[ChatGeneration(message=answer)] for answer in answers],
            run=runs or None,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        # A caller that opened an LLM run for this model: the attempts are its children.
        config: RunnableConfig = {"callbacks": child_of(run_manager)} if run_manager else {}
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
        config: RunnableConfig = {"callbacks": child_of(run_manager)} if run_manager else {}
        result = await self.ainvoke(messages, config, stop=stop, **kwargs)
        message = result if isinstance(result, BaseMessage) else AIMessage(content=str(result))
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # What `stream_events(version="v3")` reads: `stream`'s chunks, under the caller's run.
        config: RunnableConfig = {"callbacks": child_of(run_manager)} if run_manager else {}
        for chunk in self.stream(messages, config, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=_as_chunk(chunk))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        config: RunnableConfig = {"callbacks": child_of(run_manager)} if run_manager else {}
        async for chunk in self.astream(messages, config, stop=stop, **kwargs):
            yield ChatGenerationChunk(message=_as_chunk(chunk))

    # -- tools and structured output apply to every candidate ---------------------------------

    def _derive(self, step: Callable[[BaseChatModel], Runnable[Any, Any]]) -> FallbackChatModel:
        """This model with ``step`` applied to every candidate, replacing any earlier step.

        Every candidate it has now is given the step at once: when each one that can be
        built refuses it (an invalid tool, a schema no provider takes), the first one's error
        is raised here, as the provider's own model would raise it.
        """
        values = {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name not in {"candidate_transform", "profile"}
        }
        derived = FallbackChatModel(**values, candidate_transform=step)
        derived._check_step()
        return derived

    def _check_step(self) -> None:
        try:
            candidates = self._current_candidates()
        except LLMPoolError:  # the chain cannot be read now: each call will say why
            return
        refusal: BaseException | None = None
        for candidate in candidates:
            if candidate.model is None:
                continue
            runner = self._runner(candidate)
            if not isinstance(runner, BaseException):
                return
            refusal = refusal or runner
        if refusal is not None:
            raise refusal

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to every candidate; one that cannot is skipped and recorded.

        Binding again replaces the tools (and ``tool_choice``), as LangChain's chat models do.
        Tools are checked here: when every candidate refuses them, its error is raised now.

        Args:
            tools: Tools in any form LangChain's ``bind_tools`` takes.
            tool_choice: Which tool the model must call (``"any"``, a tool's name, ...),
                passed to each candidate's ``bind_tools``.
            **kwargs: Passed to each candidate's ``bind_tools`` (e.g. ``parallel_tool_calls``).

        Returns:
            A binding (as ChatOpenAI's ``bind_tools`` returns) of a fallback model whose
            candidates answer with tool calls; its ``bind_tools`` binds again.

        Raises:
            ValueError: (or the candidates' own error) every candidate refused the tools.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        tools = list(tools)
        return self._derive(lambda model: model.bind_tools(tools, **kwargs)).bind()

    @overload
    def with_structured_output(
        self,
        schema: type[_Schema],
        *,
        include_raw: Literal[False] = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, _Schema]: ...

    @overload
    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: Literal[True],
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any]]: ...

    @overload
    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]: ...

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Ask every candidate for structured output; one that cannot is skipped and recorded.

        Each candidate's own ``with_structured_output`` is used, so each provider answers in
        its native way. With ``include_raw=True`` the raw message carries
        ``response_metadata["llmpool"]`` like any answer.

        Returns:
            A fallback runnable returning the parsed structure (typed as ``schema`` when it is
            a pydantic model).

        Raises:
            ValueError: (or the candidates' own error) every candidate refused the schema.
        """
        return self._derive(
            lambda model: model.with_structured_output(schema, include_raw=include_raw, **kwargs)
        )


# Every field, and its alias: anything else given to the constructor is refused.
_ACCEPTED = frozenset(
    {*FallbackChatModel.model_fields}
    | {info.alias for info in FallbackChatModel.model_fields.values() if info.alias}
)


def _as_chunk(chunk: Any) -> AIMessageChunk:
    if isinstance(chunk, AIMessageChunk):
        return chunk
    if isinstance(chunk, BaseMessage):
        data = chunk.model_dump(exclude={"type"})
        return AIMessageChunk(**{k: v for k, v in data.items() if k in AIMessageChunk.model_fields})
    return AIMessageChunk(content=str(chunk))


def _call_config(
    callbacks: Callbacks,
    tags: list[str] | None,
    metadata: dict[str, Any] | None,
    run_name: str | None,
    run_id: uuid.UUID | None,
    index: int,
) -> tuple[RunnableConfig, uuid.UUID | None]:
    # generate()'s arguments for one prompt, as a runnable config; its run id when it has one.
    config: RunnableConfig = {}
    if callbacks is not None:
        config["callbacks"] = callbacks
    if tags:
        config["tags"] = tags
    if metadata:
        config["metadata"] = metadata
    if run_name:
        config["run_name"] = run_name
    run = (run_id if index == 0 else None) or (uuid.uuid4() if callbacks else None)
    if run is not None:
        config["run_id"] = run
    return config, run
