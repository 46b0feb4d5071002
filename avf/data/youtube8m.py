"""YouTube-8M records: decode, validate and encode video- and frame-level examples.

Video-level files hold ``tf.train.Example`` with ``id``, ``labels``, ``mean_rgb`` (1024
floats) and ``mean_audio`` (128 floats). Frame-level files hold ``tf.train.SequenceExample``
with context ``id``/``labels`` and feature lists ``rgb``/``audio``: one uint8 string per
second, quantized over [-2, 2]. The level is read from each record, not from the file name.

One decoder serves both readers. Records are decoded a batch at a time: numpy recognises the
canonical video-level layout (the one TensorFlow writes: four features, each one packed
block) for the whole batch at once and gathers features straight into the batch arrays; any
record it does not recognise goes through the strict wire decoder in
``avf.data.example_proto``. Then one vectorised check runs over the batch (UTF-8 ids, label
range, finite features, segment annotations). ``iter_records`` and ``iter_batches`` are both
views of those checked batches, so they cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from avf.data.example_proto import (
    BYTES,
    FLOAT,
    INT64,
    KIND_NAMES,
    Feature,
    RawRecord,
    ShapeError,
    WireError,
    parse_frames,
    parse_record,
)
from avf.data.sources import expand_sources
from avf.data.tfrecord import RecordChunk, iter_chunks
from avf.errors import InputError, RecordError, SchemaError

RGB_DIM = 1024
AUDIO_DIM = 128
#: YouTube-8M 2018 vocabulary; the 2017 release (and the paper) used 4716.
DEFAULT_NUM_CLASSES = 3862
#: YouTube-8M's longest videos: 300 one-second frames.
MAX_FRAMES = 300
#: The setting that raises the frame cap, for frame-level data of one's own with longer videos.
FRAME_CAP_VARIABLE = "AVF_MAX_FRAMES"
#: Bytes one frame takes in a record (1024 + 128 feature bytes and their framing, generously),
#: and room for everything else in one (id, labels, segment annotations, extra features).
_FRAME_RECORD_BYTES = RGB_DIM + AUDIO_DIM + 64
_CONTEXT_RECORD_BYTES = 1 << 20


def frame_cap() -> int:
    """The most frames a video may have: MAX_FRAMES, or AVF_MAX_FRAMES when set.

    It bounds what one record can cost in every command: a record longer than the cap allows is
    refused from its header, before it is read or inflated (a GZIP member of 2.7 MB can otherwise
    hold 200,000 frames and take gigabytes to decode).
    """
    text = os.environ.get(FRAME_CAP_VARIABLE)
    if text is None:
        return MAX_FRAMES
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(None, f"{FRAME_CAP_VARIABLE}={text!r}: expected a positive whole number of frames")
    return value


def _record_chunks(path):
    """The shard's records, each refused from its header when longer than the frame cap allows."""
    cap = frame_cap()
    return iter_chunks(path, max_record_bytes=cap * _FRAME_RECORD_BYTES + _CONTEXT_RECORD_BYTES,
                       too_large=f"more than the {cap} frames a video may have; set {FRAME_CAP_VARIABLE} to read "
                                 "longer videos")

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


# ----------------------------------------------------------------------------- the decoder

_CONTEXT_KEYS = {name.encode(): name for name in (
    "id", "labels", "mean_rgb", "mean_audio", "segment_start_times", "segment_labels", "segment_scores")}
