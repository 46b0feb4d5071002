"""Memory-mapped feature store: parse TFRecords once, then train from ``np.load(mmap_mode='r')``.

Layout of a store directory (every array a standard ``.npy`` file):

- ``rgb.npy``/``audio.npy``: video level (N, 1024)/(N, 128) float16 (or float32);
  frame level (total_frames, 1024)/(total_frames, 128) uint8 codes, as YouTube-8M ships them,
  with ``frame_offsets.npy`` (N + 1,) so video i owns rows ``offsets[i]:offsets[i+1]``.
- ``label_indptr.npy`` (N + 1,) int64 and ``label_indices.npy`` int32: labels in CSR form.
- ``ids.npy``: video ids as fixed-width bytes.
- ``manifest.json``: counts, dtypes, shapes, the vocabulary hash and every source's sha256.

The store is built in a temporary directory beside the target and renamed into place only
when complete, so an interrupted conversion never leaves a half store.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avf import __version__
from avf.atomic import atomic_directory, check_output, json_file_says
from avf.data.sources import expand_sources
from avf.data.vocabulary import file_sha256, find_vocabulary, load_vocabulary
from avf.data.youtube8m import (
    AUDIO_DIM,
    DEFAULT_NUM_CLASSES,
    RGB_DIM,
    dequantize,
    detect_level,
    iter_batches,
    iter_records,
)
from avf.errors import InputError, SchemaError

STORE_FORMAT = "avf-feature-store"
STORE_VERSION = 1
MANIFEST = "manifest.json"
_NPY_HEADER_BYTES = 256  # room for any shape; rewritten in place once the row count is known

#: progress(bytes_read, records) increments, called as shards are consumed.
ProgressFn = Callable[[int, int], None]


class _NpyStreamWriter:
    """Append rows to a ``.npy`` file whose leading dimension is only known at the end."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape, self.rows = path, np.dtype(dtype), row_shape, 0
        self._fh = open(path, "wb")
        self._fh.write(self._header(0))

    def _header(self, rows: int) -> bytes:
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = repr({"descr": descr, "fortran_order": False, "shape": (rows, *self.row_shape)})
        prefix = b"\x93NUMPY\x01\x00"
        body_len = _NPY_HEADER_BYTES - len(prefix) - 2
        return prefix + struct.pack("<H", body_len) + text.encode("latin1").ljust(body_len - 1) + b"\n"

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {rows.shape[1:]}, expected {self.row_shape}")
        self._fh.write(rows.tobytes())
        self.rows += rows.shape[0]

    def close(self) -> None:
        self._fh.seek(0)
        self._fh.write(self._header(self.rows))
        self._fh.close()


@dataclass
class _Columns:
    """The arrays of a store being written."""

    rgb: _NpyStreamWriter
    audio: _NpyStreamWriter
    label_indices: _NpyStreamWriter
    frame_offsets: list[int] | None
    ids: list[bytes]
    label_counts: list[np.ndarray]


def convert(
    source: str | Path | Iterable[str | Path],
    store: str | Path,
    num_classes: int | None = None,
    vocabulary: str | Path | None = None,
    feature_dtype: str = "float16",
    force: bool = False,
    progress: ProgressFn | None = None,
) -> dict:
    """Convert TFRecord shards into a feature store; returns its manifest.

    The class count comes from ``num_classes``, else the vocabulary (given, or the
    ``vocabulary.csv`` beside the shards), else YouTube-8M 2018's 3,862. Every label is checked
    against it. ``feature_dtype`` applies to video-level features (frame level keeps uint8).
    """
    if feature_dtype not in ("float16", "float32"):
        raise ValueError("feature_dtype must be float16 or float32")
    store = Path(store)
    shards = expand_sources(source)
    is_store = json_file_says(MANIFEST, "format", STORE_FORMAT)
    check_output(store, force=force, directory=True, ours=is_store, inputs=[*shards, vocabulary], what="feature store")
    vocab = load_vocabulary(vocabulary) if vocabulary else find_vocabulary(shards)
    if num_classes is None:
        num_classes = vocab.num_classes if vocab else DEFAULT_NUM_CLASSES
    elif vocab and vocab.num_classes != num_classes:
        raise InputError(vocab.path, f"vocabulary has {vocab.num_classes} classes but {num_classes} were asked for")

    level = detect_level(shards[0])
    started = time.perf_counter()
    with atomic_directory(store, force, ours=is_store, inputs=[*shards, vocabulary], what="feature store") as tmp:
        sources = _write_columns(tmp, shards, level, num_classes, feature_dtype, progress)
        manifest = _finish(tmp, level, num_classes, feature_dtype, sources, vocab)
        manifest["conversion_seconds"] = round(time.perf_counter() - started, 3)
        _write_json(tmp / MANIFEST, manifest)
    return manifest


