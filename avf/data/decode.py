"""Decode a run of records into batch rows: the numpy path where it applies, else the exact decoder.

Both readers (``iter_records``, ``iter_batches``) and ``decode_record`` decode through
``decode_chunk``, so they cannot disagree. Canonical video-level records are decoded by
``avf.data.fast_decode`` for the whole run at once and their features gathered straight into
the batch arrays; every other record (unpacked values, other field orders, extra features,
frame level, anything malformed) goes through the strict wire decoder of
``avf.data.example_proto``, which also says what is wrong with a bad one. The value checks
(label range, finite features, ...) come after, over the whole batch (``avf.data.batch_checks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avf.data.example_proto import (
    BYTES,
    FLOAT,
    INT64,
    KIND_NAMES,
    Feature,
    ShapeError,
    WireError,
    parse_frames,
    parse_record,
)
from avf.data.fast_decode import FastRecords, decode_canonical, feature_blocks, nothing_decoded
from avf.data.schema import AUDIO_DIM, FRAME_CAP_VARIABLE, RGB_DIM, frame_cap
from avf.data.tfrecord import RecordChunk
from avf.errors import RecordError, SchemaError

_CONTEXT_KEYS = {name.encode(): name for name in (
    "id", "labels", "mean_rgb", "mean_audio", "segment_start_times", "segment_labels", "segment_scores")}
_LIST_KEYS = {b"rgb": "rgb", b"audio": "audio"}


@dataclass(slots=True)
class FrameFeatures:
    """A frame-level record's uint8 codes (T, 1024)/(T, 128) and its segment annotations, if any."""

    rgb: np.ndarray
    audio: np.ndarray
    segment_start_times: np.ndarray | None = None
    segment_labels: np.ndarray | None = None
    segment_scores: np.ndarray | None = None


class RowFailure(Exception):
    """A record refused while decoding or checking: row, error class and problem."""

    def __init__(self, row: int, cls: type, problem: str, video: bytes | None = None):
        super().__init__(problem)
        self.row, self.cls, self.problem, self.video = row, cls, problem, video