_LIST_KEYS = {b"rgb": "rgb", b"audio": "audio"}
_RGB_BYTES, _AUDIO_BYTES = 4 * RGB_DIM, 4 * AUDIO_DIM
#: Entries the numpy path follows per record; a record with more goes to the exact decoder.
_FAST_MAX_ENTRIES = 8
#: Force every record through the exact decoder (tests compare both paths with it).
FORCE_EXACT = False
#: The context keys the numpy path knows, by code: 0 id, 1 labels, 2 mean_rgb, 3 mean_audio
#: (with their Feature kind tags), 4 anything starting "segment_" of the segment keys' lengths
#: (sent to the exact decoder). Looked up by key length, then compared in one step.
_KNOWN = [(b"id", 0x0A), (b"labels", 0x1A), (b"mean_rgb", 0x12), (b"mean_audio", 0x12)]
_KEY_WIDTH = 19  # len("segment_start_times"), the longest
_HEAD_WIDTH = 5 + _KEY_WIDTH  # 0a ELEN(2) 0a KLEN KEY
_KEY_CODE = np.full(256, -1, np.int64)
_KEY_BYTES = np.zeros((6, _KEY_WIDTH), np.uint8)
_KEY_MASK = np.zeros((6, _KEY_WIDTH), bool)
_KEY_KIND = np.full(6, -1, np.int64)
for _code, (_key, _kind) in enumerate(_KNOWN + [(b"segment_", -1)]):
    _KEY_BYTES[_code, : len(_key)] = np.frombuffer(_key, np.uint8)
    _KEY_MASK[_code, : len(_key)] = True
    _KEY_KIND[_code] = _kind
    for _length in ([len(_key)] if _kind >= 0 else [len("segment_labels"), len("segment_start_times")]):
        _KEY_CODE[_length] = _code
_KEY_MASK[5] = True  # row -1: never matches (code -1 is masked out anyway)


@dataclass(slots=True)
class _Frame:
    rgb: np.ndarray
    audio: np.ndarray
    segment_start_times: np.ndarray | None = None
    segment_labels: np.ndarray | None = None
    segment_scores: np.ndarray | None = None


class _Failure(Exception):
    """A record refused while decoding: row, error class and problem."""

    def __init__(self, row: int, cls: type, problem: str, video: bytes | None = None):
        super().__init__(problem)
        self.row, self.cls, self.problem, self.video = row, cls, problem, video


class _Rows:
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
        self.frames: dict[int, _Frame] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def path_of(self, row: int) -> str:
        found = ""
        for first, path in self.paths:
            if first > row:
                break
            found = path
        return found


