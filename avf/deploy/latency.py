"""Single-stream latency as MLPerf measures it: one request at a time, after warm-up, percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure_latency(run: Callable[[], object], warmup: int = 20, min_iterations: int = 100,
                    min_seconds: float = 1.0, max_iterations: int = 100_000) -> dict:
    """Time ``run()`` back to back; at least ``min_iterations`` calls and ``min_seconds`` of timing.

    Returns milliseconds: p50, p90, p99, mean, min, max, and the number of timed calls.
    """
    for _ in range(warmup):
        run()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_iterations and (len(times) < min_iterations or time.perf_counter() - started < min_seconds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "max_ms": float(ms.max()), "iterations": len(ms), "warmup": warmup,
            "method": "single-stream: back-to-back calls after warm-up, time.perf_counter per call"}