class DecodedRows:
    """Decoded records waiting to be checked: feature rows go straight into batch arrays."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.rgb = np.empty((capacity, RGB_DIM), np.float32)
        self.audio = np.empty((capacity, AUDIO_DIM), np.float32)
        self.ids: list[bytes] = []
        self.labels: list[np.ndarray] = []  # int64 pieces, concatenated in row order
        self.label_counts: list[np.ndarray] = []
        self.paths: list[tuple[int, str]] = []  # (first row, path) whenever the path changes
        self.offsets: list[int] = []
        self.frames: dict[int, FrameFeatures] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def path_of(self, row: int) -> str:
        found = ""
        for first, path in self.paths:
            if first > row:
                break
            found = path
        return found


def decode_chunk(chunk: RecordChunk, i0: int, i1: int, rows: DecodedRows, allow_frames: bool,
                 exact_only: bool = False) -> None:
    """Decode records i0..i1 of a chunk into the next rows; RowFailure names the first bad one.

    The rows before a bad record are appended (with the bad record's offset, for its error).
    ``exact_only`` sends every record through the exact decoder (tests compare both paths).
    """
    first_row, n = len(rows), i1 - i0
    buf = chunk.buf
    a = np.frombuffer(buf, np.uint8)
    starts = np.array(chunk.starts[i0:i1], np.int64)
    ends = starts + np.array(chunk.lengths[i0:i1], np.int64)
    decoded = nothing_decoded(n) if exact_only else decode_canonical(a, starts, ends)
    fast = decoded.rows
    if fast.size:
        _store_features(rows, first_row, n, *feature_blocks(a, decoded, fast), fast)
    ids = [buf[s : s + k] for s, k in zip(decoded.data_start[0].tolist(), decoded.data_len[0].tolist())]
    counts, labels = decoded.counts, decoded.labels
    failure = None
    slow = np.flatnonzero(~decoded.ok)
    if slow.size:
        exact_labels, failure = _decode_exact(buf, starts, ends, slow, rows, first_row, ids, counts, allow_frames)
        done = failure.row - first_row if failure else n
        labels = _labels_in_row_order(decoded, fast, exact_labels, done)
        if failure:
            counts, ids = counts[:done], ids[:done]
    rows.ids.extend(ids)
    rows.labels.append(labels.astype(np.int64, copy=False))
    rows.label_counts.append(counts)
    _note_paths(rows, chunk, i0, i1, first_row)
    rows.offsets.extend(chunk.offsets[i0:i1])  # the failing row's too, for its error
    if failure:
        raise failure


def _store_features(rows: DecodedRows, first_row: int, n: int, rgb: np.ndarray, audio: np.ndarray,
                    fast: np.ndarray) -> None:
    """Put the fast rows' feature bytes in the batch arrays; when the whole batch is this one pass
    (the usual case), the gathered blocks become the batch arrays."""
    if first_row == 0 and fast.size == n == rows.capacity:
        rows.rgb = rgb.view("<f4").astype(np.float32, copy=False)
        rows.audio = audio.view("<f4").astype(np.float32, copy=False)
    else:
        rows.rgb[first_row : first_row + n].view(np.uint8)[fast] = rgb
        rows.audio[first_row : first_row + n].view(np.uint8)[fast] = audio


def _decode_exact(buf: bytes, starts: np.ndarray, ends: np.ndarray, slow: np.ndarray, rows: DecodedRows,
                  first_row: int, ids: list[bytes], counts: np.ndarray,
                  allow_frames: bool) -> tuple[dict[int, np.ndarray], RowFailure | None]:
    """Decode the ``slow`` records one by one, filling in their ids, label counts and features; returns
    their labels by record and the failure of the first bad one (the records after it are not decoded)."""
    labels = {}
    for j in slow.tolist():
        try:
            out = decode_exact(buf, int(starts[j]), int(ends[j]), first_row + j, allow_frames)
        except RowFailure as failure:
            return labels, failure
        ids[j] = out[1]
        labels[j] = out[2]
        counts[j] = out[2].size
        if out[0] == "video":
            rows.rgb[first_row + j], rows.audio[first_row + j] = out[3], out[4]
        else:
            rows.frames[first_row + j] = out[3]
    return labels, None


def _labels_in_row_order(decoded: FastRecords, fast: np.ndarray, exact_labels: dict[int, np.ndarray],
                         done: int) -> np.ndarray:
    """The labels of the first ``done`` records, each from the path that decoded it."""
    fast_counts = decoded.counts[fast] if fast.size else decoded.counts[:0]
    fast_ends = np.cumsum(fast_counts)
    fast_index = {int(j): k for k, j in enumerate(fast)}
    pieces = []
    for j in range(done):
        if j in exact_labels:
            pieces.append(exact_labels[j])
        else:
            k = fast_index[j]
            pieces.append(decoded.labels[fast_ends[k] - fast_counts[k] : fast_ends[k]])
    return np.concatenate(pieces) if pieces else np.zeros(0, np.int64)


def _note_paths(rows: DecodedRows, chunk: RecordChunk, i0: int, i1: int, first_row: int) -> None:
    """Record which file the new rows came from (a chunk may hold records of several small files)."""
    segments = chunk.segments
    for k, (first, path) in enumerate(segments):
        following = segments[k + 1][0] if k + 1 < len(segments) else len(chunk)
        if first < i1 and following > i0 and (not rows.paths or rows.paths[-1][1] != path):
            rows.paths.append((first_row + max(first - i0, 0), path))


# ----------------------------------------------------------------------------- the exact decoder


def decode_exact(buf: bytes, start: int, end: int, row: int, allow_frames: bool):
    """Decode one record with the strict wire decoder; returns ('video', id, labels, rgb, audio)
    or ('frame', id, labels, FrameFeatures). Raises RowFailure with the reason otherwise."""
    video_id = None
    try:
        parsed = parse_record(buf, start, end, _CONTEXT_KEYS, _LIST_KEYS)
        context = parsed.context
        video_id = _one_bytes(context, "id")
        labels = _int64s(context, "labels")
        if "mean_rgb" not in context and parsed.list_count:
            if not allow_frames:
                raise ShapeError("frame-level record in a video-level batch read (use iter_records, "
                                 "or a feature store, for frame-level data)")
            return "frame", video_id, labels, _frame_features(buf, parsed, context)
        rgb = _floats(context, "mean_rgb", RGB_DIM)
        audio = _floats(context, "mean_audio", AUDIO_DIM)
        return "video", video_id, labels, rgb, audio
    except WireError as exc:
        raise RowFailure(row, RecordError, f"payload is not a tf.train.Example/SequenceExample ({exc})") from None
    except ShapeError as exc:
        raise RowFailure(row, SchemaError, str(exc), video_id) from None


def _one_bytes(context: dict[str, Feature], key: str) -> bytes:
    feature = context.get(key)
    if feature is None:
        raise ShapeError(f"no {key!r} feature (not a YouTube-8M record?)")
    if feature.kind != BYTES:
        raise ShapeError(f"{key!r} is {KIND_NAMES[feature.kind]}, expected one byte string")
    if len(feature.values) != 1:
        raise ShapeError(f"{key!r} must hold one bytes value, found {len(feature.values)}")
    return feature.values[0]


def _int64s(context: dict[str, Feature], key: str, required: bool = False) -> np.ndarray:
    feature = context.get(key)
    if feature is None or feature.kind is None:
        if required:
            raise ShapeError(f"no {key!r} feature")
        return np.zeros(0, np.int64)
    if feature.kind != INT64:
        raise ShapeError(f"{key!r} is {KIND_NAMES[feature.kind]}, expected an int64 list")
    return feature.values


def _floats(context: dict[str, Feature], key: str, size: int | None, required: bool = True) -> np.ndarray:
    feature = context.get(key)
    if feature is None:
        if required:
            raise ShapeError(f"no {key!r} feature (not a YouTube-8M video-level record?)")
        return np.zeros(0, np.float32)
    if feature.kind not in (FLOAT, None):
        raise ShapeError(f"{key!r} is {KIND_NAMES[feature.kind]}, expected a float list")
    values = np.frombuffer(feature.values or b"", "<f4").astype(np.float32)
    if size is not None and values.size != size:
        raise ShapeError(f"{key!r} has {values.size} values, expected {size}")
    return values


def _frame_features(buf: bytes, parsed, context: dict[str, Feature]) -> FrameFeatures:
    blocks = {}
    for key, width in (("rgb", RGB_DIM), ("audio", AUDIO_DIM)):
        if key not in parsed.lists:
            raise ShapeError(f"no {key!r} feature list (not a YouTube-8M frame-level record?)")
        start, end = parsed.lists[key]
        blocks[key] = parse_frames(buf, start, end, width, key)
    rgb, audio = blocks["rgb"], blocks["audio"]
    if rgb.shape[0] != audio.shape[0]:
        raise ShapeError(f"{rgb.shape[0]} rgb frames but {audio.shape[0]} audio frames")
    if rgb.shape[0] == 0:
        raise ShapeError("frame-level record has no frames")
    if rgb.shape[0] > frame_cap():
        raise ShapeError(f"{rgb.shape[0]} frames, more than the {frame_cap()} a video may have (set "
                         f"{FRAME_CAP_VARIABLE} to read longer videos)")
    frame = FrameFeatures(rgb, audio)
    segment_keys = ("segment_start_times", "segment_labels", "segment_scores")
    if any(key in context for key in segment_keys):
        missing = [key for key in segment_keys if key not in context]
        if missing:
            raise ShapeError(f"segment annotations without {missing[0]!r}")
        frame.segment_start_times = _int64s(context, "segment_start_times")
        frame.segment_labels = _int64s(context, "segment_labels")
        frame.segment_scores = _floats(context, "segment_scores", None)
        sizes = {frame.segment_start_times.size, frame.segment_labels.size, frame.segment_scores.size}
        if len(sizes) != 1:
            raise ShapeError(
                f"segment annotations of different lengths: {frame.segment_start_times.size} start times, "
                f"{frame.segment_labels.size} labels, {frame.segment_scores.size} scores")
    return frame