def _len2(a: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length varints of at most 2 bytes (< 16384) at ``pos``: values and the position after.
    A longer one gets a value no range check can pass, leaving its record to the exact path."""
    b0 = a.take(pos, mode="clip")
    b1 = a.take(pos + 1, mode="clip")
    two = b0 >= 0x80
    value = np.where(two, (b0 & 0x7F) | (b1.astype(np.int64) << 7), b0)
    bad = two & (b1 >= 0x80)
    if bad.any():
        value[bad] = 1 << 40
    return value, pos + 1 + two


def _fast_video(a: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Recognise canonical video-level records (a whole chunk at once).

    Returns ``ok`` and, per record, where the id, labels, mean_rgb and mean_audio data start
    and how long they are. A record is ``ok`` only when every byte of its structure is
    accounted for: top-level ``features`` (then nothing, or an empty ``feature_lists``), at
    most 8 map entries of the form key/value, each Feature one list of one block, the four
    wanted keys once each with the right kinds and sizes (labels optional, packed), lengths
    below 16384. Anything else is left to the exact decoder, so this path can only be faster,
    never different. Every byte read for an accepted record lies inside it (reads past the
    buffer are clipped, and only happen for records that are then refused).
    """
    n = len(starts)
    size = len(a)
    if size < _RGB_BYTES + _AUDIO_BYTES:
        zeros = np.zeros((4, n), np.int64)
        return np.zeros(n, bool), zeros, zeros
    ok = (a.take(starts, mode="clip") == 0x0A) & (starts < ends) & (ends <= size)
    flen, fstart = _len2(a, starts + 1)
    fend = fstart + flen
    ok &= (fend == ends) | ((fend + 2 == ends) & (a.take(fend, mode="clip") == 0x12)
                            & (a.take(fend + 1, mode="clip") == 0))
    seen = np.zeros((5, n), np.int64)
    data_start = np.zeros((5, n), np.int64)
    data_len = np.zeros((5, n), np.int64)
    window = sliding_window_view(a, _HEAD_WIDTH)
    cur = fstart
    for _ in range(_FAST_MAX_ENTRIES):
        active = ok & (cur < fend)
        if not active.any():
            break
        idx = np.flatnonzero(active)
        c = cur[idx]
        # one gather holds the entry's tag, its length varint, the key's tag and length and
        # the key itself: 0a ELEN(1-2 bytes) 0a KLEN KEY...
        head = window[np.minimum(c, size - _HEAD_WIDTH)]
        e0, e1 = head[:, 1], head[:, 2]
        two = e0 >= 0x80
        elen = np.where(two, (e0 & 0x7F) | (e1.astype(np.int64) << 7), e0)
        q = c + 2 + two
        qend = q + elen
        klen = np.where(two, head[:, 4], head[:, 3]).astype(np.int64)
        keyb = np.where(two[:, None], head[:, 5:], head[:, 4:-1])
        kend = q + 2 + klen
        vlen, fs = _len2(a, kend + 1)
        llen, ls = _len2(a, fs + 1)
        dlen, ds = _len2(a, ls + 1)
        tag = a.take(fs, mode="clip")
        empty = llen == 0
        good = ((head[:, 0] == 0x0A) & (np.where(two, head[:, 3], head[:, 2]) == 0x0A) & ~(two & (e1 >= 0x80))
                & (c <= size - _HEAD_WIDTH) & (klen < 0x80)
                & (a.take(kend, mode="clip") == 0x12) & (qend <= fend[idx]) & (vlen > 0)
                & (fs + vlen == qend) & (ls + llen == qend)
                & (empty | ((a.take(ls, mode="clip") == 0x0A) & (ds + dlen == qend))))
        dlen[empty] = 0
        # which wanted key (if any): one table lookup by key length, one compare
        code = _KEY_CODE[klen & 0xFF]
        match = (code >= 0) & ((keyb == _KEY_BYTES[code]) | ~_KEY_MASK[code]).all(axis=1)
        # segment annotations, or a wanted key of the wrong kind: the exact decoder decides
        good &= ~match | ((code < 4) & (tag == _KEY_KIND[code]))
        sel = np.flatnonzero(match & good)
        rows, kind = idx[sel], code[sel]
        seen[kind, rows] += 1  # one entry per record per step: no repeated (kind, row) pairs
        data_start[kind, rows] = ds[sel]
        data_len[kind, rows] = dlen[sel]
        ok[idx[~good]] = False
        cur = cur.copy() if cur is fstart else cur
        cur[idx] = qend
    ok &= cur >= fend
    ok &= (seen[0] == 1) & (data_len[0] > 0) & (seen[1] <= 1) & (seen[2] == 1) & (seen[3] == 1)
    ok &= (data_len[2] == _RGB_BYTES) & (data_len[3] == _AUDIO_BYTES)
    return ok, data_start, data_len


def _packed_varints(a: np.ndarray, starts: np.ndarray, lengths: np.ndarray):
    """Decode packed int64 blocks: (ok per block, counts per block, values)."""
    total = int(lengths.sum())
    n = len(starts)
    if total == 0:
        return np.ones(n, bool), np.zeros(n, np.int64), np.zeros(0, np.int64)
    first = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1], out=first[1:])
    idx = np.repeat(starts - first, lengths) + np.arange(total)
    b = a[idx]
    last = b < 0x80
    block_end = first + lengths - 1
    ok = np.ones(n, bool)
    nonempty = lengths > 0
    ok[nonempty] = last[block_end[nonempty]]
    # the value each byte belongs to, and the byte's place in it
    value_id = np.cumsum(last) - last
    value_start = np.flatnonzero(np.r_[True, last[:-1]])
    place = np.arange(total) - value_start[np.minimum(value_id, len(value_start) - 1)]
    too_long = place >= 10
    if too_long.any():
        block_of_byte = np.repeat(np.arange(n), lengths)
        ok[np.unique(block_of_byte[too_long])] = False
        place = np.minimum(place, 9)
    contrib = (b & 0x7F).astype(np.uint64) << (7 * place).astype(np.uint64)
    values = np.bitwise_or.reduceat(contrib, value_start) if value_start.size else np.zeros(0, np.uint64)
    ends_before = np.zeros(total + 1, np.int64)
    np.cumsum(last, out=ends_before[1:])
    counts = ends_before[first + lengths] - ends_before[first]
    if not last[-1]:
        values = values[: int(last.sum())]  # a last, unterminated value belongs to a refused block
    return ok, counts, values.view(np.int64)


