"""YouTube-8M evaluation metrics, as the official starter code defines them, vectorised.

The definitions follow google/youtube-8m (``eval_util.py``, ``average_precision_calculator.py``,
``mean_average_precision_calculator.py``):

- ``gap``: Global Average Precision. Each video keeps its top-k predictions; all of them are
  pooled, sorted by score, and non-interpolated AP is taken over that pooled list, divided
  by *all* positive labels, including those no top-k ever ranked, so a model cannot score
  well by ranking only its easy labels.
- ``mean_ap``: the official eval's "MAP": per-class AP over the same top-k-filtered pairs,
  each divided by that class's positives, summed and divided by the number of classes
  (classes with no positives count as 0, as in the official ``EvaluationMetrics``).
- ``hit_at_one``: fraction of videos whose highest-scoring class is a true label.
- ``perr``: precision at equal recall rate: for a video with n labels, the fraction of its n
  highest-scoring classes that are labels *and* have score > 0 (the official code skips
  scores <= 0). Videos without labels contribute 0 but still count, as in the official code.
- ``f1``: micro F1 over every (video, class) pair, a class predicted iff score >= threshold.

Labels may have any numeric (or bool) dtype; a label is positive iff it is > 0. Predictions
must be finite: NaN or inf raises ``ValueError`` rather than silently corrupting a ranking.

Ties. The official code picks each video's top-k with ``argpartition`` (arbitrary among
tied scores) and shuffles the pooled list with a fixed seed before sorting, so tied scores
land in arbitrary order. Here ties follow fixed rules, so results are reproducible and do
not depend on batch sizes or on the order in which videos are added:

1. Within a video (top-k, PERR's top-n, Hit@1), equal scores rank by class index, lowest
   first -- the same choice as ``numpy.argmax`` in the official Hit@1.
2. In a pooled AP ranking (GAP, and each class of mAP), equal scores put negatives before
   positives. Ties therefore never help: a tie-heavy (e.g. saturated or constant) predictor
   cannot gain AP from the layout of the labels, which is what the official shuffle guards
   against. With tie-free scores both rules are moot and results equal the official ones.

Memory. Everything runs through ``EvaluationAccumulator``: per video it keeps only the top-k
(score, class, is-positive) triples, plus per-class positive counts and running sums for
Hit@1, PERR and F1, so 1M videos x 3,862 classes can be evaluated batch by batch. The plain
functions feed their input to the same accumulator in chunks of ``_CHUNK_ROWS`` videos, so
their extra memory is O(chunk x classes + videos x top_k), never a copy of the whole matrix.
"""

from __future__ import annotations

import operator
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# Rows per internal step. Small enough that the per-chunk temporaries (a float copy for the
# partition, a few boolean masks) stay cache-friendly and bounded (~16 MB at 3,862 classes).
_CHUNK_ROWS = 1024

_RANKING, _HIT, _PERR, _F1 = "ranking", "hit_at_one", "perr", "f1"
_ALL_PARTS = frozenset({_RANKING, _HIT, _PERR, _F1})


@dataclass(frozen=True)
class F1Result:
    """Micro-averaged F1 over all (video, class) pairs; ratios are 0.0 where undefined."""

    f1: float
    precision: float
    recall: float
    threshold: float
    tp: int
    fp: int
    fn: int


# --------------------------------------------------------------------------- validation


