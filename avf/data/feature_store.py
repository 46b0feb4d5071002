"""Memory-mapped feature store: parse TFRecords once, then train from ``np.load(mmap_mode='r')``.

Layout of a store directory (every array a standard ``.npy`` file):

- ``rgb.npy``/``audio.npy``: video level (N, 1024)/(N, 128) float16 (or float32);
  frame level (total_frames, 1024)/(total_frames, 128) uint8 codes, as YouTube-8M ships them,
  with ``frame_offsets.npy`` (N + 1,) so video i owns rows ``offsets[i]:offsets[i+1]``.
- ``label_indptr.npy`` (N + 1,) int64 and ``label_indices.npy`` int32: labels in CSR form.
- ``ids.npy``: video ids as fixed-width bytes.
- ``manifest.json``: counts, dtypes, shapes and sha256 of every array, the vocabulary hash and
  every source's sha256.

The store is built in a temporary directory beside the target and renamed into place only
when complete, so an interrupted conversion never leaves a half store.

Opening a store (:class:`FeatureStore`, the one way every command reads one) validates it
completely before any number is used: the manifest against :class:`StoreManifest` (through
:func:`avf.documents.read_document`), every array file (a regular file, the ``.npy`` magic and
header, dtype, C order, shape, exact size), the arrays against each other and the manifest
(rows, widths, label CSR invariants, label range, UTF-8 ids, frame offsets), the sha256 of every
array file against the one recorded at conversion, and that every feature is finite. Any
failure is one :class:`~avf.errors.InputError` naming the store's file and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from avf import __version__
from avf.atomic import atomic_directory, check_output, json_file_says
from avf.data.sources import expand_sources
from avf.data.vocabulary import file_sha256, find_vocabulary, load_vocabulary
from avf.data.youtube8m import (
    AUDIO_DIM,
    DEFAULT_NUM_CLASSES,
    FRAME_CAP_VARIABLE,
    RGB_DIM,
    dequantize,
    detect_level,
    frame_cap,
    iter_batches,
    iter_records,
)
from avf.documents import open_regular, read_document
from avf.errors import InputError, SchemaError

STORE_FORMAT = "avf-feature-store"
#: 2: every array's sha256 in the manifest (version 1 stores, written before, are refused: reconvert).
STORE_VERSION = 2
MANIFEST = "manifest.json"
#: The most classes a store may have (YouTube-8M has 3,862; 4,716 in 2017): a class count past any real
#: vocabulary in a hand-edited manifest would make every dense label batch too large to allocate.
MAX_CLASSES = 1_000_000
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
    if num_classes > MAX_CLASSES:
        raise InputError(vocab.path if vocab else None, f"{num_classes} classes: a feature store holds at most "
                                                        f"{MAX_CLASSES:,}")

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
    if not sum(by_name[n][1] - by_name[n][0] for n in wanted):
        raise InputError(source.path, f"the {len(wanted)} shards asked for hold no rows")
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
        arrays[path.name] = {"dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": file_sha256(path)}
    indptr = np.load(tmp / "label_indptr.npy")
    videos = len(indptr) - 1
    if videos == 0:
        raise InputError(None, "no videos to write: a feature store holds at least one")
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


Count = Annotated[int, Field(strict=True, ge=0)]
Sha256 = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]


class _Entry(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class ArrayEntry(_Entry):
    """One ``.npy`` file of the store as convert wrote it."""

    model_config = ConfigDict(strict=True, extra="forbid")
    dtype: str
    shape: list[Count]
    sha256: Sha256 | None = None  # absent only in version 1 stores, which are refused


class SourceEntry(_Entry):
    path: str
    sha256: Sha256
    bytes: Count
    records: Count


class VocabularyEntry(_Entry):
    path: str
    sha256: Sha256
    classes: Annotated[int, Field(strict=True, ge=1, le=MAX_CLASSES)]


class StoreManifest(_Entry):
    """``manifest.json`` of a feature store: every field a reader relies on, strictly typed."""

    format: Literal["avf-feature-store"]
    version: Annotated[int, Field(strict=True)]
    level: Literal["video", "frame"]
    videos: Count
    num_classes: Annotated[int, Field(strict=True, ge=1, le=MAX_CLASSES)]
    rgb_dim: Literal[1024]
    audio_dim: Literal[128]
    feature_dtype: str
    label_occurrences: Count
    arrays: dict[str, ArrayEntry]
    vocabulary: VocabularyEntry | None = None
    sources: list[SourceEntry]
    total_frames: Count | None = None


#: The arrays of a store at each level, in the order they are checked.
VIDEO_ARRAYS = ("rgb.npy", "audio.npy", "label_indptr.npy", "label_indices.npy", "ids.npy")
FRAME_ARRAYS = VIDEO_ARRAYS + ("frame_offsets.npy",)
_READ_CHUNK = 1 << 22  # bytes per read while hashing (a multiple of every itemsize)


def is_store(path: str | Path) -> bool:
    """True when ``path`` is a folder with a ``manifest.json`` entry of any kind: it is then read as a store.

    Any kind: a manifest.json that is a FIFO, a folder or a dangling link makes the folder a
    damaged store (refused by :class:`FeatureStore` naming it), not a folder of TFRecords.
    """
    path = Path(str(path))
    return path.is_dir() and os.path.lexists(path / MANIFEST)


def read_manifest(store: str | Path) -> tuple[dict, StoreManifest]:
    """The store's manifest, validated: the raw mapping and the model; one InputError naming the field."""
    store = Path(store)
    if not store.is_dir() or not os.path.lexists(store / MANIFEST):
        raise InputError(store, f"not a feature store (no {MANIFEST})")
    path = store / MANIFEST
    raw, manifest = read_document(path, "a feature store manifest", StoreManifest)
    if manifest.version == 1:
        raise InputError(path, "store version 1, written before avf recorded a sha256 of every array: its contents "
                               "cannot be checked for damage; reconvert it (avf data convert ... --force)")
    if manifest.version != STORE_VERSION:
        raise InputError(path, f"store version {manifest.version} is not supported (this avf reads version "
                               f"{STORE_VERSION})")
    names = FRAME_ARRAYS if manifest.level == "frame" else VIDEO_ARRAYS
    for name in names:
        if name not in manifest.arrays:
            raise InputError(path, f"invalid a feature store manifest: field 'arrays': no entry for {name}")
        if manifest.arrays[name].sha256 is None:
            raise InputError(path, f"invalid a feature store manifest: field 'arrays.{name}.sha256': missing")
    for name in manifest.arrays:
        if name not in names:
            raise InputError(path, f"invalid a feature store manifest: field 'arrays': {name!r} is not an array of a "
                                   f"{manifest.level}-level store")
    if manifest.level == "video" and manifest.feature_dtype not in ("float16", "float32"):
        raise InputError(path, f"invalid a feature store manifest: field 'feature_dtype': {manifest.feature_dtype!r}, "
                               "expected float16 or float32")
    if manifest.level == "frame" and manifest.total_frames is None:
        raise InputError(path, "invalid a feature store manifest: field 'total_frames': missing in a frame-level store")
    records = sum(source.records for source in manifest.sources)
    if records != manifest.videos:
        raise InputError(path, f"invalid a feature store manifest: field 'sources': they hold {records} records but "
                               f"'videos' is {manifest.videos}")
    if manifest.videos == 0:
        raise InputError(store, f"holds no videos ({MANIFEST}: videos 0): nothing to train, score or predict on")
    return raw, manifest