def _exact(buf: bytes, start: int, end: int, row: int, allow_frames: bool):
    """Decode one record with the strict wire decoder; returns ('video', id, labels, rgb, audio)
    or ('frame', id, labels, _Frame). Raises _Failure with the reason otherwise."""
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
        raise _Failure(row, RecordError, f"payload is not a tf.train.Example/SequenceExample ({exc})") from None
    except ShapeError as exc:
        raise _Failure(row, SchemaError, str(exc), video_id) from None


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


def _frame_features(buf: bytes, parsed, context: dict[str, Feature]) -> _Frame:
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
    frame = _Frame(rgb, audio)
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


def _decode_chunk(chunk: RecordChunk, i0: int, i1: int, rows: _Rows, allow_frames: bool) -> None:
    """Decode records i0..i1 of a chunk into the next rows; _Failure names the first bad one."""
    r0 = len(rows)
    n = i1 - i0
    buf = chunk.buf
    a = np.frombuffer(buf, np.uint8)
    starts = np.array(chunk.starts[i0:i1], np.int64)
    ends = starts + np.array(chunk.lengths[i0:i1], np.int64)
    if FORCE_EXACT:
        ok = np.zeros(n, bool)
        data_start = data_len = np.zeros((4, n), np.int64)
    else:
        ok, data_start, data_len = _fast_video(a, starts, ends)
    fast = np.flatnonzero(ok)
    counts = np.zeros(n, np.int64)
    values = np.zeros(0, np.int64)
    if fast.size:
        lab_ok, lab_counts, values = _packed_varints(a, data_start[1, fast], data_len[1, fast])
        if not lab_ok.all():  # a malformed label block: the exact decoder says why
            ok[fast[~lab_ok]] = False
            fast = fast[lab_ok]
            _, lab_counts, values = _packed_varints(a, data_start[1, fast], data_len[1, fast])
        counts[fast] = lab_counts
        # a row gather from a sliding-window view: no per-record work; when the whole batch is
        # this one pass (the usual case), the gathered blocks become the batch arrays
        rgb = sliding_window_view(a, _RGB_BYTES)[data_start[2, fast]]
        audio = sliding_window_view(a, _AUDIO_BYTES)[data_start[3, fast]]
        if r0 == 0 and fast.size == n == rows.capacity:
            rows.rgb = rgb.view("<f4").astype(np.float32, copy=False)
            rows.audio = audio.view("<f4").astype(np.float32, copy=False)
        else:
            rows.rgb[r0 : r0 + n].view(np.uint8)[fast] = rgb
            rows.audio[r0 : r0 + n].view(np.uint8)[fast] = audio
    id_start, id_len = data_start[0].tolist(), data_len[0].tolist()
    ids = [buf[s : s + k] for s, k in zip(id_start, id_len)]
    slow = np.flatnonzero(~ok)
    failure = None
    if slow.size:
        label_rows = {}
        for j in slow.tolist():
            try:
                out = _exact(buf, int(starts[j]), int(ends[j]), r0 + j, allow_frames)
            except _Failure as exc:
                failure = exc
                break
            ids[j] = out[1]
            label_rows[j] = out[2]
            counts[j] = out[2].size
            if out[0] == "video":
                rows.rgb[r0 + j], rows.audio[r0 + j] = out[3], out[4]
            else:
                rows.frames[r0 + j] = out[3]
        pieces = []
        fast_counts = counts[fast] if fast.size else counts[:0]
        fast_ends = np.cumsum(fast_counts)
        fast_index = {int(j): k for k, j in enumerate(fast)}
        limit = failure.row - r0 if failure else n
        for j in range(limit):
            if j in label_rows:
                pieces.append(label_rows[j])
            else:
                k = fast_index[j]
                pieces.append(values[fast_ends[k] - fast_counts[k] : fast_ends[k]])
        values = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
        if failure:
            n = limit
            counts, ids = counts[:n], ids[:n]
    rows.ids.extend(ids)
    rows.labels.append(values.astype(np.int64, copy=False))
    rows.label_counts.append(counts)
    segments = chunk.segments
    for k, (first, path) in enumerate(segments):
        following = segments[k + 1][0] if k + 1 < len(segments) else len(chunk)
        if first < i1 and following > i0 and (not rows.paths or rows.paths[-1][1] != path):
            rows.paths.append((r0 + max(first - i0, 0), path))
    rows.offsets.extend(chunk.offsets[i0:i1])  # the failing row's too, for its error
    if failure:
        raise failure