def _positive_int(value: int, name: str) -> int:
    """``value`` as an int >= 1 (Python or numpy integer; not bool, not 2.0)."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _check_pair(
    predictions: ArrayLike, labels: ArrayLike, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 2:
        raise ValueError(f"predictions must be 2-D (videos, classes), got shape {predictions.shape}")
    if labels.shape != predictions.shape:
        raise ValueError(f"labels shape {labels.shape} does not match predictions shape {predictions.shape}")
    for name, array in (("predictions", predictions), ("labels", labels)):
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or np.iscomplexobj(array):
            raise ValueError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    if num_classes is not None and predictions.shape[1] != num_classes:
        raise ValueError(f"predictions have {predictions.shape[1]} classes, expected {num_classes}")
    if predictions.shape[1] == 0:
        raise ValueError("predictions must have at least one class")
    return predictions, labels


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


# --------------------------------------------------------------------------- per-video top-m


def _top_flat(scores: np.ndarray, m: int) -> np.ndarray:
    """Flat (row-major) indices of each row's m highest scores: m per row, classes ascending.

    ``np.partition`` finds each row's m-th largest score (the cut); ``scores >= cut`` then
    marks exactly the top m in every row without ties at the cut, and ``flatnonzero`` lists
    them. This is cheaper than ``argpartition`` (no full-size index array), and the count
    doubles as the tie check: a row where more than m scores reach the cut keeps all scores
    above it plus the lowest-indexed classes at it.
    """
    rows, num_classes = scores.shape
    cut = np.partition(scores, num_classes - m, axis=1)[:, num_classes - m, None]
    reach = scores >= cut
    flat = np.flatnonzero(reach)
    if flat.size != rows * m:  # some rows have more than m scores >= their cut: ties at it
        crowded = np.flatnonzero(np.count_nonzero(reach, axis=1) > m)
        above = scores[crowded] > cut[crowded]
        at_cut = reach[crowded] & ~above
        room = m - np.count_nonzero(above, axis=1)
        counter = np.int16 if num_classes < 1 << 15 else np.int32
        reach[crowded] = above | (at_cut & (np.cumsum(at_cut, axis=1, dtype=counter) <= room[:, None]))
        flat = np.flatnonzero(reach)
    return flat


def _top_block(scores: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's m highest scores as (classes, scores), ordered by score desc, class asc."""
    classes = (_top_flat(scores, m) % scores.shape[1]).reshape(-1, m)
    values = np.take_along_axis(scores, classes, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")  # classes ascend already: stable keeps it
    return np.take_along_axis(classes, order, axis=1), np.take_along_axis(values, order, axis=1)


# --------------------------------------------------------------------------- pooled ranking


def _ties_against(hits: np.ndarray, new_run: np.ndarray) -> np.ndarray:
    """Within each run of tied items (``new_run`` marks each run's first item), move positives last.

    The AP of a ranking depends only on the label sequence, so instead of permuting items we
    rewrite the sequence: a run of length L with p positives becomes L - p negatives, then p
    positives.
    """
    if new_run.all():
        return hits
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], hits.size)
    cumulative = np.concatenate(([0], np.cumsum(hits, dtype=np.int64)))
    first_positive = ends - (cumulative[ends] - cumulative[starts])
    run = np.cumsum(new_run) - 1
    return np.arange(hits.size) >= first_positive[run]


def _pooled_ap(
    scores: np.ndarray, classes: np.ndarray, hits: np.ndarray, positives_per_class: np.ndarray
) -> tuple[float, np.ndarray]:
    """(GAP, per-class AP) of pooled top-k triples; denominators are all positives in the labels.

    AP = sum over ranks i holding a positive of (positives within ranks 1..i) / i, divided by
    the number of positives, as ``ap_at_n`` with n=None computes it.
    """
    num_classes = positives_per_class.size
    per_class = np.zeros(num_classes)
    total_positives = int(positives_per_class.sum())
    if total_positives == 0 or scores.size == 0:
        return 0.0, per_class

    order = np.argsort(scores)[::-1]  # descending; tie order is fixed below, not by the sort
    ranked_scores = scores[order]
    score_changes = ranked_scores[1:] != ranked_scores[:-1]

    ranked_hits = _ties_against(hits[order], np.concatenate(([True], score_changes)))
    ranks = np.flatnonzero(ranked_hits) + 1
    gap = float((np.arange(1, ranks.size + 1) / ranks).sum() / total_positives)

    # Per class: regroup the score-sorted list by class (stable keeps scores descending).
    ranked_classes = classes[order]
    by_class = np.argsort(ranked_classes, kind="stable")  # radix sort for uint16 class ids
    grouped_classes = ranked_classes[by_class]
    grouped_scores = ranked_scores[by_class]
    new_run = np.ones(grouped_scores.size, bool)
    new_run[1:] = (grouped_scores[1:] != grouped_scores[:-1]) | (grouped_classes[1:] != grouped_classes[:-1])
    grouped_hits = _ties_against(hits[order[by_class]], new_run)

    class_start = np.concatenate(([0], np.cumsum(np.bincount(grouped_classes, minlength=num_classes))[:-1]))
    where = np.flatnonzero(grouped_hits)
    owner = grouped_classes[where].astype(np.intp)
    ranked_positives = np.bincount(owner, minlength=num_classes)
    positives_before = np.concatenate(([0], np.cumsum(ranked_positives)[:-1]))
    hits_so_far = np.arange(1, where.size + 1) - positives_before[owner]
    rank = where - class_start[owner] + 1
    sums = np.bincount(owner, weights=hits_so_far / rank, minlength=num_classes)
    has_positives = positives_per_class > 0
    per_class[has_positives] = sums[has_positives] / positives_per_class[has_positives]
    return gap, per_class


