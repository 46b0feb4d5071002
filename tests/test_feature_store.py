"""Feature store: exact round trip, atomic writes, and detection of damaged stores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from avf.data import TFRecordWriter, encode_frame_example, encode_video_example, iter_records
from avf.data.feature_store import FeatureStore, convert
from avf.data.vocabulary import file_sha256
from avf.errors import InputError, SchemaError
from conftest import random_frame_videos, random_videos


def _write_shards(root, rows_per_shard, encode):
    root.mkdir(parents=True, exist_ok=True)
    for index, rows in enumerate(rows_per_shard):
        with TFRecordWriter(root / f"train{index:04d}.tfrecord") as writer:
            for row in rows:
                writer.write(encode(*row))
    return root


@pytest.fixture
def video_dir(tmp_path):
    return _write_shards(tmp_path / "video", [random_videos(s, 40, classes=50) for s in range(3)], encode_video_example)


@pytest.fixture
def frame_dir(tmp_path):
    return _write_shards(tmp_path / "frame", [random_frame_videos(s, 6, classes=50) for s in range(2)], encode_frame_example)


def test_video_store_round_trip(video_dir, tmp_path):
    manifest = convert(video_dir, tmp_path / "store", num_classes=50)
    store = FeatureStore(tmp_path / "store")
    records = list(iter_records(video_dir, num_classes=50))
    assert len(store) == manifest["videos"] == len(records) == 120
    assert manifest["level"] == "video" and store.rgb.dtype == np.float16
    assert store.ids == [r.id for r in records]
    for index, record in enumerate(records):
        assert np.array_equal(store.labels(index), record.labels)
        rgb, audio = store.features(index)
        assert np.array_equal(rgb, record.rgb.astype(np.float16).astype(np.float32))
        assert np.array_equal(audio, record.audio.astype(np.float16).astype(np.float32))
    # Sources are traced by content.
    for source in manifest["sources"]:
        assert source["sha256"] == file_sha256(source["path"]) and source["records"] == 40
    assert json.loads((tmp_path / "store" / "manifest.json").read_text()) == manifest


def test_float32_store_is_exact_and_batches_gather(video_dir, tmp_path):
    convert(video_dir, tmp_path / "store", num_classes=50, feature_dtype="float32")
    store = FeatureStore(tmp_path / "store")
    records = list(iter_records(video_dir, num_classes=50))
    picks = [7, 0, 119, 7]
    rgb, audio, labels = store.batch(picks)
    assert np.array_equal(rgb, np.stack([records[i].rgb for i in picks]))
    assert np.array_equal(audio, np.stack([records[i].audio for i in picks]))
    for row, i in zip(labels, picks):
        assert set(np.flatnonzero(row)) == set(records[i].labels.tolist())


def test_torch_dataset_and_dataloader(video_dir, tmp_path):
    torch = pytest.importorskip("torch")
    from avf.data.torch_dataset import FeatureStoreDataset

    convert(video_dir, tmp_path / "store", num_classes=50, feature_dtype="float32")
    dataset = FeatureStoreDataset(tmp_path / "store")
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=False)
    batches = list(loader)
    assert [b[0].shape for b in batches][0] == (32, 1024)
    rgb = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[2] for b in batches])
    records = list(iter_records(video_dir, num_classes=50))
    assert torch.equal(rgb, torch.from_numpy(np.stack([r.rgb for r in records])))
    assert labels.shape == (120, 50) and int(labels.sum()) == sum(r.labels.size for r in records)
    single = dataset[5]
    assert torch.equal(single[0], rgb[5]) and torch.equal(single[2], labels[5])


def test_frame_store_keeps_uint8_codes(frame_dir, tmp_path):
    manifest = convert(frame_dir, tmp_path / "fstore", num_classes=50)
    store = FeatureStore(tmp_path / "fstore")
    raw = list(iter_records(frame_dir, num_classes=50, dequantize_frames=False))
    dequantized = list(iter_records(frame_dir, num_classes=50))
    assert manifest["level"] == "frame" and store.rgb.dtype == np.uint8
    assert manifest["total_frames"] == sum(r.num_frames for r in raw)
    for index, (codes, values) in enumerate(zip(raw, dequantized)):
        start, end = store.frame_offsets[index], store.frame_offsets[index + 1]
        assert np.array_equal(store.rgb[start:end], codes.rgb)
        rgb, audio = store.features(index)
        assert np.array_equal(rgb, values.rgb) and np.array_equal(audio, values.audio)
    with pytest.raises(ValueError, match="video-level stores"):
        store.batch([0])


def test_existing_store_needs_force_and_force_replaces(video_dir, tmp_path):
    target = tmp_path / "store"
    convert(video_dir, target, num_classes=50)
    before = (target / "manifest.json").read_text()
    with pytest.raises(InputError, match="already exists"):
        convert(video_dir, target, num_classes=50)
    assert (target / "manifest.json").read_text() == before
    manifest = convert(str(video_dir / "train0000.tfrecord"), target, num_classes=50, force=True)
    assert manifest["videos"] == 40 and len(FeatureStore(target)) == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "video"]


def test_failed_conversion_leaves_nothing(video_dir, tmp_path):
    bad = video_dir / "train0002.tfrecord"
    data = bytearray(bad.read_bytes())
    data[-50] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="train0002.tfrecord"):
        convert(video_dir, tmp_path / "store", num_classes=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video"]  # no store, no temp dir


def test_labels_outside_class_count_and_mixed_levels(video_dir, frame_dir, tmp_path):
    with pytest.raises(SchemaError, match="outside the vocabulary of 10 classes"):
        convert(video_dir, tmp_path / "s1", num_classes=10)
    with pytest.raises(InputError, match="is not video-level"):
        convert([video_dir / "train0000.tfrecord", frame_dir / "train0000.tfrecord"], tmp_path / "s2", num_classes=50)
    assert not (tmp_path / "s1").exists() and not (tmp_path / "s2").exists()


def test_damaged_store_is_refused(video_dir, tmp_path):
    target = tmp_path / "store"
    convert(video_dir, target, num_classes=50)
    rgb = target / "rgb.npy"
    rgb.write_bytes(rgb.read_bytes()[: -2048 * 3])
    with pytest.raises(InputError, match="rgb.npy"):
        FeatureStore(target)
    with pytest.raises(InputError, match="not a feature store"):
        FeatureStore(video_dir)


def test_vocabulary_beside_the_shards_sets_the_class_count(video_dir, tmp_path):
    (video_dir / "vocabulary.csv").write_text("Index,Name\n" + "".join(f"{i},class {i}\n" for i in range(60)))
    manifest = convert(video_dir, tmp_path / "store")
    assert manifest["num_classes"] == 60 and manifest["vocabulary"]["classes"] == 60


def test_all_real_shards_convert(real_data, tmp_path):
    manifest = convert(real_data, tmp_path / "real")
    store = FeatureStore(tmp_path / "real")
    assert manifest["num_classes"] == 3862 and manifest["vocabulary"]["classes"] == 3862
    shards = sorted(real_data.glob("*.tfrecord"))
    assert len(manifest["sources"]) == len(shards) >= 100 and len(store) == manifest["videos"] > 28_000
    rgb, _, labels = store.batch(np.arange(0, len(store), 97))
    assert np.isfinite(rgb).all() and labels.sum(1).min() >= 1


def test_subset_of_a_store_equals_converting_its_shards(video_dir, tmp_path, frame_dir):
    from avf.data.feature_store import subset

    convert(video_dir, tmp_path / "parent", num_classes=50)
    shards = sorted(video_dir.glob("*.tfrecord"))
    convert([shards[0], shards[2]], tmp_path / "direct", num_classes=50)
    manifest = subset(tmp_path / "parent", tmp_path / "cut", [shards[0].name, shards[2].name])
    cut, direct = FeatureStore(tmp_path / "cut"), FeatureStore(tmp_path / "direct")
    assert len(cut) == len(direct) == manifest["videos"] == 80
    for name in ("rgb", "audio", "label_indptr", "label_indices", "ids"):
        a, b = np.asarray(cut._arrays[name]), np.asarray(direct._arrays[name])
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert [s["sha256"] for s in manifest["sources"]] == [file_sha256(shards[0]), file_sha256(shards[2])]

    with pytest.raises(InputError, match="holds no rows from other0000.tfrecord"):
        subset(tmp_path / "parent", tmp_path / "bad", ["other0000.tfrecord"])
    with pytest.raises(InputError, match="exists"):
        subset(tmp_path / "parent", tmp_path / "cut", [shards[1].name])
    subset(tmp_path / "parent", tmp_path / "cut", [shards[1].name], force=True)
    assert len(FeatureStore(tmp_path / "cut")) == 40
    with pytest.raises(InputError, match="is an input|inside"):
        subset(tmp_path / "parent", tmp_path / "parent", [shards[1].name], force=True)
    convert(frame_dir, tmp_path / "frames", num_classes=50)
    with pytest.raises(InputError, match="video-level"):
        subset(tmp_path / "frames", tmp_path / "f", ["train0000.tfrecord"])
    assert not (tmp_path / "bad").exists() and not (tmp_path / "f").exists()
