"""Synthetic data: real schema, deterministic, shaped like YouTube-8M, and learnable in the right order."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from avf.data import dequantize, iter_batches, iter_records
from avf.data.synthetic import VOCABULARY_COLUMNS, synthesize
from avf.errors import InputError
from avf.metrics import gap


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "video"
    summary = synthesize(out, videos=4000, classes=100, seed=0)
    return out, summary


def _load(out, split, classes):
    (batch,) = list(iter_batches(sorted(out.glob(f"{split}*.tfrecord")), 1_000_000, classes))
    return batch


def test_files_schema_and_vocabulary(video_set):
    out, summary = video_set
    assert summary.videos == {"train": 3200, "validate": 400, "test": 400}
    records = list(iter_records(out, num_classes=100))
    assert len(records) == 4000 and {r.level for r in records} == {"video"}
    assert len({r.id for r in records}) == 4000 and all(len(r.id) == 4 for r in records)
    assert all(r.rgb.shape == (1024,) and r.audio.shape == (128,) for r in records[:50])
    with open(out / "vocabulary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0].keys()) == VOCABULARY_COLUMNS and len(rows) == 100
    train = _load(out, "train", 100)
    counts = np.bincount(train.label_indices, minlength=100)
    assert [int(r["TrainVideoCount"]) for r in rows] == counts.tolist()
    settings = json.loads((out / "synthesis.json").read_text())
    assert settings["seed"] == 0 and len(settings["class_has_audio_evidence"]) == 100


def test_shaped_like_the_real_data(video_set):
    out, _ = video_set
    train = _load(out, "train", 100)
    per_video = np.diff(train.label_indptr)
    assert per_video.min() >= 1 and 2.5 <= per_video.mean() <= 3.5
    counts = np.sort(np.bincount(train.label_indices, minlength=100))[::-1]
    assert counts[:10].sum() / counts.sum() > 0.4  # long tail: top 10% of classes hold > 40%
    # Values spread like real mean features (std ~0.46 rgb, ~0.69 audio), within [-2, 2].
    assert 0.3 < train.rgb.std() < 0.7 and 0.4 < train.audio.std() < 0.9
    assert np.abs(train.rgb).max() <= 2.0
    # Topics make labels co-occur: the most frequent pair is far above independence.
    dense = train.labels_dense(100)
    co = dense.T @ dense
    np.fill_diagonal(co, 0)
    p = dense.mean(0)
    i, j = np.unravel_index(np.argmax(co), co.shape)
    assert co[i, j] / len(dense) > 3 * p[i] * p[j]


def _fit_gap(torch, x, y, xv, yv):
    torch.manual_seed(0)
    x, y = torch.tensor(x), torch.tensor(y)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, y.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(30):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 128):
            idx = order[start : start + 128]
            optimizer.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(model(x[idx]), y[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        return gap(torch.sigmoid(model(torch.tensor(xv))).numpy(), yv)


def test_fusion_beats_visual_beats_audio(video_set):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    out, _ = video_set
    train, val = _load(out, "train", 100), _load(out, "validate", 100)
    y, yv = train.labels_dense(100), val.labels_dense(100)
    audio = _fit_gap(torch, train.audio, y, val.audio, yv)
    visual = _fit_gap(torch, train.rgb, y, val.rgb, yv)
    fusion = _fit_gap(torch, np.hstack([train.rgb, train.audio]), y, np.hstack([val.rgb, val.audio]), yv)
    assert fusion > visual + 0.02 and visual > audio + 0.02, (audio, visual, fusion)
    assert 0.5 < fusion < 0.97  # learnable, not trivial


def test_deterministic_per_seed(tmp_path):
    a = synthesize(tmp_path / "a", videos=60, classes=20, seed=3)
    synthesize(tmp_path / "b", videos=60, classes=20, seed=3)
    synthesize(tmp_path / "c", videos=60, classes=20, seed=4)
    for name in a.files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train0000.tfrecord").read_bytes() != (tmp_path / "c" / "train0000.tfrecord").read_bytes()


def test_frame_level(tmp_path):
    summary = synthesize(tmp_path / "f", videos=30, classes=12, level="frame", seed=1)
    assert summary.videos == {"train": 24, "validate": 3, "test": 3}
    raw = list(iter_records(tmp_path / "f", num_classes=12, dequantize_frames=False))
    values = list(iter_records(tmp_path / "f", num_classes=12))
    for codes, record in zip(raw, values):
        assert record.level == "frame" and 30 <= record.num_frames <= 300
        assert codes.rgb.dtype == np.uint8 and np.array_equal(dequantize(codes.rgb), record.rgb)
    validate = [r for r in values if r.source.endswith("validate0000.tfrecord")]
    assert validate and all(r.segment_start_times is not None for r in validate)
    for record in validate:
        assert np.all(record.segment_start_times % 5 == 0) and np.all(record.segment_start_times < record.num_frames)
        assert set(record.segment_labels.tolist()) <= set(record.labels.tolist())
        assert set(record.segment_scores.tolist()) <= {0.0, 1.0}
    assert all(r.segment_start_times is None for r in values if "train" in r.source)


def test_existing_output_and_interruption_leave_nothing_half_written(tmp_path):
    out = tmp_path / "out"
    synthesize(out, videos=20, classes=5)
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(InputError, match="already exists"):
        synthesize(out, videos=20, classes=5)
    assert sorted(p.name for p in out.iterdir()) == before

    def explode(_):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "new", videos=3000, classes=5, videos_per_shard=100, progress=explode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        synthesize("/tmp/never", level="clip")
    with pytest.raises(ValueError, match="videos"):
        synthesize("/tmp/never", videos=3)
    with pytest.raises(ValueError, match="classes"):
        synthesize("/tmp/never", classes=1)
