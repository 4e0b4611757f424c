"""Admission checks: whether a candidate may be called now, and what each call cost.

The walk asks every check of a call, in order, before it calls a candidate (next to the
circuit breaker, before any network call): a check returns ``None`` to let the call through, or
the reason to skip the candidate ("rate limited: rpm 60/60, frees in 12 s"), recorded in the
answer's attempts and in `AllLLMsFailedError` like a breaker skip. After the attempt, each check
that let it through hears how it went (`AdmissionCheck.record`): success or not, its latency and
the token usage of the answer (a stream's usage is the sum of its chunks' ``usage_metadata``).

Rate limits (`llmpool.limits`), the latency and in-flight figures the routing strategies read
(`llmpool.fallback.routing.RoutingStats`) and any check of yours go through this one seam. A
call with no checks (the tuple is empty) pays nothing for it.

The contract, for one attempt of one candidate:

- `AdmissionCheck.admit` is called once; ``None`` means "admitted" (a check may count the call
  then, e.g. take a rate-limit slot or count it in flight);
- after an admitted attempt, exactly one of `AdmissionCheck.record` (the call was made) or
  `AdmissionCheck.release` (a later check refused it, or the breaker did: no call was made) is
  called, from the thread or task that made the call;
- a retry of the same candidate is a new attempt: admitted again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmpool.fallback.walk import Candidate

__all__ = ["AdmissionCheck", "CheckBase", "add_usage", "usage_of"]


@runtime_checkable
class AdmissionCheck(Protocol):
    """Consulted before each attempt of a candidate; told about the attempt after it."""

    def admit(self, candidate: Candidate) -> str | None:
        """Return ``None`` to let the call through, or why the candidate is skipped now."""
        ...

    def release(self, candidate: Candidate) -> None:
        """Undo `admit`: the candidate was admitted here but is not called after all."""
        ...

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Hear how an admitted attempt went.

        Args:
            candidate: Who was called.
            ok: Whether it answered (for a stream: whether it ended normally).
            latency: Seconds from the call to its outcome (for a stream: to its end).
            usage: The answer's ``usage_metadata`` (``input_tokens``, ``output_tokens``,
                ``total_tokens``), or ``None`` when it gave none (or failed).
        """
        ...

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Whether a chain needs this check at all (e.g. some row has a limit).

        A pool leaves a check that does not apply out of a chain's checks, so the chain pays
        nothing for it; asked again whenever the table changes.
        """
        ...


class CheckBase:
    """An `AdmissionCheck` that admits everything and listens to nothing: subclass and override.

    Example:
        >>> class Count(CheckBase):
        ...     calls = 0
        ...     def record(self, candidate, *, ok, latency, usage):
        ...         Count.calls += 1
        >>> isinstance(Count(), AdmissionCheck)
        True
    """

    __slots__ = ()

    def admit(self, candidate: Candidate) -> str | None:
        """Admit every call."""
        return None

    def release(self, candidate: Candidate) -> None:
        """Nothing to undo."""

    def record(
        self,
        candidate: Candidate,
        *,
        ok: bool,
        latency: float,
        usage: Mapping[str, Any] | None,
    ) -> None:
        """Ignore the outcome."""

    def applies_to(self, candidates: Sequence[Candidate]) -> bool:
        """Apply to every chain."""
        return True


def usage_of(result: Any) -> Mapping[str, Any] | None:
    """Return the ``usage_metadata`` of an answer (a message), or ``None``.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> usage_of(AIMessage("hi", usage_metadata={
        ...     "input_tokens": 3, "output_tokens": 1, "total_tokens": 4}))["total_tokens"]
        4
    """
    usage = getattr(result, "usage_metadata", None)
    if usage is None or type(usage) is dict:  # the usual cases, without an ABC check
        return usage
    return usage if isinstance(usage, Mapping) else None


def add_usage(
    total: Mapping[str, Any] | None, more: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """Add a chunk's ``usage_metadata`` to a stream's running total (either may be ``None``)."""
    if more is None:
        return total
    if total is None:
        return more
    from langchain_core.messages.ai import add_usage as add

    return add(total, more)  # type: ignore[arg-type]
