"""YouTube-8M evaluation metrics, as the official starter code defines them, vectorised.

- ``gap``: Global Average Precision. Each video keeps its top-k predictions; all of them are
  pooled, sorted by confidence, and average precision is taken over that pooled list and
  divided by *all* positive labels, including those no top-k ever ranked, so a model cannot
  score well by ranking only the easy labels.
- ``mean_ap``: the official "MAP": per-class AP over the top-k-filtered predictions, each
  divided by that class's positives, summed over all classes and divided by the class count
  (classes with no positives count as 0, as in the official ``EvaluationMetrics``).
- ``hit_at_one``: fraction of videos whose top prediction is a true label.
- ``perr``: precision at equal recall rate: for a video with n labels, the precision of its n
  highest-scoring classes (counting only scores > 0, as the official code does).
- ``f1``: micro F1 over every (video, class) pair, a class predicted when score >= threshold.

Ties: the official code shuffles with a fixed seed before sorting, so tied scores fall in
arbitrary order. Here ties keep a documented order instead: videos in the order they were
added, and within a video, classes by index. On tie-free scores both agree exactly.

Everything runs through ``EvaluationAccumulator``, which keeps only each video's top-k
triples and running counts, so 1M videos x 3,862 classes can be evaluated batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 16384  # rows per internal step: bounds temporary memory at ~chunk x classes


@dataclass(frozen=True)
class F1Result:
    f1: float
    precision: float
    recall: float
    threshold: float
    tp: int
    fp: int
    fn: int


def _as_pair(predictions, labels) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if not np.issubdtype(predictions.dtype, np.number) or not np.issubdtype(labels.dtype, np.number):
        raise ValueError("predictions and labels must be numeric arrays")
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be 2-D (videos, classes), got shape {predictions.shape}")
    if labels.shape != predictions.shape:
        raise ValueError(f"labels shape {labels.shape} does not match predictions shape {predictions.shape}")
    return predictions, labels


def _safe_ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


class EvaluationAccumulator:
    """Streaming GAP, mAP, Hit@1, PERR and micro F1 over batches of (predictions, labels)."""

    def __init__(self, num_classes: int, top_k: int = 20, f1_threshold: float = 0.5):
        if not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, not {top_k!r}")
        if num_classes < 1:
            raise ValueError("num_classes must be a positive integer")
        self.num_classes = num_classes
        self.top_k = min(top_k, num_classes)
        self.f1_threshold = f1_threshold
        self._scores: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []
        self.positives_per_class = np.zeros(num_classes, np.int64)
        self.num_videos = 0
        self._hit_at_one = 0.0
        self._perr = 0.0
        self._tp = self._fp = 0

    def add(self, predictions, labels) -> None:
        predictions, labels = _as_pair(predictions, labels)
        if predictions.shape[1] != self.num_classes:
            raise ValueError(f"predictions have {predictions.shape[1]} classes, expected {self.num_classes}")
        for start in range(0, predictions.shape[0], _CHUNK):
            chunk = predictions[start : start + _CHUNK]
            # A NaN would sort arbitrarily and silently corrupt every ranking metric.
            if not np.isfinite(chunk).all():
                raise ValueError(f"predictions contain NaN or inf (videos {start}..{start + len(chunk) - 1})")
            self._add_chunk(chunk, labels[start : start + _CHUNK] > 0)

    def _add_chunk(self, scores: np.ndarray, positive: np.ndarray) -> None:
        videos = scores.shape[0]
        if videos == 0:
            return
        rows = np.arange(videos)[:, None]
        k = self.top_k
        if k < self.num_classes:
            top = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
        else:
            top = np.broadcast_to(np.arange(self.num_classes), (videos, k))
        self._scores.append(scores[rows, top].ravel())
        self._classes.append(top.astype(np.int32).ravel())
        self._hits.append(positive[rows, top].ravel())

        per_video = positive.sum(axis=1)
        self.positives_per_class += positive.sum(axis=0)
        self._hit_at_one += positive[np.arange(videos), scores.argmax(axis=1)].sum()
        self._perr += self._perr_sum(scores, positive, per_video)
        predicted = scores >= self.f1_threshold
        tp = int(np.count_nonzero(predicted & positive))
        self._tp += tp
        self._fp += int(np.count_nonzero(predicted)) - tp
        self.num_videos += videos

    @staticmethod
    def _perr_sum(scores: np.ndarray, positive: np.ndarray, per_video: np.ndarray) -> float:
        """Sum over videos of precision among each video's n top classes (n = its label count)."""
        widest = int(per_video.max())
        if widest == 0:
            return 0.0  # label-less videos contribute 0, as in the official code
        rows = np.arange(scores.shape[0])[:, None]
        candidates = np.argpartition(-scores, widest - 1, axis=1)[:, :widest]
        order = np.argsort(-scores[rows, candidates], axis=1, kind="stable")
        ranked = candidates[rows, order]
        within = np.arange(widest)[None, :] < per_video[:, None]
        counted = within & positive[rows, ranked] & (scores[rows, ranked] > 0)
        has_labels = per_video > 0
        return float((counted.sum(axis=1)[has_labels] / per_video[has_labels]).sum())

    # ------------------------------------------------------------------ results

    def _pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._scores:
            return np.empty(0), np.empty(0, np.int32), np.empty(0, bool)
        return np.concatenate(self._scores), np.concatenate(self._classes), np.concatenate(self._hits)

    def gap(self) -> float:
        scores, _, hits = self._pooled()
        total_positives = int(self.positives_per_class.sum())
        if total_positives == 0:
            return 0.0
        ranked_hits = hits[np.argsort(-scores, kind="stable")]
        ranks = np.flatnonzero(ranked_hits) + 1
        precision_at_hits = np.arange(1, len(ranks) + 1) / ranks
        return float(precision_at_hits.sum() / total_positives)

    def per_class_ap(self) -> np.ndarray:
        scores, classes, hits = self._pooled()
        ap = np.zeros(self.num_classes)
        if scores.size == 0:
            return ap
        order = np.lexsort((-scores, classes))  # by class, then descending score (stable)
        classes, hits = classes[order], hits[order]
        starts = np.searchsorted(classes, np.arange(self.num_classes), side="left")
        position = np.arange(len(classes))
        rank = position - starts[classes] + 1
        cumulative = np.cumsum(hits)
        before = np.concatenate([[0], cumulative])[starts[classes]]
        hits_so_far = cumulative - before
        contribution = np.where(hits, hits_so_far / rank, 0.0)
        sums = np.bincount(classes, weights=contribution, minlength=self.num_classes)
        has_positives = self.positives_per_class > 0
        ap[has_positives] = sums[has_positives] / self.positives_per_class[has_positives]
        return ap

    def mean_ap(self) -> float:
        return float(self.per_class_ap().sum() / self.num_classes)

    def f1(self) -> F1Result:
        positives = int(self.positives_per_class.sum())
        fn = positives - self._tp
        precision = _safe_ratio(self._tp, self._tp + self._fp)
        recall = _safe_ratio(self._tp, positives)
        f1 = _safe_ratio(2 * precision * recall, precision + recall)
        return F1Result(f1, precision, recall, self.f1_threshold, self._tp, self._fp, fn)

    def result(self) -> dict:
        if self.num_videos == 0:
            raise ValueError("no videos were added")
        f1 = self.f1()
        return {
            "gap": self.gap(),
            "map": self.mean_ap(),
            "hit_at_one": float(self._hit_at_one) / self.num_videos,
            "perr": self._perr / self.num_videos,
            "f1": f1.f1,
            "precision": f1.precision,
            "recall": f1.recall,
            "num_videos": self.num_videos,
        }


