"""The fallback embeddings: candidates of one vector space, the first that answers wins.

A call is retried or failed over whole, so its vectors come from one row; an answer of the
wrong count or length is a failed attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.embeddings import Embeddings

from llmpool.chain.builder import ChainSource, ScopeChain, ensure_buildable
from llmpool.errors import MixedSpacesError, shorten
from llmpool.fallback.breakers import BreakerBoard
from llmpool.fallback.calls import EmbeddingCall, EmbeddingRequest
from llmpool.fallback.policy import FallbackPolicy
from llmpool.fallback.walk import Attempt, Plan, Walk
from llmpool.repository.spaces import SpaceDimensions, one_space, space_of

if TYPE_CHECKING:
    from llmpool.chain.routing import Routing
    from llmpool.contracts import AdmissionCheck, Candidate

__all__ = ["FallbackEmbeddings", "MalformedVectorsError", "Vector", "Vectors"]

_DEFAULT_POLICY = FallbackPolicy()
_T = TypeVar("_T")


class _Answer(list[_T]):
    __slots__ = ("response_metadata",)

    def __init__(self, items: Sequence[_T] = (), metadata: Any = None) -> None:
        super().__init__(items)
        self.response_metadata: dict[str, Any] = {"llmpool": metadata or {}}


class Vectors(_Answer[list[float]]):
    """The answer of ``embed_documents``: one vector per text; ``response_metadata["llmpool"]``
    names the row (``llm_id``, ``name``...), its ``space``, ``dimensions`` and ``attempts``."""

    __slots__ = ()


class Vector(_Answer[float]):
    """The answer of ``embed_query``: the text's vector, and which row produced it."""

    __slots__ = ()


class MalformedVectorsError(Exception):
    """Not one vector per text of its space's length: a 502, retried, then failed over."""

    status_code = 502


def _size(vectors: Any, request: EmbeddingRequest) -> int:
    method, payload = request
    if method == "embed_query":
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
        candidates: Candidates whose models are ``Embeddings``, all in one space.
        chain: Where the chain in force is read at every call, instead of ``candidates``.
        space: The space answers must come from (the chain's by default): `MixedSpacesError`.
        dimensions: Each space's vector length (the pool's, recorded in its database).
        policy, breakers, scope, routing, admissions: As for `FallbackChatModel`.

    Example:
        >>> from llmpool.contracts import Candidate
        >>> from llmpool.models import LLMConfig
        >>> from llmpool.providers.fake import FakeEmbeddings
        >>> def row(name, error=None):
        ...     config = LLMConfig(id=name, name=name, provider="fake", model_name="m",
        ...                        kind="embedding")
        ...     return Candidate(config, FakeEmbeddings(model="m", error=error))
        >>> embeddings = FallbackEmbeddings(candidates=[row("down", "refused"), row("up")])
        >>> vectors = embeddings.embed_documents(["hello", "world"])
        >>> len(vectors), vectors.response_metadata["llmpool"]["name"]
        (2, 'up')
    """

    def __init__(
        self,
        *,
        candidates: Sequence[Candidate] = (),
        chain: ChainSource | None = None,
        space: str | None = None,
        policy: FallbackPolicy | None = None,
        breakers: BreakerBoard | None = None,
        dimensions: SpaceDimensions | None = None,
        scope: str | None = None,
        routing: Routing | None = None,
        admissions: Sequence[AdmissionCheck] = (),
    ) -> None:
        if chain is None:
            found = one_space((c.config for c in candidates), scope=scope)
            chain = ScopeChain(
                scope, "embedding", 0, tuple(candidates), routing, tuple(admissions), found
            )
        found = chain.current().space
        if space is not None and found is not None and found != space:
            raise self._moved(space, found, scope)
        self.chain = chain
        self.space = space if space is not None else found
        self.policy = policy if policy is not None else _DEFAULT_POLICY
        self.breakers = breakers if breakers is not None else BreakerBoard()
        self.dimensions = dimensions if dimensions is not None else SpaceDimensions()
        self.scope = scope
        self._calls: dict[int, EmbeddingCall] = {}
        self._plan: Plan | None = None  # the walks' `Plan`, for the chain last walked

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

    def _current(self) -> ScopeChain:
        chain = self.chain.current()
        if chain.problem is not None:
            raise chain.problem
        if chain.space is not None and self.space is not None and chain.space != self.space:
            raise self._moved(self.space, chain.space, self.scope)
        return chain

    def _call(self, candidate: Candidate) -> EmbeddingCall:
        call = self._calls.get(id(candidate.model))
        if call is None or call.embeddings is not candidate.model:
            call = self._calls[id(candidate.model)] = EmbeddingCall(candidate.model)
        return call

    def _answer(
        self, walk: Walk, attempt: Attempt, vectors: Any, request: EmbeddingRequest
    ) -> dict[str, Any]:
        # Inside the attempt: a malformed answer, or of another length, falls back whole.
        size = _size(vectors, request)
        config = attempt.candidate.config
        space = space_of(config)
        if size:
            refusal = self.dimensions.refusal(space, size, config)
            if refusal is not None:
                raise MalformedVectorsError(refusal)
        metadata = walk.answer(attempt)
        metadata.update(space=space, dimensions=size)
        return metadata

    def _walk(self) -> Walk:
        chain, plan = self._current(), self._plan
        if plan is None or plan.chain is not chain:
            plan = self._plan = Plan(chain, self.policy, self.breakers, self._call)
        return Walk(plan)

    def _embed(self, request: EmbeddingRequest) -> tuple[Any, dict[str, Any]]:
        walk = self._walk()
        for attempt in walk:
            with attempt:
                vectors = attempt.call.generate(request)
                return vectors, self._answer(walk, attempt, vectors, request)
        raise walk.error()

    async def _aembed(self, request: EmbeddingRequest) -> tuple[Any, dict[str, Any]]:
        walk = self._walk()
        async for attempt in walk:
            async with attempt:
                vectors = await attempt.call.agenerate(request)
                return vectors, self._answer(walk, attempt, vectors, request)
        raise walk.error()

    def embed_documents(self, texts: list[str]) -> Vectors:
        """Embed the texts with the first candidate that answers for all of them."""
        return Vectors(*self._embed(("embed_documents", list(texts))))

    def embed_query(self, text: str) -> Vector:
        """Embed one query text (see `embed_documents`)."""
        return Vector(*self._embed(("embed_query", text)))

    async def aembed_documents(self, texts: list[str]) -> Vectors:
        """Async twin of `embed_documents`."""
        return Vectors(*await self._aembed(("embed_documents", list(texts))))

    async def aembed_query(self, text: str) -> Vector:
        """Async twin of `embed_query`."""
        return Vector(*await self._aembed(("embed_query", text)))

    def ensure_buildable(self) -> None:
        """Raise `AllLLMsFailedToInitializeError` when no candidate could be built."""
        ensure_buildable(self._current().candidates, scope=self.scope)
