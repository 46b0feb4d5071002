"""tools/bench_compress.py end to end on tiny synthetic data (the real run is in docs/results/compress)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_compress.py"


def test_bench_compress_measures_every_row_against_one_reference(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    data = tiny_run / "data"  # 12 classes, fewer than top-20: agreement is top-12
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(TOOL), str(tiny_run / "run" / "last.pt"), "--eval",
                             str(data / "validate*.tfrecord"), "--train", str(data / "train*.tfrecord"), "--threads", "1",
                             "--prune", "0.5", "--seconds", "0.05", "--calib-size", "64", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 7 and rows[0]["gap_retention"] == 1.0 and rows[0]["top12_agreement"] == 1.0
    assert all(row["latency"]["p50_ms"] > 0 and row["bytes"] > 0 for row in rows)
    folded = next(row for row in rows if row["name"] == "avf-compress fold, FP32")
    assert abs(folded["gap_retention"] - 1.0) < 1e-3  # folding is lossless
    assert "| avf-compress fold, INT8 |" in (out / "table.md").read_text()
