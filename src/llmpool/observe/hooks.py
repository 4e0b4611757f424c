"""`Hooks`: hands each event to every `Observer` (`llmpool.contracts`) that implements its hook,
in the caller's thread; one that raises is logged once and never breaks a call.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from llmpool.contracts import Observer, log_fields

__all__ = ["HOOKS", "Hooks", "Observer", "builtin_observers"]

logger = logging.getLogger("llmpool.observe")

#: The methods an observer may override.
HOOKS = tuple(name for name in vars(Observer) if name.startswith("on_"))


def _asked_per_call(observer: Any) -> bool:
    return isinstance(inspect.getattr_static(type(observer), "every_call", None), property)


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
    level = logging.WARNING if first else logging.DEBUG
    text = "llmpool observer %s raised %s in %s; the call goes on"
    fields = {"observer": key[0], "error_class": key[1]}
    logger.log(level, text, *key, hook, extra=log_fields("observer_error", **fields))


class Hooks:
    """Every observer of a chain, in the order they are called, by the hooks they implement."""

    __slots__ = ("_asked", "_targets", "observers")

    def __init__(self, observers: Iterable[Any]) -> None:
        self.observers: tuple[Any, ...] = tuple(observers)
        self._targets: dict[str, tuple[tuple[Any, Callable[[Any], None]], ...]] = {
            name: tuple((o, getattr(o, name)) for o in self.observers if _overrides(o, name))
            for name in HOOKS
        }
        # The observers that may want every call: a property is asked at each call.
        self._asked = tuple(
            o for o in self.observers if _asked_per_call(o) or getattr(o, "every_call", True)
        )

    def __repr__(self) -> str:
        names = ", ".join(type(o).__name__ for o in self.observers)
        return f"Hooks([{names}])"

    @property
    def every_call(self) -> bool:
        """Whether some observer wants the events of healthy calls (checked at each call)."""
        for observer in self._asked:  # noqa: SIM110 (asked at every call: no generator)
            if getattr(observer, "every_call", True):
                return True
        return False

    def emit(self, hook: str, event: Any) -> None:
        """Hand ``event`` to every observer implementing ``hook``; an error is reported."""
        for observer, method in self._targets[hook]:
            try:
                method(event)
            except Exception as error:  # an observer never breaks a call
                _report(observer, hook, error)


_builtin: tuple[Any, ...] | None = None
_builtin_lock = threading.Lock()


def builtin_observers() -> tuple[Any, ...]:
    """The observers every chain has (logging; OpenTelemetry when installed), made once."""
    global _builtin
    with _builtin_lock:
        if _builtin is None:
            from llmpool.observe.logs import LoggingObserver
            from llmpool.observe.otel import OpenTelemetryObserver, otel_installed

            otel = (OpenTelemetryObserver(),) if otel_installed() else ()
            _builtin = (LoggingObserver(), *otel)
        return _builtin
