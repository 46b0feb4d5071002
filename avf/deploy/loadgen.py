"""MLPerf LoadGen scenarios (SingleStream, MultiStream, Server, Offline) around any avf runner.

avf-bench's own loops are MLPerf-style; what edge vendors report is LoadGen's: its query traffic (Poisson
arrivals in Server, 8-sample queries in MultiStream), its minimum query counts and durations, and its
early-stopping percentile estimates. This drives the same runner avf-bench times through LoadGen's Python
API (the ``mlcommons-loadgen`` package, the ``loadgen`` extra) in performance mode, on samples drawn from
the data given (or seeded random features of the model's shape), and keeps LoadGen's own summary and
detail logs beside the bench record.

In the Server scenario queries are answered from one worker thread fed by a queue, so LoadGen's issuing
thread never waits on inference (its Poisson arrival times need that); in the others LoadGen issues a query
only when the last one is done, so they are answered on its own thread, with no hand-off in the figure. A
query's samples run as one batch (Offline's: batches of 256).
"""

from __future__ import annotations

import queue
import re
import threading
from pathlib import Path

import numpy as np

from avf.errors import InputError

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
EXTRA = "pip install 'avf[loadgen]'"
SUMMARY_FILE = "mlperf_log_summary.txt"
DETAIL_FILE = "mlperf_log_detail.txt"


def check_loadgen(scenario: str, target_qps: float | None):
    """LoadGen's module, once the scenario and its settings are known to make a run: the one check of both, made
    before any model is loaded (avf-bench) and again by :func:`run_loadgen`."""
    if scenario not in SCENARIOS:
        raise InputError(None, f"--loadgen {scenario}: choose one of {', '.join(SCENARIOS)}")
    if scenario == "Server" and not target_qps:
        raise InputError(None, "--loadgen Server needs --target-qps (the Poisson arrival rate to test)")
    try:
        import mlperf_loadgen
    except ImportError:
        raise InputError(None, f"--loadgen needs MLPerf LoadGen ({EXTRA}, the mlcommons-loadgen package)") from None
    return mlperf_loadgen


def parse_summary(text: str) -> dict:
    """LoadGen's summary ``key : value`` lines as a dict (numbers as numbers)."""
    out: dict = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([^:=]+?)\s*:\s*(.+?)\s*$", line)
        if not match or line.startswith("="):
            continue
        key, value = match.groups()
        try:
            out[key] = int(value) if re.fullmatch(r"-?\d+", value) else float(value)
        except ValueError:
            out[key] = value
    return out


def _expected_latency_s(run, rgb: np.ndarray, audio: np.ndarray, batch: int) -> float:
    """The median of 20 timed calls at ``batch`` (after 5 warm-ups): LoadGen's expected query latency."""
    import time

    index = np.arange(batch) % len(rgb)
    for _ in range(5):
        run(rgb[index], audio[index])
    times = []
    for _ in range(20):
        started = time.perf_counter()
        run(rgb[index], audio[index])
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def run_loadgen(run, scenario: str, out_dir: Path, inputs: tuple[np.ndarray, np.ndarray], *,
                min_duration_s: float = 5.0, min_query_count: int = 100, target_qps: float | None = None,
                target_latency_ms: float | None = None, samples_per_query: int = 8) -> dict:
    """LoadGen ``scenario`` in performance mode against ``run(rgb, audio) -> probabilities``; returns the parsed
    summary with the settings used, LoadGen's logs written to ``out_dir``.

    ``inputs`` are the sample pool (rgb, audio rows), all loaded up front (the QSL's performance set).
    Server needs ``target_qps`` (and takes ``target_latency_ms``, LoadGen's default otherwise).
    """
    lg = check_loadgen(scenario, target_qps)
    rgb, audio = (np.ascontiguousarray(a, np.float32) for a in inputs)
    count = len(rgb)
    expected = _expected_latency_s(run, rgb, audio, samples_per_query if scenario == "MultiStream" else
                                   256 if scenario == "Offline" else 1)
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.PerformanceOnly
    settings.min_duration_ms = int(min_duration_s * 1000)
    settings.min_query_count = int(min_query_count)
    # LoadGen pre-generates its queries from the expected latency: too high an estimate ends the run early.
    if scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = max(1, int(expected * 1e9))
    if scenario == "MultiStream":
        settings.multi_stream_samples_per_query = int(samples_per_query)
        settings.multi_stream_expected_latency_ns = max(1, int(expected * 1e9))
    if scenario == "Server":
        settings.server_target_qps = float(target_qps)
        if target_latency_ms:
            settings.server_target_latency_ns = int(target_latency_ms * 1e6)
    if scenario == "Offline":
        settings.offline_expected_qps = float(target_qps or 256 / expected)

    work: queue.Queue = queue.Queue()
    kept: list = []  # response buffers stay alive until LoadGen has read them
    failures: list[BaseException] = []

    def answer(samples) -> None:
        try:
            index = np.fromiter((s.index for s in samples), np.int64, len(samples))
            probabilities = np.ascontiguousarray(run(rgb[index], audio[index]), np.float32)
            kept.append(probabilities)
            if len(kept) > 64:
                del kept[:32]
            lg.QuerySamplesComplete([lg.QuerySampleResponse(sample.id, probabilities[row].ctypes.data,
                                                            probabilities[row].nbytes)
                                     for row, sample in enumerate(samples)])
        except BaseException as exc:  # reported after the test; LoadGen still needs its answers
            failures.append(exc)
            lg.QuerySamplesComplete([lg.QuerySampleResponse(s.id, 0, 0) for s in samples])

    def worker() -> None:
        while (samples := work.get()) is not None:
            answer(samples)

    thread = threading.Thread(target=worker, name="avf-loadgen-sut", daemon=True)
    thread.start()

    def issue(samples) -> None:
        samples = list(samples)
        for start in range(0, len(samples), 256):  # Offline's one query of every sample: batches of 256
            if scenario == "Server":  # Poisson arrivals must not wait on inference: the worker answers them
                work.put(samples[start:start + 256])
            else:  # LoadGen issues the next query after this one completes: answered on its thread, no hand-off
                answer(samples[start:start + 256])

    sut = lg.ConstructSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(count, count, lambda indices: None, lambda indices: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = lg.LogSettings()
    log.log_output.outdir = str(out_dir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False
    try:
        lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        work.put(None)
        thread.join(timeout=30)
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if failures:
        raise InputError(None, f"LoadGen {scenario}: the model failed on a query: {failures[0]}")
    summary_path = out_dir / SUMMARY_FILE
    if not summary_path.is_file():
        raise InputError(out_dir, "LoadGen wrote no summary")
    summary = parse_summary(summary_path.read_text())
    return {"scenario": scenario, "summary": summary, "samples": count,
            "settings": {"min_duration_s": min_duration_s, "min_query_count": min_query_count,
                         "expected_query_latency_ms": expected * 1e3,
                         "target_qps": target_qps, "target_latency_ms": target_latency_ms,
                         "samples_per_query": samples_per_query if scenario == "MultiStream" else None},
            "files": [p.name for p in sorted(out_dir.iterdir()) if p.name.startswith("mlperf_log")],
            "method": "MLPerf LoadGen performance mode over avf's runner (Server: one worker thread answers the "
                      "queries; the others: answered as issued; a query's samples run as one batch)"}
