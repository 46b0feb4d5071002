"""YouTube-8M records: decode, validate and encode video- and frame-level examples.

Video-level files hold ``tf.train.Example`` with ``id``, ``labels``, ``mean_rgb`` (1024
floats) and ``mean_audio`` (128 floats). Frame-level files hold ``tf.train.SequenceExample``
with context ``id``/``labels`` and feature lists ``rgb``/``audio``: one uint8 string per
second, quantized over [-2, 2]. The level is read from each record, not from the file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from avf.data.example_proto import RawRecord, Record
from avf.data.sources import expand_sources
from avf.data.tfrecord import iter_payloads
from avf.errors import RecordError, SchemaError

RGB_DIM = 1024
AUDIO_DIM = 128
#: YouTube-8M 2018 vocabulary; the 2017 release (and the paper) used 4716.
DEFAULT_NUM_CLASSES = 3862
MAX_FRAMES = 300

# Official starter-code dequantization over [-2, 2]: x * 4/255 + (4/512 - 2), in float32.
_QUANT_MIN, _QUANT_MAX = -2.0, 2.0
_SCALE = np.float32((_QUANT_MAX - _QUANT_MIN) / 255.0)
_BIAS = np.float32((_QUANT_MAX - _QUANT_MIN) / 512.0 + _QUANT_MIN)


def dequantize(quantized: np.ndarray) -> np.ndarray:
    """uint8 frame features to float32, bit-for-bit as the official reader computes them."""
    return quantized.astype(np.float32) * _SCALE + _BIAS


def quantize(features: np.ndarray) -> np.ndarray:
    """float features to uint8 codes; dequantize(quantize(x)) is within 4/510 of clip(x)."""
    codes = np.rint((np.asarray(features, np.float32) - _BIAS) / _SCALE)
    return np.clip(codes, 0, 255).astype(np.uint8)


@dataclass(slots=True)
class VideoRecord:
    """One video. ``rgb``/``audio`` are (1024,)/(128,) for video level, (T, 1024)/(T, 128) for
    frame level (float32, or the raw uint8 codes when read with ``dequantize=False``)."""

    id: str
    labels: np.ndarray
    rgb: np.ndarray
    audio: np.ndarray
    level: str
    source: str = ""
    offset: int = -1
    #: 2019-style segment annotations, present in some frame-level validate files.
    segment_start_times: np.ndarray | None = None
    segment_labels: np.ndarray | None = None
    segment_scores: np.ndarray | None = None

    def __getitem__(self, key: str):
        return getattr(self, key)

    @property
    def num_frames(self) -> int:
        return int(self.rgb.shape[0]) if self.level == "frame" else 1


class _Context:
    """Where a record came from, so every error names the file, offset and video."""

    __slots__ = ("path", "offset", "payload", "video")

    def __init__(self, path, offset, payload):
        self.path, self.offset, self.payload, self.video = path, offset, payload, None

    def fail(self, problem: str) -> SchemaError:
        prefix = f"video {self.video!r}: " if self.video else ""
        return SchemaError(self.path, prefix + problem, self.offset)


def _parse(payload: bytes, ctx: _Context):
    try:
        return RawRecord.FromString(payload)
    except DecodeError as exc:
        raise RecordError(ctx.path, f"payload is not a tf.train.Example/SequenceExample ({exc})", ctx.offset) from None


def _bytes_feature(feature_map, key: str, ctx: _Context, required: bool = True) -> bytes | None:
    if key not in feature_map:
        if required:
            raise ctx.fail(f"no {key!r} feature (not a YouTube-8M record?)")
        return None
    values = feature_map[key].bytes_list.value
    if len(values) != 1:
        raise ctx.fail(f"{key!r} must hold one bytes value, found {len(values)}")
    return values[0]


def _int_feature(feature_map, key: str) -> np.ndarray:
    if key not in feature_map:
        return np.empty(0, np.int64)
    values = feature_map[key].int64_list.value
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _float_feature(feature_map, key: str, size: int, ctx: _Context) -> np.ndarray:
    if key not in feature_map:
        raise ctx.fail(f"no {key!r} feature (not a YouTube-8M video-level record?)")
    blocks = feature_map[key].float_list.value
    raw = blocks[0] if len(blocks) == 1 else b"".join(blocks)
    if len(raw) != 4 * size:
        values = _standard_floats(ctx, key)
        if values.size != size:
            raise ctx.fail(f"{key!r} has {values.size} values, expected {size}")
        return values
    values = np.frombuffer(bytearray(raw), dtype="<f4")
    if not np.isfinite(values).all():
        raise ctx.fail(f"{key!r} holds NaN or inf values")
    return values


def _standard_floats(ctx: _Context, key: str) -> np.ndarray:
    """Re-read a float feature with the plain schema (handles unpacked encodings)."""
    record = Record.FromString(ctx.payload)
    values = np.array(record.features.feature[key].float_list.value, dtype=np.float32)
    if not np.isfinite(values).all():
        raise ctx.fail(f"{key!r} holds NaN or inf values")
    return values


def _check_labels(labels: np.ndarray, num_classes: int | None, ctx: _Context) -> None:
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ctx.fail(f"negative label index {low}")
    if num_classes is not None and high >= num_classes:
        raise ctx.fail(f"label index {high} outside the vocabulary of {num_classes} classes")


def _frame_list(feature_lists, key: str, width: int, ctx: _Context) -> np.ndarray:
    if key not in feature_lists:
        raise ctx.fail(f"no {key!r} feature list (not a YouTube-8M frame-level record?)")
    frames = feature_lists[key].feature
    try:
        chunks = [frame.bytes_list.value[0] for frame in frames]
    except IndexError:
        raise ctx.fail(f"{key!r} has a frame with no bytes value") from None
    joined = bytearray().join(chunks)
    if len(joined) != width * len(chunks):
        bad = next(i for i, chunk in enumerate(chunks) if len(chunk) != width)
        raise ctx.fail(f"{key!r} frame {bad} has {len(chunks[bad])} bytes, expected {width}")
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(chunks), width)


def decode_record(
    payload: bytes,
    path: str = "",
    offset: int = -1,
    num_classes: int | None = DEFAULT_NUM_CLASSES,
    dequantize_frames: bool = True,
) -> VideoRecord:
    """Decode and validate one serialized Example or SequenceExample."""
    ctx = _Context(path, offset, payload)
    record = _parse(payload, ctx)
    context = record.features.feature
    raw_id = _bytes_feature(context, "id", ctx)
    try:
        ctx.video = raw_id.decode("utf-8")
    except UnicodeDecodeError:
        raise ctx.fail("'id' is not UTF-8 text") from None
    labels = _int_feature(context, "labels")
    _check_labels(labels, num_classes, ctx)

    # Real video-level shards carry an empty feature_lists field, so decide by content.
    lists = record.feature_lists.feature_list
    if "mean_rgb" not in context and len(lists):
        rgb = _frame_list(lists, "rgb", RGB_DIM, ctx)
        audio = _frame_list(lists, "audio", AUDIO_DIM, ctx)
        if rgb.shape[0] != audio.shape[0]:
            raise ctx.fail(f"{rgb.shape[0]} rgb frames but {audio.shape[0]} audio frames")
        if rgb.shape[0] == 0:
            raise ctx.fail("frame-level record has no frames")
        if dequantize_frames:
            rgb, audio = dequantize(rgb), dequantize(audio)
        result = VideoRecord(ctx.video, labels, rgb, audio, "frame", str(path), offset)
        if "segment_start_times" in context:
            result.segment_start_times = _int_feature(context, "segment_start_times")
            result.segment_labels = _int_feature(context, "segment_labels")
            scores = context["segment_scores"].float_list.value if "segment_scores" in context else []
            result.segment_scores = np.frombuffer(bytearray().join(scores), dtype="<f4")
        return result

    rgb = _float_feature(context, "mean_rgb", RGB_DIM, ctx)
    audio = _float_feature(context, "mean_audio", AUDIO_DIM, ctx)
    return VideoRecord(ctx.video, labels, rgb, audio, "video", str(path), offset)


def iter_records(
    source: str | Path | Iterable[str | Path],
    num_classes: int | None = DEFAULT_NUM_CLASSES,
    dequantize_frames: bool = True,
) -> Iterator[VideoRecord]:
    """Yield every video in a file, directory, glob, or list of them, checking CRCs and schema.

    ``num_classes`` bounds label indices (None: only non-negative); frame features are
    dequantized exactly as the official starter code does unless ``dequantize_frames=False``.
    """
    for path in expand_sources(source):
        name = str(path)
        for offset, payload in iter_payloads(path):
            yield decode_record(payload, name, offset, num_classes, dequantize_frames)


@dataclass(slots=True)
class VideoBatch:
    """A batch of video-level records: stacked features and labels in CSR form."""

    ids: list[str]
    rgb: np.ndarray  # (B, 1024) float32
    audio: np.ndarray  # (B, 128) float32
    label_indptr: np.ndarray  # (B + 1,) int64: video i owns label_indices[indptr[i]:indptr[i+1]]
    label_indices: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ids)

    def labels_dense(self, num_classes: int, dtype=np.float32) -> np.ndarray:
        """0/1 matrix (B, num_classes), as training losses and metrics want it."""
        dense = np.zeros((len(self.ids), num_classes), dtype=dtype)
        rows = np.repeat(np.arange(len(self.ids)), np.diff(self.label_indptr))
        dense[rows, self.label_indices] = 1
        return dense


def _batch_from_records(records: list[VideoRecord]) -> VideoBatch:
    for record in records:
        if record.level != "video":
            raise SchemaError(
                record.source, f"video {record.id!r}: frame-level record in a video-level batch "
                "read (use iter_records, or a feature store, for frame-level data)", record.offset)
    counts = [record.labels.size for record in records]
    return VideoBatch(
        ids=[record.id for record in records],
        rgb=np.stack([record.rgb for record in records]),
        audio=np.stack([record.audio for record in records]),
        label_indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        label_indices=np.concatenate([record.labels for record in records]),
    )


def _fast_batch(payloads: list[tuple[str, int, bytes]], num_classes: int | None) -> VideoBatch | None:
    """Decode a batch touching each record only through the C parser; None if anything is
    unusual (missing field, split float blocks, bad values), so the exact path can explain."""
    ids, rgbs, audios, labels, counts = [], [], [], [], []
    parse = RawRecord.FromString
    try:
        for _, _, payload in payloads:
            context = parse(payload).features.feature
            ids.append(context["id"].bytes_list.value[0])
            rgbs.append(context["mean_rgb"].float_list.value[0])
            audios.append(context["mean_audio"].float_list.value[0])
            values = context["labels"].int64_list.value
            labels.extend(values)
            counts.append(len(values))
    except (IndexError, DecodeError):
        return None
    n = len(payloads)
    rgb_bytes, audio_bytes = bytearray().join(rgbs), bytearray().join(audios)
    if len(rgb_bytes) != 4 * RGB_DIM * n or len(audio_bytes) != 4 * AUDIO_DIM * n:
        return None
    rgb = np.frombuffer(rgb_bytes, dtype="<f4").reshape(n, RGB_DIM)
    audio = np.frombuffer(audio_bytes, dtype="<f4").reshape(n, AUDIO_DIM)
    label_indices = np.array(labels, dtype=np.int64)
    if not (np.isfinite(rgb).all() and np.isfinite(audio).all()):
        return None
    if label_indices.size and (label_indices.min() < 0 or (num_classes is not None and label_indices.max() >= num_classes)):
        return None
    try:
        id_text = [raw.decode("utf-8") for raw in ids]
    except UnicodeDecodeError:
        return None
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return VideoBatch(id_text, rgb, audio, indptr, label_indices)


def iter_batches(
    source: str | Path | Iterable[str | Path],
    batch_size: int = 1024,
    num_classes: int | None = DEFAULT_NUM_CLASSES,
) -> Iterator[VideoBatch]:
    """Yield video-level batches with the same checks as ``iter_records``, several times faster.

    Batches may span shards; the last one may be short.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    pending: list[tuple[str, int, bytes]] = []

    def flush() -> VideoBatch:
        batch = _fast_batch(pending, num_classes)
        if batch is None:  # re-decode exactly: raises the precise error, or handles odd encodings
            batch = _batch_from_records(
                [decode_record(payload, name, offset, num_classes) for name, offset, payload in pending])
        pending.clear()
        return batch

    for path in expand_sources(source):
        name = str(path)
        for offset, payload in iter_payloads(path):
            pending.append((name, offset, payload))
            if len(pending) == batch_size:
                yield flush()
    if pending:
        yield flush()


