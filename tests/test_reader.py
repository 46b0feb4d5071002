"""The TFRecord reader against TensorFlow's own parser, and its handling of bad input."""

from __future__ import annotations

import shutil
import struct

import numpy as np
import pytest

from avf.data import (
    TFRecordWriter,
    dequantize,
    encode_frame_example,
    encode_video_example,
    iter_batches,
    iter_records,
    quantize,
)
from avf.data.tfrecord import iter_payloads, masked_crc32c
from avf.errors import InputError, RecordError, SchemaError
from conftest import random_videos, tf_video_example
from test_reader_encoder import bytes_feature, example, float_feature, int64_feature, varint

def _tf_video_parse(tf, serialized):
    spec = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.VarLenFeature(tf.int64),
        "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32),
        "mean_audio": tf.io.FixedLenFeature([128], tf.float32),
    }
    parsed = tf.io.parse_single_example(serialized, spec)
    return (parsed["id"].numpy().decode(), tf.sparse.to_dense(parsed["labels"]).numpy(),
            parsed["mean_rgb"].numpy(), parsed["mean_audio"].numpy())


def test_video_level_matches_tensorflow_parse(tf, tf_video_shards):
    root, _ = tf_video_shards
    ours = list(iter_records(root))
    theirs = [_tf_video_parse(tf, s) for s in tf.data.TFRecordDataset(sorted(str(p) for p in root.iterdir()))]
    assert len(ours) == len(theirs) == 150
    for record, (vid, labels, rgb, audio) in zip(ours, theirs):
        assert record.level == "video"
        assert record.id == vid
        assert record.labels.dtype == np.int64 and np.array_equal(record.labels, labels)
        assert record.rgb.dtype == np.float32 and record.rgb.shape == (1024,)
        assert np.array_equal(record.rgb, rgb) and np.array_equal(record.audio, audio)


def test_frame_level_matches_tensorflow_parse_and_official_dequantization(tf, tf_frame_shard):
    path, rows = tf_frame_shard
    ours = list(iter_records(path))
    context = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    sequence = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                "audio": tf.io.FixedLenSequenceFeature([], tf.string)}
    assert len(ours) == len(rows)
    for record, serialized in zip(ours, tf.data.TFRecordDataset([str(path)])):
        ctx, seq = tf.io.parse_single_sequence_example(serialized, context, sequence)
        assert record.level == "frame" and record.id == ctx["id"].numpy().decode()
        assert np.array_equal(record.labels, tf.sparse.to_dense(ctx["labels"]).numpy())
        for key, width in (("rgb", 1024), ("audio", 128)):
            # The official starter code: decode_raw to uint8, cast, x * 4/255 + 4/512 - 2.
            codes = tf.reshape(tf.cast(tf.io.decode_raw(seq[key], tf.uint8), tf.float32), [-1, width])
            expected = (codes * (4.0 / 255.0) + (4.0 / 512.0 - 2.0)).numpy()
            got = getattr(record, key)
            assert got.dtype == np.float32 and got.shape == expected.shape
            assert np.array_equal(got, expected)  # bit-for-bit


def test_raw_frame_codes_are_returned_without_dequantization(tf_frame_shard):
    path, rows = tf_frame_shard
    for record, (_, _, rgb, audio) in zip(iter_records(path, dequantize_frames=False), rows):
        assert record.rgb.dtype == np.uint8 and np.array_equal(record.rgb, rgb)
        assert np.array_equal(record.audio, audio)


def test_our_writer_is_read_by_tensorflow(tf, tmp_path):
    rows = random_videos(3, 20)
    path = tmp_path / "ours.tfrecord"
    with TFRecordWriter(path) as writer:
        for row in rows:
            writer.write(encode_video_example(*row))
    parsed = [_tf_video_parse(tf, s) for s in tf.data.TFRecordDataset([str(path)])]
    for (vid, labels, rgb, audio), got in zip(rows, parsed):
        assert got[0] == vid and np.array_equal(got[1], labels)
        assert np.array_equal(got[2], rgb) and np.array_equal(got[3], audio)


def test_frame_writer_round_trip_and_quantization(tf, tmp_path):
    rng = np.random.default_rng(0)
    values = rng.uniform(-2.5, 2.5, (9, 1024)).astype(np.float32)
    codes = quantize(values)
    assert np.abs(dequantize(codes) - np.clip(values, -2, 2)).max() <= 4 / 510 + 1e-6
    path = tmp_path / "frames.tfrecord"
    with TFRecordWriter(path) as writer:
        writer.write(encode_frame_example("abcd", [1, 2], codes, codes[:, :128],
                                          segment_start_times=[0, 5], segment_labels=[1, 2], segment_scores=[1.0, 0.0]))
    (record,) = iter_records(path)
    assert np.array_equal(record.rgb, dequantize(codes))
    assert list(record.segment_start_times) == [0, 5] and list(record.segment_scores) == [1.0, 0.0]
    context = {"id": tf.io.FixedLenFeature([], tf.string), "segment_scores": tf.io.VarLenFeature(tf.float32)}
    sequence = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string)}
    ctx, seq = tf.io.parse_single_sequence_example(next(iter(tf.data.TFRecordDataset([str(path)]))), context, sequence)
    assert ctx["id"].numpy() == b"abcd" and seq["rgb"].shape[0] == 9


