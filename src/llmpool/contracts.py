"""The seams several packages meet at, below all of them.

`Candidate` (and `Served`, what telemetry says of its requests), `AdmissionCheck`, `Observer`,
`Shared` (state in Redis for every replica, in this process while Redis is unreachable) and
`log_fields` (the ``extra`` of every log record, so ``"%(event)s %(llm_name)s"`` formats any
llmpool record): every package above implements or uses these, so none of them needs another's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    from llmpool.models import LLMConfig
    from llmpool.observe.events import (
        AttemptEvent,
        BreakerEvent,
        BuildFailedEvent,
        CallEvent,
        FailoverEvent,
        ReloadEvent,
    )
    from llmpool.providers.fit import Fit
    from llmpool.tags import Tags


T = TypeVar("T")

#: Serves a scope's live chat model on the default pool: what ``FallbackChatModel(scope=...)``
#: alone, and so ``langchain_core.load`` of a serialized one, gives. `llmpool.api` sets it.
default_scope_model: Callable[[str], Any] | None = None

#: The fields of every log record, in the order the documentation lists them.
FIELDS = (
    "event",
    "scope",
    "llm_id",
    "llm_name",
    "provider",
    "model",
    "attempt",
    "outcome",
    "error_class",
    "reason",
    "latency_ms",
)

_NO_FIELDS = dict.fromkeys(FIELDS)


def log_fields(event: str, **fields: Any) -> dict[str, Any]:
    """Return a log record's ``extra``: every field of `FIELDS` (``None`` unless given), and
    any field particular to the record."""
    return {**_NO_FIELDS, "event": event, **fields}


def breaker_key(llm_id: str, version: int = 1) -> str:
    """Return the runtime-state key of one version of a row; an edited row starts afresh, and a
    row as first written keeps its bare id, as state recorded in Redis before versions has."""
    return llm_id if version <= 1 else f"{llm_id}:{version}"


class Served(NamedTuple):
    """Where and how a row's requests go, as telemetry tells it: ``system``, its provider's id
    in the GenAI semantic conventions (``openai``, ``aws.bedrock``); the server's ``address``
    and ``port`` (``None``: not known); the request ``parameters`` the row sets, by their
    conventions' names (``temperature``, ``max_tokens``)."""

    system: str
    address: str | None = None
    port: int | None = None
    parameters: Mapping[str, Any] = MappingProxyType({})


