"""tools/learning_curve.py and the anchors' rows of tools/reproduce_table.py on tiny synthetic data."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from avf.data.feature_store import convert
from avf.data.synthetic import synthesize

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_learning_curve_trains_each_size_plots_and_reuses_runs(tmp_path):
    pytest.importorskip("torch")
    small, large = tmp_path / "small", tmp_path / "large"
    synthesize(small, videos=150, classes=10, seed=4)
    synthesize(large, videos=400, classes=10, seed=4)
    # One world (seed 4), so one vocabulary: the sizes differ only in its TrainVideoCount column, and data
    # of another vocabulary.csv (another sha256) is refused as validation data.
    (small / "vocabulary.csv").write_bytes((large / "vocabulary.csv").read_bytes())
    convert(str(small / "train*.tfrecord"), tmp_path / "train_s")
    convert(str(large / "train*.tfrecord"), tmp_path / "train_l")
    out, runs = tmp_path / "out", tmp_path / "runs"
    args = [sys.executable, str(TOOLS / "learning_curve.py"), "--sizes", f"{tmp_path / 'train_s'},{tmp_path / 'train_l'}",
            "--val", str(large / "validate*.tfrecord"), "--models", "fc_early_fusion,moe", "--epochs", "1",
            "--width", "16", "--batch-size", "64", "--lr", "3e-3", "--threads", "1", "--runs", str(runs), "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [(r["model"], r["size"]) for r in rows] == [("fc_early_fusion", "train_s"), ("fc_early_fusion", "train_l"),
                                                       ("moe", "train_s"), ("moe", "train_l")]
    assert int(rows[0]["videos"]) < int(rows[1]["videos"])
    text = (out / "curve.md").read_text()
    assert "per doubling" in text and "| moe |" in text
    if (out / "learning_curve.png").exists():
        assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and ": training" not in again.stdout
    other = subprocess.run([*args[:-4], "--batch-norm", *args[-4:]], capture_output=True, text=True, timeout=600)
    assert other.returncode != 0 and "another recipe (batch_norm)" in other.stderr
    # tools/ensemble_eval.py: each member and the mean of their probabilities
    members = [str(runs / m / "train_l" / "best.pt") for m in ("fc_early_fusion", "moe")]
    scored = subprocess.run([sys.executable, str(TOOLS / "ensemble_eval.py"), *members, "--data",
                             str(large / "validate*.tfrecord"), "--json"], capture_output=True, text=True, timeout=600)
    assert scored.returncode == 0, scored.stderr[-2000:]
    import json

    results = json.loads(scored.stdout)
    assert set(results) == {*members, "mean of probabilities"}
    assert all(0 < r["gap"] <= 1 for r in results.values())


def test_reproduce_table_lists_the_anchors_and_the_recipe(tmp_path):
    pytest.importorskip("torch")
    data = tmp_path / "data"
    synthesize(data, videos=200, classes=10, seed=5)
    out = tmp_path / "out"
    args = [sys.executable, str(TOOLS / "reproduce_table.py"), "--train", str(data / "train*.tfrecord"),
            "--val", str(data / "validate*.tfrecord"), "--models", "fc_early_fusion,moe,context_gating_moe",
            "--epochs", "1", "--width", "16", "--batch-size", "64", "--batch-norm", "--ema", "0.9", "--threads", "1",
            "--note", "shared machine", "--runs", str(tmp_path / "runs"), "--out", str(out)]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out / "table.md").read_text()
    assert "YouTube-8M challenge anchors" in table and "| MoE (starter code, 2 experts) |" in table
    assert "`--batch-norm`" in table and "weight EMA 0.9" in table and "shared machine" in table


def test_make_split_builds_the_recipe_and_cuts_nested_subsets_from_a_store(tmp_path):
    import json

    import numpy as np

    from avf.data.feature_store import FeatureStore

    data = tmp_path / "shards"
    for seed in range(3):  # three shards named as the recipe's pattern says
        synthesize(tmp_path / f"s{seed}", videos=60, classes=10, seed=seed)
        data.mkdir(exist_ok=True)
        (data / f"part{seed:04d}.tfrecord").write_bytes((tmp_path / f"s{seed}" / "train0000.tfrecord").read_bytes())
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"name": "t", "pattern": "part{:04d}.tfrecord", "standard": ["train"],
                                  "stores": {"train": {"shards": [[0, 2]]}, "first": {"shards": [[0, 0]]},
                                             "last": {"shards": [[2, 2]]}}}))
    tool = [sys.executable, str(TOOLS / "make_split.py"), str(recipe)]
    built = subprocess.run([*tool, "--data", str(data), "--out", str(tmp_path / "a"), "--all"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train").symlink_to(tmp_path / "a" / "train")  # a machine with the store but no shards
    cut = subprocess.run([*tool, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"),
                          "--only", "first,last", "--from-store", "train"], capture_output=True, text=True, timeout=300)
    assert cut.returncode == 0, cut.stderr[-2000:]
    for name in ("first", "last"):
        a, b = FeatureStore(tmp_path / "a" / name), FeatureStore(tmp_path / "b" / name)
        assert len(a) == len(b) > 0
        for column in ("rgb", "audio", "label_indptr", "label_indices", "ids"):
            assert np.array_equal(np.asarray(a._arrays[column]), np.asarray(b._arrays[column])), (name, column)
    again = subprocess.run([*tool, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"),
                            "--only", "first", "--from-store", "train"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "up to date" in again.stdout
