"""Timing shared by the benchmark scripts (a helper module: ``make bench`` skips it)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int):
    """(compile s, median run s, result): first call minus the median of ``repeats``
    calls made after one warm-up call."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    fn()  # warm-up
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    run = statistics.median(times)
    return max(first - run, 0.0), run, result
