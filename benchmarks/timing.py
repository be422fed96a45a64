"""Timing helper shared by the benchmarks."""

from __future__ import annotations

import time


def best_time(fn, repeat: int = 3) -> float:
    """The shortest of ``repeat`` wall-clock timings of ``fn()`` in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
