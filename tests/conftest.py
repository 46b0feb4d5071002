"""Shared fixtures: TensorFlow-written reference records, the real shards when present, and the trained
models that many modules only read (trained once per session)."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from cli_harness import cli
from ssh_device import ssh_device  # noqa: F401  (a session fixture: the SSH device)

# A suite started in the background by a non-interactive shell (`pytest &`) inherits SIGINT ignored, and so would
# every avf process it starts: the Ctrl-C tests would then see their interrupt vanish and the command finish.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


# ----------------------------------------------------------------------------- trained once per session


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """``data/`` (200 synthetic videos, 12 classes) and ``run/``: a tiny Attend-Fusion (width 16) trained on it
    for one epoch with --val (``best.pt``, ``last.pt``), through the real command.

    Shared by every module that only reads a small trained model: a test that writes, writes under its own
    tmp_path (a module that must work inside the run's folder copies it, or trains its own)."""
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("tiny_run")
    assert cli("data", "synth", root / "data", "--videos", 200, "--classes", 12, "--seed", 3)[0] == 0
    code, _, err = cli("train", "-m", "attend_fusion", "--train", root / "data" / "train*.tfrecord", "--val",
                       root / "data" / "validate*.tfrecord", "-o", root / "run", "--epochs", 1, "--width", 16,
                       "--attention-width", 16, "--heads", 2, "--threads", 1)
    assert code == 0, err
    return root


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run) -> Path:
    """The accepted FP32 artifact of ``tiny_run``'s best.pt, ``run/best.fp32`` (avf-compress, checked against
    the run's validation data)."""
    pytest.importorskip("onnxruntime")
    artifact = tiny_run / "run" / "best.fp32"
    code, _, err = cli("compress", tiny_run / "run" / "best.pt", "-o", artifact)
    assert code == 0, err
    return artifact


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small Attend-Fusion (width 64, 3 epochs on 800 synthetic videos of 24 classes), trained enough for the
    retention gate and the search to have something to keep, its data recorded in the checkpoint: (root,
    ``root/attend_fusion.pt``, a copy of its best.pt). A module that writes beside the checkpoint copies it."""
    pytest.importorskip("torch")
    from avf.data.synthetic import synthesize
    from avf.train.loop import TrainSettings, train

    root = tmp_path_factory.mktemp("small_run")
    synthesize(root / "data", videos=800, classes=24, seed=3)
    train(TrainSettings(model="attend_fusion", train=str(root / "data" / "train*.tfrecord"),
                        val=str(root / "data" / "validate*.tfrecord"), out=str(root / "run"), epochs=3,
                        batch_size=64, lr=3e-3, width=64, attention_width=64, heads=4, seed=0))
    checkpoint = root / "attend_fusion.pt"
    shutil.copyfile(root / "run" / "best.pt", checkpoint)
    return root, checkpoint
