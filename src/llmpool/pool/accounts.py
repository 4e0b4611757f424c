"""A pool's accounts: the usage its meter counted, feedback on experiment calls, and each
experiment's report per arm (`LLMPool` serves them through `Accounts`); `twin` makes a pool
method's async twin."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

from llmpool.errors import InvalidOptionError, LLMNotFoundError, LLMPoolError, shorten
from llmpool.pool.rows import check_lookup

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from langchain_core.messages import BaseMessage

    from llmpool.pool.snapshots import SnapshotKeeper
    from llmpool.repository.experiments import Experiment
    from llmpool.usage.experiments import ArmReport
    from llmpool.usage.feedback import FeedbackLog
    from llmpool.usage.meter import UsageMeter
    from llmpool.usage.report import By, UsageRow

__all__ = ["Accounts", "twin"]

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="Accounts")


def twin(
    method: Callable[Concatenate[S, P], T], *, thread: bool = False
) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """The async twin of a pool method: the snapshot loaded on the event loop, then the method;
    in a worker thread when it may read the table (a bad row's lookup) or ``thread`` (Redis)."""

    @functools.wraps(method)
    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        snapshot = await self._snapshots.aget()
        if thread or snapshot.bad_rows:
            return await asyncio.to_thread(method, self, *args, **kwargs)
        return method(self, *args, **kwargs)

    twin.__name__ = twin.__qualname__ = f"a{method.__name__}"
    twin.__doc__ = f"Async twin of `{method.__name__}`."
    return twin


class Accounts:
    """`LLMPool`'s usage, feedback and experiment reports, read from its meter, its feedback
    log and its snapshot."""

    usage_meter: UsageMeter | None
    feedback_log: FeedbackLog
    _snapshots: SnapshotKeeper

    def usage(
        self,
        since: datetime | timedelta | float | str | None = "1d",
        until: datetime | timedelta | float | str | None = None,
        *,
        by: By = "row",
        scope: str | None = None,
        llm_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> list[UsageRow]:
        """Return the calls, errors, tokens and cost in ``[since, until)`` by ``"row"``,
        ``"scope"``, ``"day"``, ``"hour"``, ``"minute"`` or ``"tag:NAME"`` (a tag's value), of
        the calls with ``tags`` if given (`llmpool.usage.report`), every replica's, this pool's
        flushed.

        Raises:
            LLMPoolError: The pool does not count usage (``track_usage=False``).
            ValueError: ``by`` or a time is not understood.
            DatabaseError: The ``llm_usage`` table could not be read (run ``llmpool migrate``).
        """
        meter = self._meter()
        return meter.report(since=since, until=until, by=by, scope=scope, llm_id=llm_id, tags=tags)

    def feedback(self, call: str | BaseMessage, metric: str, value: float | bool) -> None:
        """Record ``metric``'s ``value`` (a number; a bool counts as 1 or 0) for an experiment
        call, named by its answer or the ``call_id`` in its metadata; the value is written to
        ``llm_feedback`` in the background, a metric given again replacing it
        (`llmpool.usage.feedback`).

        Raises:
            InvalidOptionError: ``metric`` or ``value`` is not one (naming it), or the call is
                not an experiment call this process answered (without ``redis=``; with it,
                any replica's, checked at the flush).

        Example:
            >>> answer = pool.get_llm_with_fallback("chat").invoke("hi")  # doctest: +SKIP
            >>> pool.feedback(answer, "thumbs_up", True)  # doctest: +SKIP
        """
        if not isinstance(call, str):
            found = getattr(call, "response_metadata", {}).get("llmpool", {}).get("call_id")
            if found is None:
                msg = "the answer has no call_id: its scope is not routed as an experiment"
                raise InvalidOptionError(msg, option="call_id")
            call = found
        self.feedback_log.add(call, metric, value)

    async def afeedback(self, call: str | BaseMessage, metric: str, value: float | bool) -> None:
        """Async twin of `feedback` (which never waits on the database or Redis)."""
        self.feedback(call, metric, value)

    def experiment_report(
        self,
        scope: str = "global",
        since: datetime | timedelta | float | str | None = "7d",
        until: datetime | timedelta | float | str | None = None,
    ) -> list[ArmReport]:
        """Return ``scope``'s experiment per arm (`llmpool.usage.experiments`): calls, errors,
        cost, latency and each metric's mean with its 95 % interval, in ``[since, until)``,
        this pool's usage and feedback flushed first.

        Raises:
            LLMNotFoundError: The scope has no experiment.
            LLMPoolError: The pool does not count usage (``track_usage=False``).
        """
        from llmpool.usage.experiments import arm_reports
        from llmpool.usage.report import as_epoch

        check_lookup(scope)
        experiment = self.experiment_of(scope)
        rows = self.usage(since, until, by="tag:arm", scope=scope)
        self.feedback_log.flush()
        now = time.time()
        sums = self.feedback_log.table.sums(scope, as_epoch(since, now), as_epoch(until, now))
        return arm_reports(experiment, rows, sums)

    def experiment_of(self, scope: str = "global") -> Experiment:
        """Return the experiment stored for ``scope`` (`LLMNotFoundError` when none is)."""
        experiment = self._snapshots.get().experiment_of(scope)
        if experiment is None:
            msg = f"scope {shorten(scope)!r} has no experiment: llmpool experiment set SCOPE ..."
            raise LLMNotFoundError(msg)
        return experiment

    def flush_usage(self) -> bool:
        """Flush the usage this pool counted to ``llm_usage`` now; whether all of it is there."""
        return self._meter().flush()

    def _meter(self) -> UsageMeter:
        if self.usage_meter is None:
            msg = "this pool does not count usage: it was made with track_usage=False"
            raise LLMPoolError(msg)
        return self.usage_meter

    aexperiment_report = twin(experiment_report, thread=True)  # reads the tables