def _accumulate(predictions, labels, top_k: int = 20, threshold: float = 0.5) -> EvaluationAccumulator:
    predictions, labels = _as_pair(predictions, labels)
    accumulator = EvaluationAccumulator(predictions.shape[1], top_k, threshold)
    accumulator.add(predictions, labels)
    return accumulator


def evaluate(predictions, labels, top_k: int = 20, threshold: float = 0.5) -> dict:
    """All metrics at once: gap, map, hit_at_one, perr, f1, precision, recall, num_videos."""
    return _accumulate(predictions, labels, top_k, threshold).result()


def gap(predictions, labels, top_k: int = 20) -> float:
    return _accumulate(predictions, labels, top_k).gap()


def mean_ap(predictions, labels, top_k: int = 20) -> float:
    return _accumulate(predictions, labels, top_k).mean_ap()


def per_class_ap(predictions, labels, top_k: int = 20) -> np.ndarray:
    return _accumulate(predictions, labels, top_k).per_class_ap()


def hit_at_one(predictions, labels) -> float:
    return evaluate(predictions, labels, top_k=1)["hit_at_one"]


def perr(predictions, labels) -> float:
    return evaluate(predictions, labels, top_k=1)["perr"]


def f1(predictions, labels, threshold: float = 0.5) -> F1Result:
    return _accumulate(predictions, labels, 1, threshold).f1()
