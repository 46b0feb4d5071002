"""What is in a dataset: counts, label statistics and feature statistics, for ``avf data inspect``.

Reading the whole input is the point: every record's CRCs and schema are checked on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from avf.data.feature_store import FeatureStore, is_store
from avf.data.sources import expand_sources
from avf.data.vocabulary import Vocabulary, find_vocabulary, load_vocabulary
from avf.data.youtube8m import DEFAULT_NUM_CLASSES, VideoBatch, dequantize, detect_level, iter_batches, iter_records
from avf.errors import InputError


class _FeatureStats:
    """Running mean/std/min/max over every value, plus the mean per-vector L2 norm."""

    def __init__(self):
        self.count = self.vectors = 0
        self.total = self.total_sq = self.norm_sum = 0.0
        self.low, self.high = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        if values.size == 0:
            return
        self.count += values.size
        self.vectors += values.shape[0]
        self.total += values.sum()
        self.total_sq += np.square(values).sum()
        self.norm_sum += np.linalg.norm(values, axis=1).sum()
        self.low, self.high = min(self.low, values.min()), max(self.high, values.max())

    def result(self) -> dict:
        if not self.count:
            return {}
        mean = self.total / self.count
        return {
            "mean": round(float(mean), 5),
            "std": round(float(np.sqrt(max(self.total_sq / self.count - mean * mean, 0.0))), 5),
            "min": round(float(self.low), 5),
            "max": round(float(self.high), 5),
            "mean_l2_norm": round(float(self.norm_sum) / self.vectors, 4),
        }


class _Summary:
    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.class_counts = np.zeros(num_classes, np.int64)
        self.labels_per_video: list[np.ndarray] = []
        self.frames: list[int] = []
        self.rgb, self.audio = _FeatureStats(), _FeatureStats()
        self.videos = 0

    def add_labels(self, indptr: np.ndarray, indices: np.ndarray) -> None:
        self.labels_per_video.append(np.diff(indptr))
        self.class_counts += np.bincount(np.asarray(indices, np.int64), minlength=self.num_classes)[: self.num_classes]
        self.videos += len(indptr) - 1

    def result(self, vocab: Vocabulary | None, top: int) -> dict:
        per_video = np.concatenate(self.labels_per_video) if self.labels_per_video else np.zeros(0, np.int64)
        occurrences = int(self.class_counts.sum())
        order = np.argsort(-self.class_counts, kind="stable")
        present = int((self.class_counts > 0).sum())
        head = max(1, self.num_classes // 10)
        labels = {
            "occurrences": occurrences,
            "per_video_mean": round(float(per_video.mean()), 4) if per_video.size else 0.0,
            "per_video_min": int(per_video.min()) if per_video.size else 0,
            "per_video_max": int(per_video.max()) if per_video.size else 0,
            "videos_without_labels": int((per_video == 0).sum()),
            "classes_present": present,
            "top10pct_classes_share": round(float(self.class_counts[order[:head]].sum()) / max(occurrences, 1), 4),
            "top_classes": [
                {"index": int(c), "name": vocab.name(int(c)) if vocab else f"class {int(c)}", "videos": int(self.class_counts[c])}
                for c in order[:top]
                if self.class_counts[c] > 0
            ],
        }
        out = {"videos": self.videos, "num_classes": self.num_classes, "labels": labels,
               "rgb": self.rgb.result(), "audio": self.audio.result()}
        if self.frames:
            frames = np.array(self.frames)
            out["frames"] = {"total": int(frames.sum()), "min": int(frames.min()),
                             "mean": round(float(frames.mean()), 2), "max": int(frames.max())}
        return out


def summarize(
    source: str | Path | Iterable[str | Path],
    num_classes: int | None = None,
    vocabulary: str | Path | None = None,
    top: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Summarize TFRecords (file, directory, glob) or a feature store directory."""
    if isinstance(source, (str, Path)) and is_store(source):
        return _summarize_store(FeatureStore(source), vocabulary, top)
    shards = expand_sources(source)
    vocab = load_vocabulary(vocabulary) if vocabulary else find_vocabulary(shards)
    classes = num_classes or (vocab.num_classes if vocab else DEFAULT_NUM_CLASSES)
    summary = _Summary(classes)
    level = None
    for shard in shards:
        before = summary.videos
        level = _summarize_shard(summary, shard, classes, level)
        if progress:
            progress(shard.stat().st_size, summary.videos - before)
    if summary.videos == 0:
        raise InputError(shards[0], "no records found")
    result = {"source": str(source), "kind": "tfrecord", "shards": len(shards), "level": level,
              "bytes": sum(s.stat().st_size for s in shards)}
    result.update(summary.result(vocab, top))
    result["vocabulary"] = vocab.path if vocab else None
    return result


def _summarize_shard(summary: _Summary, shard: Path, classes: int, level: str | None) -> str:
    shard_level = detect_level(shard)
    if level is not None and shard_level != level:
        raise InputError(shard, f"is {shard_level}-level but earlier shards are {level}-level")
    if shard_level == "video":
        for batch in iter_batches(shard, 4096, classes):
            _add_video_batch(summary, batch)
        return shard_level
    for record in iter_records(shard, classes):
        if record.level != "frame":
            raise InputError(shard, f"video {record.id!r}: video-level record in a frame-level shard", record.offset)
        summary.add_labels(np.array([0, record.labels.size]), record.labels)
        summary.rgb.add(record.rgb)
        summary.audio.add(record.audio)
        summary.frames.append(record.num_frames)
    return shard_level


def _add_video_batch(summary: _Summary, batch: VideoBatch) -> None:
    summary.add_labels(batch.label_indptr, batch.label_indices)
    summary.rgb.add(batch.rgb)
    summary.audio.add(batch.audio)


def _recorded_vocabulary(store: FeatureStore) -> Vocabulary | None:
    """The vocabulary the store was converted against, if it is still there unchanged."""
    recorded = store.manifest.get("vocabulary") or {}
    path = recorded.get("path")
    if not path or not Path(path).is_file():
        return None
    vocab = load_vocabulary(path)
    return vocab if vocab.sha256 == recorded.get("sha256") else None


def _summarize_store(store: FeatureStore, vocabulary, top: int) -> dict:
    vocab = load_vocabulary(vocabulary) if vocabulary else _recorded_vocabulary(store)
    summary = _Summary(store.num_classes)
    summary.add_labels(np.asarray(store.label_indptr), np.asarray(store.label_indices))
    chunk = 65536
    for start in range(0, store.rgb.shape[0], chunk):
        rgb = store.rgb[start : start + chunk]
        audio = store.audio[start : start + chunk]
        if store.level == "frame":
            rgb, audio = dequantize(rgb), dequantize(audio)
        summary.rgb.add(rgb)
        summary.audio.add(audio)
    if store.frame_offsets is not None:
        summary.frames = np.diff(store.frame_offsets).tolist()
    result = {"source": str(store.path), "kind": "feature-store", "level": store.level,
              "sources": len(store.manifest["sources"]), "feature_dtype": store.manifest["feature_dtype"]}
    result.update(summary.result(vocab, top))
    result["vocabulary"] = (store.manifest.get("vocabulary") or {}).get("path")
    return result
