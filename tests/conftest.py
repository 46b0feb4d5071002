"""Shared fixtures: TensorFlow-written reference records and the real shards when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# As the avf command does (avf.threads.set_passive_waiting), before torch loads: with one other busy
# process on a 2-core machine, spinning OpenMP threads made test_fusion_beats_visual_beats_audio
# take 332 s instead of 25 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "yt8m-video"


@pytest.fixture(scope="session")
def tf():
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="session")
def real_data() -> Path:
    if not (REAL_DATA / "validate0000.tfrecord").is_file():
        pytest.skip("real YouTube-8M shards (../shared/data/yt8m-video) not present")
    return REAL_DATA


def tf_video_example(tf, video_id: str, labels, rgb, audio) -> bytes:
    feature = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id.encode()])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=list(labels))),
        "mean_rgb": tf.train.Feature(float_list=tf.train.FloatList(value=list(rgb))),
        "mean_audio": tf.train.Feature(float_list=tf.train.FloatList(value=list(audio))),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def tf_frame_example(tf, video_id: str, labels, rgb_codes, audio_codes) -> bytes:
    context = {
        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[video_id.encode()])),
        "labels": tf.train.Feature(int64_list=tf.train.Int64List(value=list(labels))),
    }
    lists = {
        key: tf.train.FeatureList(feature=[
            tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])) for row in codes
        ])
        for key, codes in (("rgb", rgb_codes), ("audio", audio_codes))
    }
    return tf.train.SequenceExample(
        context=tf.train.Features(feature=context), feature_lists=tf.train.FeatureLists(feature_list=lists)
    ).SerializeToString()


def random_videos(seed: int, count: int, classes: int = 3862):
    """(id, labels, rgb, audio) tuples with real-like spreads."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        labels = np.sort(rng.choice(classes, size=rng.integers(0, 6), replace=False))
        out.append((f"v{seed:02d}{i:04d}", labels, rng.normal(0, 0.5, 1024).astype(np.float32),
                    rng.normal(0, 0.7, 128).astype(np.float32)))
    return out


def random_frame_videos(seed: int, count: int, classes: int = 3862):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        frames = int(rng.integers(1, 40))
        labels = np.sort(rng.choice(classes, size=rng.integers(1, 5), replace=False))
        out.append((f"f{seed:02d}{i:04d}", labels, rng.integers(0, 256, (frames, 1024), dtype=np.uint8),
                    rng.integers(0, 256, (frames, 128), dtype=np.uint8)))
    return out


@pytest.fixture(scope="session")
def tf_video_shards(tf, tmp_path_factory):
    """Three video-level shards written by TensorFlow's own TFRecordWriter."""
    root = tmp_path_factory.mktemp("tf_video")
    videos = {}
    for shard in range(3):
        path = root / f"train{shard:04d}.tfrecord"
        rows = random_videos(shard, 50)
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row in rows:
                writer.write(tf_video_example(tf, *row))
        videos[path] = rows
    return root, videos


@pytest.fixture(scope="session")
def tf_frame_shard(tf, tmp_path_factory):
    root = tmp_path_factory.mktemp("tf_frame")
    path = root / "train0000.tfrecord"
    rows = random_frame_videos(7, 12)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for row in rows:
            writer.write(tf_frame_example(tf, *row))
    return path, rows