def _check(rows: _Rows, num_classes: int | None) -> tuple[list[str], np.ndarray, np.ndarray, _Failure | None]:
    """The value checks, over a whole batch: returns ids, label indptr and values, and the
    first failing row (if any) with its reason."""
    n = len(rows)
    problems: list[tuple[int, str]] = []
    try:
        ids = [raw.decode("utf-8") for raw in rows.ids]
    except UnicodeDecodeError:
        ids = []
        for i, raw in enumerate(rows.ids):
            try:
                ids.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                problems.append((i, "'id' is not UTF-8 text"))
                break
    counts = np.concatenate(rows.label_counts) if rows.label_counts else np.zeros(0, np.int64)
    if len(rows.labels) == 1:
        values = rows.labels[0]
    else:
        values = np.concatenate(rows.labels) if rows.labels else np.zeros(0, np.int64)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    if values.size:
        bad = values < 0
        if num_classes is not None:
            bad |= values >= num_classes
        if bad.any():
            pos = int(np.argmax(bad))
            row = int(np.searchsorted(indptr, pos, side="right")) - 1
            value = int(values[pos])
            problems.append((row, f"negative label index {value}" if value < 0 else
                             f"label index {value} outside the vocabulary of {num_classes} classes"))
    for name, block in (("mean_rgb", rows.rgb[:n]), ("mean_audio", rows.audio[:n])):
        finite = np.isfinite(block).all(axis=1)
        if rows.frames:
            finite[list(rows.frames)] = True
        if not finite.all():
            problems.append((int(np.argmin(finite)), f"{name!r} holds NaN or inf values"))
    for row, frame in rows.frames.items():
        if frame.segment_labels is None:
            continue
        problem = None
        if frame.segment_start_times.size and frame.segment_start_times.min() < 0:
            problem = f"negative segment start time {int(frame.segment_start_times.min())}"
        elif frame.segment_labels.size and frame.segment_labels.min() < 0:
            problem = f"negative segment label {int(frame.segment_labels.min())}"
        elif num_classes is not None and frame.segment_labels.size and frame.segment_labels.max() >= num_classes:
            problem = (f"segment label {int(frame.segment_labels.max())} outside the vocabulary of "
                       f"{num_classes} classes")
        elif not np.isfinite(frame.segment_scores).all():
            problem = "'segment_scores' holds NaN or inf values"
        if problem:
            problems.append((row, problem))
    failure = None
    if problems:
        row, problem = min(problems, key=lambda item: item[0])
        failure = _Failure(row, SchemaError, problem)
    return ids, indptr, values, failure