class Candidate:
    """One row (``config``), turned into its client (``model``: a chat model or ``Embeddings``),
    or the ``error`` that kept it from being built; ``served``: what telemetry says of its
    requests (made from its provider's declaration when the chain builds it).

    Example:
        >>> from llmpool.models import LLMConfig
        >>> row = LLMConfig(id="1", name="A", provider="fake", model_name="m")
        >>> Candidate(row, error=ImportError("no package")).key
        '1'
    """

    def __init__(
        self,
        config: LLMConfig,
        model: Any = None,
        error: BaseException | None = None,
        served: Served | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.error = error
        self.served = served
        self.fit: Fit | None = None  # what its model can take, set by the chain builder

    def __repr__(self) -> str:
        built = type(self.model).__name__ if self.model is not None else repr(self.error)
        return f"Candidate({self.config.describe()}, {built})"

    @cached_property
    def key(self) -> str:
        """Its key on the runtime boards (breakers, statistics): `breaker_key`."""
        return breaker_key(self.config.id, self.config.version)

    @cached_property
    def answer_fields(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Its part of an answer's metadata, and its ``"ok"`` attempt entry (made once)."""
        c = self.config
        head = {"llm_id": c.id, "name": c.name, "provider": c.provider, "model_name": c.model_name}
        return head, {"llm_id": c.id, "name": c.name, "outcome": "ok"}


@runtime_checkable
class AdmissionCheck(Protocol):
    """Asked before each attempt whether its candidate may be called now; told how it went.

    For one attempt of one candidate: `admit` is called once (``None`` admits, and the check
    may count the call then: take a rate-limit slot, reserve a budget, count it in flight);
    then exactly one of `record` (the call was made) or `release` (a later check or the
    breaker refused it: no call) follows, from the thread or task that made the call. A retry
    is a new attempt. `peek` answers the same question without taking anything, for health
    views; `applies_to` lets a chain leave out a check none of its rows needs. A subclass
    inherits a check that admits everything and listens to nothing. `admit`, `release` and
    `record` are given the call's tags (`llmpool.tags.Tags`; ``None``: an untagged call).
    """

    __slots__ = ()

    def admit(self, candidate: Candidate, tags: Tags | None) -> str | None:
        """Return ``None`` to let the call through, or why the candidate is skipped now."""
        return None

    def release(self, candidate: Candidate, tags: Tags | None) -> None:
        """Undo `admit`: the candidate was admitted here but is not called after all."""
        return None

    def record(
        self,
        candidate: Candidate,
        tags: Tags | None,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Hear how an admitted attempt went (``usage``: the answer's ``usage_metadata``)."""
        return None

    def peek(self, candidate: Candidate) -> str | None:
        """Return why `admit` would refuse the candidate now, taking nothing; else ``None``."""
        return None

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Whether a chain of these candidates needs this check at all."""
        return True


#: `AdmissionCheck` as a base class: a check that admits everything and listens to nothing.
CheckBase = AdmissionCheck


class Observer:
    """Receives llmpool's events, in the caller's thread; override the methods you need.

    An observer that raises is reported once in the log and never breaks a call. ``every_call``
    (may be a property): whether it wants the events of healthy calls too (answered by their
    first row at once); when no observer does, such a call emits nothing and costs nothing.

    Example:
        >>> class Failovers(Observer):
        ...     count = 0
        ...     def on_failover(self, event):
        ...         Failovers.count += 1
    """

    every_call: bool = True

    def on_attempt(self, event: AttemptEvent) -> None:
        """An attempt answered, failed, or was skipped without a request."""

    def on_failover(self, event: FailoverEvent) -> None:
        """A call left a failed row for the next one (or for none)."""

    def on_breaker_change(self, event: BreakerEvent) -> None:
        """A row's circuit breaker opened, let a probe through (half-open), or closed."""

    def on_call(self, event: CallEvent) -> None:
        """A call finished: answered, or failed with every attempt listed."""

    def on_reload(self, event: ReloadEvent) -> None:
        """A pool reloaded its snapshot of the table."""

    def on_build_failure(self, event: BuildFailedEvent) -> None:
        """A row could not be built (missing variable, package, bad config): it is skipped."""


_logger = logging.getLogger("llmpool.redis")


def redis_client(url: str, needed_by: str) -> Any:
    """Return a ``redis.Redis`` for ``url`` whose every round trip is bounded (0.5 s); without
    the redis package, a `ProviderNotInstalledError` naming ``needed_by`` and the extra."""
    try:
        import redis
    except ImportError as error:
        from llmpool.errors import ProviderNotInstalledError

        msg = f'{needed_by} need the redis package: pip install "llmpool[redis]"'
        raise ProviderNotInstalledError(msg) from error
    return redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)


class Shared:
    """A Redis client, with this process's own state as the fallback while Redis is down.

    `run` makes one operation on Redis; when Redis fails, it makes the local one instead, says
    so once in the log (``redis_down``, naming ``what`` the state is), stays local for
    ``retry_after`` seconds, and says once when Redis answers again (``redis_up``).
    """

    __slots__ = ("_down_until", "client", "retry_after", "what")

    def __init__(self, client: Any, *, what: str, retry_after: float = 5.0) -> None:
        self.client = client
        self.what = what
        self.retry_after = retry_after
        self._down_until = 0.0

    def __repr__(self) -> str:
        return f"Shared({self.what}, reachable={self.reachable})"

    @property
    def reachable(self) -> bool:
        """Whether Redis answered the last time it was asked."""
        return self._down_until == 0.0

    def run(self, remote: Callable[[Any], T], local: Callable[[], T]) -> T:
        """Return ``remote(client)``, or ``local()`` while Redis cannot be reached."""
        if self._down_until and time.monotonic() < self._down_until:
            return local()
        try:
            value = remote(self.client)
        except Exception as error:  # any Redis failure: this process's state instead
            self.failed(error)
            return local()
        if self._down_until:
            self._down_until = 0.0
            _logger.warning(
                "llmpool reaches Redis again for shared %s",
                self.what,
                extra=log_fields("redis_up", what=self.what),
            )
        return value

    def failed(self, error: BaseException) -> None:
        """Note a Redis failure: stay local for ``retry_after`` seconds (logged once)."""
        if not self._down_until:
            _logger.warning(
                "llmpool cannot reach Redis for shared %s; using this process's state until "
                "it answers: %s",
                self.what,
                type(error).__name__,
                extra=log_fields("redis_down", what=self.what, error_class=type(error).__name__),
            )
        self._down_until = time.monotonic() + self.retry_after