# --------------------------------------------------------------------------- accumulator


class EvaluationAccumulator:
    """Streaming GAP, mAP, Hit@1, PERR and micro F1 over batches of (predictions, labels).

    Keeps per video only its top-k (score, class, is-positive) triples; everything else is a
    running count, so memory is O(videos x top_k), whatever the number of classes.
    """

    def __init__(self, num_classes: int, top_k: int = 20, f1_threshold: float = 0.5) -> None:
        self.num_classes = _positive_int(num_classes, "num_classes")
        self.top_k = min(_positive_int(top_k, "top_k"), self.num_classes)
        self.f1_threshold = float(f1_threshold)
        self._parts: frozenset[str] = _ALL_PARTS
        self._class_dtype = np.uint16 if self.num_classes <= 1 << 16 else np.int32
        self._scores: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []
        self._video_positives: list[np.ndarray] = []  # per video, in the order its top-k triples were pooled
        self._ranking: tuple[float, np.ndarray] | None = None
        self.positives_per_class = np.zeros(self.num_classes, np.int64)
        self.num_videos = 0
        self._hit_count = 0
        self._perr_sum = 0.0
        self._tp = 0
        self._predicted = 0

    @classmethod
    def _only(
        cls, parts: Collection[str], num_classes: int, top_k: int = 20, f1_threshold: float = 0.5
    ) -> EvaluationAccumulator:
        """An accumulator that skips the work the requested metrics do not need."""
        accumulator = cls(num_classes, top_k, f1_threshold)
        accumulator._parts = frozenset(parts)
        return accumulator

    def add(self, predictions: ArrayLike, labels: ArrayLike) -> None:
        """Add a batch: predictions (videos, classes) scores, labels (videos, classes), > 0 positive."""
        predictions, labels = _check_pair(predictions, labels, self.num_classes)
        for start in range(0, predictions.shape[0], _CHUNK_ROWS):
            chunk = predictions[start : start + _CHUNK_ROWS]
            # NaN has no place in a ranking and inf is no probability: refuse both, loudly.
            if not np.isfinite(chunk).all():
                raise ValueError(f"predictions contain NaN or inf (videos {start}..{start + len(chunk) - 1})")
            self._add_chunk(chunk, labels[start : start + _CHUNK_ROWS])

    def _add_chunk(self, scores: np.ndarray, labels: np.ndarray) -> None:
        videos, num_classes = scores.shape
        if videos == 0:
            return
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        scores = np.ascontiguousarray(scores)
        positive = labels if labels.dtype == bool else labels > 0
        flat_positive = np.flatnonzero(positive)
        positive_rows, positive_classes = np.divmod(flat_positive, num_classes)
        positives_per_video = np.bincount(positive_rows, minlength=videos)
        self.positives_per_class += np.bincount(positive_classes, minlength=num_classes)
        parts = self._parts

        if parts & {_RANKING, _PERR}:
            # One block per video serves top-k, Hit@1 and the PERR of videos with <= m labels.
            if _RANKING in parts:
                m = self.top_k
            else:
                m = int(min(num_classes, max(1, positives_per_video.max())))
            classes, values = _top_block(scores, m)
            hits = positive[np.arange(videos)[:, None], classes]
            if _RANKING in parts:
                self._scores.append(values.ravel())
                self._classes.append(classes.astype(self._class_dtype).ravel())
                self._hits.append(hits.ravel())
                self._video_positives.append(positives_per_video)
                self._ranking = None
            self._hit_count += int(np.count_nonzero(hits[:, 0]))
            if _PERR in parts:
                self._perr_sum += self._perr_block(hits, values, positives_per_video)
                self._perr_sum += self._perr_wide(scores, positive, positives_per_video, m)
        elif _HIT in parts:
            best = np.argmax(scores, axis=1)  # first maximum: the same tie rule as the block
            self._hit_count += int(np.count_nonzero(positive[np.arange(videos), best]))

        if _F1 in parts:
            predicted = scores >= self.f1_threshold
            self._predicted += int(np.count_nonzero(predicted))
            self._tp += int(np.count_nonzero(predicted[positive_rows, positive_classes]))
        self.num_videos += videos

    @staticmethod
    def _perr_block(hits: np.ndarray, values: np.ndarray, n: np.ndarray) -> float:
        """Sum of PERR over rows whose n <= block width; rows with n = 0 or n > width add 0.

        A label-less video contributes 0: the official ``argpartition(x, -0)[-0:]`` takes all
        classes, and none of them is a label.
        """
        width = hits.shape[1]
        counted = hits & (values > 0) & (np.arange(width) < n[:, None])
        usable = (n > 0) & (n <= width)
        return float((np.count_nonzero(counted, axis=1)[usable] / n[usable]).sum())

    @staticmethod
    def _perr_wide(scores: np.ndarray, positive: np.ndarray, n: np.ndarray, width: int) -> float:
        """Sum of PERR over rows with more labels than the block width, grouped by label count.

        Only the set of each row's top n matters, not its order, so rows sharing an n take one
        partition together; such rows are rare (YouTube-8M videos have about 3 labels).
        """
        total = 0.0
        wide = np.flatnonzero(n > width)
        for count in np.unique(n[wide]):
            group = wide[n[wide] == count]
            group_scores = scores[group]
            top = _top_flat(group_scores, int(count))
            counted = positive[group].reshape(-1)[top] & (group_scores.reshape(-1)[top] > 0)
            total += np.count_nonzero(counted) / count
        return float(total)

    # ------------------------------------------------------------------ results

    def _pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(self._scores) != 1:  # consolidate, so repeated results do not re-concatenate
            if self._scores:
                scores = np.concatenate(self._scores)
            else:
                scores = np.empty(0)
            self._scores = [scores]
            empty = np.empty(0, self._class_dtype)
            self._classes = [np.concatenate(self._classes) if self._classes else empty]
            self._hits = [np.concatenate(self._hits) if self._hits else np.empty(0, bool)]
        return self._scores[0], self._classes[0], self._hits[0]

    def _ranked(self) -> tuple[float, np.ndarray]:
        if _RANKING not in self._parts:
            raise RuntimeError("this accumulator does not track the top-k ranking")
        if self._ranking is None:
            self._ranking = _pooled_ap(*self._pooled(), self.positives_per_class)
        return self._ranking

    def gap(self) -> float:
        """Global Average Precision over the pooled top-k (0.0 with no positive labels)."""
        return self._ranked()[0]

    def per_class_ap(self) -> np.ndarray:
        """AP of each class over its top-k-filtered pairs; 0.0 for classes with no positives."""
        return self._ranked()[1].copy()

    def gap_resampled(self, counts: np.ndarray) -> np.ndarray:
        """GAP of each resample of the added videos: ``counts[r, v]`` copies of video ``v`` in resample ``r``.

        For the video-level bootstrap: a video's top-k triples and its positives are kept or repeated
        together, so every resample is an evaluation set of whole videos drawn from these ones. Ties rank
        negatives first, as in :meth:`gap`; a row of ones gives :meth:`gap` itself.
        """
        if _RANKING not in self._parts:
            raise RuntimeError("this accumulator does not track the top-k ranking")
        counts = np.atleast_2d(np.asarray(counts))
        if counts.shape[1] != self.num_videos:
            raise ValueError(f"counts has {counts.shape[1]} columns for {self.num_videos} videos")
        scores, _, hits = self._pooled()
        positives = np.concatenate(self._video_positives) if self._video_positives else np.empty(0, np.int64)
        order = np.lexsort((hits, -scores.astype(np.float64)))  # score descending, negatives first among ties
        ranked_hits, ranked_video = hits[order], order // self.top_k  # each video pooled exactly top_k triples
        gaps = np.zeros(counts.shape[0])
        for row, weights in enumerate(counts):
            total = int(weights @ positives)
            if total == 0:
                continue
            ranks = np.flatnonzero(np.repeat(ranked_hits, weights[ranked_video])) + 1
            gaps[row] = (np.arange(1, ranks.size + 1) / ranks).sum() / total
        return gaps

    def mean_ap(self) -> float:
        """Sum of per-class APs over the number of classes, empty classes included."""
        return float(self._ranked()[1].sum() / self.num_classes)

    def hit_at_one(self) -> float:
        """Fraction of the added videos whose top class is a label."""
        return _ratio(self._hit_count, self.num_videos)

    def perr(self) -> float:
        """Mean PERR over the added videos (label-less videos count 0)."""
        return _ratio(self._perr_sum, self.num_videos)

    def f1(self) -> F1Result:
        """Micro F1 at ``f1_threshold`` over every (video, class) pair added."""
        positives = int(self.positives_per_class.sum())
        tp, fp, fn = self._tp, self._predicted - self._tp, positives - self._tp
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, positives)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return F1Result(f1, precision, recall, self.f1_threshold, tp, fp, fn)

    def result(self) -> dict[str, float]:
        """All metrics: gap, map, hit_at_one, perr, f1, precision, recall, num_videos."""
        if self.num_videos == 0:
            raise ValueError("no videos were added")
        f1 = self.f1()
        return {
            "gap": self.gap(),
            "map": self.mean_ap(),
            "hit_at_one": self.hit_at_one(),
            "perr": self.perr(),
            "f1": f1.f1,
            "precision": f1.precision,
            "recall": f1.recall,
            "num_videos": self.num_videos,
        }


