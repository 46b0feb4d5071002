"""The retention gate's lower bound: GAP on resampled videos is GAP on those videos, the paired bootstrap
bound behaves, and avf-compress / avf tune hold the bound (not the estimate) to the bar when asked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from avf.compress.retention import gap_ratio_bound, gate
from avf.metrics import EvaluationAccumulator


def _scores(videos=300, classes=40, seed=0, noise=0.0, decimals=None):
    rng = np.random.default_rng(seed)
    labels = rng.random((videos, classes)) < 0.05
    predictions = rng.random((videos, classes)) * 0.6 + labels * 0.4
    if noise:
        predictions = predictions + np.random.default_rng(seed + 1).normal(0, noise, predictions.shape)
    if decimals is not None:
        predictions = np.round(predictions, decimals)  # many ties, within and across videos
    return predictions.astype(np.float32), labels


def _accumulate(predictions, labels, top_k=20, batch=64):
    accumulator = EvaluationAccumulator(labels.shape[1], top_k)
    for start in range(0, len(labels), batch):
        accumulator.add(predictions[start:start + batch], labels[start:start + batch])
    return accumulator


@pytest.mark.parametrize("decimals", [None, 1])
def test_gap_of_a_resample_is_the_gap_of_those_videos_evaluated_again(decimals):
    predictions, labels = _scores(decimals=decimals)
    accumulator = _accumulate(predictions, labels, top_k=7)
    assert accumulator.gap_resampled(np.ones((1, len(labels)), int))[0] == pytest.approx(accumulator.gap(), abs=1e-12)
    rng = np.random.default_rng(5)
    for _ in range(3):
        counts = np.bincount(rng.integers(0, len(labels), len(labels)), minlength=len(labels))
        rows = np.repeat(np.arange(len(labels)), counts)  # the resample as an evaluation set of its own
        again = _accumulate(predictions[rows], labels[rows], top_k=7)
        assert accumulator.gap_resampled(counts[None])[0] == pytest.approx(again.gap(), abs=1e-12)
    with pytest.raises(ValueError, match="columns"):
        accumulator.gap_resampled(np.ones((1, 3), int))


def test_the_bound_is_paired_seeded_and_below_a_noisy_models_estimate():
    predictions, labels = _scores(videos=600)
    reference = _accumulate(predictions, labels)
    same = gap_ratio_bound(reference, _accumulate(predictions, labels), 0.95)
    assert same["lower"] == 1.0 and same["resamples"] == 1000  # a model against itself: no doubt at all
    noisy = _accumulate(*_scores(videos=600, noise=0.15))
    ratio = noisy.gap() / reference.gap()
    bound = gap_ratio_bound(reference, noisy, 0.95)
    assert bound["lower"] < ratio and bound == gap_ratio_bound(reference, noisy, 0.95)  # below, and reproducible
    assert gap_ratio_bound(reference, noisy, 0.99)["lower"] < bound["lower"] < gap_ratio_bound(reference, noisy, 0.5)[
        "lower"]


def test_the_gate_holds_the_bound_only_when_asked_and_says_which():
    comparison = {"ratios": {"gap": 0.993}, "reference": {"gap": 0.8}, "compressed": {"gap": 0.7944},
                  "gap_bound": {"confidence": 0.95, "lower": 0.987}}
    assert gate(comparison, 0.99) == (True, "GAP retention 0.9930 >= 0.99")
    accepted, reason = gate(comparison, 0.99, 0.95)
    assert not accepted and "its 95% lower bound 0.9870" in reason and "< 0.99" in reason
    accepted, reason = gate(comparison, 0.99, 0.9)  # a bound at another confidence is no evidence for this one
    assert not accepted and "no 90% lower bound" in reason


def test_the_search_stops_where_the_bound_fails_not_where_the_estimate_does(monkeypatch):
    from avf.tune import search as searching
    from avf.tune.space import Setting

    # The estimate keeps 0.99 up to ratio 0.10; its lower bound (0.005 below) only up to 0.05.
    def record(setting: Setting) -> dict:
        retention = 1.0 - setting.ratio / 10
        return {"retention": retention, "retention_lower": retention - 0.005}

    monkeypatch.setattr(searching, "evaluate", lambda ctx, setting: record(setting))
    grid = [0.0, 0.05, 0.10, 0.15, 0.20]
    make = lambda ratio: Setting(ratio, "fp32")  # noqa: E731
    held = SimpleNamespace(options=SimpleNamespace(min_retention=0.99, retention_confidence=0.95))
    estimate = SimpleNamespace(options=SimpleNamespace(min_retention=0.99, retention_confidence=0.0))
    assert searching.bisect(held, grid, make, len(grid)) == (1, 2)
    assert searching.bisect(estimate, grid, make, len(grid)) == (2, 3)
    context = SimpleNamespace(options=held.options, max_latency_ms=10.0, max_memory_mib=100.0,
                              profile=SimpleNamespace(kind="cpu", preferred_backend="onnxruntime"))
    at_edge = {**record(make(0.10)), "cost": {"status": "measured", "latency_p99_ms": 1.0, "memory_mib": 1.0}}
    assert searching.misses(context, at_edge) == ["GAP retention 0.99000 (its 95% lower bound 0.98500) < 0.99"]
    assert searching.misses(context, {**at_edge, "retention_lower": None}) == [
        "GAP retention 0.99000 without a 95% lower bound < 0.99"]


@pytest.fixture(scope="module")
def trained(small_run, tmp_path_factory):
    source, checkpoint = small_run
    root = tmp_path_factory.mktemp("bound")
    shutil.copytree(source / "data", root / "data")
    shutil.copyfile(checkpoint, root / checkpoint.name)
    return root, root / checkpoint.name


def test_avf_compress_reports_the_bound_and_gates_on_it_when_asked(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    _, checkpoint = trained

    def compress(out, *args):
        return subprocess.run([sys.executable, "-m", "avf", "compress", str(checkpoint), "--int8", "-o", str(out),
                               *map(str, args)], capture_output=True, text=True, timeout=600)

    result = compress(tmp_path / "estimate", "--min-retention", 0.9)
    assert result.returncode == 0, result.stderr
    retention = json.loads((tmp_path / "estimate" / "report.json").read_text())["retention"]
    bound = retention["gap_bound"]
    assert bound["confidence"] == 0.95 and bound["resamples"] == 1000 and "paired" in bound["method"]
    assert bound["lower"] < retention["ratios"]["gap"] and "95% lower bound" in result.stdout
    # Asked to hold the bound to a bar between the bound and the estimate: rejected, exit 3, the bound named.
    bar = min((bound["lower"] + retention["ratios"]["gap"]) / 2, 1.0)
    assert bound["lower"] < bar <= retention["ratios"]["gap"]
    result = compress(tmp_path / "bound", "--min-retention", bar, "--retention-confidence", 0.95)
    assert result.returncode == 3, result.stderr
    report = json.loads((tmp_path / "bound" / "report.json").read_text())
    assert report["accepted"] is False and "95% lower bound" in report["reason"]
    assert report["options"]["retention_confidence"] == 0.95
    result = compress(tmp_path / "bad", "--retention-confidence", 1.0)
    assert result.returncode == 2 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1
