"""YouTube-8M records: the record types and the two readers, ``iter_records`` and ``iter_batches``.

Video-level files hold ``tf.train.Example`` with ``id``, ``labels``, ``mean_rgb`` (1024
floats) and ``mean_audio`` (128 floats). Frame-level files hold ``tf.train.SequenceExample``
with context ``id``/``labels`` and feature lists ``rgb``/``audio``: one uint8 string per
second, quantized over [-2, 2]. The level is read from each record, not from the file name.

One decoder serves both readers. Records are decoded a batch at a time (``avf.data.decode``:
numpy recognises the canonical video-level layout for the whole batch at once and gathers
features straight into the batch arrays, ``avf.data.fast_decode``; any record it does not
recognise goes through the strict wire decoder in ``avf.data.example_proto``). Then one
vectorised check runs over the batch (``avf.data.batch_checks``: UTF-8 ids, label range, finite
features, segment annotations). ``iter_records`` and ``iter_batches`` are both views of those
checked batches, so they cannot disagree. This module batches the records of one or many shards
for that decoder and hands out what it checked; the schema's facts and the encoder live in
``avf.data.schema`` and ``avf.data.encode`` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avf.data.batch_checks import check_rows, failure_error
from avf.data.decode import DecodedRows, RowFailure, decode_chunk
from avf.data.encode import encode_frame_example, encode_video_example
from avf.data.schema import (
    AUDIO_DIM,
    DEFAULT_NUM_CLASSES,
    FRAME_CAP_VARIABLE,
    MAX_FRAMES,
    RGB_DIM,
    dequantize,
    frame_cap,
    quantize,
)
from avf.data.sources import expand_sources
from avf.data.tfrecord import RecordChunk, iter_chunks
from avf.errors import RecordError, SchemaError

__all__ = [
    "AUDIO_DIM", "DEFAULT_NUM_CLASSES", "FRAME_CAP_VARIABLE", "MAX_FRAMES", "RGB_DIM", "VideoBatch", "VideoRecord",
    "decode_record", "dequantize", "detect_level", "encode_frame_example", "encode_video_example", "frame_cap",
    "iter_batches", "iter_records", "quantize",
]

#: Force every record through the exact decoder (tests compare both paths with it).
FORCE_EXACT = False

#: Bytes one frame takes in a record (1024 + 128 feature bytes and their framing, generously),
#: and room for everything else in one (id, labels, segment annotations, extra features).
_FRAME_RECORD_BYTES = RGB_DIM + AUDIO_DIM + 64
_CONTEXT_RECORD_BYTES = 1 << 20


def _record_chunks(path):
    """The shard's records, each refused from its header when longer than the frame cap allows."""
    cap = frame_cap()
    return iter_chunks(path, max_record_bytes=cap * _FRAME_RECORD_BYTES + _CONTEXT_RECORD_BYTES,
                       too_large=f"more than the {cap} frames a video may have; set {FRAME_CAP_VARIABLE} to read "
                                 "longer videos")


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


# ----------------------------------------------------------------------------- batching the decoder's work


def _checked_rows(paths, capacity: int, num_classes: int | None, allow_frames: bool):
    """Yield (rows, ids, indptr, values) in batches of ``capacity`` checked records, then
    (after the good rows before it) raise the error of the first bad record, in file order."""
    rows = DecodedRows(capacity)
    chunks = _merged_chunks(paths, capacity)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            break
        except RecordError as framing:  # the records before it were decoded: check them first
            error = yield from _checked(rows, num_classes, before_error=True)
            if error:
                raise error from None
            raise framing
        i = 0
        while i < len(chunk):
            take = min(len(chunk) - i, capacity - len(rows))
            try:
                decode_chunk(chunk, i, i + take, rows, allow_frames, exact_only=FORCE_EXACT)
            except RowFailure as refused:
                error = yield from _checked(rows, num_classes, refused)
                raise error from None
            i += take
            if len(rows) == capacity:
                error = yield from _checked(rows, num_classes)
                if error:
                    raise error from None
                rows = DecodedRows(capacity)
    if len(rows):
        error = yield from _checked(rows, num_classes)
        if error:
            raise error from None


def _checked(rows: DecodedRows, num_classes: int | None, refused: RowFailure | None = None,
             before_error: bool = False):
    """Check a batch of decoded rows: yield it when every row passes, else only the good rows before the first
    bad one (as partial rows), and return that row's error (None when every row passes).

    ``refused``: the row decoding stopped at (it wins over a check failing on the same row). ``before_error``:
    the batch ends at a framing error, so even a good batch goes out as partial rows: only iter_records hands
    out the records before an error.
    """
    ids, indptr, values, failure = check_rows(rows, num_classes)
    if refused is not None and (failure is None or refused.row <= failure.row):
        failure = refused
    if failure is None and not before_error:
        yield rows, ids, indptr, values
        return None
    good = failure.row if failure else len(rows)
    if good:
        yield _partial(rows, ids, indptr, values, good)
    return failure_error(rows, failure) if failure else None


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


def _partial(rows: DecodedRows, ids, indptr, values, n: int):
    """The good rows before a bad one (iter_records hands them out before raising)."""
    return _PartialRows(rows, n), ids[:n], indptr[: n + 1], values[: indptr[n]]


class _PartialRows:
    def __init__(self, rows: DecodedRows, n: int):
        self.rows, self.n = rows, n

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name):
        return getattr(self.rows, name)


def _records_from(rows, ids, indptr, values, dequantize_frames: bool) -> Iterator[VideoRecord]:
    frames = rows.frames
    offsets = rows.offsets
    path_starts = rows.paths
    p, path = 0, ""
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
    rows = DecodedRows(1)
    try:
        decode_chunk(chunk, 0, 1, rows, allow_frames=True, exact_only=FORCE_EXACT)
    except RowFailure as failure:
        raise failure_error(rows, failure) from None
    ids, indptr, values, failure = check_rows(rows, num_classes)
    if failure:
        raise failure_error(rows, failure)
    (record,) = _records_from(rows, ids, indptr, values, dequantize_frames)
    record.source = str(path)
    return record


def detect_level(path: str | Path) -> str:
    """'video' or 'frame', from the shard's first record."""
    for chunk in _record_chunks(path):
        return decode_record(chunk.payload(0), str(path), chunk.offsets[0], None, dequantize_frames=False).level
    raise SchemaError(path, "shard holds no records")
