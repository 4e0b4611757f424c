"""`Flusher`: the background thread of what queues on the call path and writes in batches (the
usage meter, the feedback log). It starts at its owner's first use (an owner never used starts
none), runs each step on its own interval, and stops at ``close`` or at the interpreter's exit,
where its owner flushes the rest.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from llmpool.contracts import log_fields

__all__ = ["Flusher"]

logger = logging.getLogger("llmpool.usage")

#: Every flusher started and not stopped: its owner's ``close`` runs at exit.
_open: weakref.WeakSet[Flusher] = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    for flusher in list(_open):
        close = flusher.close()
        if close is not None:
            close()


class Flusher:
    """Runs each ``(interval, step)`` of ``steps`` every ``interval`` seconds (``0``: never) on a
    daemon thread called ``name``; ``close`` is the owner's, called at exit if it was not."""

    def __init__(
        self,
        name: str,
        steps: Sequence[tuple[float, Callable[[], object]]],
        close: Callable[[], object],
    ) -> None:
        self.name = name
        self.steps = [(interval, step) for interval, step in steps if interval > 0]
        self.close = weakref.WeakMethod(close)  # the owner's: it may be collected
        self.started = False  # read on the call path: set once started, or stopped
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread once (not after `stop`)."""
        with self._lock:
            if self.started:
                return
            self.started = True
        _open.add(self)
        if self.steps:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread (waiting up to 5 s for a step under way); none starts after."""
        with self._lock:
            self.started = True
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
        _open.discard(self)

    def _run(self) -> None:
        tick = min(interval for interval, _ in self.steps)
        due = [time.monotonic() + interval for interval, _ in self.steps]
        while not self._stopped.wait(tick):
            for index, (interval, step) in enumerate(self.steps):
                if time.monotonic() < due[index]:
                    continue
                try:
                    step()
                except Exception:  # the thread outlives any surprise; failures log themselves
                    text = "%s: a background step failed"
                    logger.exception(text, self.name, extra=log_fields("flusher_failed"))
                due[index] = time.monotonic() + interval
