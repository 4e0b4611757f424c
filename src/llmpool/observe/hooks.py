"""The hook interface: `Observer`, and `Hooks`, which hands each event to every observer.

An observer subclasses `Observer` and overrides the methods it cares about; the others are
no-ops. Logging (`llmpool.observe.logs.LoggingObserver`) and OpenTelemetry
(`llmpool.observe.otel.OpenTelemetryObserver`) are two observers like any other, and are
always subscribed (OpenTelemetry only when ``opentelemetry-api`` is installed).

Observers run in the caller's thread, synchronously, after the fact: a slow observer slows the
calls. An observer that raises is reported once in the log and never breaks a call.

When no observer wants every call (`Observer.every_call`), a call answered by its first row
at the first attempt emits nothing at all: the fast path pays one attribute read.

Example:
    >>> from llmpool.observe import Observer
    >>> class Counter(Observer):
    ...     def __init__(self):
    ...         self.failovers = 0
    ...     def on_failover(self, event):
    ...         self.failovers += 1
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from llmpool.observe.fields import log_fields

if TYPE_CHECKING:
    from llmpool.observe.events import (
        AttemptEvent,
        BreakerEvent,
        BuildFailedEvent,
        CallEvent,
        FailoverEvent,
        ReloadEvent,
    )

__all__ = ["HOOKS", "Hooks", "Observer", "builtin_observers"]

logger = logging.getLogger("llmpool.observe")

#: The methods an observer may override, in the order events are usually emitted.
HOOKS = (
    "on_attempt",
    "on_failover",
    "on_breaker_change",
    "on_call",
    "on_reload",
    "on_build_failure",
)


class Observer:
    """Receives llmpool's events; override the methods you need (the others do nothing).

    Attributes:
        every_call: Whether the observer wants the events of healthy calls too (a call
            answered by its first row at once: an ``on_attempt`` and an ``on_call``). When
            no observer does, such a call emits nothing and costs nothing. May be a property
            (e.g. "only while an OpenTelemetry SDK is configured").
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


def _overrides(observer: Any, name: str) -> bool:
    method = getattr(type(observer), name, None)
    if method is None:
        return callable(getattr(observer, name, None))  # an object with its own attribute
    return method is not getattr(Observer, name)


_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _report(observer: Any, hook: str, error: Exception) -> None:
    key = (type(observer).__qualname__, type(error).__name__)
    with _reported_lock:
        first = key not in _reported
        _reported.add(key)
    # The error's text is not logged: an observer's message could hold anything.
    logger.log(
        logging.WARNING if first else logging.DEBUG,
        "llmpool observer %s raised %s in %s; the call goes on",
        key[0],
        key[1],
        hook,
        extra=log_fields("observer_error", observer=key[0], error_class=key[1]),
    )


class Hooks:
    """Every observer of a chain, and for each hook the observers that implement it.

    Args:
        observers: The observers, in the order they are called.

    Example:
        >>> hooks = Hooks([Observer()])
        >>> hooks.every_call, hooks.wants("on_failover")
        (True, False)
    """

    __slots__ = ("_dynamic", "_every", "_targets", "observers")

    def __init__(self, observers: Iterable[Any]) -> None:
        self.observers: tuple[Any, ...] = tuple(observers)
        self._targets: dict[str, tuple[tuple[Any, Callable[[Any], None]], ...]] = {
            name: tuple((o, getattr(o, name)) for o in self.observers if _overrides(o, name))
            for name in HOOKS
        }
        static = []
        dynamic = []
        for observer in self.observers:
            attribute = inspect.getattr_static(type(observer), "every_call", None)
            if isinstance(attribute, property):
                dynamic.append(observer)
            elif getattr(observer, "every_call", True):
                static.append(observer)
        self._every = bool(static)
        self._dynamic = tuple(dynamic)

    def __repr__(self) -> str:
        names = ", ".join(type(o).__name__ for o in self.observers)
        return f"Hooks([{names}])"

    @property
    def every_call(self) -> bool:
        """Whether some observer wants the events of healthy calls (checked at each call)."""
        if self._every:
            return True
        for observer in self._dynamic:  # noqa: SIM110 (asked at every call: no generator)
            if observer.every_call:
                return True
        return False

    def wants(self, hook: str) -> bool:
        """Whether any observer implements ``hook`` (e.g. ``"on_attempt"``)."""
        return bool(self._targets[hook])

    def emit(self, hook: str, event: Any) -> None:
        """Hand ``event`` to every observer implementing ``hook``; an error is reported."""
        for observer, method in self._targets[hook]:
            try:
                method(event)
            except Exception as error:  # an observer never breaks a call
                _report(observer, hook, error)

    def with_observers(self, observers: Iterable[Any]) -> Hooks:
        """Return hooks with ``observers`` added after these (an observer already here is
        not added twice)."""
        extra = [o for o in observers if all(o is not mine for mine in self.observers)]
        return self if not extra else Hooks((*self.observers, *extra))


_builtin: tuple[Any, ...] | None = None
_builtin_lock = threading.Lock()


def builtin_observers() -> tuple[Any, ...]:
    """The observers every chain has: logging, and OpenTelemetry when its API is installed.

    Made once per process, on first use (never at import).
    """
    global _builtin
    if _builtin is None:
        with _builtin_lock:
            if _builtin is None:
                from llmpool.observe.logs import LoggingObserver
                from llmpool.observe.otel import OpenTelemetryObserver, otel_installed

                found: list[Any] = [LoggingObserver()]
                if otel_installed():
                    found.append(OpenTelemetryObserver())
                _builtin = tuple(found)
    return _builtin
