"""The fallback chat model: candidates in priority order, the first that answers wins.

A real `BaseChatModel` (agent builders reject ``RunnableWithFallbacks``), one chat-model run to
callbacks whichever candidate answered; where LangChain asks which model this is (``model_name``,
``profile``, token counts) it is the candidate that would answer first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import BaseModel, ConfigDict

import llmpool.contracts as contracts
from llmpool.chain.affinity import Affinity, Session
from llmpool.chain.builder import ChainSource, ScopeChain
from llmpool.chain.context import handed_on, run_context
from llmpool.chain.routing import Routing
from llmpool.contracts import AdmissionCheck, Candidate
from llmpool.errors import InvalidConfigError, InvalidOptionError, LLMPoolError
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.calls import ChatCall
from llmpool.fallback.forwarding import FORWARDED, rebuild
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.structured import decompose, structured
from llmpool.fallback.walk import Plan, Walk
from llmpool.providers.fit import Prompt
from llmpool.providers.timeouts import check_seconds
from llmpool.tags import Tags

__all__ = ["Candidate", "FallbackChatModel", "FallbackPolicy", "code_candidate"]

if TYPE_CHECKING:
    from langchain_core.language_models.base import LangSmithParams

_DEFAULT_POLICY = FallbackPolicy()
_Schema = TypeVar("_Schema", bound=BaseModel)
_MAX_CALLS = 256  # calls cached per fallback model (a live chain replaces its clients)


#: A call's session (``None``: no key, or no affinity) and tags, from its run metadata.
_Context = tuple["Session | None", "Tags | None"]


def code_candidate(model: BaseChatModel, *, name: str | None = None) -> Candidate:
    """Wrap a model supplied in code (no row), e.g. an environment-configured Ollama.

    Example:
        >>> from llmpool.providers.fake import FakeChatModel
        >>> code_candidate(FakeChatModel(model="local")).config.name
        'code:FakeChatModel(local)'
    """
    from llmpool.models import LLMConfig

    label = getattr(model, "model", None) or getattr(model, "model_name", None)
    name = name or f"code:{type(model).__name__}" + (f"({label})" if label else "")
    config = LLMConfig(
        id=name, name=name, provider="code", model_name=str(label or type(model).__name__)
    )
    return Candidate(config, model)


class FallbackChatModel(BaseChatModel):
    """A chat model that tries its candidates in order until one answers.

    Args:
        candidates: Candidates in priority order (a static chain).
        chain: Where the chain in force is read at every call, instead of ``candidates``.
        fallbacks: Models supplied in code, tried after the chain's candidates.
        policy: Retries, deadline and circuit breaker settings.
        breakers: Shared breaker state (every model of one pool shares one board).
        scope: The scope; alone, the scope's live chain on the default pool.
        routing: Orders a static chain's candidates for each call (``None``: as given).
        admissions: Checks asked before each attempt of a static chain (rate limits, budgets).
        affinity: Where a call's ``session_key`` (run metadata) finds the row that answered
            the session's last call, tried first (`llmpool.chain.affinity`).

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
    chain: ChainSource | None = None
    fallbacks: tuple[BaseChatModel, ...] = ()
    policy: FallbackPolicy = _DEFAULT_POLICY
    breakers: BreakerBoard = None  # type: ignore[assignment]
    scope: str | None = None
    routing: Routing | None = None
    admissions: tuple[AdmissionCheck, ...] = ()
    candidate_transform: Callable[[BaseChatModel], Runnable[Any, Any]] | None = None
    affinity: Affinity | None = None

    # LangChain's standard parameters, forwarded to every candidate (`llmpool.fallback.forwarding`)
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    max_retries: int | None = None
    stop: list[str] | None = None
    streaming: bool | None = None

    # State read at every call, in __dict__: a pydantic private attribute is slow to read.
    if TYPE_CHECKING:
        _static: ScopeChain | None
        _code: tuple[Candidate, ...]
        _calls: dict[int, tuple[BaseChatModel, Any]]
        _overrides: dict[str, Any]
        _first_seen: _First | None
        _plan: Plan | None

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
        """Fill the chain, the breaker board and the code candidates."""
        given = self.model_fields_set
        if self.scope is not None and not given & {"candidates", "chain", "fallbacks"}:
            serve = contracts.default_scope_model
            if serve is None:
                msg = "import llmpool to serve a scope's chain on the default pool"
                raise LLMPoolError(msg)
            live = serve(self.scope)
            for name in ("chain", "breakers", "policy", "affinity"):
                object.__setattr__(self, name, getattr(live, name))
        if self.breakers is None:
            object.__setattr__(self, "breakers", BreakerBoard())
        static = None
        if self.chain is None:
            static = ScopeChain(
                self.scope, "chat", 0, tuple(self.candidates), self.routing, self.admissions
            )
        self.__dict__.update(
            _static=static,
            _code=tuple(code_candidate(model) for model in self.fallbacks),
            _calls={},
            _overrides={k: getattr(self, k) for k in FORWARDED if k in given},
            _first_seen=None,  # `_seen_first`'s, for the chain last seen
            _plan=None,  # the walks' `Plan`, for the chain last walked
        )
        super().model_post_init(context)

    def _current(self) -> ScopeChain:
        static = self._static
        return static if static is not None else self.chain.current()  # type: ignore[union-attr]

    @classmethod
    def is_lc_serializable(cls) -> bool:
        """A live chain serializes as a reference (scope and forwarded parameters)."""
        return True

    @classmethod
    def get_lc_namespace(cls) -> list[str]:
        """Where `load` finds the class: ``llmpool.fallback.model``."""
        return ["llmpool", "fallback", "model"]

    def to_json(self) -> Any:
        """The scope and forwarded parameters only, never a row, credential or endpoint."""
        if self.scope is None or self.chain is None or self.fallbacks or self.candidate_transform:
            return self.to_json_not_implemented()
        kwargs: dict[str, Any] = {"scope": self.scope, **self._overrides}
        return {
            "lc": 1,
            "type": "constructor",
            "id": [*self.get_lc_namespace(), type(self).__name__],
            "kwargs": kwargs,
        }

    def _seen_first(self) -> _First:
        # Asked at every call: holds for the chain last seen while its breaker stays closed (a
        # static chain is read without a call).
        chain = self._static or self.chain.current()  # type: ignore[union-attr]
        seen = self._first_seen
        if (
            seen is not None
            and seen.chain is chain
            and (
                seen.candidate is None
                or not self.breakers.seen_open
                or not self.breakers.seems_open(seen.candidate.key)
            )
        ):
            return seen
        breakers = self.breakers
        seen = _First(chain)
        for candidate in (*chain.candidates, *self._code):
            if candidate.model is not None and not breakers.seems_open(candidate.key):
                call = self._call(candidate)
                seen.candidate = candidate
                seen.model = candidate.model if isinstance(call, BaseException) else call.model
                break
        object.__setattr__(self, "_first_seen", seen)
        return seen

    @property
    def _llm_type(self) -> str:
        model = self._seen_first().model
        return "llmpool-fallback" if model is None else model._llm_type

    @property
    def model_name(self) -> str | None:
        """The model id of the candidate that would answer first (``None`` if none can)."""
        candidate = self._seen_first().candidate
        return None if candidate is None else candidate.config.model_name

    def _resolve_model_profile(self) -> Any:
        model = self._seen_first().model
        return None if model is None else model.profile

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        seen = self._seen_first()
        model = seen.model
        if model is None:
            params = super()._get_ls_params(stop=stop, **kwargs)
            params["ls_provider"] = "llmpool"
            params.setdefault("ls_model_name", str(kwargs.get("model") or "none"))
            return params
        if stop is not None or kwargs:
            return model._get_ls_params(stop=stop, **kwargs)
        if seen.ls_params is None:  # a built model's settings do not change: read once
            seen.ls_params = dict(model._get_ls_params())
        return seen.ls_params.copy()  # type: ignore[return-value]

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids by the tokenizer of the candidate that would answer first."""
        model = self._seen_first().model
        return super().get_token_ids(text) if model is None else model.get_token_ids(text)

    def get_num_tokens(self, text: str) -> int:
        """Tokens counted by the candidate that would answer first."""
        model = self._seen_first().model
        return super().get_num_tokens(text) if model is None else model.get_num_tokens(text)

    def get_num_tokens_from_messages(
        self, messages: list[BaseMessage], tools: Sequence[Any] | None = None
    ) -> int:
        """Tokens counted by the candidate that would answer first."""
        model = self._seen_first().model
        if model is None:
            return super().get_num_tokens_from_messages(messages, tools)
        return model.get_num_tokens_from_messages(messages, tools)

    def _call(self, candidate: Candidate) -> Any:
        # What the walk calls for a candidate, or why it cannot (made once per client).
        model = candidate.model
        entry = self._calls.get(id(model))
        if entry is None:
            try:
                configured = rebuild(model, self._overrides) if self._overrides else model
                step = self.candidate_transform
                call: Any = ChatCall(configured) if step is None else decompose(step(configured))
            except Exception as error:  # this candidate cannot do it; the others may
                call = error
            fit = candidate.fit
            if isinstance(call, ChatCall) and fit is not None and fit.streams is False:
                call.streams = call.astreams = False  # a stream gets its answer whole
            if len(self._calls) >= _MAX_CALLS:
                for stale in list(self._calls)[: _MAX_CALLS // 2]:
                    self._calls.pop(stale, None)
            # the entry keeps the model alive, so its id() cannot be reused while cached
            entry = self._calls[id(model)] = (model, call)
        return entry[1]

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        """LangChain's `stream`, handing the run's ``session_key`` and ``llmpool_tags`` on (its
        `_stream` is given no run manager to read the run's metadata from)."""
        return super().stream(input, config, stop=stop, **handed_on(config, kwargs))

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        """Async twin of `stream`."""
        return super().astream(input, config, stop=stop, **handed_on(config, kwargs))

    async def _acontext(self, run_manager: Any, kwargs: dict[str, Any]) -> _Context:
        # `run_context`, in a thread when the session's row is read from Redis.
        affinity = self.affinity
        if affinity is not None and affinity.shared is not None:
            return await asyncio.to_thread(run_context, run_manager, kwargs, affinity)
        return run_context(run_manager, kwargs, affinity)

    def _walk(
        self,
        messages: Sequence[BaseMessage] = (),
        kwargs: dict[str, Any] | None = None,
        context: _Context = (None, None),
        streaming: bool = False,
    ) -> Walk:
        chain = self._static or self.chain.current()  # type: ignore[union-attr]
        plan = self._plan
        if plan is None or plan.chain is not chain:
            if chain.problem is not None:
                raise chain.problem
            plan = Plan(chain, self.policy, self.breakers, self._call, self._code)
            object.__setattr__(self, "_plan", plan)
        return Walk(
            plan,
            streaming=streaming,
            options=_options(kwargs) if kwargs else None,
            prompt=Prompt(messages, kwargs or {}) if chain.fitted else None,
            session=context[0],
            tags=context[1],
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        walk = self._walk(messages, kwargs, run_context(run_manager, kwargs, self.affinity))
        for attempt in walk:
            with attempt:
                return _tagged(walk, attempt, attempt.call.generate(messages, stop, kwargs))
        raise walk.error()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        walk = self._walk(messages, kwargs, await self._acontext(run_manager, kwargs))
        async for attempt in walk:
            async with attempt:
                result = await attempt.call.agenerate(messages, stop, kwargs)
                return _tagged(walk, attempt, result)
        raise walk.error()

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # An error after the first content is a `MidStreamError`, never a silent switch.
        walk = self._walk(
            messages, kwargs, run_context(run_manager, kwargs, self.affinity), streaming=True
        )
        for attempt in walk:
            with attempt:
                gate = attempt.gate
                assert gate is not None  # a streaming walk gates every attempt
                for chunk in attempt.call.stream(messages, stop, kwargs):
                    yield from gate.push(chunk)
                yield from gate.finish()
                return
        raise walk.error()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        walk = self._walk(
            messages, kwargs, await self._acontext(run_manager, kwargs), streaming=True
        )
        async for attempt in walk:
            async with attempt:
                gate = attempt.gate
                assert gate is not None  # a streaming walk gates every attempt
                async for chunk in attempt.call.astream(messages, stop, kwargs):
                    for out in gate.push(chunk):
                        yield out
                for out in gate.finish():
                    yield out
                return
        raise walk.error()

    def _derive(self, step: Callable[[BaseChatModel], Runnable[Any, Any]]) -> FallbackChatModel:
        """This model with ``step`` applied to every candidate (all refuse: the first error)."""
        values = {
            name: getattr(self, name)
            for name in self.model_fields_set
            if name not in {"candidate_transform", "profile"}
        }
        derived = FallbackChatModel(**values, candidate_transform=step)
        refusal: BaseException | None = None
        try:
            candidates = (*derived._current().candidates, *derived._code)
        except LLMPoolError:  # the chain cannot be read now: each call will say why
            return derived
        for call in (derived._call(c) for c in candidates if c.model is not None):
            if not isinstance(call, BaseException):
                return derived
            refusal = refusal or call
        if refusal is not None:
            raise refusal
        return derived

    def _parser_of(self, llm_id: str) -> Runnable[Any, Any] | None:
        """The parser of the candidate ``llm_id``'s structured answer (see `AnswerParser`)."""
        for candidate in (*self._current().candidates, *self._code):
            if candidate.config.id == llm_id and candidate.model is not None:
                call = self._call(candidate)
                return None if isinstance(call, BaseException) else call.parser
        return None

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | Any],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to every candidate its own way; one that cannot is skipped."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        tools = list(tools)
        return self._derive(lambda model: model.bind_tools(tools, **kwargs)).bind()

    @overload
    def with_structured_output(
        self, schema: type[_Schema], *, include_raw: Literal[False] = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, _Schema]: ...

    @overload
    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: Literal[True], **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any]]: ...

    @overload
    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]: ...

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        """Ask every candidate for structured output its own way; one that cannot is skipped."""
        derived = self._derive(
            lambda model: model.with_structured_output(schema, include_raw=False, **kwargs)
        )
        return structured(derived, schema, include_raw, kwargs)