def _expected(manifest: StoreManifest) -> dict[str, tuple[np.dtype | None, tuple[int, ...]]]:
    """Each array's dtype (None: any fixed-width bytes) and shape, as the manifest's counts imply."""
    n = manifest.videos
    if manifest.level == "frame":
        rows, features = manifest.total_frames, np.dtype(np.uint8)
    else:
        rows, features = n, np.dtype(manifest.feature_dtype)
    expected = {
        "rgb.npy": (features, (rows, RGB_DIM)),
        "audio.npy": (features, (rows, AUDIO_DIM)),
        "label_indptr.npy": (np.dtype(np.int64), (n + 1,)),
        "label_indices.npy": (np.dtype(np.int32), (manifest.label_occurrences,)),
        "ids.npy": (None, (n,)),
    }
    if manifest.level == "frame":
        expected["frame_offsets.npy"] = (np.dtype(np.int64), (n + 1,))
    return expected


def _count_name(name: str, manifest: StoreManifest) -> str:
    """What in the manifest sets the rows of ``name``: it names the field a mismatch contradicts."""
    if name in ("rgb.npy", "audio.npy"):
        return f"total_frames {manifest.total_frames}" if manifest.level == "frame" else f"videos {manifest.videos}"
    if name == "label_indices.npy":
        return f"label_occurrences {manifest.label_occurrences}"
    return f"videos {manifest.videos}"


