"""Single-stream latency statistics come from real timed calls."""

import time

from avf.deploy.latency import measure_latency


def test_latency_percentiles_are_ordered_and_reflect_the_work():
    fast = measure_latency(lambda: None, warmup=2, min_iterations=50, min_seconds=0.0)
    slow = measure_latency(lambda: time.sleep(0.002), warmup=2, min_iterations=20, min_seconds=0.0)
    for result in (fast, slow):
        assert result["min_ms"] <= result["p50_ms"] <= result["p90_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert fast["iterations"] >= 50 and slow["iterations"] >= 20
    assert slow["p50_ms"] >= 2.0 > fast["p50_ms"]