@dataclass(slots=True, eq=False)
class _First:
    """The candidate of a chain that would answer first, its model, and its LangSmith params."""

    chain: ScopeChain
    candidate: Candidate | None = None
    model: BaseChatModel | None = None
    ls_params: dict[str, Any] | None = None


#: What a call may ask of llmpool itself, as keywords (``llm.stream(text, ttft_timeout=5)``,
#: ``llm.invoke(text, accept=fn)``, or ``llm.bind(...)``): taken out of the keywords, never
#: passed to a candidate.
CALL_OPTIONS = frozenset({"ttft_timeout", "stall_timeout", "accept"})


def _options(kwargs: dict[str, Any]) -> dict[str, Any] | None:
    # The call's own settings, taken out of its keywords (checked: a bad one is the caller's).
    if CALL_OPTIONS.isdisjoint(kwargs):
        return None
    options = {key: kwargs.pop(key) for key in CALL_OPTIONS & kwargs.keys()}
    for key in ("ttft_timeout", "stall_timeout"):
        value = options.get(key)
        problem = None if value is None else check_seconds(value)
        if problem is not None:
            raise InvalidOptionError(f"the call's {key} {problem}", option=key)
    accept = options.get("accept")
    if accept is not None and not callable(accept):
        msg = f"the call's accept must be a function of the answer, not {type(accept).__name__}"
        raise InvalidOptionError(msg, option="accept")
    return options


def _tagged(walk: Walk, attempt: Any, result: ChatResult) -> ChatResult:
    # The walk's verdict on an answer, its bookkeeping, and its metadata on the answer's message.
    generation = result.generations[0]
    message = generation.message
    if walk.judging:
        walk.judge(attempt, message, generation.generation_info)
    metadata = walk.answer(attempt, getattr(message, "usage_metadata", None), result)
    message.response_metadata["llmpool"] = metadata
    return result


# Every field, and its alias: anything else given to the constructor is refused.
_ACCEPTED = frozenset(
    {*FallbackChatModel.model_fields}
    | {info.alias for info in FallbackChatModel.model_fields.values() if info.alias}
)
