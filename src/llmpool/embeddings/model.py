"""The fallback embeddings: candidates of one vector space, the first that answers wins.

`FallbackEmbeddings` is a LangChain ``Embeddings``, so vector stores and retrievers accept it.
It drives the same decision core as the fallback chat model (`llmpool.fallback.walk.Walk`):
the same policy (which errors retry, which fall back, which are bugs), retries, deadline,
circuit breakers, routing and admission checks. What it adds:

- every candidate is in one vector space, checked when the fallback is built
  (`llmpool.embeddings.space.one_space`); a live chain that later mixes spaces, or moves to
  another space, is refused at the call instead of answering from another space;
- a call is one unit: ``embed_documents`` of 1,000 texts that the client sends in ten requests
  and that fails on the third is retried, or failed over, as a whole, so the vectors of one
  answer always come from one row; an answer with the wrong number of vectors, or vectors of
  different lengths, counts as a failed attempt;
- the answer says which row and which space produced it: ``embed_documents`` returns `Vectors`
  and ``embed_query`` a `Vector`, lists of floats that carry ``response_metadata["llmpool"]``
  (the row's id, name, provider, model name, space, dimensions, and the attempts), as a chat
  answer's message does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.embeddings import Embeddings

from llmpool.embeddings.space import one_space, space_of
from llmpool.errors import MixedSpacesError, shorten
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.streaming import client_timeout
from llmpool.fallback.walk import Candidate, Walk, answered, ensure_buildable
from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from llmpool.fallback.admission import AdmissionCheck
    from llmpool.fallback.routing import Routing

__all__ = [
    "EmbeddingRunner",
    "FallbackEmbeddings",
    "MalformedVectorsError",
    "Vector",
    "Vectors",
    "runner_candidate",
]

logger = logging.getLogger(__name__)

_DEFAULT_POLICY = FallbackPolicy()

# A request to a runner: which call, and its input.
_DOCUMENTS, _QUERY = "documents", "query"


class Vectors(list[list[float]]):
    """The answer of ``embed_documents``: one vector per text, and which row produced them.

    Attributes:
        response_metadata: ``{"llmpool": {...}}``: the row's ``llm_id``, ``name``,
            ``provider``, ``model_name``, its vector ``space``, the ``dimensions`` of the
            vectors, and the ``attempts`` of the call.
    """

    __slots__ = ("response_metadata",)

    def __init__(self, vectors: Sequence[list[float]] = (), metadata: Any = None) -> None:
        super().__init__(vectors)
        self.response_metadata: dict[str, Any] = {"llmpool": metadata or {}}


class Vector(list[float]):
    """The answer of ``embed_query``: the text's vector, and which row produced it.

    Attributes:
        response_metadata: ``{"llmpool": {...}}``, as `Vectors` has.
    """

    __slots__ = ("response_metadata",)

    def __init__(self, vector: Sequence[float] = (), metadata: Any = None) -> None:
        super().__init__(vector)
        self.response_metadata: dict[str, Any] = {"llmpool": metadata or {}}


class MalformedVectorsError(Exception):
    """A candidate answered, but not with one vector per text of one length.

    It carries HTTP status 502 (a bad answer from upstream): the policy retries the candidate
    and then falls back, and it counts against the candidate's breaker.
    """

    status_code = 502


class EmbeddingRunner:
    """An embedding row's client as the walk calls it: ``invoke(request)`` -> vectors.

    The walk calls a candidate's runner with ``invoke``/``ainvoke`` (and bounds it at the
    call's deadline the same way as a chat model's); the request says which embeddings call
    to make.

    Attributes:
        embeddings: The LangChain ``Embeddings`` client of the row.
        timeout: Seconds its client waits for an answer (what the deadline reads).
    """

    __slots__ = ("embeddings", "timeout")

    def __init__(self, embeddings: Embeddings) -> None:
        self.embeddings = embeddings
        from llmpool.providers.fake import FakeEmbeddings

        if isinstance(embeddings, FakeEmbeddings):  # no I/O: it waits only for its sleep
            self.timeout = float(embeddings.sleep or 0.0)
        else:
            self.timeout = client_timeout(embeddings)

    def __repr__(self) -> str:
        return f"EmbeddingRunner({type(self.embeddings).__name__})"

    def invoke(self, request: tuple[str, Any], config: Any = None, **kwargs: Any) -> Any:
        """Make the request's call: ``embed_documents`` or ``embed_query``."""
        what, payload = request
        if what == _DOCUMENTS:
            return self.embeddings.embed_documents(payload)
        return self.embeddings.embed_query(payload)

    async def ainvoke(self, request: tuple[str, Any], config: Any = None, **kwargs: Any) -> Any:
        """Async twin of `invoke`."""
        what, payload = request
        if what == _DOCUMENTS:
            return await self.embeddings.aembed_documents(payload)
        return await self.embeddings.aembed_query(payload)