def _all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity; float16 by its exponent bits (20x faster than numpy's float16 isfinite)."""
    if values.dtype == np.float16:
        return bool(np.bitwise_and(values.view(np.uint16), 0x7FFF).max(initial=0) < 0x7C00)
    return bool(np.isfinite(values).all())


class _ArrayFile:
    """One array file, opened (regular files only) and its ``.npy`` header checked; not yet read."""

    def __init__(self, path: Path, entry: ArrayEntry, manifest: StoreManifest, expected):
        self.path = path
        self.fh = open_regular(path, "a .npy array")
        try:
            self._check_header(entry, manifest, expected)
        except BaseException:
            self.fh.close()
            raise

    def _check_header(self, entry: ArrayEntry, manifest: StoreManifest, expected) -> None:
        path = self.path
        size = os.fstat(self.fh.fileno()).st_size
        if size == 0:
            raise InputError(path, "is empty (0 bytes), not a .npy array: the store is damaged; reconvert it")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # e.g. an invalid escape in an edited header: refused, not printed
                version = np.lib.format.read_magic(self.fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(self.fh)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(self.fh)
                else:
                    raise ValueError(f".npy format version {version[0]}.{version[1]} is not one a store uses")
        except Exception as exc:  # numpy's header parser: ValueError, SyntaxError, TypeError, warnings on hostile text
            problem = " ".join(str(exc).split())[:200]
            raise InputError(path, f"not a readable .npy array ({problem})") from None
        self.offset = self.fh.tell()
        if fortran:
            raise InputError(path, "its header says fortran_order: True (column-major); a store's arrays are C "
                                   "order, and reading it so would transpose the values")
        recorded = f"{entry.dtype}{list(entry.shape)}"
        if str(dtype) != entry.dtype or list(shape) != entry.shape:
            raise InputError(path, f"is {dtype}{list(shape)}, {MANIFEST} says {recorded} (replaced or edited?)")
        want_dtype, want_shape = expected
        if want_dtype is None:
            if dtype.kind != "S" or dtype.itemsize < 1:
                raise InputError(path, f"is {dtype}, expected fixed-width bytes (video ids)")
        elif dtype != want_dtype:
            raise InputError(path, f"is {dtype}, expected {want_dtype} in a {manifest.level}-level store")
        if len(shape) != len(want_shape) or shape[1:] != want_shape[1:]:
            raise InputError(path, f"has shape {list(shape)}, expected rows of shape {list(want_shape[1:])}")
        if shape[0] != want_shape[0]:
            raise InputError(path, f"holds {shape[0]} rows, expected {want_shape[0]} ({MANIFEST}: "
                                   f"{_count_name(path.name, manifest)})")
        self.dtype, self.shape = dtype, tuple(shape)
        data_bytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if size < self.offset + data_bytes:
            raise InputError(path, f"truncated: {size} bytes, its header says {self.offset + data_bytes}")
        if size > self.offset + data_bytes:
            raise InputError(path, f"{size - self.offset - data_bytes} bytes after the end of its data "
                                   "(appended to or damaged)")
        self.size = size

    def read_through(self, sha256: str, buffer: memoryview) -> int | None:
        """Read every byte once: the sha256 must be the recorded one; returns the first non-finite value's index.

        ``buffer`` (reused across files: no fresh pages per read) bounds the memory to one chunk.
        """
        digest = hashlib.sha256()
        self.fh.seek(0)
        digest.update(self.fh.read(self.offset))
        floats = self.dtype.kind == "f"
        itemsize = self.dtype.itemsize
        done, first_bad = 0, None
        while n := self.fh.readinto(buffer):
            digest.update(buffer[:n])
            if n % itemsize:
                break  # shrank while read: the size below says so
            if floats and first_bad is None:
                values = np.frombuffer(buffer[:n], self.dtype)
                if not _all_finite(values):
                    first_bad = done + int(np.argmin(np.isfinite(values)))
            done += n // itemsize
        if self.offset + done * itemsize != self.size:
            raise InputError(self.path, "changed while it was read")
        if digest.hexdigest() != sha256:
            raise InputError(self.path, f"its contents changed since conversion (sha256 {digest.hexdigest()[:16]}..., "
                                        f"{MANIFEST} records {sha256[:16]}...): damaged, or replaced by another "
                                        "store's file; reconvert it")
        return first_bad

    def mapped(self) -> np.ndarray:
        """The array, memory-mapped read-only from the file this object checked."""
        if int(np.prod(self.shape)) == 0:
            empty = np.zeros(self.shape, self.dtype)
            empty.flags.writeable = False
            return empty
        return np.memmap(self.fh, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape, order="C")


class FeatureStore:
    """Read-only, memory-mapped view of a store: random access without parsing anything.

    Opening it validates the whole store (see the module docstring): cheap checks of the manifest,
    headers and sizes first, then one read of every array file for its sha256 and the finiteness
    of the features, then the label and frame-offset invariants. ``verify_seconds`` says what it took.
    """

    def __init__(self, path: str | Path):
        started = time.perf_counter()
        self.path = Path(path)
        self.manifest, self.info = read_manifest(self.path)
        self.level: str = self.info.level
        self.num_classes: int = self.info.num_classes
        expected = _expected(self.info)
        files: dict[str, _ArrayFile] = {}
        try:
            for name in expected:
                files[name] = _ArrayFile(self.path / name, self.info.arrays[name], self.info, expected[name])
            buffer = memoryview(bytearray(_READ_CHUNK))
            non_finite = {name: f.read_through(self.info.arrays[name].sha256, buffer) for name, f in files.items()}
            self._arrays = {name.removesuffix(".npy"): f.mapped() for name, f in files.items()}
            self.array_bytes = sum(f.size for f in files.values())
        finally:
            for f in files.values():
                f.fh.close()
        self.rgb = self._arrays["rgb"]
        self.audio = self._arrays["audio"]
        self.label_indptr = self._arrays["label_indptr"]
        self.label_indices = self._arrays["label_indices"]
        self.frame_offsets = self._arrays.get("frame_offsets")
        self._check_ids()
        self._check_labels()
        if self.frame_offsets is not None:
            self._check_frame_offsets()
        for name in ("rgb.npy", "audio.npy"):
            if non_finite[name] is not None:
                row = non_finite[name] // self._arrays[name.removesuffix(".npy")].shape[1]
                raise InputError(self.path / name, f"NaN or infinite feature in row {row} ({self._row_video(row)}): "
                                                   "features must be finite")
        self.verify_seconds = time.perf_counter() - started

    def _row_video(self, row: int) -> str:
        """Which video a feature row belongs to, for messages."""
        if self.frame_offsets is not None:
            video = int(np.searchsorted(self.frame_offsets, row, side="right")) - 1
            return f"frame {row - int(self.frame_offsets[video])} of video {self.video_id(video)!r}"
        return f"video {self.video_id(row)!r}"

    def _check_ids(self) -> None:
        ids = self._arrays["ids"]
        if np.frombuffer(np.ascontiguousarray(ids).tobytes(), np.uint8).max(initial=0) < 0x80:
            return  # ASCII throughout
        for row, raw in enumerate(ids):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(self.path / "ids.npy", f"the id in row {row} ({raw[:40]!r}) is not UTF-8 text") from None

    def _check_labels(self) -> None:
        indptr = np.asarray(self.label_indptr)
        where = self.path / "label_indptr.npy"
        if indptr[0] != 0:
            raise InputError(where, f"starts at {int(indptr[0])}, not 0: not a CSR index of the labels")
        steps = np.diff(indptr)
        if (steps < 0).any():
            row = int(np.argmax(steps < 0))
            raise InputError(where, f"decreases at video {self.video_id(row)!r} (row {row}, {int(indptr[row])} then "
                                    f"{int(indptr[row + 1])}): not a CSR index of the labels")
        if indptr[-1] != len(self.label_indices):
            raise InputError(where, f"ends at {int(indptr[-1])}, but label_indices.npy holds {len(self.label_indices)} "
                                    "labels")
        labels = np.asarray(self.label_indices)
        bad = (labels < 0) | (labels >= self.num_classes)
        if bad.any():
            at = int(np.argmax(bad))
            row = int(np.searchsorted(indptr, at, side="right")) - 1
            raise InputError(self.path / "label_indices.npy",
                             f"label {int(labels[at])} of video {self.video_id(row)!r} is outside the "
                             f"{self.num_classes} classes ({MANIFEST}: num_classes {self.num_classes})")

    def _check_frame_offsets(self) -> None:
        offsets = np.asarray(self.frame_offsets)
        where = self.path / "frame_offsets.npy"
        if offsets[0] != 0:
            raise InputError(where, f"starts at {int(offsets[0])}, not 0")
        frames = np.diff(offsets)
        if (frames < 1).any():
            row = int(np.argmax(frames < 1))
            raise InputError(where, f"gives video {self.video_id(row)!r} (row {row}) {int(frames[row])} frames: "
                                    "offsets must increase (every video has at least one frame)")
        if offsets[-1] != len(self.rgb):
            raise InputError(where, f"ends at {int(offsets[-1])}, but rgb.npy holds {len(self.rgb)} frames")
        cap = frame_cap()
        if frames.max() > cap:
            row = int(np.argmax(frames))
            raise InputError(where, f"gives video {self.video_id(row)!r} {int(frames[row])} frames, more than the "
                                    f"{cap} a video may have (set {FRAME_CAP_VARIABLE} to read longer videos)")

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
