"""tools/reproduce_table.py end to end on tiny synthetic data (the real run is recorded in docs/results)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from avf.data.synthetic import synthesize

TOOL = Path(__file__).resolve().parents[1] / "tools" / "reproduce_table.py"


def test_reproduce_table_writes_tables_and_plot(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "data"
    synthesize(data, videos=300, classes=15, seed=3)
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = [sys.executable, str(TOOL), "--train", str(data / "train*.tfrecord"), "--val", str(data / "validate*.tfrecord"),
            "--models", "fc_audio,attend_fusion,attend_fusion_no_attention", "--epochs", "2", "--width", "32",
            "--lr", "3e-3", "--batch-size", "64", "--runs", str(runs), "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "table.csv")))
    assert [r["model"] for r in rows] == ["fc_audio", "attend_fusion", "attend_fusion_no_attention"]
    assert all(0 < float(r["gap"]) <= 100 and r["epochs"] == "2" for r in rows)
    table = (out / "table.md").read_text()
    assert "Table 1 shape" in table and "Table 3 shape" in table and "| FC Audio |" in table
    if (out / "gap_vs_params.png").exists():
        assert (out / "gap_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    # A second call reuses finished runs instead of training again.
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and ": training (" not in again.stdout
    # A run trained by another recipe is refused rather than reported under this one.
    other = subprocess.run([*args[:-4], "--identity-attention", *args[-4:]], capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "trained with another recipe (identity_attention=False)" in other.stderr