def _error(rows: _Rows, failure: _Failure):
    row = failure.row
    raw = rows.ids[row] if row < len(rows.ids) else failure.video
    prefix = ""
    if raw:
        try:
            prefix = f"video {raw.decode('utf-8')!r}: "
        except UnicodeDecodeError:
            prefix = ""
    return failure.cls(rows.path_of(row), prefix + failure.problem, rows.offsets[row])


def _checked_rows(paths, capacity: int, num_classes: int | None, allow_frames: bool):
    """Yield (rows, ids, indptr, values) in batches of ``capacity`` checked records, then
    (after the good rows before it) raise the error of the first bad record, in file order."""
    rows = _Rows(capacity)
    chunks = _merged_chunks(paths, capacity)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except RecordError as framing:  # the records before it were decoded: check them first
            ids, indptr, values, failure = _check(rows, num_classes)
            if failure:
                if failure.row:
                    yield _partial(rows, ids, indptr, values, failure.row)
                raise _error(rows, failure) from None
            if len(rows):
                yield _partial(rows, ids, indptr, values, len(rows))
            raise framing
        i = 0
        while i < len(chunk):
            take = min(len(chunk) - i, capacity - len(rows))
            try:
                _decode_chunk(chunk, i, i + take, rows, allow_frames)
            except _Failure as decode_failure:
                ids, indptr, values, failure = _check(rows, num_classes)
                first = failure if failure and failure.row < decode_failure.row else decode_failure
                if first.row:
                    yield _partial(rows, ids, indptr, values, first.row)
                raise _error(rows, first) from None
            i += take
            if len(rows) == capacity:
                ids, indptr, values, failure = _check(rows, num_classes)
                if failure:
                    if failure.row:
                        yield _partial(rows, ids, indptr, values, failure.row)
                    raise _error(rows, failure) from None
                yield rows, ids, indptr, values
                rows = _Rows(capacity)
    if len(rows):
        ids, indptr, values, failure = _check(rows, num_classes)
        if failure:
            if failure.row:
                yield _partial(rows, ids, indptr, values, failure.row)
            raise _error(rows, failure) from None
        yield rows, ids, indptr, values


def _merged_chunks(paths, target: int) -> Iterator[RecordChunk]:
    """Chunks of exactly ``target`` records (the last may be short), so that each batch is
    decoded in one numpy pass straight into its arrays: records of small shards are copied
    together once, a large shard's chunk is cut without copying. The records before a framing
    error come out before the error does."""
    parts: list[tuple[RecordChunk, int, int]] = []
    count = 0
    try:
        for path in paths:
            for chunk in _record_chunks(path):
                i = 0
                while i < len(chunk):
                    take = min(len(chunk) - i, target - count)
                    parts.append((chunk, i, i + take))
                    count += take
                    i += take
                    if count == target:
                        yield _join(parts)
                        parts, count = [], 0
    except RecordError:
        if parts:
            yield _join(parts)
        raise
    if parts:
        yield _join(parts)


def _join(parts: list[tuple[RecordChunk, int, int]]) -> RecordChunk:
    if len(parts) == 1:
        chunk, i0, i1 = parts[0]
        if i0 == 0 and i1 == len(chunk):
            return chunk
        return RecordChunk(chunk.path, chunk.buf, chunk.offsets[i0:i1], chunk.starts[i0:i1], chunk.lengths[i0:i1],
                           [(0, str(chunk.path))])
    pieces, starts, lengths, offsets, segments = [], [], [], [], []
    base = 0
    for chunk, i0, i1 in parts:
        first = chunk.starts[i0] - 12
        last = chunk.starts[i1 - 1] + chunk.lengths[i1 - 1] + 4
        pieces.append(memoryview(chunk.buf)[first:last])
        shift = base - first
        segments.append((len(starts), str(chunk.path)))
        starts.extend([start + shift for start in chunk.starts[i0:i1]])
        lengths.extend(chunk.lengths[i0:i1])
        offsets.extend(chunk.offsets[i0:i1])
        base += last - first
    return RecordChunk(parts[0][0].path, b"".join(pieces), offsets, starts, lengths, segments)


