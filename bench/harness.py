"""Measuring: interleaved rounds, medians and p95, ratios against a baseline of the same run."""

from __future__ import annotations

import asyncio
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Row", "Sample", "compare", "compare_async_batch", "time_process"]


@dataclass
class Sample:
    """Per-call times of one subject, in nanoseconds, one value per batch."""

    name: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median per-call time."""
        return statistics.median(self.values)

    @property
    def p95(self) -> float:
        """95th percentile per-call time."""
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@dataclass
class Row:
    """One line of the results table."""

    measure: str
    subject: str
    value: str
    ratio: float | None = None
    target: str = ""
    verdict: str = ""


def compare(
    subjects: dict[str, Callable[[], object]], *, rounds: int, batch: int, warmup: int
) -> dict[str, Sample]:
    """Time each subject in interleaved rounds (ABAB...), so drift hits all of them alike."""
    for fn in subjects.values():
        for _ in range(warmup):
            fn()
    samples = {name: Sample(name) for name in subjects}
    # As timeit does: no garbage collection inside a timed batch, so one subject's garbage
    # is not collected on another's clock.
    enabled = gc.isenabled()
    try:
        for _ in range(rounds):
            for name, fn in subjects.items():
                gc.collect()
                gc.disable()
                started = time.perf_counter_ns()
                for _ in range(batch):
                    fn()
                elapsed = time.perf_counter_ns() - started
                gc.enable()
                samples[name].values.append(elapsed / batch)
    finally:
        if enabled:
            gc.enable()
    return samples


def compare_async_batch(
    subjects: dict[str, Callable[[], Awaitable[object]]], *, rounds: int, concurrency: int
) -> dict[str, Sample]:
    """Time ``concurrency`` concurrent calls of each subject, interleaved, per call."""

    async def one_round(fn: Callable[[], Awaitable[object]]) -> float:
        started = time.perf_counter_ns()
        await asyncio.gather(*(fn() for _ in range(concurrency)))
        return (time.perf_counter_ns() - started) / concurrency

    async def run() -> dict[str, Sample]:
        samples = {name: Sample(name) for name in subjects}
        for fn in subjects.values():  # warm-up
            await one_round(fn)
        for _ in range(rounds):
            for name, fn in subjects.items():
                samples[name].values.append(await one_round(fn))
        return samples

    return asyncio.run(run())


def time_process(code: str, *, repeat: int, env: dict[str, str] | None = None) -> Sample:
    """Wall time of ``python -c code`` in fresh interpreters, minus nothing (see baseline)."""
    sample = Sample(code)
    for _ in range(repeat):
        started = time.perf_counter_ns()
        subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
        sample.values.append(time.perf_counter_ns() - started)
    return sample