def detect_level(path: str | Path) -> str:
    """'video' or 'frame', from the shard's first record."""
    for offset, payload in iter_payloads(path):
        return decode_record(payload, str(path), offset, None, dequantize_frames=False).level
    raise SchemaError(path, "shard holds no records")


# ----------------------------------------------------------------------------- encoding


def encode_video_example(video_id: str, labels, mean_rgb, mean_audio) -> bytes:
    """Serialize a video-level ``tf.train.Example`` (byte-compatible with TensorFlow's)."""
    record = RawRecord()
    features = record.features.feature
    features["id"].bytes_list.value.append(video_id.encode("utf-8"))
    features["labels"].int64_list.value.extend(int(label) for label in labels)
    features["mean_rgb"].float_list.value.append(np.ascontiguousarray(mean_rgb, "<f4").tobytes())
    features["mean_audio"].float_list.value.append(np.ascontiguousarray(mean_audio, "<f4").tobytes())
    return record.SerializeToString(deterministic=True)


def encode_frame_example(
    video_id: str,
    labels,
    rgb_codes: np.ndarray,
    audio_codes: np.ndarray,
    segment_start_times=None,
    segment_labels=None,
    segment_scores=None,
) -> bytes:
    """Serialize a frame-level ``tf.train.SequenceExample`` from uint8 codes (T, 1024)/(T, 128)."""
    if rgb_codes.dtype != np.uint8 or audio_codes.dtype != np.uint8:
        raise TypeError("frame features must be uint8 codes; use quantize() first")
    record = RawRecord()
    context = record.features.feature
    context["id"].bytes_list.value.append(video_id.encode("utf-8"))
    context["labels"].int64_list.value.extend(int(label) for label in labels)
    if segment_start_times is not None:
        context["segment_start_times"].int64_list.value.extend(int(t) for t in segment_start_times)
        context["segment_labels"].int64_list.value.extend(int(c) for c in segment_labels)
        context["segment_scores"].float_list.value.append(np.asarray(segment_scores, "<f4").tobytes())
    lists = record.feature_lists.feature_list
    for key, codes in (("rgb", rgb_codes), ("audio", audio_codes)):
        frames = lists[key].feature
        for row in codes:
            frames.add().bytes_list.value.append(row.tobytes())
    return record.SerializeToString(deterministic=True)