def _write_columns(tmp, shards, level, num_classes, feature_dtype, progress) -> list[dict]:
    frame = level == "frame"
    dtype = np.uint8 if frame else np.dtype(feature_dtype)
    cols = _Columns(
        rgb=_NpyStreamWriter(tmp / "rgb.npy", dtype, (RGB_DIM,)),
        audio=_NpyStreamWriter(tmp / "audio.npy", dtype, (AUDIO_DIM,)),
        label_indices=_NpyStreamWriter(tmp / "label_indices.npy", np.int32, ()),
        frame_offsets=[0] if frame else None,
        ids=[],
        label_counts=[],
    )
    sources = []
    try:
        for shard in shards:
            digest = file_sha256(shard)
            before = len(cols.ids)
            if detect_level(shard) != level:
                raise InputError(shard, f"is not {level}-level like {shards[0].name}: convert each level separately")
            if frame:
                _append_frame_shard(cols, shard, num_classes)
            else:
                _append_video_shard(cols, shard, num_classes)
            records = len(cols.ids) - before
            sources.append({"path": str(shard), "sha256": digest, "bytes": shard.stat().st_size, "records": records})
            if progress:
                progress(shard.stat().st_size, records)
    finally:
        for writer in (cols.rgb, cols.audio, cols.label_indices):
            writer.close()
    if not cols.ids:
        raise InputError(shards[0], "no records to convert")
    counts = np.concatenate(cols.label_counts)
    indptr = np.zeros(len(cols.ids) + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    np.save(tmp / "label_indptr.npy", indptr)
    np.save(tmp / "ids.npy", np.array(cols.ids, dtype=f"S{max(len(i) for i in cols.ids)}"))
    if frame:
        np.save(tmp / "frame_offsets.npy", np.array(cols.frame_offsets, np.int64))
    return sources


def _check_representable(dtype: np.dtype, batch, shard: Path) -> None:
    """A finite feature the store's dtype cannot hold (1e30 in float16) would become inf: refuse it."""
    if dtype.kind != "f":
        return
    limit = np.finfo(dtype).max
    for name in ("rgb", "audio"):
        values = getattr(batch, name)
        too_large = np.abs(values) > limit
        if too_large.any():
            row = int(np.flatnonzero(too_large.any(axis=1))[0])
            offsets = getattr(batch, "offsets", None)
            offset = int(offsets[row]) if offsets is not None else None
            raise SchemaError(shard, f"video {batch.ids[row]!r}: {name} value {float(values[row][too_large[row]][0]):.3g} "
                                     f"does not fit the store's {dtype} (largest {float(limit):.6g}); convert with "
                                     "--dtype float32", offset)


def _append_video_shard(cols: _Columns, shard: Path, num_classes: int) -> None:
    for batch in iter_batches(shard, 4096, num_classes):
        _check_representable(cols.rgb.dtype, batch, shard)
        cols.rgb.write(batch.rgb)
        cols.audio.write(batch.audio)
        cols.label_indices.write(batch.label_indices)
        cols.label_counts.append(np.diff(batch.label_indptr))
        cols.ids.extend(video_id.encode("utf-8") for video_id in batch.ids)


def _append_frame_shard(cols: _Columns, shard: Path, num_classes: int) -> None:
    counts = []
    for record in iter_records(shard, num_classes, dequantize_frames=False):
        if record.level != "frame":
            raise SchemaError(shard, f"video {record.id!r}: video-level record in a frame-level store", record.offset)
        cols.rgb.write(record.rgb)
        cols.audio.write(record.audio)
        cols.label_indices.write(record.labels)
        counts.append(record.labels.size)
        cols.frame_offsets.append(cols.frame_offsets[-1] + record.num_frames)
        cols.ids.append(record.id.encode("utf-8"))
    cols.label_counts.append(np.array(counts, np.int64))


def subset(parent: str | Path, store: str | Path, shard_names: Iterable[str], force: bool = False) -> dict:
    """Build a store from the rows a video-level store took from some of its shards; returns its manifest.

    Nested training subsets (a learning curve's 6k/12k/23k) then need only the parent store, not the
    TFRecords again: each source's rows are contiguous and in source order, and the sources keep
    their sha256, so the subset is row for row what converting those shards would give.
    """
    source = FeatureStore(parent)
    if source.level != "video":
        raise InputError(source.path, "subsets are cut from video-level stores only")
    wanted = list(shard_names)
    by_name = {}
    start = 0
    for entry in source.manifest["sources"]:
        by_name[Path(entry["path"]).name] = (start, start + int(entry["records"]), entry)
        start += int(entry["records"])
    if start != len(source):
        raise InputError(source.path / MANIFEST, f"sources hold {start} records but the store has {len(source)}")
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise InputError(source.path, f"holds no rows from {missing[0]} ({len(missing)} of {len(wanted)} shards missing)")
    if not wanted:
        raise InputError(source.path, "no shards asked for")
    store = Path(store)
    is_store = json_file_says(MANIFEST, "format", STORE_FORMAT)
    check_output(store, force=force, directory=True, ours=is_store, inputs=[source.path], what="feature store")
    rows = np.concatenate([np.arange(by_name[n][0], by_name[n][1]) for n in wanted])
    started = time.perf_counter()
    with atomic_directory(store, force, ours=is_store, inputs=[source.path], what="feature store") as tmp:
        dtype = source.rgb.dtype
        for name, column, dim in (("rgb.npy", source.rgb, RGB_DIM), ("audio.npy", source.audio, AUDIO_DIM)):
            writer = _NpyStreamWriter(tmp / name, dtype, (dim,))
            try:
                for first in range(0, len(rows), 8192):
                    writer.write(column[rows[first : first + 8192]])
            finally:
                writer.close()
        counts = np.diff(np.asarray(source.label_indptr, np.int64))[rows]
        indptr = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        spans = [by_name[n][:2] for n in wanted]
        labels = np.concatenate([np.asarray(source.label_indices[source.label_indptr[a] : source.label_indptr[b]])
                                 for a, b in spans]).astype(np.int32)
        np.save(tmp / "label_indices.npy", labels)
        np.save(tmp / "label_indptr.npy", indptr)
        np.save(tmp / "ids.npy", np.asarray(source._arrays["ids"])[rows])
        manifest = _finish(tmp, "video", source.num_classes, str(dtype), [by_name[n][2] for n in wanted], None)
        manifest["vocabulary"] = source.manifest.get("vocabulary")
        manifest["subset_of"] = {"path": str(source.path), "videos": len(source)}
        manifest["conversion_seconds"] = round(time.perf_counter() - started, 3)
        _write_json(tmp / MANIFEST, manifest)
    return manifest


def _finish(tmp, level, num_classes, feature_dtype, sources, vocab) -> dict:
    arrays = {}
    for path in sorted(tmp.glob("*.npy")):
        arr = np.load(path, mmap_mode="r")
        arrays[path.name] = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    indptr = np.load(tmp / "label_indptr.npy")
    videos = len(indptr) - 1
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "created_by": f"avf {__version__}",
        "level": level,
        "videos": videos,
        "num_classes": num_classes,
        "rgb_dim": RGB_DIM,
        "audio_dim": AUDIO_DIM,
        "feature_dtype": "uint8 (dequantize x*4/255 + 4/512 - 2)" if level == "frame" else feature_dtype,
        "label_occurrences": int(indptr[-1]),
        "labels_per_video": round(float(indptr[-1]) / videos, 4),
        "arrays": arrays,
        "vocabulary": {"path": vocab.path, "sha256": vocab.sha256, "classes": vocab.num_classes} if vocab else None,
        "sources": sources,
    }
    if level == "frame":
        offsets = np.load(tmp / "frame_offsets.npy")
        manifest["total_frames"] = int(offsets[-1])
    return manifest


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


