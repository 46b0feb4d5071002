"""Training data from a feature store or TFRecords, served as vectorised batches.

Training never parses in the loop: a feature store is memory-mapped, and TFRecord inputs are
decoded once into memory (fine up to a few hundred thousand videos; convert larger sets with
``avf data convert`` first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avf.data.feature_store import FeatureStore, csr_labels_dense, is_store
from avf.data.sources import expand_sources
from avf.data.vocabulary import file_sha256, find_vocabulary
from avf.data.youtube8m import iter_batches
from avf.errors import InputError


@dataclass
class TrainingData:
    """Video-level features and CSR labels, gathered a batch at a time."""

    rgb: np.ndarray  # (N, 1024) float16/float32, possibly memory-mapped
    audio: np.ndarray  # (N, 128)
    label_indptr: np.ndarray
    label_indices: np.ndarray
    num_classes: int
    sources: list[dict]  # each {"path", "sha256", ...}
    vocabulary_sha256: str | None
    description: str

    def __len__(self) -> int:
        return len(self.label_indptr) - 1

    def subset(self, indices: np.ndarray) -> "TrainingData":
        """The given videos only (e.g. the first N for a quick evaluation), same sources recorded."""
        indices = np.asarray(indices, np.int64)
        starts, ends = self.label_indptr[indices], self.label_indptr[indices + 1]
        indptr = np.concatenate([[0], np.cumsum(ends - starts)]).astype(np.int64)
        labels = np.concatenate([self.label_indices[s:e] for s, e in zip(starts, ends)]) if len(indices) else \
            np.zeros(0, np.int64)
        return TrainingData(self.rgb[indices], self.audio[indices], indptr, labels.astype(np.int64), self.num_classes,
                            self.sources, self.vocabulary_sha256, f"{self.description}, first {len(indices)} videos")

    def sources_summary(self) -> dict:
        """What a report needs to name the data: description, video count, files and their sha256."""
        return {"description": self.description, "videos": len(self), "files": len(self.sources),
                "sha256": {Path(s["path"]).name: s.get("sha256") for s in self.sources}}

    def content_sha256(self, rows: int = 65536) -> str:
        """sha256 of exactly what scoring sees: each array's dtype, shape and bytes (rgb, audio, CSR labels) and the
        class count. Two loads with the same hash give the same metrics; a subset, a float16 store of the same
        shards or a re-ordered set hash differently. Read in chunks of ``rows`` videos (memory-mapped stores)."""
        import hashlib

        digest = hashlib.sha256(f"avf-labelled-data-v1 classes={self.num_classes}".encode())
        for name, array in (("rgb", self.rgb), ("audio", self.audio), ("label_indptr", self.label_indptr),
                            ("label_indices", self.label_indices)):
            digest.update(f";{name} {np.dtype(array.dtype).str} {tuple(array.shape)};".encode())
            for start in range(0, len(array), rows):
                digest.update(np.ascontiguousarray(array[start:start + rows]).tobytes())
        return digest.hexdigest()

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 rgb, audio and 0/1 labels (B, classes) for the given video indices."""
        indices = np.asarray(indices, np.int64)
        labels = csr_labels_dense(self.label_indptr, self.label_indices, indices, self.num_classes)
        return self.rgb[indices].astype(np.float32), self.audio[indices].astype(np.float32), labels


def load_training_data(spec: str | Path, num_classes: int | None = None) -> TrainingData:
    """A feature store directory, or TFRecord file(s)/directory/glob of video-level records."""
    path = Path(str(spec))
    if is_store(path):
        store = FeatureStore(path)
        if store.level != "video":
            raise InputError(path, "frame-level stores are not supported for training yet; convert video-level data")
        if num_classes is not None and num_classes != store.num_classes:
            raise InputError(path, f"store has {store.num_classes} classes, expected {num_classes}")
        vocab = store.manifest.get("vocabulary") or {}
        return TrainingData(store.rgb, store.audio, np.asarray(store.label_indptr), np.asarray(store.label_indices),
                            store.num_classes, store.manifest["sources"], vocab.get("sha256"),
                            f"feature store {path} ({len(store)} videos)")
    shards = expand_sources(spec)
    vocab = find_vocabulary(shards)
    if vocab and num_classes is not None and vocab.num_classes != num_classes:
        raise InputError(spec, f"data has {vocab.num_classes} classes (its vocabulary.csv), expected {num_classes}")
    classes = num_classes or (vocab.num_classes if vocab else None)
    if classes is None:
        raise InputError(spec, "class count unknown: put vocabulary.csv beside the shards (avf train also takes --classes)")
    rgb, audio, indptr, indices = [], [], [0], []
    for batch in iter_batches(shards, 8192, classes):
        rgb.append(batch.rgb)
        audio.append(batch.audio)
        indices.append(batch.label_indices)
        indptr.extend((batch.label_indptr[1:] + indptr[-1]).tolist())
    if not rgb:
        raise InputError(spec, "no records found")
    sources = [{"path": str(s), "sha256": file_sha256(s), "bytes": s.stat().st_size} for s in shards]
    return TrainingData(np.concatenate(rgb), np.concatenate(audio), np.array(indptr, np.int64),
                        np.concatenate(indices).astype(np.int64), classes, sources,
                        vocab.sha256 if vocab else None, f"{len(shards)} TFRecord shards ({len(indptr) - 1} videos)")