def runner_candidate(candidate: Candidate) -> Embeddings | None:
    """Return the ``Embeddings`` client of a candidate built by `EmbeddingRunner`, if any."""
    model: Any = candidate.model
    return model.embeddings if isinstance(model, EmbeddingRunner) else None


def _checked(vectors: Any, request: tuple[str, Any]) -> int:
    # Returns the vectors' length; raises inside the attempt, so a bad answer falls back whole.
    what, payload = request
    if what == _QUERY:
        if not isinstance(vectors, list) or not vectors:
            msg = f"an empty or non-list vector ({type(vectors).__name__}) for the query"
            raise MalformedVectorsError(msg)
        return len(vectors)
    if not isinstance(vectors, list) or len(vectors) != len(payload):
        got = len(vectors) if isinstance(vectors, list) else type(vectors).__name__
        msg = f"{got} vectors for {len(payload)} texts"
        raise MalformedVectorsError(msg)
    if not vectors:
        return 0
    size = len(vectors[0])
    for vector in vectors:
        if len(vector) != size:
            msg = f"vectors of {size} and {len(vector)} numbers in one answer"
            raise MalformedVectorsError(msg)
    return size


class FallbackEmbeddings(Embeddings):
    """Embeddings that try candidates of one vector space in order until one answers.

    Args:
        candidates: Candidates whose models are `EmbeddingRunner` (a static chain), all in
            one space.
        source: Called at every call for ``(space, candidates)`` (a live chain, e.g. the
            pool's); it refuses a chain that mixes spaces. Used instead of ``candidates``.
        space: The space the answers must come from; by default the candidates' space. A live
            chain that moves to another space is refused at the call.
        policy: Retries, deadline and circuit breaker settings.
        breakers: Shared breaker state (the pool's board).
        scope: The scope, for messages.
        routing: Orders the candidates for each call; ``None`` keeps their order.
        admissions: Checks asked before each attempt whether its candidate may be called now,
            or a callable returning them at every call.

    Raises:
        MixedSpacesError: ``candidates`` are in more than one space, or not in ``space``.

    Example:
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.providers.fake import FakeEmbeddings
        >>> def row(name, error=None):
        ...     config = LLMConfig(id=name, name=name, provider="fake", model_name="m",
        ...                        kind="embedding")
        ...     return Candidate(config, EmbeddingRunner(FakeEmbeddings(model="m", error=error)))
        >>> embeddings = FallbackEmbeddings(candidates=[row("down", "refused"), row("up")])
        >>> vectors = embeddings.embed_documents(["hello", "world"])
        >>> len(vectors), vectors.response_metadata["llmpool"]["name"]
        (2, 'up')
    """

    def __init__(
        self,
        *,
        candidates: Sequence[Candidate] = (),
        source: Callable[[], tuple[str | None, Sequence[Candidate]]] | None = None,
        space: str | None = None,
        policy: FallbackPolicy | None = None,
        breakers: BreakerBoard | None = None,
        scope: str | None = None,
        routing: Routing | None = None,
        admissions: Sequence[AdmissionCheck] | Callable[[], Sequence[AdmissionCheck]] = (),
    ) -> None:
        self.candidates = tuple(candidates)
        self.source = source
        if source is None:
            found = one_space((c.config for c in self.candidates), scope=scope)
            if space is not None and found is not None and found != space:
                raise self._moved(space, found, scope)
            space = space if space is not None else found
        self.space = space
        self.policy = policy if policy is not None else _DEFAULT_POLICY
        self.breakers = breakers if breakers is not None else BreakerBoard()
        self.scope = scope
        self.routing = routing
        self.admissions = admissions
        # The vector length each space answered with: a row declaring the space but
        # answering with another length is not in it.
        self._dimensions: dict[str, int] = {}

    def __repr__(self) -> str:
        where = f" scope={self.scope!r}" if self.scope is not None else ""
        return f"<FallbackEmbeddings space={self.space!r}{where}>"

    @staticmethod
    def _moved(space: str, found: str, scope: str | None) -> MixedSpacesError:
        where = f"scope {shorten(scope)!r}" if scope is not None else "its candidates"
        msg = (
            f"These embeddings answer in vector space {shorten(space)!r}, but the rows of "
            f"{where} are now in space {shorten(found)!r}; vectors of the two cannot share an "
            "index. Re-embed the index with the new space, or restore the rows of the old one"
        )
        return MixedSpacesError(msg, spaces={space: (), found: ()})

    def _current(self) -> Sequence[Candidate]:
        if self.source is None:
            return self.candidates
        space, candidates = self.source()
        if space is not None and self.space is not None and space != self.space:
            raise self._moved(self.space, space, self.scope)
        return candidates

    def _walk(self, request: tuple[str, Any]) -> Walk:
        admissions = self.admissions
        if callable(admissions):
            admissions = admissions()
        return Walk(
            self._current(),
            self.policy,
            self.breakers,
            routing=self.routing,
            scope=self.scope,
            name="FallbackEmbeddings",
            inputs=request[1],
            admissions=admissions,
        )

    def _answer(self, walk: Walk, attempt: Any, vectors: Any, size: int) -> dict[str, Any]:
        # The walk's own bookkeeping (breaker, chain run, admissions), then the metadata.
        walk.answer(attempt, vectors)
        candidate = attempt.candidate
        space = space_of(candidate.config)
        known = self._dimensions.setdefault(space, size) if size else size
        if known != size:
            c = candidate.config
            msg = (
                f"{c.describe()} answered with vectors of {size} numbers, but space "
                f"{shorten(space)!r} has {known}: the row is not in the space it declares; "
                "fix its space label or its model"
            )
            row = {"scope": c.scope, "llm_id": c.id, "llm_name": c.name, "provider": c.provider}
            logger.error(msg, extra=log_fields("mixed_spaces", **row, space=space))
            raise MixedSpacesError(msg, spaces={space: (c.describe(),)})
        metadata = answered(candidate) if attempt.fast else _metadata(walk, candidate)
        metadata["space"] = space
        metadata["dimensions"] = size
        return metadata

    # -- the four calls ------------------------------------------------------------------------

    def _call(self, request: tuple[str, Any]) -> tuple[Any, dict[str, Any]]:
        walk = self._walk(request)
        for attempt in walk:
            with attempt:
                vectors = attempt.runner.invoke(request, attempt.config)
                size = _checked(vectors, request)
                return vectors, self._answer(walk, attempt, vectors, size)
        raise walk.error()

    async def _acall(self, request: tuple[str, Any]) -> tuple[Any, dict[str, Any]]:
        walk = self._walk(request)
        async for attempt in walk:
            async with attempt:
                vectors = await attempt.runner.ainvoke(request, attempt.config)
                size = _checked(vectors, request)
                return vectors, self._answer(walk, attempt, vectors, size)
        raise walk.error()

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Embed the texts with the first candidate that answers for all of them.

        The whole list is one attempt: a candidate that fails partway (its client sends the
        texts in several requests) is retried, or failed over, with the whole list.

        Returns:
            One vector per text, with ``response_metadata["llmpool"]`` naming the row and space.

        Raises:
            AllLLMsFailedError: Every candidate failed; lists each and why.
            MixedSpacesError: The live chain mixes spaces, or moved to another space.
        """
        vectors, metadata = self._call((_DOCUMENTS, list(texts)))
        return Vectors(vectors, metadata)

    def embed_query(self, text: str) -> Vector:
        """Embed one query text (see `embed_documents`)."""
        vector, metadata = self._call((_QUERY, text))
        return Vector(vector, metadata)

    async def aembed_documents(self, texts: list[str]) -> Vectors:
        """Async twin of `embed_documents`."""
        vectors, metadata = await self._acall((_DOCUMENTS, list(texts)))
        return Vectors(vectors, metadata)

    async def aembed_query(self, text: str) -> Vector:
        """Async twin of `embed_query`."""
        vector, metadata = await self._acall((_QUERY, text))
        return Vector(vector, metadata)

    def ensure_buildable(self) -> None:
        """Raise `AllLLMsFailedToInitializeError` when no candidate could be built."""
        ensure_buildable(self._current(), scope=self.scope)


def _metadata(walk: Walk, candidate: Candidate) -> dict[str, Any]:
    head, _ = candidate.answer_fields
    return {**head, "attempts": walk.attempts}


def as_chat_model(runner: EmbeddingRunner) -> BaseChatModel:
    """Type a runner as a candidate's model: the walk calls it only through ``invoke``."""
    model: Any = runner
    return model  # type: ignore[no-any-return]
