"""``avf-bench --loadgen SCENARIO``: MLPerf LoadGen over the same runner avf-bench times, on the CPU, with the real
``mlcommons-loadgen`` package (the ``loadgen`` extra)."""

from __future__ import annotations

import json

import pytest
from cli_harness import cli, snapshot

pytest.importorskip("onnxruntime")
pytest.importorskip("mlperf_loadgen")


@pytest.mark.parametrize("scenario", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_every_scenario_runs_and_keeps_its_logs(tiny_artifact, tmp_path, scenario):
    out = tmp_path / "bench.json"
    extra = ["--target-qps", 200] if scenario == "Server" else []
    code, _, err = cli("bench", tiny_artifact, "--scenario", "single-stream", "--duration", 0.2, "--loadgen", scenario,
                       "--loadgen-duration", 0.5, *extra, "-o", out)
    assert code == 0, err
    record = json.loads(out.read_text())
    loadgen = record["loadgen"]
    assert loadgen["scenario"] == scenario and loadgen["summary"]["Scenario"] == scenario
    assert loadgen["summary"]["Mode"] == "PerformanceOnly"
    logs = tmp_path / "bench.loadgen"
    assert (logs / "mlperf_log_summary.txt").is_file() and (logs / "mlperf_log_detail.txt").is_file()
    assert {"mlperf_log_summary.txt", "mlperf_log_detail.txt"} <= set(loadgen["files"])


def test_single_stream_p90_agrees_with_ours(tiny_artifact, tmp_path):
    """The same artifact, the same runner: LoadGen's SingleStream p90 and avf-bench's single-stream p90 measure one
    thing, so they agree within the noise of a shared 2-core machine: a factor of 3 either way, or 50 us (LoadGen's
    own per-query bookkeeping, which dominates a model that runs in microseconds)."""
    out = tmp_path / "bench.json"
    code, _, err = cli("bench", tiny_artifact, "--scenario", "single-stream", "--duration", 1, "--loadgen",
                       "SingleStream", "--loadgen-duration", 1, "--threads", 1, "-o", out)
    assert code == 0, err
    record = json.loads(out.read_text())
    ours = record["scenarios"]["single-stream"]["p90_ms"]
    theirs = record["loadgen"]["summary"]["90.00 percentile latency (ns)"] / 1e6
    assert 1 / 3 < theirs / ours < 3 or abs(theirs - ours) < 0.05, (ours, theirs)


def test_server_without_a_rate_is_refused_before_any_work(tiny_artifact, tmp_path):
    before = snapshot(tmp_path)
    code, _, err = cli("bench", tiny_artifact, "--loadgen", "Server", "-o", tmp_path / "b.json")
    assert code == 2 and "--target-qps" in err and err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_unknown_scenario_is_a_usage_error(tiny_artifact, tmp_path):
    code, _, err = cli("bench", tiny_artifact, "--loadgen", "Bursty", "-o", tmp_path / "b.json")
    assert code == 2 and "Bursty" in err
