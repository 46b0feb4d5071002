"""An encoder for the tests, independent of the code under test: protobuf wire format and
TFRecord framing written out by hand, so that the tests can build any record, legal or not.

It is checked here against TensorFlow (the reference parser): what it writes, TensorFlow reads.
"""

from __future__ import annotations

import struct

import google_crc32c
import numpy as np

_MASK64 = (1 << 64) - 1


def varint(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def tag(field: int, wire: int) -> bytes:
    return varint(field << 3 | wire)


def delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


# -- tf.train.Feature: field 1 BytesList, 2 FloatList, 3 Int64List; each list's values are field 1


def bytes_feature(values) -> bytes:
    return delimited(1, b"".join(delimited(1, value) for value in values))


def float_feature(values, packed: bool = True, blocks: int = 1) -> bytes:
    values = np.asarray(values, "<f4")
    if packed:
        parts = np.array_split(values, blocks) if len(values) else [values]
        body = b"".join(delimited(1, part.tobytes()) for part in parts)
    else:
        body = b"".join(tag(1, 5) + struct.pack("<f", value) for value in values)
    return delimited(2, body)


def int64_feature(values, packed: bool = True) -> bytes:
    values = [int(v) for v in values]
    if not values:
        return delimited(3, b"")
    if packed:
        body = delimited(1, b"".join(varint(v) for v in values))
    else:
        body = b"".join(tag(1, 0) + varint(v) for v in values)
    return delimited(3, body)


def features(entries) -> bytes:
    """``entries``: (key str/bytes, serialized Feature) pairs, in the order given."""
    out = []
    for key, feature in entries:
        key = key.encode() if isinstance(key, str) else key
        out.append(delimited(1, delimited(1, key) + delimited(2, feature)))
    return b"".join(out)


def example(entries, empty_feature_lists: bool = False) -> bytes:
    """A tf.train.Example; real YouTube-8M video-level records end with an empty field 2."""
    return delimited(1, features(entries)) + (b"\x12\x00" if empty_feature_lists else b"")


def sequence_example(context, lists) -> bytes:
    """``lists``: (key, [serialized Feature per frame]) pairs."""
    feature_lists = b"".join(
        delimited(1, delimited(1, key.encode()) + delimited(2, b"".join(delimited(1, frame) for frame in frames)))
        for key, frames in lists)
    return delimited(1, features(context)) + delimited(2, feature_lists)


def video_example(video_id: str, labels, rgb, audio, order=(0, 1, 2, 3), empty_feature_lists=False, **kwargs) -> bytes:
    entries = [("id", bytes_feature([video_id.encode()])), ("labels", int64_feature(labels)),
               ("mean_rgb", float_feature(rgb)), ("mean_audio", float_feature(audio))]
    return example([entries[i] for i in order], empty_feature_lists)


def frame_example(video_id: str, labels, rgb_codes, audio_codes, segments=None) -> bytes:
    context = [("id", bytes_feature([video_id.encode()])), ("labels", int64_feature(labels))]
    if segments is not None:
        starts, seg_labels, scores = segments
        context += [("segment_start_times", int64_feature(starts)), ("segment_labels", int64_feature(seg_labels)),
                    ("segment_scores", float_feature(scores))]
    lists = [(key, [bytes_feature([row.tobytes()]) for row in codes]) for key, codes in
             (("rgb", rgb_codes), ("audio", audio_codes))]
    return sequence_example(context, lists)


# -- TFRecord framing


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(payload: bytes) -> bytes:
    header = struct.pack("<Q", len(payload))
    return header + struct.pack("<I", masked_crc(header)) + payload + struct.pack("<I", masked_crc(payload))


def tfrecord_bytes(payloads) -> bytes:
    return b"".join(frame_record(payload) for payload in payloads)


def record_spans(data: bytes) -> list[tuple[int, int]]:
    """(record offset, payload length) of each record of well-framed bytes."""
    spans, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        spans.append((pos, length))
        pos += 16 + length
    return spans


def reframe(data: bytes) -> bytes:
    """Recompute every CRC of well-framed bytes (after a mutation inside payloads)."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append(frame_record(data[pos + 12 : pos + 12 + length]))
        pos += 16 + length
    return b"".join(out)


# ----------------------------------------------------------------------------- the encoder vs TensorFlow


def test_encoder_output_is_what_tensorflow_reads(tf, tmp_path):
    rng = np.random.default_rng(0)
    rgb, audio = rng.normal(size=1024).astype(np.float32), rng.normal(size=128).astype(np.float32)
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64),
            "mean_rgb": tf.io.FixedLenFeature([1024], tf.float32), "mean_audio": tf.io.FixedLenFeature([128], tf.float32)}
    payloads = [video_example("ab", [3, 1, 2**40], rgb, audio, order=(3, 1, 0, 2), empty_feature_lists=True),
                example([("id", bytes_feature([b"cd"])), ("labels", int64_feature([7], packed=False)),
                         ("mean_rgb", float_feature(rgb, packed=False)), ("mean_audio", float_feature(audio))])]
    path = tmp_path / "enc.tfrecord"
    path.write_bytes(tfrecord_bytes(payloads))
    parsed = [tf.io.parse_single_example(s, spec) for s in tf.data.TFRecordDataset([str(path)])]
    assert [p["id"].numpy() for p in parsed] == [b"ab", b"cd"]
    assert tf.sparse.to_dense(parsed[0]["labels"]).numpy().tolist() == [3, 1, 2**40]
    assert tf.sparse.to_dense(parsed[1]["labels"]).numpy().tolist() == [7]
    for p in parsed:
        assert np.array_equal(p["mean_rgb"].numpy(), rgb) and np.array_equal(p["mean_audio"].numpy(), audio)
    codes = rng.integers(0, 256, (3, 1024), dtype=np.uint8)
    frame = frame_example("f", [1], codes, codes[:, :128], segments=([0, 5], [1, 2], [1.0, 0.0]))
    context = {"id": tf.io.FixedLenFeature([], tf.string), "segment_scores": tf.io.VarLenFeature(tf.float32)}
    ctx, seq = tf.io.parse_single_sequence_example(frame, context, {"rgb": tf.io.FixedLenSequenceFeature([], tf.string)})
    assert ctx["id"].numpy() == b"f" and seq["rgb"].shape[0] == 3
    assert tf.sparse.to_dense(ctx["segment_scores"]).numpy().tolist() == [1.0, 0.0]
    assert record_spans(path.read_bytes())[1][0] == 16 + len(payloads[0])