def test_gzip_compressed_shards_are_read(tf, tmp_path):
    rows = random_videos(5, 5)
    path = tmp_path / "gz.tfrecord.gz"
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            writer.write(tf_video_example(tf, *row))
    assert [r.id for r in iter_records(path)] == [row[0] for row in rows]


def test_batches_equal_records_across_shard_boundaries(tf_video_shards):
    root, _ = tf_video_shards
    records = list(iter_records(root))
    batches = list(iter_batches(root, batch_size=64))
    assert [len(b) for b in batches] == [64, 64, 22]
    ids = [i for b in batches for i in b.ids]
    assert ids == [r.id for r in records]
    rgb = np.concatenate([b.rgb for b in batches])
    assert np.array_equal(rgb, np.stack([r.rgb for r in records]))
    dense = np.concatenate([b.labels_dense(3862) for b in batches])
    for row, record in zip(dense, records):
        assert set(np.flatnonzero(row)) == set(record.labels.tolist())


def test_globs_directories_and_lists(tf_video_shards):
    root, videos = tf_video_shards
    first = sorted(videos)[0]
    assert sum(1 for _ in iter_records(str(root / "train000[01].tfrecord"))) == 100
    assert sum(1 for _ in iter_records([first, first])) == 50  # de-duplicated
    with pytest.raises(InputError, match="matches no files"):
        list(iter_records(str(root / "nothing*.tfrecord")))
    with pytest.raises(InputError, match="file not found"):
        list(iter_records(root / "missing.tfrecord"))
    empty = root.parent / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(InputError, match="no TFRecord files"):
        list(iter_records(empty))


# ----------------------------------------------------------------------------- corruption


def _write(path, payloads):
    with TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)
    return path


@pytest.fixture
def shard(tmp_path):
    return _write(tmp_path / "s.tfrecord", [encode_video_example(*row) for row in random_videos(1, 4)])


def _offsets(path):
    return [offset for offset, _ in iter_payloads(path)]


def test_flipped_payload_byte_names_file_and_record_offset(shard):
    offsets = _offsets(shard)
    data = bytearray(shard.read_bytes())
    data[offsets[2] + 12 + 100] ^= 0x40
    shard.write_bytes(bytes(data))
    with pytest.raises(RecordError) as err:
        list(iter_records(shard))
    assert err.value.offset == offsets[2]
    assert str(shard) in str(err.value) and "data CRC mismatch" in str(err.value)
    assert "\n" not in str(err.value)


def test_flipped_length_byte_and_stored_crc_byte(shard):
    """Record 1's length field and record 1's stored data CRC: both blamed on record 1."""
    offsets = _offsets(shard)
    for position, expected in ((offsets[1] + 3, "corrupt record header"), (offsets[2] - 1, "data CRC mismatch")):
        data = bytearray(shard.read_bytes())
        data[position] ^= 0x01
        bad = shard.with_name(f"bad{position}.tfrecord")
        bad.write_bytes(bytes(data))
        with pytest.raises(RecordError, match=expected) as err:
            list(iter_records(bad))
        assert err.value.offset == offsets[1]


def test_truncated_and_foreign_files(shard, tmp_path):
    data = shard.read_bytes()
    offsets = _offsets(shard)
    (tmp_path / "t1.tfrecord").write_bytes(data[: offsets[3] + 30])
    with pytest.raises(RecordError, match="truncated: record of") as err:
        list(iter_records(tmp_path / "t1.tfrecord"))
    assert err.value.offset == offsets[3]
    (tmp_path / "t2.tfrecord").write_bytes(data[: offsets[3] + 5])
    with pytest.raises(RecordError, match="trailing bytes"):
        list(iter_records(tmp_path / "t2.tfrecord"))
    (tmp_path / "notes.tfrecord").write_text("Index,Name\n0,Game\n" * 10)
    with pytest.raises(RecordError, match="not a TFRecord file") as err:
        list(iter_records(tmp_path / "notes.tfrecord"))
    assert err.value.offset == 0
    # A record whose framing is fine but whose payload is not a protobuf message.
    junk = tmp_path / "junk.tfrecord"
    _write(junk, [b"\xff\xff\xff\xff"])
    with pytest.raises(RecordError, match="not a tf.train.Example"):
        list(iter_records(junk))


def _raw_video(video_id="abcd", labels=(1,), rgb=None, audio=None, drop=(), extra=()):
    """A video-level Example from the tests' own encoder (not the code under test)."""
    entries = [("id", bytes_feature([video_id.encode()])), ("labels", int64_feature(labels)),
               ("mean_rgb", float_feature(np.zeros(1024) if rgb is None else rgb)),
               ("mean_audio", float_feature(np.zeros(128) if audio is None else audio))]
    return example([entry for entry in entries if entry[0] not in drop] + list(extra))


