"""The background thread of a `llmpool.usage.meter.UsageMeter`: flushes and budget readings.

One daemon thread per meter, started at the meter's first call (a pool that never calls starts
none). It wakes every ``flush_interval`` seconds to flush, and every ``budget_refresh`` seconds
to read the budgeted rows' spend when some row has a budget; `stop` wakes it at once.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmpool.usage.meter import UsageMeter

__all__ = ["Flusher"]

logger = logging.getLogger(__name__)


class Flusher:
    """Flushes a meter every ``flush_interval`` seconds and refreshes its budgets.

    Args:
        meter: The meter (its ``flush_interval`` and ``budget_refresh``; ``0`` turns a duty
            off).
    """

    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        alive = self._thread is not None and self._thread.is_alive()
        return f"<Flusher every {self.meter.flush_interval}s{' running' if alive else ''}>"

    def start(self) -> None:
        """Start the thread, unless both duties are off."""
        if self.meter.flush_interval <= 0 and self.meter.budget_refresh <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="llmpool-usage", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Wake the thread and wait (up to ``timeout`` seconds) for it to end."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        meter = self.meter
        intervals = [i for i in (meter.flush_interval, meter.budget_refresh) if i > 0]
        tick = min(intervals)
        now = time.monotonic()
        next_flush = now + meter.flush_interval
        next_read = now + meter.budget_refresh
        while not self._stopped.wait(tick):
            try:
                now = time.monotonic()
                if meter.flush_interval > 0 and now >= next_flush:
                    meter.flush()
                    next_flush = time.monotonic() + meter.flush_interval
                if meter.budget_refresh > 0 and now >= next_read and meter.budgeted:
                    meter.refresh_budgets()
                    next_read = time.monotonic() + meter.budget_refresh
            except Exception:  # the thread must outlive any surprise; the meter logs failures
                from llmpool.observe.fields import log_fields

                logger.exception(
                    "LLM usage flusher step failed", extra=log_fields("flusher_failed")
                )