class FeatureStore:
    """Read-only, memory-mapped view of a store: random access without parsing anything."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise InputError(self.path, "not a feature store (no manifest.json)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(manifest_path, f"corrupt manifest ({exc})") from None
        if self.manifest.get("format") != STORE_FORMAT:
            raise InputError(manifest_path, f"not an {STORE_FORMAT} manifest")
        if self.manifest.get("version") != STORE_VERSION:
            raise InputError(manifest_path, f"store version {self.manifest.get('version')} is not supported")
        self.level: str = self.manifest["level"]
        self.num_classes: int = self.manifest["num_classes"]
        self._arrays = {}
        for name, meta in self.manifest["arrays"].items():
            try:
                arr = np.load(self.path / name, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise InputError(self.path / name, f"unreadable array ({exc})") from None
            if str(arr.dtype) != meta["dtype"] or list(arr.shape) != meta["shape"]:
                raise InputError(self.path / name, f"is {arr.dtype}{list(arr.shape)}, manifest says "
                                 f"{meta['dtype']}{meta['shape']} (truncated or replaced?)")
            self._arrays[name.removesuffix(".npy")] = arr
        self.rgb = self._arrays["rgb"]
        self.audio = self._arrays["audio"]
        self.label_indptr = self._arrays["label_indptr"]
        self.label_indices = self._arrays["label_indices"]
        self.frame_offsets = self._arrays.get("frame_offsets")

    def __len__(self) -> int:
        return len(self.label_indptr) - 1

    def video_id(self, index: int) -> str:
        return self._arrays["ids"][index].decode("utf-8")

    @property
    def ids(self) -> list[str]:
        return [raw.decode("utf-8") for raw in self._arrays["ids"]]

    def labels(self, index: int) -> np.ndarray:
        return np.asarray(self.label_indices[self.label_indptr[index] : self.label_indptr[index + 1]], np.int64)

    def features(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """float32 (rgb, audio) of one video: (1024,)/(128,) or dequantized (T, 1024)/(T, 128)."""
        if self.frame_offsets is None:
            return self.rgb[index].astype(np.float32), self.audio[index].astype(np.float32)
        start, end = self.frame_offsets[index], self.frame_offsets[index + 1]
        return dequantize(self.rgb[start:end]), dequantize(self.audio[start:end])

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Video level only: float32 rgb (B, 1024), audio (B, 128) and 0/1 labels (B, C)."""
        if self.frame_offsets is not None:
            raise ValueError("batch() reads video-level stores; index frame-level videos one by one")
        indices = np.asarray(indices, np.int64)
        rgb = self.rgb[indices].astype(np.float32)
        audio = self.audio[indices].astype(np.float32)
        return rgb, audio, self.labels_dense(indices)

    def labels_dense(self, indices) -> np.ndarray:
        return csr_labels_dense(self.label_indptr, self.label_indices, indices, self.num_classes)


def csr_labels_dense(indptr: np.ndarray, label_indices: np.ndarray, videos, num_classes: int) -> np.ndarray:
    """0/1 float32 matrix (len(videos), num_classes) gathered from CSR labels, with no Python loop."""
    videos = np.asarray(videos, np.int64)
    starts = indptr[videos]
    counts = indptr[videos + 1] - starts
    rows = np.repeat(np.arange(len(videos)), counts)
    # position of each label in label_indices: its video's start plus its rank within the video
    ranks = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    columns = label_indices[np.repeat(starts, counts) + ranks]
    dense = np.zeros((len(videos), num_classes), np.float32)
    dense[rows, columns] = 1.0
    return dense