@pytest.mark.parametrize(
    "payload, message",
    [
        (_raw_video(rgb=np.zeros(1000)), "'mean_rgb' has 1000 values, expected 1024"),
        (_raw_video(audio=np.zeros(256)), "'mean_audio' has 256 values, expected 128"),
        (_raw_video(rgb=np.r_[np.zeros(1023), np.nan]), "'mean_rgb' holds NaN or inf"),
        (_raw_video(audio=np.r_[np.inf, np.zeros(127)]), "'mean_audio' holds NaN or inf"),
        (_raw_video(labels=(5, 3862)), "label index 3862 outside the vocabulary of 3862 classes"),
        (_raw_video(labels=(-1,)), "negative label index -1"),
        (_raw_video(drop=("id",)), "no 'id' feature"),
        (_raw_video(drop=("mean_rgb",)), "no 'mean_rgb' feature"),
    ],
)
def test_schema_errors_are_one_line_and_name_the_record(tmp_path, payload, message):
    good = encode_video_example("good", [0], np.zeros(1024), np.zeros(128))
    path = _write(tmp_path / "bad.tfrecord", [good, payload])
    second = _offsets(path)[1]
    for reader in (lambda: list(iter_records(path)), lambda: list(iter_batches(path, 8))):
        with pytest.raises(SchemaError) as err:
            reader()
        assert message in str(err.value) and str(path) in str(err.value)
        assert err.value.offset == second and "\n" not in str(err.value)


def test_frame_level_schema_errors(tmp_path):
    codes = np.zeros((4, 1024), np.uint8)
    mismatch = encode_frame_example("f1", [1], codes, np.zeros((3, 128), np.uint8))
    wrong_width = encode_frame_example("f2", [1], codes, np.zeros((4, 100), np.uint8))
    for payload, message in ((mismatch, "4 rgb frames but 3 audio frames"),
                             (wrong_width, "'audio' frame 0 has 100 bytes, expected 128")):
        path = _write(tmp_path / "f.tfrecord", [payload])
        with pytest.raises(SchemaError, match=message):
            list(iter_records(path))
    path = _write(tmp_path / "f.tfrecord", [encode_frame_example("f3", [1], codes, codes[:, :128])])
    with pytest.raises(SchemaError, match="frame-level record in a video-level batch"):
        list(iter_batches(path))


def test_unpacked_float_encoding_is_still_read(tmp_path):
    """Packed floats are what TensorFlow writes; the unpacked form is legal protobuf too."""
    rgb = np.arange(1024, dtype=np.float32) / 1024
    # Hand-encode mean_rgb as 1024 unpacked fixed32 fields (tag 0x0D) inside the FloatList.
    float_list = b"".join(b"\x0d" + struct.pack("<f", v) for v in rgb)
    feature = b"\x12" + varint(len(float_list)) + float_list
    payload = _raw_video(drop=("mean_rgb",), extra=[("mean_rgb", feature)])
    path = _write(tmp_path / "unpacked.tfrecord", [payload])
    (record,) = iter_records(path)
    assert np.array_equal(record.rgb, rgb)
    (batch,) = iter_batches(path)
    assert np.array_equal(batch.rgb[0], rgb)


def test_writer_leaves_no_file_when_interrupted(tmp_path):
    target = tmp_path / "out.tfrecord"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(target) as writer:
            writer.write(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    assert masked_crc32c(b"") == 0xA282EAD8  # masked CRC of nothing: the mask constant itself


# ----------------------------------------------------------------------------- real shards


def test_all_real_shards_read_cleanly(real_data):
    shards = sorted(real_data.glob("validate*.tfrecord"))[:100]
    assert len(shards) == 100
    videos = labels = 0
    for batch in iter_batches(shards, 4096):
        videos += len(batch)
        labels += len(batch.label_indices)
        assert np.isfinite(batch.rgb).all()
    assert 28_000 < videos < 30_000
    assert 2.5 < labels / videos < 3.5


def test_real_shard_matches_tensorflow(tf, real_data):
    path = real_data / "validate0099.tfrecord"
    ours = list(iter_records(path))
    theirs = [_tf_video_parse(tf, s) for s in tf.data.TFRecordDataset([str(path)])]
    assert len(ours) == len(theirs) > 200
    for record, (vid, labels, rgb, audio) in zip(ours, theirs):
        assert record.id == vid and np.array_equal(record.labels, labels)
        assert np.array_equal(record.rgb, rgb) and np.array_equal(record.audio, audio)


def test_one_flipped_byte_in_a_real_shard(real_data, tmp_path):
    copy = tmp_path / "validate0042.tfrecord"
    shutil.copyfile(real_data / "validate0042.tfrecord", copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(RecordError) as err:
        list(iter_records(copy))
    message = str(err.value)
    assert message.startswith(str(copy)) and "record at byte" in message and "\n" not in message
    assert err.value.offset <= len(data) // 2