# --------------------------------------------------------------------------- one-shot functions


def _scan(
    parts: Collection[str], predictions: ArrayLike, labels: ArrayLike, top_k: int = 20, threshold: float = 0.5
) -> EvaluationAccumulator:
    predictions, labels = _check_pair(predictions, labels)
    if predictions.shape[0] == 0:
        raise ValueError("predictions must have at least one video")
    accumulator = EvaluationAccumulator._only(parts, predictions.shape[1], top_k, threshold)
    accumulator.add(predictions, labels)
    return accumulator


def evaluate(
    predictions: ArrayLike, labels: ArrayLike, top_k: int = 20, threshold: float = 0.5
) -> dict[str, float]:
    """All metrics in one pass: gap, map, hit_at_one, perr, f1, precision, recall, num_videos."""
    return _scan(_ALL_PARTS, predictions, labels, top_k, threshold).result()


def gap(predictions: ArrayLike, labels: ArrayLike, top_k: int = 20) -> float:
    """GAP@top_k: AP of every video's pooled top-k, over all positive labels."""
    return _scan({_RANKING}, predictions, labels, top_k).gap()


def per_class_ap(predictions: ArrayLike, labels: ArrayLike, top_k: int = 20) -> np.ndarray:
    """Per-class AP over top-k-filtered pairs, as the official mAP calculator keeps them."""
    return _scan({_RANKING}, predictions, labels, top_k).per_class_ap()


def mean_ap(predictions: ArrayLike, labels: ArrayLike, top_k: int = 20) -> float:
    """The official eval's mAP: per-class APs summed over all classes, divided by the class count."""
    return _scan({_RANKING}, predictions, labels, top_k).mean_ap()


def hit_at_one(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of videos whose highest-scoring class (lowest index among ties) is a label."""
    return _scan({_HIT}, predictions, labels).hit_at_one()


def perr(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Precision at equal recall rate, averaged over all videos (label-less videos count 0)."""
    return _scan({_PERR}, predictions, labels).perr()


def f1(predictions: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> F1Result:
    """Micro F1 over all (video, class) pairs, predicting a class iff its score >= threshold."""
    return _scan({_F1}, predictions, labels, threshold=threshold).f1()