def _partial(rows: _Rows, ids, indptr, values, n: int):
    """The good rows before a bad one (iter_records hands them out before raising)."""
    return _PartialRows(rows, n), ids[:n], indptr[: n + 1], values[: indptr[n]]


class _PartialRows:
    def __init__(self, rows: _Rows, n: int):
        self.rows, self.n = rows, n

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(self.rows, name)


def _records_from(rows, ids, indptr, values, dequantize_frames: bool) -> Iterator[VideoRecord]:
    frames = rows.frames
    offsets = rows.offsets
    path_starts = rows.paths
    p, next_switch, path = 0, 0, ""
    for i in range(len(rows)):
        while p < len(path_starts) and path_starts[p][0] <= i:
            path = path_starts[p][1]
            p += 1
        labels = values[indptr[i] : indptr[i + 1]]
        frame = frames.get(i) if frames else None
        if frame is None:
            yield VideoRecord(ids[i], labels, rows.rgb[i], rows.audio[i], "video", path, offsets[i])
            continue
        rgb, audio = frame.rgb, frame.audio
        if dequantize_frames:
            rgb, audio = dequantize(rgb), dequantize(audio)
        yield VideoRecord(ids[i], labels, rgb, audio, "frame", path, offsets[i],
                          frame.segment_start_times, frame.segment_labels, frame.segment_scores)


def iter_records(
    source: str | Path | Iterable[str | Path],
    num_classes: int | None = DEFAULT_NUM_CLASSES,
    dequantize_frames: bool = True,
) -> Iterator[VideoRecord]:
    """Yield every video in a file, directory, glob, or list of them, checking CRCs and schema.

    ``num_classes`` bounds label indices (None: only non-negative); frame features are
    dequantized exactly as the official starter code does unless ``dequantize_frames=False``.
    Records are decoded and checked in batches of 1024 (the checks ``iter_batches`` applies);
    the good records before a bad one are yielded before its error is raised.
    """
    for checked in _checked_rows(expand_sources(source), 1024, num_classes, allow_frames=True):
        yield from _records_from(*checked, dequantize_frames)


def iter_batches(
    source: str | Path | Iterable[str | Path],
    batch_size: int = 1024,
    num_classes: int | None = DEFAULT_NUM_CLASSES,
) -> Iterator[VideoBatch]:
    """Yield video-level batches, decoded and checked exactly as ``iter_records`` does.

    Batches may span shards; the last one may be short. A frame-level record is an error.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for rows, ids, indptr, values in _checked_rows(expand_sources(source), batch_size, num_classes, allow_frames=False):
        if isinstance(rows, _PartialRows):
            continue  # only iter_records hands out the records before an error
        n = len(rows)
        rgb, audio = (rows.rgb, rows.audio) if n == rows.capacity else (rows.rgb[:n], rows.audio[:n])
        yield VideoBatch(ids, rgb, audio, indptr, values)


def decode_record(
    payload: bytes,
    path: str = "",
    offset: int = -1,
    num_classes: int | None = DEFAULT_NUM_CLASSES,
    dequantize_frames: bool = True,
) -> VideoRecord:
    """Decode and validate one serialized Example or SequenceExample (same checks as the readers)."""
    payload = bytes(payload)
    chunk = RecordChunk(Path(path), payload, [offset], [0], [len(payload)])
    rows = _Rows(1)
    try:
        _decode_chunk(chunk, 0, 1, rows, allow_frames=True)
    except _Failure as failure:
        raise _error(rows, failure) from None
    ids, indptr, values, failure = _check(rows, num_classes)
    if failure:
        raise _error(rows, failure)
    (record,) = _records_from(rows, ids, indptr, values, dequantize_frames)
    record.source = str(path)
    return record


def detect_level(path: str | Path) -> str:
    """'video' or 'frame', from the shard's first record."""
    for chunk in _record_chunks(path):
        return decode_record(chunk.payload(0), str(path), chunk.offsets[0], None, dequantize_frames=False).level
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
